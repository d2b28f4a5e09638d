"""Safe checkpoint loading: any supported source -> an ordered state_dict plus metadata.

Nothing here unpickles arbitrary objects: safetensors are parsed from their header, PyTorch files go through
`torch.load(weights_only=True)` only, ONNX initializers through `onnx.numpy_helper`, `.npz` through
`numpy.load(allow_pickle=False)`.

>>> import torch, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "tiny.safetensors")
>>> save_safetensors({"b.weight": torch.ones(2, 3), "a.bias": torch.zeros(2)}, path)
>>> ckpt = load_checkpoint(path)
>>> list(ckpt.state_dict), ckpt.state_dict.tensor_specs["b.weight"].shape, ckpt.metadata.num_parameters
(['b.weight', 'a.bias'], (2, 3), 8)
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import os
import re
import stat
import struct
import tempfile
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from geosane_hf.errors import GeoSANEError, UnsafePathError
from geosane_hf.safe_paths import resolve_inside

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "CheckpointMetadata",
    "CheckpointNotFoundError",
    "LazySafetensorsStateDict",
    "LoadedCheckpoint",
    "SafetensorsHeader",
    "TensorSpec",
    "load_checkpoint",
    "onnx_parameter_name",
    "open_safetensors",
    "read_safetensors_header",
    "save_safetensors",
]

CheckpointFormat = Literal["safetensors", "torch", "onnx", "npz", "timm"]

#: Key under the safetensors `__metadata__` that records the state_dict's key order (a JSON list of names).
KEY_ORDER_METADATA_KEY = "geosane.key_order"
#: Files up to this size get a sha256 in the metadata; bigger ones would make a lazy load read the whole file.
SHA256_MAX_BYTES = 512 * 2**20
#: The safetensors format refuses headers larger than this.
_SAFETENSORS_MAX_HEADER = 100 * 2**20

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
#: Container keys unwrapped from PyTorch checkpoints, in this order (Lightning stores weights under "state_dict").
_TORCH_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module")
_HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# safetensors dtype tag -> (torch dtype name, bits per element)
_SAFETENSORS_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 64),
    "F32": ("float32", 32),
    "F16": ("float16", 16),
    "BF16": ("bfloat16", 16),
    "F8_E4M3": ("float8_e4m3fn", 8),
    "F8_E5M2": ("float8_e5m2", 8),
    "F8_E8M0": ("float8_e8m0fnu", 8),
    "I64": ("int64", 64),
    "I32": ("int32", 32),
    "I16": ("int16", 16),
    "I8": ("int8", 8),
    "U64": ("uint64", 64),
    "U32": ("uint32", 32),
    "U16": ("uint16", 16),
    "U8": ("uint8", 8),
    "BOOL": ("bool", 8),
    "C64": ("complex64", 64),
}


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


# ----------------------------------------------------------------------------------------------------------------
# safetensors
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SafetensorsHeader:
    """A parsed safetensors header: tensor specs in the restored key order, `__metadata__`, and where the order
    came from ("metadata": recorded by `save_safetensors`; "data_offsets": the layout of a foreign file)."""

    specs: dict[str, TensorSpec]  # in restored key order
    metadata: dict[str, str]
    key_order_source: Literal["metadata", "data_offsets"]
    offsets: dict[str, tuple[int, int]] = field(default_factory=dict)  # [begin, end) of each tensor's bytes
    data_start: int = 0  # file offset of the data buffer (8 + header length)


def _corrupt(path: str | os.PathLike, what: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a valid safetensors file: {what}. The file is probably truncated or corrupt: re-download "
        "or re-export it."
    )


def read_safetensors_header(path: str | os.PathLike) -> SafetensorsHeader:
    """Parse and validate a safetensors header without reading tensor data.

    The key order is the one recorded by `save_safetensors` under `__metadata__["geosane.key_order"]`. Files
    written elsewhere keep no order (their JSON header lists keys sorted by name); for them the order is that of
    the tensors' data offsets, i.e. the order in which the writer laid the data out. Streaming writers lay tensors
    out in state_dict order, but `safetensors.torch.save_file` (used by transformers, timm and huggingface_hub)
    lays them out by dtype size, then by name, so for those files the module order is lost; `load_checkpoint`
    restores it when the architecture is a timm model (see `_timm_key_order`).

    Raises:
        CheckpointError: On a truncated file, a header that is not JSON, or entries that do not add up.
    """
    size = os.path.getsize(path)
    if size < 8:
        raise _corrupt(path, f"expected at least 8 bytes (header length), got {size}")
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > _SAFETENSORS_MAX_HEADER:
            raise _corrupt(path, f"header length {header_len} exceeds the format's limit of 100 MiB")
        if 8 + header_len > size:
            raise _corrupt(path, f"header needs {header_len} bytes but the file has only {size - 8} after the length")
        raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corrupt(path, f"the header is not valid UTF-8 JSON ({e})") from e
    if not isinstance(header, dict):
        raise _corrupt(path, f"expected the header to be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise _corrupt(path, "expected __metadata__ to be a JSON object of strings")
    data_len = size - 8 - header_len
    entries: list[tuple[int, str, TensorSpec]] = []
    max_end = 0
    for name, info in header.items():
        try:
            dtype_tag, shape, (begin, end) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
        except (TypeError, KeyError, ValueError) as e:
            raise _corrupt(path, f"entry {name!r} lacks a valid dtype/shape/data_offsets ({e!r})") from e
        if dtype_tag not in _SAFETENSORS_DTYPES:
            raise CheckpointError(
                f"{path}: tensor {name!r} has dtype {dtype_tag!r}, expected one of {sorted(_SAFETENSORS_DTYPES)}; "
                "upgrade safetensors/torch or re-export the checkpoint with a common dtype."
            )
        dtype_name, bits = _SAFETENSORS_DTYPES[dtype_tag]
        dtype = getattr(torch, dtype_name, None)
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {dtype_tag}, which this torch cannot represent")
        spec = TensorSpec(shape, dtype)
        expected = (spec.numel * bits + 7) // 8
        if not (isinstance(begin, int) and isinstance(end, int)) or begin < 0 or end - begin != expected:
            raise _corrupt(
                path,
                f"tensor {name!r} ({dtype_tag}{list(shape)}) expects {expected} bytes, offsets say [{begin}, {end})",
            )
        max_end = max(max_end, end)
        entries.append((begin, name, spec))
    if max_end > data_len:
        raise _corrupt(path, f"expected {max_end} bytes of tensor data, got {data_len} (the file is truncated)")
    if max_end < data_len:
        raise _corrupt(path, f"{data_len - max_end} trailing bytes after the last tensor")

    by_name = {name: spec for _, name, spec in entries}
    offsets = {name: (int(header[name]["data_offsets"][0]), int(header[name]["data_offsets"][1])) for name in by_name}
    located = {"offsets": offsets, "data_start": 8 + header_len}
    recorded = metadata.get(KEY_ORDER_METADATA_KEY)
    order: list[str] | None = None
    if recorded is not None:
        try:
            order = json.loads(recorded)
        except json.JSONDecodeError:
            order = None
        if not isinstance(order, list) or sorted(order) != sorted(by_name):
            warnings.warn(
                f"{path}: __metadata__[{KEY_ORDER_METADATA_KEY!r}] does not list exactly the file's tensors; "
                "using the order of the data offsets instead.",
                stacklevel=3,
            )
            order = None
    if order is not None:
        return SafetensorsHeader({k: by_name[k] for k in order}, metadata, "metadata", **located)
    entries.sort(key=lambda e: (e[0], e[1]))
    return SafetensorsHeader({name: spec for _, name, spec in entries}, metadata, "data_offsets", **located)


class LazySafetensorsStateDict(Mapping[str, torch.Tensor]):
    """A read-only, ordered state_dict backed by one or more safetensors files (the one safetensors reader).

    Shapes and dtypes are available from `tensor_specs` without reading any data; `sd[key]` reads exactly one
    tensor, so peak memory stays at one tensor. With ``mmap=True`` (what `load_checkpoint` returns) tensors are
    memory-mapped through `safetensors.safe_open`; with ``mmap=False`` (the dataset build) each is read with a plain
    file read into fresh memory: the pages of a mapped file count in the process's resident memory once touched (a
    1.2 GB ViT-L file adds 1.2 GB to the RSS high-water mark while it is open), a read's memory is freed with the
    tensor. `close()` (or a ``with`` block) closes the open files.

    >>> import torch, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> save_safetensors({"w": torch.arange(6.0).reshape(2, 3)}, path)
    >>> sd = load_checkpoint(path).state_dict
    >>> sd.tensor_specs["w"], sd["w"].sum().item()
    (TensorSpec(shape=(2, 3), dtype=torch.float32), 15.0)
    >>> save_safetensors({"b": torch.arange(3.0), "a": torch.ones(2, 2, dtype=torch.bfloat16)}, path)
    >>> with open_safetensors(path, mmap=False) as sd:
    ...     list(sd), sd["b"].tolist(), sd["a"].dtype
    (['b', 'a'], [0.0, 1.0, 2.0], torch.bfloat16)
    """

    def __init__(self, files: Mapping[str, SafetensorsHeader], mmap: bool = True):
        self._files: dict[str, str] = {}
        self._headers = dict(files)
        self.mmap = mmap
        self.tensor_specs: dict[str, TensorSpec] = {}
        for path, header in files.items():
            for key, spec in header.specs.items():
                if key in self.tensor_specs:
                    raise CheckpointError(f"tensor {key!r} appears in both {self._files[key]} and {path}")
                self._files[key] = path
                self.tensor_specs[key] = spec
        self._handles: dict[str, Any] = {}

    @property
    def paths(self) -> list[str]:
        """The backing files, in order."""
        return list(dict.fromkeys(self._files.values()))

    def _handle(self, path: str) -> Any:
        handle = self._handles.get(path)
        if handle is None:
            if not self.mmap:
                handle = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by close() / the context manager)
            else:
                from safetensors import safe_open

                try:
                    handle = safe_open(path, framework="pt", device="cpu")
                except Exception as e:  # safetensors raises its own SafetensorError (not an OSError)
                    raise _corrupt(path, f"safetensors could not open it ({e})") from e
            self._handles[path] = handle
        return handle

    def __getitem__(self, key: str) -> torch.Tensor:
        path = self._files[key]  # KeyError for unknown keys, as a Mapping should
        if self.mmap:
            return self._handle(path).get_tensor(key)
        spec, header = self.tensor_specs[key], self._headers[path]
        begin, end = header.offsets[key]
        data = torch.empty(end - begin, dtype=torch.uint8)  # [bytes]
        view, done, fd = memoryview(data.numpy()), 0, self._handle(path).fileno()
        while done < len(view):
            read = os.preadv(fd, [view[done:]], header.data_start + begin + done)
            if read <= 0:
                raise _corrupt(path, f"expected {len(view)} bytes for {key!r}, the file ended early")
            done += read
        return data.view(spec.dtype).reshape(spec.shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensor_specs)

    def __len__(self) -> int:
        return len(self.tensor_specs)

    def __contains__(self, key: object) -> bool:
        return key in self.tensor_specs

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} tensors from {self.paths})"

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers: reopen the files lazily
        return {**self.__dict__, "_handles": {}}

    def close(self) -> None:
        """Closes the open files (they reopen on the next read)."""
        for handle in self._handles.values():
            if hasattr(handle, "close"):
                handle.close()
        self._handles.clear()

    def __enter__(self) -> LazySafetensorsStateDict:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def to_dict(self) -> dict[str, torch.Tensor]:
        """Read every tensor into an ordinary (ordered) dict."""
        return {k: self[k] for k in self}

    def _reorder(self, keys: list[str]) -> None:
        if sorted(keys) != sorted(self.tensor_specs):
            raise CheckpointError("a new key order must list exactly the same keys")
        self.tensor_specs = {k: self.tensor_specs[k] for k in keys}


def open_safetensors(path: str | os.PathLike, mmap: bool = True) -> LazySafetensorsStateDict:
    """A lazy state_dict over one safetensors file, its header validated (close it, or use it in a ``with`` block).

    Args:
        path: The file.
        mmap: Memory-map the file (False: read each tensor with a plain file read, see `LazySafetensorsStateDict`).
    """
    return LazySafetensorsStateDict({str(path): read_safetensors_header(path)}, mmap=mmap)


def _load_safetensors_files(paths: list[str]) -> tuple[LazySafetensorsStateDict, dict[str, Any]]:
    headers = {str(p): read_safetensors_header(p) for p in paths}
    extra: dict[str, Any] = {"key_order": sorted({h.key_order_source for h in headers.values()})}
    user_meta = {k: v for h in headers.values() for k, v in h.metadata.items() if k != KEY_ORDER_METADATA_KEY}
    if user_meta:
        extra["safetensors_metadata"] = user_meta
    return LazySafetensorsStateDict(headers), extra


def save_safetensors(
    state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> None:
    """Write a state_dict to a safetensors file atomically, recording its key order.

    The file is written to a temporary file in the same directory, flushed to disk and renamed over `path`, so a
    crash never leaves a half-written checkpoint. Tensors that share storage (tied weights) or are not contiguous
    are copied as needed; tensors on other devices are moved to the CPU. The key order goes to
    `__metadata__["geosane.key_order"]` so that `load_checkpoint` returns the same order (safetensors itself stores
    keys sorted).

    Args:
        state_dict: Names to tensors, in the order to record (a lazy mapping is read one tensor at a time).
        path: Destination file.
        metadata: Extra string key/values for the file's `__metadata__`.

    Raises:
        CheckpointError: On non-string keys, non-tensor values or non-string metadata.

    >>> import torch, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    >>> w = torch.randn(4, 4)
    >>> save_safetensors({"z": w, "a": w.t()}, path)  # shared storage, non-contiguous view
    >>> sd = load_checkpoint(path).state_dict
    >>> list(sd), torch.equal(sd["a"], w.t())
    (['z', 'a'], True)
    """
    from safetensors.torch import save_file

    meta: dict[str, str] = {"format": "pt"}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise CheckpointError(f"expected safetensors metadata of str -> str, got {k!r}: {type(v).__name__}")
        if k == KEY_ORDER_METADATA_KEY:
            raise CheckpointError(f"metadata key {k!r} is reserved for the key order")
        meta[k] = v
    tensors: dict[str, torch.Tensor] = {}
    seen_storages: set[tuple[str, int]] = set()
    for key in state_dict:
        value = state_dict[key]
        if not isinstance(key, str):
            raise CheckpointError(f"expected str keys, got {type(key).__name__} {key!r}")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"expected a tensor for {key!r}, got {type(value).__name__}")
        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        storage_id = (t.device.type, t.untyped_storage().data_ptr())
        if storage_id[1] != 0 and storage_id in seen_storages:
            t = t.clone()  # safetensors refuses two names on one storage
        else:
            seen_storages.add(storage_id)
        tensors[key] = t.contiguous()
    meta[KEY_ORDER_METADATA_KEY] = json.dumps(list(tensors))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        with open(tmp, "rb+") as f:
            _sort_header_metadata(f, tmp)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _sort_header_metadata(f: Any, path: str) -> None:
    """Rewrites a safetensors header in place with ``__metadata__`` in sorted key order.

    safetensors serialises the metadata from a hash map, so the same tensors and metadata give different bytes
    from one process to the next (and a different Hub content hash). Reordering keys does not change the header's
    length; the header keeps its size (trailing spaces pad it, as the format allows), so the tensor data and its
    alignment stay where they are.
    """
    (length,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(length))
    metadata = header.pop("__metadata__", None)
    if not metadata:
        return
    ordered = {"__metadata__": dict(sorted(metadata.items())), **header}
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > length:  # not expected (same content, other order); keep the valid original rather than fail
        logger.warning("%s: could not sort the safetensors metadata in place; the file bytes may vary", path)
        return
    f.seek(8)
    f.write(text + b" " * (length - len(text)))
    f.flush()


# ----------------------------------------------------------------------------------------------------------------
# PyTorch (.pt / .pth / .bin / .ckpt), weights_only
# ----------------------------------------------------------------------------------------------------------------


# Pickle opcodes that import or call something (what weights_only refuses for safety, not for corruption).
_PICKLE_CODE_OPCODES = {ord(c) for c in "ciobR"} | {0x81, 0x82, 0x83, 0x84, 0x92, 0x93}


def _corrupt_torch(path: str, e: BaseException) -> CheckpointError:
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    return CheckpointError(
        f"Could not read {path} as a PyTorch checkpoint ({type(e).__name__}: {first}). The file is probably "
        "truncated or corrupt (or not a PyTorch file): re-download or re-export it."
    )


def _torch_load(path: str) -> Any:
    import pickle

    mmap = zipfile.is_zipfile(path)  # mmap needs the zip format (torch >= 1.6 default)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        msg = str(e)
        found = re.search(r"GLOBAL ([\w.]+)", msg)
        operand = re.search(r"Unsupported operand (\d+)", msg)
        if found is None and operand is not None and int(operand.group(1)) not in _PICKLE_CODE_OPCODES:
            # garbage bytes, not an object constructor
            raise _corrupt_torch(path, pickle.UnpicklingError(f"invalid pickle data ({operand.group(0)})")) from e
        needs = f" (it references {found.group(1)})" if found else ""
        raise CheckpointError(
            f"Refusing to load {path}: it is a pickle that needs arbitrary code to load{needs}, and unpickling it "
            "could run anything on this machine. Only tensors and plain containers are accepted "
            "(torch.load(weights_only=True)). If you trust the file, convert it in a trusted, isolated environment: "
            "`sd = torch.load(path, weights_only=False)`, keep the tensors of the model's state_dict, and write "
            "them with `geosane_hf.checkpoints.save_safetensors(sd, 'model.safetensors')`; then load that file."
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise _corrupt_torch(path, e) from e


def _unwrap_torch_object(obj: Any, path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    extra: dict[str, Any] = {}
    container_path: list[str] = []
    for _ in range(4):  # e.g. {"model": {"state_dict": {...}}}
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            key = next((k for k in _TORCH_CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if key is None:
                break
            container_path.append(key)
            obj = obj[key]
        else:
            break
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: expected a state_dict (a mapping of names to tensors), got {type(obj).__name__}. Save "
            "`model.state_dict()` rather than the model or a tensor."
        )
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    dropped = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not tensors:
        raise CheckpointError(
            f"{path}: found no tensors (top-level keys: {list(obj)[:10]}); expected a state_dict or a container "
            f"with one under {list(_TORCH_CONTAINER_KEYS)}."
        )
    if container_path:
        extra["container"] = ".".join(container_path)
    if dropped:
        extra["dropped_non_tensor_keys"] = dropped
    keys = list(tensors)
    if all(k.startswith("module.") for k in keys):  # DistributedDataParallel / DataParallel wrapper
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
        extra["stripped_prefix"] = "module."
    return tensors, extra


def _load_torch(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return _unwrap_torch_object(_torch_load(path), path)


# ----------------------------------------------------------------------------------------------------------------
# ONNX
# ----------------------------------------------------------------------------------------------------------------

# For operators whose inputs are parameters: input index -> parameter suffix (PyTorch's names where they exist).
_ONNX_SLOTS: dict[str, dict[int, str]] = {
    "Conv": {1: "weight", 2: "bias"},
    "ConvTranspose": {1: "weight", 2: "bias"},
    "Gemm": {1: "weight", 2: "bias"},
    "MatMul": {0: "weight", 1: "weight"},
    "Add": {0: "bias", 1: "bias"},
    "Mul": {0: "weight", 1: "weight"},
    "BatchNormalization": {1: "weight", 2: "bias", 3: "running_mean", 4: "running_var"},
    "InstanceNormalization": {1: "weight", 2: "bias"},
    "LayerNormalization": {1: "weight", 2: "bias"},
    "GroupNormalization": {1: "weight", 2: "bias"},
    "PRelu": {1: "weight"},
    "Gather": {0: "weight"},
    "LSTM": {1: "weight_ih", 2: "weight_hh", 3: "bias"},
    "GRU": {1: "weight_ih", 2: "weight_hh", 3: "bias"},
    "RNN": {1: "weight_ih", 2: "weight_hh", 3: "bias"},
}
_PARAM_LIKE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
_SEGMENT_BAD = re.compile(r"[^A-Za-z0-9_.]")


def _onnx_node_path(node_name: str, op_type: str) -> str:
    """`/model/decoder/blocks.4/conv1/conv1.0/Conv` -> `model.decoder.blocks.4.conv1.0` (PyTorch exporter scopes)."""
    segments = [s for s in node_name.split("/") if s]
    if len(segments) > 1 and re.fullmatch(rf"{re.escape(op_type)}(_\d+)?", segments[-1]):
        segments = segments[:-1]
    merged: list[str] = []
    for seg in segments:
        if merged and seg.startswith(merged[-1] + "."):  # a child scope repeats its parent: conv1/conv1.0
            merged[-1] = seg
        else:
            merged.append(seg)
    return ".".join(_SEGMENT_BAD.sub("_", s).strip(".") or "_" for s in merged)


def onnx_parameter_name(initializer: str, node_name: str, op_type: str, input_index: int, node_index: int) -> str:
    """The parameter name given to an ONNX initializer.

    Names that already look like PyTorch parameter names (dotted identifiers, e.g. `model.encoder._bn0.weight`,
    which is what the PyTorch exporter keeps for module parameters) are kept. Others (`onnx::Conv_512`,
    `/enc/Constant_output_0`, TensorFlow-style paths) are derived from the first node that consumes them: the
    node's scope path with dots plus a suffix by operator and input index (`Conv` input 1 -> `weight`,
    input 2 -> `bias`; `BatchNormalization` 1-4 -> `weight`, `bias`, `running_mean`, `running_var`; `Gemm`,
    `MatMul`, `Add` ... see `_ONNX_SLOTS`; otherwise `<op>_<index>`).

    >>> onnx_parameter_name("onnx::Conv_7", "/encoder/conv_stem/Conv", "Conv", 1, 0)
    'encoder.conv_stem.weight'
    >>> onnx_parameter_name("model.head.bias", "/model/head/Gemm", "Gemm", 2, 9)
    'model.head.bias'
    """
    if _PARAM_LIKE.fullmatch(initializer):
        return initializer
    path = _onnx_node_path(node_name, op_type) if node_name else ""
    if not path:
        path = f"{op_type.lower()}_{node_index}"
    suffix = _ONNX_SLOTS.get(op_type, {}).get(input_index, f"{op_type.lower()}_{input_index}")
    return f"{path}.{suffix}"


def _onnx_array_to_tensor(array: Any) -> torch.Tensor | None:
    import numpy as np

    name = array.dtype.name
    if name == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(array).view(np.uint16)).view(torch.bfloat16)
    if name in ("float8_e4m3fn", "float8_e5m2"):
        return torch.from_numpy(np.ascontiguousarray(array).view(np.uint8)).view(getattr(torch, name))
    if array.dtype.kind not in "biufc":
        return None
    return torch.from_numpy(np.array(array, copy=True))


def _load_onnx(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise CheckpointError(
            f"Loading {path} needs the `onnx` package, a core dependency of geosane-hf missing from this "
            "environment: `pip install 'onnx>=1.17'`."
        ) from e
    try:
        model = onnx.load(path, load_external_data=True)
    except Exception as e:  # protobuf DecodeError, missing external data ...
        raise CheckpointError(
            f"Could not read {path} as an ONNX model ({type(e).__name__}: {e}); the file is probably truncated or "
            "corrupt: re-download or re-export it."
        ) from e
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    if not initializers:
        raise CheckpointError(f"{path}: the ONNX graph has no initializers (weights); nothing to load")

    # First consumer of each initializer, walking nodes in graph order (subgraphs of If/Loop included).
    first_use: dict[str, tuple[str, str, int, int]] = {}
    counter = 0

    def walk(g: Any) -> None:
        nonlocal counter
        for node in g.node:
            for i, inp in enumerate(node.input):
                if inp in initializers and inp not in first_use:
                    first_use[inp] = (node.name, node.op_type, i, counter)
            counter += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(graph)
    order = list(first_use) + [n for n in initializers if n not in first_use]

    tensors: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}  # new name -> original initializer name
    dropped: list[str] = []
    for original in order:
        tensor = _onnx_array_to_tensor(numpy_helper.to_array(initializers[original]))
        if tensor is None or not (tensor.is_floating_point() or tensor.is_complex()):
            dropped.append(original)  # shape/axes constants and other non-weights
            continue
        use = first_use.get(original)
        name = onnx_parameter_name(original, *use) if use else onnx_parameter_name(original, "", "Initializer", 0, 0)
        if not _PARAM_LIKE.fullmatch(name):
            name = _SEGMENT_BAD.sub("_", name)
        base, k = name, 1
        while name in tensors:
            name = f"{base}_{k}"
            k += 1
        tensors[name] = tensor
        names[name] = original
    if not tensors:
        raise CheckpointError(f"{path}: the ONNX graph has no floating-point initializers; nothing to load")
    extra: dict[str, Any] = {
        "onnx_names": names,
        "onnx_renamed": sum(1 for k, v in names.items() if k != v),
        "opset": {imp.domain or "ai.onnx": imp.version for imp in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }
    if dropped:
        extra["dropped_non_float_initializers"] = dropped
    return tensors, extra


# ----------------------------------------------------------------------------------------------------------------
# numpy .npz
# ----------------------------------------------------------------------------------------------------------------


def _load_npz(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import numpy as np

    tensors: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    skipped: list[str] = []
    try:
        with np.load(path, allow_pickle=False) as npz:
            for original in npz.files:
                try:
                    array = npz[original]
                except ValueError as e:  # object arrays need pickle
                    raise CheckpointError(
                        f"Refusing to load array {original!r} of {path}: it is a pickled object array and unpickling "
                        "could run arbitrary code. Re-save it as a numeric array (or convert it to safetensors in a "
                        "trusted environment)."
                    ) from e
                if array.dtype.kind not in "biufc":
                    warnings.warn(f"{path}: skipping non-numeric array {original!r} ({array.dtype})", stacklevel=3)
                    skipped.append(original)
                    continue
                name = original.replace("/", ".")
                if name in tensors:
                    raise CheckpointError(
                        f"{path}: arrays {names[name]!r} and {original!r} both map to {name!r}; rename one of them"
                    )
                tensors[name] = torch.from_numpy(np.array(array, copy=True))
                names[name] = original
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise CheckpointError(
            f"Could not read {path} as a numpy .npz archive ({type(e).__name__}: {e}); the file is probably "
            "truncated or corrupt: re-download or re-export it."
        ) from e
    if not tensors:
        raise CheckpointError(f"{path}: the archive holds no numeric arrays")
    extra: dict[str, Any] = {}
    renamed = {k: v for k, v in names.items() if k != v}
    if renamed:
        extra["npz_names"] = renamed
    if skipped:
        extra["skipped_non_numeric"] = skipped
    return tensors, extra


# ----------------------------------------------------------------------------------------------------------------
# timm
# ----------------------------------------------------------------------------------------------------------------


def _timm_unknown(name: str, *, bare: bool) -> CheckpointError:
    import timm

    base = name.split(".", 1)[0]
    close = difflib.get_close_matches(base, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    forms = (
        " Accepted sources: an existing file or directory, `timm:NAME`, `hf-hub:org/name` or `org/name`."
        if bare
        else ""
    )
    return CheckpointError(
        f"Unknown timm architecture {name!r}.{hint} See `timm.list_models('*pattern*')` for the names.{forms}"
    )


def _load_timm(name: str, seed: int | None, kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    import timm

    if not timm.is_model(name):
        raise _timm_unknown(name, bare=False)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            model = timm.create_model(name, pretrained=False, **kwargs)
        except TypeError as e:
            raise CheckpointError(f"timm could not build {name!r} with arguments {kwargs}: {e}") from e
    return dict(model.state_dict())


def _timm_key_order(architecture: str, keys: list[str], weights_path: str) -> list[str] | None:
    """The state_dict order of timm's `architecture` (built on the meta device) when it has exactly `keys`."""
    if not re.fullmatch(r"[\w.-]+", architecture):
        return None
    import timm

    if not timm.is_model(architecture):
        return None
    model_kwargs: dict[str, Any] = {}
    config = Path(weights_path).parent / "config.json"
    if config.is_file():  # timm's config.json: num_classes, model_args
        try:
            cfg = json.loads(config.read_text(encoding="utf-8"))
            model_kwargs = dict(cfg.get("model_args") or {})
            if "num_classes" in cfg:
                model_kwargs.setdefault("num_classes", cfg["num_classes"])
        except (OSError, json.JSONDecodeError, TypeError, ValueError, AttributeError):
            model_kwargs = {}
    try:
        with torch.device("meta"):
            reference = list(timm.create_model(architecture, pretrained=False, **model_kwargs).state_dict())
    except Exception as e:  # an optional improvement: keep the data-offset order
        logger.info("could not build %s on the meta device to restore the key order: %s", architecture, e)
        return None
    return reference if sorted(reference) == sorted(keys) else None


