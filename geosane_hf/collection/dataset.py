"""The tokenized-weights dataset: a collection folder -> a Hugging Face ``datasets`` folder of Parquet shards.

The folder's layout and the columns of its two tables (``tokens``: one row per chunk of <= chunk_tokens consecutive
tokens of one model; ``models``: one row per model) are defined once in :mod:`geosane_hf.collection.schema`, which
the dataset card and the readers (``training/data.py``) share.

The mask is not stored: padding only ever sits at the end of a layer's last token, so the real values of token
``i`` are its first ``num_real[i]`` ones and ``mask[i, k] = k < num_real[i]`` (:func:`mask_from_num_real`). Every
model's tokens start at chunk boundaries: chunk ``c`` holds tokens ``[c * chunk_tokens, (c + 1) * chunk_tokens)``,
across layer boundaries, so one giant model never has to fit in one row.

Determinism: models in id order, fixed row-group size, no timestamps, fixed writer options: the same collection
and settings give byte-identical shards. Atomic: the whole build happens in a hidden sibling folder, each shard
written under a temporary name, verified after it is closed (row count and footer) and renamed; the folder replaces
the output only when complete (:func:`geosane_hf.atomic_io.staged_dir`), so a failed, full-disk or killed (re)build
leaves the earlier dataset as it was, and two builds into one folder cannot mix (the second is refused).

Memory: the tokens are produced chunk by chunk (:func:`iter_token_chunks`), from the tokenizer's layout (planned
from shapes alone) and one tensor at a time of the (lazy, safetensors) state_dict. The peak is about one layer's
tokens plus one tensor plus one row group being written, independent of the model size.

Example:
    >>> import tempfile, torch
    >>> from geosane_hf.checkpoints import save_safetensors
    >>> from geosane_hf.collection.collector import collect
    >>> from geosane_hf.collection.manifest import CollectionManifest
    >>> work = tempfile.mkdtemp()
    >>> save_safetensors({"fc.weight": torch.randn(4, 300), "fc.bias": torch.zeros(4)}, f"{work}/a.safetensors")
    >>> manifest = CollectionManifest.from_dict(
    ...     {"name": "demo", "models": [{"id": "a", "source": {"kind": "local", "path": "a.safetensors"}}]}, root=work)
    >>> _ = collect(manifest, f"{work}/collection", progress=False)
    >>> result = build_dataset(f"{work}/collection", f"{work}/dataset", DatasetBuildConfig(chunk_tokens=2), progress=False)
    >>> result.num_models, result.num_tokens, result.num_chunks
    (1, 6, 3)
    >>> import datasets
    >>> row = datasets.load_dataset(f"{work}/dataset", "tokens", split="train", cache_dir=f"{work}/cache")[2]
    >>> row["token_offset"], row["num_real"]
    (4, [230, 54])
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from geosane_hf.atomic_io import exclusive_lock, remove_stale_stages, staged_dir, write_text, write_with
from geosane_hf.checkpoints import open_safetensors, read_safetensors_header
from geosane_hf.collection.schema import (
    DATASET_FORMAT_VERSION,
    MODELS_DIR,
    SHARD_PATTERN,
    TOKENS_DIR,
    ModelsColumn,
    TokensColumn,
    models_schema,
    tokens_columns_markdown,
    tokens_schema,
)
from geosane_hf.errors import GeoSANEError
from geosane_hf.tokenizer import WeightLayout, WeightTokenizer

__all__ = [
    "DATASET_FORMAT_VERSION",
    "DatasetBuildConfig",
    "DatasetBuildError",
    "DatasetBuildResult",
    "TokenChunk",
    "build_dataset",
    "iter_token_chunks",
    "mask_from_num_real",
    "open_safetensors",
    "plan_layout",
    "push_dataset_to_hub",
    "tokens_schema",
]

INT16_MAX = 32767
_FOOTER_RESERVE = 16 * 1024  # bytes kept free in a shard for the Parquet footer (schema + row-group metadata)
_PARQUET_OVERHEAD = 1.1  # file bytes per Arrow byte of a row group, with margin (levels, page headers)
# Writer options that make shards reproducible byte for byte (no timestamps are written by parquet-cpp; the
# `created_by` string names the pyarrow version, so the same environment gives the same bytes).
_PARQUET_OPTIONS: dict[str, Any] = {
    "version": "2.6",
    "data_page_version": "1.0",
    "use_dictionary": [str(TokensColumn.MODEL_ID)],
    "write_statistics": [str(c) for c in TokensColumn][:4],  # model_id, chunk_index, token_offset, num_tokens
    "store_schema": True,
}


class DatasetBuildError(GeoSANEError, ValueError):
    """Bad input to the dataset builder (the message says what was expected and what to do)."""


@dataclass(frozen=True)
class DatasetBuildConfig:
    """Settings of :func:`build_dataset` (``geosane build-dataset``).

    Attributes:
        mode: Tokenizer mode: "full" (every tensor; lossless, the layout restores a complete state_dict) or
            "geosane" (bit-compatible with the original: ``weight`` keys and their biases only).
        token_size: Values per token ``T`` (230 in GeoSANE; at most 32767 so that ``num_real`` fits int16).
        chunk_tokens: Tokens per row of the ``tokens`` table (the last chunk of a model may be shorter).
        max_shard_mb: Upper bound of a shard file's size in MiB: a new shard starts when the next row group would
            cross it (its Arrow bytes plus a 10% margin for Parquet's levels and headers, plus room for the
            footer); a single row group larger than the bound makes a shard of its own.
        row_group_rows: Rows per Parquet row group; None picks ``~32 MiB`` worth of full chunks (at least 1).
        compression: Parquet codec ("snappy", "zstd", "none" ...). Trained float weights hardly compress; the
            small integer columns do.
        check_finite: Reject NaN/Inf (one fast ``sum`` per row group; the exact search only when it is not finite).
    """

    mode: Literal["full", "geosane"] = "full"
    token_size: int = 230
    chunk_tokens: int = 512
    max_shard_mb: float = 128.0
    row_group_rows: int | None = None
    compression: str = "none"
    check_finite: bool = True

    def validate(self) -> None:
        """Raises :class:`DatasetBuildError` on a bad setting."""
        if self.mode not in ("full", "geosane"):
            raise DatasetBuildError(f"expected mode 'full' or 'geosane', got {self.mode!r}")
        if not (isinstance(self.token_size, int) and 0 < self.token_size <= INT16_MAX):
            raise DatasetBuildError(f"expected token_size in [1, {INT16_MAX}], got {self.token_size!r}")
        if not (isinstance(self.chunk_tokens, int) and self.chunk_tokens > 0):
            raise DatasetBuildError(f"expected chunk_tokens > 0, got {self.chunk_tokens!r}")
        if not self.max_shard_mb > 0:
            raise DatasetBuildError(f"expected max_shard_mb > 0, got {self.max_shard_mb!r}")
        if self.row_group_rows is not None and self.row_group_rows < 1:
            raise DatasetBuildError(f"expected row_group_rows >= 1 or None, got {self.row_group_rows!r}")

    @property
    def rows_per_group(self) -> int:
        """The row-group size in rows."""
        if self.row_group_rows is not None:
            return self.row_group_rows
        full_row = self.chunk_tokens * (4 * self.token_size + 2 + 12 + 2)
        target = min(32 * 2**20, int(self.max_shard_mb * 2**20))
        return max(1, target // full_row)


@dataclass
class DatasetBuildResult:
    """What :func:`build_dataset` wrote.

    Attributes:
        out_dir: The dataset folder.
        num_models: Models tokenized.
        num_tokens: Tokens over all models.
        num_chunks: Rows of the ``tokens`` table.
        token_shards: Paths of the ``tokens`` shards, relative to ``out_dir``.
        weight_bytes: Bytes of the tokenized source tensors (their stored dtypes).
        parquet_bytes: Bytes of all Parquet files written.
        seconds: Wall-clock time.
        models: Per-model summary rows (model_id, num_tokens, num_chunks, num_parameters).
    """

    out_dir: Path
    num_models: int
    num_tokens: int
    num_chunks: int
    token_shards: list[str]
    weight_bytes: int
    parquet_bytes: int
    seconds: float
    models: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return {**dataclasses.asdict(self), "out_dir": str(self.out_dir)}


# ----------------------------------------------------------------------------------------------------------------
# chunked tokenization
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# Parquet writing
# ----------------------------------------------------------------------------------------------------------------


def _window_table(model_id: str, window: _Window, first: int, count: int, chunk_tokens: int) -> Any:
    """The rows (chunks) of one filled window, as Arrow arrays over the window's buffers (no copy).

    ``first`` is a multiple of ``chunk_tokens`` (windows hold whole chunks), so row ``i`` is chunk
    ``first // chunk_tokens + i``.
    """
    import pyarrow as pa

    T = window.token_size
    rows = -(-count // chunk_tokens)
    offsets = np.minimum(np.arange(rows + 1, dtype=np.int32) * chunk_tokens, count).astype(np.int32)  # [rows + 1]
    pa_offsets = pa.array(offsets)
    first_chunk = first // chunk_tokens

    def nested(values: np.ndarray, width: int | None) -> Any:
        inner = pa.array(values.reshape(-1))
        if width is not None:
            inner = pa.FixedSizeListArray.from_arrays(inner, width)
        return pa.ListArray.from_arrays(pa_offsets, inner)

    columns = [
        pa.array([model_id] * rows, pa.string()),
        pa.array(np.arange(first_chunk, first_chunk + rows, dtype=np.int32)),
        pa.array(first + offsets[:-1].astype(np.int64)),
        pa.array(np.diff(offsets).astype(np.int32)),
        nested(window.tokens[:count].numpy(), T),
        nested(window.num_real[:count], None),
        nested(window.positions[:count], 3),
        nested(window.layer_types[:count], None),
    ]
    return pa.Table.from_arrays(columns, schema=tokens_schema(T))


class _Shard:
    """One shard file, written under a hidden temporary name and renamed when complete (used by one thread)."""

    def __init__(self, final: Path, schema: Any, compression: str) -> None:
        self.final = final
        self.tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        self.schema = schema
        self.compression = compression
        self.writer: Any = None
        self.rows = 0  # rows handed to the writer: what the closed file must hold

    def write(self, table: Any) -> None:
        import pyarrow.parquet as pq

        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, self.schema, compression=self.compression, **_PARQUET_OPTIONS)
        self.writer.write_table(table, row_group_size=max(1, table.num_rows))
        self.rows += table.num_rows

    def finish(self) -> None:
        self.writer.close()
        self.writer = None
        # pyarrow's close() does not always raise after a failed write (a full disk): check the file is whole.
        _verify_parquet(self.tmp, self.rows)
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        try:
            if self.writer is not None:
                self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class _ShardWriters:
    """Row groups -> shards of bounded size, encoded by two threads in parallel.

    A row group goes to the open shard unless its projected size (Arrow bytes x ``_PARQUET_OVERHEAD``) would push
    the shard past ``max_bytes`` (minus room for the footer); then a new shard starts. Shard ``k`` is written by
    thread ``k % 2``. The assignment depends on the data only, never on timing (deterministic), while two shards
    are encoded at once (Parquet encoding of nested lists is the slowest step; pyarrow releases the GIL). Windows are reused round-robin: ``acquire`` waits
    until the window's previous row group has been encoded. Shards are renamed into place when complete; a crash
    leaves every renamed shard valid (with two writers, shard ``k + 1`` may be complete while ``k`` is not).
    """

    def __init__(
        self, folder: Path, schema: Any, compression: str, max_bytes: int, capacity: int, token_size: int
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.workers = 2
        self.folder, self.schema, self.compression = folder, schema, compression
        self.max_bytes = max_bytes
        self.shard_bytes = 0  # projected bytes of the open shard
        self.executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"geosane-parquet-{i}") for i in range(self.workers)
        ]
        self.windows = [_Window(capacity, token_size) for _ in range(self.workers + 1)]
        self.pending: list[Any] = [None] * len(self.windows)  # the write that reads each window
        self.turn = 0
        self.shards: list[_Shard] = []
        self.futures: list[Any] = []

    def acquire(self) -> _Window:
        index, self.turn = self.turn, (self.turn + 1) % len(self.windows)
        if self.pending[index] is not None:
            self.pending[index].result()  # re-raises a failed write
            self.pending[index] = None
        return self.windows[index]

    def submit(self, window: _Window, table: Any) -> None:
        projected = int(table.nbytes * _PARQUET_OVERHEAD)
        if not self.shards or self.shard_bytes + projected + _FOOTER_RESERVE > self.max_bytes:
            if self.shards:
                self._finish(len(self.shards) - 1)
            final = self.folder / SHARD_PATTERN.format(index=len(self.shards))
            self.shards.append(_Shard(final, self.schema, self.compression))
            self.shard_bytes = 0
        shard_index = len(self.shards) - 1
        self.shard_bytes += projected
        executor = self.executors[shard_index % self.workers]
        future = executor.submit(self.shards[shard_index].write, table)
        self.pending[self.windows.index(window)] = future
        self.futures.append(future)

    def _finish(self, shard_index: int) -> None:
        self.futures.append(self.executors[shard_index % self.workers].submit(self.shards[shard_index].finish))

    def close(self) -> None:
        """Finishes the last shard and waits for every write (re-raising the first failure)."""
        if self.shards:
            self._finish(len(self.shards) - 1)
        for future in self.futures:
            future.result()
        self.futures = []

    def abort(self) -> None:
        """Waits for the writes in flight, then drops every shard that was not renamed into place."""
        for future in self.futures:
            future.exception()
        for shard in self.shards:
            if not shard.final.exists() or shard.writer is not None:
                with contextlib.suppress(Exception):  # keep the original error, drop the partial file regardless
                    shard.abort()
        self.shards = [s for s in self.shards if s.final.exists()]

    def shutdown(self) -> None:
        for executor in self.executors:
            executor.shutdown(wait=True)

    @property
    def paths(self) -> list[Path]:
        return [s.final for s in self.shards]


def _verify_parquet(path: Path, rows: int) -> None:
    """Raises unless ``path`` is a complete Parquet file (footer readable) holding ``rows`` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        found = pq.read_metadata(path).num_rows
    except (OSError, pa.ArrowException) as error:
        raise OSError(
            errno.EIO, f"the Parquet file written at {path} is incomplete ({error}); is the disk full?"
        ) from error
    if found != rows:
        raise OSError(errno.EIO, f"the Parquet file written at {path} holds {found} rows, expected {rows}")


