"""GeoSANE configuration and modeling files (self-contained: torch + transformers only).

Installed, this folder is importable as ``geosane_hf.modeling``; its files (``configuration_geosane.py``,
``modeling_geosane.py`` and the siblings it imports relatively, ``modeling_geosane_layers.py`` and
``modeling_geosane_long.py``) are also uploaded to the Hub as remote code: ``save_pretrained`` copies them next to
the weights and writes ``auto_map``, so ``AutoModel.from_pretrained(path, trust_remote_code=True)`` works without
this package.

Example:

>>> from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
>>> model = GeoSANEModel(GeoSANEConfig.from_preset("tiny"))
>>> model.config.model_type
'geosane'
"""

from .configuration_geosane import PRESETS, GeoSANEConfig
from .modeling_geosane import (
    GeoSANEModel,
    GeoSANEModelOutput,
    GeoSANEPreTrainedModel,
    masked_normalized_mse,
    nt_xent,
)


def register_auto_classes() -> None:
    """Registers the classes with ``AutoConfig``/``AutoModel`` and marks them for remote-code saving.

    Idempotent; runs when this package is imported (``geosane_hf.modeling``), so ``AutoModel.from_pretrained`` of a
    GeoSANE folder or repo uses the installed classes without ``trust_remote_code``.
    """
    from transformers import AutoConfig, AutoModel

    GeoSANEConfig.register_for_auto_class()
    GeoSANEModel.register_for_auto_class("AutoModel")
    AutoConfig.register(GeoSANEConfig.model_type, GeoSANEConfig, exist_ok=True)
    AutoModel.register(GeoSANEConfig, GeoSANEModel, exist_ok=True)


register_auto_classes()

__all__ = [
    "PRESETS",
    "GeoSANEConfig",
    "GeoSANEModel",
    "GeoSANEModelOutput",
    "GeoSANEPreTrainedModel",
    "masked_normalized_mse",
    "nt_xent",
    "register_auto_classes",
]
