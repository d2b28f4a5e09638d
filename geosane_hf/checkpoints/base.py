"""What every checkpoint format shares: the error types, tensor specs, the loaded checkpoint and its metadata,
the file-name and suffix tables."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from geosane_hf.errors import GeoSANEError

CheckpointFormat = Literal["safetensors", "torch", "onnx", "npz", "timm"]

#: Key under the safetensors `__metadata__` that records the state_dict's key order (a JSON list of names).
KEY_ORDER_METADATA_KEY = "geosane.key_order"
#: Files up to this size get a sha256 in the metadata; bigger ones would make a lazy load read the whole file.
SHA256_MAX_BYTES = 512 * 2**20

_SAFETENSORS_SUFFIXES = {".safetensors"}
_TORCH_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}
_ONNX_SUFFIXES = {".onnx"}
_NPZ_SUFFIXES = {".npz"}
_KNOWN_SUFFIXES = _SAFETENSORS_SUFFIXES | _TORCH_SUFFIXES | _ONNX_SUFFIXES | _NPZ_SUFFIXES | {".json"}

#: File names tried, in this order, inside a local directory or a Hub repo when no `filename` is given.
PREFERRED_FILENAMES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class CheckpointError(GeoSANEError, ValueError):
    """A checkpoint source that cannot be loaded; the message says what was expected and what to do."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A local path that does not exist (or a directory without a weights file)."""


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of a tensor, known without reading its data."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass
class CheckpointMetadata:
    """What was loaded and from where.

    Attributes:
        source: The source as given to `load_checkpoint`.
        format: The weights format that was read: "safetensors", "torch", "onnx", "npz" or "timm".
        path: The local file that was read (for Hub sources, the file in the cache); None for timm.
        architecture: Architecture name when known (timm name, Hub `config.json`), else None.
        num_parameters: Number of elements in floating-point tensors (BN running stats included).
        num_tensors: Number of tensors in the state_dict.
        dtypes: Count of tensors per dtype name, e.g. `{"float16": 655}`.
        sha256: sha256 of the file when it is at most `SHA256_MAX_BYTES` (else None; None for timm).
        extra: Format-specific details (ONNX name map, keys dropped from a container, Hub repo and revision ...).
    """

    source: str
    format: CheckpointFormat
    path: str | None
    architecture: str | None
    num_parameters: int
    num_tensors: int
    dtypes: dict[str, int]
    sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return asdict(self)


@dataclass
class LoadedCheckpoint:
    """An ordered state_dict (possibly lazy, see `LazySafetensorsStateDict`) and its metadata."""

    state_dict: Mapping[str, torch.Tensor]
    metadata: CheckpointMetadata