def _is_timm_name(name: str) -> bool:
    if not re.fullmatch(r"[\w.-]+", name):
        return False
    import timm

    return bool(timm.is_model(name))


# ----------------------------------------------------------------------------------------------------------------
# Hugging Face Hub and directories
# ----------------------------------------------------------------------------------------------------------------


def _pick_weights_file(files: list[str], where: str) -> str:
    for name in PREFERRED_FILENAMES:
        if name in files:
            return name
    top = [f for f in files if "/" not in f]
    for suffixes in (_SAFETENSORS_SUFFIXES, _TORCH_SUFFIXES - {".ckpt"}, _ONNX_SUFFIXES, _NPZ_SUFFIXES):
        candidates = sorted(f for f in top if Path(f).suffix in suffixes)
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise CheckpointError(f"{where} holds several weights files {candidates}; pass filename= to choose one.")
    raise CheckpointNotFoundError(
        f"{where} holds no weights file: expected one of {list(PREFERRED_FILENAMES)} or a single *.safetensors / "
        f"*.bin / *.pt / *.pth / *.onnx / *.npz; found {sorted(files)[:20]}."
    )


def _read_shard_index(path: str) -> list[str]:
    """Shard file names of a `*.index.json`, in the order they first appear in the weight map.

    Every name must be a relative path below the index's folder (a Hub repo's or a local directory's): an index
    that points at ``../x`` or ``/etc/x`` is refused before anything is opened or downloaded.
    """
    try:
        with open(path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        shards = list(dict.fromkeys(weight_map.values()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: expected a JSON index with a 'weight_map', could not read it ({e})") from e
    for shard in shards:
        try:
            resolve_inside(Path(path).parent, shard, f"{path}: shard")
        except UnsafePathError as e:
            raise CheckpointError(str(e)) from e
    return shards


def _regular_file(path: str | os.PathLike) -> str:
    """``path`` when it is a regular file (or a link to one); a FIFO, socket or device would block or never end."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise CheckpointError(f"{path}: could not read it ({e}); expected a readable checkpoint file") from e
    if not stat.S_ISREG(mode):
        raise CheckpointError(
            f"{path}: expected a regular checkpoint file, got a {_file_kind(mode)}; reading it could block forever or "
            "never end. Point at the file itself."
        )
    return str(path)


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "device")):
        if test(mode):
            return kind
    return "block device" if stat.S_ISBLK(mode) else "directory" if stat.S_ISDIR(mode) else "special file"


def _hub_error(
    repo_id: str, tried: list[str], cause: BaseException, cache_dir: str | None, unreachable: str | None
) -> CheckpointError:
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = constants.is_offline_mode()
    if isinstance(cause, LocalEntryNotFoundError):
        reason = "none of the files is in the local cache"
    else:
        reason = f"{type(cause).__name__}: {str(cause).splitlines()[0][:300] if str(cause) else ''}"
    state = f"HF_HUB_OFFLINE={'1' if offline else '0'}" + (f", unreachable: {unreachable}" if unreachable else "")
    return CheckpointError(
        f"Could not load {repo_id!r} from the Hugging Face Hub (endpoint {constants.ENDPOINT}, {state}, cache "
        f"{cache_dir or constants.HF_HUB_CACHE}). Tried: {'; '.join(tried)}. Result: {reason}. What to do: check "
        "your connection and HF_ENDPOINT (and HF_TOKEN for private or gated repos), download the repo once while "
        "online so that it is in the cache"
        + (" (HF_HUB_OFFLINE=1 only reads the cache)" if offline else "")
        + ", or pass a local file or directory instead."
    )


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Exception types meaning "the Hub cannot be reached" (huggingface_hub 1.x/2.x talk through httpx/httpx2)."""
    import importlib

    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]  # OfflineModeIsEnabled is a ConnectionError
    for module in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError, AttributeError):
            errors.append(importlib.import_module(module).TransportError)
    return tuple(errors)


@dataclass
class _HubFiles:
    paths: list[str]
    config: str | None  # the repo's config.json when present (for the architecture name)


def _hub_download(repo_id: str, filename: str | None, revision: str | None, cache_dir: str | None) -> _HubFiles:
    """Resolve weights files of a Hub repo through huggingface_hub.

    One `model_info` request lists the repo's files (and tells whether the Hub is reachable); files are then
    fetched with `hf_hub_download`. When the Hub cannot be reached (or `HF_HUB_OFFLINE=1`), files come from the
    local cache only (`local_files_only=True`), trying `filename` or `PREFERRED_FILENAMES`, without the long retry
    loop huggingface_hub applies to failing downloads.
    """
    from huggingface_hub import HfApi, constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    tried: list[str] = []
    transport = _transport_errors()
    local_only = constants.is_offline_mode()
    unreachable: str | None = None
    files: list[str] | None = None

    def download(name: str) -> str:
        tried.append(f"{'cached ' if local_only else 'download '}{name}")
        return hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir, local_files_only=local_only)

    try:
        candidates = [filename] if filename is not None else list(PREFERRED_FILENAMES)
        if not local_only:
            tried.append("model_info (list the repo files)")
            try:
                info = HfApi().model_info(repo_id, revision=revision)
                if info.siblings is not None:
                    files = [s.rfilename for s in info.siblings]
                    if filename is None:
                        candidates = [_pick_weights_file(files, f"Hub repo {repo_id!r}")]
            except (RepositoryNotFoundError, RevisionNotFoundError):
                raise
            except transport as e:
                unreachable = str(e) or type(e).__name__
                logger.warning("The Hub is unreachable (%s); looking for %s in the local cache", unreachable, repo_id)
                local_only = True
            except HfHubHTTPError as e:
                logger.info("model_info(%s) failed (%s); trying the usual file names", repo_id, e)
        last: BaseException | None = None
        for name in candidates:
            try:
                path = download(name)
                break
            except EntryNotFoundError as e:  # includes LocalEntryNotFoundError (not in the cache)
                last = e
        else:
            raise last if last is not None else CheckpointNotFoundError(f"no weights file in {repo_id!r}")
        paths = [download(shard) for shard in _read_shard_index(path)] if name.endswith(".index.json") else [path]
    except CheckpointError:
        raise
    except (HfHubHTTPError, EntryNotFoundError, OSError, ValueError, *transport) as e:
        raise _hub_error(repo_id, tried, e, cache_dir, unreachable) from e

    config = None
    if files is None or "config.json" in files:
        try:
            config = hf_hub_download(
                repo_id, "config.json", revision=revision, cache_dir=cache_dir, local_files_only=local_only
            )
        except (HfHubHTTPError, EntryNotFoundError, OSError, *transport):
            config = None  # optional: many weight repos have no config.json
    return _HubFiles(paths, config)


