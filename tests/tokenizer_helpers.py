"""Helpers of the tokenizer tests (test_tokenizer*.py): random timm models and an exact state_dict comparison."""

from __future__ import annotations

import timm
import torch


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
