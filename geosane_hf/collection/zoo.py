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
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosane_hf.atomic_io import write_json
from geosane_hf.collection.architectures import build_architecture, count_parameters
from geosane_hf.errors import GeoSANEError
from geosane_hf.imagery import CLOUD_CLASS_NAMES, STATLOG_CLASS_NAMES
from geosane_hf.safe_paths import resolve_inside
from geosane_hf.task_data import CLOUD_BANDS, Split, TaskData, TaskKind, load_task_data
from geosane_hf.train_loop import LoopConfig, train_epochs

INDEX_FILENAME = "index.json"
INDEX_FORMAT = "geosane-zoo"
INDEX_VERSION = 1
RECORD_METADATA_KEY = "geosane_zoo_record"
DEFAULT_NUM_MODELS = 150
DEFAULT_CHECKPOINTS_PER_RUN = 2
QUICK_NUM_MODELS = 6


class ZooError(GeoSANEError, ValueError):
    """Bad zoo settings or an output folder that holds another population."""


# ----------------------------------------------------------------------------------------------------------------
# Plan
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One training run of the population (it saves one model per entry of `save_epochs`)."""

    run_id: str  # "<architecture>-<index:04d>"
    index: int  # position in the plan
    dataset: str  # key of load_task_data
    architecture: str  # name in geosane_hf.collection.architectures
    architecture_kwargs: dict[str, Any]  # builder kwargs (in_chans and num_classes included)
    lr: float  # peak learning rate of AdamW, cosine-annealed to 0 over `epochs`
    weight_decay: float
    batch_size: int
    epochs: int  # length of the run
    save_epochs: tuple[int, ...]  # epochs after which a checkpoint is saved (the last one is `epochs`)
    seed: int  # torch seed for the initialisation, batch order and augmentation

    def model_id(self, epoch: int) -> str:
        return f"{self.run_id}-e{epoch:03d}"

    @property
    def model_ids(self) -> list[str]:
        return [self.model_id(epoch) for epoch in self.save_epochs]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["save_epochs"] = list(self.save_epochs)
        return out


# The families, in the order the plan cycles through them (2/3 Statlog, 1/6 each cloud family).
_FAMILY_CYCLE: tuple[str, ...] = (
    "statlog_cnn",
    "statlog_cnn",
    "tiny_resnet",
    "statlog_cnn",
    "statlog_cnn",
    "tiny_mobilenet",
)
_GRIDS: dict[str, dict[str, tuple]] = {
    "statlog_cnn": {
        "width": (8, 8, 8, 4, 12, 16),  # half the runs share one shape (width 8): a same-architecture sub-zoo
        "lr": (1e-3, 3e-3, 1e-2, 3e-2),
        "epochs": (4, 8, 12, 16),
        "weight_decay": (0.0, 1e-4, 1e-3),
        "batch_size": (64,),
    },
    "tiny_resnet": {
        "width": (8, 12, 16),
        "depth": (1, 2),
        "lr": (1e-3, 3e-3, 1e-2),
        "epochs": (4, 6, 8),
        "weight_decay": (0.0, 1e-4),
        "batch_size": (32,),
    },
    "tiny_mobilenet": {
        "width": (8, 12, 16),
        "depth": (1, 2),
        "expand_ratio": (2, 3),
        "lr": (3e-3, 1e-2, 3e-2),
        "epochs": (4, 6, 8),
        "weight_decay": (0.0, 1e-4),
        "batch_size": (32,),
    },
}
# --quick: the same families with short runs (the whole population in well under a minute on 2 cores).
_QUICK_OVERRIDES: dict[str, dict[str, tuple]] = {
    "statlog_cnn": {"width": (8, 12), "lr": (1e-2,), "epochs": (3,)},
    "tiny_resnet": {"width": (8,), "depth": (1,), "lr": (1e-2,), "epochs": (2,)},
    "tiny_mobilenet": {"width": (8,), "depth": (1,), "lr": (3e-2,), "epochs": (2,)},
}
#: Population presets: which families the plan cycles through and grid values that replace the defaults.
#: ``"mixed"`` (default): every family. ``"statlog-w8"``: one layout only (statlog_cnn, width 8; 2 checkpoints
#: per run), the zoo experiment's population: SANE's zoos hold hundreds of runs of one layout, which a generator
#: of that layout needs (9 runs per layout let the autoencoder memorise; docs/zoo_experiment.md).
PRESETS: dict[str, tuple[tuple[str, ...], dict[str, dict[str, tuple]]]] = {
    "mixed": (_FAMILY_CYCLE, {}),
    "statlog-w8": (
        ("statlog_cnn",),
        {"statlog_cnn": {"width": (8,), "lr": (3e-3, 1e-2, 3e-2), "epochs": (4, 6, 8)}},
    ),
}
_DATASET_OF = {"statlog_cnn": "statlog-landsat", "tiny_resnet": "landsat8-cloud", "tiny_mobilenet": "landsat8-cloud"}
_IN_CHANS = {"statlog-landsat": 4, "landsat8-cloud": len(CLOUD_BANDS)}
_NUM_CLASSES = {"statlog-landsat": len(STATLOG_CLASS_NAMES), "landsat8-cloud": len(CLOUD_CLASS_NAMES)}


def checkpoint_epochs(epochs: int, checkpoints_per_run: int) -> tuple[int, ...]:
    """Evenly spaced save epochs ending with the last one.

    Example:
        >>> checkpoint_epochs(12, 3), checkpoint_epochs(2, 4)
        ((4, 8, 12), (1, 2))
    """
    if epochs < 1 or checkpoints_per_run < 1:
        raise ZooError(f"expected epochs >= 1 and checkpoints_per_run >= 1, got {epochs} and {checkpoints_per_run}")
    return tuple(sorted({max(1, round(epochs * (k + 1) / checkpoints_per_run)) for k in range(checkpoints_per_run)}))


def plan_population(
    num_models: int | None = None,
    seed: int = 0,
    quick: bool = False,
    checkpoints_per_run: int = DEFAULT_CHECKPOINTS_PER_RUN,
    preset: str = "mixed",
) -> list[RunSpec]:
    """Plans the runs of the population; run ``i`` depends only on (`preset`, `seed`, `quick`, `checkpoints_per_run`,
    i).

    Args:
        num_models: number of runs (default 150, or 6 with `quick`); each run saves `checkpoints_per_run` models.
        seed: population seed.
        quick: short runs of small models (tests, demo quick mode).
        checkpoints_per_run: checkpoints saved per run at evenly spaced epochs (the last is the final model).
        preset: a key of :data:`PRESETS` (families and grid values).

    Example:
        >>> plan = plan_population(6, seed=0, quick=True)
        >>> [spec.architecture for spec in plan][:3], plan[0].run_id
        (['statlog_cnn', 'statlog_cnn', 'tiny_resnet'], 'statlog_cnn-0000')
        >>> {spec.architecture_kwargs["width"] for spec in plan_population(20, preset="statlog-w8")}
        {8}
    """
    if preset not in PRESETS:
        raise ZooError(f"expected a population preset among {sorted(PRESETS)}, got {preset!r}")
    families, preset_grids = PRESETS[preset]
    num_models = (QUICK_NUM_MODELS if quick else DEFAULT_NUM_MODELS) if num_models is None else num_models
    if num_models < 1:
        raise ZooError(f"expected at least one model, got num_models={num_models}")
    plan = []
    for index in range(num_models):
        architecture = families[index % len(families)]
        grid = {
            **_GRIDS[architecture],
            **preset_grids.get(architecture, {}),
            **(_QUICK_OVERRIDES[architecture] if quick else {}),
        }
        tag = "" if preset == "mixed" else f"{preset}:"  # the default plan keeps its historical seeds
        rng = random.Random(f"geosane-zoo:{tag}{seed}:{int(quick)}:{index}")  # str seeds are hashed stably
        drawn = {name: rng.choice(values) for name, values in sorted(grid.items())}
        dataset = _DATASET_OF[architecture]
        kwargs: dict[str, Any] = {"in_chans": _IN_CHANS[dataset], "num_classes": _NUM_CLASSES[dataset]}
        kwargs.update({k: drawn[k] for k in ("width", "depth", "expand_ratio") if k in drawn})
        plan.append(
            RunSpec(
                run_id=f"{architecture}-{index:04d}",
                index=index,
                dataset=dataset,
                architecture=architecture,
                architecture_kwargs=kwargs,
                lr=float(drawn["lr"]),
                weight_decay=float(drawn["weight_decay"]),
                batch_size=int(drawn["batch_size"]),
                epochs=int(drawn["epochs"]),
                save_epochs=checkpoint_epochs(int(drawn["epochs"]), checkpoints_per_run),
                seed=rng.randrange(2**31),
            )
        )
    return plan


# ----------------------------------------------------------------------------------------------------------------
# Training and evaluation
# ----------------------------------------------------------------------------------------------------------------


@contextmanager
def _intra_op_threads(num_threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@torch.no_grad()
def zoo_metrics(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    task: TaskKind,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    num_threads: int | None = 1,
) -> dict[str, float]:
    """The zoo's metrics of a model on a split's tensors, in eval mode; every metric is a float (JSON-friendly).

    These are the metrics the population records (``index.json``); the evaluation's tasks score with their own
    metric modules instead (:meth:`geosane_hf.evaluation.Task.evaluate`: F1, mean IoU with ignore_index, mAP).
    Classification gives ``accuracy``; segmentation gives pixel ``accuracy``, ``iou_<class>`` for every class
    present in the predictions or the targets, and ``miou`` (their mean). The zoo records metrics computed with one
    intra-op thread (`num_threads=1`); another thread count may change logits in the last bits and, rarely, an
    argmax. Pass None to keep the current setting.

    Example:
        >>> data = load_task_data("landsat8-cloud")
        >>> model = build_architecture("tiny_resnet", width=8, depth=1)
        >>> sorted(zoo_metrics(model, data.test.images, data.test.targets, "segmentation", 2, data.class_names))
        ['accuracy', 'iou_clear', 'iou_cloud', 'miou']
    """
    names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
    if len(names) != num_classes:
        raise ZooError(f"expected {num_classes} class names, got {len(names)}: {names}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with _intra_op_threads(num_threads or torch.get_num_threads()):
        preds = torch.cat(
            [model(x[i : i + 1024].to(device)).argmax(dim=1).cpu() for i in range(0, len(x), 1024)]
        )  # [N] or [N, H, W]
    model.train(was_training)
    metrics = {"accuracy": float((preds == y).double().mean())}
    if task == "segmentation":
        ious = []
        for k, name in enumerate(names):
            union = ((preds == k) | (y == k)).sum().item()
            if union:  # a class absent from both predictions and targets has no IoU
                metrics[f"iou_{name}"] = ((preds == k) & (y == k)).sum().item() / union
                ious.append(metrics[f"iou_{name}"])
        metrics["miou"] = float(sum(ious) / len(ious)) if ious else 1.0
    return metrics


def _flip(x: torch.Tensor, flips: torch.Tensor, dim: int) -> torch.Tensor:
    # x: [B, ...]; flips: [B] bool -> flipped along `dim` where True.
    shape = [len(flips)] + [1] * (x.ndim - 1)
    return torch.where(flips.reshape(shape), x.flip(dim), x)


@dataclass(frozen=True)
class TrainedCheckpoint:
    """A checkpoint of a run: the weights (on CPU) and its metrics."""

    model_id: str
    epoch: int
    state_dict: dict[str, torch.Tensor]
    train_metrics: dict[str, float]
    test_metrics: dict[str, float]


def train_run(spec: RunSpec, data: TaskData | None = None, num_threads: int = 1) -> list[TrainedCheckpoint]:
    """Trains one run of the population and returns its checkpoints (deterministic given `spec.seed`).

    AdamW with a cosine schedule from `spec.lr` to 0 over all steps, cross-entropy (per pixel for segmentation),
    random horizontal/vertical flips per sample; a last batch of fewer than 2 samples is dropped (BatchNorm).
    These models are too small to gain from intra-op threads: one thread is faster (no OpenMP spinning when the
    cores are shared) and makes the weights independent of the machine's core count; use processes instead.

    Args:
        spec: the run.
        data: the task's tensors (default: :func:`load_task_data` of `spec.dataset`).
        num_threads: torch intra-op threads during the run (restored afterwards).

    Example:
        >>> spec = plan_population(1, quick=True)[0]
        >>> checkpoints = train_run(spec)
        >>> [c.epoch for c in checkpoints], checkpoints[-1].test_metrics["accuracy"] > 0.5
        ([2, 3], True)
    """
    data = data or load_task_data(spec.dataset)
    with _intra_op_threads(num_threads):
        return _train_run(spec, data)


def train_on_task(
    model: nn.Module,
    data: TaskData,
    config: LoopConfig,
    generator: torch.Generator,
    *,
    flips: bool = True,
    on_epoch: Callable[[int, list[float]], None] | None = None,
) -> None:
    """The zoo's training protocol on a task's tensors (the population's runs and the zoo experiment's fine-tuning).

    Cross-entropy (per pixel for segmentation) through :func:`geosane_hf.train_loop.train_epochs`; random
    horizontal/vertical flips per sample are drawn from ``generator`` every step (applied when ``flips``), so that
    with or without them the batch order is the same.
    """
    segmentation = data.kind == "segmentation"
    images, targets = data.train.images, data.train.targets  # [N, C, H, W], [N] or [N, H, W]

    def step(idx: torch.Tensor) -> torch.Tensor:
        x, y = images[idx], targets[idx]  # [B, C, H, W], [B] or [B, H, W]
        draws = torch.rand(2, len(idx), generator=generator) < 0.5  # [2, B]
        if flips:
            x = _flip(_flip(x, draws[0], -1), draws[1], -2)
            if segmentation:
                y = _flip(_flip(y, draws[0], -1), draws[1], -2)
        return nn.functional.cross_entropy(model(x), y)

    train_epochs(model, len(data.train), config, generator, step, on_epoch=on_epoch)


def _split_metrics(model: nn.Module, data: TaskData, split: Split) -> dict[str, float]:
    return zoo_metrics(model, split.images, split.targets, data.kind, data.num_classes, data.class_names)


def _train_run(spec: RunSpec, data: TaskData) -> list[TrainedCheckpoint]:
    torch.manual_seed(spec.seed)
    model = build_architecture(spec.architecture, **spec.architecture_kwargs)
    generator = torch.Generator().manual_seed(spec.seed)
    checkpoints = []

    def save(epoch: int, losses: list[float]) -> None:
        if epoch in spec.save_epochs:
            checkpoints.append(
                TrainedCheckpoint(
                    model_id=spec.model_id(epoch),
                    epoch=epoch,
                    state_dict={k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
                    train_metrics=_split_metrics(model, data, data.train),
                    test_metrics=_split_metrics(model, data, data.test),
                )
            )

    config = LoopConfig(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, weight_decay=spec.weight_decay)
    train_on_task(model, data, config, generator, on_epoch=save)
    return checkpoints


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
