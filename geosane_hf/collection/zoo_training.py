"""Training and scoring one run of the zoo: the task face of the one training loop (:mod:`geosane_hf.train_loop`)
with the zoo's augmentation, and the zoo's own metrics (:func:`zoo_metrics`: accuracy, per-class IoU, mIoU).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from geosane_hf.collection.architectures import build_architecture
from geosane_hf.collection.population import RunSpec, ZooError
from geosane_hf.task_data import Split, TaskData, TaskKind, load_task_data
from geosane_hf.train_loop import LoopConfig, train_epochs


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
        >>> from geosane_hf.collection.population import plan_population
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
