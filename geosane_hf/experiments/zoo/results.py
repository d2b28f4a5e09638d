"""Zoo experiment results (:class:`ZooExperimentResult`) and their Markdown tables (:func:`render_markdown`)."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "InterpolationPair",
    "MethodSummary",
    "NoveltyPoint",
    "PopulationMember",
    "ScoredModel",
    "ZooExperimentResult",
    "render_markdown",
]


# ------------------------------------------------------------------------------------------------------- results


@dataclass
class PopulationMember:
    """A population member of the chosen layout.

    Attributes:
        id: zoo model id; run_id, epoch, is_final as in the zoo index.
        recorded: the test metric recorded in the zoo index.
        measured: the same metric measured here without BN recalibration (must equal `recorded`).
        in_training_set: True if GeoSANE trained on it, False if held out (or not in its dataset), None if unknown.
        role: "anchor" (used for sampling and as nearest model) or "held-out" / "not-anchor".
    """

    id: str
    run_id: str
    epoch: int
    is_final: bool
    recorded: float
    measured: float
    in_training_set: bool | None
    role: str


@dataclass
class ScoredModel:
    """One evaluated start.

    Attributes:
        method: one of ``METHODS``.
        seed: experiment seed.
        name: what it is (``sample 3``, an anchor id, ``init 2`` ...).
        zero_shot: test metric before fine-tuning (after BN recalibration when enabled).
        finetuned: test metric after the fine-tuning protocol (None when not fine-tuned).
        distance: L2 distance (parameters, BN statistics excluded) to `nearest` (generated, matched noise:
            the generated model's nearest anchor; reconstruction: its own anchor).
        nearest: the anchor id the distance refers to.
    """

    method: str
    seed: int
    name: str
    zero_shot: float
    finetuned: float | None = None
    distance: float | None = None
    nearest: str | None = None


@dataclass
class MethodSummary:
    """Per method: mean ± std over seeds of the per-seed mean, and the pooled spread of single models."""

    method: str
    count: int
    zero_shot_mean: float
    zero_shot_std: float
    zero_shot_min: float
    zero_shot_median: float
    zero_shot_max: float
    finetuned_count: int
    finetuned_mean: float | None
    finetuned_std: float | None
    distance_mean: float | None


@dataclass
class NoveltyPoint:
    """One point of the quality-novelty curve: generated models at one interpolation weight vs matched noise.

    Attributes:
        interpolation: the weight t of the second anchor (0: reconstructions of single anchors).
        distance: mean L2 distance of the generated models to their nearest anchor (= the noise models').
        generated_mean / generated_std: zero-shot metric of the generated models.
        noise_mean / noise_std: zero-shot metric of nearest anchor + isotropic noise at each model's distance.
        count: models per series.
    """

    interpolation: float
    distance: float
    generated_mean: float
    generated_std: float
    noise_mean: float
    noise_std: float
    count: int


@dataclass
class InterpolationPair:
    """Two anchors of different runs along alpha: weights ``(1 - alpha) w_a + alpha w_b`` vs decoded latent lerp."""

    a: str
    b: str
    weight_distance: float
    alphas: list[float]
    weight_space: list[float]
    latent_space: list[float]


@dataclass
class ZooExperimentResult:
    """Everything :func:`run_zoo_experiment` measured (JSON via `to_dict`, Markdown via `to_markdown`)."""

    config: dict[str, Any]
    geosane_model: str
    zoo_dir: str
    architecture: str
    architecture_kwargs: dict[str, Any]
    dataset: str
    metric: str
    members: list[PopulationMember]
    training_info: dict[str, Any]
    scores: list[ScoredModel]
    summary: list[MethodSummary]
    curve: list[NoveltyPoint]
    interpolation: list[InterpolationPair]
    distances: dict[str, Any]
    targets: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def method(self, name: str) -> MethodSummary | None:
        """The summary row of a method, or None."""
        return next((s for s in self.summary if s.method == name), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        return render_markdown(self)


_LABELS = {
    "population": "population (anchors)",
    "reconstruction": "reconstruction (anchor encoded -> decoded)",
    "reconstruction_heldout": "reconstruction of held-out members",
    "generated": "**generated**",
    "matched_noise": "**matched-distance noise**",
    "random_init": "random init",
}


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean:.4f} ± {std:.4f}"


def _f(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(result: ZooExperimentResult) -> str:
    """The report as Markdown (tables of methods, population, distances, noise curve, interpolation)."""
    cfg = result.config
    metric = result.metric
    anchors = [m for m in result.members if m.role == "anchor"]
    held = [m for m in result.members if m.role == "held-out"]
    ft = cfg["finetune"]
    lines = [
        f"# Zoo experiment: {result.architecture} {json.dumps(result.architecture_kwargs, sort_keys=True)}",
        "",
        f"GeoSANE model `{result.geosane_model}`, population `{result.zoo_dir}` ({result.dataset}, test {metric}). "
        f"{len(result.members)} members of this layout ({cfg['checkpoints']} checkpoints), {len(anchors)} anchors "
        f"({result.training_info['anchors']}), {len(held)} held out. "
        f"{result.distances['num_parameters']:,} parameters, {result.distances['num_tokens']} tokens "
        f"({result.training_info['tokenizer_mode']} mode).",
        "",
        f"Alignment: {result.training_info.get('alignment', 'not aligned')}. Sampler `{cfg['sampler']}` ("
        + (
            f"t ~ U{tuple(cfg['interpolation'])} between two anchors"
            if cfg["sampler"] == "interpolate"
            else f"bandwidth {cfg['noise_scale']} x the anchors' latent std"
        )
        + f"), {cfg['num_samples']} samples per seed, seeds {cfg['seeds']}. BatchNorm: {result.training_info['bn']}"
        + (f" ({cfg['calibration_images']} images)." if cfg["recalibrate_bn"] else ".")
        + f" Fine-tuning (same for every start): {ft['epochs']} epoch(s), AdamW lr {ft['lr']} cosine to 0, batch "
        f"{ft['batch_size']}, weight decay {ft['weight_decay']}, flips {ft['flips']}; population and reconstruction "
        f"rows fine-tune {min(cfg['population_finetune'], len(anchors))} anchors per seed. Held-out ids from: "
        f"{result.training_info['holdout_source']}; GeoSANE's dataset: "
        f"{result.training_info['dataset_dir'] or 'unknown'}. Time: {result.seconds:.1f} s.",
        "",
        "## Zero-shot and after fine-tuning",
        "",
        "Mean ± std over seeds of the per-seed mean; min / median / max over single models. Distance: L2 over all "
        "parameters (BN statistics excluded) to the nearest anchor (reconstruction: to its own anchor).",
        "",
    ]
    rows = []
    for s in result.summary:
        rows.append(
            [
                _LABELS.get(s.method, s.method),
                str(s.count),
                _pm(s.zero_shot_mean, s.zero_shot_std),
                f"{s.zero_shot_min:.4f} / {s.zero_shot_median:.4f} / {s.zero_shot_max:.4f}",
                _pm(s.finetuned_mean, s.finetuned_std),
                _f(s.distance_mean, 3),
            ]
        )
    header = [
        "start",
        "models",
        f"zero-shot {metric}",
        "min / median / max",
        f"after {ft['epochs']} epoch",
        "distance",
    ]
    lines += [_table(header, rows), ""]
    gen, noise = result.method("generated"), result.method("matched_noise")
    if gen and noise:
        dz = gen.zero_shot_mean - noise.zero_shot_mean
        verdict = "above" if dz > 0 else "below"
        text = (
            f"Generated vs matched-distance noise, zero-shot: {gen.zero_shot_mean:.4f} vs {noise.zero_shot_mean:.4f} "
            f"({100 * dz:+.1f} points, generated {verdict})"
        )
        if gen.finetuned_mean is not None and noise.finetuned_mean is not None:
            text += (
                f"; after fine-tuning {gen.finetuned_mean:.4f} vs {noise.finetuned_mean:.4f} "
                f"({100 * (gen.finetuned_mean - noise.finetuned_mean):+.1f} points)"
            )
        lines += [text + ".", ""]

    lines += _targets_markdown(result)
    lines += ["## The population", ""]
    rows = []
    for role, group in (("anchors", anchors), ("held out", held)):
        if group:
            rec = sorted(m.recorded for m in group)
            rows.append(
                [
                    role,
                    str(len(group)),
                    f"{rec[0]:.4f}",
                    f"{statistics.median(rec):.4f}",
                    f"{rec[-1]:.4f}",
                    str(sum(abs(m.recorded - m.measured) < 1e-9 for m in group)),
                ]
            )
    lines += [
        _table(["members", "n", f"min {metric}", "median", "max", "measured = recorded"], rows),
        "",
        "Recorded: the zoo index's test metric; measured: re-evaluated here (trained BN statistics).",
        "",
        "Held out (not in GeoSANE's training set): " + (", ".join(f"`{m.id}`" for m in held) or "none") + ".",
        "",
        "## Distances (L2 over parameters)",
        "",
    ]
    rows = []
    for name in (
        "generated_to_nearest_anchor",
        "reconstruction_to_own_anchor",
        "anchor_to_nearest_other_run",
        "anchor_norm",
    ):
        d = result.distances.get(name)
        if d:
            rows.append(
                [name.replace("_", " "), _f(d["mean"], 3), _f(d["min"], 3), _f(d["median"], 3), _f(d["max"], 3)]
            )
    lines += [_table(["distance", "mean", "min", "median", "max"], rows), ""]

    lines += [
        "## Quality vs novelty",
        "",
        f"Generated models at interpolation weight t (t = 0: an anchor's reconstruction; larger t: farther from every "
        f"training member) and, for each, its nearest anchor + isotropic noise at exactly its distance; "
        f"{cfg['curve_samples']} models per point, zero-shot {metric}, same BN treatment. Distances are measured in "
        "the aligned frame (modulo permutations of hidden units). ![quality vs novelty](quality_novelty.png)",
        "",
        _table(
            ["t", "distance", f"generated {metric}", f"matched noise {metric}", "generated - noise"],
            [
                [
                    f"{p.interpolation:g}",
                    _f(p.distance, 3),
                    _pm(p.generated_mean, p.generated_std),
                    _pm(p.noise_mean, p.noise_std),
                    f"{100 * (p.generated_mean - p.noise_mean):+.1f} points",
                ]
                for p in result.curve
            ],
        ),
        "",
    ]
    if result.interpolation:
        alphas = result.interpolation[0].alphas
        lines += [
            "## Interpolation between two members (different runs)",
            "",
            "Weight space: `(1 - a) w_A + a w_B`; latent: decode `(1 - a) z_A + a z_B` (a = 0 and 1 are the decoded "
            f"endpoints). Zero-shot {metric}, same BN treatment. ![interpolation](interpolation.png)",
            "",
        ]
        rows = []
        for pair in result.interpolation:
            rows.append(
                [f"`{pair.a}` - `{pair.b}`", "weight", _f(pair.weight_distance, 2)]
                + [_f(v) for v in pair.weight_space]
            )
            rows.append(["", "latent", ""] + [_f(v) for v in pair.latent_space])
        mid = [i for i, a in enumerate(alphas) if abs(a - 0.5) < 1e-9]
        lines += [_table(["pair", "path", "distance"] + [f"a={a:g}" for a in alphas], rows), ""]
        if mid:
            w = statistics.fmean(p.weight_space[mid[0]] for p in result.interpolation)
            z = statistics.fmean(p.latent_space[mid[0]] for p in result.interpolation)
            lines += [f"Midpoints, mean over pairs: weight space {w:.4f}, latent space {z:.4f}.", ""]
    return "\n".join(lines)


def _targets_markdown(result: ZooExperimentResult) -> list[str]:
    """The issue-15 targets as a table of value ± spread, threshold and verdict."""
    if not result.targets:
        return []
    rows = []
    for name in ("heldout_reconstruction", "generated_vs_population", "generated_minus_noise", "latent_midpoints"):
        t = result.targets.get(name)
        if not t:
            continue
        points = name == "generated_minus_noise"
        value = (
            f"{100 * t['value']:+.1f} ± {100 * t['std']:.1f} points"
            if points
            else f"{t['value']:.1%} ± {t['std']:.1%}"
        )
        threshold = f"{100 * t['threshold']:+.0f} points" if points else f"{t['threshold']:.0%}"
        verdict = (
            ("met, beyond the spread" if t["beyond_spread"] else "met, within the spread") if t["met"] else "not met"
        )
        rows.append([t["what"], value, threshold, verdict])
    lines = [
        "## Targets (issue 15, in distribution)",
        "",
        _table(["target", "measured", "threshold", "verdict"], rows),
        "",
    ]
    frontier = result.targets.get("frontier")
    if frontier:
        lines += [f"Frontier ({frontier['what']}): {'met' if frontier['met'] else 'not met'}.", ""]
    if "weight_midpoints" in result.targets:
        lines += [
            f"Weight-space midpoints of the same aligned pairs (no autoencoder): "
            f"{result.targets['weight_midpoints']:.1%} of the population mean.",
            "",
        ]
    return lines
