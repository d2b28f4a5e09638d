"""GeoSANEPipeline: components, swappable samplers, the selection step, residual decoding, one sampler registry."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from geosane_hf.generation import (
    BootstrapSampler,
    Candidate,
    CandidateSelector,
    GenerationError,
    GeoSANEPipeline,
    KDESampler,
    PromptNoiseSampler,
    Sampler,
    SamplerConfig,
    Samples,
    generate_weights,
)
from geosane_hf.generation.latents import LatentCodec
from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
from geosane_hf.tokenizer import WeightTokenizer

ARCH = "test_resnet"
TARGET = {"in_chans": 4, "num_classes": 6, "img_size": 32, "calibration_count": 4}


@pytest.fixture(scope="module")
def geosane():
    torch.manual_seed(0)
    return GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    from geosane_hf.checkpoints import save_safetensors
    from geosane_hf.collection.collector import CollectedModel, write_collection_index

    root = tmp_path_factory.mktemp("collection")
    (root / "models").mkdir()
    records = []
    for i in range(2):
        torch.manual_seed(10 + i)
        save_safetensors(timm.create_model(ARCH, in_chans=4, num_classes=6).state_dict(), root / f"models/m{i}.st")
        records.append(CollectedModel(f"m{i}", f"models/m{i}.st", 0, "", "", 0, 0, 0, {}, "t", None, None, None, True))
    write_collection_index(root, records)
    return root


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pipeline_matches_generate_weights_bit_for_bit(geosane, collection):
    for name in ("prompt-noise", "kde"):
        direct = generate_weights(geosane, ARCH, sampler=name, collection=collection, seed=5, num_samples=2, **TARGET)
        pipe = GeoSANEPipeline(geosane, name, collection=collection)
        out = pipe(ARCH, num_samples=2, generator=torch.Generator().manual_seed(5), seed=5, **TARGET)
        assert all(_same(a, b) for a, b in zip(direct.state_dicts, out.state_dicts, strict=True))
        assert dict(out.provenance) == direct.provenance and out.provenance.sampler == name
        json.dumps(direct.provenance)  # generate_weights keeps a plain JSON dict


def test_sampler_is_swappable_and_configs_are_typed(geosane, collection):
    pipe = GeoSANEPipeline(geosane, PromptNoiseSampler(noise_scale=0.3), collection=collection)
    pipe.sampler = KDESampler.from_config(pipe.sampler.config, max_anchors=1)
    assert pipe.sampler.config.noise_scale == 0.3 and pipe.sampler.config.max_anchors == 1
    out = pipe(ARCH, calibrate=False, generator=torch.Generator().manual_seed(0), **TARGET)
    assert out.provenance.anchors["ids"] == ["prompt", "m0"] and out.provenance.noise_scale == 0.3
    weights = out.samples[0]["anchor_weights"]
    assert out.samples[0]["anchor_ids"] == ["prompt", "m0"] and abs(sum(weights) - 1) < 1e-4
    with pytest.raises(GenerationError, match="finite noise_scale"):
        KDESampler(noise_scale=-1.0)
    with pytest.raises(GenerationError, match="candidates >= 1"):
        BootstrapSampler(candidates=0)
    with pytest.raises(GenerationError, match="collection="):
        GeoSANEPipeline(geosane, "kde")(ARCH, calibrate=False)


def test_selection_step_applies_to_any_sampler(geosane):
    """Best-of-N on prompt + noise: the same selector the bootstrap uses, on another sampler's candidates."""
    x, y = torch.randn(8, 4, 32, 32), torch.tensor([0, 1] * 4)

    class BestOfNoise(Sampler):
        name = "best-of-noise-test"
        config_class = PromptNoiseSampler.config_class

        def sample(self, ctx):
            pool = PromptNoiseSampler(self.config).sample(
                type(ctx)(**{**vars(ctx), "num_samples": 3})  # draw 3, keep the best num_samples
            )
            return Samples(ctx.selector.select(ctx, pool.candidates, ctx.num_samples))

    pipe = GeoSANEPipeline(geosane, BestOfNoise(noise_scale=0.5), selector=CandidateSelector((x, y)))
    out = pipe(ARCH, calibrate=False, generator=torch.Generator().manual_seed(1), **TARGET)
    assert out.scores is not None and len(out.scores) == 1 and "score" in out.samples[0]
    assert set(out.timings) >= {"sample", "decode", "score"}


def test_bootstrap_scores_with_the_selection_step(geosane):
    x, y = torch.randn(8, 4, 32, 32), torch.tensor([0, 1] * 4)
    calls = []

    def score_fn(net, images, labels):
        calls.append(images.shape[0])
        return float(len(calls))  # later candidates score higher

    pipe = GeoSANEPipeline(geosane, BootstrapSampler(candidates=2, keep=1, rounds=2))
    pipe.selector = CandidateSelector((x, y), score_fn)
    out = pipe(ARCH, num_samples=2, calibrate=False, **TARGET)
    assert calls == [8] * 4 and out.scores == [4.0, 3.0]
    assert [s["round"] for s in out.samples] == [1, 1]


def test_residual_decoding_around_an_anchor_gives_the_anchor_back(geosane, collection):
    """base + dec(z) - dec(z_base) with z = z_base is the base's own weights (up to float rounding)."""

    class AtAnchor(Sampler):
        name = "at-anchor-test"
        config_class = SamplerConfig
        uses_anchors = keeps_tokens = True

        def sample(self, ctx):
            z = ctx.anchors.latents[1]  # the first collection anchor, [N, L]
            return Samples([Candidate(z, decode="residual", base=ctx.anchors.ids[1], stats=ctx.anchors.ids[1])])

    pipe = GeoSANEPipeline(geosane, AtAnchor(), collection=collection)
    out = pipe(ARCH, calibrate=False, **TARGET)
    from geosane_hf.checkpoints import load_checkpoint

    anchor = load_checkpoint(collection / "models/m0.st").state_dict
    key = "conv1.0.weight"
    torch.testing.assert_close(out.state_dicts[0][key], anchor[key], rtol=1e-5, atol=1e-5)
    assert out.samples[0]["decode"] == "residual" and out.samples[0]["base"] == "m0"


