"""The :class:`Start` (initial weights for a target architecture, with provenance), its error, the helpers every
start shares (timm's head and stem keys, strict-shape checks, head re-initialisation) and :func:`scratch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from geosane_hf.evaluation.models import TargetArch
from geosane_hf.task_data import EvaluationError

__all__ = ["Start", "StartError", "reinit_head", "scratch"]


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


def _as_start(base: Start | Mapping[str, torch.Tensor]) -> Start:
    if isinstance(base, Start):
        return base
    return Start("state_dict", None, dict(base), {"method": "given"})
