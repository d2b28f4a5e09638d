"""The zoo experiment: generated population models vs matched-distance noise (geosane_hf.experiments.zoo.run).

A `--quick` population (trained once per module) and a random tiny GeoSANE model: the numbers mean nothing, the
behaviour is what is checked (exact matched distances, same BN treatment, held-out bookkeeping, files, determinism).
"""

import json
import math

import pytest
import torch

from geosane_hf.collection.zoo import ZooConfig, train_zoo
from geosane_hf.experiments.zoo import (
    FinetuneProtocol,
    ZooExperimentConfig,
    ZooExperimentError,
    read_holdout_ids,
    run_zoo_experiment,
)
from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel

SMALL = {
    "num_samples": 2,
    "seeds": (0, 1),
    "curve_interpolations": (0.0, 0.5),
    "curve_samples": 2,
    "interpolation_pairs": 1,
    "alphas": (0.0, 0.5, 1.0),
    "population_finetune": 1,
    "calibration_images": 256,
    "progress": False,
}


@pytest.fixture(scope="module")
def quick_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    train_zoo(ZooConfig(out, quick=True), progress=False)
    return out


@pytest.fixture(scope="module")
def geosane():
    torch.manual_seed(0)
    return GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()


@pytest.fixture(scope="module")
def result(quick_zoo, geosane, tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment")
    return run_zoo_experiment(geosane, quick_zoo, out, ZooExperimentConfig(**SMALL))


def test_layout_with_most_members_and_aligned_population_matches_recorded_metric(result):
    # quick zoo: statlog runs 0, 1, 3 have width 12 (6 checkpoints), run 4 width 8
    assert result.architecture_kwargs["width"] == 12
    assert len(result.members) == 6
    # every member was weight-matched to the best anchor: a permutation, so the function is unchanged
    assert result.training_info["alignment"].startswith("weight matching")
    assert all(m.measured == pytest.approx(m.recorded, abs=1e-12) for m in result.members)
    # no model card, no holdout_ids: membership unknown, every member is an anchor
    assert all(m.in_training_set is None and m.role == "anchor" for m in result.members)


def test_matched_noise_has_exactly_the_generated_distance(result):
    generated = [s for s in result.scores if s.method == "generated"]
    noise = [s for s in result.scores if s.method == "matched_noise"]
    assert len(generated) == len(noise) == SMALL["num_samples"] * len(SMALL["seeds"])
    anchors = {m.id for m in result.members if m.role == "anchor"}
    for g, n in zip(generated, noise, strict=True):
        assert g.nearest in anchors and n.nearest == g.nearest
        assert g.distance > 0
        assert n.distance == pytest.approx(g.distance, rel=1e-5)


def test_every_method_scored_zero_shot_and_finetuned(result):
    methods = {s.method for s in result.summary}
    assert methods == {"population", "reconstruction", "generated", "matched_noise", "random_init"}
    for s in result.scores:
        assert 0.0 <= s.zero_shot <= 1.0
    for method in ("generated", "matched_noise", "random_init"):
        assert all(s.finetuned is not None for s in result.scores if s.method == method)
    # population/reconstruction: `population_finetune` anchors per seed are fine-tuned, the rest zero-shot only
    assert result.method("population").finetuned_count == SMALL["population_finetune"] * len(SMALL["seeds"])
    init = result.method("random_init")
    assert init.finetuned_mean > init.zero_shot_mean  # one epoch from scratch learns something


def test_quality_novelty_curve_and_interpolation_endpoints(result):
    population = {s.name: s.zero_shot for s in result.scores if s.method == "population"}
    reconstruction = {s.name: s.zero_shot for s in result.scores if s.method == "reconstruction"}
    # t = 0: every curve model is one anchor's reconstruction, scored like the reconstruction row
    first, last = result.curve
    assert first.interpolation == 0.0 and last.interpolation == 0.5
    assert first.count == last.count == SMALL["curve_samples"]
    assert min(reconstruction.values()) - 1e-12 <= first.generated_mean <= max(reconstruction.values()) + 1e-12
    assert last.distance > 0 and 0.0 <= last.noise_mean <= 1.0
    pair = result.interpolation[0]
    assert pair.weight_space[0] == pytest.approx(population[pair.a])
    assert pair.weight_space[-1] == pytest.approx(population[pair.b])
    run = {m.id: m.run_id for m in result.members}
    assert run[pair.a] != run[pair.b]
    assert pair.latent_space[0] == pytest.approx(reconstruction[pair.a])  # decoded endpoints
    assert pair.latent_space[-1] == pytest.approx(reconstruction[pair.b])


def test_targets_report_value_threshold_and_verdict(result):
    targets = result.targets
    assert set(targets) >= {"population_mean", "generated_vs_population", "generated_minus_noise", "latent_midpoints"}
    gap = targets["generated_minus_noise"]
    generated, noise = result.method("generated"), result.method("matched_noise")
    assert gap["value"] == pytest.approx(generated.zero_shot_mean - noise.zero_shot_mean)
    assert gap["threshold"] == 0.05 and gap["met"] == (gap["value"] >= 0.05)
    ratio = targets["generated_vs_population"]
    assert ratio["value"] == pytest.approx(generated.zero_shot_mean / result.method("population").zero_shot_mean)
    assert "frontier" in targets and "## Targets" in result.to_markdown()


def test_outputs_written(result):
    assert sorted(result.files) == ["interpolation_png", "json", "markdown", "quality_novelty_png"]
    for key in ("interpolation_png", "quality_novelty_png"):
        with open(result.files[key], "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(result.files["json"]) as handle:
        data = json.load(handle)
    assert data["architecture"] == "statlog_cnn" and len(data["scores"]) == len(result.scores)
    with open(result.files["markdown"]) as handle:
        text = handle.read()
    assert "matched-distance noise" in text and "## Interpolation" in text and "quality_novelty.png" in text


def test_deterministic_given_seeds(result, quick_zoo, geosane):
    # A seed's models depend on that seed only: seed 1 alone reproduces the seed-1 scores of the two-seed run.
    again = run_zoo_experiment(geosane, quick_zoo, None, ZooExperimentConfig(**{**SMALL, "seeds": (1,)}))
    assert again.files == {}
    assert [s.__dict__ for s in again.scores] == [s.__dict__ for s in result.scores if s.seed == 1]
    assert again.interpolation == result.interpolation


def test_holdout_and_zero_interpolation_generates_reconstructions(quick_zoo, geosane, tmp_path):
    # run 1 held out; with t = 0 every "interpolate" sample is exactly one anchor's encode->decode
    held = ["statlog_cnn-0001-e002", "statlog_cnn-0001-e003"]
    card = tmp_path / "model"
    card.mkdir()
    (card / "README.md").write_text("| held-out ids | " + ", ".join(f"`{i}`" for i in held) + " |\n")
    assert read_holdout_ids(card) == held
    config = ZooExperimentConfig(
        **{**SMALL, "seeds": (0,), "interpolation_pairs": 0},
        holdout_ids=held,
        interpolation=(0.0, 0.0),
        finetune=FinetuneProtocol(epochs=0),
    )
    out = run_zoo_experiment(geosane, quick_zoo, None, config)
    roles = {m.id: (m.role, m.in_training_set) for m in out.members}
    assert all(roles[i] == ("held-out", False) for i in held)
    assert sum(role == "anchor" for role, _ in roles.values()) == 4
    assert {s.name for s in out.scores if s.method == "reconstruction_heldout"} == set(held)
    assert not {s.nearest for s in out.scores if s.method == "generated"} & set(held)
    reconstructed = {s.zero_shot for s in out.scores if s.method == "reconstruction"}
    assert all(s.zero_shot in reconstructed for s in out.scores if s.method == "generated")
    assert out.interpolation == []


def test_bad_input(quick_zoo, geosane):
    with pytest.raises(ZooExperimentError, match="expected population members"):
        run_zoo_experiment(geosane, quick_zoo, None, ZooExperimentConfig(architecture="vit", progress=False))
    with pytest.raises(ZooExperimentError, match="architecture_kwargs"):
        run_zoo_experiment(geosane, quick_zoo, None, ZooExperimentConfig(architecture_kwargs={"width": 99}))
    with pytest.raises(ZooExperimentError, match="sampler"):
        ZooExperimentConfig(sampler="gan")
    with pytest.raises(ZooExperimentError, match="interpolation"):
        ZooExperimentConfig(interpolation=(0.5, 0.2))
    with pytest.raises(ZooExperimentError, match="batch_size"):
        FinetuneProtocol(batch_size=1)
    assert math.isfinite(ZooExperimentConfig().noise_scale)


def test_cli_registered_and_rejects_bad_kwargs(tmp_path, capsys):
    from geosane_hf.cli import main

    code = main(["zoo-experiment", "--model", "m", "--zoo", str(tmp_path), "--out", str(tmp_path), "--kwargs", "[8]"])
    assert code == 2
    assert "expected --kwargs as a JSON object" in capsys.readouterr().err


def test_per_layer_model_runs_with_kde_too(quick_zoo):
    """A model trained on standardised layers, and SANE's per-token KDE (kept as the negative reference)."""
    torch.manual_seed(0)
    model = GeoSANEModel(GeoSANEConfig.from_preset("tiny", token_normalization="per-layer")).eval()
    settings = ZooExperimentConfig(**{**SMALL, "seeds": (0,), "interpolation_pairs": 0}, sampler="kde")
    result = run_zoo_experiment(model, quick_zoo, None, settings)
    generated = result.method("generated")
    assert generated.count == 2 and all(math.isfinite(s.zero_shot) for s in result.scores)


def test_per_layer_codec_maps_decoded_tokens_back_with_the_members_own_moments(quick_zoo, monkeypatch):
    """Decoded tokens of a member go back with that member's statistics; a mixture with the mixed statistics."""
    from geosane_hf.collection.zoo import load_zoo_model, read_zoo_index
    from geosane_hf.experiments.zoo.codec import ZooCodec
    from geosane_hf.experiments.zoo.curves import _mix_stats

    records = [r for r in read_zoo_index(quick_zoo)["models"] if r["architecture_kwargs"].get("width") == 12][:2]
    anchors = [load_zoo_model(quick_zoo, r).state_dict() for r in records]
    model = GeoSANEModel(GeoSANEConfig.from_preset("tiny", token_normalization="per-layer")).eval()
    codec = ZooCodec(model, anchors[0], "full", 8)
    encoded = [codec.encode(sd, r["id"]) for sd, r in zip(anchors, records, strict=True)]
    monkeypatch.setattr(model, "decode_long", lambda latents, positions, *a, **k: torch.zeros(len(positions), 230))
    zeros = torch.zeros(codec.num_tokens, model.config.latent_size)
    own = codec.decode(zeros, encoded[1])
    mixed = codec.decode(zeros, encoded[0], stats=_mix_stats(encoded[0].stats, encoded[1].stats, 0.25))
    for key in ("conv1.weight", "conv2.weight", "bn1.running_var"):  # tensors without an appended bias: one layer
        mean_0, mean_1 = (a[key].double().mean() for a in anchors)
        torch.testing.assert_close(own[key].double(), torch.full_like(own[key].double(), mean_1))
        expected = 0.75 * mean_0 + 0.25 * mean_1
        torch.testing.assert_close(mixed[key].double(), torch.full_like(mixed[key].double(), expected))


@pytest.mark.slow
def test_pipeline_runs_every_stage_then_resumes_and_reruns_only_what_changed(tmp_path):
    """`make zoo-experiment` end to end at a tiny budget: population, collect, dataset, accelerate training, report."""
    from dataclasses import replace

    from geosane_hf.experiments.zoo.pipeline import ZooPipelineConfig, holdout_every, run_zoo_pipeline

    experiment = ZooExperimentConfig(**{**SMALL, "seeds": (0,)})
    config = ZooPipelineConfig(
        out_dir=tmp_path, runs=4, holdout_every=3, train_steps=4, workers=1, experiment=experiment, progress=False
    )
    state = run_zoo_pipeline(config)
    assert [name for name in state if state[name]["done"]] == [
        "population",
        "collect",
        "dataset",
        "train",
        "experiment",
    ]
    assert state["population"]["summary"]["models"] == 8  # 4 runs x 2 checkpoints of one layout
    held = holdout_every(tmp_path / "zoo", 3)
    assert len(held) == 4 and {h.rsplit("-", 1)[0] for h in held} == {"statlog_cnn-0000", "statlog_cnn-0003"}
    summary = json.loads((tmp_path / "zoo_experiment.json").read_text())
    assert set(summary["zero_shot"]) >= {"population", "generated", "matched_noise", "reconstruction_heldout"}
    assert summary["targets"]["heldout_reconstruction"]["threshold"] == 0.95
    assert (tmp_path / "experiment" / "quality_novelty.png").is_file()

    again = run_zoo_pipeline(config)  # everything done: nothing reruns
    assert all(again[name]["seconds"] == state[name]["seconds"] for name in state)
    changed = run_zoo_pipeline(replace(config, experiment=replace(experiment, num_samples=1)))
    assert changed["train"]["seconds"] == state["train"]["seconds"]  # only the experiment reran
    assert json.loads((tmp_path / "zoo_experiment.json").read_text())["zero_shot"] != {}
