"""Parquet writing: token windows -> Arrow row groups -> shards of bounded size, each written under a temporary
name, verified after closing (row count and footer) and renamed; fixed writer options keep the bytes reproducible.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Any

import numpy as np

from geosane_hf.atomic_io import write_with
from geosane_hf.collection.dataset.chunks import _Window
from geosane_hf.collection.schema import (
    SHARD_PATTERN,
    TokensColumn,
    tokens_schema,
)

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
