"""``make zoo-experiment``: the in-distribution experiment from nothing, resumable, in ~15 minutes on 2 CPU cores.

Stages (each skipped when done with the same settings; a killed run continues where it stopped):

1. **population**: ``runs`` training runs of one layout (``geosane zoo train --preset statlog-w8``: statlog_cnn of
   width 8 on Statlog Landsat patches, 2 checkpoints each);
2. **collect** the population alone (no packaged checkpoints: the generator is a specialist of this layout);
3. **dataset**: the Parquet weights dataset;
4. **train** the zoo autoencoder (packaged config ``zoo-experiment``: latent 128 per token, per-layer token
   normalisation, permutation augmentation) with ``accelerate launch training/train.py``, every ``holdout_every``-th
   run held out whole;
5. **experiment**: :func:`~geosane_hf.experiments.zoo.run.run_zoo_experiment` (alignment, ``interpolate`` sampler,
   matched noise, quality-novelty curve, targets) into ``<out>/experiment``, plus ``zoo_experiment.json`` with its
   ``zero_shot`` block at ``<out>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from geosane_hf.atomic_io import write_json
from geosane_hf.errors import GeoSANEError
from geosane_hf.experiments.zoo.config import ZooExperimentConfig

__all__ = ["ZooPipelineConfig", "ZooPipelineError", "holdout_every", "run_zoo_pipeline"]


class ZooPipelineError(GeoSANEError, RuntimeError):
    """A stage of ``make zoo-experiment`` failed; the message says which and how to resume."""


@dataclass(frozen=True)
class ZooPipelineConfig:
    """Settings of :func:`run_zoo_pipeline` (the defaults are ``make zoo-experiment``)."""

    out_dir: str | os.PathLike = "runs/zoo-experiment"  # everything goes here
    runs: int = 150  # population training runs (2 checkpoints each)
    preset: str = "statlog-w8"  # population preset (geosane_hf.collection.zoo.PRESETS)
    holdout_every: int = 10  # every k-th run (all its checkpoints) is held out of the autoencoder's training
    train_config: str = "zoo-experiment"  # packaged training config (or a YAML path)
    train_steps: int | None = None  # override of the config's num_steps
    train_threads: int = 2  # intra-op threads of the training process
    workers: int = 2  # population training processes (one thread each)
    experiment: ZooExperimentConfig = field(default_factory=ZooExperimentConfig)
    resume: bool = True  # skip stages done with the same settings
    progress: bool = True

    def __post_init__(self) -> None:
        if self.runs < 2 or self.holdout_every < 2 or self.workers < 1 or self.train_threads < 1:
            raise ZooPipelineError(
                f"expected runs >= 2, holdout_every >= 2, workers >= 1 and train_threads >= 1, got {self.runs}, "
                f"{self.holdout_every}, {self.workers}, {self.train_threads}"
            )

    def path(self, name: str) -> Path:
        return Path(self.out_dir) / name

    def fingerprint(self, *names: str) -> str:
        """A short hash of the named settings (the training config by its content, not its name)."""
        from geosane_hf.package_data import training_config_path

        values = asdict(self)
        values["experiment"] = self.experiment.to_dict()
        if "train_config" in names:
            content = training_config_path(self.train_config).read_bytes()
            values["train_config"] = hashlib.sha1(content).hexdigest()
        payload = json.dumps({n: values[n] for n in names}, sort_keys=True, default=str)
        return hashlib.sha1(payload.encode()).hexdigest()[:16]


def holdout_every(zoo_dir: Path, every: int) -> list[str]:
    """Model ids of every ``every``-th run of the population (runs in plan order; all checkpoints of a run).

    Whole runs, because a sibling checkpoint of the same run is almost a copy.
    """
    from geosane_hf.collection.zoo import read_zoo_index

    models = read_zoo_index(zoo_dir)["models"]
    runs = sorted({r["run_id"] for r in models})
    held = set(runs[::every])
    return sorted(r["id"] for r in models if r["run_id"] in held)


def _population(config: ZooPipelineConfig) -> dict[str, Any]:
    from geosane_hf.collection.zoo import ZooConfig, train_zoo

    zoo = ZooConfig(config.path("zoo"), num_models=config.runs, preset=config.preset, workers=config.workers)
    result = train_zoo(zoo, progress=config.progress)
    metrics = [r["test_metric"] for r in result.records]
    return {
        "models": len(result.records),
        "trained_runs": result.trained_runs,
        "mean_metric": sum(metrics) / len(metrics),
    }


def _collect(config: ZooPipelineConfig) -> dict[str, Any]:
    from geosane_hf.collection.collector import collect
    from geosane_hf.collection.manifest import manifest_from_zoo

    report = collect(manifest_from_zoo(config.path("zoo")), config.path("collection"), progress=config.progress)
    if report.failed:
        raise ZooPipelineError(
            f"collect stage: expected every population member to be collected, {len(report.failed)} failed; see "
            f"{config.path('collection') / 'report.md'}"
        )
    return {"models": len(report.collected)}


def _dataset(config: ZooPipelineConfig) -> dict[str, Any]:
    from geosane_hf.collection.dataset import DatasetBuildConfig, build_dataset

    result = build_dataset(config.path("collection"), config.path("dataset"), DatasetBuildConfig(), progress=False)
    return {"models": result.num_models, "tokens": result.num_tokens}


_TRAIN_SETTINGS = ("runs", "preset", "workers", "holdout_every", "train_config", "train_steps")


def _train(config: ZooPipelineConfig) -> dict[str, Any]:
    from geosane_hf.experiments.launch import TrainingLaunchError, launch_training

    held = holdout_every(config.path("zoo"), config.holdout_every)
    # Resume only a run of the same settings (killed midway); a run of other settings is replaced, not mixed in.
    marker = config.path("train.settings")
    fingerprint = config.fingerprint(*_TRAIN_SETTINGS)
    same = config.resume and marker.is_file() and marker.read_text() == fingerprint
    if not same and config.path("train").exists():
        shutil.rmtree(config.path("train"))
    marker.write_text(fingerprint)
    try:
        run = launch_training(
            config.train_config,
            config.path("dataset"),
            config.path("train"),
            holdout_ids=held,
            threads=config.train_threads,
            num_steps=config.train_steps,
            resume=same,
            what="train stage",
        )
    except TrainingLaunchError as error:
        raise ZooPipelineError(f"{error}; `make zoo-experiment` resumes from the last checkpoint") from error
    return {"holdout_ids": len(held), "final_evaluation": run.final_evaluation, "model_dir": str(run.model_dir)}


def _experiment(config: ZooPipelineConfig) -> dict[str, Any]:
    from dataclasses import replace

    from geosane_hf.experiments.zoo.run import run_zoo_experiment

    settings = replace(config.experiment, progress=config.progress)
    result = run_zoo_experiment(
        config.path("train") / "model", config.path("zoo"), config.path("experiment"), settings
    )
    summary = {
        "report": result.files.get("markdown"),
        "zero_shot": {row.method: round(row.zero_shot_mean, 4) for row in result.summary},
        "after_finetuning": {
            row.method: round(row.finetuned_mean, 4) for row in result.summary if row.finetuned_mean is not None
        },
        "targets": result.targets,
        "seconds": round(result.seconds, 1),
    }
    write_json(Path(config.out_dir) / "zoo_experiment.json", summary, indent=1, default=str)
    return summary


def run_zoo_pipeline(config: ZooPipelineConfig, only: list[str] | None = None) -> dict[str, Any]:
    """Runs (or resumes) every stage; returns the state (per stage: seconds and summary).

    Raises:
        ZooPipelineError: A stage failed (running again resumes from there).
    """
    from geosane_hf.experiments.stages import Stage, run_stages

    population = ("runs", "preset", "workers")
    stages = [
        Stage(
            "population",
            f"train {config.runs} runs of one layout",
            lambda: _population(config),
            config.fingerprint(*population),
        ),
        Stage("collect", "collect the population", lambda: _collect(config), config.fingerprint(*population)),
        Stage("dataset", "tokenize it into Parquet shards", lambda: _dataset(config), config.fingerprint(*population)),
        Stage(
            "train",
            "train the zoo autoencoder with accelerate launch",
            lambda: _train(config),
            config.fingerprint(*_TRAIN_SETTINGS),
        ),
        Stage(
            "experiment",
            "generated vs matched noise, quality-novelty curve, targets",
            lambda: _experiment(config),
            config.fingerprint(*_TRAIN_SETTINGS, "experiment"),
        ),
    ]
    return run_stages(stages, config.path("zoo_pipeline_state.json"), resume=config.resume, only=only)