def _write_table_atomic(table: Any, path: Path, compression: str) -> None:
    import pyarrow.parquet as pq

    write_with(
        path,
        lambda tmp: pq.write_table(
            table, tmp, compression=compression, row_group_size=max(1, table.num_rows), version="2.6"
        ),
        verify=lambda tmp: _verify_parquet(tmp, table.num_rows),
    )


# ----------------------------------------------------------------------------------------------------------------
# the build
# ----------------------------------------------------------------------------------------------------------------


def _model_row(record: Any, layout: WeightLayout, num_chunks: int, config: DatasetBuildConfig) -> dict[str, Any]:
    entry = record.entry
    return {
        ModelsColumn.MODEL_ID: record.id,
        ModelsColumn.ROLE: entry.get("role", "rs-model"),
        ModelsColumn.TASK: entry.get("task"),
        ModelsColumn.FAMILY: entry.get("family"),
        ModelsColumn.SENSOR: entry.get("sensor"),
        ModelsColumn.TRAINING_DATA: entry.get("training_data"),
        ModelsColumn.LICENSE: entry.get("license"),
        ModelsColumn.CITATION: entry.get("citation"),
        ModelsColumn.IN_CHANS: entry.get("in_chans"),
        ModelsColumn.NUM_CLASSES: entry.get("num_classes"),
        ModelsColumn.BANDS: entry.get("bands"),
        ModelsColumn.SOURCE: record.source,
        ModelsColumn.SOURCE_REVISION: record.source_revision,
        ModelsColumn.CONTENT_SHA256: record.content_sha256,
        ModelsColumn.ARCHITECTURE: json.dumps(record.architecture, sort_keys=True) if record.architecture else None,
        ModelsColumn.METRICS: json.dumps(entry.get("metrics") or {}, sort_keys=True),
        ModelsColumn.NUM_PARAMETERS: record.num_parameters,
        ModelsColumn.NUM_TENSORS: record.num_tensors,
        ModelsColumn.NUM_LAYERS: len(layout.entries),
        ModelsColumn.NUM_TOKENS: layout.num_tokens,
        ModelsColumn.NUM_CHUNKS: num_chunks,
        ModelsColumn.NUM_REAL_VALUES: sum(e.num_values for e in layout.entries),
        ModelsColumn.MISSING_KEYS: layout.missing_keys,
        ModelsColumn.MODE: layout.mode,
        ModelsColumn.TOKEN_SIZE: layout.token_size,
        ModelsColumn.CHUNK_TOKENS: config.chunk_tokens,
        ModelsColumn.LAYOUT: json.dumps(layout.to_dict(), sort_keys=True),
    }


