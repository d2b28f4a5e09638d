"""Tests of the weight tokenizer: bad input is refused with a message naming the key; layouts and buffers reused."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizer_helpers import assert_same_state_dict, random_model

from geosane_hf.tokenizer import (
    LayoutMismatchError,
    NonFiniteWeightsError,
    TokenizedWeights,
    TokenizerError,
    WeightLayout,
    WeightTokenizer,
)

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
