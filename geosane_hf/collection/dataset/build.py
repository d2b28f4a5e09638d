"""The build: a collection folder -> the dataset folder, staged and swapped in as a whole (see the package docstring)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from geosane_hf.atomic_io import exclusive_lock, remove_stale_stages, staged_dir, write_text
from geosane_hf.checkpoints import open_safetensors, read_safetensors_header
from geosane_hf.collection.dataset.card import render_dataset_card
from geosane_hf.collection.dataset.chunks import _iter_windows, plan_layout
from geosane_hf.collection.dataset.config import DatasetBuildConfig, DatasetBuildError, DatasetBuildResult
from geosane_hf.collection.dataset.shards import _ShardWriters, _window_table, _write_table_atomic
from geosane_hf.collection.schema import (
    MODELS_DIR,
    SHARD_PATTERN,
    TOKENS_DIR,
    ModelsColumn,
    models_schema,
    tokens_schema,
)
from geosane_hf.tokenizer import WeightLayout, WeightTokenizer


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