_BUILD_OUTPUTS = ("README.md", TOKENS_DIR, MODELS_DIR)  # what a build writes: all an earlier build may hold


def _check_out_dir(out_dir: Path) -> None:
    """Refuses an output that is not a folder holding nothing or an earlier build (it is replaced as a whole)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetBuildError(f"expected a dataset folder at {str(out_dir)!r}, got a file; choose another --out")
    if out_dir.is_dir():
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in _BUILD_OUTPUTS)
        if foreign:
            raise DatasetBuildError(
                f"expected {str(out_dir)!r} to be empty or an earlier build (only {list(_BUILD_OUTPUTS)}), found "
                f"{foreign[:10]}; a rebuild replaces the folder as a whole, so choose another --out or move them."
            )


def build_dataset(
    collection_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: DatasetBuildConfig | None = None,
    *,
    progress: bool = True,
) -> DatasetBuildResult:
    """Tokenizes every model of a collection (``geosane collect``) into a Parquet dataset folder.

    The build is all or nothing: it happens in a hidden sibling folder that replaces ``out_dir`` only once every
    shard is written, closed and verified, so a failed or killed rebuild leaves the earlier complete dataset in
    place (and no reader, ``datasets.load_dataset`` or :func:`push_dataset_to_hub`, ever sees a partial one). A
    second build into the same folder while one runs is refused (:class:`~geosane_hf.atomic_io.OutputBusyError`).

    Args:
        collection_dir: A folder with ``collection.jsonl`` and ``models/*.safetensors``.
        out_dir: The dataset folder: new, empty, or an earlier build (replaced as a whole).
        config: Settings (mode, token size, chunk size, shard size ...).
        progress: Show a progress bar (per model, with the bytes tokenized).

    Returns:
        A :class:`DatasetBuildResult`.

    Raises:
        DatasetBuildError: No collection in ``collection_dir``, a missing or changed model file, NaN/Inf weights,
            an ``out_dir`` holding other files.
        TokenizerError: A model the tokenizer rejects (the message names the tensor).
        OutputBusyError: Another build is writing ``out_dir``.
    """
    start = time.perf_counter()
    config = config or DatasetBuildConfig()
    config.validate()
    collection_dir, out_dir = Path(collection_dir), Path(out_dir)
    records = _checked_records(collection_dir)
    _check_out_dir(out_dir)
    with exclusive_lock(out_dir, "build-dataset"):
        _check_out_dir(out_dir)  # again under the lock: another writer may have finished meanwhile
        remove_stale_stages(out_dir)  # left by a killed build
        with staged_dir(out_dir) as stage:
            result = _build_into(stage, records, collection_dir, config, progress)
    result.out_dir = out_dir
    result.parquet_bytes = sum(p.stat().st_size for p in out_dir.glob("*/train-*.parquet"))
    result.seconds = time.perf_counter() - start
    return result


