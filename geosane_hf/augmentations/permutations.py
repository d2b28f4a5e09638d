"""Random function-preserving permutations, applied to state_dicts or directly to tokens.

Convention: a group permutation ``p`` (LongTensor ``[size]``) reorders units as ``new[i] = old[p[i]]`` on every slot
of the group (``index_select(axis, p)``). Groups that touch the same axis of one tensor (heads and within-head
dims of a fused qkv) compose in spec order, so applying all groups at once equals applying them one by one.

Two ways to apply a :class:`Permutation`:

- :func:`permute_state_dict`: one ``index_select`` per permuted axis of each touched tensor; untouched tensors are
  passed through without a copy.
- :func:`permute_tokens`: the same result on the tokens of a :class:`~geosane_hf.tokenizer.TokenizedWeights`
  (either tokenizer mode), computed only for a window ``[start, stop)`` of tokens: one gather per layer that
  overlaps the window, so a 512-token window of a huge model costs about a 512-token copy. This is the path the
  training data loader uses (permute, then cut the window, without detokenizing).

Example:
    >>> import torch
    >>> from geosane_hf.collection import build_architecture
    >>> from geosane_hf.augmentations import permutation_spec
    >>> model = build_architecture("statlog_cnn", width=8).eval()
    >>> spec = permutation_spec(model)
    >>> perm = random_permutation(spec, torch.Generator().manual_seed(0))
    >>> permuted = build_architecture("statlog_cnn", width=8).eval()
    >>> _ = permuted.load_state_dict(permute_state_dict(model.state_dict(), perm))
    >>> x = torch.randn(5, 4, 3, 3)
    >>> torch.allclose(model(x), permuted(x), atol=1e-6)
    True
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from geosane_hf.augmentations.spec import PermutationGroup, PermutationSpec, PermutationSpecError
from geosane_hf.tokenizer import TokenizedWeights, WeightLayout

__all__ = [
    "Permutation",
    "identity_permutation",
    "permute_state_dict",
    "permute_tokens",
    "random_permutation",
]


@dataclass
class Permutation:
    """One permutation per group of a spec.

    Attributes:
        spec: the :class:`PermutationSpec` it belongs to.
        indices: ``{group name: LongTensor [size]}``; a missing group is the identity.
    """

    spec: PermutationSpec
    indices: dict[str, torch.Tensor]

    def inverse(self) -> Permutation:
        """Per-group inverse (``argsort``). It undoes this permutation exactly when no two groups share an axis, i.e.
        for every supported architecture except ViT heads together with within-head dims."""
        return Permutation(self.spec, {name: torch.argsort(p) for name, p in self.indices.items()})


def _sample_group(group: PermutationGroup, generator: torch.Generator | None) -> torch.Tensor:
    if group.blocks == 1:
        return torch.randperm(group.size, generator=generator)
    per = group.size // group.blocks
    keys = torch.rand(group.blocks, per, generator=generator)  # [blocks, per]
    local = torch.argsort(keys, dim=1)  # [blocks, per] a permutation per block
    return (local + torch.arange(group.blocks)[:, None] * per).reshape(-1)


def random_permutation(
    spec: PermutationSpec, generator: torch.Generator | None = None, groups: Sequence[str] | None = None
) -> Permutation:
    """Draws a uniformly random permutation for every group (or only for ``groups``; the others stay identity).

    Args:
        spec: from :func:`~geosane_hf.augmentations.permutation_spec`.
        generator: a CPU ``torch.Generator`` for reproducibility.
        groups: names of the groups to draw (in spec order); default all.

    Example:
        >>> from geosane_hf.augmentations import permutation_spec
        >>> perm = random_permutation(permutation_spec("statlog_cnn", width=4), torch.Generator().manual_seed(0))
        >>> sorted(perm.indices["conv1"].tolist())
        [0, 1, 2, 3]
    """
    wanted = None if groups is None else set(groups)
    indices = {}
    for group in spec.groups:
        if wanted is None or group.name in wanted:
            indices[group.name] = _sample_group(group, generator)
    return Permutation(spec, indices)


def identity_permutation(spec: PermutationSpec) -> Permutation:
    """The identity for every group."""
    return Permutation(spec, {g.name: torch.arange(g.size) for g in spec.groups})


# --------------------------------------------------------------------------------------------- compiled plans


@dataclass(frozen=True)
class _Slot:
    group: str
    start: int
    repeat: int
    size: int
    inner: int


@dataclass(frozen=True)
class _AxisPlan:
    key: str
    axis: int
    length: int
    slots: tuple[_Slot, ...]  # in spec group order

    def index(self, perm: Permutation, device: torch.device) -> torch.Tensor | None:
        """Source index along the axis (``new = old.index_select(axis, index)``), or None for the identity."""
        index = None
        for slot in self.slots:
            p = perm.indices.get(slot.group)
            if p is None:
                continue
            span = slot.repeat * slot.size * slot.inner
            if slot.repeat == 1 and slot.inner == 1:
                seg = p if slot.start == 0 else p + slot.start  # plain channels: the permutation itself
            else:
                r = torch.arange(slot.repeat)[:, None, None] * (slot.size * slot.inner)  # [repeat, 1, 1]
                k = torch.arange(slot.inner)[None, None, :]  # [1, 1, inner]
                seg = (slot.start + r + p[None, :, None] * slot.inner + k).reshape(span)  # [span]
            if index is None and slot.start == 0 and span == self.length:
                index = seg
                continue
            b = torch.arange(self.length)
            b[slot.start : slot.start + span] = seg
            index = b if index is None else index[b]
        return None if index is None else index.to(device)


@functools.lru_cache(maxsize=256)
def _axis_plans(spec: PermutationSpec) -> dict[str, tuple[_AxisPlan, ...]]:
    by_axis: dict[tuple[str, int], list[_Slot]] = {}
    for group in spec.groups:
        for s in group.slots:
            by_axis.setdefault((s.key, s.axis), []).append(_Slot(group.name, s.start, s.repeat, group.size, s.inner))
    plans: dict[str, list[_AxisPlan]] = {}
    for (key, axis), slots in by_axis.items():
        shape = spec.shapes[key]
        plans.setdefault(key, []).append(_AxisPlan(key, axis, shape[axis], tuple(slots)))
    return {k: tuple(sorted(v, key=lambda a: a.axis)) for k, v in plans.items()}


def permute_state_dict(
    state_dict: Mapping[str, torch.Tensor], permutation: Permutation, check: bool = True
) -> dict[str, torch.Tensor]:
    """Applies a permutation to a state_dict (a new dict in the same key order; untouched tensors are shared).

    Args:
        state_dict: a state_dict of the spec's architecture (a lazy mapping is read one tensor at a time).
        permutation: from :func:`random_permutation` (or a canonicalisation / weight matching).
        check: validate keys and shapes against the spec first (a state_dict holding only the touched keys is
            accepted with ``check=False``).

    Raises:
        PermutationSpecError: a touched key is missing or has another shape than the spec.

    Example:
        >>> from geosane_hf.augmentations import permutation_spec
        >>> spec = permutation_spec("statlog_cnn", width=4)
        >>> perm = Permutation(spec, {"conv1": torch.tensor([3, 2, 1, 0])})
        >>> sd = {k: torch.arange(float(torch.Size(s).numel())).reshape(s) for k, s in spec.shapes.items()}
        >>> permute_state_dict(sd, perm)["bn1.weight"].tolist()
        [3.0, 2.0, 1.0, 0.0]
    """
    spec = permutation.spec
    if check:
        spec.check_state_dict(state_dict)
    plans = _axis_plans(spec)
    out = {}
    for key in state_dict:
        tensor = state_dict[key]
        for plan in plans.get(key, ()):
            index = plan.index(permutation, tensor.device)
            if index is not None:
                tensor = tensor.index_select(plan.axis, index)
        out[key] = tensor
    return out


# --------------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class _EntryPlan:
    token_offset: int
    token_count: int
    rows: int
    cols: int  # weight values per row (without the bias column)
    has_bias: bool
    inner_shape: tuple[int, ...]  # weight shape[1:]
    axes: tuple[_AxisPlan, ...]  # permuted axes of the weight (bias follows axis 0)


def _layout_key(layout: WeightLayout) -> tuple:
    return (layout.fingerprint, layout.mode, layout.token_size, layout.num_tokens)


class _PlanCache:
    """Compiled plans keyed by ``(id(spec), ...)``; a hit must hold the same spec object (ids are reused)."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._plans: dict[tuple, tuple[PermutationSpec, Any]] = {}

    def get(self, spec: PermutationSpec, key: tuple, compile_plan: Callable[[], Any]) -> Any:
        hit = self._plans.get(key)
        if hit is not None and hit[0] is spec:
            return hit[1]
        if len(self._plans) >= self.max_size:
            self._plans.clear()
        plan = compile_plan()
        self._plans[key] = (spec, plan)
        return plan


