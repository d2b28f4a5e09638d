"""The population of small remote-sensing models that we train here (the offline model collection's core).

Two real tasks, both from data that PyPI packages ship (see :mod:`geosane_hf.imagery`):

- ``statlog-landsat``: 6-class land cover from 3x3-pixel, 4-band Landsat MSS patches (4,435 train / 2,000 test),
  architecture ``statlog_cnn``; metric: test accuracy.
- ``landsat8-cloud``: per-pixel cloud segmentation of 16x16 tiles of a Landsat-8 scene (bands B2, B3, B4, B5;
  labels: BQA cloud confidence >= medium; spatial-block split), architectures ``tiny_resnet`` and
  ``tiny_mobilenet``; metric: test mIoU over {clear, cloud}.

A *run* trains one network (its hyperparameters drawn from fixed grids with a seed derived from the population
seed and the run index, so the plan for run ``i`` never depends on how many runs are requested) and saves
``checkpoints_per_run`` checkpoints at evenly spaced epochs, as SANE's zoos do. Each checkpoint is one *model*:
``models/<run_id>-e<epoch>.safetensors`` plus a record in ``index.json`` (written atomically after each run).
Training is deterministic given the seed: every run uses one intra-op thread, whatever ``workers`` is.

The plan (:class:`RunSpec`, :data:`PRESETS`, :func:`plan_population`) lives in
:mod:`geosane_hf.collection.population`, the training and scoring of one run (:func:`train_run`,
:func:`zoo_metrics`) in :mod:`geosane_hf.collection.zoo_training`; this module writes the population (``index.json``,
the checkpoints, resuming) and re-exports their public names.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosane_hf.atomic_io import write_json
from geosane_hf.collection.architectures import build_architecture, count_parameters
from geosane_hf.collection.population import (
    DEFAULT_CHECKPOINTS_PER_RUN,
    DEFAULT_NUM_MODELS,
    PRESETS,
    QUICK_NUM_MODELS,
    RunSpec,
    ZooError,
    checkpoint_epochs,
    plan_population,
)
from geosane_hf.collection.zoo_training import TrainedCheckpoint, train_on_task, train_run, zoo_metrics
from geosane_hf.safe_paths import resolve_inside
from geosane_hf.task_data import TaskData, load_task_data

__all__ = [
    "DEFAULT_CHECKPOINTS_PER_RUN",
    "DEFAULT_NUM_MODELS",
    "INDEX_FILENAME",
    "PRESETS",
    "QUICK_NUM_MODELS",
    "RunSpec",
    "TaskData",
    "TrainedCheckpoint",
    "ZooConfig",
    "ZooError",
    "ZooResult",
    "checkpoint_epochs",
    "load_task_data",
    "load_zoo_model",
    "plan_population",
    "read_zoo_index",
    "summarize",
    "train_on_task",
    "train_run",
    "train_zoo",
    "zoo_metrics",
]

INDEX_FILENAME = "index.json"
INDEX_FORMAT = "geosane-zoo"
INDEX_VERSION = 1
RECORD_METADATA_KEY = "geosane_zoo_record"


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _save_weights(state_dict: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Writes safetensors atomically, through the shared checkpoints module when it exists."""
    try:
        from geosane_hf.checkpoints import save_safetensors
    except ImportError:
        save_safetensors = None
    if save_safetensors is not None:
        save_safetensors(state_dict, path, metadata=metadata)
        return
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(state_dict, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _record(spec: RunSpec, data: TaskData, checkpoint: TrainedCheckpoint, seconds: float) -> dict[str, Any]:
    return {
        "id": checkpoint.model_id,
        "run_id": spec.run_id,
        "file": f"models/{checkpoint.model_id}.safetensors",
        "architecture": spec.architecture,
        "architecture_kwargs": dict(spec.architecture_kwargs),
        "num_params": count_parameters(build_architecture(spec.architecture, **spec.architecture_kwargs)),
        "in_chans": data.in_chans,
        "bands": list(data.band_names),
        "common_names": list(data.common_names),
        "sensor": data.sensor,
        "task": data.kind,
        "dataset": data.name,
        "class_names": list(data.class_names),
        "normalization": data.band_stats.to_dict(),
        "hyperparameters": {
            "optimizer": "AdamW",
            "lr": spec.lr,
            "schedule": "cosine to 0 over the run",
            "weight_decay": spec.weight_decay,
            "batch_size": spec.batch_size,
            "run_epochs": spec.epochs,
            "augmentation": "random h/v flips",
        },
        "seed": spec.seed,
        "epoch": checkpoint.epoch,
        "is_final": checkpoint.epoch == spec.epochs,
        "metric": data.metric,
        "train_metric": checkpoint.train_metrics[data.metric],
        "test_metric": checkpoint.test_metrics[data.metric],
        "train_metrics": checkpoint.train_metrics,
        "test_metrics": checkpoint.test_metrics,
        "data": data.notes,
        "train_seconds": round(seconds, 3),
    }


def _train_and_save(spec: RunSpec, out_dir: Path) -> list[dict[str, Any]]:
    """Trains a run, writes its checkpoints, returns their index records (one process, one thread)."""
    data = load_task_data(spec.dataset)
    start = time.perf_counter()
    checkpoints = train_run(spec, data)
    seconds = time.perf_counter() - start
    records = []
    for checkpoint in checkpoints:
        record = _record(spec, data, checkpoint, seconds)
        path = out_dir / record["file"]
        # The file carries its record (minus the wall-clock time) so the bytes depend on the seed only.
        stable = {k: v for k, v in record.items() if k != "train_seconds"}
        _save_weights(checkpoint.state_dict, path, {RECORD_METADATA_KEY: json.dumps(stable, sort_keys=True)})
        record["sha256"] = _sha256(path)
        records.append(record)
    return records


def _worker_init() -> None:
    torch.set_num_threads(1)


def _worker(spec: RunSpec, out_dir: str) -> list[dict[str, Any]]:
    return _train_and_save(spec, Path(out_dir))


# ----------------------------------------------------------------------------------------------------------------
# The population
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZooConfig:
    """Settings of `geosane zoo train`."""

    out_dir: str | os.PathLike  # folder for index.json and models/
    num_models: int | None = None  # number of runs (default 150, quick 6)
    seed: int = 0  # population seed
    quick: bool = False  # short runs of small models (< 1 minute)
    preset: str = "mixed"  # population preset (PRESETS): every family, or one layout for the zoo experiment
    checkpoints_per_run: int = DEFAULT_CHECKPOINTS_PER_RUN  # models saved per run, at evenly spaced epochs
    workers: int = 1  # training processes (each uses one thread; results do not depend on it)


@dataclass(frozen=True)
class ZooResult:
    """What `train_zoo` did.

    Attributes:
        index_path: the index file.
        records: index records of every model of the plan, in plan order.
        trained_runs: runs trained now; skipped_runs: runs found complete on disk.
        seconds: wall-clock time of this call.
    """

    out_dir: Path
    index_path: Path
    records: list[dict[str, Any]]
    trained_runs: int
    skipped_runs: int
    seconds: float


def read_zoo_index(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Reads ``index.json`` of a zoo folder (the population's training records; a collection's index is another
    file: :func:`geosane_hf.collection.collector.read_collection_index`).

    Example:
        >>> import tempfile
        >>> read_zoo_index(tempfile.mkdtemp())["models"]
        []
    """
    path = Path(out_dir) / INDEX_FILENAME
    if not path.exists():
        return {"format": INDEX_FORMAT, "version": INDEX_VERSION, "models": []}
    index = json.loads(path.read_text())
    if index.get("format") != INDEX_FORMAT:
        raise ZooError(f"expected a {INDEX_FORMAT!r} index in {path}, got format {index.get('format')!r}")
    return index


def _recover(out_dir: Path, model_id: str, known: dict[str, dict]) -> dict[str, Any] | None:
    """Returns the record of a complete model on disk (from the index, or from the file's metadata), else None."""
    path = out_dir / "models" / f"{model_id}.safetensors"
    if not path.exists():
        return None
    sha = _sha256(path)
    record = known.get(model_id)
    if record is not None and record.get("sha256") == sha:
        return record
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        record = json.loads(metadata[RECORD_METADATA_KEY])
    except (OSError, KeyError, ValueError, SafetensorError):  # truncated, foreign or record-less: train it again
        return None
    record["sha256"] = sha
    return record


def train_zoo(config: ZooConfig, progress: bool = True) -> ZooResult:
    """Trains (or completes) the population in `config.out_dir`; runs already on disk are skipped.

    Example:
        >>> import tempfile
        >>> result = train_zoo(ZooConfig(tempfile.mkdtemp(), num_models=2, quick=True), progress=False)
        >>> result.trained_runs, len(result.records), result.records[0]["test_metric"] > 0.5
        (2, 4, True)
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    out_dir = Path(config.out_dir)
    (out_dir / "models").mkdir(parents=True, exist_ok=True)
    index = read_zoo_index(out_dir)
    settings = {"seed": config.seed, "quick": config.quick, "checkpoints_per_run": config.checkpoints_per_run}
    if config.preset != "mixed":  # populations of the default preset keep their historical settings record
        settings["preset"] = config.preset
    if index["models"] and index.get("settings") != settings:
        raise ZooError(
            f"expected {out_dir} to hold a population made with {settings}, got {index.get('settings')}; "
            "pass another --out folder or the same settings to resume"
        )
    plan = plan_population(config.num_models, config.seed, config.quick, config.checkpoints_per_run, config.preset)
    if config.workers < 1:
        raise ZooError(f"expected workers >= 1, got {config.workers}")
    known = {record["id"]: record for record in index["models"]}
    todo = []
    for spec in plan:
        recovered = [_recover(out_dir, model_id, known) for model_id in spec.model_ids]
        if all(recovered):
            known.update({r["id"]: r for r in recovered})
        else:
            todo.append(spec)
    index_path = out_dir / INDEX_FILENAME

    def commit(records: Iterable[dict[str, Any]]) -> None:
        known.update({r["id"]: r for r in records})
        payload = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "settings": settings,
            "models": [known[k] for k in sorted(known)],
        }
        write_json(index_path, payload)

    commit([])
    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc="geosane zoo", unit="run", disable=not progress)
    try:
        if config.workers == 1 or len(todo) <= 1:
            for spec in todo:
                commit(_train_and_save(spec, out_dir))
                bar.update(1)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(config.workers, mp_context=context, initializer=_worker_init) as pool:
                futures = [pool.submit(_worker, spec, str(out_dir)) for spec in todo]
                try:
                    for future in as_completed(futures):
                        commit(future.result())
                        bar.update(1)
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)  # finished runs are already in the index
                    raise
    finally:
        bar.close()
    records = [known[model_id] for spec in plan for model_id in spec.model_ids]
    return ZooResult(
        out_dir=out_dir,
        index_path=index_path,
        records=records,
        trained_runs=len(todo),
        skipped_runs=len(plan) - len(todo),
        seconds=time.perf_counter() - start,
    )


def load_zoo_model(out_dir: str | os.PathLike, record: dict[str, Any]) -> nn.Module:
    """Rebuilds a zoo member's architecture and loads its weights strictly (eval mode).

    Example:
        >>> import tempfile
        >>> result = train_zoo(ZooConfig(tempfile.mkdtemp(), num_models=1, quick=True), progress=False)
        >>> model = load_zoo_model(result.out_dir, result.records[0])
        >>> model(torch.zeros(1, 4, 3, 3)).shape
        torch.Size([1, 6])
    """
    from safetensors.torch import load_file

    path = resolve_inside(out_dir, record["file"], f"zoo record {record.get('id')!r} file")
    if not path.exists():
        raise FileNotFoundError(
            f"expected the weights of {record['id']!r} at {path}, got no file; rerun `geosane zoo train`"
        )
    model = build_architecture(record["architecture"], **record["architecture_kwargs"])
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (architecture, dataset, metric, is_final): count, min/median/max/mean of the test metric, param range.

    Example:
        >>> rows = summarize([
        ...     {"architecture": "a", "dataset": "d", "metric": "accuracy", "is_final": True, "test_metric": t,
        ...      "num_params": 10} for t in (0.5, 0.9, 0.7)])
        >>> rows[0]["models"], rows[0]["median"], rows[0]["params"]
        (3, 0.7, (10, 10))
    """
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault(
            (record["architecture"], record["dataset"], record["metric"], record["is_final"]), []
        ).append(record)
    rows = []
    for (architecture, dataset, metric, final), members in sorted(groups.items()):
        values = sorted(r["test_metric"] for r in members)
        mid = len(values) // 2
        median = values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])
        rows.append(
            {
                "architecture": architecture,
                "dataset": dataset,
                "metric": metric,
                "final": final,
                "models": len(values),
                "min": values[0],
                "median": median,
                "max": values[-1],
                "mean": sum(values) / len(values),
                "params": (min(r["num_params"] for r in members), max(r["num_params"] for r in members)),
            }
        )
    return rows
