"""``generate_weights``: the one-call convenience over :class:`~geosane_hf.generation.GeoSANEPipeline`.

``generate_weights(model, prompt, sampler="kde", noise_scale=..., seed=..., ...)`` is
``GeoSANEPipeline(model, get_sampler(sampler, ...), ...)(prompt, generator=torch.Generator().manual_seed(seed), ...)``
with the sampler's options flattened into keyword arguments, as it was before the pipeline existed (same
signature, same outputs, same weights for the same seed). New code can use the pipeline and sampler classes.

Example:
    >>> from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
    >>> model = GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()
    >>> out = generate_weights(model, "test_resnet", in_chans=4, num_classes=6, seed=0, calibrate=False)
    >>> out.models[0].conv1[0].weight.shape[1], out.provenance["sampler"]
    (4, 'interpolate')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosane_hf.generation.errors import GenerationError
from geosane_hf.generation.outputs import GenerationOutput, WeightGenerationOutput
from geosane_hf.generation.pipeline_geosane import GeoSANEPipeline
from geosane_hf.generation.prompt import GeneratedPrompt, check_int, load_prompt
from geosane_hf.generation.registry import DEFAULT_SAMPLER, get_sampler_class
from geosane_hf.generation.samplers import Sampler
from geosane_hf.tokenizer import WeightTokenizer

# Re-exported: these names were importable from geosane_hf.generation.api before the pipeline existed.
__all__ = [
    "GeneratedPrompt",
    "GenerationError",
    "GenerationOutput",
    "WeightGenerationOutput",
    "generate_weights",
    "load_prompt",
]


@torch.no_grad()
def generate_weights(
    model: nn.Module,
    prompt: Any,
    *,
    num_samples: int = 1,
    sampler: str | Sampler = DEFAULT_SAMPLER,
    seed: int = 0,
    noise_scale: float | None = None,
    in_chans: int | None = None,
    num_classes: int | None = None,
    bands: Sequence[str] | None = None,
    sensor: str | None = None,
    band_method: str = "wavelength",
    architecture: str | None = None,
    tokenizer: WeightTokenizer | None = None,
    tokenizer_mode: str = "full",
    collection: str | Path | None = None,
    max_anchors: int = 8,
    candidates: int = 8,
    keep: int = 2,
    rounds: int = 2,
    reference: tuple[torch.Tensor, torch.Tensor] | None = None,
    calibrate: bool = True,
    calibration_data: torch.Tensor | None = None,
    calibration_count: int = 16,
    img_size: int | None = None,
    window_batch_size: int = 32,
    model_id: str | None = None,
    revision: str | None = None,
    show_progress: bool = False,
    sampler_options: Mapping[str, Any] | None = None,
) -> GenerationOutput:
    """Generates weights for a prompt architecture with a GeoSANE model (a convenience over the pipeline).

    Args:
        model: A :class:`~geosane_hf.modeling.GeoSANEModel`.
        prompt: timm name, local checkpoint (file/folder), Hub id or ``nn.Module`` (see :func:`load_prompt`).
        num_samples: Models to return.
        sampler: A registered sampler name (default ``"interpolate"``, GeoSANE's recommended configuration;
            ``"prompt-noise"``, ``"kde"``: needs ``collection``, ``"bootstrap"``) or a
            :class:`~geosane_hf.generation.samplers.Sampler` (then its config holds its options).
        seed: Seeds every random choice: same seed, bit-identical weights.
        noise_scale: Latent noise relative to the anchors' per-dimension latent std (the KDE bandwidth); None:
            the sampler's default (0.1 for prompt-noise/kde/bootstrap, 0 for interpolate).
        in_chans / num_classes / bands / sensor / band_method / architecture: The target, see
            :meth:`GeoSANEPipeline.__call__`.
        tokenizer: A :class:`WeightTokenizer` (default: the model's token size, ``tokenizer_mode``).
        tokenizer_mode: ``"full"`` (complete state_dicts) or ``"geosane"`` (untokenized tensors from the prompt).
        collection: Collector output folder with anchors for ``"kde"``/``"bootstrap"``.
        max_anchors / candidates / keep / rounds: Sampler sizes (fields of the sampler's config).
        reference / calibrate / calibration_data / calibration_count / img_size / window_batch_size / model_id /
            revision / show_progress: See :meth:`GeoSANEPipeline.__call__`.
        sampler_options: Other fields of a named sampler's config, e.g. ``{"cross_architecture": True}`` for
            ``"interpolate"`` (towards anchors of other architectures too); an unknown field is an error.

    Returns:
        A :class:`GenerationOutput`: the pipeline's :class:`WeightGenerationOutput` with the provenance as a dict.

    Raises:
        GenerationError: Bad options, an uncovered prompt, missing anchors or reference data.

    Example:
        >>> from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
        >>> m = GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()
        >>> a = generate_weights(m, "test_resnet", seed=1, calibrate=False).state_dicts[0]
        >>> b = generate_weights(m, "test_resnet", seed=1, calibrate=False).state_dicts[0]
        >>> all(torch.equal(a[k], b[k]) for k in a)
        True
    """
    seed = check_int("seed", seed, -(2**63))
    if not isinstance(sampler, Sampler):
        sizes = {"max_anchors": max_anchors, "candidates": candidates, "keep": keep}
        if noise_scale is not None:
            sizes["noise_scale"] = noise_scale
        for name in ("max_anchors", "candidates", "keep"):
            check_int(name, sizes[name], 1)
        check_int("rounds", rounds, 1)
        cls = get_sampler_class(sampler)
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        options = dict(sampler_options or {})
        unknown = sorted(set(options) - fields)
        if unknown:
            raise GenerationError(
                f"expected sampler_options among the {sampler} sampler's fields {sorted(fields)}, got {unknown}"
            )
        sampler = cls(**{k: v for k, v in {**sizes, "rounds": rounds, **options}.items() if k in fields})
    elif sampler_options:
        raise GenerationError(
            f"expected sampler_options only with a sampler name, got a {type(sampler).__name__} instance: set them "
            "in its config"
        )
    if tokenizer is None and getattr(model, "config", None) is not None:
        tokenizer = WeightTokenizer(model.config.token_size, mode=tokenizer_mode)
    pipe = GeoSANEPipeline(model, sampler, tokenizer=tokenizer, collection=collection)
    output = pipe(
        prompt,
        in_chans=in_chans,
        num_classes=num_classes,
        bands=bands,
        sensor=sensor,
        band_method=band_method,
        architecture=architecture,
        num_samples=num_samples,
        generator=torch.Generator().manual_seed(seed),
        seed=seed,
        calibrate=calibrate,
        calibration_data=calibration_data,
        calibration_count=calibration_count,
        img_size=img_size,
        reference=reference,
        window_batch_size=window_batch_size,
        model_id=model_id,
        revision=revision,
        show_progress=show_progress,
    )
    return GenerationOutput.from_output(output)
