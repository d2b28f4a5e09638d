"""Planning a layout from tensor shapes alone (``geosane`` and ``full`` modes) and the cached index tensors."""

from __future__ import annotations

import collections
import functools
import math
from dataclasses import dataclass

import torch

from geosane_hf.layer_types import classify_tensor
from geosane_hf.tokenizer.layout import (
    INT16_MAX,
    LayoutEntry,
    SpecTuple,
    TokenizerError,
    _contiguous_strides,
    _dtype_from_name,
    _dtype_name,
    architecture_fingerprint,
)

# --------------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _EntryView:
    """Where one entry lives in the flat token buffer (precomputed: the hot loops only call ``as_strided``)."""

    key: str
    bias_key: str | None
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # of the weight inside the (rows, cols [+ 1]) block
    start: int  # flat offset of the block
    rows: int
    row_stride: int  # cols + 1 with a bias column
    bias_start: int
    dtype: torch.dtype
    bias_dtype: torch.dtype | None
    pair: bool  # a floating 1-D weight with its bias: the block is [rows, 2], written with one stack


@functools.lru_cache(maxsize=64)
def _entry_views(entries: tuple[LayoutEntry, ...], token_size: int) -> tuple[_EntryView, ...]:
    views = []
    for e in entries:
        start = e.token_offset * token_size
        if e.bias_key is None:
            strides, row_stride = _contiguous_strides(e.shape), e.cols
        else:
            # (rows, cols + 1) row-major block: each row's first `cols` values are the weight, the last the bias.
            row_stride = e.cols + 1
            strides = (row_stride, *_contiguous_strides(e.shape[1:]))
        views.append(
            _EntryView(
                key=e.key,
                bias_key=e.bias_key,
                shape=e.shape,
                strides=strides,
                start=start,
                rows=e.rows,
                row_stride=row_stride,
                bias_start=start + e.cols,
                dtype=_dtype_from_name(e.dtype),
                bias_dtype=_dtype_from_name(e.bias_dtype) if e.bias_dtype else None,
                pair=(
                    e.bias_key is not None
                    and len(e.shape) == 1
                    and _dtype_from_name(e.dtype).is_floating_point
                    and _dtype_from_name(e.bias_dtype).is_floating_point
                ),
            )
        )
    return tuple(views)


def _views(flat: torch.Tensor, view: _EntryView) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Views into the flat (contiguous) token buffer where the entry's weight (and bias) live."""
    base = flat.storage_offset()
    weight = flat.as_strided(view.shape, view.strides, base + view.start)
    if view.bias_key is None:
        return weight, None
    return weight, flat.as_strided((view.rows,), (view.row_stride,), base + view.bias_start)


@dataclass(frozen=True)
class _Plan:
    """Everything about the output that depends on shapes only; cached per (mode, token size, architecture)."""

    entries: tuple[LayoutEntry, ...]
    views: tuple[_EntryView, ...]
    stored_keys: tuple[str, ...]
    stored_specs: tuple[tuple[str, tuple[int, ...], str], ...]  # (key, shape, dtype name) of the stored tensors
    keys: tuple[str, ...]
    fingerprint: str
    tokens_dtype: torch.dtype
    num_tokens: int
    counts: torch.Tensor  # [L] tokens per layer
    starts: torch.Tensor  # [L] first token of each layer
    last_rows: torch.Tensor  # [L'] last token of each layer with tokens
    last_valid: torch.Tensor  # [L'] real values in that token
    types: torch.Tensor  # [L] LayerType id per layer


