"""The selection step: score candidates on labelled reference data and keep the best (SANE's bootstrap selection).

Separate from any sampler, so best-of-N applies equally to every sampler and to the noise baselines:
:meth:`CandidateSelector.score` materialises each candidate (decode, BatchNorm calibration), embeds the reference
images with the frozen model (pooled pre-logits features) and scores them with :func:`probe_score`, a 2-fold
nearest-class-mean probe; :meth:`CandidateSelector.select` keeps the ``keep`` best (ties keep their drawing order).

Example:
    >>> import timm, torch
    >>> net = timm.create_model("test_resnet", in_chans=4, num_classes=2).eval()
    >>> x, y = torch.randn(8, 4, 32, 32), torch.tensor([0, 1] * 4)
    >>> 0.0 <= probe_score(net, x, y) <= 1.0
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from geosane_hf.generation.samplers import Candidate, SamplingContext

__all__ = ["CandidateSelector", "probe_score"]

Reference = tuple[torch.Tensor, torch.Tensor]  # (images [M, C, H, W], labels [M])


@torch.no_grad()
def probe_score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 16) -> float:
    """2-fold nearest-class-mean accuracy of the model's pooled features on a labelled reference set.

    Args:
        model: A timm model (``forward_features`` / ``forward_head(pre_logits=True)``) in eval mode.
        images: ``[M, C, H, W]``.
        labels: ``[M]`` class ids.
        batch_size: Images per forward pass.

    Returns:
        Accuracy in [0, 1]; 0 when the features are not finite.
    """
    device = next(model.parameters()).device
    feats = []
    for batch in images.split(batch_size):
        x = model.forward_features(batch.to(device))
        feats.append(model.forward_head(x, pre_logits=True).flatten(1).float().cpu())
    f = torch.cat(feats)  # [M, D]
    f = torch.nn.functional.normalize(f - f.mean(0), dim=1)
    if not torch.isfinite(f).all():
        return 0.0
    half = torch.arange(f.shape[0]) % 2 == 0
    correct = 0
    for fit, test in ((half, ~half), (~half, half)):
        classes = labels[fit].unique()
        centres = torch.stack([f[fit][labels[fit] == c].mean(0) for c in classes])  # [K, D]
        predicted = classes[torch.cdist(f[test], centres).argmin(1)]
        correct += int((predicted == labels[test]).sum())
    return correct / f.shape[0]


class CandidateSelector:
    """Scores candidates on reference data with a frozen-feature probe and keeps the best.

    Args:
        reference: ``(images [M, C, H, W], labels [M])``, or a callable that returns them on first use (the
            pipeline passes one that reads the packaged Landsat-8 cloud patches of the target's bands).
        score_fn: ``(model, images, labels) -> float``, higher is better (default :func:`probe_score`).
    """

    def __init__(
        self,
        reference: Reference | Callable[[], Reference] | None = None,
        score_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], float] = probe_score,
    ) -> None:
        self._reference = reference
        self.score_fn = score_fn

    @property
    def reference(self) -> Reference:
        """The reference set (loaded on first use)."""
        if callable(self._reference):
            self._reference = self._reference()
        if self._reference is None:
            raise ValueError("expected reference=(images, labels) for scoring candidates, got None")
        images, labels = self._reference
        return images, labels.long()

    def score(self, ctx: SamplingContext, candidates: Sequence[Candidate]) -> list[float]:
        """Materialises and scores each candidate (one model in memory at a time); sets ``candidate.score``."""
        scores = []
        for candidate in candidates:
            net = ctx.materialise(candidate)
            with ctx.timer("score"):
                images, labels = self.reference
                candidate.score = float(self.score_fn(net, images, labels))
            del net
            scores.append(candidate.score)
        return scores

    def select(self, ctx: SamplingContext, candidates: Sequence[Candidate], keep: int) -> list[Candidate]:
        """The ``keep`` best candidates, best first (scored first when they have no score yet)."""
        unscored = [c for c in candidates if c.score is None]
        if unscored:
            self.score(ctx, unscored)
        return sorted(candidates, key=lambda c: -c.score)[:keep]
