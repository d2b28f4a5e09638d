"""Tests of the weight tokenizer: the GeoSANE format by hand, the full mode, layer types.

Round trips are in test_tokenizer_round_trips.py, bad input in test_tokenizer_errors.py.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from tokenizer_helpers import assert_same_state_dict, random_model

from geosane_hf.layer_types import LayerType, classify_tensor
from geosane_hf.tokenizer import (
    WeightTokenizer,
)


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
