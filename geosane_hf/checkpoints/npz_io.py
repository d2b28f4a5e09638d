"""numpy ``.npz`` archives through ``numpy.load(allow_pickle=False)``."""

from __future__ import annotations

import warnings
import zipfile
from typing import Any

import torch

from geosane_hf.checkpoints.base import CheckpointError

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
