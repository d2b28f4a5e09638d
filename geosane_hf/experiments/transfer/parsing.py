"""The experiment config's error and the readers of its YAML mappings (keys, lists of integers and of names).

Every reader raises :class:`ExperimentConfigError` saying what was expected and what was found; unknown keys list
the valid ones, with "did you mean" hints.

Example:
    >>> _int_list([0, 1, 2], "seeds")
    (0, 1, 2)
    >>> _did_you_mean("sedes", ["seeds", "starts"])
    ' Did you mean seeds?'
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any

from geosane_hf.errors import GeoSANEError

__all__ = ["ExperimentConfigError"]


class ExperimentConfigError(GeoSANEError, ValueError):
    """A bad experiment config: unknown key, task or start, a GeoSANE start without a model, a missing file."""


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.4)
    return f" Did you mean {', '.join(close)}?" if close else ""


def _check_keys(
    data: Any, cls: type, where: str, extra: Sequence[str] = (), required: str | None = None
) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ExperimentConfigError(f"expected a mapping for {where}, got {type(data).__name__} {data!r}")
    valid = [f.name for f in fields(cls) if f.name not in extra]
    unknown = [k for k in data if k not in valid]
    if unknown:
        hints = "".join(_did_you_mean(str(k), valid) for k in unknown)
        raise ExperimentConfigError(f"unknown key(s) {unknown} in {where}; valid keys: {valid}.{hints}")
    if required is not None and required not in data:
        raise ExperimentConfigError(f"expected {required!r} in {where}, got keys {sorted(data)}")
    return dict(data)


def _int_list(value: Any, where: str) -> tuple[int, ...]:
    items = [value] if isinstance(value, int) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ExperimentConfigError(f"expected a non-empty list of integers for {where}, got {value!r}")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ExperimentConfigError(f"expected integers for {where}, got {v!r}")
    if len(set(items)) != len(items):
        raise ExperimentConfigError(f"expected distinct values for {where}, got {list(items)}")
    return tuple(items)


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise ExperimentConfigError(f"expected a list of names for {where}, got {value!r}")
    return tuple(items)


def _listed(value: tuple | None) -> list | None:
    return list(value) if value is not None else None
