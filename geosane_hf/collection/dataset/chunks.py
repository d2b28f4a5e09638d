"""Chunked tokenization: a state_dict -> consecutive tokens, one source tensor at a time, into reusable windows.

The layout is planned from shapes alone (:func:`plan_layout`); :func:`iter_token_chunks` yields the tokens chunk by
chunk and the build fills the Parquet writer's windows directly (``_iter_windows``). The mask is not stored: it is
:func:`mask_from_num_real` of the ``num_real`` column.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geosane_hf.collection.dataset.config import DatasetBuildError
from geosane_hf.tokenizer import WeightLayout, WeightTokenizer


@dataclass
class TokenChunk:
    """``n`` consecutive tokens of one model (a row of the ``tokens`` table), as numpy arrays.

    Attributes:
        chunk_index: Chunk number within the model.
        token_offset: Global index of the first token.
        tokens: ``[n, T]`` float32.
        num_real: ``[n]`` int16, real values per token.
        positions: ``[n, 3]`` int32 (n, l, j).
        layer_types: ``[n]`` int16.
    """

    chunk_index: int
    token_offset: int
    tokens: np.ndarray  # [n, T]
    num_real: np.ndarray  # [n]
    positions: np.ndarray  # [n, 3]
    layer_types: np.ndarray  # [n]

    @property
    def num_tokens(self) -> int:
        return self.tokens.shape[0]


def mask_from_num_real(num_real: Any, token_size: int) -> torch.Tensor:
    """The ``[n, T]`` bool mask from the stored ``num_real`` ``[n]``: True on the first ``num_real[i]`` values.

    Example:
        >>> mask_from_num_real([3, 1], 3).tolist()
        [[True, True, True], [True, False, False]]
    """
    num_real = torch.as_tensor(num_real, dtype=torch.int64)  # [n]
    return torch.arange(token_size)[None, :] < num_real[..., None]  # [n, T]


def _specs(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    lazy = getattr(state_dict, "tensor_specs", None)
    if lazy is not None:
        return {k: (tuple(s.shape), s.dtype) for k, s in lazy.items()}
    return {k: (tuple(v.shape), v.dtype) for k, v in state_dict.items()}


def plan_layout(state_dict: Mapping[str, torch.Tensor], tokenizer: WeightTokenizer) -> WeightLayout:
    """The tokenizer's :class:`WeightLayout` for ``state_dict``, planned from shapes without reading float data.

    Uses only :meth:`WeightTokenizer.tokenize`: it tokenizes a stand-in state_dict whose floating tensors live on
    the ``meta`` device (shapes, no data), so the planning, bias pairing, layer types and token offsets are exactly
    the tokenizer's; non-floating tensors (small buffers the ``"full"`` layout stores by value) are read for real.

    Raises:
        TokenizerError: The tokenizer rejects the state_dict (nothing to tokenize, a bias that does not fit ...).

    Example:
        >>> import torch
        >>> layout = plan_layout({"fc.weight": torch.ones(2, 3), "fc.bias": torch.ones(2)}, WeightTokenizer(4))
        >>> layout.num_tokens, layout.entries[0].bias_key
        (2, 'fc.bias')
    """
    shadow: dict[str, torch.Tensor] = {}
    for key, (shape, dtype) in _specs(state_dict).items():
        if dtype.is_floating_point and int(np.prod(shape, dtype=np.int64)) > 0:
            shadow[key] = torch.empty(shape, dtype=dtype, device="meta")
        else:
            shadow[key] = state_dict[key]
    planner = WeightTokenizer(token_size=tokenizer.token_size, mode=tokenizer.mode, allow_nonfinite=True)
    try:
        return planner.tokenize(shadow).layout
    except (RuntimeError, NotImplementedError) as error:  # an operation the meta device does not support
        warnings.warn(
            f"planning the token layout from shapes failed ({error}); tokenizing the whole model once instead, "
            "which needs its full token matrix in memory",
            stacklevel=2,
        )
        return tokenizer.tokenize({key: state_dict[key] for key in state_dict}).layout


class _Window:
    """Reusable buffers for ``capacity`` consecutive tokens: values, num_real, positions, layer types.

    Allocated once per build and refilled for every window of every model, so no memory is allocated (and no page
    faulted in) per layer or per chunk.
    """

    def __init__(self, capacity: int, token_size: int) -> None:
        self.capacity = capacity
        self.token_size = token_size
        self.tokens = torch.empty((capacity, token_size), dtype=torch.float32)  # [W, T]
        self.flat = self.tokens.view(-1)  # [W * T]
        self.num_real = np.empty(capacity, dtype=np.int16)  # [W]
        self.positions = np.empty((capacity, 3), dtype=np.int32)  # [W, 3]
        self.layer_types = np.empty(capacity, dtype=np.int16)  # [W]


def _row(weight2d: torch.Tensor, bias: torch.Tensor | None, r: int) -> torch.Tensor:
    """Row ``r`` of the layer's ``(rows, cols [+ 1])`` block: the weight row, then its bias value."""
    row = weight2d[r].to(torch.float32)
    return row if bias is None else torch.cat([row, bias[r : r + 1].to(torch.float32)])


