"""Starts from a larger teacher of the same family: weight selection, magnitude pruning and distillation.

- :func:`weight_selection`: Xu et al., ICLR 2024, "Initializing Models with Larger Ones": the teacher's tensors sliced
  down to the target (first-N layer selection + uniform element selection).
- :func:`magnitude_pruning`: unstructured magnitude pruning of the larger model (global or layerwise) down to the
  small target's number of weights; the masks are kept during fine-tuning.
- :func:`distillation`: a scratch student plus a trained teacher; the fine-tuning loop adds the KD loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import nn

from geosane_hf.evaluation.models import TargetArch
from geosane_hf.evaluation.starts.base import (
    Start,
    StartError,
    _as_start,
    _check_target,
    _classifier_keys,
    _first_conv_key,
    reinit_head,
    scratch,
)
from geosane_hf.evaluation.starts.prompt import adapt_bands

__all__ = [
    "distillation",
    "magnitude_pruning",
    "matching_sparsity",
    "prunable_keys",
    "select_elements",
    "uniform_indices",
    "weight_selection",
]


# ---------------------------------------------------------------------------------------------------- weight selection


def uniform_indices(teacher_size: int, student_size: int) -> torch.Tensor:
    """Evenly spaced indices selecting `student_size` of `teacher_size` positions (Xu et al.'s uniform selection).

    When the teacher size is a multiple of the student's, every k-th element from 0; else rounded linspace over
    [0, teacher_size - 1]. Depends on the sizes only, so consecutive layers select consistent channels.

    >>> uniform_indices(8, 4).tolist(), uniform_indices(5, 3).tolist()
    ([0, 2, 4, 6], [0, 2, 4])
    """
    if student_size > teacher_size or student_size < 1:
        raise StartError(f"expected 1 <= student size <= teacher size, got {student_size} and {teacher_size}")
    if teacher_size % student_size == 0:
        return torch.arange(student_size) * (teacher_size // student_size)
    return torch.round(torch.linspace(0, teacher_size - 1, student_size)).long()


def select_elements(teacher: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The teacher tensor sliced to `shape` with `uniform_indices` along every dimension.

    >>> select_elements(torch.arange(16.0).reshape(4, 4), (2, 2)).tolist()
    [[0.0, 2.0], [8.0, 10.0]]
    """
    if teacher.dim() != len(shape):
        raise StartError(f"expected a teacher tensor with {len(shape)} dims, got shape {tuple(teacher.shape)}")
    out = teacher
    for dim, size in enumerate(shape):
        if out.shape[dim] < size:
            raise StartError(
                f"expected a teacher at least as large as the student along dim {dim}, got {tuple(teacher.shape)} for "
                f"student {tuple(shape)}"
            )
        out = out.index_select(dim, uniform_indices(out.shape[dim], size))
    return out.clone()


def weight_selection(
    teacher: Start | Mapping[str, torch.Tensor], target: TargetArch, seed: int = 0, teacher_name: str | None = None
) -> Start:
    """Weight selection (Xu et al., ICLR 2024): initialise a small model from a larger one of the same family.

    Layer selection: "first-N" by position in depth, through timm's names (a student block ``blocks.s.b`` takes the
    teacher's ``blocks.s.b``: the first blocks of each stage). Component mapping: the same tensor (conv, norm,
    BatchNorm statistics) by name. Element selection: uniform (evenly spaced) indices along every dimension
    (`uniform_indices`), the same for every layer of a given size, so channels stay consistent across layers.
    The stem is band-adapted first when the teacher's bands differ; the head is re-initialised.

    Supported: same-family timm pairs whose student names are a subset of the teacher's with no dimension larger,
    e.g. ``mobilenetv2_100`` -> ``mobilenetv2_050``, ``tf_efficientnet_lite2`` -> ``tf_efficientnet_lite0``,
    ``resnet18`` -> ``resnet10t`` is not (different stem). Other pairs raise StartError.

    >>> big = scratch(TargetArch("mobilenetv2_100", 4, 6)).state_dict
    >>> small = weight_selection(big, TargetArch("mobilenetv2_050", 4, 6))
    >>> small.state_dict["conv_stem.weight"].shape
    torch.Size([16, 4, 3, 3])
    """
    src = _as_start(teacher)
    student = target.create()
    own = student.state_dict()
    head = set(_classifier_keys(student))
    stem = _first_conv_key(student)
    sd = dict(src.state_dict)
    if stem in sd and sd[stem].dim() == 4 and sd[stem].shape[1] != target.in_chans:
        sd = adapt_bands(sd, stem, target.in_chans)
    missing = [k for k in own if k not in head and k not in sd]
    if missing:
        raise StartError(
            f"expected the teacher to have every non-head tensor of {target.name} (same family, at least as deep), "
            f"got {len(missing)} missing, e.g. {missing[:3]}"
        )
    out = {}
    for k, ref in own.items():
        if k in head:
            continue
        value = sd[k]
        if ref.dim() == 0:
            out[k] = value.clone()
            continue
        if ref.dim() == 4 and value.shape[2:] != ref.shape[2:] and ref.shape[2] > value.shape[2]:
            raise StartError(
                f"expected teacher kernels at least {tuple(ref.shape[2:])} for {k}, got {tuple(value.shape)}"
            )
        out[k] = select_elements(value, ref.shape).to(ref.dtype)
    out = reinit_head(out, target, seed)
    return Start(
        "weight_selection",
        target,
        _check_target(out, target, "the selected weights"),
        {
            "method": "weight_selection",
            "teacher": teacher_name or src.provenance,
            "layer_selection": "first-N by name",
            "element_selection": "uniform",
            "head": f"re-initialised (seed {seed})",
        },
    )


# ---------------------------------------------------------------------------------------------------- pruning


def prunable_keys(model: nn.Module) -> list[str]:
    """Conv and linear weights (>= 2-D, head excluded): what magnitude pruning removes and counts."""
    head = set(_classifier_keys(model))
    return [k for k, v in model.state_dict().items() if k.endswith("weight") and v.dim() >= 2 and k not in head]


def matching_sparsity(large: TargetArch, small: TargetArch) -> float:
    """Sparsity at which the large model keeps as many prunable weights as the small one has.

    >>> round(matching_sparsity(TargetArch("mobilenetv2_100", 4, 6), TargetArch("mobilenetv2_050", 4, 6)), 2)
    0.69
    """
    big, little = large.create(), small.create()
    n_big = sum(big.state_dict()[k].numel() for k in prunable_keys(big))
    n_small = sum(little.state_dict()[k].numel() for k in prunable_keys(little))
    if n_small >= n_big:
        raise StartError(f"expected the large model to have more prunable weights, got {n_big} <= {n_small}")
    return 1.0 - n_small / n_big


def magnitude_pruning(
    large: Start,
    sparsity: float,
    scope: Literal["global", "layerwise"] = "global",
    seed: int = 0,
) -> Start:
    """Unstructured magnitude pruning of a larger model's conv/linear weights (head excluded, then re-initialised).

    Exactly round(sparsity * n) weights are zeroed: the smallest |w| over all prunable tensors together ("global")
    or in each tensor ("layerwise"). The returned Start keeps the LARGE architecture and carries `keep_masks`, which
    the fine-tuning loop re-applies after every step (prune, then fine-tune with the mask fixed). Use
    `matching_sparsity(large, small)` to keep as many weights as the small target has. Structured channel pruning is
    not implemented (weight_selection is its uniform-index counterpart).

    >>> big = scratch(TargetArch("test_resnet", 4, 6))
    >>> pruned = magnitude_pruning(big, 0.5)
    >>> round(pruned.provenance["achieved_sparsity"], 3)
    0.5
    """
    if large.target is None:
        raise StartError("expected a Start with a target architecture to prune, got target=None")
    if not 0.0 <= sparsity < 1.0:
        raise StartError(f"expected 0 <= sparsity < 1, got {sparsity}")
    if scope not in ("global", "layerwise"):
        raise StartError(f"expected scope 'global' or 'layerwise', got {scope!r}")
    model = large.target.create()
    keys = prunable_keys(model)
    sd = reinit_head(large.state_dict, large.target, seed)
    masks: dict[str, torch.Tensor] = {}
    if scope == "global":
        flat = torch.cat([sd[k].detach().abs().reshape(-1).float() for k in keys])  # [n]
        k_prune = round(sparsity * flat.numel())
        keep = torch.ones(flat.numel())
        if k_prune:
            keep[torch.topk(flat, k_prune, largest=False).indices] = 0.0
        offset = 0
        for k in keys:
            n = sd[k].numel()
            masks[k] = keep[offset : offset + n].reshape(sd[k].shape)
            offset += n
    else:
        for k in keys:
            flat = sd[k].detach().abs().reshape(-1).float()
            keep = torch.ones(flat.numel())
            k_prune = round(sparsity * flat.numel())
            if k_prune:
                keep[torch.topk(flat, k_prune, largest=False).indices] = 0.0
            masks[k] = keep.reshape(sd[k].shape)
    out = dict(sd)
    for k, m in masks.items():
        out[k] = sd[k] * m.to(sd[k].dtype)
    total = sum(m.numel() for m in masks.values())
    zeros = sum(int((m == 0).sum()) for m in masks.values())
    return Start(
        "magnitude_pruning",
        large.target,
        out,
        {
            "method": "magnitude_pruning",
            "base": large.provenance,
            "scope": scope,
            "requested_sparsity": sparsity,
            "achieved_sparsity": zeros / total,
            "kept_weights": total - zeros,
            "pruned_tensors": len(keys),
        },
        keep_masks=masks,
    )


# ---------------------------------------------------------------------------------------------------- distillation


def distillation(target: TargetArch, teacher: nn.Module, seed: int = 0, teacher_name: str = "teacher") -> Start:
    """A student from scratch that the fine-tuning loop trains with a KD loss from `teacher` (a trained task model).

    >>> t = TargetArch("test_resnet", 4, 6)
    >>> distillation(t, scratch(t).build()).teacher is not None
    True
    """
    base = scratch(target, seed)
    teacher.eval()
    return Start(
        "distillation",
        target,
        base.state_dict,
        {"method": "distillation", "student_init": base.provenance, "teacher": teacher_name},
        teacher=teacher,
    )
