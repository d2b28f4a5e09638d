"""GeoSANE-HF: weight-space learning for Earth observation.

Learn one latent representation from the weights of many remote-sensing models and generate new weights for
the architecture you choose.

``import geosane_hf`` is light (no torch, no transformers modeling), so that ``geosane --help`` starts at once. The
model classes are loaded on first use, and loading them registers them with ``AutoConfig``/``AutoModel`` and the
``"weight-generation"`` task with ``transformers.pipeline``:

>>> import geosane_hf
>>> from transformers import pipeline
>>> config = geosane_hf.GeoSANEConfig.from_preset("tiny")  # loads and registers the classes
>>> pipe = pipeline("weight-generation", model=geosane_hf.GeoSANEModel(config))
>>> type(pipe).__name__
'WeightGenerationPipeline'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

if TYPE_CHECKING:
    from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel

# name -> module; loaded on first attribute access (PEP 562).
_LAZY = {"GeoSANEConfig": "geosane_hf.modeling", "GeoSANEModel": "geosane_hf.modeling"}


def register() -> None:
    """Registers the model classes with ``AutoConfig``/``AutoModel`` and the ``"weight-generation"`` pipeline task.

    Idempotent; runs by itself on first access of :class:`GeoSANEConfig`/:class:`GeoSANEModel` through this package
    and on ``import geosane_hf.generation``.

    >>> import geosane_hf
    >>> geosane_hf.register()
    >>> from transformers.pipelines import PIPELINE_REGISTRY
    >>> "weight-generation" in PIPELINE_REGISTRY.get_supported_tasks()
    True
    """
    from geosane_hf.generation.pipeline import register_pipeline

    register_pipeline()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        register()
        globals()[name] = value  # later accesses skip __getattr__
        return value
    raise AttributeError(f"module 'geosane_hf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["GeoSANEConfig", "GeoSANEModel", "__version__", "register"]
