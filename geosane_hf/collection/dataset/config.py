"""The dataset build's settings (:class:`DatasetBuildConfig`), its result and its error."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from geosane_hf.errors import GeoSANEError

INT16_MAX = 32767


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
