"""Weight generation: prompt -> tokens -> latents -> samples -> weights -> calibrated timm models.

Example:
    >>> from geosane_hf.generation import generate_weights
    >>> from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
    >>> out = generate_weights(GeoSANEModel(GeoSANEConfig.from_preset("tiny")), "test_resnet", in_chans=4,
    ...                        num_classes=6, calibrate=False)
    >>> out.models[0].num_classes
    6
"""

from geosane_hf.generation.api import GeneratedPrompt, GenerationError, GenerationOutput, generate_weights, load_prompt
from geosane_hf.generation.bands import BandAdaptation, BandAdaptationError, adapt_stem, default_bands
from geosane_hf.generation.calibration import CalibrationReport, batchnorm_layers, calibrate_batchnorm
from geosane_hf.generation.pipeline import register_pipeline
from geosane_hf.generation.samplers import SAMPLERS, align_latents, kde_sample, prompt_noise

register_pipeline()  # transformers.pipeline("weight-generation", ...) works once this package is imported

__all__ = [
    "SAMPLERS",
    "BandAdaptation",
    "BandAdaptationError",
    "CalibrationReport",
    "GeneratedPrompt",
    "GenerationError",
    "GenerationOutput",
    "adapt_stem",
    "align_latents",
    "batchnorm_layers",
    "calibrate_batchnorm",
    "default_bands",
    "generate_weights",
    "kde_sample",
    "load_prompt",
    "prompt_noise",
]
