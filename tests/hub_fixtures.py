"""Pytest plugin: a local Hub-compatible server and a client environment pointed at it.

Load it from ``tests/conftest.py`` with ``pytest_plugins = ["hub_fixtures"]``. Fixtures:

- ``hub_server`` (session): a :class:`hub_server.HubServer` on ``127.0.0.1:<free port>`` with its storage in a
  session temp folder; stopped (thread joined, socket closed) at the end of the session.
- ``hub_env`` (function): points the *unmodified* clients (``huggingface_hub``, ``datasets``, ``timm``,
  ``transformers``) at that server for one test, with a fresh cache, and hands back a :class:`HubEnv` (endpoint,
  token, cache folders, environment for subprocesses, :meth:`HubEnv.run_python`, :meth:`HubEnv.unique_repo_id`).

Why patching is needed, and what is patched: ``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_CACHE``,
``HF_HUB_OFFLINE``, ``HF_HUB_DISABLE_XET`` ... once, when ``huggingface_hub.constants`` is imported, and other
modules copy them at their own import time (``datasets.config.HF_ENDPOINT``, ``HUB_DATASETS_URL`` and cache paths;
the module-level ``huggingface_hub.hf_api.api`` behind ``huggingface_hub.upload_folder`` & co. stores its
``endpoint``; ``from ..constants import HF_HUB_CACHE`` copies in ``utils._cache_manager``; ``transformers`` copies
``HF_MODULES_CACHE``; ``fsspec`` caches ``HfFileSystem`` instances with the endpoint they were built with). Setting
environment variables is therefore not enough once any test in the process imported one of them. ``hub_env``:

1. sets the environment variables (``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HOME``, ``HF_HUB_CACHE``,
   ``HF_DATASETS_CACHE``, ``HF_HUB_DISABLE_XET=1``, ``HF_HUB_DISABLE_TELEMETRY=1``, ``HF_HUB_OFFLINE=0`` ...) for
   code that reads them at call time and for modules imported later;
2. imports ``huggingface_hub`` and ``datasets`` (so that they are not first imported *inside* the test, which would
   freeze the test's temporary values into them for the rest of the session) and ``monkeypatch``-es every copy
   listed above, plus ``transformers``' module caches when ``transformers`` is already imported;
3. clears fsspec's ``HfFileSystem`` instance cache on entry and exit.

``monkeypatch`` restores everything after the test. The one thing not covered in-process is code that was already
imported and captured a value elsewhere (e.g. a user module doing ``from huggingface_hub.constants import
ENDPOINT``), and ``transformers``' remote-code module cache, which it adds to ``sys.path`` once per process: for
those, and to prove that something loads in a clean process, use :meth:`HubEnv.run_python`, which runs a snippet
in a fresh interpreter whose environment is set before anything is imported.

Example:
    >>> def test_roundtrip(hub_env):  # doctest: +SKIP
    ...     from huggingface_hub import HfApi
    ...     api = HfApi()
    ...     repo_id = hub_env.unique_repo_id("model")
    ...     api.create_repo(repo_id)
    ...     api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=repo_id)
    ...     assert hub_env.run_python(f"from huggingface_hub import hf_hub_download; hf_hub_download({repo_id!r}, 'config.json')")
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_server import HubServer

__all__ = ["HUB_TEST_TOKEN", "HubEnv", "hub_env", "hub_server"]

HUB_TEST_TOKEN = "hf_local_test_token_0000000000000000"
_COUNTER = itertools.count()
_REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class HubEnv:
    """What ``hub_env`` sets up for one test.

    Attributes:
        server: The running server (for failure injection and server-side assertions).
        endpoint: ``http://127.0.0.1:PORT``.
        token: The token the clients send (any token is accepted).
        hf_home: Temporary ``HF_HOME`` of this test.
        hub_cache: Temporary ``HF_HUB_CACHE`` of this test.
        env: The environment variables set for the test; :meth:`run_python` passes them to subprocesses.
    """

    server: HubServer
    endpoint: str
    token: str
    hf_home: Path
    hub_cache: Path
    env: dict[str, str]

    def unique_repo_id(self, stem: str = "repo", namespace: str = "geosane-test") -> str:
        """A repo id no other test of this session uses, e.g. ``geosane-test/model-3``."""
        return f"{namespace}/{stem}-{os.getpid()}-{next(_COUNTER)}"

    def subprocess_env(self) -> dict[str, str]:
        """``os.environ`` of a clean process pointed at the server (the repo root on ``PYTHONPATH``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
        env.update(self.env)
        paths = [str(_REPO_ROOT), str(_REPO_ROOT / "tests")]
        env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        return env

    def run_python(
        self, code: str, *, timeout: float = 300, check: bool = True, cwd: str | os.PathLike | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``code`` in a fresh interpreter whose environment points at the server from the first import.

        Args:
            code: Python source (dedented automatically).
            timeout: Seconds before the process is killed.
            check: Raise ``AssertionError`` with the process output if the exit code is not 0.
            cwd: Working directory (default: a temporary one under ``hf_home``).

        Returns:
            The completed process; ``stdout`` and ``stderr`` are text.
        """
        workdir = Path(cwd) if cwd is not None else self.hf_home.parent / "subprocess_cwd"
        workdir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=self.subprocess_env(),
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"Expected the subprocess to exit with 0, got {proc.returncode}.\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
            )
        return proc


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """A Hub-compatible server on a free port of 127.0.0.1, for the whole session."""
    server = HubServer(tmp_path_factory.mktemp("hub_server_storage")).start()
    try:
        yield server
    finally:
        server.stop()


def _hub_environment(endpoint: str, token: str, hf_home: Path) -> dict[str, str]:
    return {
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": token,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_DATASETS_CACHE": str(hf_home / "datasets"),
        "HF_MODULES_CACHE": str(hf_home / "modules"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HUB_ETAG_TIMEOUT": "30",
        "HF_HUB_DOWNLOAD_TIMEOUT": "30",
    }


def _patch_imported_clients(monkeypatch: pytest.MonkeyPatch, endpoint: str, hf_home: Path) -> None:
    """Rewrite the values that the client libraries copied at import time (see the module docstring)."""
    from urllib.parse import urlsplit

    import huggingface_hub.constants as hf_constants
    import huggingface_hub.hf_api as hf_api
    from huggingface_hub import HfFileSystem

    hub_cache = str(hf_home / "hub")
    for name, value in {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": frozenset(hf_constants.HF_URL_HOSTS | {urlsplit(endpoint).hostname}),
        "HF_HOME": str(hf_home),
        "default_cache_path": hub_cache,
        "default_assets_cache_path": str(hf_home / "assets"),
        "HUGGINGFACE_HUB_CACHE": hub_cache,
        "HUGGINGFACE_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_HUB_CACHE": hub_cache,
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "default_xet_cache_path": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "CHECK_FOR_UPDATE_DONE_PATH": str(hf_home / ".check_for_update_done"),
        "CHECK_FOR_SKILL_UPDATE_DONE_PATH": str(hf_home / ".check_for_skill_update_done"),
        "AGENT_HARNESSES_PATH": str(hf_home / ".agent_harnesses.json"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        "HF_HUB_ETAG_TIMEOUT": 30,
        "HF_HUB_DOWNLOAD_TIMEOUT": 30,
    }.items():
        if hasattr(hf_constants, name):
            monkeypatch.setattr(hf_constants, name, value)
    # `huggingface_hub.upload_folder`, `create_repo`, ... are bound methods of this module-level HfApi().
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    for module_name, attr, value in (
        ("huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", hub_cache),
        ("huggingface_hub.utils._cache_assets", "HF_ASSETS_CACHE", str(hf_home / "assets")),
        ("huggingface_hub.utils._git_credential", "ENDPOINT", endpoint),
        ("huggingface_hub.cli.auth", "ENDPOINT", endpoint),
    ):
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attr):
            monkeypatch.setattr(module, attr, value)

    import datasets.config as ds_config

    datasets_cache = hf_home / "datasets"
    for name, value in {
        "HF_ENDPOINT": endpoint,
        "HUB_DATASETS_URL": endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",
        "HF_HUB_OFFLINE": False,
        "HF_DATASETS_OFFLINE": False,
        "HF_CACHE_HOME": str(hf_home),
        "HF_DATASETS_CACHE": datasets_cache,
        "HF_MODULES_CACHE": hf_home / "modules",
        "DOWNLOADED_DATASETS_PATH": datasets_cache / "downloads",
        "EXTRACTED_DATASETS_PATH": datasets_cache / "downloads" / "extracted",
    }.items():
        if hasattr(ds_config, name):
            monkeypatch.setattr(ds_config, name, value)

    # transformers copies HF_MODULES_CACHE (remote code); patch it only if a test already imported transformers.
    for module_name in ("transformers.utils.hub", "transformers.utils", "transformers.dynamic_module_utils"):
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, "HF_MODULES_CACHE"):
            monkeypatch.setattr(module, "HF_MODULES_CACHE", str(hf_home / "modules"))
    # transformers (5.x) keeps one lazily built HfApi (`transformers.utils.hub.hf_api()`) for push_to_hub; built
    # outside this fixture it points at huggingface.co. Drop it for the test so it is rebuilt on this server.
    transformers_hub = sys.modules.get("transformers.utils.hub")
    if transformers_hub is not None and hasattr(transformers_hub, "_hf_api"):
        monkeypatch.setattr(transformers_hub, "_hf_api", None)

    HfFileSystem.clear_instance_cache()


@pytest.fixture
def hub_env(hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubEnv]:
    """Point the real Hub clients at ``hub_server`` for one test, with an empty cache of its own.

    Sets the environment (``HF_ENDPOINT``, ``HF_TOKEN``, temporary ``HF_HOME``/``HF_HUB_CACHE``/``HF_DATASETS_CACHE``,
    ``HF_HUB_DISABLE_XET=1``, ``HF_HUB_DISABLE_TELEMETRY=1``, ``HF_HUB_OFFLINE=0``), then patches the copies of those
    values that ``huggingface_hub``, ``datasets`` and (if imported) ``transformers`` made at import time, and clears
    fsspec's ``HfFileSystem`` instance cache; everything is restored after the test. See the module docstring for
    the list and for :meth:`HubEnv.run_python` (a clean process, for what patching cannot reach).
    """
    # Import the clients before touching the environment, so that a first import here does not freeze this test's
    # temporary values into them for the rest of the session (monkeypatch then restores what it patched).
    import datasets.config  # noqa: F401
    import huggingface_hub.hf_api  # noqa: F401

    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    env = _hub_environment(hub_server.url, HUB_TEST_TOKEN, hf_home)
    for key in (
        "HUGGINGFACE_HUB_CACHE",
        "HUGGINGFACE_ASSETS_CACHE",
        "HUGGING_FACE_HUB_TOKEN",
        "HUGGINGFACE_CO_STAGING",
    ):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _patch_imported_clients(monkeypatch, hub_server.url, hf_home)
    hub_server.clear_faults()
    try:
        yield HubEnv(
            server=hub_server,
            endpoint=hub_server.url,
            token=HUB_TEST_TOKEN,
            hf_home=hf_home,
            hub_cache=hf_home / "hub",
            env=env,
        )
    finally:
        hub_server.clear_faults()
        from huggingface_hub import HfFileSystem

        HfFileSystem.clear_instance_cache()