def _checked_records(collection_dir: Path) -> list[Any]:
    """The collection's records in id order, each with its file present at the recorded size."""
    from geosane_hf.collection.collector import read_collection_index

    records = sorted(read_collection_index(collection_dir), key=lambda r: r.id)
    if not records:
        raise DatasetBuildError(
            f"no collected models in {str(collection_dir)!r}: expected collection.jsonl from `geosane collect "
            f"MANIFEST --out {collection_dir}`"
        )
    for record in records:
        path = collection_dir / record.file
        if not path.is_file():
            raise DatasetBuildError(
                f"model {record.id!r} is listed in {collection_dir / 'collection.jsonl'} but {record.file} is missing; "
                "rerun `geosane collect` on the same folder to restore it"
            )
        if path.stat().st_size != record.file_bytes:
            raise DatasetBuildError(
                f"model {record.id!r}: {record.file} has {path.stat().st_size} bytes, but collection.jsonl records "
                f"{record.file_bytes}; the file changed after collecting: rerun `geosane collect` on the same folder."
            )
        recorded = read_safetensors_header(path).metadata.get("geosane.content_sha256")
        if recorded is not None and recorded != record.content_sha256:
            raise DatasetBuildError(
                f"model {record.id!r}: {record.file} holds other tensors (content sha256 {recorded[:12]}) than "
                f"collection.jsonl records ({record.content_sha256[:12]}); rerun `geosane collect` on the same folder."
            )
    return records