def _architecture_from_config(path: str | os.PathLike) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(config, dict):
        return None
    if isinstance(config.get("architecture"), str):  # timm's config.json
        return config["architecture"]
    archs = config.get("architectures")  # transformers' config.json
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        return archs[0]
    return config.get("model_type") if isinstance(config.get("model_type"), str) else None


def _local_files(path: Path, filename: str | None) -> list[str]:
    if path.is_dir():
        if filename is None:
            filename = _pick_weights_file([p.name for p in path.iterdir() if p.is_file()], f"directory {path}")
        target = path / filename
        if not target.is_file():
            raise CheckpointNotFoundError(f"{target} does not exist (filename={filename!r} in directory {path})")
        path = target
    elif filename is not None:
        raise CheckpointError(f"filename= is only used with a directory or a Hub repo; {path} is a file")
    if path.name.endswith(".index.json"):
        return [_regular_file(path.parent / shard) for shard in _read_shard_index(_regular_file(path))]
    return [_regular_file(path)]


# ----------------------------------------------------------------------------------------------------------------
# format detection and the entry point
# ----------------------------------------------------------------------------------------------------------------


def _detect_format(path: str) -> CheckpointFormat:
    suffix = Path(path).suffix.lower()
    if suffix in _SAFETENSORS_SUFFIXES:
        return "safetensors"
    if suffix in _TORCH_SUFFIXES:
        return "torch"
    if suffix in _ONNX_SUFFIXES:
        return "onnx"
    if suffix in _NPZ_SUFFIXES:
        return "npz"
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise CheckpointError(
                f"{path} starts like a zip archive (a PyTorch or .npz file) but is not a valid one ({e}); the file is "
                "probably truncated or corrupt: re-download or re-export it."
            ) from e
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        return "torch"
    if head[:1] == b"\x80":  # a pickle protocol marker: legacy torch.save
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    raise CheckpointError(
        f"Cannot tell the format of {path}: expected a suffix among {sorted(_KNOWN_SUFFIXES - {'.json'})} or "
        "recognisable content; rename the file with its format's suffix."
    )


