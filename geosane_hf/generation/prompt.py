"""Prompt step: load a prompt (timm name, checkpoint, Hub id or module) and fit it to the target timm model.

The prompt is fitted to the target (``in_chans``, ``num_classes``) *before* tokenizing, so the tokenized layout is
the target's own and anchors of the same architecture in a collection match it by layout fingerprint: the stem is
band-adapted (:mod:`.bands`), the classifier comes from the target's seeded init. A prompt is never silently
replaced by random weights: missing tensors raise.

Example:
    >>> fitted, target = load_prompt("test_resnet", in_chans=4, num_classes=6, seed=0)
    >>> fitted.state_dict["conv1.0.weight"].shape[1], target.num_classes, fitted.notes["bands"]
    (4, 6, ['B2', 'B3', 'B4', 'B5'])
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosane_hf.generation.bands import BandAdaptationError, adapt_stem, default_bands
from geosane_hf.generation.errors import GenerationError

__all__ = [
    "GeneratedPrompt",
    "check_int",
    "fit_prompt",
    "head_prefixes",
    "instantiate",
    "load_prompt",
    "offload",
    "timm_model",
]


@dataclass
class GeneratedPrompt:
    """A prompt fitted to the target.

    Attributes:
        architecture: timm architecture name.
        source: Where the prompt weights came from.
        state_dict: The fitted state_dict (target shapes).
        notes: What was changed (band adaptation, head, keys taken from the target's init).
    """

    architecture: str
    source: str
    state_dict: dict[str, torch.Tensor]
    notes: dict[str, Any] = field(default_factory=dict)


def _meta_timm_model(architecture: str) -> nn.Module:
    """The architecture on the meta device (no memory, no init): for its config, keys and shapes only."""
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(architecture, pretrained=False)
    except Exception:  # a model whose __init__ needs real tensors: build it for real
        return timm_model(architecture, 0)


def offload(model: nn.Module) -> nn.Module | None:
    """Moves the model's state_dict tensors (parameters, persistent buffers) to the meta device, in place.

    The result is a skeleton that :func:`_instantiate` fills with ``load_state_dict(assign=True)`` (no init, no
    copy); non-persistent buffers (index tables ...) stay real. Returns None (and leaves the model alone) when two
    state_dict keys share one tensor: assigning would untie them.
    """
    state = model.state_dict(keep_vars=True)
    if len({id(t) for t in state.values()}) != len(state):
        return None
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None:
                module._parameters[name] = nn.Parameter(
                    torch.empty_like(param, device="meta"), requires_grad=param.requires_grad
                )
        for name, buffer in module._buffers.items():
            if buffer is not None and name not in module._non_persistent_buffers_set:
                module._buffers[name] = torch.empty_like(buffer, device="meta")
    return model


def instantiate(skeleton: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """A model of the skeleton's architecture whose tensors are ``state_dict``'s (shared, not copied), in eval."""
    net = copy.deepcopy(skeleton)
    net.load_state_dict(state_dict, strict=True, assign=True)
    return net.eval()


def check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GenerationError(f"expected {name} to be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise GenerationError(f"expected {name} >= {minimum}, got {value}")
    return value


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def timm_model(architecture: str, seed: int, **kwargs: Any) -> nn.Module:
    import timm

    try:
        with _seeded(seed):
            return timm.create_model(architecture, pretrained=False, **kwargs)
    except RuntimeError as error:
        near = ", ".join(timm.list_models(f"*{architecture.split('_')[0]}*")[:5])
        raise GenerationError(
            f"expected a timm architecture, got {architecture!r} ({error}); nearest: {near}"
        ) from error


def _raw_prompt(prompt: Any, architecture: str | None, seed: int) -> tuple[str, str, Mapping[str, torch.Tensor]]:
    """(architecture, source description, state_dict at the prompt's own shapes)."""
    if isinstance(prompt, nn.Module):
        arch = architecture or getattr(prompt, "pretrained_cfg", {}).get("architecture")
        if arch is None:
            raise GenerationError("expected a timm model as prompt module (or pass architecture=...), got none")
        return arch, f"module {type(prompt).__name__}", prompt.state_dict()
    if not isinstance(prompt, (str, Path)):
        raise GenerationError(f"expected a timm name, a path, a Hub id or an nn.Module as prompt, got {prompt!r}")
    text = str(prompt)
    import timm

    name = text[len("timm:") :] if text.startswith("timm:") else text
    if timm.is_model(name) and not Path(text).exists():
        from geosane_hf.packaged import IMAGENET_PROMPTS, imagenet_state_dict

        if name in IMAGENET_PROMPTS and not text.startswith("timm:"):
            try:
                return name, f"packaged ImageNet weights ({IMAGENET_PROMPTS[name]})", imagenet_state_dict(name)
            except (FileNotFoundError, ValueError):
                pass  # the weights package is not installed: fall back to a seeded random init
        return (
            name,
            f"timm:{name} (random init, seed {seed}; no offline ImageNet weights)",
            timm_model(name, seed).state_dict(),
        )
    if "/" not in name and "\\" not in name and not Path(text).exists() and "." not in name:
        import difflib

        near = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.5)
        raise GenerationError(
            f"expected a timm architecture, a checkpoint path or a Hub id as prompt, got {text!r}; nearest timm "
            f"names: {near or 'none'} (see timm.list_models('*pattern*'))"
        )
    from geosane_hf.checkpoints import load_checkpoint

    loaded = load_checkpoint(prompt)
    arch = architecture or loaded.metadata.architecture
    if not arch:
        raise GenerationError(
            f"expected to know the prompt's timm architecture, got none from {text!r}: pass architecture=... "
            "(or a folder/Hub repo with a timm config.json)"
        )
    return arch, str(loaded.metadata.source), loaded.state_dict


def stem_in_chans(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> tuple[str, int]:
    key = model.pretrained_cfg.get("first_conv")
    key = key[0] if isinstance(key, (list, tuple)) else key
    key = f"{key}.weight" if key else next(k for k, v in model.state_dict().items() if v.ndim == 4)
    return key, int(state_dict[key].shape[1]) if key in state_dict else 3


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    head = model.pretrained_cfg.get("classifier")
    return tuple(head) if isinstance(head, (list, tuple)) else ((head,) if head else ())


def fit_prompt(
    prompt: Any,
    *,
    architecture: str | None = None,
    in_chans: int | None = None,
    num_classes: int | None = None,
    bands: Sequence[str] | None = None,
    band_method: str = "wavelength",
    seed: int = 0,
    copy_tensors: bool = True,
) -> tuple[GeneratedPrompt, nn.Module]:
    """Fits a prompt's tensors to the target timm model (the prompt step of :class:`GeoSANEPipeline`).

    Args:
        prompt: timm name (packaged ImageNet weights when we ship them, else a seeded random init), a local
            checkpoint (file or folder), a Hub id, or an ``nn.Module``.
        architecture: timm architecture of a checkpoint prompt without a timm ``config.json``.
        in_chans / num_classes: Target bands and classes (default: the prompt's).
        bands: Target band names for the stem adaptation (default by count).
        band_method: Stem adaptation, see :mod:`.bands`.
        seed: Seeds the target's init (the head) and the band adaptation.
        copy_tensors: False lets the fitted state_dict share the prompt's unchanged tensors (read-only use inside
            the pipeline: one copy of the prompt less).

    Returns:
        ``(fitted prompt, target timm model with its seeded init)``.

    Raises:
        GenerationError: Unknown architecture, a prompt whose tensors do not fit it, ``in_chans`` < 1.
    """
    arch, source, raw = _raw_prompt(prompt, architecture, seed)
    probe = _meta_timm_model(arch)  # config, keys and shapes only
    stem_key, prompt_chans = stem_in_chans(raw, probe)
    in_chans = prompt_chans if in_chans is None else check_int("in_chans", in_chans, 1)
    heads = head_prefixes(probe)
    head_prefix = heads[0] if heads else None
    prompt_classes = int(raw[f"{head_prefix}.weight"].shape[0]) if f"{head_prefix}.weight" in raw else 1000
    num_classes = prompt_classes if num_classes is None else check_int("num_classes", num_classes, 0)
    target = timm_model(arch, seed, in_chans=in_chans, num_classes=num_classes)
    if bands is None and in_chans != prompt_chans:
        bands = default_bands(in_chans)
    notes: dict[str, Any] = {"bands": list(bands) if bands else None, "from_target_init": []}
    fitted: dict[str, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(seed)
    missing = []  # non-head tensors the prompt lacks: never silently replaced by the target's random init
    for key, init in target.state_dict().items():
        value = raw.get(key) if key in raw else None
        is_head = any(key.startswith(f"{prefix}.") for prefix in heads)
        if value is None and not is_head and not key.endswith("num_batches_tracked"):
            missing.append(key)
        if is_head or value is None:
            fitted[key] = init.clone()
            notes["from_target_init"].append(key)
        elif tuple(value.shape) == tuple(init.shape):
            value = value.detach().to(init.dtype)
            fitted[key] = value.clone() if copy_tensors else value
        elif value.ndim >= 3 and value.shape[0] == init.shape[0] and value.shape[2:] == init.shape[2:]:
            try:
                adapted = adapt_stem(value.detach(), bands, in_chans=in_chans, method=band_method, generator=generator)
            except BandAdaptationError as error:
                raise GenerationError(str(error)) from error
            fitted[key] = adapted.weight.to(init.dtype)
            notes.setdefault("band_adaptation", {})[key] = adapted.describe()
        else:
            raise GenerationError(
                f"expected the prompt's {key!r} to have shape {tuple(init.shape)} for {arch} (or to differ only in "
                f"input bands), got {tuple(value.shape)}; pass the matching architecture=..."
            )
    unused = [k for k in raw if k not in fitted]
    if missing:
        raise GenerationError(
            f"expected the prompt {source} to hold every tensor of timm's {arch} (the head aside), got "
            f"{len(missing)} of them missing (e.g. {missing[:3]}) and {len(unused)} keys {arch} does not have (e.g. "
            f"{unused[:3]}); a prompt is never replaced by random weights. Pass the matching architecture=..., or "
            "save the prompt's state_dict with timm's key names (strip prefixes such as 'model.' of Lightning "
            "checkpoints)."
        )
    if unused:
        notes["unused_prompt_keys"] = unused[:20]
    notes["stem"] = stem_key
    notes["head"] = f"{head_prefix}: re-initialised for {num_classes} classes (seed {seed})"
    return GeneratedPrompt(arch, source, fitted, notes), target


# The older name: loads a prompt and fits it to the target, copying its tensors (fit_prompt's default).
load_prompt = fit_prompt
