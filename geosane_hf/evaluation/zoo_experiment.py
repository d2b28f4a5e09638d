"""Compatibility shim: the zoo experiment moved to :mod:`geosane_hf.experiments.zoo` (docs/architecture.md)."""

from geosane_hf.experiments.zoo import *  # noqa: F403
from geosane_hf.experiments.zoo import __all__  # noqa: F401
