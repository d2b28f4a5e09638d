"""The one fine-tuning loop every start goes through (same budget, schedule, data order, augmentations).

Protocol (:class:`FinetuneConfig`, identical for every start of a comparison; never tuned per method):

- AdamW (betas 0.9/0.999), weight decay `weight_decay` on tensors with >= 2 dims only, linear warm-up over
  `warmup_fraction` of the steps then cosine decay to 0, gradient clipping at `max_grad_norm`;
- `epochs` passes over the train split in batches of `batch_size` (a trailing batch of one sample is skipped: BatchNorm
  cannot train on it), order and random flips (horizontal/vertical,
  applied to images, masks and boxes alike) drawn from a generator seeded with `seed`, so that every start sees the
  same batches in the same order;
- the test metrics after every epoch (convergence curves) and the train loss averaged over each epoch;
- optionally the same BatchNorm treatment for every start (`bn_calibration` > 0): before any metric or step, the
  backbone's BatchNorm statistics are re-estimated on that many train images (a seeded subset, the same for every
  start of a seed), so that a start that arrives calibrated for the task (GeoSANE's generation calibrates) has no
  edge over one that does not;
- optionally a linear-probe phase first (`probe_epochs` > 0, the few-label protocol practitioners use): only the task
  head trains (the classifier, or the decoder / detection heads; the backbone frozen, its BatchNorm statistics still
  tracking the task's images in train mode) at `probe_lr` with its own warm-up and cosine schedule, then every weight
  for `epochs` as above. The probe's epochs come first in the history (``phase="probe"``).

Budgets. The GeoSANE downstream recipe is AdamW lr 1e-5, no weight decay, batch 8, up to 50 epochs (big models on
GPUs). On 2 CPU cores the demo uses small models for a few epochs; at that budget lr 1e-5 barely moves a randomly
initialised head, so `CPU_DEMO` uses lr 1e-3 (batch 8, cosine, 5 epochs). `PAPER_RECIPE` is the paper's.

Options for two baselines: `teacher` (knowledge distillation: loss = (1 - alpha) * CE + alpha * T^2 * KL(student/T ||
teacher/T), classification and segmentation) and `keep_masks` (magnitude pruning: pruned weights are re-zeroed
after every step, so the sparsity holds through fine-tuning).
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from geosane_hf.evaluation.tasks import Task
from geosane_hf.task_data import IGNORE_INDEX, EvaluationError
from geosane_hf.train_loop import LoopConfig, train_epochs


@dataclass(frozen=True)
class FinetuneConfig:
    """The fine-tuning budget and schedule (keep it identical across starts)."""

    epochs: int = 5  # passes over the train split
    batch_size: int = 8  # samples per step
    lr: float = 1e-3  # peak learning rate of AdamW
    weight_decay: float = 0.0  # decoupled weight decay on >= 2-D tensors
    warmup_fraction: float = 0.1  # share of the steps with linear warm-up
    max_grad_norm: float | None = 1.0  # gradient clipping (None: off)
    seed: int = 0  # data order, flips, task-head init
    augment: bool = True  # random horizontal/vertical flips
    distill_alpha: float = 0.5  # weight of the KD term when a teacher is given
    distill_temperature: float = 4.0  # KD softmax temperature
    eval_every_epoch: bool = True  # test metrics after each epoch (else only after the last)
    progress: bool = True  # tqdm bars
    probe_epochs: int = 0  # linear-probe epochs before fine-tuning (head only; 0: off)
    probe_lr: float = 1e-2  # peak AdamW learning rate of the probe
    bn_calibration: int = 0  # re-estimate the backbone's BatchNorm statistics on this many train images first (0: off)

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise EvaluationError(
                f"expected epochs >= 0, batch_size >= 1, lr > 0, got {self.epochs}, {self.batch_size}, {self.lr}"
            )
        if self.bn_calibration < 0:
            raise EvaluationError(f"expected bn_calibration >= 0 train images, got {self.bn_calibration}")
        if self.probe_epochs < 0 or self.probe_lr <= 0:
            raise EvaluationError(
                f"expected probe_epochs >= 0 and probe_lr > 0, got {self.probe_epochs} and {self.probe_lr}"
            )
        if not 0.0 <= self.distill_alpha <= 1.0 or self.distill_temperature <= 0:
            raise EvaluationError(
                f"expected 0 <= distill_alpha <= 1 and distill_temperature > 0, got {self.distill_alpha}, "
                f"{self.distill_temperature}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: CPU budget of the demo (small models, a few epochs; same for every start).
CPU_DEMO = FinetuneConfig(epochs=5, batch_size=8, lr=1e-3)
#: The GeoSANE paper's downstream recipe (GPU budgets).
PAPER_RECIPE = FinetuneConfig(epochs=50, batch_size=8, lr=1e-5, weight_decay=0.0)


@dataclass
class EpochRecord:
    """One epoch: mean train loss, test metrics (empty when not evaluated), wall time, phase ("probe"/"finetune")."""

    epoch: int
    train_loss: float
    metrics: dict[str, Any]
    seconds: float
    phase: str = "finetune"


@dataclass
class FinetuneResult:
    """Outcome of one fine-tuning run.

    Attributes:
        initial_metrics: test metrics before any step (zero-shot, with the task head as initialised).
        history: one record per epoch (convergence curves).
        final_metrics: test metrics after the last epoch.
        primary_metric: the key of the headline metric ("f1_macro", "mean_iou", "map_50").
        config: the protocol used.
        seconds: total wall time.
    """

    initial_metrics: dict[str, Any]
    history: list[EpochRecord]
    final_metrics: dict[str, Any]
    primary_metric: str
    config: FinetuneConfig
    seconds: float
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return float(self.final_metrics[self.primary_metric])

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["score"] = self.score
        return out


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over samples (and pixels) [B, K, ...].

    >>> x = torch.randn(4, 3)
    >>> float(kd_loss(x, x, 2.0))
    0.0
    """
    s = F.log_softmax(student / temperature, dim=1)  # [B, K, ...]
    t = F.log_softmax(teacher / temperature, dim=1)
    per_sample = (t.exp() * (t - s)).sum(dim=1)  # [B, ...]
    return per_sample.mean() * temperature**2