def test_codec_and_coverage_steps_alone(geosane):
    from geosane_hf.generation.latents import check_coverage

    tokenizer = WeightTokenizer(geosane.config.token_size)
    tok = tokenizer.tokenize(timm.create_model(ARCH).state_dict())
    check_coverage(geosane, tok, tokenizer)
    codec = LatentCodec(geosane)
    encoded = codec.encode(tok)
    assert encoded.latents.shape == (tok.num_tokens, geosane.config.latent_size) and encoded.stats is None
    with pytest.raises(GenerationError, match="token_size"):
        check_coverage(geosane, tok, WeightTokenizer(64))


def test_output_saves_and_loads_a_timm_repo(geosane, tmp_path):
    out = GeoSANEPipeline(geosane)(ARCH, calibrate=False, **TARGET)
    path = out.save_pretrained(tmp_path / "repo")
    net = timm.create_model(f"local-dir:{path}", pretrained=True)
    assert _same(net.state_dict(), out.state_dicts[0])
    record = json.loads((path / "geosane_generation.json").read_text())
    assert record["sampler"] == "interpolate" and record["sample"]["index"] == 0  # the default sampler


def test_one_sampler_registry_serves_cli_space_and_experiments():
    from geosane_hf.commands.generate import register
    from geosane_hf.experiments.transfer.config import SAMPLERS as experiment_samplers
    from geosane_hf.generation import samplers
    from geosane_hf.generation.registry import SAMPLER_NAMES, get_sampler_class

    classes = {
        c.name: c
        for c in vars(samplers).values()
        if isinstance(c, type) and issubclass(c, Sampler) and c is not Sampler
    }
    assert {n: get_sampler_class(n) for n in SAMPLER_NAMES} == classes
    assert experiment_samplers == SAMPLER_NAMES
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    action = next(a for a in parser._subparsers._group_actions[0].choices["generate"]._actions if a.dest == "sampler")
    assert tuple(action.choices) == SAMPLER_NAMES


def test_interpolation_sampler_keeps_the_prompt_without_anchors_and_moves_towards_one_with_them(geosane, collection):
    """Residual interpolation: no collection -> the prompt itself; with anchors -> whole models between the two."""
    from geosane_hf.generation import InterpolationSampler
    from geosane_hf.generation.prompt import load_prompt

    prompt, _ = load_prompt(ARCH, in_chans=4, num_classes=6, seed=0)
    alone = GeoSANEPipeline(geosane, InterpolationSampler())(ARCH, calibrate=False, seed=0, **TARGET)
    for key, value in prompt.state_dict.items():
        torch.testing.assert_close(alone.state_dicts[0][key], value, rtol=0, atol=1e-6)

    sampler = InterpolationSampler(interpolation_min=0.5, interpolation_max=0.5)
    out = GeoSANEPipeline(geosane, sampler, collection=collection)(
        ARCH, calibrate=False, num_samples=3, seed=0, **TARGET
    )
    for record in out.samples:
        assert record["decode"] == "residual" and record["base"] == "prompt"
        assert record["anchor_ids"][0] == "prompt" and record["anchor_ids"][1] in ("m0", "m1")
        assert record["interpolation"] == 0.5 and sum(record["stats"].values()) == pytest.approx(1.0)
    moved = out.state_dicts[0]["conv1.0.weight"] - prompt.state_dict["conv1.0.weight"]
    assert moved.abs().max() > 0  # the decoded change towards the anchor is added to the prompt


def test_interpolation_config_is_validated():
    from geosane_hf.generation import InterpolationSampler

    with pytest.raises(GenerationError, match="interpolation_min <= interpolation_max"):
        InterpolationSampler(interpolation_min=0.6, interpolation_max=0.2)
    with pytest.raises(GenerationError, match="pairs"):
        InterpolationSampler(pairs="three")
    with pytest.raises(GenerationError, match="finite"):
        InterpolationSampler(interpolation_max=float("nan"))


def test_interpolation_moves_towards_members_of_the_same_architecture_for_another_task(geosane, tmp_path):
    """A member tuned for other bands and classes is a partner (same body); another architecture is not."""
    from geosane_hf.checkpoints import save_safetensors
    from geosane_hf.collection.collector import CollectedModel, write_index
    from geosane_hf.generation import InterpolationSampler

    (tmp_path / "models").mkdir()
    members = {
        "other-task": timm.create_model(ARCH, in_chans=1, num_classes=2),
        "other-arch": timm.create_model("test_vit"),
    }
    records = []
    for name, net in members.items():
        save_safetensors(net.state_dict(), tmp_path / f"models/{name}.st")
        records.append(CollectedModel(name, f"models/{name}.st", 0, "", "", 0, 0, 0, {}, "t", None, None, None, True))
    write_index(tmp_path, records)
    out = GeoSANEPipeline(geosane, InterpolationSampler(), collection=tmp_path)(
        ARCH, calibrate=False, num_samples=4, seed=0, **TARGET
    )
    assert {record["anchor_ids"][1] for record in out.samples} == {"other-task"}
    only_other = GeoSANEPipeline(geosane, InterpolationSampler(max_anchors=1), collection=tmp_path)
    assert only_other(ARCH, calibrate=False, seed=0, **TARGET).samples[0]["anchor_ids"] == ["prompt", "other-task"]
