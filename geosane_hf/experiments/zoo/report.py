"""Markdown, JSON and figures of the zoo experiment (:mod:`geosane_hf.experiments.zoo.run`).

Files (written atomically: temp file, then rename):

- ``zoo_experiment.json``: :meth:`ZooExperimentResult.to_dict` (every scored model, the curve, the pairs);
- ``zoo_experiment.md``: the tables;
- ``quality_novelty.png``: generated models' accuracy vs their distance to the nearest training member, one point
  per interpolation weight, and matched-distance noise at the same distances;
- ``interpolation.png``: accuracy along alpha for weight-space and latent-space paths.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from geosane_hf.atomic_io import write_text
from geosane_hf.experiments.zoo.results import ZooExperimentResult, render_markdown

__all__ = ["render_markdown", "write_report"]  # render_markdown: re-exported from .results


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
    curve = sorted(result.curve, key=lambda p: p.distance)
    xs = [p.distance for p in curve]
    for mean_name, std_name, colour, label in (
        ("generated_mean", "generated_std", "tab:red", "generated (mean ± std)"),
        ("noise_mean", "noise_std", "tab:blue", "matched-distance noise (mean ± std)"),
    ):
        ys = [getattr(p, mean_name) for p in curve]
        sd = [getattr(p, std_name) for p in curve]
        ax.plot(xs, ys, "-o", color=colour, label=label)
        ax.fill_between(
            xs,
            [y - s for y, s in zip(ys, sd, strict=True)],
            [y + s for y, s in zip(ys, sd, strict=True)],
            color=colour,
            alpha=0.15,
        )
    for point in result.curve:
        ax.annotate(
            f"t={point.interpolation:g}",
            (point.distance, point.generated_mean),
            fontsize=7,
            textcoords="offset points",
            xytext=(3, 4),
        )
    population = result.method("population")
    if population:
        mean = population.zero_shot_mean
        ax.axhline(mean, color="k", ls="--", lw=1, label="population mean")
        ax.axhline(0.95 * mean, color="k", ls=":", lw=1, label="95% / 90% of the mean")
        ax.axhline(0.90 * mean, color="k", ls=":", lw=1)
    ax.set_xlabel("L2 distance to the nearest training member (aligned frame)")
    ax.set_ylabel(f"zero-shot test {metric}")
    ax.set_title(f"{result.architecture} {result.architecture_kwargs.get('width', '')}: quality vs novelty")
    ax.legend(fontsize=7, loc="lower left")
    path = out_dir / "quality_novelty.png"
    _atomic_savefig(fig, path)
    plt.close(fig)
    files["quality_novelty_png"] = str(path)

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
