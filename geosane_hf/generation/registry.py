"""The one table of sampler names: ``name -> class`` in :mod:`geosane_hf.generation.samplers`.

Light on purpose (no torch): the CLI's ``--sampler`` choices, the Space's dropdown and the experiment configs read
the names from here; :func:`get_sampler_class` imports the class on first use. A new sampler adds one line here and
its class in :mod:`.samplers` (or registers a class of its own with :func:`register_sampler`).

Example:
    >>> SAMPLER_NAMES
    ('prompt-noise', 'kde', 'bootstrap', 'interpolate')
    >>> get_sampler_class("kde").__name__
    'KDESampler'
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

__all__ = ["DEFAULT_SAMPLER", "SAMPLER_NAMES", "get_sampler", "get_sampler_class", "register_sampler", "sampler_names"]

# name -> "module:Class", imported lazily.
_SAMPLERS: dict[str, str] = {
    "prompt-noise": "geosane_hf.generation.samplers:PromptNoiseSampler",
    "kde": "geosane_hf.generation.samplers:KDESampler",
    "bootstrap": "geosane_hf.generation.samplers:BootstrapSampler",
    "interpolate": "geosane_hf.generation.samplers:InterpolationSampler",
}

#: The sampler names known when the package was imported (``sampler_names()`` includes later registrations).
SAMPLER_NAMES: tuple[str, ...] = tuple(_SAMPLERS)

#: GeoSANE's recommended sampler, the default of GeoSANEPipeline, generate_weights, `geosane generate`, the Space
#: and the evaluation's GeoSANE start: whole models between the prompt and same-architecture population members,
#: decoded residually around the prompt (with no such member, the prompt itself). Why: docs/generation_quality.md.
DEFAULT_SAMPLER = "interpolate"


def sampler_names() -> tuple[str, ...]:
    """Every registered sampler name, in registration order."""
    return tuple(_SAMPLERS)


def register_sampler(name: str, target: str | type) -> None:
    """Registers a sampler class (or its ``"module:Class"`` path) under ``name``; a name is registered once.

    Raises:
        ValueError: ``name`` is taken by another class.
    """
    path = target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"
    if _SAMPLERS.get(name, path) != path:
        raise ValueError(f"expected a new sampler name, got {name!r} (already {_SAMPLERS[name]})")
    _SAMPLERS[name] = path


def get_sampler_class(name: str) -> type:
    """The sampler class registered as ``name``.

    Raises:
        GenerationError: An unknown name (the message lists the known ones).
    """
    if name not in _SAMPLERS:
        from geosane_hf.generation.errors import GenerationError

        near = difflib.get_close_matches(str(name), list(_SAMPLERS), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise GenerationError(f"expected sampler in {sampler_names()}, got {name!r}{hint}")
    module, _, attribute = _SAMPLERS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def get_sampler(name: str, **options: Any):
    """A sampler instance: ``get_sampler_class(name)(**options)`` (options are its config's fields).

    >>> get_sampler("prompt-noise", noise_scale=0.2).config.noise_scale
    0.2
    """
    return get_sampler_class(name)(**options)