def _sha256(path: str) -> str | None:
    if os.path.getsize(path) > SHA256_MAX_BYTES:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**22), b""):
            h.update(chunk)
    return h.hexdigest()


def _summarise(
    state_dict: Mapping[str, torch.Tensor], specs: Mapping[str, TensorSpec] | None = None
) -> tuple[int, int, dict[str, int]]:
    if specs is None:
        specs = {k: TensorSpec(tuple(v.shape), v.dtype) for k, v in state_dict.items()}
    num_params = sum(s.numel for s in specs.values() if s.dtype.is_floating_point or s.dtype.is_complex)
    dtypes = Counter(str(s.dtype).removeprefix("torch.") for s in specs.values())
    return num_params, len(specs), dict(dtypes)


def _load_files(paths: list[str], source: str, architecture: str | None, extra: dict[str, Any]) -> LoadedCheckpoint:
    formats = {_detect_format(p) for p in paths}
    if len(formats) != 1:
        raise CheckpointError(f"expected shards of one format, got {sorted(formats)} in {paths}")
    fmt = formats.pop()
    specs: Mapping[str, TensorSpec] | None = None
    state_dict: Mapping[str, torch.Tensor]
    if fmt == "safetensors":
        lazy, more = _load_safetensors_files(paths)
        state_dict, specs = lazy, lazy.tensor_specs
    else:
        loader = {"torch": _load_torch, "onnx": _load_onnx, "npz": _load_npz}[fmt]
        merged: dict[str, torch.Tensor] = {}
        more = {}
        for p in paths:
            part, part_extra = loader(p)
            duplicate = next((k for k in part if k in merged), None)
            if duplicate is not None:
                raise CheckpointError(f"tensor {duplicate!r} appears in more than one shard ({p})")
            merged.update(part)
            more.update(part_extra)
        state_dict = merged
    extra = {**extra, **more}
    if isinstance(state_dict, LazySafetensorsStateDict) and "metadata" not in extra["key_order"] and architecture:
        order = _timm_key_order(architecture, list(state_dict), paths[0])
        if order is not None:
            state_dict._reorder(order)
            extra["key_order"] = [f"timm:{architecture}"]
    if len(paths) > 1:
        extra["shards"] = paths
    num_params, num_tensors, dtypes = _summarise(state_dict, specs)
    return LoadedCheckpoint(
        state_dict=state_dict,
        metadata=CheckpointMetadata(
            source=source,
            format=fmt,
            path=paths[0],
            architecture=architecture,
            num_parameters=num_params,
            num_tensors=num_tensors,
            dtypes=dtypes,
            sha256=_sha256(paths[0]) if len(paths) == 1 else None,
            extra=extra,
        ),
    )