def _new_entry(key, shape, dtype, bias_key, bias_dtype, index, offset, token_size) -> LayoutEntry:
    rows = shape[0] if shape else 1
    values = rows * (math.prod(shape) // rows + (bias_key is not None)) if rows else 0
    return LayoutEntry(
        key=key,
        shape=shape,
        dtype=_dtype_name(dtype),
        layer_index=index,
        token_offset=offset,
        token_count=-(-values // token_size),
        layer_type=int(classify_tensor(key, shape)),
        bias_key=bias_key,
        bias_dtype=_dtype_name(bias_dtype) if bias_dtype is not None else None,
    )


def _plan_geosane(specs: dict[str, tuple[tuple[int, ...], torch.dtype]], token_size: int):
    entries: list[LayoutEntry] = []
    consumed: set[str] = set()
    offset = 0
    for key, (shape, dtype) in specs.items():
        if "weight" not in key:
            continue
        if dtype.is_complex:
            raise TokenizerError(f"expected a real-valued tensor for {key!r}, got dtype {dtype}")
        if len(shape) == 0 or shape[0] == 0:
            raise TokenizerError(
                f"cannot view {key!r} as (shape[0], -1): expected a tensor with shape[0] > 0, got shape "
                f"{list(shape)}; rename or drop it before tokenizing (the original silently skipped it), or use "
                "mode='full'"
            )
        bias_key, bias_dtype = key.replace("weight", "bias"), None
        if bias_key in specs:
            bias_shape, bias_dtype = specs[bias_key]
            if bias_shape != (shape[0],):
                raise TokenizerError(
                    f"expected bias {bias_key!r} of shape [{shape[0]}] to append to {key!r} {list(shape)}, got "
                    f"{list(bias_shape)}; rename or drop one of them before tokenizing, or use mode='full'"
                )
            if bias_dtype.is_complex:
                raise TokenizerError(f"expected a real-valued tensor for {bias_key!r}, got dtype {bias_dtype}")
            consumed.add(bias_key)
        else:
            bias_key = None
        entry = _new_entry(key, shape, dtype, bias_key, bias_dtype, len(entries), offset, token_size)
        offset += entry.token_count
        entries.append(entry)
    tokenized = {e.key for e in entries} | consumed
    return entries, [k for k in specs if k not in tokenized]


def _plan_full(specs: dict[str, tuple[tuple[int, ...], torch.dtype]], token_size: int):
    def tokenizable(shape: tuple[int, ...], dtype: torch.dtype) -> bool:
        return dtype.is_floating_point and math.prod(shape) > 0

    bias_of: dict[str, str] = {}
    consumed: set[str] = set()
    for key, (shape, dtype) in specs.items():
        if not key.endswith("weight") or not tokenizable(shape, dtype) or len(shape) == 0:
            continue
        bias_key = key[: -len("weight")] + "bias"
        if bias_key in specs and bias_key not in consumed:
            bias_shape, bias_dtype = specs[bias_key]
            if bias_shape == (shape[0],) and tokenizable(bias_shape, bias_dtype):
                bias_of[key] = bias_key
                consumed.add(bias_key)

    entries: list[LayoutEntry] = []
    stored: list[str] = []
    offset = 0
    for key, (shape, dtype) in specs.items():
        if key in consumed:
            continue
        if not tokenizable(shape, dtype):
            stored.append(key)
            continue
        bias_key = bias_of.get(key)
        bias_dtype = specs[bias_key][1] if bias_key else None
        entry = _new_entry(key, shape, dtype, bias_key, bias_dtype, len(entries), offset, token_size)
        offset += entry.token_count
        entries.append(entry)
    return entries, stored


@functools.lru_cache(maxsize=32)
def _make_plan(mode: str, token_size: int, specs: SpecTuple) -> _Plan:
    by_key = {key: (shape, dtype) for key, shape, dtype in specs}
    entries, stored = (_plan_geosane if mode == "geosane" else _plan_full)(by_key, token_size)
    float64 = any(e.dtype == "float64" or e.bias_dtype == "float64" for e in entries)
    counts = torch.tensor([e.token_count for e in entries], dtype=torch.int64)
    starts = torch.tensor([e.token_offset for e in entries], dtype=torch.int64)
    last_valid = torch.tensor([e.num_values - (e.token_count - 1) * token_size for e in entries], dtype=torch.int64)
    has_tokens = counts > 0
    return _Plan(
        entries=tuple(entries),
        views=_entry_views(tuple(entries), token_size),
        stored_keys=tuple(stored),
        stored_specs=tuple((key, by_key[key][0], _dtype_name(by_key[key][1])) for key in stored),
        keys=tuple(by_key),
        fingerprint=architecture_fingerprint([(key, shape) for key, shape, _ in specs]),
        tokens_dtype=torch.float64 if float64 else torch.float32,
        num_tokens=int(counts.sum()),
        counts=counts,
        starts=starts,
        last_rows=(starts + counts - 1)[has_tokens],
        last_valid=last_valid[has_tokens],
        types=torch.tensor([e.layer_type for e in entries], dtype=torch.int64),
    )


_INDEX_CACHE: collections.OrderedDict[tuple[str, str, int], tuple[torch.Tensor, ...]] = collections.OrderedDict()
_INDEX_CACHE_TOKENS = 1 << 18  # cache num_real / positions / layer types of models up to this many tokens
_INDEX_CACHE_SIZE = 8


def _index_tensors(plan: _Plan, mode: str, token_size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Fresh ``num_real [N]``, ``positions [N, 3]`` and ``layer_types [N]`` of a plan (they depend on shapes only).

    Real values per token: ``T`` everywhere but on each layer's last token. The ``[N, T]`` mask is derived from
    it on first access (:attr:`TokenizedWeights.mask`), so tokenizing writes no second ``N x T`` tensor. Small
    models' results are cached (a population of one architecture) and returned as copies.
    """
    key = (mode, plan.fingerprint, token_size)
    cached = _INDEX_CACHE.get(key)
    if cached is None:
        N, T = plan.num_tokens, token_size
        num_real = torch.full((N,), T, dtype=torch.int16 if T <= INT16_MAX else torch.int32)
        num_real[plan.last_rows] = plan.last_valid.to(dtype=num_real.dtype)
        layer_index = torch.repeat_interleave(torch.arange(len(plan.entries)), plan.counts, output_size=N)  # [N]
        positions = torch.empty((N, 3), dtype=torch.int16 if N - 1 <= INT16_MAX else torch.int32)  # (n, l, j)
        torch.arange(N, out=positions[:, 0])
        positions[:, 1] = layer_index
        positions[:, 2] = positions[:, 0] - plan.starts[layer_index]
        cached = (num_real, positions, plan.types[layer_index])  # [N], [N, 3], [N]
        if N > _INDEX_CACHE_TOKENS:
            return tuple(t.to(device) for t in cached)
        _INDEX_CACHE[key] = cached
        while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
            _INDEX_CACHE.popitem(last=False)
    else:
        _INDEX_CACHE.move_to_end(key)
    return tuple(t.to(device, copy=True) for t in cached)


def _count_nonfinite(view: torch.Tensor) -> int:
    return int((~torch.isfinite(view)).sum().item())
