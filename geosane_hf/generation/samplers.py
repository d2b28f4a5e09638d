"""Samplers: small classes with a typed config that turn the prompt and its anchors into candidate latents.

Like diffusers' schedulers, a sampler is swappable (``pipe.sampler = KDESampler.from_config(pipe.sampler.config)``)
and holds no model: :meth:`Sampler.sample` receives a :class:`SamplingContext` (the prompt's latents and per-layer
statistics, the anchors, the model, a ``torch.Generator``, the decode and scoring steps) and returns
:class:`Samples`: one :class:`Candidate` per sample, each saying how to decode it (``"plain"``, or ``"residual"``
around an anchor), which statistics map its decoded tokens back to weights, and its own provenance.

All draws come from ``ctx.generator`` (CPU), so the same seed gives bit-identical samples, and every token and
every sample gets its own noise (the released GeoSANE code reseeded per token: one noise vector was shared by all
tokens and every call returned the same sample). Noise scales are relative: ``noise_scale`` multiplies the
per-dimension standard deviation of the anchors' latents over tokens, so one default works across models.

- :class:`PromptNoiseSampler`: ``z_prompt + s * sigma * eps`` (a KDE with the prompt as its single anchor).
- :class:`KDESampler`: per token, one anchor chosen uniformly plus ``h * sigma * eps`` (SANE's per-token KDE).
- :class:`BootstrapSampler`: KDE candidates, scored by the selection step (:mod:`.selection`), the KDE refitted on
  the best, for ``rounds`` rounds (SANE's bootstrapped sampler).
- :class:`InterpolationSampler`: one whole model per sample, ``(1 - t) z_a + t z_b`` between two anchors (or the
  prompt and an anchor), decoded with the same mixture of their per-layer statistics: never tokens of different
  models stitched together (docs/generation_quality.md).

A new sampler is a subclass with a ``name``, a ``config_class`` (a dataclass) and ``sample``; registered in
:mod:`.registry`, the CLI, the Space and the experiment configs know it.

Example:
    >>> import torch
    >>> z = torch.randn(10, 4)
    >>> a = prompt_noise(z, 2, 0.1, torch.Generator().manual_seed(0))
    >>> b = prompt_noise(z, 2, 0.1, torch.Generator().manual_seed(0))
    >>> a.shape, torch.equal(a, b), torch.equal(a[0], a[1])
    (torch.Size([2, 10, 4]), True, False)
    >>> sampler = KDESampler(noise_scale=0.2, max_anchors=4)
    >>> sampler.config
    KDEConfig(noise_scale=0.2, max_anchors=4)
    >>> BootstrapSampler.from_config(sampler.config, candidates=4).config.candidates
    4
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from geosane_hf.generation.errors import GenerationError
from geosane_hf.generation.latents import AnchorSet, EncodedWeights, align_index
from geosane_hf.tokenizer import WeightLayout

if TYPE_CHECKING:
    from geosane_hf.generation.outputs import StepTimer
    from geosane_hf.generation.selection import CandidateSelector

__all__ = [
    "BootstrapConfig",
    "BootstrapSampler",
    "Candidate",
    "InterpolationConfig",
    "InterpolationSampler",
    "KDEConfig",
    "KDESampler",
    "PromptNoiseConfig",
    "PromptNoiseSampler",
    "Sampler",
    "SamplerConfig",
    "Samples",
    "SamplingContext",
    "align_latents",
    "kde_sample",
    "latent_scale",
    "prompt_noise",
]


# ------------------------------------------------------------------------------------------------ latent draws


def latent_scale(anchors: torch.Tensor) -> torch.Tensor:
    """Per-dimension std ``[L]`` of latents ``[..., N, L]`` over all tokens (and anchors); at least 1e-6."""
    flat = anchors.reshape(-1, anchors.shape[-1]).float()  # [A * N, L]
    if flat.shape[0] < 2:
        return torch.ones(flat.shape[-1], device=anchors.device)
    return flat.std(0).clamp_min(1e-6)


def _noise(shape: Sequence[int], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    # Drawn on the generator's device (CPU) so results do not depend on the model's device, then moved.
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(like.device, like.dtype)


def prompt_noise(
    latents: torch.Tensor, num_samples: int, noise_scale: float, generator: torch.Generator
) -> torch.Tensor:
    """``[S, N, L]`` samples ``z + noise_scale * sigma * eps`` with independent ``eps`` per token and sample.

    Args:
        latents: ``[N, L]`` prompt latents.
        num_samples: ``S``.
        noise_scale: Relative noise (0 returns copies of the prompt latents).
        generator: The RNG.
    """
    sigma = latent_scale(latents)  # [L]
    eps = _noise((num_samples, *latents.shape), generator, latents)  # [S, N, L]
    return latents[None] + noise_scale * sigma * eps


def _kde(
    anchors: torch.Tensor, num_samples: int, bandwidth: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    num_anchors, length, _ = anchors.shape
    choice = torch.randint(num_anchors, (num_samples, length), generator=generator)  # [S, N]
    picked = anchors[choice.to(anchors.device), torch.arange(length, device=anchors.device)[None, :]]  # [S, N, L]
    sigma = latent_scale(anchors)  # [L]
    return picked + bandwidth * sigma * _noise(picked.shape, generator, anchors), choice


def kde_sample(anchors: torch.Tensor, num_samples: int, bandwidth: float, generator: torch.Generator) -> torch.Tensor:
    """``[S, N, L]`` samples of a per-token Gaussian KDE over ``anchors`` ``[A, N, L]``.

    For each sample and token an anchor is chosen uniformly and ``bandwidth * sigma * eps`` is added.
    """
    return _kde(anchors, num_samples, bandwidth, generator)[0]


def align_latents(source: WeightLayout, source_latents: torch.Tensor, target: WeightLayout) -> torch.Tensor:
    """Maps latents of another architecture onto the target's tokens (``[N_source, L]`` -> ``[N_target, L]``).

    See :func:`geosane_hf.generation.latents.align_index` for the mapping (layer type, relative depth).
    """
    return source_latents[align_index(source, target).to(source_latents.device)]


# ------------------------------------------------------------------------------------------------ the interface


@dataclass
class Candidate:
    """One sample: latents plus how to turn them into weights.

    Attributes:
        latents: ``[N, L]`` on the prompt's tokens.
        decode: ``"plain"`` (decode the latents) or ``"residual"`` (``base weights + dec(z) - dec(z_base)``).
        base: Residual decoding: the anchor id (``"prompt"`` or a collection id) whose weights and latents the
            residual is taken around.
        stats: Id of the anchor whose per-layer statistics map the decoded tokens back (``"prompt"``: the
            prompt's), or ``{anchor id: weight}`` for their weighted mean (an interpolated model); only used by
            models trained on per-layer standardised tokens.
        provenance: Per-sample record (anchor ids, mixing weights, round ...), JSON-serialisable.
        score: The selection step's score, when it scored this candidate.
    """

    latents: torch.Tensor
    decode: Literal["plain", "residual"] = "plain"
    base: str | None = None
    stats: str | dict[str, float] = "prompt"
    provenance: dict[str, Any] = field(default_factory=dict)
    score: float | None = None

    def describe(self) -> dict[str, Any]:
        """The JSON record of this candidate (no tensors)."""
        record = {"decode": self.decode, "stats": self.stats, **self.provenance}
        if self.base is not None:
            record["base"] = self.base
        if self.score is not None:
            record["score"] = self.score
        return record


@dataclass
class Samples:
    """What :meth:`Sampler.sample` returns.

    Attributes:
        candidates: Best first when they were scored; the pipeline materialises the first ``num_samples``.
        record: Sampler-specific provenance entries (top-level keys of the generation record).
    """

    candidates: list[Candidate]
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class SamplingContext:
    """Everything a sampler may use; built by :class:`~geosane_hf.generation.GeoSANEPipeline` for one call.

    Attributes:
        prompt: The encoded prompt (latents ``[N, L]``, per-layer statistics, layout, positions).
        anchors: The prompt and the collection anchors (latents ``[A, N, L]`` on the prompt's tokens, per-anchor
            statistics, raw tokens when the sampler keeps them, layouts).
        model: The GeoSANE model.
        generator: The only source of randomness.
        num_samples: Samples the caller asked for.
        materialise: The decode step: a candidate -> a ready (BatchNorm-calibrated) timm model in eval mode.
        selector: The selection step (scores candidates on reference data).
        timer: Step timings (``with ctx.timer("name"): ...``; nested steps are not counted twice).
    """

    prompt: EncodedWeights
    anchors: AnchorSet
    model: nn.Module
    generator: torch.Generator
    num_samples: int
    materialise: Callable[[Candidate], nn.Module]
    selector: CandidateSelector
    timer: StepTimer

    def score(self, candidates: Sequence[Candidate]) -> list[float]:
        """Scores ``candidates`` with the selection step (sets ``candidate.score``)."""
        return self.selector.score(self, candidates)


@dataclass
class SamplerConfig:
    """Base of every sampler's config: a dataclass of JSON-able fields, validated on construction."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int):
                _check_int(f.name, value, 1)
            elif f.name == "noise_scale" and not (
                isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
            ):
                raise GenerationError(f"expected a finite noise_scale >= 0, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GenerationError(f"expected {name} to be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise GenerationError(f"expected {name} >= {minimum}, got {value}")
    return value


class Sampler:
    """Base class: a named sampler with a typed config (``sampler.config``), swappable like a diffusers scheduler.

    Class attributes say what the pipeline prepares: ``uses_anchors`` (load collection anchors when a collection is
    given), ``requires_anchors`` (refuse to run without one), ``keeps_tokens`` (keep the anchors' and prompt's raw
    tokens: residual decoding needs them); a config field ``max_anchors`` limits the anchors loaded.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[SamplerConfig]]
    uses_anchors: ClassVar[bool] = False
    requires_anchors: ClassVar[bool] = False
    keeps_tokens: ClassVar[bool] = False

    def __init__(self, config: SamplerConfig | Mapping[str, Any] | None = None, **options: Any) -> None:
        if config is None:
            config = self.config_class(**options)
        elif isinstance(config, Mapping):
            config = self.config_class(**{**config, **options})
        elif options:
            config = dataclasses.replace(config, **options)
        if not isinstance(config, self.config_class):
            raise GenerationError(f"expected a {self.config_class.__name__} for {self.name!r}, got {config!r}")
        self.config = config

    @classmethod
    def from_config(cls, config: SamplerConfig | Mapping[str, Any], **overrides: Any) -> Sampler:
        """A sampler of this class from another sampler's config (fields this class does not have are dropped)."""
        values = config.to_dict() if isinstance(config, SamplerConfig) else dict(config)
        names = {f.name for f in dataclasses.fields(cls.config_class)}
        return cls(cls.config_class(**{k: v for k, v in {**values, **overrides}.items() if k in names}))

    @property
    def max_anchors(self) -> int:
        """Collection anchors the pipeline loads at most (the config's ``max_anchors``, else 8)."""
        return int(getattr(self.config, "max_anchors", 8))

    @property
    def noise_scale(self) -> float | None:
        value = getattr(self.config, "noise_scale", None)
        return None if value is None else float(value)

    def sample(self, ctx: SamplingContext) -> Samples:
        """Draws candidates (at least ``ctx.num_samples``; the pipeline keeps the first ``num_samples``)."""
        raise NotImplementedError

    def record(self, samples: Samples) -> dict[str, Any]:
        """Top-level provenance entries of this sampler (default: its config under its name)."""
        return {self.name: {**self.config.to_dict(), **samples.record}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


# ------------------------------------------------------------------------------------------------ the samplers


@dataclass
class PromptNoiseConfig(SamplerConfig):
    """Config of :class:`PromptNoiseSampler`."""

    noise_scale: float = 0.1  # latent noise relative to the per-dimension latent std


class PromptNoiseSampler(Sampler):
    """``z_prompt + noise_scale * sigma * eps``: a KDE with the prompt as its single anchor.

    >>> PromptNoiseSampler(noise_scale=0.0).config
    PromptNoiseConfig(noise_scale=0.0)
    """

    name = "prompt-noise"
    config_class = PromptNoiseConfig

    def sample(self, ctx: SamplingContext) -> Samples:
        latents = prompt_noise(ctx.prompt.latents, ctx.num_samples, self.config.noise_scale, ctx.generator)
        return Samples([Candidate(z, provenance={"anchor_ids": ["prompt"]}) for z in latents])  # z: [N, L]

    def record(self, samples: Samples) -> dict[str, Any]:
        return {}


@dataclass
class KDEConfig(SamplerConfig):
    """Config of :class:`KDESampler`."""

    noise_scale: float = 0.1  # KDE bandwidth relative to the per-dimension latent std of the anchors
    max_anchors: int = 8  # collection anchors at most (the prompt is an anchor too)


def _mixing(choice: torch.Tensor, ids: Sequence[str]) -> dict[str, Any]:
    """Fraction of tokens each anchor supplied, for one sample's ``[N]`` anchor choice."""
    counts = torch.bincount(choice, minlength=len(ids)).tolist()
    total = max(1, sum(counts))
    return {"anchor_ids": list(ids), "anchor_weights": [round(c / total, 6) for c in counts]}


class KDESampler(Sampler):
    """Per token, an anchor chosen uniformly plus ``noise_scale * sigma * eps`` (needs a collection)."""

    name = "kde"
    config_class = KDEConfig
    uses_anchors = True
    requires_anchors = True

    def sample(self, ctx: SamplingContext) -> Samples:
        latents, choice = _kde(ctx.anchors.latents, ctx.num_samples, self.config.noise_scale, ctx.generator)
        return Samples(
            [Candidate(z, provenance=_mixing(c, ctx.anchors.ids)) for z, c in zip(latents, choice, strict=True)]
        )

    def record(self, samples: Samples) -> dict[str, Any]:
        return {}


@dataclass
class BootstrapConfig(SamplerConfig):
    """Config of :class:`BootstrapSampler`."""

    noise_scale: float = 0.1  # KDE bandwidth relative to the per-dimension latent std
    max_anchors: int = 8  # collection anchors at most (the prompt is an anchor too)
    candidates: int = 8  # KDE candidates drawn and scored per round
    keep: int = 2  # best candidates the KDE is refitted on for the next round
    rounds: int = 2  # sample-score-refit rounds


class BootstrapSampler(Sampler):
    """SANE's bootstrapped sampler: draw KDE candidates, score them (selection step), refit on the best, repeat.

    Works without a collection too (the prompt is then the only anchor). The candidates come back best first over
    all rounds, each with its score.
    """

    name = "bootstrap"
    config_class = BootstrapConfig
    uses_anchors = True

    def sample(self, ctx: SamplingContext) -> Samples:
        c = self.config
        pool: list[Candidate] = []
        rounds = []
        current = ctx.anchors.latents  # [A, N, L]
        for round_index in range(c.rounds):
            latents = kde_sample(current, c.candidates, c.noise_scale, ctx.generator)  # [C, N, L]
            fitted_on = "anchors" if round_index == 0 else f"best {c.keep} of round {round_index - 1}"
            batch = [
                Candidate(z, provenance={"round": round_index, "candidate": i, "kde_fitted_on": fitted_on})
                for i, z in enumerate(latents)
            ]
            scores = ctx.score(batch)
            pool.extend(batch)
            order = sorted(range(len(scores)), key=lambda i: -scores[i])[: c.keep]
            current = latents[order]  # refit the KDE on the best
            rounds.append({"round": round_index, "scores": scores})
        pool.sort(key=lambda candidate: -candidate.score)  # stable: ties keep their drawing order
        return Samples(pool, {"rounds": rounds})

    def record(self, samples: Samples) -> dict[str, Any]:
        c = self.config
        return {"bootstrap": {"candidates": c.candidates, "keep": c.keep, "rounds": c.rounds, **samples.record}}


@dataclass
class InterpolationConfig(SamplerConfig):
    """Config of :class:`InterpolationSampler`."""

    interpolation_min: float = 0.2  # smallest weight t of the second model
    interpolation_max: float = 0.35  # largest weight t of the second model (t ~ U(min, max) per sample)
    pairs: Literal["anchors", "prompt"] = "prompt"  # the prompt -> an anchor, or two anchors (the zoo experiment)
    decode: Literal["plain", "residual"] = "residual"  # residual: prompt weights + dec(z) - dec(z_prompt)
    max_anchors: int = 8  # collection anchors at most (the prompt is an anchor too)
    noise_scale: float = 0.0  # latent noise on top, relative to the per-dimension latent std
    cross_architecture: bool = False  # pairs="prompt": also towards other architectures (tokens aligned by depth)

    def __post_init__(self) -> None:
        super().__post_init__()
        low, high = self.interpolation_min, self.interpolation_max
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
            raise GenerationError(f"expected finite interpolation weights, got {low!r} and {high!r}")
        if not 0.0 <= low <= high <= 1.0:
            raise GenerationError(f"expected 0 <= interpolation_min <= interpolation_max <= 1, got {low} and {high}")
        if self.pairs not in ("anchors", "prompt"):
            raise GenerationError(f"expected pairs 'anchors' or 'prompt', got {self.pairs!r}")
        if self.decode not in ("plain", "residual"):
            raise GenerationError(f"expected decode 'plain' or 'residual', got {self.decode!r}")


class InterpolationSampler(Sampler):
    """Whole models between two members: ``z = (1 - t) z_a + t z_b`` with ``t ~ U(min, max)`` per sample.

    Per-token KDE over several anchors stitches tokens of different models together and destroys their function
    (zoo experiment: 0.17-0.25 accuracy against 0.86 for the population); this sampler keeps every sample one model
    between two. The anchors must be *aligned* (same permutation of hidden units: models fine-tuned from one start
    are; others are weight-matched first, as :mod:`geosane_hf.experiments.zoo` does), otherwise their midpoints are
    as poor as weight-space midpoints of unaligned models. Each sample is decoded with the same mixture of the two
    anchors' per-layer statistics. ``pairs="prompt"`` moves the prompt towards an anchor (a model between the
    prompt and a population member); ``pairs="anchors"`` draws both ends from all anchors. ``decode="residual"``
    keeps the prompt's own weights and adds only the decoded change, ``w_prompt + dec(z) - dec(z_prompt)``: what the
    autoencoder cannot reconstruct of the prompt is kept, not replaced by the population's average (with no other
    anchor the output is the prompt itself).

    >>> sampler = InterpolationSampler(interpolation_min=0.25, interpolation_max=0.25)
    >>> sampler.config.pairs, sampler.config.decode, sampler.name
    ('prompt', 'residual', 'interpolate')
    """

    name = "interpolate"
    config_class = InterpolationConfig
    uses_anchors = True

    @property
    def keeps_tokens(self) -> bool:  # residual decoding needs the prompt's raw tokens
        return self.config.decode == "residual"

    def sample(self, ctx: SamplingContext) -> Samples:
        c = self.config
        latents = ctx.anchors.latents  # [A, N, L]
        ids = ctx.anchors.ids
        count = len(ids)
        # towards the prompt's own architecture only (other bands or classes allowed: same_body), unless asked: other
        # architectures' tokens are mapped by layer type and depth (align_index), which does not carry their function
        members = ctx.anchors.members
        partners = [
            i for i in range(1, count) if c.cross_architecture or not members[i].aligned or members[i].same_body
        ]
        sigma = latent_scale(latents) if c.noise_scale else None  # [L]
        candidates = []
        for _ in range(ctx.num_samples):
            if count == 1 or (c.pairs == "prompt" and not partners):
                a = b = 0  # the prompt alone: its reconstruction (residual: the prompt itself), plus noise
            elif c.pairs == "prompt":
                a, b = 0, partners[int(torch.randint(len(partners), (1,), generator=ctx.generator))]
            else:
                a, b = torch.randperm(count, generator=ctx.generator)[:2].tolist()
            t = c.interpolation_min + (c.interpolation_max - c.interpolation_min) * float(
                torch.rand((), generator=ctx.generator)
            )
            z = latents[a].clone() if a == b else (1.0 - t) * latents[a] + t * latents[b]  # [N, L]
            if sigma is not None:
                z = z + c.noise_scale * sigma * _noise(z.shape, ctx.generator, z)
            weights = {ids[a]: 1.0 - t, ids[b]: t} if a != b else {ids[a]: 1.0}
            provenance = {"anchor_ids": [ids[a], ids[b]], "interpolation": round(t, 6)}
            if c.decode == "residual":
                candidates.append(Candidate(z, "residual", base=ids[0], stats=weights, provenance=provenance))
            else:
                candidates.append(Candidate(z, stats=weights, provenance=provenance))
        return Samples(candidates)