def load_checkpoint(
    source: str | os.PathLike,
    *,
    filename: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    seed: int | None = None,
    **kwargs: Any,
) -> LoadedCheckpoint:
    """Load an ordered state_dict and metadata from a file, a directory, a timm name or a Hub repo, safely.

    The source is resolved in this order (the first rule that applies wins):

    1. An existing local path. A file is read by its suffix (`.safetensors`; `.pt/.pth/.bin/.ckpt`; `.onnx`;
       `.npz`; `*.index.json` for shards), or by its content when the suffix is unknown. A directory is searched
       for `filename`, else `model.safetensors`, `model.safetensors.index.json`, `pytorch_model.bin`,
       `pytorch_model.bin.index.json`, else a single weights file.
    2. `timm:NAME`: timm architecture with random weights, built offline (`pretrained=False`, `**kwargs` passed to
       `timm.create_model`, `seed` seeds the init without touching the global RNG).
    3. `hf-hub:org/name`: a Hub repo via huggingface_hub (`filename`/`revision`, or the preferred files above).
    4. A string that looks like a path (a known suffix or a path separator other than a single `org/name`) but
       does not exist: `CheckpointNotFoundError`.
    5. A bare name in timm's registry (e.g. `resnet18`): as in 2.
    6. `org/name`: as in 3. Works from the local cache with `HF_HUB_OFFLINE=1`.
    7. Anything else: `CheckpointError` that suggests close timm names.

    Formats: safetensors are memory-mapped and lazy (a `LazySafetensorsStateDict` with `tensor_specs`; one tensor
    read per `__getitem__`), key order restored from `save_safetensors` metadata or else the data-offset order.
    PyTorch files use `torch.load(weights_only=True, mmap=True)` only; containers `state_dict` (as in
    Lightning checkpoints), `model_state_dict`, `model` and `module` are unwrapped, non-tensors dropped and a
    `module.` prefix shared by all keys (DDP) stripped. ONNX initializers keep PyTorch-like names or get names derived from their node
    (see `onnx_parameter_name`), in graph order, dtypes kept (fp16 stays fp16); non-floating initializers are
    dropped. `.npz` arrays keep their names with "/" -> ".". Dtypes are never changed and values never checked.

    Args:
        source: Path, `timm:NAME`, timm name, `hf-hub:org/name` or `org/name`.
        filename: File inside a directory or Hub repo.
        revision: Hub revision (branch, tag or commit).
        cache_dir: Hub cache directory (default: huggingface_hub's).
        seed: Seed for the random init of timm sources.
        **kwargs: Passed to `timm.create_model` (timm sources only), e.g. `num_classes=10, in_chans=4`.

    Returns:
        A `LoadedCheckpoint(state_dict, metadata)`.

    Raises:
        CheckpointError: Unreadable, corrupt or unsafe files, unknown names, unreachable Hub repos.
        CheckpointNotFoundError: A path that does not exist.

    >>> ckpt = load_checkpoint("timm:resnet18", num_classes=4, seed=0)
    >>> ckpt.metadata.format, ckpt.metadata.architecture, ckpt.state_dict["fc.weight"].shape
    ('timm', 'resnet18', torch.Size([4, 512]))
    """
    original = str(source)
    cache = str(cache_dir) if cache_dir is not None else None
    text = os.fspath(source)
    if not isinstance(text, str):
        raise CheckpointError(f"expected a str or path source, got {type(source).__name__}")

    def reject_kwargs(kind: str) -> None:
        if kwargs or seed is not None:
            given = sorted(kwargs) + (["seed"] if seed is not None else [])
            raise CheckpointError(f"keyword arguments {given} only apply to timm sources, got a {kind} source")

    path = Path(text).expanduser()
    if isinstance(source, os.PathLike) or path.exists():
        if not path.exists():
            raise CheckpointNotFoundError(f"{path} does not exist; expected a checkpoint file or directory")
        reject_kwargs("local")
        files = _local_files(path, filename)
        arch = None
        # config.json describes a directory's model, or the file when it has a standard name (a saved repo).
        config = (path if path.is_dir() else path.parent) / "config.json"
        if config.is_file() and (path.is_dir() or path.name in PREFERRED_FILENAMES):
            arch = _architecture_from_config(config)
        return _load_files(files, original, arch, {})

    if text.startswith("timm:"):
        return _load_timm_checkpoint(text[len("timm:") :], original, seed, kwargs)
    hub_prefix = next((p for p in ("hf-hub:", "hf_hub:") if text.startswith(p)), None)
    if hub_prefix is not None:
        reject_kwargs("Hub")
        return _load_hub(text[len(hub_prefix) :], original, filename, revision, cache)

    looks_like_repo = bool(_HUB_REPO_ID.fullmatch(text)) and Path(text).suffix.lower() not in _KNOWN_SUFFIXES
    if not looks_like_repo and (
        Path(text).suffix.lower() in _KNOWN_SUFFIXES or os.sep in text or "/" in text or text.startswith(".")
    ):
        raise CheckpointNotFoundError(
            f"{text} does not exist; expected an existing checkpoint file or directory "
            "(or `timm:NAME`, `hf-hub:org/name`)"
        )
    if not looks_like_repo:
        if _is_timm_name(text):
            return _load_timm_checkpoint(text, original, seed, kwargs)
        raise _timm_unknown(text, bare=True)
    reject_kwargs("Hub")
    return _load_hub(text, original, filename, revision, cache)


