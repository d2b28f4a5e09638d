"""Noise and averages: exact-norm Gaussian noise around a start (matched to a generated start's distance) and the
element-wise mean of checkpoints.

:func:`prompt_plus_noise` / :func:`checkpoint_plus_noise` add isotropic Gaussian noise of an exact L2 norm (the
"memorization" baseline of Zeng et al. 2025); :func:`matched_noise` puts the anchor + noise at exactly the distance of
a generated start from that anchor; :func:`checkpoint_average` averages checkpoints of one architecture.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch

from geosane_hf.evaluation.models import TargetArch
from geosane_hf.evaluation.starts.base import Start, StartError, _as_start, _classifier_keys, _is_stat

__all__ = [
    "checkpoint_average",
    "checkpoint_plus_noise",
    "lerp_state_dicts",
    "matched_noise",
    "noise_keys",
    "prompt_plus_noise",
    "weight_distance",
]


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


def matched_noise(
    anchor: Start, generated: Start, seed: int = 0, name: str = "matched_noise", *, per_tensor: bool = False
) -> Start:
    """`anchor` + isotropic noise at exactly the L2 distance between `generated` and `anchor` (heads excluded).

    The opponent of generated weights that matters (Zeng et al., 2025): if noise of the same size around the prompt
    (or the nearest training checkpoint) does as well, the generator has learned nothing beyond that anchor. With
    `per_tensor`, every tensor gets noise of exactly its own change's norm (the change's distribution over layers
    matched too, not only its total).

    >>> from geosane_hf.evaluation.starts import scratch
    >>> t = TargetArch("test_resnet", 4, 6)
    >>> a, g = scratch(t, 0), scratch(t, 1)
    >>> m = matched_noise(a, g)
    >>> round(m.provenance["distance"], 4) == round(m.provenance["matched_to"]["distance"], 4)
    True
    >>> p = matched_noise(a, g, per_tensor=True)
    >>> k = "conv1.0.weight"
    >>> round((p.state_dict[k] - a.state_dict[k]).norm().item(), 4) == round((g.state_dict[k] - a.state_dict[k]).norm().item(), 4)
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
    if not per_tensor:
        out = prompt_plus_noise(anchor, distance=distance, seed=seed, exclude=exclude, name=name)
        out.provenance["matched_to"] = {"start": generated.name, "distance": distance}
        return out
    generator = torch.Generator().manual_seed(seed)
    state = dict(anchor.state_dict)
    for k in keys:
        change = weight_distance(anchor.state_dict, generated.state_dict, [k])
        noise = torch.randn(state[k].shape, generator=generator, dtype=torch.float64)
        norm = float(noise.norm())
        state[k] = (anchor.state_dict[k].double() + noise * (change / norm if norm > 0 else 0.0)).to(state[k].dtype)
    provenance = {
        "method": name,
        "base": anchor.provenance,
        "distance": weight_distance(anchor.state_dict, state, keys),
        "per_tensor": True,
        "noised_tensors": len(keys),
        "seed": seed,
        "matched_to": {"start": generated.name, "distance": distance},
    }
    return Start(name, anchor.target, state, provenance)


def checkpoint_plus_noise(base: Start | Mapping[str, torch.Tensor], **kwargs: Any) -> Start:
    """A training-collection checkpoint + exact-norm Gaussian noise (same as `prompt_plus_noise`, other name)."""
    kwargs.setdefault("name", "checkpoint_plus_noise")
    return prompt_plus_noise(base, **kwargs)


def lerp_state_dicts(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) a + alpha b`` per floating tensor (in float64, back to `a`'s dtype); integer tensors from `a`.

    >>> lerp_state_dicts({"w": torch.zeros(2), "n": torch.tensor(3)}, {"w": torch.ones(2), "n": torch.tensor(5)}, 0.25)
    {'w': tensor([0.2500, 0.2500]), 'n': tensor(3)}

    Raises:
        StartError: The two state dicts differ in keys or in a tensor's shape.
    """
    if set(a) != set(b):
        raise StartError(
            f"expected two state dicts with the same keys to interpolate, got {sorted(set(a) ^ set(b))[:5]} in only "
            "one of them; interpolate checkpoints of the same architecture (map them onto it first)"
        )
    shapes = [k for k in a if a[k].shape != b[k].shape]
    if shapes:
        raise StartError(
            f"expected the same tensor shapes to interpolate, got {shapes[0]}: {tuple(a[shapes[0]].shape)} vs "
            f"{tuple(b[shapes[0]].shape)} ({len(shapes)} tensors differ)"
        )
    return {
        k: ((1 - alpha) * a[k].double() + alpha * b[k].double()).to(a[k].dtype)
        if a[k].is_floating_point()
        else a[k].clone()
        for k in a
    }


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
