"""Checkpoints of a run: staged ``checkpoints/checkpoint_<n>`` folders, which one to resume from, the checks done before
any compute (the output folder, a compatible checkpoint), pruning, and the NaN/Inf check before every save.

A save (``training/train.py``) writes into ``.checkpoint_<n>.partial`` and renames it when ``trainer_state.json``
(the last file) is written; an interrupted save or deletion never leaves a ``checkpoint_<n>`` that ``--resume``
would pick.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from geosane_hf.errors import GeoSANEError
from training.config import TrainingConfig

STATE_FILE = "trainer_state.json"  # step, sampler and scheduler state, config (main process)
RANK_STATE_FILE = "augment_rng_rank{rank}.json"  # each rank's augmentation generator


class TrainingSetupError(GeoSANEError, ValueError):
    """Bad input found before training starts (the message says what was expected and what to do)."""


class TrainingDivergedError(GeoSANEError, RuntimeError):
    """The loss or the weights became NaN/Inf: the run stops before it saves them (earlier checkpoints stay)."""


CHECKPOINTS_DIR = "checkpoints"
_STAGE_SUFFIX = ".partial"  # `.checkpoint_<n>.partial`: a save in progress, renamed to checkpoint_<n> when complete
_DELETE_SUFFIX = ".deleting"  # `.checkpoint_<n>.deleting`: an old checkpoint being removed (checkpoints_total_limit)


def _checkpoint_index(path: Path) -> int:
    name = path.name
    if not name.startswith("checkpoint_") or not name[len("checkpoint_") :].isdigit():
        raise TrainingSetupError(f"expected a checkpoint folder named checkpoint_<n> (save_state), got {str(path)!r}.")
    return int(name[len("checkpoint_") :])


def find_resume_dir(resume: str, output_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``"latest"`` -> newest ``output_dir/checkpoints/checkpoint_<n>`` with a
    complete state (None when there is none), else the given folder (which must exist)."""
    if resume != "latest":
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise TrainingSetupError(
                f"--resume: expected a checkpoint folder with {STATE_FILE} (written by this script), got {resume!r}."
            )
        _checkpoint_index(path)
        return path
    candidates = complete_checkpoints(output_dir)
    return candidates[-1] if candidates else None


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """The ``checkpoints/checkpoint_<n>`` folders whose trainer state was written (the last file of a save), by n."""
    folder = output_dir / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("checkpoint_*") if p.name[len("checkpoint_") :].isdigit()]
    return sorted((p for p in found if (p / STATE_FILE).is_file()), key=_checkpoint_index)


def incomplete_checkpoints(output_dir: Path) -> list[Path]:
    """What interrupted saves and deletions left in ``checkpoints/``: staged folders and states without
    ``trainer_state.json`` (written by versions that saved in place)."""
    folder = output_dir / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    staged = [p for p in folder.iterdir() if p.name.endswith((_STAGE_SUFFIX, _DELETE_SUFFIX))]
    unfinished = [p for p in folder.glob("checkpoint_*") if p.is_dir() and not (p / STATE_FILE).is_file()]
    return sorted(staged + unfinished)


def check_output_dir(output_dir: Path, resume: str | None, push_to_hub: str | None) -> None:
    """Refuses, before any compute, what would fail or mix runs later: an earlier run's folder without --resume, a
    folder that cannot be written, a Hub repo id that the Hub would reject after all the training steps."""
    if push_to_hub is not None:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(push_to_hub)
        except HFValidationError as error:
            raise TrainingSetupError(
                f"--push_to_hub: expected a Hub repo id like 'org/name', got {push_to_hub!r}: {error}"
            ) from error
    if output_dir.exists() and not output_dir.is_dir():
        raise TrainingSetupError(f"--output_dir: expected a folder, got the file {str(output_dir)!r}.")
    if resume is None and output_dir.is_dir():
        earlier = sorted(p.name for p in output_dir.iterdir() if not p.name.startswith("."))
        if earlier:
            raise TrainingSetupError(
                f"--output_dir {str(output_dir)!r} holds an earlier run ({earlier[:6]}); pass --resume to continue "
                "it, or choose a new (or empty) --output_dir: a second run there would mix checkpoints, logs and "
                "models."
            )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise TrainingSetupError(
            f"--output_dir: expected a folder this process can write, got {str(output_dir)!r} ({error}); choose "
            "another folder or fix its permissions."
        ) from error


def check_resume_compatible(resume_dir: Path, config: TrainingConfig, dataset: str) -> dict[str, Any]:
    """Reads a checkpoint's trainer state and refuses one written with another config (before any compute)."""
    state = json.loads((resume_dir / STATE_FILE).read_text())
    saved = state.get("config", {})
    from training.config import RESUME_KEYS

    differing = sorted(key for key in RESUME_KEYS if saved.get(key) != config.to_dict().get(key))
    if differing:
        detail = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {config.to_dict().get(k)!r}" for k in differing)
        raise TrainingSetupError(
            f"--resume: the checkpoint {str(resume_dir)!r} was written with another config ({detail}); resume with "
            "the same config or start a new --output_dir."
        )
    if state.get("dataset") not in (None, dataset):
        raise TrainingSetupError(
            f"--resume: the checkpoint was trained on dataset {state.get('dataset')!r}, got --dataset {dataset!r}."
        )
    return state


def check_finite_weights(model: torch.nn.Module, step: int, checkpoints: list[Path]) -> None:
    """Raises :class:`TrainingDivergedError` when a parameter holds NaN/Inf (called before every save)."""
    for name, parameter in model.named_parameters():
        if not bool(torch.isfinite(parameter).all()):
            bad = int((~torch.isfinite(parameter)).sum())
            raise TrainingDivergedError(
                f"parameter {name!r} holds {bad} NaN/Inf values at step {step}; stopped without saving them. "
                f"{_last_good(checkpoints)} Lower learning_rate (or raise warmup_fraction), keep max_grad_norm > 0, "
                "and check the dataset."
            )


def _last_good(checkpoints: list[Path]) -> str:
    if not checkpoints:
        return "No checkpoint was saved before."
    return f"The last checkpoint, {str(checkpoints[-1])!r}, is intact."


def _prune_checkpoints(output_dir: Path, keep: int | None) -> None:
    """Deletes the oldest complete checkpoints beyond ``keep`` (hidden by a rename first: a kill mid-delete never
    leaves a half-deleted ``checkpoint_<n>`` that resuming would pick)."""
    if keep is None:
        return
    for old in complete_checkpoints(output_dir)[:-keep]:
        doomed = old.with_name(f".{old.name}{_DELETE_SUFFIX}")
        os.rename(old, doomed)
        shutil.rmtree(doomed)