_ENTRY_CACHE = _PlanCache(256)


def _entry_plans(spec: PermutationSpec, layout: WeightLayout) -> tuple[_EntryPlan, ...]:
    return _ENTRY_CACHE.get(spec, (id(spec), _layout_key(layout)), lambda: _compile_entries(spec, layout))


def _compile_entries(spec: PermutationSpec, layout: WeightLayout) -> tuple[_EntryPlan, ...]:
    plans = _axis_plans(spec)
    entries = []
    for e in layout.entries:
        axes = plans.get(e.key, ())
        if e.bias_key is not None:
            bias_axes = plans.get(e.bias_key, ())
            row_axes = tuple(a for a in axes if a.axis == 0)
            if tuple(a.slots for a in bias_axes) != tuple(a.slots for a in row_axes):
                raise PermutationSpecError(
                    f"expected bias {e.bias_key!r} to be permuted like the rows of {e.key!r} (they share tokens), "
                    f"got different groups; the spec of {spec.architecture} is inconsistent"
                )
        elif e.key not in spec.shapes and axes:
            raise PermutationSpecError(f"layout key {e.key!r} is not in the spec of {spec.architecture}")
        if axes and tuple(spec.shapes[e.key]) != tuple(e.shape):
            raise PermutationSpecError(
                f"expected {e.key!r} of shape {list(spec.shapes[e.key])} (spec of {spec.architecture}), got "
                f"{list(e.shape)} in the tokenized layout; tokenize the same architecture"
            )
        entries.append(
            _EntryPlan(
                token_offset=e.token_offset,
                token_count=e.token_count,
                rows=e.rows,
                cols=e.cols,
                has_bias=e.bias_key is not None,
                inner_shape=tuple(e.shape[1:]),
                axes=axes,
            )
        )
    return tuple(entries)


