"""The experiment's stages (:func:`heldout_stages`) and driver (:func:`run_heldout`).

Stages, each resumable (``experiment_state.json``): ``zoo`` (the trained population), ``members`` (every member
architecture fine-tuned on every built-in task some fold may use, cached), then per fold (data source) ``collect``,
``dataset``, ``train`` (a GeoSANE on that fold's population) and ``evaluate`` (the packaged comparison on the fold's
tasks), and ``report`` (win/tie/loss per baseline over every fold).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from geosane_hf.experiments.heldout.config import STATE_FILE, HeldoutConfig, HeldoutError
from geosane_hf.experiments.stages import Stage
from geosane_hf.experiments.transfer.config import ExperimentConfig, load_experiment_config

__all__ = ["HeldoutResult", "folds_of", "heldout_stages", "run_heldout"]


@dataclass
class HeldoutResult:
    """What the experiment did: per stage, seconds and summary; the report's path; the wall time."""

    stages: dict[str, dict[str, Any]]
    report: Path
    seconds: float


def folds_of(experiment: ExperimentConfig) -> dict[str, list[str]]:
    """{data source: the experiment's tasks of that source}, in the experiment's order.

    >>> from geosane_hf.experiments import bundled_experiment
    >>> list(folds_of(bundled_experiment("heldout")))
    ['statlog', 'landsat8', 'spacenet']
    """
    from geosane_hf.experiments.members import source_of

    folds: dict[str, list[str]] = {}
    for task in experiment.tasks:
        folds.setdefault(source_of(task.name), []).append(task.name)
    return folds


def _experiment(config: HeldoutConfig) -> ExperimentConfig:
    return load_experiment_config(config.experiment)


def _member_tasks(config: HeldoutConfig) -> list[str]:
    """The built-in tasks whose members some fold may use (a source other than at least one fold's)."""
    from geosane_hf.evaluation.tasks import TASKS
    from geosane_hf.experiments.members import source_of

    folds = folds_of(_experiment(config))
    return [t for t in TASKS if any(source_of(t) != fold for fold in folds)]


def _budget(config: HeldoutConfig):
    from geosane_hf.experiments.members import MemberBudget

    return MemberBudget(max_train=config.member_max_train, epochs=config.member_epochs)


def _zoo(config: HeldoutConfig) -> dict[str, Any]:
    from geosane_hf.collection.zoo import ZooConfig, train_zoo

    zoo = ZooConfig(
        out_dir=config.path("zoo"),
        num_models=None if config.quick else config.zoo_runs,
        quick=config.quick,
        workers=config.workers,
    )
    result = train_zoo(zoo, progress=config.progress)
    return {"models": len(result.records), "trained_runs": result.trained_runs}


def _members(config: HeldoutConfig) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from geosane_hf.experiments.members import tune_member

    jobs = [(arch, task) for arch in config.member_architectures for task in _member_tasks(config)]
    rows = []
    for arch, task in tqdm(jobs, desc="members", disable=not config.progress):
        member = tune_member(arch, task, _budget(config), cache=config.path("members"))
        rows.append(
            {
                "architecture": arch,
                "task": task,
                "metric": member.primary_metric,
                "score": round(member.score, 4),
                "seconds": round(member.seconds, 1),
                "data_sha256": member.data_hash,
            }
        )
    return {"members": rows}


def _fold_members(config: HeldoutConfig, fold: str) -> tuple[list[Any], dict[str, Any]]:
    """The cached members a fold may use and the content-hash check against each of the fold's tasks."""
    from geosane_hf.evaluation.tasks import Task
    from geosane_hf.experiments.members import image_hashes, relatives, task_data_hash, tune_member

    members = [
        tune_member(arch, task, _budget(config), cache=config.path("members"))
        for arch in config.member_architectures
        for task in _member_tasks(config)
    ]
    check: dict[str, Any] = {}
    for spec in _experiment(config).tasks:
        if spec.name not in folds_of(_experiment(config))[fold]:
            continue
        task = Task.from_name(spec.name)
        members = relatives(members, task)  # other sources only; raises when a member holds one of the task's images
        own = set(image_hashes(task))
        check[spec.name] = {
            "data_sha256": task_data_hash(task),
            "images": len(own),
            "images_shared_with_members": sum(len(own.intersection(m.image_hashes)) for m in members),
        }
    if not members:
        raise HeldoutError(
            f"fold {fold}: expected members of other sources, got none (member tasks: {_member_tasks(config)})"
        )
    return members, check


def _collect(config: HeldoutConfig, fold: str) -> dict[str, Any]:
    from geosane_hf.collection.collector import collect
    from geosane_hf.collection.manifest import manifest_from_zoo, resolve_manifest
    from geosane_hf.experiments.members import members_manifest

    members, check = _fold_members(config, fold)
    manifest = resolve_manifest("offline").merged(manifest_from_zoo(config.path("zoo")), name="offline+zoo")
    manifest = manifest.merged(
        members_manifest(members, config.path("members", "checkpoints")), name=f"heldout-{fold}"
    )
    report = collect(manifest, config.path("folds", fold, "collection"), progress=config.progress)
    if report.failed:
        failed = ", ".join(f.id for f in report.failed)
        raise HeldoutError(
            f"collect stage of fold {fold}: expected every entry to be collected, {len(report.failed)} failed "
            f"({failed}); see {config.path('folds', fold, 'collection', 'report.md')}"
        )
    return {
        "models": len(report.collected),
        "members": [f"{m.architecture}:{m.task}" for m in members],
        "leave_out_check": check,
    }


