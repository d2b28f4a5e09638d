"""Per-layer standardisation of weight tokens (SANE's per-layer normalisation, on our token format).

Raw weights differ in scale by orders of magnitude inside one model: BatchNorm running variances of 10-1000 next
to conv weights of 0.01. A model trained on raw tokens with GeoSANE's one-scalar-pair "masked loss normalisation"
spends its capacity on the large values and reconstructs conv weights no better than their mean (measured on the
offline demo collection: held-out R^2 0.74 on BN statistics, -0.07 on conv weights). SANE standardises every layer
before tokenizing and undoes it after decoding; we do the same on tokens:

- the *layer* of a token is its position column 1 (the tokenizer gives every tensor, or weight + appended bias, its
  own layer index), so the statistics need only the tokens, mask and positions of one whole model;
- per layer, mean and standard deviation over its real (masked-in) values, computed in float64; a layer with
  (numerically) constant values gets std 1, so it is only centred (BatchNorm weights that are all 1.0 stay exact);
- ``standardize`` maps real values to ``(v - mean) / std`` and padding to 0; ``destandardize`` inverts it.

A model with ``config.token_normalization == "per-layer"`` is trained on standardised tokens (``training/data.py``)
and generation standardises the prompt with its own statistics and maps the decoded tokens back with them: the
autoencoder learns each layer's structure, the prompt supplies each layer's first two moments.

Example:
    >>> import torch
    >>> tokens = torch.tensor([[1.0, 3.0], [100.0, 300.0]])
    >>> mask = torch.ones(2, 2, dtype=torch.bool)
    >>> positions = torch.tensor([[0, 0, 0], [1, 1, 0]])
    >>> stats = layer_stats(tokens, mask, positions)
    >>> standardize(tokens, mask, stats)
    tensor([[-1.,  1.],
            [-1.,  1.]])
    >>> torch.equal(destandardize(standardize(tokens, mask, stats), mask, stats), tokens)
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["NORMALIZATIONS", "LayerStats", "destandardize", "layer_stats", "standardize"]

NORMALIZATIONS = ("none", "per-layer")
MIN_STD = 1e-8  # below this (relative to max(1, |mean|)) a layer is treated as constant: std 1


@dataclass
class LayerStats:
    """Per-token statistics of the layer each token belongs to.

    Attributes:
        mean: ``[N]`` float64 mean of the token's layer (real values only).
        std: ``[N]`` float64 standard deviation of the token's layer (1 for constant layers).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def to(self, device: torch.device | str) -> LayerStats:
        return LayerStats(self.mean.to(device), self.std.to(device))

    def window(self, start: int, length: int) -> LayerStats:
        """The statistics of tokens ``start:start + length``."""
        return LayerStats(self.mean[start : start + length], self.std[start : start + length])


def layer_stats(tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> LayerStats:
    """Mean and std of every layer over its real values, broadcast to its tokens.

    Args:
        tokens: ``[N, T]`` token values of one whole model.
        mask: ``[N, T]`` True for real values.
        positions: ``[N, 3]`` positions ``(n, layer, j)``; column 1 groups tokens into layers.

    Returns:
        :class:`LayerStats` with ``[N]`` float64 tensors.

    Raises:
        ValueError: shapes that do not match, or non-finite values.
    """
    if tokens.dim() != 2 or mask.shape != tokens.shape or positions.shape != (tokens.shape[0], 3):
        raise ValueError(
            f"expected tokens [N, T], mask [N, T] and positions [N, 3], got {tuple(tokens.shape)}, "
            f"{tuple(mask.shape)}, {tuple(positions.shape)}"
        )
    layers = positions[:, 1].long()  # [N]
    _, group = torch.unique(layers, return_inverse=True)  # [N] dense layer ids
    num_groups = int(group.max()) + 1 if group.numel() else 0
    values = torch.where(mask, tokens.double(), 0.0)  # [N, T]
    if not torch.isfinite(values).all():
        raise ValueError("expected finite token values to standardise, got NaN or inf; check the checkpoint")
    count = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, group, mask.sum(1, dtype=torch.float64))
    total = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, group, values.sum(1))
    mean = total / count.clamp_min(1)  # [G]
    centred = torch.where(mask, values - mean[group][:, None], 0.0)  # [N, T], two-pass for accuracy
    square = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, group, centred.square().sum(1))
    std = (square / count.clamp_min(1)).sqrt()  # [G]
    constant = std <= MIN_STD * mean.abs().clamp_min(1.0)
    std = torch.where(constant, torch.ones_like(std), std)
    return LayerStats(mean[group], std[group])


def standardize(tokens: torch.Tensor, mask: torch.Tensor, stats: LayerStats) -> torch.Tensor:
    """``(v - mean) / std`` on real values, 0 on padding; same dtype as ``tokens``. Shapes ``[..., N, T]``."""
    mean = stats.mean.to(tokens.device)[..., None]  # [N, 1]
    std = stats.std.to(tokens.device)[..., None]
    out = (tokens.double() - mean) / std
    return torch.where(mask, out, 0.0).to(tokens.dtype)


def destandardize(tokens: torch.Tensor, mask: torch.Tensor, stats: LayerStats) -> torch.Tensor:
    """The inverse of :func:`standardize`: ``v * std + mean`` on real values, 0 on padding."""
    mean = stats.mean.to(tokens.device)[..., None]  # [N, 1]
    std = stats.std.to(tokens.device)[..., None]
    out = tokens.double() * std + mean
    return torch.where(mask, out, 0.0).to(tokens.dtype)
