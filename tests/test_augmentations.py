"""Tests for geosane_hf.augmentations: permutations preserve the function, noise/erasing statistics, two views,
canonical form, weight matching, and errors for unsupported architectures."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import timm
import torch

from geosane_hf.augmentations import (
    PermutationSpecError,
    TwoViewAugmenter,
    TwoViewConfig,
    UnsupportedArchitectureError,
    canonicalize,
    erase_tokens,
    linear_assignment,
    multiplicative_noise,
    permutation_spec,
    permute_state_dict,
    permute_tokens,
    random_permutation,
    weight_matching,
)
from geosane_hf.collection import build_architecture
from geosane_hf.tokenizer import WeightTokenizer

VIT_KW = {"img_size": 32, "patch_size": 8, "depth": 2, "num_classes": 5}

# name, builder kwargs, input shape (bands match the builder's in_chans), expected group kinds
POPULATION = [
    ("statlog_cnn", {"width": 8}, (3, 4, 3, 3), {"hidden"}),
    ("tiny_resnet", {"width": 8, "depth": 2}, (2, 4, 8, 8), {"hidden", "residual"}),
    (
        "tiny_resnet",
        {"width": 6, "depth": 1, "head": "classification", "in_chans": 6},
        (2, 6, 8, 8),
        {"hidden", "residual"},
    ),
    ("tiny_mobilenet", {"width": 8, "depth": 2}, (2, 4, 8, 8), {"hidden", "residual"}),
    ("tiny_mobilenet", {"width": 4, "depth": 1, "head": "classification"}, (2, 4, 8, 8), {"hidden", "residual"}),
]
TIMM = [
    ("resnet10t", {"num_classes": 5}, (2, 3, 32, 32), {"hidden", "residual"}),  # basic blocks, deep stem, avg-down
    ("resnet14t", {"num_classes": 5}, (2, 3, 32, 32), {"hidden", "residual"}),  # bottleneck blocks
    ("mobilenetv2_050", {"num_classes": 5}, (2, 3, 32, 32), {"hidden", "residual"}),
    ("mobilenetv3_small_050", {"num_classes": 5}, (2, 3, 32, 32), {"hidden", "residual", "se"}),
    ("vit_tiny_patch16_224", VIT_KW, (2, 3, 32, 32), {"hidden", "residual", "heads", "head_dims"}),
]


def _build(name: str, kwargs: dict) -> torch.nn.Module:
    if name in ("statlog_cnn", "tiny_resnet", "tiny_mobilenet"):
        return build_architecture(name, **kwargs)
    return timm.create_model(name, pretrained=False, **kwargs)


def _randomized(name: str, kwargs: dict, seed: int = 0) -> torch.nn.Module:
    """A model in eval mode with non-trivial norm parameters and statistics (defaults 1/0 would hide bugs)."""
    torch.manual_seed(seed)
    model = _build(name, kwargs).eval()
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if key.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif key.endswith(("bias", "running_mean")):
                t.normal_(0.0, 0.5)
            elif t.dim() == 1:
                t.uniform_(0.5, 1.5)
    return model


def _assert_same_function(model: torch.nn.Module, other: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        y, y2 = model(x), other(x)
    scale = y.abs().max().item()
    assert scale > 0
    assert (y - y2).abs().max().item() <= 1e-4 * scale + 1e-5


@pytest.mark.parametrize(("name", "kwargs", "shape", "kinds"), POPULATION + TIMM, ids=lambda v: str(v)[:40])
def test_permuted_model_computes_the_same_function(name, kwargs, shape, kinds):
    model = _randomized(name, kwargs)
    spec = permutation_spec(name, **kwargs)
    assert {g.kind for g in spec.groups} == kinds
    perm = random_permutation(spec, torch.Generator().manual_seed(1))
    state = model.state_dict()
    permuted_state = permute_state_dict(state, perm)
    assert list(permuted_state) == list(state)
    # Every touched tensor moved (random permutations of >= 4 units almost never fix a whole tensor).
    changed = [k for k in spec.keys if not torch.equal(permuted_state[k], state[k])]
    assert len(changed) >= 0.9 * len(spec.keys)
    other = copy.deepcopy(model)
    other.load_state_dict(permuted_state)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    _assert_same_function(model, other, x)
    # Permuting back with the inverse gives the original weights exactly (groups here never share an axis,
    # except heads/head_dims, so invert those by matching instead).
    if "heads" not in kinds:
        back = permute_state_dict(permuted_state, perm.inverse())
        assert all(torch.equal(back[k], state[k]) for k in state)


def test_a_wrong_spec_changes_the_function():
    """Control: permuting the conv1 rows without the matching bn1 / conv2 slots breaks the model (the test above can
    fail)."""
    from geosane_hf.augmentations import AxisSlot, Permutation, PermutationGroup, PermutationSpec

    model = _randomized("statlog_cnn", {"width": 8})
    state = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    broken = PermutationSpec("broken", (PermutationGroup("conv1", 8, (AxisSlot("conv1.weight", 0),)),), shapes)
    perm = Permutation(broken, {"conv1": torch.tensor([1, 0, 3, 2, 5, 4, 7, 6])})
    other = build_architecture("statlog_cnn", width=8).eval()
    other.load_state_dict(permute_state_dict(state, perm))
    x = torch.randn(4, 4, 3, 3)
    with pytest.raises(AssertionError):
        _assert_same_function(model, other, x)


def test_resnet_inner_only_spec_and_resnet18_groups():
    spec = permutation_spec("resnet18", kinds=["hidden"])
    assert [g.name for g in spec.groups][:2] == ["layer1.0.conv1", "layer1.1.conv1"]
    assert all(g.kind == "hidden" for g in spec.groups) and len(spec.groups) == 8
    full = permutation_spec("resnet18")
    assert {g.name for g in full.groups if g.kind == "residual"} == {
        "stem",
        "layer2.stream",
        "layer3.stream",
        "layer4.stream",
    }
    # The stem group reaches from conv1 to every layer1 block and layer2's downsample input.
    stem_keys = {s.key for s in full.group("stem").slots}
    assert {"conv1.weight", "bn1.running_var", "layer1.1.bn2.weight", "layer2.0.downsample.0.weight"} <= stem_keys


@pytest.mark.parametrize("mode", ["geosane", "full"])
@pytest.mark.parametrize(
    ("name", "kwargs", "dense"),
    [
        ("tiny_mobilenet", {"width": 8}, True),
        ("tiny_mobilenet", {"width": 8}, False),
        ("statlog_cnn", {"width": 4}, True),
        ("statlog_cnn", {"width": 4}, False),
        ("vit_tiny_patch16_224", VIT_KW, False),  # nested groups: always per-layer
    ],
    ids=["mobilenet-dense", "mobilenet-per-layer", "statlog-dense", "statlog-per-layer", "vit-per-layer"],
)
def test_permute_tokens_equals_tokenizing_the_permuted_state_dict(mode, name, kwargs, dense, monkeypatch):
    """Both token-space paths (dense per-value plan for small models, per-layer gathers otherwise; ViT's nested
    head groups always take the latter) give exactly the tokens of the permuted state_dict."""
    from geosane_hf.augmentations import permutations

    if not dense:
        monkeypatch.setattr(permutations, "DENSE_MAX_VALUES", 0)
    state = _randomized(name, kwargs).state_dict()
    spec = permutation_spec(name, **kwargs)
    tokenizer = WeightTokenizer(token_size=37, mode=mode)
    tokenized = tokenizer.tokenize(state)
    g = torch.Generator().manual_seed(0)
    N = tokenized.num_tokens
    for _ in range(2):
        perm = random_permutation(spec, g)
        expected = tokenizer.tokenize(permute_state_dict(state, perm)).tokens
        assert torch.equal(permute_tokens(tokenized, perm), expected)
        start = int(torch.randint(0, N - 1, (1,), generator=g))
        stop = min(N, start + int(torch.randint(1, 300, (1,), generator=g)))
        assert torch.equal(permute_tokens(tokenized, perm, start, stop), expected[start:stop])
    with pytest.raises(ValueError, match="start < stop"):
        permute_tokens(tokenized, perm, N, N + 1)


def test_multiplicative_noise_statistics_and_reproducibility():
    w = torch.randn(400, 230) + 3.0  # away from zero so the ratio is well defined
    mask = torch.ones_like(w, dtype=torch.bool)
    mask[-1, 100:] = False
    w[-1, 100:] = 0.0
    noisy = multiplicative_noise(w, 0.1, torch.Generator().manual_seed(0), mask=mask)
    ratio = (noisy / w)[mask]
    assert abs(ratio.mean().item() - 1.0) < 0.005
    assert abs(ratio.std().item() - 0.1) < 0.005
    assert torch.equal(noisy[~mask], w[~mask])
    again = multiplicative_noise(w, 0.1, torch.Generator().manual_seed(0), mask=mask)
    assert torch.equal(noisy, again)
    assert not torch.equal(noisy, multiplicative_noise(w, 0.1, torch.Generator().manual_seed(1), mask=mask))
    assert torch.equal(multiplicative_noise(w, 0.0), w)
    with pytest.raises(ValueError, match="sigma"):
        multiplicative_noise(w, -0.1)


@pytest.mark.parametrize("mode", ["tokens", "values"])
def test_erasing_respects_mask_and_rate(mode):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 50, 16) + 5.0  # [B, N, T], no exact zeros
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 40:] = False  # 10 padding tokens per sample
    mask[:, 39, 5:] = False  # a partial last token
    tokens = tokens * mask
    out = erase_tokens(tokens, mask, rate=0.2, generator=g, mode=mode)
    assert bool((out.erased <= mask).all())  # only real values are erased
    assert torch.equal(out.tokens[out.erased], torch.zeros(int(out.erased.sum())))
    assert torch.equal(out.tokens[~out.erased], tokens[~out.erased])
    for b in range(3):
        if mode == "tokens":
            erased_tokens = out.erased[b].any(dim=1)
            assert int(erased_tokens.sum()) == 8  # round(0.2 * 40 real tokens)
            assert torch.equal(out.erased[b][erased_tokens], mask[b][erased_tokens])  # whole tokens
        else:
            assert int(out.erased[b].sum()) == round(0.2 * int(mask[b].sum()))
    again = erase_tokens(tokens, mask, rate=0.2, generator=torch.Generator().manual_seed(0), mode=mode)
    assert torch.equal(again.tokens, out.tokens)
    single = erase_tokens(tokens[0], mask[0], rate=0.0, generator=g, mode=mode)
    assert not single.erased.any()
    with pytest.raises(ValueError, match="rate"):
        erase_tokens(tokens, mask, rate=1.5)
    with pytest.raises(ValueError, match="bool mask"):
        erase_tokens(tokens, mask.float())


def test_two_views_targets_are_function_preserving_and_inputs_augmented():
    name, kwargs = "tiny_resnet", {"width": 8, "depth": 1, "head": "classification"}
    model = _randomized(name, kwargs)
    state = model.state_dict()
    spec = permutation_spec(name, **kwargs)
    config = TwoViewConfig(token_size=64, tokenizer_mode="full", noise_sigma=0.1, erase_rate=0.25)
    augment = TwoViewAugmenter(config)
    tokenized = augment.tokenizer.tokenize(state)
    views = augment(tokenized, spec=spec, generator=torch.Generator().manual_seed(0))
    assert views.view1.tokens.shape == views.mask.shape == tokenized.tokens.shape
    assert not torch.equal(views.view1.target, views.view2.target)  # independent permutations
    assert torch.equal(views.positions, tokenized.positions)
    x = torch.randn(3, 4, 8, 8)
    for view in (views.view1, views.view2):
        # The clean target is a permuted copy of the model: same function.
        other = copy.deepcopy(model)
        other.load_state_dict(augment.tokenizer.detokenize(view.target, tokenized.layout))
        _assert_same_function(model, other, x)
        real = views.mask & ~view.erased
        ratio = view.tokens[real] / view.target[real]
        assert 0.05 < ratio.std().item() < 0.15
        assert torch.equal(view.tokens[view.erased], torch.zeros(int(view.erased.sum())))
        assert int(view.erased.any(dim=1).sum()) == round(0.25 * tokenized.num_tokens)
    # Same seed, same views; a window of a state_dict source equals the same window of its tokens.
    again = augment(state, spec=spec, start=5, length=7, generator=torch.Generator().manual_seed(3))
    same = augment(tokenized, spec=spec, start=5, length=7, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again.view1.tokens, same.view1.tokens) and torch.equal(again.view2.target, same.view2.target)
    assert again.view1.tokens.shape == (7, 64) and again.start == 5
    with pytest.raises(ValueError, match="spec="):
        augment(tokenized)


def test_two_views_from_a_dataset_window_and_identity_first_view():
    tokens = torch.randn(16, 32)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    positions = torch.zeros(16, 3, dtype=torch.int16)
    augment = TwoViewAugmenter(TwoViewConfig(permute=False, erase_rate=0.0, noise_sigma=0.1))
    views = augment.augment_window(tokens, mask, positions, torch.zeros(16, dtype=torch.long), torch.Generator())
    assert torch.equal(views.view1.target, tokens) and torch.equal(views.view2.target, tokens)
    assert not torch.equal(views.view1.tokens, views.view2.tokens)
    spec = permutation_spec("statlog_cnn", width=8)
    state = build_architecture("statlog_cnn", width=8).state_dict()
    first = TwoViewAugmenter(TwoViewConfig(token_size=16, first_view_identity=True, noise_sigma=0.0, erase_rate=0.0))
    out = first(state, spec=spec, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.view1.target, first.tokenizer.tokenize(state).tokens)
    assert not torch.equal(out.view2.target, out.view1.target)


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("statlog_cnn", {"width": 8}, (3, 4, 3, 3)),
        ("tiny_mobilenet", {"width": 8, "depth": 2}, (2, 4, 8, 8)),
        ("resnet10t", {"num_classes": 5}, (2, 3, 32, 32)),
        ("vit_tiny_patch16_224", VIT_KW, (2, 3, 32, 32)),  # nested groups: heads, then within-head dims
    ],
)
def test_canonical_form_is_permutation_invariant_and_preserves_function(name, kwargs, shape):
    model = _randomized(name, kwargs)
    state = model.state_dict()
    spec = permutation_spec(name, **kwargs)
    canonical = canonicalize(state, spec).state_dict
    shuffled = permute_state_dict(state, random_permutation(spec, torch.Generator().manual_seed(4)))
    assert not all(torch.equal(shuffled[k], state[k]) for k in state)
    again = canonicalize(shuffled, spec).state_dict
    assert all(torch.equal(canonical[k], again[k]) for k in state)
    # Sorted: the units of the first group by decreasing norm of their own parameters (all "out" slots).
    first = spec.groups[0]
    sq = sum(
        canonical[s.key].movedim(s.axis, 0).reshape(first.size, -1).double().pow(2).sum(1)
        for s in first.slots
        if s.role == "out"
    )
    assert bool((sq[:-1] >= sq[1:]).all())
    other = copy.deepcopy(model)
    other.load_state_dict(canonical)
    _assert_same_function(model, other, torch.randn(*shape))


@pytest.mark.parametrize(
    ("name", "kwargs"), [("tiny_resnet", {"width": 8, "depth": 2}), ("vit_tiny_patch16_224", VIT_KW)]
)
def test_weight_matching_recovers_a_permuted_copy(name, kwargs):
    state = _randomized(name, kwargs).state_dict()
    spec = permutation_spec(name, **kwargs)
    shuffled = permute_state_dict(
        state, random_permutation(spec.select(["hidden", "residual", "heads"]), torch.Generator().manual_seed(5))
    )
    result = weight_matching(shuffled, state, spec, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(result.state_dict[k], state[k]) for k in state)
    assert result.similarity_after > result.similarity_before


def test_weight_matching_aligns_two_different_models_better():
    spec = permutation_spec("tiny_resnet", width=8, depth=2)
    a = _randomized("tiny_resnet", {"width": 8, "depth": 2}, seed=0).state_dict()
    b = _randomized("tiny_resnet", {"width": 8, "depth": 2}, seed=1).state_dict()
    result = weight_matching(b, a, spec)
    assert result.similarity_after > result.similarity_before


def test_linear_assignment_fallback_is_optimal():
    rng = np.random.default_rng(0)
    for n in range(1, 7):
        for _ in range(10):
            score = np.round(rng.normal(size=(n, n)), 1)  # ties included
            p = linear_assignment(score, use_scipy=False)
            assert sorted(p.tolist()) == list(range(n))
            best = max(sum(score[i, q[i]] for i in range(n)) for q in itertools.permutations(range(n)))
            assert abs(score[np.arange(n), p].sum() - best) < 1e-9


@pytest.mark.parametrize(
    ("model_or_name", "match"),
    [
        ("convnext_atto", "ConvNeXt"),
        ("resnext26ts", "ByobNet|resnext26ts"),
        ("not_a_model_name", "unknown name"),
    ],
)
def test_unsupported_architectures_raise_a_clear_error(model_or_name, match):
    with pytest.raises(UnsupportedArchitectureError, match=match) as info:
        permutation_spec(model_or_name)
    assert "Supported: statlog_cnn" in str(info.value) and "VisionTransformer" in str(info.value)


def test_unsupported_blocks_and_modules_raise():
    with pytest.raises(UnsupportedArchitectureError, match="grouped conv"):
        permutation_spec("resnext50_32x4d")
    with pytest.raises(UnsupportedArchitectureError, match="Sequential"):
        permutation_spec(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)))
    assert issubclass(UnsupportedArchitectureError, ValueError)


def test_spec_rejects_a_state_dict_of_another_width():
    spec = permutation_spec("statlog_cnn", width=16)
    state = build_architecture("statlog_cnn", width=8).state_dict()
    perm = random_permutation(spec)
    with pytest.raises(PermutationSpecError, match=r"expected 'conv1\.weight' of shape"):
        permute_state_dict(state, perm)
    with pytest.raises(PermutationSpecError, match="tokenized layout"):
        permute_tokens(WeightTokenizer(token_size=8).tokenize(state), perm)
