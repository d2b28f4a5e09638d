"""Helpers of the checkpoint tests (test_checkpoints*.py): a mixed state_dict, an exact comparison, a file hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch


def mixed_state_dict() -> dict[str, torch.Tensor]:
    """Keys deliberately not sorted, several dtypes, a 0-d tensor."""
    g = torch.Generator().manual_seed(0)
    return {
        "stem.conv.weight": torch.randn(4, 3, 3, 3, generator=g),
        "stem.bn.weight": torch.rand(4, generator=g),
        "stem.bn.bias": torch.randn(4, generator=g),
        "stem.bn.num_batches_tracked": torch.tensor(7),
        "blocks.10.fc.weight": torch.randn(5, 4, generator=g).half(),
        "blocks.2.fc.weight": torch.randn(5, 4, generator=g).bfloat16(),
        "a_head.bias": torch.randn(5, generator=g, dtype=torch.float64),
    }


def assert_same(loaded, expected: dict[str, torch.Tensor]) -> None:
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        got = loaded[key]
        assert got.dtype == value.dtype, key
        assert torch.equal(got, value), key


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