def _load_timm_checkpoint(name: str, original: str, seed: int | None, kwargs: dict[str, Any]) -> LoadedCheckpoint:
    state_dict = _load_timm(name, seed, kwargs)
    num_params, num_tensors, dtypes = _summarise(state_dict)
    return LoadedCheckpoint(
        state_dict=state_dict,
        metadata=CheckpointMetadata(
            source=original,
            format="timm",
            path=None,
            architecture=name,
            num_parameters=num_params,
            num_tensors=num_tensors,
            dtypes=dtypes,
            sha256=None,
            extra={"pretrained": False, "seed": seed, "model_kwargs": {k: repr(v) for k, v in kwargs.items()}},
        ),
    )


def _load_hub(
    repo_id: str, original: str, filename: str | None, revision: str | None, cache_dir: str | None
) -> LoadedCheckpoint:
    if not _HUB_REPO_ID.fullmatch(repo_id):
        raise CheckpointError(f"expected a Hub repo id like 'org/name', got {repo_id!r}")
    hub = _hub_download(repo_id, filename, revision, cache_dir)
    arch = _architecture_from_config(hub.config) if hub.config else None
    extra: dict[str, Any] = {"hub_repo": repo_id, "revision": revision}
    commit = re.search(r"[/\\]snapshots[/\\]([0-9a-f]{40})[/\\]", hub.paths[0])  # the cache layout
    if commit:
        extra["commit"] = commit.group(1)
    return _load_files(hub.paths, original, arch, extra)
