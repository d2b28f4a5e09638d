"""The zoo experiment (SANE, Schürholt et al. 2024): generated models of a population's own architecture.

For one layout of the trained population (``geosane zoo train``; ``--preset statlog-w8`` trains one layout with
enough runs), this asks whether GeoSANE's latent space generates models that are good *and* new, or only
memorises its training checkpoints:

- **alignment** (``align``): every member is weight-matched (Git Re-Basin, :func:`~geosane_hf.augmentations.
  weight_matching`) to the best anchor first. Function-preserving (each member's measured metric is checked against
  the recorded one), and it removes the permutation symmetry: without it "new" models may be permuted copies,
  midpoints of two members average unrelated units, and distances to the nearest member are inflated;
- **anchors**: the aligned members of that layout that were in GeoSANE's training set (held-out runs are reported,
  never used as anchors), encoded with ``encode_long`` standardised with their own per-layer statistics;
- **generated**: samples of a generation sampler (:mod:`geosane_hf.generation.samplers`): ``interpolate``
  (default; whole models ``(1 - t) z_a + t z_b`` between two anchors, decoded with the same mixture of their
  statistics) or ``kde`` (SANE's per-token KDE, kept as the negative reference);
- **matched noise** (the opponent that matters, Zeng et al. 2025): for every generated model, its nearest anchor in
  the aligned frame + isotropic noise of *exactly* the same L2 distance
  (:func:`~geosane_hf.evaluation.starts.prompt_plus_noise`);
- references: the anchors themselves (``population``), encoded -> decoded anchors mapped back with their own
  statistics (``reconstruction``), held-out members encoded -> decoded (``reconstruction_heldout``) and the
  builder's random init (``random_init``);
- every start scored zero-shot on the population's own test split and after one fixed fine-tuning protocol
  (:class:`FinetuneProtocol`, identical for every start);
- the **quality-novelty curve**: generated models at interpolation weights ``curve_interpolations`` (novelty grows
  with t) and matched noise at each one's distance to its nearest anchor;
- interpolation between two aligned members of different runs: in weight space vs decoded from the latent path;
- the issue-15 targets with verdicts that respect the spread over seeds (:attr:`ZooExperimentResult.targets`).

BatchNorm: with ``recalibrate_bn`` (default) *every* start has its running statistics re-estimated on the same train
images before it is scored; BN statistics never count in a distance and are never noised.

Results: :class:`ZooExperimentResult` (``to_dict``/``to_markdown``); :func:`run_zoo_experiment` writes
``zoo_experiment.json``, ``zoo_experiment.md``, ``quality_novelty.png`` and ``interpolation.png`` into ``out_dir``.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosane_hf.evaluation.starts import noise_keys, prompt_plus_noise, weight_distance
from geosane_hf.experiments.zoo.codec import (
    ZooCodec,
    _dataset_models,
    _find_dataset,
    _select_layout,
    read_holdout_ids,
)
from geosane_hf.experiments.zoo.config import ZooExperimentConfig, ZooExperimentError
from geosane_hf.experiments.zoo.results import (
    PopulationMember,
    ScoredModel,
    ZooExperimentResult,
)
from geosane_hf.experiments.zoo.scoring import (
    Scorer,
    _derive,
    _mean_std,
    _spread,
    _threads,
    finetune_zoo_model,
    summarize,
)
from geosane_hf.generation.latents import AnchorSet, EncodedWeights

__all__ = ["finetune_zoo_model", "read_holdout_ids", "run_zoo_experiment"]


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
        out_dir: where ``zoo_experiment.{json,md}``, ``quality_novelty.png`` and ``interpolation.png`` go (created;
            files written atomically); None writes nothing.
        config: the settings (default :class:`ZooExperimentConfig`).

    Returns:
        The :class:`ZooExperimentResult`.

    Raises:
        ZooExperimentError: no member of the layout, fewer than 2 anchors, a model that does not fit the layout.

    Example:
        >>> import tempfile
        >>> from geosane_hf.collection.zoo import ZooConfig, train_zoo
        >>> from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
        >>> zoo = train_zoo(ZooConfig(tempfile.mkdtemp(), quick=True), progress=False).out_dir
        >>> geosane = GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()
        >>> cfg = ZooExperimentConfig(num_samples=2, seeds=(0,), curve_interpolations=(0.0, 0.5), curve_samples=1,
        ...                           interpolation_pairs=1, population_finetune=1, progress=False)
        >>> result = run_zoo_experiment(geosane, zoo, tempfile.mkdtemp(), cfg)
        >>> result.method("generated").count, sorted(result.files)
        (2, ['interpolation_png', 'json', 'markdown', 'quality_novelty_png'])
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
    """What every stage needs: the (aligned) members' weights and latents, the anchors, the codec and the scorer."""

    config: ZooExperimentConfig
    model: nn.Module
    weights: dict[str, dict[str, torch.Tensor]]  # id -> state_dict (aligned to `reference`), builder's key order
    encoded: dict[str, EncodedWeights]  # id -> latents [N, L] + own per-layer statistics
    anchor_ids: list[str]
    heldout_ids: list[str]
    reference: str  # the anchor every member is aligned to
    run_of: dict[str, str]
    keys: list[str]  # parameters: what distances and noise use (BN statistics excluded)
    codec: ZooCodec
    scorer: Scorer

    def distance(self, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
        return weight_distance(a, b, self.keys)

    def nearest(self, state_dict: Mapping[str, torch.Tensor]) -> tuple[str, float]:
        """The nearest anchor (in the aligned frame: modulo permutations) and its distance."""
        distance, anchor = min((self.distance(self.weights[i], state_dict), i) for i in self.anchor_ids)
        return anchor, distance

    def noisy(self, anchor: str, distance: float, *seed_parts: Any) -> dict[str, torch.Tensor]:
        """`anchor` + isotropic noise of exactly `distance` over the parameters (head included, BN stats not)."""
        generator = torch.Generator().manual_seed(_derive(*seed_parts))
        return prompt_plus_noise(self.weights[anchor], distance=distance, exclude=(), generator=generator).state_dict

    def reconstruction(self, member: str) -> dict[str, torch.Tensor]:
        """The member encoded -> decoded, mapped back with its own statistics."""
        return self.codec.decode(self.encoded[member].latents, self.encoded[member])

    def sample(self, count: int, seed_parts: Sequence[Any], interpolation: tuple[float, float] | None = None):
        """``count`` generated state_dicts (with their per-sample record) from the configured sampler."""
        from geosane_hf.generation.outputs import StepTimer
        from geosane_hf.generation.samplers import InterpolationSampler, KDESampler, SamplingContext
        from geosane_hf.generation.selection import CandidateSelector

        config = self.config
        low, high = interpolation or tuple(config.interpolation)
        anchors = AnchorSet(
            list(self.anchor_ids),
            torch.stack([self.encoded[i].latents for i in self.anchor_ids]),  # [A, N, L]
            [self.encoded[i] for i in self.anchor_ids],
            "aligned members of the layout" if config.align else "members of the layout",
        )
        if config.sampler == "interpolate":
            sampler = InterpolationSampler(
                interpolation_min=low,
                interpolation_max=high,
                pairs="anchors",
                decode="plain",
                max_anchors=len(anchors),
            )
        else:
            sampler = KDESampler(noise_scale=config.noise_scale if interpolation is None else low)
        reference = self.encoded[self.reference]

        def decode(candidate: Any) -> dict[str, torch.Tensor]:
            return self.codec.decode(candidate.latents, reference, stats=anchors.stats_of(candidate.stats))

        generator = torch.Generator().manual_seed(_derive(*seed_parts))
        ctx = SamplingContext(
            prompt=reference,
            anchors=anchors,
            model=self.model,
            generator=generator,
            num_samples=count,
            materialise=lambda c: self.scorer.zero_shot_model(decode(c)),
            selector=CandidateSelector(None),
            timer=StepTimer(),
        )
        candidates = sampler.sample(ctx).candidates[:count]
        return [(decode(c), c.describe()) for c in candidates]


def _align(
    weights: dict[str, dict[str, torch.Tensor]], reference: str, architecture: str, kwargs: Mapping[str, Any]
) -> str:
    """Weight-matches every member to ``reference`` in place; returns how (or why not)."""
    from geosane_hf.augmentations import permutation_spec, weight_matching
    from geosane_hf.augmentations.spec import UnsupportedArchitectureError

    try:
        spec = permutation_spec(architecture, **kwargs)
    except UnsupportedArchitectureError as error:
        return f"not aligned: {error}"
    for member, state_dict in weights.items():
        if member != reference:  # the group order of each sweep is seeded: the same members align the same way
            generator = torch.Generator().manual_seed(_derive("align", member))
            weights[member] = weight_matching(state_dict, weights[reference], spec, generator=generator).state_dict
    return f"weight matching (Git Re-Basin) of every member to {reference}"


def _run(model_arg: Any, zoo_dir: Path, config: ZooExperimentConfig) -> ZooExperimentResult:
    from geosane_hf.collection.zoo import load_task_data, load_zoo_model, read_zoo_index

    model, model_dir, model_name = _load_geosane(model_arg)
    index = read_zoo_index(zoo_dir)
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
    anchor_ids = [r["id"] for r in records if membership["roles"][r["id"]] == "anchor"]
    if len(anchor_ids) < 2:
        raise ZooExperimentError(
            f"expected at least 2 anchors of the layout to sample between, got {len(anchor_ids)}; pass anchors='all' "
            "or train a larger population (geosane zoo train --preset statlog-w8)"
        )
    recorded = {r["id"]: float(r["test_metric"]) for r in records}
    reference = max(anchor_ids, key=lambda i: (recorded[i], i))
    alignment = _align(weights, reference, config.architecture, kwargs) if config.align else "not aligned (off)"
    scorer = Scorer(config.architecture, kwargs, data, config)
    members = [
        PopulationMember(
            id=r["id"],
            run_id=r["run_id"],
            epoch=int(r["epoch"]),
            is_final=bool(r["is_final"]),
            recorded=recorded[r["id"]],
            measured=scorer.metric(scorer.build(weights[r["id"]])),  # aligned: must still equal `recorded`
            in_training_set=membership["known"][r["id"]],
            role=membership["roles"][r["id"]],
        )
        for r in records
    ]
    codec = ZooCodec(model, weights[anchor_ids[0]], membership["info"]["tokenizer_mode"], config.window_batch_size)
    other = sorted(i for i, f in membership["fingerprints"].items() if f != codec.layout.fingerprint)
    if other:
        raise ZooExperimentError(
            f"expected the members to tokenize exactly as in GeoSANE's dataset {membership['info']['dataset_dir']} "
            f"(layout fingerprint {codec.layout.fingerprint}), got other fingerprints for {other[:3]}: key order or "
            "tokenizer mode differ"
        )
    membership["info"]["alignment"] = alignment
    setup = _Setup(
        config=config,
        model=model,
        weights=weights,
        encoded={i: codec.encode(weights[i], i) for i in weights},
        anchor_ids=anchor_ids,
        heldout_ids=[m.id for m in members if m.role == "held-out"],
        reference=reference,
        run_of={m.id: m.run_id for m in members},
        keys=noise_keys(weights[anchor_ids[0]]),
        codec=codec,
        scorer=scorer,
    )
    from geosane_hf.experiments.zoo.curves import interpolation_pairs, novelty_curve, targets

    scores = _score_starts(setup)
    curve = novelty_curve(setup)
    interpolation = interpolation_pairs(setup)
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
        "num_tokens": codec.num_tokens,
        "num_parameters": sum(weights[anchor_ids[0]][k].numel() for k in setup.keys),
    }
    summary = summarize(scores)
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
        summary=summary,
        curve=curve,
        interpolation=interpolation,
        distances=distances,
        targets=targets(scores, members, interpolation, config),
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


