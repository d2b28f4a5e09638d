"""Scoring starts in the zoo experiment: the fixed fine-tuning protocol, BN recalibration, per-method summaries."""

from __future__ import annotations

import contextlib
import hashlib
import math
import statistics
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from geosane_hf.experiments.zoo.config import METHODS, FinetuneProtocol, ZooExperimentConfig
from geosane_hf.experiments.zoo.results import MethodSummary, ScoredModel

__all__ = ["finetune_zoo_model"]


def _derive(*parts: Any) -> int:
    """A stable 63-bit seed from any parts (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@contextlib.contextmanager
def _threads(num_threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _spread(items: Sequence[Any], k: int) -> list[Any]:
    """Up to `k` items evenly spread over the sequence (all when k >= len)."""
    if k >= len(items):
        return list(items)
    if k <= 0:
        return []
    return [items[round(i * (len(items) - 1) / max(k - 1, 1))] for i in range(k)] if k > 1 else [items[0]]


def finetune_zoo_model(net: nn.Module, data: Any, protocol: FinetuneProtocol, seed: int) -> nn.Module:
    """Fine-tunes a zoo model in place with the fixed protocol (same batches and flips for every start of a seed).

    Args:
        net: a model built by :mod:`geosane_hf.collection.architectures`.
        data: the zoo task's :class:`~geosane_hf.collection.zoo.TaskData`.
        protocol: the protocol.
        seed: seeds the batch order and the flips.

    Example:
        >>> from geosane_hf.collection.architectures import build_architecture
        >>> from geosane_hf.collection.zoo import load_task_data, zoo_metrics
        >>> data = load_task_data("statlog-landsat")
        >>> net = finetune_zoo_model(build_architecture("statlog_cnn", width=4), data, FinetuneProtocol(), seed=0)
        >>> zoo_metrics(net, data.test_x, data.test_y, "classification", 6)["accuracy"] > 0.5
        True
    """
    from geosane_hf.collection.zoo import train_on_task
    from geosane_hf.train_loop import LoopConfig

    generator = torch.Generator().manual_seed(_derive("finetune", seed))
    config = LoopConfig(
        epochs=protocol.epochs, batch_size=protocol.batch_size, lr=protocol.lr, weight_decay=protocol.weight_decay
    )
    train_on_task(net, data, config, generator, flips=protocol.flips)
    return net.eval()


class Scorer:
    """Builds a start, recalibrates BN (same images for all), scores zero-shot and after fine-tuning."""

    def __init__(self, architecture: str, kwargs: dict[str, Any], data: Any, config: ZooExperimentConfig) -> None:
        self.architecture, self.kwargs, self.data, self.config = architecture, kwargs, data, config
        generator = torch.Generator().manual_seed(_derive("calibration"))
        count = min(config.calibration_images, len(data.train_x))
        self.calibration = data.train_x[torch.randperm(len(data.train_x), generator=generator)[:count]]
        self._zero_shot: dict[str, float] = {}  # deterministic zero-shot scores of fixed models, by name

    def build(self, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
        from geosane_hf.collection.architectures import build_architecture

        net = build_architecture(self.architecture, **self.kwargs)
        net.load_state_dict(dict(state_dict), strict=True)
        return net.eval()

    def metric(self, net: nn.Module) -> float:
        from geosane_hf.collection.zoo import zoo_metrics

        d = self.data
        return zoo_metrics(net, d.test_x, d.test_y, d.task, d.num_classes, d.class_names)[d.metric]

    def zero_shot_model(self, state_dict: Mapping[str, torch.Tensor], recalibrate: bool | None = None) -> nn.Module:
        from geosane_hf.generation.calibration import calibrate_batchnorm

        net = self.build(state_dict)
        if self.config.recalibrate_bn if recalibrate is None else recalibrate:
            calibrate_batchnorm(net, self.calibration, batch_size=256)
        return net

    def zero_shot(self, state_dict: Mapping[str, torch.Tensor]) -> float:
        """The test metric of the start after BN recalibration (when enabled), before any training."""
        return self.metric(self.zero_shot_model(state_dict))

    def score(
        self, state_dict: Mapping[str, torch.Tensor], finetune_seed: int | None, key: str | None = None
    ) -> tuple[float, float | None]:
        """(zero-shot, after the protocol or None); ``key`` names a fixed model whose zero-shot score is reused.

        Zero-shot scores do not depend on the seed (fixed calibration images), so population members and their
        reconstructions are scored once and only fine-tuned again per seed.
        """
        if finetune_seed is None and key is not None and key in self._zero_shot:
            return self._zero_shot[key], None
        net = self.zero_shot_model(state_dict)
        zero_shot = self.metric(net)
        if key is not None:
            self._zero_shot[key] = zero_shot
        if finetune_seed is None:
            return zero_shot, None
        return zero_shot, self.metric(finetune_zoo_model(net, self.data, self.config.finetune, finetune_seed))


def summarize(scores: list[ScoredModel]) -> list[MethodSummary]:
    rows = []
    for method in METHODS:
        mine = [s for s in scores if s.method == method]
        if not mine:
            continue
        seeds = sorted({s.seed for s in mine})
        zs = _mean_std([statistics.fmean(s.zero_shot for s in mine if s.seed == seed) for seed in seeds])
        tuned = [s for s in mine if s.finetuned is not None]
        tuned_seeds = sorted({s.seed for s in tuned})
        ft = _mean_std([statistics.fmean(s.finetuned for s in tuned if s.seed == seed) for seed in tuned_seeds])
        pooled = [s.zero_shot for s in mine]
        distances = [s.distance for s in mine if s.distance is not None]
        rows.append(
            MethodSummary(
                method=method,
                count=len(mine),
                zero_shot_mean=zs[0],
                zero_shot_std=zs[1],
                zero_shot_min=min(pooled),
                zero_shot_median=statistics.median(pooled),
                zero_shot_max=max(pooled),
                finetuned_count=len(tuned),
                finetuned_mean=ft[0] if tuned else None,
                finetuned_std=ft[1] if tuned else None,
                distance_mean=statistics.fmean(distances) if distances else None,
            )
        )
    return rows
