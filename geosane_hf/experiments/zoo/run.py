"""The zoo experiment (SANE, Schürholt et al. 2024): generated models of a population's own architecture.

For one layout of the trained population (``geosane zoo train``; e.g. ``statlog_cnn`` at one width), this asks
whether GeoSANE's latent space does more than memorise its training checkpoints:

- **anchors**: the population members of that exact layout that were in GeoSANE's training set (held-out runs are
  reported, never used as anchors); their latents come from ``encode_long`` on the ``"full"`` tokenization;
- **generated**: latents sampled around the anchors (``kde``: SANE's per-token KDE; ``anchor-noise``: one anchor +
  Gaussian noise), decoded with ``decode_long`` and detokenized into the zoo builder's state_dict;
- **matched noise** (the opponent that matters, Zeng et al. 2025): for every generated model, its nearest anchor in
  weight space + isotropic noise of *exactly* the same L2 distance (:func:`~geosane_hf.evaluation.starts.prompt_plus_noise`);
- references: the anchors themselves (``population``), encoded -> decoded anchors without noise
  (``reconstruction``; decoding alone loses accuracy), held-out members encoded -> decoded
  (``reconstruction_heldout``) and the builder's random init (``random_init``);
- every start scored zero-shot on the population's own test split (``evaluate_model`` of the zoo, the member's
  native input) and after one fixed fine-tuning protocol (:class:`FinetuneProtocol`, identical for every start);
- the noise-vs-distance curve (anchor + noise at distances 0 .. 2x the generated models' median distance);
- interpolation between two members of different runs: in weight space vs decoded from the latent midpoint.

BatchNorm: the zoo's models have BatchNorm. With ``recalibrate_bn`` (default) *every* start (generated, noise,
random init, population, interpolations) has its running statistics re-estimated on the same train images before
it is scored (:func:`~geosane_hf.generation.calibration.calibrate_batchnorm`); BN statistics never count in a
distance and are never noised.

Results: :class:`ZooExperimentResult` (``to_dict``/``to_markdown``); :func:`run_zoo_experiment` writes
``zoo_experiment.json``, ``zoo_experiment.md``, ``noise_curve.png`` and ``interpolation.png`` into ``out_dir``
(settings in :mod:`.config`, results and tables in :mod:`.results`, figures in :mod:`.report`, the GeoSANE
view in :mod:`.codec`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosane_hf.evaluation.starts import noise_keys, prompt_plus_noise, weight_distance
from geosane_hf.experiments.zoo.codec import (
    _Codec,
    _dataset_models,
    _find_dataset,
    _select_layout,
    read_holdout_ids,
)
from geosane_hf.experiments.zoo.config import METHODS, FinetuneProtocol, ZooExperimentConfig, ZooExperimentError
from geosane_hf.experiments.zoo.results import (
    InterpolationPair,
    MethodSummary,
    NoiseCurvePoint,
    PopulationMember,
    ScoredModel,
    ZooExperimentResult,
)

__all__ = [
    "FinetuneProtocol",
    "InterpolationPair",
    "MethodSummary",
    "NoiseCurvePoint",
    "PopulationMember",
    "ScoredModel",
    "ZooExperimentConfig",
    "ZooExperimentError",
    "ZooExperimentResult",
    "finetune_zoo_model",
    "read_holdout_ids",
    "run_zoo_experiment",
]
# ------------------------------------------------------------------------------------------------------- helpers


def _derive(*parts: Any) -> int:
    """A stable 63-bit seed from any parts (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@contextlib.contextmanager
def _threads(num_threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _spread(items: Sequence[Any], k: int) -> list[Any]:
    """Up to `k` items evenly spread over the sequence (all when k >= len)."""
    if k >= len(items):
        return list(items)
    if k <= 0:
        return []
    return [items[round(i * (len(items) - 1) / max(k - 1, 1))] for i in range(k)] if k > 1 else [items[0]]


def _lerp(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    return {
        k: ((1 - alpha) * a[k].double() + alpha * b[k].double()).to(a[k].dtype)
        if a[k].is_floating_point()
        else a[k].clone()
        for k in a
    }


def finetune_zoo_model(net: nn.Module, data: Any, protocol: FinetuneProtocol, seed: int) -> nn.Module:
    """Fine-tunes a zoo model in place with the fixed protocol (same batches and flips for every start of a seed).

    Args:
        net: a model built by :mod:`geosane_hf.collection.architectures`.
        data: the zoo task's :class:`~geosane_hf.collection.zoo.TaskData`.
        protocol: the protocol.
        seed: seeds the batch order and the flips.

    Example:
        >>> from geosane_hf.collection.architectures import build_architecture
        >>> from geosane_hf.collection.zoo import evaluate_model, load_task_data
        >>> data = load_task_data("statlog-landsat")
        >>> net = finetune_zoo_model(build_architecture("statlog_cnn", width=4), data, FinetuneProtocol(), seed=0)
        >>> evaluate_model(net, data.test_x, data.test_y, "classification", 6)["accuracy"] > 0.5
        True
    """
    from geosane_hf.collection.zoo import train_on_task
    from geosane_hf.train_loop import LoopConfig

    generator = torch.Generator().manual_seed(_derive("finetune", seed))
    config = LoopConfig(
        epochs=protocol.epochs, batch_size=protocol.batch_size, lr=protocol.lr, weight_decay=protocol.weight_decay
    )
    train_on_task(net, data, config, generator, flips=protocol.flips)
    return net.eval()


class _Scorer:
    """Builds a start, recalibrates BN (same images for all), scores zero-shot and after fine-tuning."""

    def __init__(self, architecture: str, kwargs: dict[str, Any], data: Any, config: ZooExperimentConfig) -> None:
        self.architecture, self.kwargs, self.data, self.config = architecture, kwargs, data, config
        generator = torch.Generator().manual_seed(_derive("calibration"))
        count = min(config.calibration_images, len(data.train_x))
        self.calibration = data.train_x[torch.randperm(len(data.train_x), generator=generator)[:count]]

    def build(self, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
        from geosane_hf.collection.architectures import build_architecture

        net = build_architecture(self.architecture, **self.kwargs)
        net.load_state_dict(dict(state_dict), strict=True)
        return net.eval()

    def metric(self, net: nn.Module) -> float:
        from geosane_hf.collection.zoo import evaluate_model

        d = self.data
        return evaluate_model(net, d.test_x, d.test_y, d.task, d.num_classes, d.class_names)[d.metric]

    def zero_shot_model(self, state_dict: Mapping[str, torch.Tensor], recalibrate: bool | None = None) -> nn.Module:
        from geosane_hf.generation.calibration import calibrate_batchnorm

        net = self.build(state_dict)
        if self.config.recalibrate_bn if recalibrate is None else recalibrate:
            calibrate_batchnorm(net, self.calibration, batch_size=256)
        return net

    def score(self, state_dict: Mapping[str, torch.Tensor], finetune_seed: int | None) -> tuple[float, float | None]:
        net = self.zero_shot_model(state_dict)
        zero_shot = self.metric(net)
        if finetune_seed is None:
            return zero_shot, None
        return zero_shot, self.metric(finetune_zoo_model(net, self.data, self.config.finetune, finetune_seed))


def _summarize(scores: list[ScoredModel]) -> list[MethodSummary]:
    rows = []
    for method in METHODS:
        mine = [s for s in scores if s.method == method]
        if not mine:
            continue
        seeds = sorted({s.seed for s in mine})
        zs = _mean_std([statistics.fmean(s.zero_shot for s in mine if s.seed == seed) for seed in seeds])
        tuned = [s for s in mine if s.finetuned is not None]
        tuned_seeds = sorted({s.seed for s in tuned})
        ft = _mean_std([statistics.fmean(s.finetuned for s in tuned if s.seed == seed) for seed in tuned_seeds])
        pooled = [s.zero_shot for s in mine]
        distances = [s.distance for s in mine if s.distance is not None]
        rows.append(
            MethodSummary(
                method=method,
                count=len(mine),
                zero_shot_mean=zs[0],
                zero_shot_std=zs[1],
                zero_shot_min=min(pooled),
                zero_shot_median=statistics.median(pooled),
                zero_shot_max=max(pooled),
                finetuned_count=len(tuned),
                finetuned_mean=ft[0] if tuned else None,
                finetuned_std=ft[1] if tuned else None,
                distance_mean=statistics.fmean(distances) if distances else None,
            )
        )
    return rows


# ------------------------------------------------------------------------------------------------------- the run


def run_zoo_experiment(
    model: nn.Module | str | os.PathLike,
    zoo_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None,
    config: ZooExperimentConfig | None = None,
) -> ZooExperimentResult:
    """Runs the zoo experiment for one layout of the population and writes its report.

    Args:
        model: a :class:`~geosane_hf.modeling.GeoSANEModel` or its folder / Hub id (``from_pretrained``).
        zoo_dir: the population (``geosane zoo train --out DIR``).
        out_dir: where ``zoo_experiment.{json,md}``, ``noise_curve.png`` and ``interpolation.png`` go (created;
            files written atomically); None writes nothing.
        config: the settings (default :class:`ZooExperimentConfig`).

    Returns:
        The :class:`ZooExperimentResult`.

    Raises:
        ZooExperimentError: no member of the layout, fewer than 1 anchor, a model that does not fit the layout.

    Example:
        >>> import tempfile
        >>> from geosane_hf.collection.zoo import ZooConfig, train_zoo
        >>> from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
        >>> zoo = train_zoo(ZooConfig(tempfile.mkdtemp(), quick=True), progress=False).out_dir
        >>> geosane = GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()
        >>> cfg = ZooExperimentConfig(num_samples=2, seeds=(0,), curve_points=3, interpolation_pairs=1, progress=False)
        >>> result = run_zoo_experiment(geosane, zoo, tempfile.mkdtemp(), cfg)
        >>> result.method("generated").count, sorted(result.files)
        (2, ['interpolation_png', 'json', 'markdown', 'noise_curve_png'])
    """
    config = config or ZooExperimentConfig()
    start = time.perf_counter()
    with _threads(config.num_threads), torch.no_grad():
        result = _run(model, Path(zoo_dir), config)
    result.seconds = time.perf_counter() - start
    if out_dir is not None:
        from geosane_hf.experiments.zoo.report import write_report

        result.files = write_report(result, Path(out_dir))
    return result


def _load_geosane(model: nn.Module | str | os.PathLike) -> tuple[nn.Module, Path | None, str]:
    if isinstance(model, nn.Module):
        name = str(getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "") or "unsaved")
        return model.eval(), Path(name) if name != "unsaved" and Path(name).is_dir() else None, name
    from geosane_hf.modeling import GeoSANEModel

    loaded = GeoSANEModel.from_pretrained(str(model)).eval()
    return loaded, Path(model) if Path(model).is_dir() else None, str(model)


@dataclass
class _Setup:
    """What every stage needs: the members' weights and latents, the anchors, the codec and the scorer."""

    config: ZooExperimentConfig
    weights: dict[str, dict[str, torch.Tensor]]  # id -> state_dict in the builder's key order
    latents: dict[str, torch.Tensor]  # id -> [N, L]
    anchor_ids: list[str]
    heldout_ids: list[str]
    run_of: dict[str, str]
    keys: list[str]  # parameters: what distances and noise use (BN statistics excluded)
    codec: _Codec
    scorer: _Scorer

    def distance(self, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
        return weight_distance(a, b, self.keys)

    def nearest(self, state_dict: Mapping[str, torch.Tensor]) -> tuple[str, float]:
        """The nearest anchor in weight space and its distance."""
        distance, anchor = min((self.distance(self.weights[i], state_dict), i) for i in self.anchor_ids)
        return anchor, distance

    def noisy(self, anchor: str, distance: float, *seed_parts: Any) -> dict[str, torch.Tensor]:
        """`anchor` + isotropic noise of exactly `distance` over the parameters (head included, BN stats not)."""
        generator = torch.Generator().manual_seed(_derive(*seed_parts))
        return prompt_plus_noise(self.weights[anchor], distance=distance, exclude=(), generator=generator).state_dict


def _run(model_arg: Any, zoo_dir: Path, config: ZooExperimentConfig) -> ZooExperimentResult:
    from geosane_hf.collection.zoo import load_task_data, load_zoo_model, read_index

    model, model_dir, model_name = _load_geosane(model_arg)
    index = read_index(zoo_dir)
    if not index["models"]:
        raise ZooExperimentError(
            f"expected a trained population in {zoo_dir} (index.json), got none; run `geosane zoo train`"
        )
    kwargs, records = _select_layout(index["models"], config)
    data = load_task_data(records[0]["dataset"])
    membership = _membership(records, config, model_dir)
    # The builder's key order (safetensors files list keys alphabetically): the tokenized layout of the dataset
    # GeoSANE trained on follows the model's own order, so the latents are only meaningful in that order.
    weights = {r["id"]: {k: v.clone() for k, v in load_zoo_model(zoo_dir, r).state_dict().items()} for r in records}
    scorer = _Scorer(config.architecture, kwargs, data, config)
    members = [
        PopulationMember(
            id=r["id"],
            run_id=r["run_id"],
            epoch=int(r["epoch"]),
            is_final=bool(r["is_final"]),
            recorded=float(r["test_metric"]),
            measured=scorer.metric(scorer.build(weights[r["id"]])),
            in_training_set=membership["known"][r["id"]],
            role=membership["roles"][r["id"]],
        )
        for r in records
    ]
    anchor_ids = [m.id for m in members if m.role == "anchor"]
    codec = _Codec(model, weights[anchor_ids[0]], membership["info"]["tokenizer_mode"], config.window_batch_size)
    other = sorted(i for i, f in membership["fingerprints"].items() if f != codec.layout.fingerprint)
    if other:
        raise ZooExperimentError(
            f"expected the members to tokenize exactly as in GeoSANE's dataset {membership['info']['dataset_dir']} "
            f"(layout fingerprint {codec.layout.fingerprint}), got other fingerprints for {other[:3]}: key order or "
            "tokenizer mode differ"
        )
    codec.fit_stats([weights[i] for i in anchor_ids])
    setup = _Setup(
        config=config,
        weights=weights,
        latents={i: codec.encode(weights[i]) for i in weights},
        anchor_ids=anchor_ids,
        heldout_ids=[m.id for m in members if m.role == "held-out"],
        run_of={m.id: m.run_id for m in members},
        keys=noise_keys(weights[anchor_ids[0]]),
        codec=codec,
        scorer=scorer,
    )
    scores = _score_starts(setup)
    curve, curve_anchors = _noise_curve(setup, scores)
    interpolation = _interpolation(setup)
    anchor_nn = []
    for i in anchor_ids:
        others = [setup.distance(weights[i], weights[j]) for j in anchor_ids if setup.run_of[j] != setup.run_of[i]]
        if others:
            anchor_nn.append(min(others))
    norms = [math.sqrt(sum(float((weights[i][k].double() ** 2).sum()) for k in setup.keys)) for i in anchor_ids]
    distances = {
        "generated_to_nearest_anchor": _describe([s.distance for s in scores if s.method == "generated"]),
        "reconstruction_to_own_anchor": _describe([s.distance for s in scores if s.method == "reconstruction"]),
        "anchor_to_nearest_other_run": _describe(anchor_nn),
        "anchor_norm": _describe(norms),
        "curve_anchors": curve_anchors,
        "num_tokens": codec.num_tokens,
        "num_parameters": sum(weights[anchor_ids[0]][k].numel() for k in setup.keys),
    }
    return ZooExperimentResult(
        config=config.to_dict(),
        geosane_model=model_name,
        zoo_dir=str(zoo_dir),
        architecture=config.architecture,
        architecture_kwargs=kwargs,
        dataset=records[0]["dataset"],
        metric=data.metric,
        members=members,
        training_info=membership["info"],
        scores=scores,
        summary=_summarize(scores),
        curve=curve,
        interpolation=interpolation,
        distances=distances,
    )


def _membership(records: list[dict[str, Any]], config: ZooExperimentConfig, model_dir: Path | None) -> dict[str, Any]:
    """Who was in GeoSANE's training set, who is an anchor, and the dataset's tokenizer mode and fingerprints."""
    holdout = list(config.holdout_ids) if config.holdout_ids is not None else None
    holdout_source = "config" if holdout is not None else None
    if holdout is None and model_dir is not None:
        holdout = read_holdout_ids(model_dir)
        holdout_source = str(model_dir / "README.md") if holdout is not None else None
    dataset_dir = config.dataset_dir or _find_dataset(model_dir)
    ids = [r["id"] for r in records]
    dataset_ids, dataset_mode, fingerprints = _dataset_models(dataset_dir, ids) if dataset_dir else (None, None, {})
    held = set(holdout or ())

    def in_training(model_id: str) -> bool | None:
        if model_id in held:
            return False
        if dataset_ids is not None:
            return model_id in dataset_ids
        return True if holdout is not None else None  # no dataset: every zoo member was collected

    known = {i: in_training(i) for i in ids}
    use_train = config.anchors == "train" and any(k is True for k in known.values())
    roles = {
        i: "anchor" if known[i] is True or not use_train else ("held-out" if i in held else "not-anchor") for i in ids
    }
    if "anchor" not in roles.values():
        raise ZooExperimentError(
            f"expected at least one anchor among the {len(ids)} members of {config.architecture}, got none (all "
            "held out?); pass anchors='all'"
        )
    info = {
        "holdout_ids": sorted(held) if holdout is not None else None,
        "holdout_source": holdout_source or "unknown (no model card with held-out ids; pass holdout_ids)",
        "dataset_dir": dataset_dir,
        "tokenizer_mode": config.tokenizer_mode or dataset_mode or "full",
        "anchors": "members in GeoSANE's training set" if use_train else "every member of the layout",
        "bn": "recalibrated on the same train images for every start" if config.recalibrate_bn else "as decoded",
    }
    return {"known": known, "roles": roles, "info": info, "fingerprints": fingerprints}


def _sample_latents(setup: _Setup, seed: int) -> torch.Tensor:
    """``[S, N, L]`` latents for one seed."""
    from geosane_hf.generation.samplers import kde_sample, latent_scale

    config = setup.config
    anchors = torch.stack([setup.latents[i] for i in setup.anchor_ids])  # [A, N, L]
    generator = torch.Generator().manual_seed(_derive("sample", seed))
    if config.sampler == "kde":
        return kde_sample(anchors, config.num_samples, config.noise_scale, generator)  # [S, N, L]
    picks = torch.randint(len(anchors), (config.num_samples,), generator=generator)  # [S]
    eps = torch.randn((config.num_samples, *anchors.shape[1:]), generator=generator)  # [S, N, L]
    return anchors[picks] + config.noise_scale * latent_scale(anchors) * eps


def _score_starts(setup: _Setup) -> list[ScoredModel]:
    """Every start of every seed, zero-shot and after the fine-tuning protocol."""
    from tqdm.auto import tqdm

    from geosane_hf.collection.architectures import build_architecture

    config, scorer, weights = setup.config, setup.scorer, setup.weights
    tuned_anchors = set(_spread(setup.anchor_ids, config.population_finetune))
    decoded = {i: setup.codec.decode(setup.latents[i]) for i in setup.anchor_ids + setup.heldout_ids}
    per_seed = 3 * config.num_samples + 2 * len(setup.anchor_ids) + len(setup.heldout_ids)
    bar = tqdm(total=len(config.seeds) * per_seed, desc="zoo experiment", unit="model", disable=not config.progress)
    scores: list[ScoredModel] = []

    def add(method: str, seed: int, name: str, sd: Mapping[str, torch.Tensor], tune: bool, **extra: Any) -> None:
        zero_shot, tuned = scorer.score(sd, seed if tune else None)
        scores.append(ScoredModel(method, seed, name, zero_shot, tuned, **extra))
        bar.update(1)

    for seed in config.seeds:
        for i in setup.anchor_ids:
            add("population", seed, i, weights[i], i in tuned_anchors)
            distance = setup.distance(weights[i], decoded[i])
            add("reconstruction", seed, i, decoded[i], i in tuned_anchors, distance=distance, nearest=i)
        for i in setup.heldout_ids:
            distance = setup.distance(weights[i], decoded[i])
            add("reconstruction_heldout", seed, i, decoded[i], True, distance=distance, nearest=i)
        for s, z in enumerate(_sample_latents(setup, seed)):
            sd = setup.codec.decode(z)
            anchor, distance = setup.nearest(sd)
            add("generated", seed, f"sample {s}", sd, True, distance=distance, nearest=anchor)
            noise = setup.noisy(anchor, distance, "matched", seed, s)
            measured = setup.distance(weights[anchor], noise)
            add("matched_noise", seed, f"{anchor} + noise", noise, True, distance=measured, nearest=anchor)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_derive("init", seed, s) % (2**31))
                init = build_architecture(config.architecture, **scorer.kwargs).state_dict()
            add("random_init", seed, f"init {s}", init, True)
    bar.close()
    return scores


def _noise_curve(setup: _Setup, scores: list[ScoredModel]) -> tuple[list[NoiseCurvePoint], list[str]]:
    """Anchor + noise at distances 0 .. curve_max_factor x the generated models' median distance (zero-shot)."""
    from tqdm.auto import tqdm

    config, scorer = setup.config, setup.scorer
    generated = [s for s in scores if s.method == "generated"]
    top = config.curve_max_factor * statistics.median(s.distance for s in generated)
    often = sorted(setup.anchor_ids, key=lambda i: (-sum(s.nearest == i for s in generated), i))
    anchors = often[: config.curve_anchors]
    grid = [top * k / (config.curve_points - 1) for k in range(config.curve_points)]
    curve = []
    for k, distance in enumerate(tqdm(grid, desc="noise curve", unit="distance", disable=not config.progress)):
        values = [
            scorer.metric(scorer.zero_shot_model(setup.noisy(anchor, distance, "curve", k, a, draw)))
            for a, anchor in enumerate(anchors)
            for draw in range(config.curve_draws)
        ]
        mean, std = _mean_std(values)
        curve.append(NoiseCurvePoint(distance, mean, std, len(values)))
    return curve, anchors


def _interpolation(setup: _Setup) -> list[InterpolationPair]:
    """Pairs of anchors of different runs: weight-space lerp vs decoded latent lerp, zero-shot along alpha."""
    from tqdm.auto import tqdm

    config, scorer, weights, latents = setup.config, setup.scorer, setup.weights, setup.latents
    ids = setup.anchor_ids
    pairs = [(a, b) for n, a in enumerate(ids) for b in ids[n + 1 :] if setup.run_of[a] != setup.run_of[b]]
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(_derive("pairs"))).tolist()
    chosen = [pairs[p] for p in order[: config.interpolation_pairs]]
    out = []
    for a, b in tqdm(chosen, desc="interpolation", unit="pair", disable=not config.progress):
        in_weights = [scorer.metric(scorer.zero_shot_model(_lerp(weights[a], weights[b], t))) for t in config.alphas]
        in_latents = [
            scorer.metric(scorer.zero_shot_model(setup.codec.decode((1 - t) * latents[a] + t * latents[b])))
            for t in config.alphas
        ]
        out.append(
            InterpolationPair(
                a, b, setup.distance(weights[a], weights[b]), list(config.alphas), in_weights, in_latents
            )
        )
    return out


def _describe(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    mean, std = _mean_std(values)
    return {"mean": mean, "std": std, "min": min(values), "median": statistics.median(values), "max": max(values)}