def _entry_maps(plan: _EntryPlan, perm: Permutation, device: torch.device) -> tuple[torch.Tensor | None, ...]:
    """(row index [rows], column index [width]) of the permuted entry in its ``[rows, width]`` token block."""
    row_index = None
    col_maps = {}
    for axis_plan in plan.axes:
        index = axis_plan.index(perm, device)
        if index is None:
            continue
        if axis_plan.axis == 0:
            row_index = index
        else:
            col_maps[axis_plan.axis] = index
    if not col_maps:
        return row_index, None
    # colmap[c]: source column of the weight part (row-major over shape[1:]); the bias column maps to itself.
    colmap = torch.zeros((), dtype=torch.long, device=device)
    stride = plan.cols
    for axis, n in enumerate(plan.inner_shape, start=1):
        stride //= n
        idx = col_maps.get(axis)
        if idx is None:
            idx = torch.arange(n, device=device)
        colmap = colmap[..., None] + idx * stride  # [s1, ..., s_axis]
    colmap = colmap.reshape(-1)
    if plan.has_bias:
        colmap = torch.cat([colmap, torch.tensor([plan.cols], device=device)])
    return row_index, colmap


def permute_tokens(
    tokenized: TokenizedWeights,
    permutation: Permutation,
    start: int = 0,
    stop: int | None = None,
) -> torch.Tensor:
    """The tokens ``[start, stop)`` of the permuted model, computed from the original model's tokens.

    Equals ``tokenizer.tokenize(permute_state_dict(state_dict, permutation)).tokens[start:stop]`` (exactly: values
    are only moved) but costs about one copy of the window: each layer that overlaps the window is viewed as its
    ``[rows, cols (+ bias)]`` block in the token stream, and only the rows the window needs are gathered.

    Args:
        tokenized: the whole model's :class:`TokenizedWeights` (either mode, any token size).
        permutation: for the architecture the tokens come from.
        start: first token of the window.
        stop: end of the window (default: the last token).

    Returns:
        ``[stop - start, T]`` tokens, padding zero as in the input.

    Raises:
        PermutationSpecError: layout and spec describe different architectures.

    Example:
        >>> from geosane_hf.augmentations import permutation_spec
        >>> from geosane_hf.collection import build_architecture
        >>> from geosane_hf.tokenizer import WeightTokenizer
        >>> sd = build_architecture("statlog_cnn", width=8).state_dict()
        >>> perm = random_permutation(permutation_spec("statlog_cnn", width=8), torch.Generator().manual_seed(1))
        >>> tok = WeightTokenizer(token_size=16)
        >>> window = permute_tokens(tok.tokenize(sd), perm, start=3, stop=40)
        >>> torch.equal(window, tok.tokenize(permute_state_dict(sd, perm)).tokens[3:40])
        True
    """
    tokens = tokenized.tokens  # [N, T]
    N, T = tokens.shape
    stop = N if stop is None else stop
    if not 0 <= start < stop <= N:
        raise ValueError(f"expected 0 <= start < stop <= {N} (the model's tokens), got start={start}, stop={stop}")
    flat = tokens.reshape(-1)  # [N * T]
    w0, w1 = start * T, stop * T
    dense = _dense_plan(permutation.spec, tokenized.layout)
    if dense is not None:
        return flat.index_select(0, dense.source(permutation, w0, w1, tokens.device)).view(stop - start, T)
    plans = _entry_plans(permutation.spec, tokenized.layout)
    out = flat[w0:w1].clone()  # [W * T]; untouched layers and padding are already right
    device = tokens.device
    for plan in _overlapping(plans, start, stop):
        if not plan.axes:
            continue
        width = plan.cols + int(plan.has_bias)  # values per row in the token stream
        base = plan.token_offset * T
        lo = max(w0, base) - base  # entry-local value range inside the window
        hi = min(w1, base + plan.rows * width) - base
        if hi <= lo:
            continue
        row_index, colmap = _entry_maps(plan, permutation, device)
        if row_index is None and colmap is None:
            continue
        block = flat[base : base + plan.rows * width].view(plan.rows, width)  # [rows, width]
        r0, r1 = lo // width, -(-hi // width)  # rows the window touches
        rows = block[r0:r1] if row_index is None else block.index_select(0, row_index[r0:r1])  # [r1 - r0, width]
        if colmap is not None:
            rows = rows.index_select(1, colmap)
        out[base + lo - w0 : base + hi - w0] = rows.reshape(-1)[lo - r0 * width : hi - r0 * width]
    return out.view(stop - start, T)


