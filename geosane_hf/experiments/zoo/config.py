"""Zoo experiment settings: the fine-tuning protocol and :class:`ZooExperimentConfig` (see :mod:`.run`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from geosane_hf.evaluation.data import EvaluationError

__all__ = ["METHODS", "FinetuneProtocol", "ZooExperimentConfig", "ZooExperimentError"]

METHODS = ("population", "reconstruction", "reconstruction_heldout", "generated", "matched_noise", "random_init")


class ZooExperimentError(EvaluationError):
    """Bad input to the zoo experiment (no member of the layout, a model that does not fit, bad settings)."""


# ------------------------------------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class FinetuneProtocol:
    """The one fine-tuning protocol every start goes through (never tuned per method).

    AdamW, cosine decay from `lr` to 0 over all steps, cross-entropy (per pixel for segmentation), random
    horizontal/vertical flips, batch order and flips from a generator seeded with the experiment seed (so within a
    seed every start sees the same batches). Defaults sit inside the zoo's own training grid.
    """

    epochs: int = 1  # passes over the train split
    lr: float = 3e-3  # peak AdamW learning rate
    batch_size: int = 64  # samples per step (a trailing batch of < 2 samples is dropped: BatchNorm)
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    flips: bool = True  # random horizontal/vertical flips

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 2 or self.lr <= 0 or self.weight_decay < 0:
            raise ZooExperimentError(
                f"expected epochs >= 0, batch_size >= 2, lr > 0, weight_decay >= 0, got {self.epochs}, "
                f"{self.batch_size}, {self.lr}, {self.weight_decay}"
            )


@dataclass(frozen=True)
class ZooExperimentConfig:
    """Settings of :func:`run_zoo_experiment` (defaults: the issue-15 protocol, ~2 minutes on 2 cores)."""

    architecture: str = "statlog_cnn"  # zoo architecture name
    architecture_kwargs: Mapping[str, Any] | None = None  # one layout; None: the kwargs with the most members
    checkpoints: Literal["all", "final"] = "all"  # population members: every saved checkpoint, or final ones only
    anchors: Literal["train", "all"] = "train"  # anchors: members in GeoSANE's training set, or every member
    holdout_ids: Sequence[str] | None = None  # GeoSANE's held-out ids; None: read from the model card (README.md)
    dataset_dir: str | None = None  # the tokenized dataset GeoSANE trained on; None: found via trainer_state.json
    tokenizer_mode: Literal["full", "geosane"] | None = None  # None: the dataset's mode, else "full"
    align: bool = True  # weight-match every member to the best anchor first (permutation symmetry removed)
    sampler: Literal["interpolate", "kde"] = "interpolate"  # whole models between two anchors, or per-token KDE
    interpolation: tuple[float, float] = (0.25, 0.4)  # interpolate: weight t of the second anchor ~ U(min, max)
    noise_scale: float = 0.1  # kde: bandwidth relative to the per-dimension std of the anchors' latents
    num_samples: int = 16  # generated models per seed (as many matched-noise models and random inits)
    seeds: Sequence[int] = (0, 1, 2, 3, 4)  # experiment seeds (sampling, noise, random init, fine-tuning order)
    recalibrate_bn: bool = True  # re-estimate BN statistics of every start on the same train images
    calibration_images: int = 1024  # train images for BN recalibration (a fixed seeded subset)
    finetune: FinetuneProtocol = field(default_factory=FinetuneProtocol)  # the protocol after zero-shot
    population_finetune: int = 8  # anchors (evenly spread) also fine-tuned per seed, for population/reconstruction
    curve_interpolations: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)  # quality-novelty curve: t per point
    curve_samples: int = 16  # generated models (and as many matched-noise models) per curve point
    interpolation_pairs: int = 8  # pairs of anchors from different runs
    alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)  # interpolation weights of the second model
    window_batch_size: int = 8  # windows per encode/decode pass
    num_threads: int | None = 1  # torch intra-op threads during the run (restored afterwards); None: unchanged
    progress: bool = True  # tqdm bars

    def __post_init__(self) -> None:
        problems = []
        if self.checkpoints not in ("all", "final"):
            problems.append(f"checkpoints 'all' or 'final', got {self.checkpoints!r}")
        if self.anchors not in ("train", "all"):
            problems.append(f"anchors 'train' or 'all', got {self.anchors!r}")
        if self.sampler not in ("interpolate", "kde"):
            problems.append(f"sampler 'interpolate' or 'kde', got {self.sampler!r}")
        if self.tokenizer_mode not in (None, "full", "geosane"):
            problems.append(f"tokenizer_mode None, 'full' or 'geosane', got {self.tokenizer_mode!r}")
        if not self.noise_scale >= 0:
            problems.append(f"noise_scale >= 0, got {self.noise_scale}")
        low_high = tuple(self.interpolation)
        if len(low_high) != 2 or not 0.0 <= low_high[0] <= low_high[1] <= 1.0:
            problems.append(f"interpolation (min, max) with 0 <= min <= max <= 1, got {self.interpolation}")
        if self.num_samples < 1 or not self.seeds:
            problems.append(f"num_samples >= 1 and at least one seed, got {self.num_samples} and {self.seeds}")
        if self.calibration_images < 2:
            problems.append(f"calibration_images >= 2, got {self.calibration_images}")
        if self.curve_samples < 1 or any(not 0.0 <= t <= 1.0 for t in self.curve_interpolations):
            problems.append(
                f"curve_samples >= 1 and curve_interpolations in [0, 1], got {self.curve_samples}, "
                f"{self.curve_interpolations}"
            )
        if self.interpolation_pairs < 0 or any(not 0.0 <= a <= 1.0 for a in self.alphas):
            problems.append(
                f"interpolation_pairs >= 0 and alphas in [0, 1], got {self.interpolation_pairs}, {self.alphas}"
            )
        if self.population_finetune < 0:
            problems.append(f"population_finetune >= 0, got {self.population_finetune}")
        if problems:
            raise ZooExperimentError("ZooExperimentConfig: expected " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seeds"] = list(self.seeds)
        out["alphas"] = list(self.alphas)
        out["interpolation"] = list(self.interpolation)
        out["curve_interpolations"] = list(self.curve_interpolations)
        out["holdout_ids"] = None if self.holdout_ids is None else list(self.holdout_ids)
        out["architecture_kwargs"] = None if self.architecture_kwargs is None else dict(self.architecture_kwargs)
        return out
