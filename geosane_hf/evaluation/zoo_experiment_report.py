"""Markdown, JSON and figures of the zoo experiment (:mod:`geosane_hf.evaluation.zoo_experiment`).

Files (written atomically: temp file, then rename):

- ``zoo_experiment.json``: :meth:`ZooExperimentResult.to_dict` (every scored model, the curve, the pairs);
- ``zoo_experiment.md``: the tables;
- ``noise_curve.png``: anchor + noise accuracy vs L2 distance, with the generated models and matched-noise models
  as points on the same axes;
- ``interpolation.png``: accuracy along alpha for weight-space and latent-space paths.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from geosane_hf.atomic_io import write_text

if TYPE_CHECKING:
    from geosane_hf.evaluation.zoo_experiment import ZooExperimentResult

__all__ = ["render_markdown", "write_report"]

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
        f"Sampler `{cfg['sampler']}`, noise scale {cfg['noise_scale']} (relative to the anchors' latent std), "
        f"{cfg['num_samples']} samples per seed, seeds {cfg['seeds']}. BatchNorm: {result.training_info['bn']}"
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
        "## Anchor + noise vs distance",
        "",
        f"Anchors {', '.join(f'`{a}`' for a in result.distances['curve_anchors'])} (most often nearest to a generated "
        f"model), {cfg['curve_draws']} draws each; zero-shot {metric}, same BN treatment. ![noise curve](noise_curve.png)",
        "",
        _table(
            ["distance", f"{metric} mean ± std", "models"],
            [[_f(p.distance, 3), _pm(p.mean, p.std), str(p.count)] for p in result.curve],
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


def _atomic_savefig(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _plots(result: ZooExperimentResult, out_dir: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    files = {}
    metric = result.metric
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    xs = [p.distance for p in result.curve]
    ys = [p.mean for p in result.curve]
    sd = [p.std for p in result.curve]
    ax.plot(xs, ys, "-o", color="tab:gray", label="anchor + noise (mean ± std)")
    ax.fill_between(
        xs,
        [y - s for y, s in zip(ys, sd, strict=True)],
        [y + s for y, s in zip(ys, sd, strict=True)],
        color="tab:gray",
        alpha=0.2,
    )
    for method, colour, marker in (
        ("generated", "tab:red", "o"),
        ("matched_noise", "tab:blue", "x"),
        ("reconstruction", "tab:green", "^"),
    ):
        pts = [(s.distance, s.zero_shot) for s in result.scores if s.method == method and s.distance is not None]
        if method == "reconstruction":
            pts = sorted(set(pts))
        if pts:
            ax.scatter(
                [p[0] for p in pts],
                [p[1] for p in pts],
                c=colour,
                marker=marker,
                s=22,
                alpha=0.8,
                label=method.replace("_", " "),
            )
    population = result.method("population")
    if population:
        ax.axhline(population.zero_shot_median, color="k", ls="--", lw=1, label="population median")
    init = result.method("random_init")
    if init:
        ax.axhline(init.zero_shot_mean, color="tab:orange", ls=":", lw=1, label="random init mean")
    ax.set_xlabel("L2 distance to the nearest anchor (parameters)")
    ax.set_ylabel(f"zero-shot test {metric}")
    ax.set_title(f"{result.architecture} {result.architecture_kwargs.get('width', '')}: noise vs generated")
    ax.legend(fontsize=7, loc="lower left")
    path = out_dir / "noise_curve.png"
    _atomic_savefig(fig, path)
    plt.close(fig)
    files["noise_curve_png"] = str(path)

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if result.interpolation:
        alphas = result.interpolation[0].alphas
        for path_name, colour in (("weight_space", "tab:blue"), ("latent_space", "tab:red")):
            series = [getattr(p, path_name) for p in result.interpolation]
            for values in series:
                ax.plot(alphas, values, color=colour, alpha=0.25, lw=1)
            mean = [statistics.fmean(v[i] for v in series) for i in range(len(alphas))]
            ax.plot(alphas, mean, "-o", color=colour, lw=2, label=path_name.replace("_", " ") + " (mean)")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no pair of anchors from different runs", ha="center", transform=ax.transAxes)
    ax.set_xlabel("alpha (0 = member A, 1 = member B)")
    ax.set_ylabel(f"zero-shot test {metric}")
    ax.set_title("interpolation: weight space vs latent space")
    path = out_dir / "interpolation.png"
    _atomic_savefig(fig, path)
    plt.close(fig)
    files["interpolation_png"] = str(path)
    return files


def write_report(result: ZooExperimentResult, out_dir: Path) -> dict[str, str]:
    """Writes JSON, Markdown and the two figures into `out_dir` (created); returns {kind: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = _plots(result, out_dir)
    files["markdown"] = str(out_dir / "zoo_experiment.md")
    files["json"] = str(out_dir / "zoo_experiment.json")
    result.files = dict(sorted(files.items()))
    write_text(out_dir / "zoo_experiment.md", render_markdown(result) + "\n")
    write_text(out_dir / "zoo_experiment.json", json.dumps(result.to_dict(), indent=1) + "\n")
    return result.files
