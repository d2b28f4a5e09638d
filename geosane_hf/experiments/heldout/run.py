"""The experiment's stages (:func:`heldout_stages`) and driver (:func:`run_heldout`).

Stages, each resumable (``experiment_state.json``): ``zoo`` (the trained population), ``members`` (every member
architecture fine-tuned on every built-in task some fold may use, cached), then per fold (data source) ``collect``,
``dataset``, ``train`` (a GeoSANE on that fold's population) and ``evaluate`` (the comparison on the fold's tasks).
The report (win/tie/loss per baseline over every fold) is written after the stages, from what is on disk.

A stage's fingerprint carries the settings it depends on *and* its inputs' fingerprints (the comparison's content,
the zoo, the members), so changing any of them reruns it and every stage after it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from geosane_hf.experiments.heldout.config import STATE_FILE, HeldoutConfig, HeldoutError
from geosane_hf.experiments.stages import Stage
from geosane_hf.experiments.transfer.config import ExperimentConfig, load_experiment_config

__all__ = ["HeldoutResult", "fold_experiment", "folds_of", "heldout_stages", "run_heldout"]

_FINGERPRINT_FILE = "heldout_fingerprint.txt"


@dataclass
class HeldoutResult:
    """What the experiment did: per stage, seconds and summary; the report's path; the wall time."""

    stages: dict[str, dict[str, Any]]
    report: Path | None  # None until a fold is evaluated
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


def _digest(payload: Any) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------------ stages


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


def _zoo_keeps(fold: str, dataset: str | None, model: str) -> bool:
    """Whether a zoo model trained on `dataset` may be in `fold`'s population (its data source differs)."""
    from geosane_hf.experiments.members import ZOO_DATA_SOURCES, source_of

    if dataset not in ZOO_DATA_SOURCES:
        raise HeldoutError(
            f"zoo model {model} was trained on {dataset!r}: expected a dataset of known source "
            f"{sorted(ZOO_DATA_SOURCES)}; add its source to geosane_hf.experiments.members.ZOO_DATA_SOURCES"
        )
    return source_of(dataset) != fold


def _fold_members(config: HeldoutConfig, fold: str) -> tuple[list[Any], dict[str, Any]]:
    """The cached members a fold may use and the content-hash check against each of the fold's tasks."""
    from geosane_hf.experiments.members import image_hashes, relatives, task_data_hash, tune_member
    from geosane_hf.experiments.transfer.planning import load_task

    experiment = _experiment(config)
    members = [
        tune_member(arch, task, _budget(config), cache=config.path("members"))
        for arch in config.member_architectures
        for task in _member_tasks(config)
    ]
    check: dict[str, Any] = {}
    for spec in experiment.tasks:
        if spec.name not in folds_of(experiment)[fold]:
            continue
        task = load_task(replace(spec, max_train=None, max_test=None))  # every image of the task
        own = set(image_hashes(task))
        others = [m for m in members if m.source != fold]
        shared = sum(len(own.intersection(m.image_hashes)) for m in others)
        members = relatives(members, task)  # other sources only; raises when one of them holds one of these images
        check[spec.name] = {"data_sha256": task_data_hash(task), "images": len(own), "images_shared": shared}
    if not members:
        raise HeldoutError(
            f"fold {fold}: expected members tuned on other sources' tasks, got none (member tasks: "
            f"{_member_tasks(config)}); add built-in tasks of another source to the comparison's folds"
        )
    return members, check


def _collect(config: HeldoutConfig, fold: str) -> dict[str, Any]:
    from geosane_hf.collection.collector import collect
    from geosane_hf.collection.manifest import manifest_from_zoo, resolve_manifest
    from geosane_hf.experiments.members import members_manifest

    members, check = _fold_members(config, fold)
    zoo = manifest_from_zoo(config.path("zoo"))
    left_out = [e for e in zoo.entries if not _zoo_keeps(fold, e.training_data, e.id)]
    zoo = replace(zoo, entries=[e for e in zoo.entries if e not in left_out])
    manifest = resolve_manifest("offline").merged(zoo, name="offline+zoo")
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
        "zoo_models": len(zoo.entries),
        "zoo_left_out": {
            "models": len(left_out),
            "datasets": sorted({str(e.training_data) for e in left_out}),
        },
        "leave_out_check": check,
    }


def _dataset(config: HeldoutConfig, fold: str) -> dict[str, Any]:
    from geosane_hf.collection.dataset import DatasetBuildConfig, build_dataset

    folder = config.path("folds", fold)
    result = build_dataset(folder / "collection", folder / "dataset", DatasetBuildConfig(), progress=False)
    return {"models": result.num_models, "tokens": result.num_tokens}


