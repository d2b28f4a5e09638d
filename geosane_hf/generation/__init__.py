"""Weight generation: prompt -> tokens -> latents -> samples -> weights -> calibrated timm models.

The room's centre is :class:`GeoSANEPipeline` (diffusers-style: a model, a swappable sampler, named steps) with
the sampler classes of :mod:`.samplers` and the selection step of :mod:`.selection`; :func:`generate_weights` is
the one-call convenience over it. Names load on first access (PEP 562), so that the light
:mod:`.registry` of sampler names serves the CLI parser without torch; the first access also registers the
``"weight-generation"`` task with ``transformers.pipeline``.

Example:
    >>> import torch
    >>> from geosane_hf.generation import GeoSANEPipeline, PromptNoiseSampler
    >>> from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
    >>> pipe = GeoSANEPipeline(GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval(), PromptNoiseSampler())
    >>> out = pipe("test_resnet", in_chans=4, num_classes=6, calibrate=False, generator=torch.Generator().manual_seed(0))
    >>> out.models[0].num_classes
    6
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from geosane_hf.generation.registry import SAMPLER_NAMES

if TYPE_CHECKING:
    from geosane_hf.generation.api import generate_weights
    from geosane_hf.generation.bands import BandAdaptation, BandAdaptationError, adapt_stem, default_bands
    from geosane_hf.generation.calibration import CalibrationReport, batchnorm_layers, calibrate_batchnorm
    from geosane_hf.generation.errors import GenerationError
    from geosane_hf.generation.outputs import GenerationOutput, GenerationProvenance, WeightGenerationOutput
    from geosane_hf.generation.pipeline import register_pipeline
    from geosane_hf.generation.pipeline_geosane import GeoSANEPipeline
    from geosane_hf.generation.prompt import GeneratedPrompt, load_prompt
    from geosane_hf.generation.samplers import (
        BootstrapConfig,
        BootstrapSampler,
        Candidate,
        InterpolationConfig,
        InterpolationSampler,
        KDEConfig,
        KDESampler,
        PromptNoiseConfig,
        PromptNoiseSampler,
        Sampler,
        SamplerConfig,
        Samples,
        SamplingContext,
        align_latents,
        kde_sample,
        prompt_noise,
    )
    from geosane_hf.generation.selection import CandidateSelector, probe_score

SAMPLERS = SAMPLER_NAMES  # the name tuple this package exported before the registry

_LAZY: dict[str, str] = {
    "generate_weights": "api",
    **dict.fromkeys(("BandAdaptation", "BandAdaptationError", "adapt_stem", "default_bands"), "bands"),
    **dict.fromkeys(("CalibrationReport", "batchnorm_layers", "calibrate_batchnorm"), "calibration"),
    "GenerationError": "errors",
    **dict.fromkeys(("GenerationOutput", "GenerationProvenance", "WeightGenerationOutput"), "outputs"),
    "register_pipeline": "pipeline",
    "GeoSANEPipeline": "pipeline_geosane",
    **dict.fromkeys(("GeneratedPrompt", "load_prompt"), "prompt"),
    **dict.fromkeys(
        (
            "BootstrapConfig",
            "BootstrapSampler",
            "Candidate",
            "InterpolationConfig",
            "InterpolationSampler",
            "KDEConfig",
            "KDESampler",
            "PromptNoiseConfig",
            "PromptNoiseSampler",
            "Sampler",
            "SamplerConfig",
            "Samples",
            "SamplingContext",
            "align_latents",
            "kde_sample",
            "prompt_noise",
        ),
        "samplers",
    ),
    **dict.fromkeys(("CandidateSelector", "probe_score"), "selection"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        from geosane_hf.generation.pipeline import register_pipeline

        register_pipeline()  # transformers.pipeline("weight-generation", ...) works once generation is used
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "SAMPLERS",
    "SAMPLER_NAMES",
    "BandAdaptation",
    "BandAdaptationError",
    "BootstrapConfig",
    "BootstrapSampler",
    "CalibrationReport",
    "Candidate",
    "CandidateSelector",
    "GeneratedPrompt",
    "GenerationError",
    "GenerationOutput",
    "GenerationProvenance",
    "GeoSANEPipeline",
    "InterpolationConfig",
    "InterpolationSampler",
    "KDEConfig",
    "KDESampler",
    "PromptNoiseConfig",
    "PromptNoiseSampler",
    "Sampler",
    "SamplerConfig",
    "Samples",
    "SamplingContext",
    "WeightGenerationOutput",
    "adapt_stem",
    "align_latents",
    "batchnorm_layers",
    "calibrate_batchnorm",
    "default_bands",
    "generate_weights",
    "kde_sample",
    "load_prompt",
    "probe_score",
    "prompt_noise",
    "register_pipeline",
]
