"""safetensors: the validated header parser, the one lazy reader (memory-mapped or plain reads) and the atomic
writer that records the key order."""

from __future__ import annotations

import json
import logging
import os
import struct
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from geosane_hf.checkpoints.base import KEY_ORDER_METADATA_KEY, CheckpointError, TensorSpec

logger = logging.getLogger(__name__)

#: The safetensors format refuses headers larger than this.
_SAFETENSORS_MAX_HEADER = 100 * 2**20

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
    >>> from geosane_hf.checkpoints import load_checkpoint
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
    >>> from geosane_hf.checkpoints import load_checkpoint
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
