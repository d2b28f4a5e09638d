"""Shared pytest configuration."""

import os

import pytest
import torch

# Never talk to the real Hub from tests; tests that need a Hub start a local server (see tests/hub_server/).
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")

# Fixtures `hub_server` / `hub_env`: a local Hub-compatible server for round trips (tests/hub_fixtures.py).
pytest_plugins = ["hub_fixtures"]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on shared cores: one intra-op thread avoids OpenMP contention (measured up to 15x faster here).

    Use per module: ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
