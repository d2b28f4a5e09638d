"""timm models by name (seeded or pretrained state_dicts) and timm's key order for foreign safetensors files."""

from __future__ import annotations

import difflib
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from geosane_hf.checkpoints.base import CheckpointError

logger = logging.getLogger(__name__)

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
