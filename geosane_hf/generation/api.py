"""``generate_weights``: from a prompt architecture to ready timm models with provenance.

Steps (each timed in :attr:`GenerationOutput.timings`):

1. **prompt**: load the prompt (a timm name: the packaged ImageNet weights when we ship them, else a seeded random
   init offline; a local checkpoint; a Hub id; or an ``nn.Module``) and fit it to the target ``timm`` model
   (``in_chans``, ``num_classes``): the stem is band-adapted (:mod:`.bands`), the classifier comes from the
   target's seeded init. Fitting *before* tokenizing makes the tokenized layout the target's own, so anchors of
   the same architecture in the collection match it by layout fingerprint.
2. **tokenize** (``"full"`` mode by default: the decoded state_dict is complete; in ``"geosane"`` mode the
   untokenized tensors (BN statistics, ``pos_embed`` ...) are inherited from the prompt, as the original does,
   and listed in the provenance), **encode** (``encode_long``, halo windows), **sample** (:mod:`.samplers`),
   **decode** (``decode_long``), **detokenize**.
3. **calibrate**: the head is re-initialised (a generated head does not fit a new task) and BatchNorm statistics
   are re-estimated on packaged RS images of the target's bands (:mod:`.calibration`).

Example:
    >>> from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
    >>> model = GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()
    >>> out = generate_weights(model, "test_resnet", in_chans=4, num_classes=6, seed=0, calibrate=False)
    >>> out.models[0].conv1[0].weight.shape[1], out.provenance["sampler"]
    (4, 'prompt-noise')
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosane_hf.errors import GeoSANEError
from geosane_hf.generation.bands import BandAdaptationError, adapt_stem, default_bands
from geosane_hf.generation.calibration import CalibrationReport, batchnorm_layers, calibrate_batchnorm
from geosane_hf.generation.samplers import SAMPLERS, align_latents, kde_sample, prompt_noise
from geosane_hf.layer_types import LayerType
from geosane_hf.runtime import release_freed_memory
from geosane_hf.token_norm import destandardize, layer_stats, standardize
from geosane_hf.tokenizer import TokenizedWeights, WeightLayout, WeightTokenizer

__all__ = ["GeneratedPrompt", "GenerationError", "GenerationOutput", "generate_weights", "load_prompt"]


# BatchNorm calibration in channels_last: 1.3-2x faster convolutions on CPU. The statistics differ from contiguous
# passes in float rounding only (see calibrate_batchnorm) and are just as deterministic: same seed, same weights.
_CALIBRATE_CHANNELS_LAST = True


class GenerationError(GeoSANEError, ValueError):
    """Bad input to weight generation (the CLI prints it without a traceback)."""


@dataclass
class GeneratedPrompt:
    """A prompt fitted to the target.

    Attributes:
        architecture: timm architecture name.
        source: Where the prompt weights came from.
        state_dict: The fitted state_dict (target shapes).
        notes: What was changed (band adaptation, head, keys taken from the target's init).
    """

    architecture: str
    source: str
    state_dict: dict[str, torch.Tensor]
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerationOutput:
    """Result of :func:`generate_weights`.

    Attributes:
        state_dicts: One complete state_dict per sample (best first for ``"bootstrap"``).
        models: The same weights as ready timm models (eval mode, BatchNorm calibrated).
        provenance: JSON-serialisable record (GeoSANE model id/revision, prompt, sampler, seed, noise, scores ...).
        timings: Seconds per step (prompt, tokenize, encode, sample, decode, detokenize, calibrate, score).
        scores: Reference-set score per sample (``"bootstrap"``), else None.
    """

    state_dicts: list[dict[str, torch.Tensor]]
    models: list[nn.Module]
    provenance: dict[str, Any]
    timings: dict[str, float]
    scores: list[float] | None = None


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


# ------------------------------------------------------------------------------------------------------- prompt


def _meta_timm_model(architecture: str) -> nn.Module:
    """The architecture on the meta device (no memory, no init): for its config, keys and shapes only."""
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(architecture, pretrained=False)
    except Exception:  # a model whose __init__ needs real tensors: build it for real
        return _timm_model(architecture, 0)


def _offload(model: nn.Module) -> nn.Module | None:
    """Moves the model's state_dict tensors (parameters, persistent buffers) to the meta device, in place.

    The result is a skeleton that :func:`_instantiate` fills with ``load_state_dict(assign=True)`` (no init, no
    copy); non-persistent buffers (index tables ...) stay real. Returns None (and leaves the model alone) when two
    state_dict keys share one tensor: assigning would untie them.
    """
    state = model.state_dict(keep_vars=True)
    if len({id(t) for t in state.values()}) != len(state):
        return None
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None:
                module._parameters[name] = nn.Parameter(
                    torch.empty_like(param, device="meta"), requires_grad=param.requires_grad
                )
        for name, buffer in module._buffers.items():
            if buffer is not None and name not in module._non_persistent_buffers_set:
                module._buffers[name] = torch.empty_like(buffer, device="meta")
    return model


def _instantiate(skeleton: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """A model of the skeleton's architecture whose tensors are ``state_dict``'s (shared, not copied), in eval."""
    net = copy.deepcopy(skeleton)
    net.load_state_dict(state_dict, strict=True, assign=True)
    return net.eval()


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GenerationError(f"expected {name} to be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise GenerationError(f"expected {name} >= {minimum}, got {value}")
    return value


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _timm_model(architecture: str, seed: int, **kwargs: Any) -> nn.Module:
    import timm

    try:
        with _seeded(seed):
            return timm.create_model(architecture, pretrained=False, **kwargs)
    except RuntimeError as error:
        near = ", ".join(timm.list_models(f"*{architecture.split('_')[0]}*")[:5])
        raise GenerationError(
            f"expected a timm architecture, got {architecture!r} ({error}); nearest: {near}"
        ) from error


def _raw_prompt(prompt: Any, architecture: str | None, seed: int) -> tuple[str, str, Mapping[str, torch.Tensor]]:
    """(architecture, source description, state_dict at the prompt's own shapes)."""
    if isinstance(prompt, nn.Module):
        arch = architecture or getattr(prompt, "pretrained_cfg", {}).get("architecture")
        if arch is None:
            raise GenerationError("expected a timm model as prompt module (or pass architecture=...), got none")
        return arch, f"module {type(prompt).__name__}", prompt.state_dict()
    if not isinstance(prompt, (str, Path)):
        raise GenerationError(f"expected a timm name, a path, a Hub id or an nn.Module as prompt, got {prompt!r}")
    text = str(prompt)
    import timm

    name = text[len("timm:") :] if text.startswith("timm:") else text
    if timm.is_model(name) and not Path(text).exists():
        from geosane_hf.evaluation.starts import IMAGENET_PROMPTS, imagenet_state_dict

        if name in IMAGENET_PROMPTS and not text.startswith("timm:"):
            try:
                return name, f"packaged ImageNet weights ({IMAGENET_PROMPTS[name]})", imagenet_state_dict(name)
            except (FileNotFoundError, ValueError):
                pass  # the weights package is not installed: fall back to a seeded random init
        return (
            name,
            f"timm:{name} (random init, seed {seed}; no offline ImageNet weights)",
            _timm_model(name, seed).state_dict(),
        )
    if "/" not in name and "\\" not in name and not Path(text).exists() and "." not in name:
        import difflib

        near = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.5)
        raise GenerationError(
            f"expected a timm architecture, a checkpoint path or a Hub id as prompt, got {text!r}; nearest timm "
            f"names: {near or 'none'} (see timm.list_models('*pattern*'))"
        )
    from geosane_hf.checkpoints import load_checkpoint

    loaded = load_checkpoint(prompt)
    arch = architecture or loaded.metadata.architecture
    if not arch:
        raise GenerationError(
            f"expected to know the prompt's timm architecture, got none from {text!r}: pass architecture=... "
            "(or a folder/Hub repo with a timm config.json)"
        )
    return arch, str(loaded.metadata.source), loaded.state_dict


def _stem_in_chans(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> tuple[str, int]:
    key = model.pretrained_cfg.get("first_conv")
    key = key[0] if isinstance(key, (list, tuple)) else key
    key = f"{key}.weight" if key else next(k for k, v in model.state_dict().items() if v.ndim == 4)
    return key, int(state_dict[key].shape[1]) if key in state_dict else 3


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    head = model.pretrained_cfg.get("classifier")
    return tuple(head) if isinstance(head, (list, tuple)) else ((head,) if head else ())


def load_prompt(
    prompt: Any,
    *,
    architecture: str | None = None,
    in_chans: int | None = None,
    num_classes: int | None = None,
    bands: Sequence[str] | None = None,
    band_method: str = "wavelength",
    seed: int = 0,
) -> tuple[GeneratedPrompt, nn.Module]:
    """Loads a prompt and fits it to the target; returns it with the target timm model (seeded init).

    Raises:
        GenerationError: Unknown architecture, a prompt whose tensors do not fit it, ``in_chans`` < 1.
    """
    return _fit_prompt(
        prompt,
        architecture=architecture,
        in_chans=in_chans,
        num_classes=num_classes,
        bands=bands,
        band_method=band_method,
        seed=seed,
        copy_tensors=True,
    )


def _fit_prompt(
    prompt: Any,
    *,
    architecture: str | None,
    in_chans: int | None,
    num_classes: int | None,
    bands: Sequence[str] | None,
    band_method: str,
    seed: int,
    copy_tensors: bool,
) -> tuple[GeneratedPrompt, nn.Module]:
    """:func:`load_prompt`; ``copy_tensors=False`` lets the fitted state_dict share the prompt's unchanged
    tensors (read-only use inside :func:`generate_weights`: one copy of the prompt less)."""
    arch, source, raw = _raw_prompt(prompt, architecture, seed)
    probe = _meta_timm_model(arch)  # config, keys and shapes only
    stem_key, prompt_chans = _stem_in_chans(raw, probe)
    in_chans = prompt_chans if in_chans is None else _check_int("in_chans", in_chans, 1)
    heads = _head_prefixes(probe)
    head_prefix = heads[0] if heads else None
    prompt_classes = int(raw[f"{head_prefix}.weight"].shape[0]) if f"{head_prefix}.weight" in raw else 1000
    num_classes = prompt_classes if num_classes is None else _check_int("num_classes", num_classes, 0)
    target = _timm_model(arch, seed, in_chans=in_chans, num_classes=num_classes)
    if bands is None and in_chans != prompt_chans:
        bands = default_bands(in_chans)
    notes: dict[str, Any] = {"bands": list(bands) if bands else None, "from_target_init": []}
    fitted: dict[str, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(seed)
    missing = []  # non-head tensors the prompt lacks: never silently replaced by the target's random init
    for key, init in target.state_dict().items():
        value = raw.get(key) if key in raw else None
        is_head = any(key.startswith(f"{prefix}.") for prefix in heads)
        if value is None and not is_head and not key.endswith("num_batches_tracked"):
            missing.append(key)
        if is_head or value is None:
            fitted[key] = init.clone()
            notes["from_target_init"].append(key)
        elif tuple(value.shape) == tuple(init.shape):
            value = value.detach().to(init.dtype)
            fitted[key] = value.clone() if copy_tensors else value
        elif value.ndim >= 3 and value.shape[0] == init.shape[0] and value.shape[2:] == init.shape[2:]:
            try:
                adapted = adapt_stem(value.detach(), bands, in_chans=in_chans, method=band_method, generator=generator)
            except BandAdaptationError as error:
                raise GenerationError(str(error)) from error
            fitted[key] = adapted.weight.to(init.dtype)
            notes.setdefault("band_adaptation", {})[key] = adapted.describe()
        else:
            raise GenerationError(
                f"expected the prompt's {key!r} to have shape {tuple(init.shape)} for {arch} (or to differ only in "
                f"input bands), got {tuple(value.shape)}; pass the matching architecture=..."
            )
    unused = [k for k in raw if k not in fitted]
    if missing:
        raise GenerationError(
            f"expected the prompt {source} to hold every tensor of timm's {arch} (the head aside), got "
            f"{len(missing)} of them missing (e.g. {missing[:3]}) and {len(unused)} keys {arch} does not have (e.g. "
            f"{unused[:3]}); a prompt is never replaced by random weights. Pass the matching architecture=..., or "
            "save the prompt's state_dict with timm's key names (strip prefixes such as 'model.' of Lightning "
            "checkpoints)."
        )
    if unused:
        notes["unused_prompt_keys"] = unused[:20]
    notes["stem"] = stem_key
    notes["head"] = f"{head_prefix}: re-initialised for {num_classes} classes (seed {seed})"
    return GeneratedPrompt(arch, source, fitted, notes), target


# ------------------------------------------------------------------------------------------------------ coverage


def _nearest_hint(collection: Any) -> str:
    return (
        " Architectures in the model's collection: " + ", ".join(collection[:5])
        if collection
        else " Pass a collection to list covered architectures, or choose a smaller prompt of the same family."
    )


def _check_coverage(model: nn.Module, tokenized: TokenizedWeights, tokenizer: WeightTokenizer, known: list[str]):
    config = model.config
    if tokenizer.token_size != config.token_size:
        raise GenerationError(
            f"expected the prompt tokenized with token_size = the model's {config.token_size}, got "
            f"{tokenizer.token_size}; use WeightTokenizer(token_size={config.token_size})"
        )
    kinds = getattr(config, "num_layer_types", 0) or 0
    if kinds > 0 and tokenized.layer_types.numel() and int(tokenized.layer_types.max()) >= kinds:
        unknown = sorted({LayerType(int(t)).name for t in tokenized.layer_types.unique().tolist() if t >= kinds})
        raise GenerationError(
            f"expected layer types the model was trained on (ids < {kinds}: "
            f"{[t.name for t in LayerType if t < kinds]}), got {unknown} in the prompt; tokenizer mode 'geosane' "
            "tokenizes weights only, which may avoid them." + _nearest_hint(known)
        )
    if getattr(config, "position_encoding", "") == "learned":
        sizes = config.max_position_embeddings
        largest = tokenized.positions.long().amax(0).tolist()
        if any(found >= size for found, size in zip(largest, sizes, strict=True)):
            raise GenerationError(
                f"expected positions below the model's learned tables {sizes}, got maxima {largest} "
                f"({tokenized.num_tokens} tokens): the prompt is larger than anything the model covers."
                + _nearest_hint(known)
            )


# ------------------------------------------------------------------------------------------------------- anchors


def _collection_anchors(
    collection: str | Path, tokenizer: WeightTokenizer, layout: WeightLayout, layer_types: torch.Tensor, limit: int
) -> tuple[list[TokenizedWeights], list[str], str]:
    """Tokenized anchors: same fingerprint when any, else the nearest layouts (token count, then layer types)."""
    from geosane_hf.checkpoints import load_checkpoint
    from geosane_hf.collection.collector import read_index

    root = Path(collection)
    records = read_index(root)
    if not records:
        raise GenerationError(f"expected a collection folder with collection.jsonl and models/, got {root}")
    same, other = [], []
    types = torch.bincount(layer_types.long(), minlength=len(LayerType)).float()
    types = types / types.sum()
    for record in records:
        tok = tokenizer.tokenize(load_checkpoint(root / record.file).state_dict)
        if tok.layout.fingerprint == layout.fingerprint:
            same.append((record.id, tok))
        else:
            hist = torch.bincount(tok.layer_types.long(), minlength=len(LayerType)).float()
            distance = abs(math.log(tok.num_tokens / layout.num_tokens)) + float(
                (hist / hist.sum() - types).abs().sum()
            )
            other.append((distance, record.id, tok))
    if same:
        chosen = same[:limit]
        return [t for _, t in chosen], [i for i, _ in chosen], "same architecture (layout fingerprint)"
    other.sort(key=lambda item: item[0])
    chosen = other[:limit]
    how = "nearest layouts (|log token-count ratio| + layer-type histogram L1), aligned per layer type and depth"
    return [t for _, _, t in chosen], [i for _, i, _ in chosen], how


# -------------------------------------------------------------------------------------------------------- scoring


@torch.no_grad()
def _score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 16) -> float:
    """2-fold nearest-class-mean accuracy of the model's pooled features on a labelled reference set."""
    device = next(model.parameters()).device
    feats = []
    for batch in images.split(batch_size):
        x = model.forward_features(batch.to(device))
        feats.append(model.forward_head(x, pre_logits=True).flatten(1).float().cpu())
    f = torch.cat(feats)  # [M, D]
    f = torch.nn.functional.normalize(f - f.mean(0), dim=1)
    if not torch.isfinite(f).all():
        return 0.0
    half = torch.arange(f.shape[0]) % 2 == 0
    correct = 0
    for fit, test in ((half, ~half), (~half, half)):
        classes = labels[fit].unique()
        centres = torch.stack([f[fit][labels[fit] == c].mean(0) for c in classes])  # [K, D]
        predicted = classes[torch.cdist(f[test], centres).argmin(1)]
        correct += int((predicted == labels[test]).sum())
    return correct / f.shape[0]


# ----------------------------------------------------------------------------------------------------------- main


@torch.no_grad()
def generate_weights(
    model: nn.Module,
    prompt: Any,
    *,
    num_samples: int = 1,
    sampler: str = "prompt-noise",
    seed: int = 0,
    noise_scale: float = 0.1,
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
) -> GenerationOutput:
    """Generates weights for a prompt architecture with a GeoSANE model.

    Args:
        model: A :class:`~geosane_hf.modeling.GeoSANEModel`.
        prompt: timm name, local checkpoint (file/folder), Hub id or ``nn.Module`` (see :func:`load_prompt`).
        num_samples: Models to return.
        sampler: ``"prompt-noise"``, ``"kde"`` (needs ``collection``; the prompt is an anchor too) or
            ``"bootstrap"`` (KDE + calibrate + score ``candidates`` per round, keep the best ``keep``, refit).
        seed: Seeds every random choice (``torch.Generator``): same seed, bit-identical weights.
        noise_scale: Latent noise relative to the anchors' per-dimension latent std (the KDE bandwidth for
            ``"kde"``/``"bootstrap"``).
        in_chans / num_classes: Target bands and classes (default: the prompt's).
        bands: Target band names (default by count, see :data:`.bands.DEFAULT_BANDS`): sensor ids (``B8``, ``B08``),
            sensor-qualified ids (``S2:B8``), STAC common names or SAR polarisations, resolved with
            :func:`geosane_hf.imagery.bands.resolve_bands` (an id such as ``B8`` that means different bands for
            Landsat-8 and Sentinel-2 needs ``sensor`` or a qualifier).
        sensor: Sensor of unqualified ``bands`` (``"L8"``, ``"S2"``, ``"S1"``, ``"sentinel-2"``, ...).
        band_method: Stem adaptation, see :mod:`.bands`.
        architecture: timm architecture of a checkpoint prompt without a timm ``config.json``.
        tokenizer: A :class:`WeightTokenizer` (default: the model's token size, ``tokenizer_mode``).
        tokenizer_mode: ``"full"`` (complete state_dicts) or ``"geosane"`` (the original: untokenized tensors are
            inherited from the prompt).
        collection: Collector output folder with anchors for ``"kde"``/``"bootstrap"``.
        max_anchors / candidates / keep / rounds: Sampler sizes.
        reference: ``(images [M, C, H, W], labels [M])`` for scoring (default: packaged Landsat-8 cloud patches).
        calibrate: Re-estimate BatchNorm statistics (skipped, and said so, when the model has none).
        calibration_data: ``[M, C, H, W]`` images (default: packaged scene patches of ``bands``).
        calibration_count: Patches drawn for calibration.
        img_size: Patch size (default: the target's input size).
        window_batch_size: Windows per encode/decode pass.
        model_id / revision: Recorded in the provenance (default: ``model.name_or_path``).
        show_progress: Progress bars.

    Returns:
        A :class:`GenerationOutput`.

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
    seed = _check_int("seed", seed, -(2**63))
    num_samples = _check_int("num_samples", num_samples, 1)
    if sampler not in SAMPLERS:
        raise GenerationError(f"expected sampler in {SAMPLERS}, got {sampler!r}")
    if not (isinstance(noise_scale, (int, float)) and math.isfinite(noise_scale) and noise_scale >= 0):
        raise GenerationError(f"expected a finite noise_scale >= 0, got {noise_scale!r}")
    if in_chans is not None:
        _check_int("in_chans", in_chans, 1)
    if sampler == "kde" and collection is None:
        raise GenerationError("expected collection=<collector output folder> for sampler 'kde', got None")
    if bands is not None:
        from geosane_hf.imagery.bands import BandNameError, resolve_bands

        try:
            bands = resolve_bands(bands, sensor)  # B8 vs B08: never guessed silently
        except BandNameError as error:
            raise GenerationError(str(error)) from error
        if in_chans is not None and in_chans != len(bands):
            raise GenerationError(f"expected in_chans == len(bands) = {len(bands)}, got in_chans={in_chans}")
        in_chans = len(bands)  # the bands fix the target's input channels
    for name, value in (("candidates", candidates), ("keep", keep), ("rounds", rounds), ("max_anchors", max_anchors)):
        _check_int(name, value, 1)
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "encode_long"):
        raise GenerationError(f"expected a GeoSANEModel, got {type(model).__name__}")
    timer = _Timer()
    model.eval()

    with timer("prompt"):
        fitted, target = _fit_prompt(
            prompt,
            architecture=architecture,
            in_chans=in_chans,
            num_classes=num_classes,
            bands=bands,
            band_method=band_method,
            seed=seed,
            copy_tensors=False,  # read-only here: no second copy of the prompt
        )
    in_chans = int(target.pretrained_cfg.get("in_chans", 0) or _stem_in_chans(fitted.state_dict, target)[1])
    num_classes = int(target.num_classes)
    bands = bands or fitted.notes.get("bands") or default_bands(in_chans)
    head_keys = [
        k for k in fitted.notes["from_target_init"] if any(k.startswith(f"{p}.") for p in _head_prefixes(target))
    ]
    # The target's seeded init is only needed for the head (kept in `fitted`) and as the architecture: its
    # tensors go to the meta device and every generated model is the skeleton filled with decoded tensors.
    skeleton = _offload(target)
    release_freed_memory()

    tokenizer = tokenizer or WeightTokenizer(config.token_size, mode=tokenizer_mode)
    with timer("tokenize"):
        tokenized = tokenizer.tokenize(fitted.state_dict)
    known: list[str] = []
    if collection is not None:
        from geosane_hf.collection.collector import read_index

        known = [f"{r.id} ({(r.architecture or {}).get('name', '?')})" for r in read_index(collection)]
    _check_coverage(model, tokenized, tokenizer, known)
    inherited = tokenized.layout.missing_keys
    # Keep from the prompt only what the output takes from it (head init, "geosane"-mode untokenized tensors).
    prompt_keys = list(fitted.state_dict)
    from_prompt = {k: fitted.state_dict[k] for k in (*inherited, *head_keys)}
    fitted.state_dict = {}  # the prompt's tensors are in the tokens now: free them
    layout = tokenized.layout
    device = model.device
    long_kwargs = {"batch_size": window_batch_size, "show_progress": show_progress}

    # A model trained on per-layer standardised tokens (config.token_normalization == "per-layer", see
    # geosane_hf.token_norm) encodes every model standardised with its own statistics; the decoded tokens are mapped
    # back with the prompt's, so the prompt supplies each layer's first two moments.
    per_layer = getattr(config, "token_normalization", "none") == "per-layer"
    prompt_stats = layer_stats(tokenized.tokens, tokenized.mask, tokenized.positions) if per_layer else None

    def encode(tok: TokenizedWeights) -> torch.Tensor:
        valid = (tok.num_real > 0).to(device)  # [N]; padding only ever ends a token
        mask = valid[:, None].expand(-1, tok.tokens.shape[1])  # [N, T] view, no memory
        tokens = tok.tokens
        if per_layer:
            tokens = standardize(tokens, tok.mask, layer_stats(tokens, tok.mask, tok.positions))
        tokens = tokens.to(device, model.dtype)  # [N, T]
        return model.encode_long(
            tokens, tok.positions.to(device).long(), mask, tok.layer_types.to(device), **long_kwargs
        )

    with timer("encode"):
        prompt_latents = encode(tokenized)  # [N, L]
    positions = tokenized.positions.to(device).long()  # [N, 3]
    layer_types = tokenized.layer_types.to(device)  # [N]
    prompt_layer_types = tokenized.layer_types
    del tokenized  # the tokens [N, T] are not needed any more
    release_freed_memory()

    anchors = prompt_latents[None]  # [A, N, L]
    anchor_ids, anchor_match = ["prompt"], "prompt only"
    if collection is not None and sampler in ("kde", "bootstrap"):
        with timer("anchors"):
            toks, ids, anchor_match = _collection_anchors(
                collection, tokenizer, layout, prompt_layer_types, max_anchors
            )
            extra = []
            for tok in toks:
                z = encode(tok)
                if tok.layout.fingerprint != layout.fingerprint:
                    z = align_latents(tok.layout, z, layout)
                extra.append(z)
            del toks
            anchors = torch.cat([anchors, torch.stack(extra)]) if extra else anchors
            anchor_ids += ids

    generator = torch.Generator().manual_seed(seed)

    def materialise(latents: torch.Tensor) -> nn.Module:
        with timer("decode"):
            decoded = model.decode_long(latents, positions, layer_types, **long_kwargs)  # [N, T]
        with timer("detokenize"):
            # detokenize reads the real values only: the padding of the decoded tokens never matters
            decoded = decoded.to("cpu", torch.float32)
            if prompt_stats is not None:
                decoded = destandardize(decoded, torch.ones((), dtype=torch.bool), prompt_stats)
            sd = tokenizer.detokenize(decoded, layout)
            del decoded
            for key in inherited:  # "geosane" mode: tensors the model does not generate come from the prompt
                sd[key] = from_prompt[key].clone()
            for key in head_keys:  # the task head is re-initialised (seeded target init)
                sd[key] = from_prompt[key].clone()
            sd = {k: sd[k] for k in prompt_keys}
            if skeleton is not None:
                net = _instantiate(skeleton, sd)  # the model's tensors are sd's: no init, no copy
            else:
                net = _timm_model(fitted.architecture, seed, in_chans=in_chans, num_classes=num_classes)
                net.load_state_dict(sd, strict=True)
                net.eval()
        return net

    calib_images, calib_info = None, None
    if calibrate:
        with timer("calibration_data"):
            calib_images, calib_info = _calibration_images(
                target, calibration_data, bands, img_size, calibration_count
            )

    report: CalibrationReport | None = None

    def finish(net: nn.Module) -> None:
        nonlocal report
        if calib_images is not None:
            with timer("calibrate"):
                report = calibrate_batchnorm(
                    net, calib_images, show_progress=show_progress, channels_last=_CALIBRATE_CHANNELS_LAST
                )

    scores: list[float] | None = None
    sample_info: dict[str, Any] = {}
    if sampler == "bootstrap":
        ref_x, ref_y = _reference(target, reference, bands, img_size)
        pool: list[tuple[float, torch.Tensor]] = []
        current = anchors
        for round_index in range(rounds):
            with timer("sample"):
                latents = kde_sample(current, candidates, noise_scale, generator)  # [C, N, L]
            round_scores = []
            for z in latents:
                net = materialise(z)
                finish(net)
                with timer("score"):
                    s = _score(net, ref_x, ref_y)
                del net
                round_scores.append(s)
                pool.append((s, z))
            order = sorted(range(len(round_scores)), key=lambda i: -round_scores[i])[:keep]
            current = latents[order]  # refit the KDE on the best
            sample_info.setdefault("rounds", []).append({"round": round_index, "scores": round_scores})
        pool.sort(key=lambda item: -item[0])
        chosen = pool[:num_samples]
        scores = [s for s, _ in chosen]
        samples = torch.stack([z for _, z in chosen])
    else:
        with timer("sample"):
            if sampler == "prompt-noise":
                samples = prompt_noise(prompt_latents, num_samples, noise_scale, generator)  # [S, N, L]
            else:
                samples = kde_sample(anchors, num_samples, noise_scale, generator)  # [S, N, L]
    del anchors, prompt_latents

    state_dicts, models = [], []
    for z in samples:
        net = materialise(z)
        finish(net)
        with timer("detokenize"):  # the returned state_dict is a copy: training the model leaves it unchanged
            state_dicts.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        _check_finite_output(state_dicts[-1], len(models))
        models.append(net)

    name_or_path = (
        model_id or getattr(model, "name_or_path", None) or getattr(config, "_name_or_path", "") or "unsaved"
    )
    provenance = {
        "geosane_model": name_or_path,
        "geosane_revision": revision or getattr(config, "_commit_hash", None),
        "geosane_config": {
            k: getattr(config, k, None)
            for k in ("token_size", "hidden_size", "latent_size", "window_size", "halo_size", "token_normalization")
        },
        "prompt": str(prompt) if not isinstance(prompt, nn.Module) else fitted.source,
        "prompt_source": fitted.source,
        "architecture": fitted.architecture,
        "in_chans": in_chans,
        "num_classes": num_classes,
        "bands": list(bands) if bands else None,
        "band_adaptation": fitted.notes.get("band_adaptation", {}),
        "head": fitted.notes["head"],
        "sampler": sampler,
        "seed": seed,
        "noise_scale": float(noise_scale),
        "num_samples": num_samples,
        "tokenizer": {"mode": tokenizer.mode, "token_size": tokenizer.token_size, "num_tokens": layout.num_tokens},
        "inherited_from_prompt": inherited,
        "anchors": {"ids": anchor_ids, "match": anchor_match, "collection": str(collection) if collection else None},
        "calibration": (
            {**calib_info, "batchnorm_layers": report.num_layers if report else 0}
            if calib_info
            else {"skipped": "calibrate=False" if not calibrate else "no images"}
        ),
        "scores": scores,
        **(
            {"bootstrap": {"candidates": candidates, "keep": keep, "rounds": rounds, **sample_info}}
            if sampler == "bootstrap"
            else {}
        ),
        "preprocessing": calib_info.get("preprocessing") if calib_info else None,
    }
    return GenerationOutput(state_dicts, models, provenance, dict(timer.seconds), scores)


def _check_finite_output(state_dict: Mapping[str, torch.Tensor], index: int) -> None:
    """Raises :class:`GenerationError` when a generated tensor holds NaN/Inf (never returned, never written)."""
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise GenerationError(
                f"expected finite generated weights, got {bad} NaN/Inf values in {key!r} of sample {index}; the "
                "GeoSANE model or its inputs are not finite (check the model's weights, noise_scale and the prompt)."
            )


def _input_size(target: nn.Module, img_size: int | None) -> int:
    return int(img_size or target.pretrained_cfg.get("input_size", (3, 224, 224))[-1])


def _calibration_images(
    target: nn.Module, data: torch.Tensor | None, bands: Sequence[str] | None, img_size: int | None, count: int
) -> tuple[torch.Tensor | None, dict[str, Any] | None]:
    if not batchnorm_layers(target):
        return None, {"skipped": f"{type(target).__name__} has no BatchNorm layers"}
    if data is not None:
        return data, {"source": "user images", "num_images": int(data.shape[0])}
    from geosane_hf.generation.data import calibration_images, scene_for_bands

    if scene_for_bands(bands) is None:
        raise GenerationError(
            f"expected band names of a packaged scene (Landsat-8 B1..B11 or Sentinel-2 B01..B12) for BatchNorm "
            f"calibration, got {list(bands) if bands else None}; pass calibration_data=[M, C, H, W] (e.g. SAR) or "
            "calibrate=False"
        )
    images = calibration_images(bands, _input_size(target, img_size), count)
    info = {
        "source": f"packaged {images.sensor} scene, {count} random patches",
        "num_images": int(images.images.shape[0]),
        "preprocessing": {"bands": list(images.bands), "mean": list(images.mean), "std": list(images.std)},
    }
    return images.images, info


def _reference(
    target: nn.Module,
    reference: tuple[torch.Tensor, torch.Tensor] | None,
    bands: Sequence[str] | None,
    img_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    if reference is not None:
        images, labels = reference
        return images, labels.long()
    from geosane_hf.generation.data import reference_set

    try:
        ref = reference_set(tuple(bands or ()), _input_size(target, img_size))
    except ValueError as error:
        raise GenerationError(str(error)) from error
    return ref.images, ref.labels
