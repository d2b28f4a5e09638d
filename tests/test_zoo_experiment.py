"""The zoo experiment: generated population models vs matched-distance noise (geosane_hf.experiments.zoo.run).

A `--quick` population (trained once per module) and a random tiny GeoSANE model: the numbers mean nothing, the
behaviour is what is checked (exact matched distances, same BN treatment, held-out bookkeeping, files, determinism).
"""

import json
import math
import statistics

import pytest
import torch

from geosane_hf.collection.zoo import ZooConfig, train_zoo
from geosane_hf.experiments.zoo.run import (
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
    "curve_points": 3,
    "curve_anchors": 2,
    "curve_draws": 1,
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


def test_layout_with_most_members_and_population_matches_recorded_metric(result):
    # quick zoo: statlog runs 0, 1, 3 have width 12 (6 checkpoints), run 4 width 8
    assert result.architecture_kwargs["width"] == 12
    assert len(result.members) == 6
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


def test_same_bn_treatment_curve_and_interpolation_endpoints(result):
    population = {s.name: s.zero_shot for s in result.scores if s.method == "population"}
    # distance 0 of the curve is the curve anchors themselves, scored like the population row
    anchors = result.distances["curve_anchors"]
    assert result.curve[0].distance == 0.0
    assert result.curve[0].mean == pytest.approx(statistics.fmean(population[a] for a in anchors))
    distances = [p.distance for p in result.curve]
    assert distances == sorted(distances) and distances[-1] > 0
    median = statistics.median(s.distance for s in result.scores if s.method == "generated")
    assert distances[-1] == pytest.approx(2.0 * median)
    pair = result.interpolation[0]
    assert pair.weight_space[0] == pytest.approx(population[pair.a])
    assert pair.weight_space[-1] == pytest.approx(population[pair.b])
    run = {m.id: m.run_id for m in result.members}
    assert run[pair.a] != run[pair.b]
    reconstruction = {s.name: s.zero_shot for s in result.scores if s.method == "reconstruction"}
    assert pair.latent_space[0] == pytest.approx(reconstruction[pair.a])  # decoded endpoints


def test_outputs_written(result):
    assert sorted(result.files) == ["interpolation_png", "json", "markdown", "noise_curve_png"]
    for key in ("interpolation_png", "noise_curve_png"):
        with open(result.files[key], "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(result.files["json"]) as handle:
        data = json.load(handle)
    assert data["architecture"] == "statlog_cnn" and len(data["scores"]) == len(result.scores)
    with open(result.files["markdown"]) as handle:
        text = handle.read()
    assert "matched-distance noise" in text and "## Interpolation" in text and "noise_curve.png" in text


def test_deterministic_given_seeds(result, quick_zoo, geosane):
    # A seed's models depend on that seed only: seed 1 alone reproduces the seed-1 scores of the two-seed run.
    again = run_zoo_experiment(geosane, quick_zoo, None, ZooExperimentConfig(**{**SMALL, "seeds": (1,)}))
    assert again.files == {}
    assert [s.__dict__ for s in again.scores] == [s.__dict__ for s in result.scores if s.seed == 1]
    assert again.interpolation == result.interpolation


def test_holdout_and_zero_noise_generates_reconstructions(quick_zoo, geosane, tmp_path):
    # run 1 held out; with noise 0 every "anchor-noise" sample is exactly one anchor's encode->decode
    held = ["statlog_cnn-0001-e002", "statlog_cnn-0001-e003"]
    card = tmp_path / "model"
    card.mkdir()
    (card / "README.md").write_text("| held-out ids | " + ", ".join(f"`{i}`" for i in held) + " |\n")
    assert read_holdout_ids(card) == held
    config = ZooExperimentConfig(
        **{**SMALL, "seeds": (0,), "interpolation_pairs": 0},
        holdout_ids=held,
        sampler="anchor-noise",
        noise_scale=0.0,
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
    with pytest.raises(ZooExperimentError, match="batch_size"):
        FinetuneProtocol(batch_size=1)
    assert math.isfinite(ZooExperimentConfig().noise_scale)


def test_cli_registered_and_rejects_bad_kwargs(tmp_path, capsys):
    from geosane_hf.cli import main

    code = main(["zoo-experiment", "--model", "m", "--zoo", str(tmp_path), "--out", str(tmp_path), "--kwargs", "[8]"])
    assert code == 2
    assert "expected --kwargs as a JSON object" in capsys.readouterr().err


def test_per_layer_model_decodes_with_the_population_statistics(quick_zoo):
    """A model trained on standardised layers: encode standardises, decode maps back with the anchors' moments."""
    torch.manual_seed(0)
    model = GeoSANEModel(GeoSANEConfig.from_preset("tiny", token_normalization="per-layer")).eval()
    settings = ZooExperimentConfig(**{**SMALL, "seeds": (0,), "interpolation_pairs": 0, "curve_points": 2})
    result = run_zoo_experiment(model, quick_zoo, None, settings)
    generated = result.method("generated")
    assert generated.count == 2 and all(math.isfinite(s.zero_shot) for s in result.scores)


def test_per_layer_codec_maps_decoded_tokens_back_with_the_anchors_mean_moments(quick_zoo, monkeypatch):
    from geosane_hf.collection.zoo import load_zoo_model, read_zoo_index
    from geosane_hf.experiments.zoo.run import _Codec

    records = [r for r in read_zoo_index(quick_zoo)["models"] if r["architecture_kwargs"].get("width") == 12][:2]
    anchors = [load_zoo_model(quick_zoo, r).state_dict() for r in records]
    model = GeoSANEModel(GeoSANEConfig.from_preset("tiny", token_normalization="per-layer")).eval()
    codec = _Codec(model, anchors[0], "full", 8)
    codec.fit_stats(anchors)
    monkeypatch.setattr(model, "decode_long", lambda latents, positions, *a, **k: torch.zeros(len(positions), 230))
    decoded = codec.decode(torch.zeros(codec.num_tokens, model.config.latent_size))
    for key in ("conv1.weight", "conv2.weight", "bn1.running_var"):  # tensors without an appended bias: one layer
        expected = sum(a[key].double().mean() for a in anchors) / 2
        torch.testing.assert_close(decoded[key].double(), torch.full_like(decoded[key].double(), expected))
