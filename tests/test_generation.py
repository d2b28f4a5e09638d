"""Weight generation: reproducibility, samplers, band adaptation, BatchNorm calibration, CLI and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import timm
import torch

from geosane_hf.generation import (
    GenerationError,
    adapt_stem,
    align_latents,
    calibrate_batchnorm,
    generate_weights,
    kde_sample,
    prompt_noise,
)
from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
from geosane_hf.tokenizer import WeightTokenizer

ARCH = "test_resnet"  # timm's tiny test ResNet (BatchNorm, ~0.1M parameters)


@pytest.fixture(scope="module")
def geosane():
    torch.manual_seed(0)
    return GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()


def _gen(model, **kwargs):
    # prompt-noise: the mechanics checked here (seeds, per-sample noise, calibration) need samples that differ; the
    # default sampler (interpolate) returns the prompt itself without a collection (tests/test_pipeline.py)
    defaults = {"in_chans": 4, "num_classes": 6, "img_size": 32, "calibration_count": 8, "sampler": "prompt-noise"}
    return generate_weights(model, ARCH, **{**defaults, **kwargs})


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_bit_identical_different_seed_differs(geosane):
    a, b, c = (_gen(geosane, seed=s, num_samples=2).state_dicts for s in (3, 3, 4))
    assert _same(a[0], b[0]) and _same(a[1], b[1])
    assert not _same(a[0], c[0])
    assert not _same(a[0], a[1])  # independent noise per sample


def test_prompt_noise_is_independent_per_token():
    z = torch.zeros(50, 8)
    z[:, 0] = torch.linspace(0, 1, 50)  # nonzero std in one dimension only
    s = prompt_noise(torch.randn(50, 8), 3, 0.5, torch.Generator().manual_seed(0))
    noise = s - s.mean(0, keepdim=True)
    assert not torch.allclose(noise[:, 0], noise[:, 1])  # different tokens, different noise
    assert torch.equal(prompt_noise(z, 1, 0.0, torch.Generator())[0], z)


def test_generated_model_loads_strictly_and_forwards(geosane):
    out = _gen(geosane, seed=0)
    sd, net = out.state_dicts[0], out.models[0]
    fresh = timm.create_model(ARCH, in_chans=4, num_classes=6)
    fresh.load_state_dict(sd, strict=True)
    y = fresh.eval()(torch.randn(2, 4, 32, 32))
    assert y.shape == (2, 6) and torch.isfinite(y).all()
    prov = out.provenance
    assert prov["sampler"] == "prompt-noise" and prov["seed"] == 0 and prov["in_chans"] == 4
    assert prov["tokenizer"]["mode"] == "full" and prov["inherited_from_prompt"] == []
    assert prov["calibration"]["batchnorm_layers"] > 0
    json.dumps(prov)  # serialisable
    assert set(out.timings) >= {"tokenize", "encode", "sample", "decode", "detokenize", "calibrate"}
    assert net.training is False


def test_geosane_mode_inherits_untokenized_tensors_from_prompt(geosane):
    out = _gen(geosane, tokenizer_mode="geosane", calibrate=False, noise_scale=0.0)
    inherited = out.provenance["inherited_from_prompt"]
    assert any(k.endswith("running_mean") for k in inherited)
    from geosane_hf.generation import load_prompt

    prompt, _ = load_prompt(ARCH, in_chans=4, num_classes=6)
    key = next(k for k in inherited if k.endswith("running_var"))
    assert torch.equal(out.state_dicts[0][key], prompt.state_dict[key])


def test_head_reinitialised_for_num_classes(geosane):
    out = _gen(geosane, seed=0, calibrate=False)
    head = out.models[0].get_classifier()
    reference = timm.create_model(ARCH, in_chans=4, num_classes=6)
    torch.manual_seed(0)
    assert head.weight.shape == (6, reference.num_features)
    assert "re-initialised for 6 classes" in out.provenance["head"]


def test_band_adaptation_wavelength_default():
    w = torch.randn(8, 3, 3, 3)
    out = adapt_stem(w, ["B02", "B03", "B04", "B08"])
    assert out.mapping == ["B", "G", "R", "mean"]
    assert torch.allclose(out.weight[:, 0], w[:, 2] * 0.75) and torch.allclose(out.weight[:, 2], w[:, 0] * 0.75)
    assert torch.allclose(out.weight[:, 3], w.mean(1) * 0.75)
    assert torch.allclose(out.weight.sum(1), w.sum(1), atol=1e-5)  # constant-image response kept
    s2 = adapt_stem(w, [f"B{i:02d}" for i in range(1, 10)] + ["B8A", "B10", "B11", "B12"])
    assert s2.weight.shape == (8, 13, 3, 3) and s2.mapping.count("mean") == 10
    sar = adapt_stem(w, ["VV", "VH"])  # no wavelength: timm's repeat
    assert sar.method == "repeat" and sar.weight.shape == (8, 2, 3, 3)


def test_calibration_matches_direct_statistics():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(4, 6, 3), torch.nn.BatchNorm2d(6), torch.nn.ReLU(), torch.nn.Dropout(0.5)
    )
    images = torch.randn(12, 4, 10, 10) * 3 + 2
    before = net[1].running_mean.clone()
    report = calibrate_batchnorm(net, images, batch_size=12)
    direct = net[0](images)  # [M, 6, 8, 8] the BN inputs
    assert report.num_layers == 1 and report.num_images == 12 and not net.training
    assert not torch.equal(net[1].running_mean, before)
    torch.testing.assert_close(net[1].running_mean, direct.mean((0, 2, 3)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net[1].running_var, direct.var((0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5)
    assert net[1].momentum == 0.1  # restored


def test_calibration_cumulative_over_batches():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.BatchNorm2d(3))
    images = torch.randn(8, 3, 4, 4) + torch.arange(8.0)[:, None, None, None]
    calibrate_batchnorm(net, images, batch_size=2)  # 4 equal batches: mean of batch means = overall mean
    torch.testing.assert_close(net[0].running_mean, images.mean((0, 2, 3)), rtol=1e-5, atol=1e-5)


def test_kde_and_alignment():
    anchors = torch.stack([torch.zeros(20, 4), torch.ones(20, 4)])
    s = kde_sample(anchors, 2, 0.0, torch.Generator().manual_seed(0))
    assert s.shape == (2, 20, 4) and set(s.unique().tolist()) == {0.0, 1.0}  # per-token anchor choice
    tok = WeightTokenizer(token_size=8, mode="full")
    small = tok.tokenize(timm.create_model(ARCH, num_classes=2).state_dict())
    big = tok.tokenize(timm.create_model(ARCH, num_classes=6, in_chans=4).state_dict())
    z = torch.arange(small.num_tokens, dtype=torch.float32)[:, None].expand(-1, 3)
    aligned = align_latents(small.layout, z, big.layout)
    assert aligned.shape == (big.num_tokens, 3)
    first = big.layout.entries[0]
    assert aligned[first.token_offset, 0] == small.layout.entries[0].token_offset  # stem -> stem


def test_kde_with_collection_same_architecture(geosane, tmp_path):
    from geosane_hf.checkpoints import save_safetensors
    from geosane_hf.collection.collector import CollectedModel, write_collection_index

    (tmp_path / "models").mkdir()
    records = []
    for i in range(2):
        sd = timm.create_model(ARCH, in_chans=4, num_classes=6).state_dict()
        save_safetensors(sd, tmp_path / "models" / f"m{i}.safetensors")
        records.append(
            CollectedModel(f"m{i}", f"models/m{i}.safetensors", 0, "", "", 0, 0, 0, {}, "test", None, None, None, True)
        )
    write_collection_index(tmp_path, records)
    out = _gen(geosane, sampler="kde", collection=tmp_path, calibrate=False)
    assert out.provenance["anchors"]["ids"] == ["prompt", "m0", "m1"]
    assert out.provenance["anchors"]["match"].startswith("same architecture")


def test_bootstrap_keeps_best(geosane):
    x = torch.randn(8, 4, 32, 32)
    y = torch.tensor([0, 1] * 4)
    out = _gen(
        geosane,
        sampler="bootstrap",
        candidates=2,
        keep=1,
        rounds=2,
        num_samples=2,
        reference=(x, y),
        calibration_count=4,
    )
    rounds = out.provenance["bootstrap"]["rounds"]
    every = [s for r in rounds for s in r["scores"]]
    assert len(every) == 4 and out.scores == sorted(every, reverse=True)[:2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_chans": 0}, "in_chans >= 1"),
        ({"seed": "1"}, "seed to be an int"),
        ({"seed": 1.5}, "seed to be an int"),
        ({"sampler": "magic"}, "sampler in"),
        ({"sampler": "kde"}, "collection="),
        ({"tokenizer": WeightTokenizer(token_size=64)}, "token_size"),
    ],
)
def test_bad_input(geosane, kwargs, message):
    with pytest.raises(GenerationError, match=message):
        _gen(geosane, calibrate=False, **kwargs)


def test_uncovered_layer_type_offers_alternatives():
    model = GeoSANEModel(GeoSANEConfig.from_preset("tiny", num_layer_types=2)).eval()  # OTHER, CONV only
    with pytest.raises(GenerationError, match=r"layer types the model was trained on.*NORM"):
        _gen(model, calibrate=False)


def test_learned_positions_too_short():
    model = GeoSANEModel(
        GeoSANEConfig.from_preset("tiny", position_encoding="learned", max_position_embeddings=[64, 8, 64])
    )
    with pytest.raises(GenerationError, match="larger than anything the model covers"):
        _gen(model.eval(), calibrate=False)


def test_unknown_prompt_and_unreachable_hub(geosane):
    with pytest.raises(GenerationError, match=r"nearest timm names: \['resnet"):
        generate_weights(geosane, "resnet50_typo", calibrate=False)
    with pytest.raises(ValueError):
        generate_weights(geosane, "nobody-here/not-a-model", architecture=ARCH, calibrate=False)


def test_sar_needs_user_calibration_data(geosane):
    with pytest.raises(GenerationError, match="calibration_data"):
        _gen(geosane, in_chans=2)
    out = _gen(geosane, in_chans=2, calibration_data=torch.randn(4, 2, 32, 32))
    assert out.provenance["bands"] == ["VV", "VH"] and "repeat" in str(out.provenance["band_adaptation"])


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "geosane_hf.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_cli_generate_and_refuse_existing(geosane, tmp_path, capsys):
    model_dir = tmp_path / "geosane"
    geosane.save_pretrained(model_dir)
    out = tmp_path / "gen"
    args = ["generate", "--prompt", ARCH, "--in-chans", "4", "--num-classes", "6", "--model", str(model_dir)]
    done = _cli(*args, "--out", str(out), "--seed", "1")
    assert done.returncode == 0, done.stderr
    net = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert net.num_classes == 6 and net.conv1[0].weight.shape[1] == 4
    again = _cli(*args, "--out", str(out))
    assert again.returncode != 0 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    from geosane_hf.cli import main

    with pytest.raises(SystemExit):
        main([*args, "--out", str(tmp_path / "x"), "--seed", "one"])
    assert "integer seed" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_pipeline_from_saved_model_folder(geosane, tmp_path):
    from transformers import pipeline

    # no register_pipeline() call: importing geosane_hf.generation registered the task
    geosane.save_pretrained(tmp_path / "g")
    pipe = pipeline("weight-generation", model=str(tmp_path / "g"))
    out = pipe(ARCH, in_chans=4, num_classes=6, seed=2, calibrate=False)
    direct = generate_weights(geosane, ARCH, in_chans=4, num_classes=6, seed=2, calibrate=False)
    assert _same(out.state_dicts[0], direct.state_dicts[0])  # same weights through the pipeline
    assert out.provenance["geosane_model"] == str(tmp_path / "g")


def test_per_layer_model_gives_back_the_prompt_moments_per_layer(monkeypatch):
    """token_normalization="per-layer": decoded tokens are mapped back with the prompt's per-layer statistics."""
    from geosane_hf.generation import generate_weights
    from geosane_hf.generation.api import load_prompt

    torch.manual_seed(0)
    model = GeoSANEModel(GeoSANEConfig.from_preset("tiny", token_normalization="per-layer")).eval()
    # A decoder that outputs standardised zeros: every generated layer must equal its prompt layer's mean.
    monkeypatch.setattr(model, "decode_long", lambda latents, positions, *a, **k: torch.zeros(len(positions), 230))
    plain = {"sampler": "prompt-noise", "noise_scale": 0.0}  # plain decoding (the default decodes residually)
    out = generate_weights(model, "test_resnet", in_chans=3, num_classes=4, seed=0, calibrate=False, **plain)
    fitted, _ = load_prompt("test_resnet", in_chans=3, num_classes=4, seed=0)
    generated = out.state_dicts[0]
    for key in ("conv1.0.weight", "conv1.3.weight", "bn1.running_var"):  # tensors without an appended bias
        expected = fitted.state_dict[key].double().mean()
        torch.testing.assert_close(generated[key].double(), torch.full_like(generated[key].double(), expected))
    assert out.provenance["geosane_config"]["token_normalization"] == "per-layer"