def _build_into(
    out_dir: Path, records: list[Any], collection_dir: Path, config: DatasetBuildConfig, progress: bool
) -> DatasetBuildResult:
    """Writes the shards, the models table and the card into the (staging) folder ``out_dir``."""
    import pyarrow as pa
    from tqdm.auto import tqdm

    (out_dir / TOKENS_DIR).mkdir(parents=True, exist_ok=True)
    (out_dir / MODELS_DIR).mkdir(parents=True, exist_ok=True)
    tokenizer = WeightTokenizer(token_size=config.token_size, mode=config.mode)
    # Parquet encoding of the token lists is the slowest step: two writer threads encode two shards at once while
    # the main thread fills the next window. Three windows of one row group each bound the memory, not the models.
    writer = _ShardWriters(
        out_dir / TOKENS_DIR,
        tokens_schema(config.token_size),
        config.compression,
        int(config.max_shard_mb * 2**20),
        config.rows_per_group * config.chunk_tokens,
        config.token_size,
    )
    total_bytes = sum((collection_dir / r.file).stat().st_size for r in records)
    bar = tqdm(total=total_bytes, desc="build-dataset", unit="B", unit_scale=True, disable=not progress)
    model_rows: list[dict[str, Any]] = []
    weight_bytes = num_chunks_total = 0
    # The copies are memory-bound: one intra-op thread copies at ~10 GB/s, while two threads on a busy 2-core
    # machine measured 0.8 GB/s (they wait on each other at every parallel region); the writer thread uses the
    # other core. Restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for record in records:
            bar.set_postfix_str(record.id[:40], refresh=False)
            num_chunks = 0
            with open_safetensors(collection_dir / record.file, mmap=False) as state_dict:
                layout = plan_layout(state_dict, tokenizer)
                for window, first, count in _iter_windows(state_dict, layout, writer.acquire, config.check_finite):
                    table = _window_table(record.id, window, first, count, config.chunk_tokens)
                    writer.submit(window, table)  # the window is reused once this row group is encoded
                    num_chunks += table.num_rows
                    del table
            model_rows.append(_model_row(record, layout, num_chunks, config))
            weight_bytes += _tokenized_bytes(layout)
            num_chunks_total += num_chunks
            bar.update((collection_dir / record.file).stat().st_size)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        torch.set_num_threads(threads)
        writer.shutdown()
        bar.close()
    models_table = pa.Table.from_pylist(model_rows, schema=models_schema())
    _write_table_atomic(models_table, out_dir / MODELS_DIR / SHARD_PATTERN.format(index=0), config.compression)
    result = DatasetBuildResult(
        out_dir=out_dir,
        num_models=len(model_rows),
        num_tokens=sum(r["num_tokens"] for r in model_rows),
        num_chunks=num_chunks_total,
        token_shards=[str(p.relative_to(out_dir)) for p in writer.paths],
        weight_bytes=weight_bytes,
        parquet_bytes=0,
        seconds=0.0,
        models=[
            {k: r[k] for k in ("model_id", "role", "num_parameters", "num_tokens", "num_chunks", "license")}
            for r in model_rows
        ],
    )
    write_text(out_dir / "README.md", render_dataset_card(result, model_rows, config, collection_dir))
    return result