#: Models with at most this many token values (~1,100 tokens of 230) get a dense plan: static per-value index arrays
#: (5 x int64 per value, <= 10 MB)
#: so that a permutation is ~6 vectorised ops and one gather. Larger models use per-layer gathers.
DENSE_MAX_VALUES = 2**18


@dataclass(frozen=True)
class _DensePlan:
    """Per token value v: ``source[v] = fixed[v] + P[row_pos[v]] * row_mult[v] + P[col_pos[v]] * col_mult[v]``,
    where ``P`` concatenates every group's permutation (local unit indices) plus a trailing 0 for "no group"."""

    groups: tuple[PermutationGroup, ...]
    fixed: torch.Tensor  # [N * T] int64
    row_pos: torch.Tensor  # [N * T] int64 index into P
    row_mult: torch.Tensor  # [N * T]
    col_pos: torch.Tensor  # [N * T]
    col_mult: torch.Tensor  # [N * T]

    def source(self, perm: Permutation, w0: int, w1: int, device: torch.device) -> torch.Tensor:
        parts = [perm.indices.get(g.name, None) for g in self.groups]
        P = torch.cat([torch.arange(g.size) if p is None else p for g, p in zip(self.groups, parts, strict=True)])
        P = torch.cat([P.cpu(), torch.zeros(1, dtype=torch.long)])  # [S + 1], on the plan's device (CPU)
        sl = slice(w0, w1)
        # index_select + in-place arithmetic: ~3x faster than fancy indexing on small index arrays
        src = P.index_select(0, self.row_pos[sl]).mul_(self.row_mult[sl]).add_(self.fixed[sl])
        src = src.add_(P.index_select(0, self.col_pos[sl]).mul_(self.col_mult[sl]))
        return src.to(device)


_DENSE_CACHE = _PlanCache(64)


def _dense_plan(spec: PermutationSpec, layout: WeightLayout) -> _DensePlan | None:
    key = (id(spec), _layout_key(layout), DENSE_MAX_VALUES)
    return _DENSE_CACHE.get(spec, key, lambda: _compile_dense(spec, layout))


