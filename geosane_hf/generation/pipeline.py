"""A thin transformers pipeline for weight generation, registered as task ``"weight-generation"``.

An adapter over :class:`~geosane_hf.generation.GeoSANEPipeline` (through :func:`generate_weights`, whose keyword
arguments it takes). ``GeoSANEModel`` gets no ``generate_weights`` method: the modeling files are uploaded to the Hub
as remote code and must import only torch + transformers, while generation needs timm, the tokenizer and the
packaged imagery.

The task is registered on first use of a name of ``geosane_hf.generation`` and of ``geosane_hf.GeoSANEModel`` (no
call needed). :func:`save_pretrained_with_pipeline` also records it in the saved config (``custom_pipelines``) and copies
this file next to the weights, so ``pipeline(model="org/name", trust_remote_code=True)`` finds the task from a Hub
repo where the task was never registered (the file imports ``geosane_hf``: the package must be installed).

Example:
    >>> from transformers import pipeline
    >>> from geosane_hf import GeoSANEConfig, GeoSANEModel
    >>> pipe = pipeline("weight-generation", model=GeoSANEModel(GeoSANEConfig.from_preset("tiny")))
    >>> out = pipe("test_resnet", in_chans=4, num_classes=6, calibrate=False)
    >>> out.models[0].num_classes, out.provenance["sampler"]
    (6, 'interpolate')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import Pipeline

if TYPE_CHECKING:
    from geosane_hf.generation.outputs import GenerationOutput

__all__ = ["TASK", "WeightGenerationPipeline", "register_pipeline", "save_pretrained_with_pipeline"]

TASK = "weight-generation"


class WeightGenerationPipeline(Pipeline):
    """``pipe(prompt, **options) -> GenerationOutput``; options are those of :func:`generate_weights`."""

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict, dict, dict]:
        return {}, kwargs, {}

    def preprocess(self, prompt: Any) -> dict[str, Any]:
        return {"prompt": prompt}

    def _forward(self, model_inputs: dict[str, Any], **options: Any) -> GenerationOutput:
        from geosane_hf.generation.api import generate_weights

        return generate_weights(self.model, model_inputs["prompt"], **options)

    def postprocess(self, model_outputs: GenerationOutput) -> GenerationOutput:
        return model_outputs

    def __call__(self, prompt: Any, **options: Any) -> GenerationOutput:
        """Generates weights for ``prompt`` (a timm name, checkpoint path, Hub id or module)."""
        return super().__call__(prompt, **options)


def register_pipeline() -> None:
    """Registers the task with ``transformers.pipelines.PIPELINE_REGISTRY`` (idempotent)."""
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    from geosane_hf.modeling import register_auto_classes

    register_auto_classes()
    registered = PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl")
    if registered is not WeightGenerationPipeline:
        PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=WeightGenerationPipeline, pt_model=AutoModel)


def save_pretrained_with_pipeline(model: Any, save_directory: str | os.PathLike, **kwargs: Any) -> Path:
    """``model.save_pretrained(save_directory)`` plus the pipeline: ``custom_pipelines`` in config.json, this file.

    Args:
        model: A :class:`~geosane_hf.modeling.GeoSANEModel`.
        save_directory: The model folder (created when missing).
        **kwargs: Passed to ``save_pretrained`` (e.g. ``max_shard_size``).

    Returns:
        The folder.

    Example:
        >>> import json, tempfile
        >>> from geosane_hf import GeoSANEConfig, GeoSANEModel
        >>> out = save_pretrained_with_pipeline(GeoSANEModel(GeoSANEConfig.from_preset("tiny")), tempfile.mkdtemp())
        >>> json.loads((out / "config.json").read_text())["custom_pipelines"][TASK]["impl"]
        'pipeline.WeightGenerationPipeline'
        >>> (out / "pipeline.py").is_file()
        True
    """
    register_pipeline()
    WeightGenerationPipeline(model=model).save_pretrained(str(save_directory), **kwargs)
    return Path(save_directory)