def _score_starts(setup: _Setup) -> list[ScoredModel]:
    """Every start of every seed, zero-shot and after the fine-tuning protocol."""
    from tqdm.auto import tqdm

    from geosane_hf.collection.architectures import build_architecture

    config, scorer, weights = setup.config, setup.scorer, setup.weights
    tuned_anchors = set(_spread(setup.anchor_ids, config.population_finetune))
    decoded = {i: setup.reconstruction(i) for i in setup.anchor_ids + setup.heldout_ids}
    per_seed = 3 * config.num_samples + 2 * len(setup.anchor_ids) + len(setup.heldout_ids)
    bar = tqdm(total=len(config.seeds) * per_seed, desc="zoo experiment", unit="model", disable=not config.progress)
    scores: list[ScoredModel] = []

    def add(
        method: str, seed: int, name: str, sd: Mapping[str, torch.Tensor], tune: bool, key: str | None = None, **extra
    ) -> None:
        zero_shot, tuned = scorer.score(sd, seed if tune else None, key=key)
        scores.append(ScoredModel(method, seed, name, zero_shot, tuned, **extra))
        bar.update(1)

    for seed in config.seeds:
        for i in setup.anchor_ids:
            add("population", seed, i, weights[i], i in tuned_anchors, key=f"population:{i}")
            distance = setup.distance(weights[i], decoded[i])
            add(
                "reconstruction",
                seed,
                i,
                decoded[i],
                i in tuned_anchors,
                key=f"reconstruction:{i}",
                distance=distance,
                nearest=i,
            )
        for i in setup.heldout_ids:
            distance = setup.distance(weights[i], decoded[i])
            add("reconstruction_heldout", seed, i, decoded[i], True, distance=distance, nearest=i)
        for s, (sd, record) in enumerate(setup.sample(config.num_samples, ("sample", seed))):
            anchor, distance = setup.nearest(sd)
            pair = " + ".join(record.get("anchor_ids", []))
            add("generated", seed, f"sample {s} ({pair})", sd, True, distance=distance, nearest=anchor)
            noise = setup.noisy(anchor, distance, "matched", seed, s)
            measured = setup.distance(weights[anchor], noise)
            add("matched_noise", seed, f"{anchor} + noise", noise, True, distance=measured, nearest=anchor)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_derive("init", seed, s) % (2**31))
                init = build_architecture(config.architecture, **scorer.kwargs).state_dict()
            add("random_init", seed, f"init {s}", init, True)
    bar.close()
    return scores


def _describe(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    mean, std = _mean_std(values)
    return {"mean": mean, "std": std, "min": min(values), "median": statistics.median(values), "max": max(values)}
