"""The entry point: detect a source's format and load it (`load_checkpoint`), file by file or from the Hub."""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from geosane_hf.checkpoints.base import (
    _HUB_REPO_ID,
    _KNOWN_SUFFIXES,
    _NPZ_SUFFIXES,
    _ONNX_SUFFIXES,
    _SAFETENSORS_SUFFIXES,
    _TORCH_SUFFIXES,
    PREFERRED_FILENAMES,
    SHA256_MAX_BYTES,
    CheckpointError,
    CheckpointFormat,
    CheckpointMetadata,
    CheckpointNotFoundError,
    LoadedCheckpoint,
    TensorSpec,
)
from geosane_hf.checkpoints.npz_io import _load_npz
from geosane_hf.checkpoints.onnx_io import _load_onnx
from geosane_hf.checkpoints.safetensors_io import LazySafetensorsStateDict, _load_safetensors_files
from geosane_hf.checkpoints.sources import _architecture_from_config, _hub_download, _local_files
from geosane_hf.checkpoints.timm_io import _is_timm_name, _load_timm, _timm_key_order, _timm_unknown
from geosane_hf.checkpoints.torch_io import _load_torch

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