def _tokenized_bytes(layout: WeightLayout) -> int:
    sizes = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
    total = 0
    for entry in layout.entries:
        rows, cols = entry.rows, entry.cols
        total += rows * cols * sizes.get(entry.dtype, 4)
        if entry.bias_key is not None:
            total += rows * sizes.get(entry.bias_dtype or "float32", 4)
    return total


# ----------------------------------------------------------------------------------------------------------------
# the card and the Hub
# ----------------------------------------------------------------------------------------------------------------


def render_dataset_card(
    result: DatasetBuildResult, model_rows: list[dict[str, Any]], config: DatasetBuildConfig, collection_dir: Path
) -> str:
    """The dataset card: ``DatasetCardData`` metadata (``configs:``, licence) + the packaged template's body.

    The licence is ``other`` (``license_name: geosane-license-chain``, ``license_link: README.md``): every model keeps
    its own licence, listed in the card's licence table.
    """
    from huggingface_hub import DatasetCardData

    from geosane_hf.cards import license_metadata, render_card

    front = {
        "pretty_name": "GeoSANE tokenized model weights",
        **license_metadata("other", "geosane-license-chain", "README.md"),
        "tags": ["weight-space-learning", "remote-sensing", "earth-observation", "geosane", "model-zoo"],
        "size_categories": [_size_category(result.num_chunks)],
        "configs": [
            {
                "config_name": TOKENS_DIR,
                "data_files": [{"split": "train", "path": f"{TOKENS_DIR}/train-*.parquet"}],
                "default": True,
            },
            {"config_name": MODELS_DIR, "data_files": [{"split": "train", "path": f"{MODELS_DIR}/train-*.parquet"}]},
        ],
    }
    table = ["| model_id | role | task | parameters | tokens | chunks | license |", "|---|---|---|---:|---:|---:|---|"]
    for row in model_rows:
        table.append(
            f"| {row['model_id']} | {row['role']} | {row['task'] or ''} | {row['num_parameters']:,} | "
            f"{row['num_tokens']:,} | {row['num_chunks']} | {row['license'] or 'unknown'} |"
        )
    licenses: dict[str, list[str]] = {}
    for row in model_rows:
        licenses.setdefault(row["license"] or "unknown (ask the authors before redistributing)", []).append(
            row["model_id"]
        )
    license_table = ["| license | models |", "|---|---|"]
    for name, ids in sorted(licenses.items()):
        shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
        license_table.append(f"| {name} | {len(ids)}: {shown} |")
    summary = (
        f"{result.num_models} models, {sum(r['num_parameters'] for r in model_rows):,} parameters, "
        f"{result.num_tokens:,} tokens of {config.token_size} values (tokenizer mode `{config.mode}`) in "
        f"{result.num_chunks:,} chunks of at most {config.chunk_tokens} tokens, {len(result.token_shards)} token "
        f"shard(s)."
    )
    how_built = (
        f"`geosane build-dataset {collection_dir.name} --mode {config.mode} --token-size {config.token_size} "
        f"--chunk-tokens {config.chunk_tokens} --max-shard-mb {config.max_shard_mb:g}` (dataset format "
        f"{DATASET_FORMAT_VERSION}), from a collection made by `geosane collect` (safe loading, strict architecture "
        "checks, NaN/Inf rejected, duplicates removed by content hash). Models are in id order; shards are written "
        f"with pyarrow ({config.compression}, {config.rows_per_group} chunks per row group, no timestamps), so the "
        "same collection gives byte-identical files."
    )
    values = {
        "summary": summary,
        "collection_table": "\n".join(table),
        "license_table": "\n".join(license_table),
        "how_built": how_built,
        "how_to_load": _HOW_TO_LOAD.replace("{T}", str(config.token_size)),
        "tokens_columns": tokens_columns_markdown(config.token_size, config.chunk_tokens),
        "token_size": str(config.token_size),
        "mode": config.mode,
        "chunk_tokens": str(config.chunk_tokens),
    }
    return render_card("dataset_card", DatasetCardData(**front), repo_type="dataset", **values)


