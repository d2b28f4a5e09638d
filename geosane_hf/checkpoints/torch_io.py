"""PyTorch checkpoints (.pt / .pth / .bin / .ckpt) through ``torch.load(weights_only=True)`` only."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from typing import Any

import torch

from geosane_hf.checkpoints.base import CheckpointError

#: Container keys unwrapped from PyTorch checkpoints, in this order (Lightning stores weights under "state_dict").
_TORCH_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module")


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