def _slot_map(coord: torch.Tensor, slot: _Slot, offset: int, dummy: int) -> tuple[torch.Tensor, ...]:
    """For coordinates along a permuted axis: (fixed part, index into P, multiplier) of the source coordinate."""
    rel = coord - slot.start
    inside = (rel >= 0) & (rel < slot.repeat * slot.size * slot.inner)
    rep = torch.div(rel, slot.size * slot.inner, rounding_mode="floor")
    unit = torch.div(rel, slot.inner, rounding_mode="floor") % slot.size
    k = rel % slot.inner
    fixed = torch.where(inside, slot.start + rep * slot.size * slot.inner + k, coord)
    pos = torch.where(inside, offset + unit, torch.full_like(coord, dummy))
    mult = torch.where(inside, torch.full_like(coord, slot.inner), torch.zeros_like(coord))
    return fixed, pos, mult


def _compile_dense(spec: PermutationSpec, layout: WeightLayout) -> _DensePlan | None:
    T, N = layout.token_size, layout.num_tokens
    if N * T > DENSE_MAX_VALUES:
        return None
    entries = _entry_plans(spec, layout)
    if any(len(a.slots) > 1 for e in entries for a in e.axes):  # nested groups on one axis (ViT heads + dims)
        return None
    if any(sum(a.axis > 0 for a in e.axes) > 1 for e in entries):
        return None
    offsets, total = {}, 0
    for g in spec.groups:
        offsets[g.name] = total
        total += g.size
    dummy = total
    fixed = torch.arange(N * T)  # identity for padding and untouched layers
    row_pos = torch.full((N * T,), dummy)
    col_pos = torch.full((N * T,), dummy)
    row_mult = torch.zeros(N * T, dtype=torch.long)
    col_mult = torch.zeros(N * T, dtype=torch.long)
    for e in entries:
        if not e.axes:
            continue
        width = e.cols + int(e.has_bias)
        base = e.token_offset * T
        n = e.rows * width
        local = torch.arange(n)
        r = torch.div(local, width, rounding_mode="floor")
        c = local - r * width
        sl = slice(base, base + n)
        row_fixed, c_fixed = r, c
        for a in e.axes:
            slot = a.slots[0]
            if a.axis == 0:
                row_fixed, row_pos[sl], m = _slot_map(r, slot, offsets[slot.group], dummy)
                row_mult[sl] = m * width
            else:
                stride = math.prod(e.inner_shape[a.axis :])  # values per step along this axis in a row
                weight_part = c < e.cols  # the bias column is never permuted along axes >= 1
                coord = torch.div(c, stride, rounding_mode="floor") % e.inner_shape[a.axis - 1]
                f, pos, m = _slot_map(coord, slot, offsets[slot.group], dummy)
                c_fixed = torch.where(weight_part, c - coord * stride + f * stride, c)
                col_pos[sl] = torch.where(weight_part, pos, torch.full_like(pos, dummy))
                col_mult[sl] = torch.where(weight_part, m * stride, torch.zeros_like(m))
        fixed[sl] = base + row_fixed * width + c_fixed
    return _DensePlan(tuple(spec.groups), fixed, row_pos, row_mult, col_pos, col_mult)


def _overlapping(plans: tuple[_EntryPlan, ...], start: int, stop: int) -> list[_EntryPlan]:
    """Entries whose tokens intersect ``[start, stop)`` (entries are sorted by token offset)."""
    offsets = [p.token_offset for p in plans]
    first = max(bisect.bisect_right(offsets, start) - 1, 0)
    out = []
    for plan in plans[first:]:
        if plan.token_offset >= stop:
            break
        if plan.token_offset + plan.token_count > start:
            out.append(plan)
    return out


def groups_in_window(tokenized: TokenizedWeights, spec: PermutationSpec, start: int, stop: int) -> list[str]:
    """Names of the groups that touch tokens ``[start, stop)`` (draw only those: the rest cannot change them)."""
    touched: set[str] = set()
    for plan in _overlapping(_entry_plans(spec, tokenized.layout), start, stop):
        for axis_plan in plan.axes:
            touched.update(s.group for s in axis_plan.slots)
    return [g.name for g in spec.groups if g.name in touched]