_HOW_TO_LOAD = """```python
import datasets, json, torch
from geosane_hf.collection.dataset import mask_from_num_real

tokens = datasets.load_dataset("PATH_OR_REPO_ID", "tokens", split="train").with_format("numpy")
models = datasets.load_dataset("PATH_OR_REPO_ID", "models", split="train")
row = tokens[0]                       # one chunk: row["tokens"] is [n, {T}] float32
mask = mask_from_num_real(row["num_real"], {T})   # [n, {T}] bool
stream = datasets.load_dataset("PATH_OR_REPO_ID", "tokens", split="train", streaming=True)

# A whole model back to a state_dict ("full" mode: complete; "geosane" mode: all but `missing_keys`):
from geosane_hf.tokenizer import WeightTokenizer
meta = models.filter(lambda m: m["model_id"] == "MODEL_ID")[0]
rows = tokens.filter(lambda r: r["model_id"] == "MODEL_ID")   # chunks, in chunk_index order
all_tokens = torch.cat([torch.as_tensor(r["tokens"]) for r in rows])
state_dict = WeightTokenizer().detokenize(all_tokens, json.loads(meta["layout"]))
```"""


def _size_category(rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return name
    return "1M<n<10M"


def push_dataset_to_hub(
    out_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload GeoSANE tokenized-weights dataset",
) -> str:
    """Uploads a built dataset folder (card + shards) to a Hub dataset repo with ``HfApi.upload_folder``.

    Returns:
        The commit URL.

    Raises:
        DatasetBuildError: ``out_dir`` holds no built dataset.
    """
    from huggingface_hub import HfApi

    folder = Path(out_dir)
    if not (folder / "README.md").is_file() or not any((folder / TOKENS_DIR).glob("train-*.parquet")):
        raise DatasetBuildError(f"expected a built dataset in {str(folder)!r} (README.md + tokens/), run build first")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="dataset",
        commit_message=commit_message,
        allow_patterns=["README.md", f"{TOKENS_DIR}/train-*.parquet", f"{MODELS_DIR}/train-*.parquet"],
        delete_patterns=[f"{TOKENS_DIR}/train-*.parquet", f"{MODELS_DIR}/train-*.parquet"],
    )
    return str(getattr(info, "commit_url", info))