def _train(config: HeldoutConfig, fold: str, fingerprint: str) -> dict[str, Any]:
    from geosane_hf.experiments.demo import holdout_runs
    from geosane_hf.experiments.launch import TrainingLaunchError, launch_training

    folder = config.path("folds", fold, "train")
    marker = folder / _FINGERPRINT_FILE
    if folder.exists() and (not marker.is_file() or marker.read_text().strip() != fingerprint):
        shutil.rmtree(folder)  # a run made from other inputs: never resumed into this one
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint + "\n")
    holdout = holdout_runs(config.path("zoo"), keep=lambda r: _zoo_keeps(fold, r.get("dataset"), r["id"]))
    try:
        run = launch_training(
            config.train_config,
            config.path("folds", fold, "dataset"),
            folder,
            holdout_ids=holdout,
            threads=config.train_threads,
            num_steps=config.train_steps,
            resume=config.resume,
            what=f"train stage of fold {fold}",
        )
    except TrainingLaunchError as error:
        raise HeldoutError(f"{error}; `make experiment` resumes from the last checkpoint") from error
    return {"model_dir": str(run.model_dir), "holdout_ids": holdout, "final_evaluation": run.final_evaluation}


def fold_experiment(config: HeldoutConfig, fold: str) -> ExperimentConfig:
    """The comparison a fold runs: the experiment's tasks of that source, the fold's GeoSANE and collection."""
    experiment = _experiment(config)
    folds = folds_of(experiment)
    if fold not in folds:
        raise HeldoutError(f"expected a fold among {list(folds)}, got {fold!r}")
    tasks = tuple(t for t in experiment.tasks if t.name in folds[fold])
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
    return {"results_json": str(out / "results.json"), "runs": len(result.runs), "failed": result.failed}


def heldout_stages(config: HeldoutConfig) -> list[Stage]:
    """The stages, in order (zoo, members, then collect / dataset / train / evaluate per fold).

    Raises:
        HeldoutError: The comparison names no task, or a task of a source that no member can be tuned apart from.
    """
    experiment = _experiment(config)
    folds = folds_of(experiment)
    if not folds:
        raise HeldoutError(f"expected the comparison {config.experiment!r} to name tasks, got none")
    zoo_fp = _digest({"zoo": config.zoo_runs, "quick": config.quick})
    members_fp = _digest(
        {
            "architectures": config.member_architectures,
            "budget": asdict(_budget(config)),
            "tasks": _member_tasks(config),
        }
    )
    stages = [
        Stage("zoo", "train the offline population", lambda: _zoo(config), zoo_fp),
        Stage(
            "members",
            "fine-tune the member architectures on every task the folds may use (cached)",
            lambda: _members(config),
            members_fp,
        ),
    ]
    for fold in folds:
        collect_fp = _digest({"fold": fold, "zoo": zoo_fp, "members": members_fp})
        train_fp = _digest({"data": collect_fp, "config": config.train_config, "steps": config.train_steps})
        evaluate_fp = _digest({"model": train_fp, "comparison": fold_experiment(config, fold).to_dict()})
        stages += [
            Stage(
                f"collect-{fold}",
                f"collect the population without {fold}: packaged models, zoo and members of other sources",
                lambda fold=fold: _collect(config, fold),
                collect_fp,
            ),
            Stage(
                f"dataset-{fold}",
                "tokenize it into Parquet shards",
                lambda fold=fold: _dataset(config, fold),
                collect_fp,
            ),
            Stage(
                f"train-{fold}",
                f"train a GeoSANE on it (accelerate launch, {config.train_config})",
                lambda fold=fold, fp=train_fp: _train(config, fold, fp),
                train_fp,
            ),
            Stage(
                f"evaluate-{fold}",
                f"fine-tune every start on the {fold} tasks ({config.experiment})",
                lambda fold=fold: _evaluate(config, fold),
                evaluate_fp,
            ),
        ]
    return stages


def run_heldout(config: HeldoutConfig, only: list[str] | None = None) -> HeldoutResult:
    """Runs (or resumes) every stage, then writes ``experiment.md`` / ``experiment.json`` into ``config.out_dir``.

    Raises:
        HeldoutError: A stage failed (running the same command again resumes there).
    """
    from geosane_hf.errors import UsageError
    from geosane_hf.experiments.heldout.report import read_fold_tables, write_report
    from geosane_hf.experiments.stages import run_stages

    started = time.perf_counter()
    try:
        state = run_stages(heldout_stages(config), config.path(STATE_FILE), resume=config.resume, only=only)
    except UsageError as error:
        raise HeldoutError(str(error)) from error
    evaluated = any(tables is not None for tables in read_fold_tables(config).values())
    report = write_report(config)[0] if evaluated else None  # e.g. `--only zoo,members` on a new folder
    return HeldoutResult(state, report, time.perf_counter() - started)
