"""Where weights files come from: the Hugging Face Hub (through its cache), local folders and sharded indexes."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from geosane_hf.checkpoints.base import (
    _NPZ_SUFFIXES,
    _ONNX_SUFFIXES,
    _SAFETENSORS_SUFFIXES,
    _TORCH_SUFFIXES,
    PREFERRED_FILENAMES,
    CheckpointError,
    CheckpointNotFoundError,
)
from geosane_hf.errors import UnsafePathError
from geosane_hf.safe_paths import resolve_inside

logger = logging.getLogger(__name__)

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
