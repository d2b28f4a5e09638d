"""Per-layer standardisation of weight tokens (`geosane_hf.token_norm`)."""

from __future__ import annotations

import pytest
import timm
import torch

from geosane_hf.token_norm import destandardize, layer_stats, standardize
from geosane_hf.tokenizer import WeightTokenizer


@pytest.fixture(scope="module")
def tokenized():
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=6)
    state = model.state_dict()
    for key, value in state.items():  # BatchNorm statistics on very different scales, as in trained models
        if key.endswith("running_var"):
            value.uniform_(50.0, 500.0)
        elif key.endswith("running_mean"):
            value.normal_(3.0, 10.0)
    return state, WeightTokenizer(token_size=64, mode="full").tokenize(state)


def test_every_layer_has_mean_zero_and_std_one_and_padding_stays_zero(tokenized):
    _, tok = tokenized
    stats = layer_stats(tok.tokens, tok.mask, tok.positions)
    z = standardize(tok.tokens, tok.mask, stats)
    assert z.dtype == tok.tokens.dtype and torch.equal(z[~tok.mask], torch.zeros_like(z[~tok.mask]))
    for layer in tok.positions[:, 1].unique():
        rows = tok.positions[:, 1] == layer
        values = z[rows][tok.mask[rows]].double()
        raw = tok.tokens[rows][tok.mask[rows]].double()
        assert abs(values.mean().item()) < 1e-5
        if raw.std(unbiased=False) > 1e-6:  # constant layers (e.g. BN weights of 1.0) are only centred
            assert values.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
        else:
            assert torch.equal(values, raw - raw.mean())


def test_destandardize_gives_back_the_weights(tokenized):
    state, tok = tokenized
    stats = layer_stats(tok.tokens, tok.mask, tok.positions)
    back = destandardize(standardize(tok.tokens, tok.mask, stats), tok.mask, stats)
    restored = WeightTokenizer(token_size=64, mode="full").detokenize(back, tok.layout)
    for key, value in state.items():
        if value.is_floating_point():
            torch.testing.assert_close(restored[key], value, rtol=1e-6, atol=1e-6)


def test_statistics_of_one_layer_do_not_depend_on_other_layers(tokenized):
    _, tok = tokenized
    stats = layer_stats(tok.tokens, tok.mask, tok.positions)
    scaled = tok.tokens.clone()
    other = tok.positions[:, 1] != tok.positions[0, 1]
    scaled[other] *= 1000.0
    again = layer_stats(scaled, tok.mask, tok.positions)
    first = ~other
    assert torch.equal(stats.mean[first], again.mean[first]) and torch.equal(stats.std[first], again.std[first])


def test_bad_input_is_refused():
    mask = torch.ones(2, 3, dtype=torch.bool)
    positions = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="expected tokens"):
        layer_stats(torch.zeros(2, 3), mask, positions[:1])
    with pytest.raises(ValueError, match="finite"):
        layer_stats(torch.tensor([[1.0, float("nan"), 0.0], [0.0, 0.0, 0.0]]), mask, positions)