def _fill_values(
    dest: torch.Tensor, start: int, stop: int, weight2d: torch.Tensor, bias: torch.Tensor | None, num_values: int
) -> None:
    """Writes values ``[start, stop)`` of a layer's padded flat token values into ``dest`` (length stop - start).

    The layer's flat values are its ``(rows, cols [+ bias])`` block flattened row-major, then zero padding.
    """
    width = weight2d.shape[1] + (bias is not None)
    a, b = start, min(stop, num_values)
    if a < b:
        if bias is None:
            dest[: b - a].copy_(weight2d.reshape(-1)[a:b])
        else:
            cols = width - 1
            first_full, end_full = -(-a // width), b // width  # rows entirely inside [a, b)
            if first_full > end_full:  # [a, b) inside one row
                r = a // width
                dest[: b - a].copy_(_row(weight2d, bias, r)[a - r * width : b - r * width])
            else:
                head = first_full * width - a
                if head:
                    dest[:head].copy_(_row(weight2d, bias, first_full - 1)[width - head :])
                if end_full > first_full:
                    block = dest[head : head + (end_full - first_full) * width].view(end_full - first_full, width)
                    block[:, :cols].copy_(weight2d[first_full:end_full])
                    block[:, cols].copy_(bias[first_full:end_full])
                tail = b - end_full * width
                if tail:
                    dest[b - a - tail : b - a].copy_(_row(weight2d, bias, end_full)[:tail])
    if stop > max(a, num_values):
        dest[max(num_values, start) - start :].zero_()


def _iter_windows(
    state_dict: Mapping[str, torch.Tensor],
    layout: WeightLayout,
    acquire: Callable[[], _Window],
    check_finite: bool,
) -> Iterator[tuple[_Window, int, int]]:
    """Fills windows with consecutive tokens of the model; yields ``(window, first token, count)`` once per full
    window (and for the last, partial one).

    ``acquire()`` hands out the buffer to fill next; it is called at the start and after every yield, so a caller
    can double-buffer (write one window while the next one is filled) or reuse a single window (then it must
    consume the window before advancing the iterator). Reads one weight (and its bias) at a time; a layer larger
    than a window is written across several windows.
    """
    T = layout.token_size
    window = acquire()
    base, filled = 0, 0  # global index of the window's first token; tokens filled so far
    for entry in layout.entries:
        if entry.token_count == 0:
            continue
        weight = state_dict[entry.key]
        weight2d = weight.reshape(entry.rows, entry.cols)  # [rows, cols]
        bias = state_dict[entry.bias_key].reshape(entry.rows) if entry.bias_key is not None else None  # [rows]
        done = 0
        while done < entry.token_count:
            n = min(entry.token_count - done, window.capacity - filled)
            _fill_values(
                window.flat[filled * T : (filled + n) * T], done * T, (done + n) * T, weight2d, bias, entry.num_values
            )
            window.num_real[filled : filled + n] = T
            if done + n == entry.token_count:
                window.num_real[filled + n - 1] = entry.num_values - (entry.token_count - 1) * T
            window.positions[filled : filled + n, 0] = np.arange(
                entry.token_offset + done, entry.token_offset + done + n
            )
            window.positions[filled : filled + n, 1] = entry.layer_index
            window.positions[filled : filled + n, 2] = np.arange(done, done + n)
            window.layer_types[filled : filled + n] = entry.layer_type
            done += n
            filled += n
            if filled == window.capacity:
                if check_finite:
                    _check_window_finite(window, filled, base, layout)
                yield window, base, filled
                window = acquire()
                base, filled = base + filled, 0
        del weight, weight2d, bias  # one source tensor alive at a time
    if filled:
        if check_finite:
            _check_window_finite(window, filled, base, layout)
        yield window, base, filled


def _check_window_finite(window: _Window, filled: int, base: int, layout: WeightLayout) -> None:
    values = window.tokens[:filled]  # [n, T]
    if bool(torch.isfinite(values.sum())) or bool(torch.isfinite(values).all()):
        return
    bad_rows = (~torch.isfinite(values)).any(dim=1).nonzero()[:, 0] + base
    layers = sorted({int(window.positions[int(i) - base, 1]) for i in bad_rows[:1000]})
    keys = [layout.entries[i].key for i in layers[:5]]
    raise DatasetBuildError(
        f"expected finite weights, got NaN/Inf in {len(bad_rows)} tokens of layers {keys}; recollect the model "
        "(`geosane collect` rejects such checkpoints) or drop it from the collection"
    )


def iter_token_chunks(
    state_dict: Mapping[str, torch.Tensor],
    tokenizer: WeightTokenizer,
    chunk_tokens: int,
    *,
    layout: WeightLayout | None = None,
    check_finite: bool = True,
) -> Iterator[TokenChunk]:
    """Yields the tokens of a state_dict in chunks of ``chunk_tokens`` consecutive tokens, one tensor at a time.

    The concatenated chunks equal ``tokenizer.tokenize(state_dict)`` (tokens as float32, ``mask`` as
    :func:`mask_from_num_real`, positions, layer types); a lazy state_dict is read one tensor at a time, so the
    memory is one source tensor plus one chunk, whatever the model's size.

    Args:
        state_dict: An ordered mapping of tensors (a lazy safetensors mapping is best).
        tokenizer: Gives the token size and the mode.
        chunk_tokens: Tokens per chunk; chunk ``c`` starts at token ``c * chunk_tokens``.
        layout: The layout from :func:`plan_layout`, when already computed.
        check_finite: Raise :class:`DatasetBuildError` on NaN/Inf.

    Example:
        >>> import torch
        >>> sd = {"a.weight": torch.ones(3, 4), "b.weight": torch.ones(5)}
        >>> [(c.token_offset, c.num_tokens) for c in iter_token_chunks(sd, WeightTokenizer(4), chunk_tokens=3)]
        [(0, 3), (3, 2)]
    """
    if chunk_tokens < 1:
        raise DatasetBuildError(f"expected chunk_tokens >= 1, got {chunk_tokens}")
    layout = layout if layout is not None else plan_layout(state_dict, tokenizer)
    single = _Window(chunk_tokens, layout.token_size)
    for index, (window, first, count) in enumerate(_iter_windows(state_dict, layout, lambda: single, check_finite)):
        yield TokenChunk(
            chunk_index=index,
            token_offset=first,
            tokens=window.tokens[:count].numpy().copy(),
            num_real=window.num_real[:count].copy(),
            positions=window.positions[:count].copy(),
            layer_types=window.layer_types[:count].copy(),
        )