def _dataset(config: HeldoutConfig, fold: str) -> dict[str, Any]:
    from geosane_hf.collection.dataset import DatasetBuildConfig, build_dataset

    folder = config.path("folds", fold)
    result = build_dataset(folder / "collection", folder / "dataset", DatasetBuildConfig(), progress=False)
    return {"models": result.num_models, "tokens": result.num_tokens}


def _train(config: HeldoutConfig, fold: str) -> dict[str, Any]:
    from geosane_hf.experiments.demo import holdout_runs
    from geosane_hf.experiments.launch import TrainingLaunchError, launch_training

    folder = config.path("folds", fold)
    try:
        run = launch_training(
            config.train_config,
            folder / "dataset",
            folder / "train",
            holdout_ids=holdout_runs(config.path("zoo")),
            threads=config.train_threads,
            num_steps=config.train_steps,
            resume=config.resume,
            what=f"train stage of fold {fold}",
        )
    except TrainingLaunchError as error:
        raise HeldoutError(f"{error}; `make experiment` resumes from the last checkpoint") from error
    return {"model_dir": str(run.model_dir), "final_evaluation": run.final_evaluation}


def fold_experiment(config: HeldoutConfig, fold: str) -> ExperimentConfig:
    """The comparison a fold runs: the experiment's tasks of that source, the fold's GeoSANE and collection."""
    experiment = _experiment(config)
    tasks = tuple(t for t in experiment.tasks if t.name in folds_of(experiment)[fold])
    folder = config.path("folds", fold)
    return replace(experiment, tasks=tasks, name=f"{experiment.name}: {fold} held out").with_geosane(
        model=str(folder / "train" / "model"),
        collection=str(folder / "collection"),
        store=str(folder / "store"),
        model_id=f"geosane/heldout-{fold}",
    )


def _evaluate(config: HeldoutConfig, fold: str) -> dict[str, Any]:
    from geosane_hf.experiments.transfer.run import run_experiment

    out = config.path("folds", fold, "evaluation")
    result = run_experiment(
        fold_experiment(config, fold), out, resume=config.resume, workers=config.workers, progress=config.progress
    )
    return {"results_json": str(out / "results.json"), "runs": len(result.runs), "failed": len(result.failed)}


def _report(config: HeldoutConfig) -> dict[str, Any]:
    from geosane_hf.experiments.heldout.report import write_report

    path, tallies = write_report(config)
    return {"report": str(path), "tally": [asdict(t) for t in tallies]}


def _fingerprint(config: HeldoutConfig, stage: str, **settings: Any) -> str:
    payload = json.dumps({"stage": stage, "quick": config.quick, **settings}, sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def heldout_stages(config: HeldoutConfig) -> list[Stage]:
    """The stages, in order (zoo, members, then collect / dataset / train / evaluate per fold, report)."""
    members = {
        "architectures": config.member_architectures,
        "budget": asdict(_budget(config)),
        "tasks": _member_tasks(config),
    }
    stages = [
        Stage(
            "zoo",
            "train the offline population",
            functools.partial(_zoo, config),
            _fingerprint(config, "zoo", runs=config.zoo_runs),
        ),
        Stage(
            "members",
            "fine-tune the member architectures on every task the folds may use (cached)",
            functools.partial(_members, config),
            _fingerprint(config, "members", **members),
        ),
    ]
    for fold in folds_of(_experiment(config)):
        stages += [
            Stage(
                f"collect-{fold}",
                f"collect the population without {fold}: packaged models, zoo, members of other sources",
                functools.partial(_collect, config, fold),
                _fingerprint(config, "collect", fold=fold, **members),
            ),
            Stage(
                f"dataset-{fold}",
                "tokenize it into Parquet shards",
                functools.partial(_dataset, config, fold),
                _fingerprint(config, "dataset", fold=fold, **members),
            ),
            Stage(
                f"train-{fold}",
                f"train a GeoSANE on it (accelerate launch), {config.train_config}",
                functools.partial(_train, config, fold),
                _fingerprint(
                    config, "train", fold=fold, train_config=config.train_config, steps=config.train_steps, **members
                ),
            ),
            Stage(
                f"evaluate-{fold}",
                f"fine-tune every start on the {fold} tasks ({config.experiment})",
                functools.partial(_evaluate, config, fold),
                _fingerprint(config, "evaluate", fold=fold, experiment=config.experiment, **members),
            ),
        ]
    stages.append(
        Stage(
            "report",
            "win/tie/loss per baseline over every fold",
            functools.partial(_report, config),
            _fingerprint(config, "report", at=time.time()),
        )
    )
    return stages


def run_heldout(config: HeldoutConfig, only: list[str] | None = None) -> HeldoutResult:
    """Runs (or resumes) every stage and writes ``experiment.md`` / ``experiment.json`` into ``config.out_dir``.

    Raises:
        HeldoutError: A stage failed (running the same command again resumes there).
    """
    from geosane_hf.errors import UsageError
    from geosane_hf.experiments.stages import run_stages

    started = time.perf_counter()
    try:
        state = run_stages(heldout_stages(config), config.path(STATE_FILE), resume=config.resume, only=only)
    except UsageError as error:
        raise HeldoutError(str(error)) from error
    return HeldoutResult(state, config.path("experiment.md"), time.perf_counter() - started)