def _param_masks(
    model: nn.Module, keep_masks: Mapping[str, torch.Tensor], prefix: str
) -> list[tuple[nn.Parameter, torch.Tensor]]:
    params = dict(model.named_parameters())
    pairs = []
    for key, mask in keep_masks.items():
        param = params.get(prefix + key, params.get(key))
        if param is None:
            continue  # a classifier-only tensor that this task's model does not have
        if param.shape != mask.shape:
            raise EvaluationError(
                f"expected a keep mask of shape {tuple(param.shape)} for {key}, got {tuple(mask.shape)}"
            )
        pairs.append((param, mask.to(device=param.device, dtype=param.dtype)))
    return pairs


def finetune(
    model: nn.Module,
    task: Task,
    config: FinetuneConfig = CPU_DEMO,
    *,
    teacher: nn.Module | None = None,
    keep_masks: Mapping[str, torch.Tensor] | None = None,
    description: str = "finetune",
) -> FinetuneResult:
    """Fine-tunes a task model in place with the shared protocol; device = the model's.

    Args:
        model: a task model (e.g. from `task.build_model(target, start.state_dict)`).
        task: the task (data, loss, metrics).
        config: the protocol.
        teacher: a trained task model of the same task for knowledge distillation (classification/segmentation).
        keep_masks: {state_dict key: 0/1 mask} of pruned weights to keep at zero.
        description: tqdm label.

    >>> import timm
    >>> task = Task.from_name("statlog-classification", max_train=32, max_test=16)
    >>> model = timm.create_model("test_resnet", in_chans=4, num_classes=6)
    >>> result = finetune(model, task, FinetuneConfig(epochs=1, progress=False))
    >>> len(result.history), result.primary_metric
    (1, 'f1_macro')
    """
    task.check_model(model)
    if teacher is not None and task.kind == "detection":
        raise EvaluationError("expected a classification or segmentation task for distillation, got detection")
    started = time.perf_counter()
    device = next(model.parameters()).device
    masks = _param_masks(model, keep_masks, task.backbone_prefix) if keep_masks else []
    _apply_masks(masks)
    calibration = calibrate_backbone(model, task, config.bn_calibration, config.seed) if config.bn_calibration else 0
    initial = task.evaluate(model)
    n = len(task.data.train)

    def loop(epochs: int, lr: float) -> LoopConfig:
        return LoopConfig(
            epochs=epochs,
            batch_size=config.batch_size,
            lr=lr,
            weight_decay=config.weight_decay,
            decay_matrices_only=True,
            warmup_fraction=config.warmup_fraction,
            schedule_skipped=True,
            max_grad_norm=config.max_grad_norm,
        )

    total = max(1, math.ceil(n / config.batch_size) * (config.epochs + config.probe_epochs))
    generator = torch.Generator().manual_seed(config.seed)
    if teacher is not None:
        teacher.eval()

    def step(index: torch.Tensor) -> torch.Tensor:
        images, targets = task.batch(task.data.train, index, device, generator if config.augment else None)
        loss, logits = task.forward_loss(model, images, targets)
        if teacher is None:
            return loss
        with torch.no_grad():
            teacher_logits = teacher(images)
        if task.kind == "segmentation":
            valid = (targets != IGNORE_INDEX).float()  # [B, S, S]
            kd = _masked_kd(logits, teacher_logits, config.distill_temperature, valid)
        else:
            kd = kd_loss(logits, teacher_logits, config.distill_temperature)
        return (1.0 - config.distill_alpha) * loss + config.distill_alpha * kd

    history: list[EpochRecord] = []
    bar = tqdm(total=total, desc=description, disable=not config.progress, leave=False)
    epoch_start = [time.perf_counter()]

    def on_step(epoch: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(epoch=epoch, loss=f"{loss:.3f}")

    def on_epoch(phase: str, last_epoch: int) -> Any:
        def record(epoch: int, losses: list[float]) -> None:
            last = epoch == last_epoch and (phase == "finetune" or config.epochs == 0)
            metrics = task.evaluate(model) if (config.eval_every_epoch or last) else {}
            history.append(
                EpochRecord(
                    epoch=len(history) + 1,
                    train_loss=float(sum(losses) / max(1, len(losses))),
                    metrics=metrics,
                    seconds=time.perf_counter() - epoch_start[0],
                    phase=phase,
                )
            )
            epoch_start[0] = time.perf_counter()

        return record

    def after_step() -> None:
        _apply_masks(masks)

    def run_phase(phase: str, epochs: int, lr: float) -> None:
        train_epochs(
            model,
            n,
            loop(epochs, lr),
            generator,
            step,
            after_step=after_step,
            on_epoch=on_epoch(phase, epochs),
            on_step=on_step,
        )

    if config.probe_epochs:
        with _frozen_except(model, task.head_parameter_names(model)):
            run_phase("probe", config.probe_epochs, config.probe_lr)
    run_phase("finetune", config.epochs, config.lr)
    bar.close()
    final = history[-1].metrics if history else initial
    return FinetuneResult(
        initial_metrics=initial,
        history=history,
        final_metrics=final,
        primary_metric=task.primary_metric,
        config=config,
        seconds=time.perf_counter() - started,
        notes={
            "train_samples": n,
            "test_samples": len(task.data.test),
            "steps": total,
            **({"bn_calibration_images": calibration} if calibration else {}),
        },
    )


@contextmanager
def _frozen_except(model: nn.Module, trainable: Collection[str]) -> Iterator[None]:
    """Freezes every parameter of `model` not named in `trainable` for the block, then unfreezes them."""
    keep = set(trainable)
    frozen = [p for name, p in model.named_parameters() if name not in keep and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def calibrate_backbone(model: nn.Module, task: Task, count: int, seed: int = 0) -> int:
    """Re-estimates the BatchNorm statistics of the task model's backbone on `count` train images; returns how many.

    The images are a subset of the train split drawn with `seed` (its own generator: the training order is not
    touched); the decoder and detection heads keep theirs.

    >>> import timm
    >>> task = Task.from_name("statlog-classification", max_train=16, max_test=8)
    >>> model = timm.create_model("test_resnet", in_chans=4, num_classes=6)
    >>> calibrate_backbone(model, task, 8), model.training
    (8, False)
    """
    from geosane_hf.generation.calibration import calibrate_batchnorm

    if count < 1:
        raise EvaluationError(f"expected at least 1 calibration image, got count={count}")
    n = len(task.data.train)
    index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(count, n)]
    device = next(model.parameters()).device
    images, _ = task.batch(task.data.train, index.sort().values, device)  # [M, C, S, S]
    prefix = task.backbone_prefix.rstrip(".")
    backbone = model.get_submodule(prefix) if prefix else model
    calibrate_batchnorm(backbone, images, batch_size=16)
    return int(images.shape[0])


def _masked_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float, valid: torch.Tensor) -> torch.Tensor:
    s = F.log_softmax(student / temperature, dim=1)  # [B, K, H, W]
    t = F.log_softmax(teacher / temperature, dim=1)
    per_pixel = (t.exp() * (t - s)).sum(dim=1)  # [B, H, W]
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1.0) * temperature**2


@torch.no_grad()
def _apply_masks(masks: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    for param, mask in masks:
        param.mul_(mask)
