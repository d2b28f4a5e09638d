"""Mapping a checkpoint's keys onto its architecture: prefixes, ``key_map: by-name`` / ``by-order``, the strict load
on meta tensors, the renamed lazy view that the collector writes, and the content hash (the dedupe key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from geosane_hf.checkpoints import TensorSpec
from geosane_hf.collection.collection_index import CollectionError
from geosane_hf.collection.manifest import ArchitectureSpec, ManifestEntry

# Key prefixes that training frameworks put in front of a network's own names; tried in this order when an entry
# declares an architecture but no `strip_prefixes` (Lightning `model.`, DDP `module.`, MoCo `encoder_q.` ...).
COMMON_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "encoder_q.", "student.", "teacher.", "net.")
# Buffers that old checkpoints lack (BatchNorm's counter, added in PyTorch 0.4.1) and that do not change what the
# network computes in eval mode: filled with zeros when missing, and listed in the record's `filled_keys`.
FILLABLE_SUFFIXES = ("num_batches_tracked",)


class _MappedStateDict(Mapping[str, torch.Tensor]):
    """``new key -> source[old key]`` in a fixed order, plus zero-filled buffers; reads one tensor per access."""

    def __init__(self, source: Mapping[str, torch.Tensor], keys: dict[str, str | None], specs: dict[str, TensorSpec]):
        self._source = source
        self._keys = keys  # new key -> old key (None: a zero-filled buffer)
        self.tensor_specs = {k: specs[k] for k in keys}

    def __getitem__(self, key: str) -> torch.Tensor:
        old = self._keys[key]
        if old is None:
            spec = self.tensor_specs[key]
            return torch.zeros(spec.shape, dtype=spec.dtype)
        return self._source[old]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _specs_of(state_dict: Mapping[str, Any]) -> dict[str, TensorSpec]:
    """Shapes and dtypes of every tensor (from ``tensor_specs`` when lazy); non-tensor values are left out."""
    lazy = getattr(state_dict, "tensor_specs", None)
    if lazy is not None:
        return dict(lazy)
    return {k: TensorSpec(tuple(v.shape), v.dtype) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}


def content_hash(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's key, dtype, shape and bytes, in sorted key order: equal for equal checkpoints,
    whatever order their keys were saved in.

    Example:
        >>> w, b = torch.ones(2), torch.zeros(1)
        >>> content_hash({"w": w, "b": b}) == content_hash({"b": b, "w": w})
        True
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        _update_hash(digest, key, state_dict[key])
    return digest.hexdigest()


def _update_hash(digest: Any, key: str, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{key}|{tensor.dtype!s}|{tuple(tensor.shape)}|".encode())
    if tensor.numel():
        digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))


def _rename(keys: list[str], entry: ManifestEntry) -> dict[str, str]:
    """Applies ``select_prefix`` then ``strip_prefixes``: new key -> source key, in source order."""
    if entry.select_prefix:
        keys = [k for k in keys if k.startswith(entry.select_prefix)]
        if not keys:
            raise CollectionError(
                f"no key starts with select_prefix {entry.select_prefix!r}; check the manifest (keys look like "
                f"{keys[:3]})."
            )
    mapping = {}
    for old in keys:
        new = old
        for prefix in entry.strip_prefixes:
            new = new.removeprefix(prefix)
        if new in mapping:
            raise CollectionError(
                f"stripping {entry.strip_prefixes} maps both {mapping[new]!r} and {old!r} to {new!r}."
            )
        mapping[new] = old
    return mapping


def build_architecture(spec: ArchitectureSpec, device: str | torch.device = "meta") -> torch.nn.Module:
    """Builds the network a checkpoint belongs to (on the meta device by default: no memory, no init time).

    Example:
        >>> build_architecture(ArchitectureSpec("torchvision", "mobilenet_v2")).features[0][0].weight.shape
        torch.Size([32, 3, 3, 3])
    """
    with torch.device(device):
        if spec.library == "timm":
            import timm

            if not timm.is_model(spec.name):
                raise CollectionError(f"timm has no architecture {spec.name!r}; fix architecture.name.")
            return timm.create_model(spec.name, pretrained=False, **spec.kwargs)
        if spec.library == "torchvision":
            import torchvision

            try:
                return torchvision.models.get_model(spec.name, weights=None, **spec.kwargs)
            except ValueError as error:
                raise CollectionError(f"torchvision: {error}; fix architecture.name.") from error
        from geosane_hf.collection.architectures import build_architecture as build_ours

        return build_ours(spec.name, **spec.kwargs)


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _fit_by_name(
    renamed: dict[str, str], specs: dict[str, TensorSpec], expected: dict[str, TensorSpec], entry: ManifestEntry
) -> dict[str, str | None]:
    candidates = [renamed]
    if not entry.strip_prefixes and not entry.select_prefix:
        for prefix in COMMON_PREFIXES:
            if any(k.startswith(prefix) for k in renamed):
                candidates.append({k.removeprefix(prefix): v for k, v in renamed.items() if k.startswith(prefix)})
    best = max(candidates, key=lambda mapping: len(expected.keys() & mapping.keys()))
    missing = [k for k in expected if k not in best and not k.endswith(FILLABLE_SUFFIXES)]
    unexpected = [k for k in best if k not in expected]
    wrong_shape = [
        f"{k}: expected {list(expected[k].shape)}, got {list(specs[best[k]].shape)}"
        for k in expected
        if k in best and specs[best[k]].shape != expected[k].shape
    ]
    if missing or unexpected or wrong_shape:
        spec = entry.architecture
        raise CollectionError(
            f"does not fit {spec.library}:{spec.name}{spec.kwargs or ''}: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}, {len(wrong_shape)} shape mismatches "
            f"{wrong_shape[:2]}; fix the architecture (kwargs such as num_classes/in_chans), set "
            "strip_prefixes/select_prefix, or use key_map: by-order when only the names differ."
        )
    return {k: best.get(k) for k in expected}


def _fit_by_order(
    renamed: dict[str, str], specs: dict[str, TensorSpec], expected: dict[str, TensorSpec], entry: ManifestEntry
) -> dict[str, str | None]:
    source_keys, target_keys = list(renamed), list(expected)
    spec = entry.architecture
    if len(source_keys) != len(target_keys):
        raise CollectionError(
            f"key_map by-order: expected {len(target_keys)} tensors for {spec.library}:{spec.name}, got "
            f"{len(source_keys)}; the checkpoint does not fit this architecture."
        )
    for index, (new, target) in enumerate(zip(source_keys, target_keys, strict=True)):
        got = specs[renamed[new]]
        if got.shape != expected[target].shape or _leaf(new) != _leaf(target):
            raise CollectionError(
                f"key_map by-order: tensor {index} {new!r} {list(got.shape)} does not match {target!r} "
                f"{list(expected[target].shape)} of {spec.library}:{spec.name}; the order differs, use by-name."
            )
    return {target: renamed[new] for new, target in zip(source_keys, target_keys, strict=True)}


def _fit_architecture(
    renamed: dict[str, str], specs: dict[str, TensorSpec], entry: ManifestEntry
) -> tuple[dict[str, str | None], dict[str, TensorSpec]]:
    """Maps the checkpoint's keys onto the architecture and proves a strict load works (on meta tensors).

    Returns the mapping (architecture key -> source key, None for a zero-filled buffer) and the output specs.
    """
    model = build_architecture(entry.architecture)
    expected = {k: TensorSpec(tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    fit = _fit_by_order if entry.key_map == "by-order" else _fit_by_name
    mapping = fit(renamed, specs, expected, entry)
    out_specs = {k: specs[old] if old is not None else expected[k] for k, old in mapping.items()}
    meta = {k: torch.empty(s.shape, dtype=s.dtype, device="meta") for k, s in out_specs.items()}
    try:
        model.load_state_dict(meta, strict=True, assign=True)  # the module's own checks and load hooks
    except RuntimeError as error:
        raise CollectionError(f"strict load into {entry.architecture.name} failed: {error}") from error
    return mapping, out_specs
