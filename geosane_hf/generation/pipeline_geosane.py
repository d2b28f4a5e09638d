"""``GeoSANEPipeline``: from a prompt architecture to ready timm models, the way a diffusers pipeline is built.

Registered components: the GeoSANE ``model``, a ``sampler`` (:mod:`.samplers`, swappable like a diffusers
scheduler), the ``tokenizer``, the anchor ``collection`` and the ``selector`` (:mod:`.selection`). A call runs named
steps, each a function testable alone and timed in ``out.timings``:

1. **prompt** (:func:`.prompt.fit_prompt`): load the prompt and fit it to the target (``in_chans``,
   ``num_classes``): the stem band-adapted (:mod:`.bands`), the head from the target's seeded init.
2. **tokenize** + coverage check (:func:`.latents.check_coverage`), **encode** (:class:`.latents.LatentCodec`).
3. **anchors** (:func:`.latents.load_anchors`): collection models around which the sampler draws.
4. **calibration_data** (:func:`.calibration.calibration_set`): packaged scene patches of the target's bands.
5. **sample** (``sampler.sample(ctx)``), which may call the **decode** / **detokenize** / **calibrate** steps
   (``ctx.materialise``) and the **score** step (``ctx.score``) on its candidates.
6. **decode**, **detokenize**, **calibrate** (:func:`.calibration.calibrate_batchnorm`) the returned samples.

Example:
    >>> import torch
    >>> from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
    >>> from geosane_hf.generation import GeoSANEPipeline, KDESampler, PromptNoiseSampler
    >>> pipe = GeoSANEPipeline(GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval(), PromptNoiseSampler())
    >>> out = pipe("test_resnet", in_chans=4, num_classes=6, calibrate=False, generator=torch.Generator().manual_seed(0))
    >>> out.models[0].num_classes, out.provenance.sampler, out.samples[0]["decode"]
    (6, 'prompt-noise', 'plain')
    >>> pipe.sampler = KDESampler.from_config(pipe.sampler.config, max_anchors=4)  # swap, like a scheduler
    >>> pipe.sampler
    KDESampler(KDEConfig(noise_scale=0.1, max_anchors=4))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosane_hf.generation.bands import default_bands
from geosane_hf.generation.calibration import CalibrationReport, calibrate_batchnorm, calibration_set, input_size
from geosane_hf.generation.errors import GenerationError
from geosane_hf.generation.latents import AnchorSet, LatentCodec, check_coverage, load_anchors
from geosane_hf.generation.outputs import GenerationProvenance, StepTimer, WeightGenerationOutput
from geosane_hf.generation.prompt import (
    check_int,
    fit_prompt,
    head_prefixes,
    instantiate,
    offload,
    stem_in_chans,
    timm_model,
)
from geosane_hf.generation.registry import DEFAULT_SAMPLER, get_sampler
from geosane_hf.generation.samplers import Candidate, Sampler, SamplingContext
from geosane_hf.generation.selection import CandidateSelector
from geosane_hf.runtime import release_freed_memory
from geosane_hf.tokenizer import WeightTokenizer

__all__ = ["GeoSANEPipeline"]

# BatchNorm calibration in channels_last: 1.3-2x faster convolutions on CPU. The statistics differ from contiguous
# passes in float rounding only (see calibrate_batchnorm) and are just as deterministic: same seed, same weights.
CALIBRATE_CHANNELS_LAST = True

_CONFIG_KEYS = ("token_size", "hidden_size", "latent_size", "window_size", "halo_size", "token_normalization")


class GeoSANEPipeline:
    """Generates weights for a timm architecture with a GeoSANE model and a sampler.

    Args:
        model: A :class:`~geosane_hf.modeling.GeoSANEModel`.
        sampler: A :class:`~geosane_hf.generation.samplers.Sampler` or a registered sampler name (default:
            :data:`~geosane_hf.generation.registry.DEFAULT_SAMPLER`, GeoSANE's recommended configuration).
        tokenizer: A :class:`WeightTokenizer` (default: the model's token size, ``"full"`` mode: complete
            state_dicts; ``"geosane"`` mode inherits untokenized tensors from the prompt, as the original does).
        collection: Collector output folder whose models are the anchors of anchor samplers.
        selector: The selection step (default: nearest-class-mean probe on packaged Landsat-8 cloud patches).
    """

    def __init__(
        self,
        model: nn.Module,
        sampler: Sampler | str | None = None,
        *,
        tokenizer: WeightTokenizer | None = None,
        collection: str | Path | None = None,
        selector: CandidateSelector | None = None,
    ) -> None:
        config = getattr(model, "config", None)
        if config is None or not hasattr(model, "encode_long"):
            raise GenerationError(f"expected a GeoSANEModel, got {type(model).__name__}")
        self.model = model
        self.sampler = get_sampler(sampler or DEFAULT_SAMPLER) if isinstance(sampler, (str, type(None))) else sampler
        self.tokenizer = tokenizer or WeightTokenizer(config.token_size, mode="full")
        self.collection = collection
        self.selector = selector

    @property
    def components(self) -> dict[str, Any]:
        """The registered components, as diffusers names them."""
        return {
            "model": self.model,
            "sampler": self.sampler,
            "tokenizer": self.tokenizer,
            "collection": self.collection,
            "selector": self.selector,
        }

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str | Path,
        sampler: Sampler | str | None = None,
        *,
        revision: str | None = None,
        tokenizer_mode: str = "full",
        collection: str | Path | None = None,
        selector: CandidateSelector | None = None,
        **model_kwargs: Any,
    ) -> GeoSANEPipeline:
        """Loads the GeoSANE model (folder or Hub id) and builds the pipeline around it.

        Raises:
            GenerationError: The model cannot be loaded (the message names what was given).
        """
        from geosane_hf.modeling import GeoSANEModel

        try:
            model = GeoSANEModel.from_pretrained(model_id_or_path, revision=revision, **model_kwargs)
        except OSError as error:
            raise GenerationError(
                f"expected a GeoSANE model folder or reachable Hub id, got {str(model_id_or_path)!r} ({error})"
            ) from error
        tokenizer = WeightTokenizer(model.config.token_size, mode=tokenizer_mode)
        return cls(model.eval(), sampler, tokenizer=tokenizer, collection=collection, selector=selector)

    # ------------------------------------------------------------------------------------------------- the call

    @torch.no_grad()
    def __call__(
        self,
        prompt: Any,
        *,
        in_chans: int | None = None,
        num_classes: int | None = None,
        bands: Sequence[str] | None = None,
        sensor: str | None = None,
        band_method: str = "wavelength",
        architecture: str | None = None,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        calibrate: bool = True,
        calibration_data: torch.Tensor | None = None,
        calibration_count: int = 16,
        img_size: int | None = None,
        reference: tuple[torch.Tensor, torch.Tensor] | None = None,
        window_batch_size: int = 32,
        model_id: str | None = None,
        revision: str | None = None,
        show_progress: bool = False,
    ) -> WeightGenerationOutput:
        """Generates ``num_samples`` models for the prompt's architecture fitted to the target.

        Args:
            prompt: timm name (packaged ImageNet weights when shipped, else a seeded random init), a local
                checkpoint (file or folder), a Hub id, or an ``nn.Module``.
            in_chans / num_classes: Target bands and classes (default: the prompt's).
            bands: Target band names (sensor ids ``B8``/``B08``, qualified ``S2:B8``, STAC common names, SAR
                polarisations), resolved with :func:`geosane_hf.imagery.bands.resolve_bands`; they fix ``in_chans``.
            sensor: Sensor of unqualified ``bands`` (``"L8"``, ``"S2"``, ``"S1"`` ...).
            band_method: Stem adaptation, see :mod:`.bands`.
            architecture: timm architecture of a checkpoint prompt without a timm ``config.json``.
            num_samples: Models to return.
            generator: The sampler's randomness (default: ``torch.Generator().manual_seed(seed)``); same generator
                state and options, bit-identical weights.
            seed: Seeds the target's init (head) and band adaptation (default: ``generator.initial_seed()``, or 0).
            calibrate: Re-estimate BatchNorm statistics (skipped, and said so, when the model has none).
            calibration_data: ``[M, C, H, W]`` images (default: packaged scene patches of ``bands``).
            calibration_count: Packaged patches drawn for calibration.
            img_size: Patch size for calibration and scoring (default: the target's input size).
            reference: ``(images [M, C, H, W], labels [M])`` for the selection step (default: packaged Landsat-8
                cloud patches); used only when the sampler scores candidates.
            window_batch_size: Windows per encode/decode pass.
            model_id / revision: Recorded in the provenance (default: ``model.name_or_path``).
            show_progress: Progress bars.

        Returns:
            A :class:`WeightGenerationOutput`.

        Raises:
            GenerationError: Bad options, an uncovered prompt, missing anchors or reference data.
        """
        model, sampler, tokenizer, config = self.model, self.sampler, self.tokenizer, self.model.config
        if seed is None:
            seed = generator.initial_seed() if generator is not None else 0
        seed = check_int("seed", seed, -(2**63))
        num_samples = check_int("num_samples", num_samples, 1)
        if in_chans is not None:
            check_int("in_chans", in_chans, 1)
        if sampler.requires_anchors and self.collection is None:
            raise GenerationError(
                f"expected collection=<collector output folder> for sampler {sampler.name!r}, got None"
            )
        bands, in_chans = _resolve_bands(bands, sensor, in_chans)
        timer = StepTimer()
        model.eval()

        with timer("prompt"):
            fitted, target = fit_prompt(
                prompt,
                architecture=architecture,
                in_chans=in_chans,
                num_classes=num_classes,
                bands=bands,
                band_method=band_method,
                seed=seed,
                copy_tensors=False,  # read-only here: no second copy of the prompt
            )
        in_chans = int(target.pretrained_cfg.get("in_chans", 0) or stem_in_chans(fitted.state_dict, target)[1])
        num_classes = int(target.num_classes)
        bands = bands or fitted.notes.get("bands") or default_bands(in_chans)
        head_keys = [
            k for k in fitted.notes["from_target_init"] if any(k.startswith(f"{p}.") for p in head_prefixes(target))
        ]
        # The target's seeded init is only needed for the head (kept in `fitted`) and as the architecture: its
        # tensors go to the meta device and every generated model is the skeleton filled with decoded tensors.
        skeleton = offload(target)
        release_freed_memory()

        with timer("tokenize"):
            tokenized = tokenizer.tokenize(fitted.state_dict)
        check_coverage(model, tokenized, tokenizer, self._known_architectures())
        layout = tokenized.layout
        inherited = layout.missing_keys
        # Keep from the prompt only what the output takes from it (head init, "geosane"-mode untokenized tensors).
        prompt_keys = list(fitted.state_dict)
        from_prompt = {k: fitted.state_dict[k] for k in (*inherited, *head_keys)}
        fitted.state_dict = {}  # the prompt's tensors are in the tokens now: free them
        codec = LatentCodec(model, window_batch_size=window_batch_size, show_progress=show_progress)
        with timer("encode"):
            encoded = codec.encode(tokenized, "prompt", keep_tokens=sampler.keeps_tokens)
        del tokenized  # the tokens [N, T] are not needed any more (unless the sampler keeps them)
        release_freed_memory()

        anchors = AnchorSet.from_prompt(encoded)
        if self.collection is not None and sampler.uses_anchors:
            with timer("anchors"):
                anchors = load_anchors(
                    self.collection,
                    encoded,
                    tokenizer,
                    codec,
                    limit=sampler.max_anchors,
                    keep_tokens=sampler.keeps_tokens,
                )

        generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        calib_images, calib_info = None, None
        if calibrate:
            with timer("calibration_data"):
                calib_images, calib_info = calibration_set(
                    target, calibration_data, bands, img_size, calibration_count
                )
        reports: list[CalibrationReport] = []

        def materialise(candidate: Candidate) -> nn.Module:
            """The decode step: candidate -> timm model (decoded, detokenized, instantiated, calibrated)."""
            stats = anchors.stats_of(candidate.stats)
            base = anchors.member(candidate.base) if candidate.decode == "residual" else None
            with timer("decode"):
                decoded = codec.decode(candidate.latents, encoded, stats=stats, base=base)  # [N, T]
            with timer("detokenize"):
                # detokenize reads the real values only: the padding of the decoded tokens never matters
                sd = tokenizer.detokenize(decoded, layout)
                del decoded
                for key in (*inherited, *head_keys):  # "geosane"-mode tensors and the re-initialised head
                    sd[key] = from_prompt[key].clone()
                sd = {k: sd[k] for k in prompt_keys}
                if skeleton is not None:
                    net = instantiate(skeleton, sd)  # the model's tensors are sd's: no init, no copy
                else:
                    net = timm_model(fitted.architecture, seed, in_chans=in_chans, num_classes=num_classes)
                    net.load_state_dict(sd, strict=True)
                    net.eval()
            if calib_images is not None:
                with timer("calibrate"):
                    reports.append(
                        calibrate_batchnorm(
                            net, calib_images, show_progress=show_progress, channels_last=CALIBRATE_CHANNELS_LAST
                        )
                    )
            return net

        selector = self.selector or CandidateSelector(lambda: _packaged_reference(target, bands, img_size))
        if reference is not None:
            selector = CandidateSelector(reference, selector.score_fn)
        ctx = SamplingContext(encoded, anchors, model, generator, num_samples, materialise, selector, timer)
        with timer("sample"):
            samples = sampler.sample(ctx)
        chosen = samples.candidates[:num_samples]
        if len(chosen) < num_samples:
            raise GenerationError(
                f"expected the sampler {sampler!r} to return at least num_samples={num_samples} candidates, got "
                f"{len(chosen)}"
            )
        anchor_record = {"ids": list(anchors.ids), "match": anchors.match}
        sampler_record = sampler.record(samples)
        anchors.release_latents(keep={c.base for c in chosen if c.decode == "residual"})  # memory for decoding
        del ctx, samples

        state_dicts, models = [], []
        for candidate in chosen:
            net = materialise(candidate)
            with timer("detokenize"):  # the returned state_dict is a copy: training the model leaves it unchanged
                state_dicts.append({k: v.detach().clone() for k, v in net.state_dict().items()})
            _check_finite_output(state_dicts[-1], len(models))
            models.append(net)

        scores = [c.score for c in chosen] if all(c.score is not None for c in chosen) else None
        name_or_path = (
            model_id or getattr(model, "name_or_path", None) or getattr(config, "_name_or_path", "") or "unsaved"
        )
        provenance = GenerationProvenance(
            geosane_model=name_or_path,
            geosane_revision=revision or getattr(config, "_commit_hash", None),
            geosane_config={k: getattr(config, k, None) for k in _CONFIG_KEYS},
            prompt=str(prompt) if not isinstance(prompt, nn.Module) else fitted.source,
            prompt_source=fitted.source,
            architecture=fitted.architecture,
            in_chans=in_chans,
            num_classes=num_classes,
            bands=list(bands) if bands else None,
            band_adaptation=fitted.notes.get("band_adaptation", {}),
            head=fitted.notes["head"],
            sampler=sampler.name,
            seed=seed,
            noise_scale=sampler.noise_scale,
            num_samples=num_samples,
            tokenizer={"mode": tokenizer.mode, "token_size": tokenizer.token_size, "num_tokens": layout.num_tokens},
            inherited_from_prompt=inherited,
            anchors={**anchor_record, "collection": str(self.collection) if self.collection else None},
            calibration=_calibration_record(calib_info, reports, calibrate),
            scores=scores,
            sampler_record=sampler_record,
            preprocessing=calib_info.get("preprocessing") if calib_info else None,
        )
        return WeightGenerationOutput(
            state_dicts, models, provenance, dict(timer.seconds), scores, [c.describe() for c in chosen]
        )

    def _known_architectures(self) -> list[str]:
        if self.collection is None:
            return []
        from geosane_hf.collection.collector import read_collection_index

        return [f"{r.id} ({(r.architecture or {}).get('name', '?')})" for r in read_collection_index(self.collection)]

    def __repr__(self) -> str:
        return f"GeoSANEPipeline(sampler={self.sampler!r}, collection={self.collection!r})"


def _resolve_bands(
    bands: Sequence[str] | None, sensor: str | None, in_chans: int | None
) -> tuple[list[str] | None, int | None]:
    """The band-resolution step: sensor ids are never guessed (B8 vs B08); the bands fix ``in_chans``."""
    if bands is None:
        return None, in_chans
    from geosane_hf.imagery.bands import BandNameError, resolve_bands

    try:
        resolved = resolve_bands(bands, sensor)
    except BandNameError as error:
        raise GenerationError(str(error)) from error
    if in_chans is not None and in_chans != len(resolved):
        raise GenerationError(f"expected in_chans == len(bands) = {len(resolved)}, got in_chans={in_chans}")
    return resolved, len(resolved)


def _packaged_reference(
    target: nn.Module, bands: Sequence[str] | None, img_size: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    from geosane_hf.generation.data import reference_set

    try:
        ref = reference_set(tuple(bands or ()), input_size(target, img_size))
    except ValueError as error:
        raise GenerationError(str(error)) from error
    return ref.images, ref.labels


def _calibration_record(
    info: Mapping[str, Any] | None, reports: Sequence[CalibrationReport], calibrate: bool
) -> dict[str, Any]:
    if not info:
        return {"skipped": "calibrate=False" if not calibrate else "no images"}
    return {**info, "batchnorm_layers": reports[-1].num_layers if reports else 0}


def _check_finite_output(state_dict: Mapping[str, torch.Tensor], index: int) -> None:
    """Raises :class:`GenerationError` when a generated tensor holds NaN/Inf (never returned, never written)."""
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise GenerationError(
                f"expected finite generated weights, got {bad} NaN/Inf values in {key!r} of sample {index}; the "
                "GeoSANE model or its inputs are not finite (check the model's weights, noise_scale and the prompt)."
            )
