"""Planning a comparison of starts: the runs, their keys and files, the tasks they load, and their fingerprints.

A run is a :class:`RunKey` (task, target, start, seed) with its file ``out/runs/<task>/<target>/<start>/seed<k>.json``.
:func:`run_fingerprint` hashes everything a run's result depends on, so that ``resume=True`` reuses a run file only
when it was made from the same inputs; the teachers' fingerprints do the same for ``out/teachers/``.

Example:
    >>> cfg = ExperimentConfig.from_dict({"tasks": ["statlog-classification"], "targets": ["test_resnet"],
    ...                                   "starts": ["scratch"], "seeds": [0]})
    >>> plan_runs(cfg)[0].path("out").as_posix()
    'out/runs/statlog-classification/test_resnet/scratch/seed0.json'
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from geosane_hf.evaluation.tasks import Task, get_task_config
from geosane_hf.experiments.transfer.config import ExperimentConfig, TargetSpec, TaskSpec, parse_start
from geosane_hf.task_data import Split, load_task_data, sample_index

__all__ = ["RECORD_VERSION", "RunKey", "load_task", "plan_runs", "run_fingerprint"]

RECORD_VERSION = 1


@dataclass(frozen=True)
class RunKey:
    """One run: a start of a target on a task with a seed."""

    task: str
    target: str
    start: str
    seed: int

    def path(self, out_dir: str | Path) -> Path:
        """``out/runs/<task>/<target>/<start>/seed<k>.json`` (":" in a start name becomes "_")."""
        return (
            Path(out_dir) / "runs" / self.task / self.target / self.start.replace(":", "_") / f"seed{self.seed}.json"
        )


@dataclass(frozen=True)
class _Prep:
    """A job the runs depend on: generate + publish a GeoSANE start, or train a distillation teacher."""

    kind: Literal["generate", "teacher"]
    task: str
    arch: str
    seed: int
    sampler: str | None = None


@dataclass(frozen=True)
class _Context:
    """Everything a worker needs (picklable)."""

    config: ExperimentConfig
    out_dir: str
    store: str
    resume: bool
    model_fp: str | None
    collection_fp: str | None


def plan_runs(config: ExperimentConfig) -> list[RunKey]:
    """Every run of the experiment in table order (task, target, start, seed).

    >>> cfg = ExperimentConfig.from_dict({"tasks": ["statlog-classification"], "targets": ["test_resnet"],
    ...                                   "starts": ["scratch", "imagenet_prompt"], "seeds": [0, 1]})
    >>> [(k.start, k.seed) for k in plan_runs(cfg)]
    [('scratch', 0), ('scratch', 1), ('imagenet_prompt', 0), ('imagenet_prompt', 1)]
    """
    keys = []
    for task in config.tasks:
        for target in config.targets_of(task):
            for start in config.starts_of(target):
                keys.extend(RunKey(task.name, target.architecture, start, seed) for seed in config.seeds)
    return keys


def _capped(split: Split, count: int | None, how: str) -> Split:
    if count is None or count >= len(split):
        return split
    if how == "first":
        return split.subset(range(count))
    return split.subset(sample_index(split, count, seed=0, stratify=False))


def load_task(spec: TaskSpec) -> Task:
    """The task of a spec: capped splits are a seeded random subset (``subset="random"``) or the first samples.

    >>> task = load_task(TaskSpec("statlog-classification", max_train=192, max_test=64))
    >>> len(task.data.train), int(task.data.train.labels.unique().numel())
    (192, 6)
    """
    if spec.name.startswith(("torchgeo:", "data:")):
        caps = {"max_train": spec.max_train, "max_test": spec.max_test} if spec.name.startswith("torchgeo:") else {}
        if spec.name.startswith("torchgeo:"):
            task = Task.from_torchgeo(spec.name.partition(":")[2], spec.root, input_size=spec.input_size, **caps)
        else:
            kind = spec.kind or "classification"
            task = Task.from_folder(
                spec.root, kind=kind, bands=spec.bands, sensor=spec.sensor, input_size=spec.input_size
            )
            task.config = replace(task.config, name=spec.name)
        config, data = task.config, task.data
    else:
        config = get_task_config(spec.name, **spec.overrides())
        data = load_task_data(config.data)
    data = replace(
        data,
        train=_capped(data.train, spec.max_train, spec.subset),
        test=_capped(data.test, spec.max_test, spec.subset),
    )
    return Task(config, data)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _task_spec(config: ExperimentConfig, name: str) -> TaskSpec:
    return next(t for t in config.tasks if t.name == name)


def _target_spec(config: ExperimentConfig, task: str, arch: str) -> TargetSpec:
    return next(t for t in config.targets_of(_task_spec(config, task)) if t.architecture == arch)


def _protocol(config: ExperimentConfig) -> dict[str, Any]:
    return {k: v for k, v in config.finetune.to_dict().items() if k not in ("seed", "progress")}


def _geosane_inputs(ctx: _Context) -> dict[str, Any]:
    spec = {k: v for k, v in ctx.config.geosane.to_dict().items() if k not in ("model", "store", "collection")}
    if not spec.get("sampler_options"):  # absent = empty: fingerprints of configs without options do not change
        spec.pop("sampler_options", None)
    return {**spec, "model": ctx.model_fp, "collection": ctx.collection_fp}


def run_fingerprint(ctx: _Context, key: RunKey) -> str:
    """Hash of everything a run's result depends on (resume reuses a run file only when it matches)."""
    config = ctx.config
    kind, sampler = parse_start(key.start)
    task = _task_spec(config, key.task)
    target = _target_spec(config, key.task, key.target)
    parts: dict[str, Any] = {
        "version": RECORD_VERSION,
        "task": {k: v for k, v in task.to_dict().items() if k != "targets"},
        "target": key.target,
        "start": key.start,
        "seed": key.seed,
        "finetune": _protocol(config),
    }
    if kind.name != "scratch":
        parts["band_method"] = config.geosane.band_method
    if kind.needs_teacher:
        parts["teacher"] = target.teacher
    if kind.name == "magnitude_pruning":
        parts["pruning_scope"] = config.pruning_scope
    if kind.name in ("checkpoint_average", "checkpoint_plus_noise"):
        parts["collection"] = ctx.collection_fp
    if kind.name == "geosane" or (kind.name in ("prompt_plus_noise", "checkpoint_plus_noise") and ctx.model_fp):
        parts["geosane"] = _geosane_inputs(ctx)
        parts["matched_sampler"] = sampler or config.geosane.match_sampler
    elif kind.name in ("prompt_plus_noise", "checkpoint_plus_noise"):
        parts["noise_relative_norm"] = config.noise_relative_norm
    return _digest(parts)


def _teacher_fingerprint(ctx: _Context, task: str, arch: str, seed: int) -> str:
    spec = _task_spec(ctx.config, task)
    return _digest(
        {
            "version": RECORD_VERSION,
            "task": {k: v for k, v in spec.to_dict().items() if k != "targets"},
            "teacher": arch,
            "seed": seed,
            "finetune": _protocol(ctx.config),
            "band_method": ctx.config.geosane.band_method,
        }
    )
