"""The fast paths agree with the straightforward ones: the tokenizer's fast spec reading and cached index tensors,
encode_long/decode_long (content-only last block, per-token embedding once per pass) and generate_weights'
skeleton models."""

from __future__ import annotations

import pytest
import torch
from lazy_state_dict import CountingLazyStateDict

from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
from geosane_hf.tokenizer import NonFiniteWeightsError, WeightTokenizer


def mixed_state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "big.weight": torch.randn(300, 250, generator=g),
        "big.bias": torch.randn(300, generator=g).half(),
        "norm.weight": torch.randn(7, generator=g),  # a norm: weight and bias interleaved per channel
        "norm.bias": torch.randn(7, generator=g),
        "conv.weight": torch.randn(5, 3, 3, 3, generator=g).permute(0, 2, 3, 1),  # non-contiguous, no bias
        "small.weight": torch.randn(4, 3, generator=g).to(torch.bfloat16),  # small, with a bias column
        "small.bias": torch.randn(4, generator=g),
        "count": torch.tensor(3),
        "pos_embed": torch.randn(1, 9, 4, generator=g),
    }


@pytest.mark.parametrize("mode", ["geosane", "full"])
@pytest.mark.parametrize("token_size", [7, 230])
def test_plain_dict_lazy_mapping_and_reused_output_give_the_same_tokens(mode, token_size):
    sd = mixed_state_dict()
    tokenizer = WeightTokenizer(token_size, mode=mode)
    fast, slow = tokenizer.tokenize(sd), tokenizer.tokenize(CountingLazyStateDict(sd))
    assert torch.equal(fast.tokens, slow.tokens)
    assert torch.equal(fast.mask, slow.mask) and torch.equal(fast.positions, slow.positions)
    assert fast.layout.to_dict() == slow.layout.to_dict()
    again = tokenizer.tokenize(sd, out=tokenizer.tokenize(sd))  # into a reused buffer
    assert torch.equal(again.tokens, fast.tokens)
    back = tokenizer.detokenize(fast)
    assert all(torch.equal(back[k], sd[k]) and back[k].dtype == sd[k].dtype for k in back)


@pytest.mark.parametrize("key", ["big.weight", "big.bias", "norm.bias", "small.weight"])
def test_nonfinite_values_are_found_in_weights_biases_and_norms(key):
    sd = mixed_state_dict()
    sd[key] = sd[key].clone()
    sd[key].view(-1)[1] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match=key.replace(".", r"\.")):
        WeightTokenizer(mode="full").tokenize(sd)


def test_index_tensors_are_fresh_copies():
    sd = mixed_state_dict()
    tokenizer = WeightTokenizer(mode="full")
    first = tokenizer.tokenize(sd)
    first.positions.zero_()
    first.num_real.zero_()
    second = tokenizer.tokenize(sd)
    assert second.positions[:, 0].tolist() == list(range(second.num_tokens))
    assert int(second.num_real.max()) == 230


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize(
    ("length", "halo"),
    [(75, 4), (75, 0), (64, 0)],  # halo 0 with full windows takes the no-gather path; 75 ends in a short window
)
def test_long_paths_with_layer_types_and_masked_tokens_equal_direct_windows(attention, length, halo):
    config = GeoSANEConfig.from_preset("tiny", num_layer_types=5)
    config._attn_implementation = attention
    torch.manual_seed(0)
    model = GeoSANEModel(config).eval()
    window = 16
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(length, 230, generator=g)
    n = torch.arange(length)
    positions = torch.stack([n, n // 9, n % 9], -1)
    layer_types = torch.randint(0, 5, (length,), generator=g)
    mask = torch.ones(length, 230, dtype=torch.bool)
    mask[::7] = False  # padding tokens: ignored as keys
    kwargs = {"window_size": window, "halo_size": halo, "batch_size": 2}
    latents = model.encode_long(tokens, positions, mask, layer_types, **kwargs)
    decoded = model.decode_long(latents, positions, layer_types, attention_mask=mask.any(-1), **kwargs)
    for ctx_start, start, end, ctx_end in GeoSANEModel.halo_windows(length, window, halo):
        c, s, e = slice(ctx_start, ctx_end), start - ctx_start, end - ctx_start
        direct = model.encode(tokens[None, c], positions[None, c], mask[None, c], layer_types[None, c])[0]
        torch.testing.assert_close(latents[start:end], direct[s:e], atol=2e-5, rtol=1e-5)
        back = model.decode(latents[None, c], positions[None, c], layer_types[None, c], mask[None, c].any(-1))[0]
        torch.testing.assert_close(decoded[start:end], back[s:e], atol=2e-5, rtol=1e-5)


def test_generated_models_are_complete_and_independent_of_the_returned_state_dicts():
    from geosane_hf.generation import generate_weights

    torch.manual_seed(0)
    geosane = GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()
    out = generate_weights(geosane, "test_vit", num_samples=2, seed=3, calibrate=False, sampler="prompt-noise")
    for net, sd in zip(out.models, out.state_dicts, strict=True):
        tensors = dict(net.named_parameters()) | dict(net.named_buffers())
        assert not any(t.is_meta for t in tensors.values())
        assert all(p.requires_grad for p in net.parameters()) and not net.training
        assert all(torch.equal(v, sd[k]) for k, v in net.state_dict().items())
        with torch.no_grad():
            next(net.parameters()).add_(1.0)  # training the model leaves the returned state_dict alone
        key = next(iter(dict(net.named_parameters())))
        assert not torch.equal(net.state_dict()[key], sd[key])
    assert not torch.equal(out.state_dicts[0][key], out.state_dicts[1][key])  # two samples, two tensors
