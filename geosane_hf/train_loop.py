"""The one training loop: the zoo trainer, the zoo experiment's fine-tuning and the evaluation's fine-tuning use it.

AdamW; a learning-rate factor with linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to 0;
a new batch order each epoch from the caller's ``torch.Generator``; a batch of one sample is skipped (BatchNorm
cannot train on it) unless the split holds a single sample; optional gradient clipping. The caller's ``step``
turns a batch index into a loss (data, augmentation, loss function and extras such as distillation are the
caller's), ``after_step`` runs after each optimiser step (e.g. re-zeroing pruned weights) and ``on_epoch`` after
each epoch (evaluation, checkpoints). Callers keep their numbers: each one's schedule and optimiser groups are
options of :class:`LoopConfig`, so the same seed gives the same weights as before the loops were merged.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(3, 2)
    >>> x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    >>> losses = train_epochs(model, 10, LoopConfig(epochs=2, batch_size=4, lr=0.1), torch.Generator().manual_seed(0),
    ...                       lambda index: torch.nn.functional.cross_entropy(model(x[index]), y[index]))
    >>> [len(epoch) for epoch in losses]  # steps per epoch: batches of 4, 4 and 2
    [3, 3]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["LoopConfig", "batch_slices", "lr_factor", "train_epochs"]


@dataclass(frozen=True)
class LoopConfig:
    """Optimiser and schedule of :func:`train_epochs`."""

    epochs: int  # passes over the train split
    batch_size: int  # samples per step
    lr: float  # peak AdamW learning rate
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    decay_matrices_only: bool = False  # weight decay on >= 2-D trainable tensors only (two groups), else on all
    warmup_fraction: float = 0.0  # share of the scheduled steps with linear warm-up
    schedule_skipped: bool = False  # the schedule spans ceil(n / batch_size) steps per epoch, skipped ones included
    max_grad_norm: float | None = None  # gradient clipping (None: off)


def batch_slices(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each step's batch in the epoch's order; a one-sample batch only when ``n < 2``."""
    return [(a, min(a + batch_size, n)) for a in range(0, n, batch_size) if min(a + batch_size, n) - a >= 2 or n < 2]


def lr_factor(total: int, warmup: int) -> Callable[[int], float]:
    """The learning-rate factor of step ``step``: ``(step + 1) / warmup`` while warming up, then cosine to 0."""
    span = max(1, total - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, span) / span))

    return factor


def train_epochs(
    model: nn.Module,
    n: int,
    config: LoopConfig,
    generator: torch.Generator,
    step: Callable[[torch.Tensor], torch.Tensor],
    *,
    after_step: Callable[[], None] | None = None,
    on_epoch: Callable[[int, list[float]], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> list[list[float]]:
    """Trains ``model`` in place for ``config.epochs`` epochs over ``n`` samples; returns the losses per epoch.

    Args:
        model: The model (train mode during each epoch; ``on_epoch`` may switch it to eval and back).
        n: Train samples.
        config: Optimiser and schedule.
        generator: Draws each epoch's order (``randperm``); ``step`` may draw its augmentations from it too.
        step: ``index [B] -> loss`` (a scalar tensor with a graph).
        after_step: Runs after every optimiser step.
        on_epoch: ``(epoch from 1, that epoch's losses)`` after every epoch.
        on_step: ``(epoch from 1, loss)`` after every step (progress bars).
    """
    if config.decay_matrices_only:
        decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
        groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=config.lr)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    slices = batch_slices(n, config.batch_size)
    per_epoch = math.ceil(n / config.batch_size) if config.schedule_skipped else len(slices)
    total = max(1, per_epoch * config.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(total, int(config.warmup_fraction * total)))
    history = []
    with torch.enable_grad():
        for epoch in range(1, config.epochs + 1):
            model.train()
            order = torch.randperm(n, generator=generator)
            losses = []
            for a, b in slices:
                loss = step(order[a:b])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                if after_step is not None:
                    after_step()
                losses.append(float(loss.detach()))
                if on_step is not None:
                    on_step(epoch, losses[-1])
            history.append(losses)
            if on_epoch is not None:
                on_epoch(epoch, losses)
    return history
