"""2-D projections (UMAP, PCA fallback) and the latent-space figure shared by ``geosane embed`` and the Space.

UMAP (umap-learn) needs a handful of points; below :data:`MIN_UMAP_POINTS`, or when umap-learn is not
installed, the projection falls back to PCA and says so in :attr:`Projection.method` (the figure's axis labels
and title name the method, so a PCA picture is never mistaken for a UMAP one).

Example:
    >>> import torch
    >>> p = project_2d(torch.randn(6, 8), method="pca")
    >>> p.coords.shape, p.method
    ((6, 2), 'PCA')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["MIN_UMAP_POINTS", "Projection", "convergence_figure", "latent_figure", "project_2d", "save_figure"]

MIN_UMAP_POINTS = 8


@dataclass
class Projection:
    """A 2-D projection.

    Attributes:
        coords: ``[M, 2]`` float array.
        method: ``"UMAP"`` or ``"PCA"``.
        note: Why the method was chosen when it is not the one asked for, else "".
    """

    coords: np.ndarray
    method: str
    note: str = ""


def _pca(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(0, keepdims=True)  # [M, L]
    if centred.shape[0] < 2:
        return np.zeros((centred.shape[0], 2))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # vt [K, L]
    coords = centred @ vt[:2].T  # [M, <=2]
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords


def project_2d(vectors: torch.Tensor | np.ndarray, *, method: str = "umap", seed: int = 0) -> Projection:
    """Projects ``[M, L]`` vectors to ``[M, 2]`` with UMAP, or PCA when UMAP cannot run (see module doc).

    Raises:
        ValueError: ``method`` is not ``"umap"`` or ``"pca"``, or ``vectors`` is not 2-D.
    """
    x = vectors.detach().cpu().numpy() if isinstance(vectors, torch.Tensor) else np.asarray(vectors)
    if x.ndim != 2:
        raise ValueError(f"expected vectors [M, L], got shape {tuple(x.shape)}")
    x = x.astype(np.float64)
    if method not in ("umap", "pca"):
        raise ValueError(f"expected method 'umap' or 'pca', got {method!r}")
    if method == "pca":
        return Projection(_pca(x), "PCA")
    if x.shape[0] < MIN_UMAP_POINTS:
        return Projection(_pca(x), "PCA", f"PCA fallback: UMAP needs >= {MIN_UMAP_POINTS} models, got {x.shape[0]}")
    try:
        import umap
    except ImportError as error:  # numba build problems surface here too
        return Projection(_pca(x), "PCA", f"PCA fallback: umap-learn unavailable ({error})")
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, x.shape[0] - 1), random_state=seed, init="random")
    return Projection(np.asarray(reducer.fit_transform(x)), "UMAP")


def latent_figure(
    projection: Projection,
    architectures: Sequence[str],
    modalities: Sequence[str],
    *,
    highlight: Sequence[int] = (),
    highlight_label: str = "generated",
    title: str = "GeoSANE latent space",
):
    """A matplotlib figure with two panels (coloured by architecture, by modality); ``highlight`` rows as stars.

    Example:
        >>> p = project_2d(np.random.rand(4, 3), method="pca")
        >>> fig = latent_figure(p, ["a", "a", "b", "b"], ["S2", "L8", "S2", "L8"], highlight=[3])
        >>> len(fig.axes)
        2
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coords = projection.coords
    marked = set(highlight)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
    for ax, labels, what in ((axes[0], architectures, "architecture"), (axes[1], modalities, "modality")):
        names = sorted({labels[i] for i in range(len(labels)) if i not in marked})
        cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
        for k, name in enumerate(names):
            rows = [i for i in range(len(labels)) if labels[i] == name and i not in marked]
            ax.scatter(coords[rows, 0], coords[rows, 1], s=40, color=cmap(k % cmap.N), label=name, alpha=0.85)
        if marked:
            rows = sorted(marked)
            ax.scatter(
                coords[rows, 0], coords[rows, 1], s=260, marker="*", color="black", label=highlight_label, zorder=5
            )
        ax.set_title(f"by {what}")
        ax.set_xlabel(f"{projection.method} 1")
        ax.set_ylabel(f"{projection.method} 2")
        ax.legend(fontsize=7, loc="best", framealpha=0.7)
    suffix = f" ({projection.note})" if projection.note else ""
    fig.suptitle(f"{title}\n{projection.method} of mean-pooled latents{suffix}", fontsize=10)
    return fig


def convergence_figure(
    curves: Mapping[str, Sequence[Sequence[float | None]]],
    metric: str,
    *,
    title: str = "Convergence",
):
    """Test metric per epoch, one line (mean over seeds) and a +- sample-std band per start.

    Args:
        curves: ``{start: [per seed: [metric before training, after epoch 1, ...]]}``; None values are skipped.
        metric: The y-axis label.
        title: The figure title.

    Example:
        >>> fig = convergence_figure({"scratch": [[0.1, 0.5, 0.6], [0.2, 0.4, 0.7]], "prompt": [[0.3, 0.7, 0.8]]},
        ...                          "f1_macro")
        >>> len(fig.axes[0].lines)
        2
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    cmap = plt.get_cmap("tab10")  # beyond 10 starts: the same colours dashed (tab20's paired shades look alike)
    for k, (name, runs) in enumerate(curves.items()):
        length = max((len(r) for r in runs), default=0)
        if length == 0:
            continue
        values = np.full((len(runs), length), np.nan)  # [seeds, epochs + 1]
        for i, run in enumerate(runs):
            values[i, : len(run)] = [np.nan if v is None else float(v) for v in run]
        counts = np.sum(~np.isnan(values), axis=0)  # [epochs + 1]
        mean = np.nanmean(np.where(counts > 0, values, 0.0), axis=0)
        centred = np.where(np.isnan(values), 0.0, values - mean)
        std = np.sqrt(np.sum(centred**2, axis=0) / np.maximum(counts - 1, 1))  # sample std (ddof=1), 0 for one seed
        epochs = np.arange(length)
        color, style = cmap(k % 10), ("-", "--", ":")[(k // 10) % 3]
        ax.plot(epochs, mean, style, marker="o", ms=3, color=color, label=f"{name} (n={len(runs)})")
        ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (0 = before fine-tuning)")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", framealpha=0.7)
    return fig


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Saves a figure as PNG atomically (temporary file, then rename) and closes it.

    Example:
        >>> import tempfile
        >>> fig = convergence_figure({"a": [[0.1, 0.2]]}, "mean_iou")
        >>> save_figure(fig, tempfile.mkdtemp() + "/c.png").suffix
        '.png'
    """
    import os

    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path
