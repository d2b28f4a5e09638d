"""Training a GeoSANE model from an experiment: ``accelerate launch training/train.py`` in a child process.

The experiments (the demo, the zoo experiment) train the way a user does, through the repository's Accelerate
script, one CPU process here and unchanged on GPUs: :func:`launch_training` builds the command, resumes a killed run
from its last complete checkpoint, and plots the training curve with the repository's plot script.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geosane_hf.errors import GeoSANEError

__all__ = ["REPO_ROOT", "TrainingLaunchError", "TrainingRun", "launch_training"]

REPO_ROOT = Path(__file__).resolve().parents[2]


class TrainingLaunchError(GeoSANEError, RuntimeError):
    """The training script is missing, failed, or left no history."""


@dataclass
class TrainingRun:
    """A finished training run: the model folder, the last held-out evaluation and the curve plot."""

    model_dir: Path
    final_evaluation: dict[str, Any]
    curve: Path


def launch_training(
    config: str | os.PathLike,
    dataset: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    holdout_ids: Sequence[str] = (),
    threads: int = 2,
    num_steps: int | None = None,
    resume: bool = True,
    what: str = "train stage",
) -> TrainingRun:
    """Trains with ``accelerate launch --cpu training/train.py`` (1 process) and plots the training curve.

    Args:
        config: A training YAML file (absolute, or relative to the repository root) or a packaged config name.
        dataset: The tokenized weights dataset (``geosane build-dataset`` output).
        out_dir: The run folder (``model/``, ``checkpoints/``, ``history.json``, ``training_curve.png``).
        holdout_ids: Model ids kept out of training (evaluated on).
        threads: Intra-op threads of the training process.
        num_steps: Override of the config's ``num_steps``.
        resume: Continue a run found in ``out_dir`` from its last complete checkpoint; False starts over.
        what: How errors name the caller (e.g. ``"train stage"``).

    Raises:
        TrainingLaunchError: The script is missing (not a clone), it failed, or the plot failed.
    """
    from geosane_hf.package_data import training_config_path

    out = Path(out_dir)
    script = REPO_ROOT / "training" / "train.py"
    if not script.is_file():
        raise TrainingLaunchError(
            f"{what}: expected the training script at {script}; run from a clone of the repository (pip install -e .)"
        )
    config_path = Path(config)
    if not config_path.is_absolute() and (REPO_ROOT / config_path).is_file():
        config_path = REPO_ROOT / config_path
    config_path = training_config_path(config_path)  # a file, or a packaged name such as "small-demo"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(script),
        "--config",
        str(config_path),
        "--dataset",
        str(dataset),
        "--output_dir",
        str(out),
        "--set",
        f"holdout_ids=[{', '.join(holdout_ids)}]",
        "--set",
        f"torch_threads={threads}",
    ]
    if num_steps is not None:
        command += ["--num_steps", str(num_steps)]
    if out.is_dir() and any(out.iterdir()):
        if not resume:  # the training script refuses to mix two runs in one folder
            shutil.rmtree(out)
        else:  # continues from the last complete checkpoint (or starts over when none was saved)
            command.append("--resume")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    completed = subprocess.run(command, env=env, cwd=REPO_ROOT)
    if completed.returncode != 0:
        raise TrainingLaunchError(
            f"{what}: `accelerate launch training/train.py` exited with {completed.returncode} (see above); run "
            "the same command again to resume from the last checkpoint"
        )
    history = json.loads((out / "history.json").read_text())
    final = history["evaluations"][-1] if history.get("evaluations") else {}
    curve = out / "training_curve.png"  # the repository's plot script, like the training script itself
    plotted = subprocess.run(
        [sys.executable, "-m", "training.plot", str(out / "history.json"), str(curve)], cwd=REPO_ROOT, env=env
    )
    if plotted.returncode != 0:
        raise TrainingLaunchError(f"{what}: plotting {out / 'history.json'} failed (see above); the model is in {out}")
    return TrainingRun(out / "model", final, curve)
