"""The column schema of the tokenized-weights dataset: one definition for the writer, the readers and the card.

Layout of a dataset folder (loadable with ``datasets.load_dataset(folder, "tokens")`` / ``(folder, "models")``)::

    README.md                       dataset card; its YAML `configs:` name the two tables
    tokens/train-00000.parquet ...  one row per chunk of <= chunk_tokens consecutive tokens of one model
    models/train-00000.parquet      one row per model: metadata, the tokenizer layout (JSON), counts

The columns are :class:`TokensColumn` and :class:`ModelsColumn` (string enums: ``table.column(TokensColumn.TOKENS)``
and ``row[ModelsColumn.LAYOUT]`` work as plain strings). :func:`tokens_schema` and :func:`models_schema` give their
Arrow types (the writer, :mod:`geosane_hf.collection.dataset`), :func:`tokens_columns_markdown` the table of the
dataset card; ``training/data.py`` reads by these names.

Example:
    >>> [str(c) for c in TokensColumn][:4]
    ['model_id', 'chunk_index', 'token_offset', 'num_tokens']
    >>> tokens_schema(230).field(TokensColumn.TOKENS).type
    ListType(list<item: fixed_size_list<item: float>[230]>)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

DATASET_FORMAT_VERSION = 1
TOKENS_DIR = "tokens"  # the `tokens` configuration: its name in the card and its folder
MODELS_DIR = "models"  # the `models` configuration: its name in the card and its folder
SHARD_PATTERN = "train-{index:05d}.parquet"


class TokensColumn(StrEnum):
    """Columns of the ``tokens`` table, one row per chunk (``n`` tokens of one model, ``T`` values each)."""

    MODEL_ID = "model_id"
    CHUNK_INDEX = "chunk_index"
    TOKEN_OFFSET = "token_offset"
    NUM_TOKENS = "num_tokens"
    TOKENS = "tokens"
    NUM_REAL = "num_real"
    POSITIONS = "positions"
    LAYER_TYPES = "layer_types"


class ModelsColumn(StrEnum):
    """Columns of the ``models`` table, one row per model."""

    MODEL_ID = "model_id"
    ROLE = "role"
    TASK = "task"
    FAMILY = "family"
    SENSOR = "sensor"
    TRAINING_DATA = "training_data"
    LICENSE = "license"
    CITATION = "citation"
    IN_CHANS = "in_chans"
    NUM_CLASSES = "num_classes"
    BANDS = "bands"
    SOURCE = "source"
    SOURCE_REVISION = "source_revision"
    CONTENT_SHA256 = "content_sha256"
    ARCHITECTURE = "architecture"  # JSON: {"library", "name", "kwargs"} or null
    METRICS = "metrics"  # JSON
    NUM_PARAMETERS = "num_parameters"
    NUM_TENSORS = "num_tensors"
    NUM_LAYERS = "num_layers"
    NUM_TOKENS = "num_tokens"
    NUM_CHUNKS = "num_chunks"
    NUM_REAL_VALUES = "num_real_values"
    MISSING_KEYS = "missing_keys"
    MODE = "mode"
    TOKEN_SIZE = "token_size"
    CHUNK_TOKENS = "chunk_tokens"
    LAYOUT = "layout"  # JSON: WeightLayout.to_dict()


# How the dataset card shows each tokens column: (type, meaning); {T} is the token size, {C} the chunk size.
_TOKENS_CARD: dict[TokensColumn, tuple[str, str]] = {
    TokensColumn.MODEL_ID: ("string", "the collection id (joins with `models`)"),
    TokensColumn.CHUNK_INDEX: ("int32", "chunk number within the model"),
    TokensColumn.TOKEN_OFFSET: ("int64", "global index of the chunk's first token (`chunk_index * {C}`)"),
    TokensColumn.NUM_TOKENS: ("int32", "`n`, tokens in the chunk"),
    TokensColumn.TOKENS: ("`[n, {T}]` float32", "the values; zero padding"),
    TokensColumn.NUM_REAL: (
        "`[n]` int16",
        "real values per token; the mask is `arange({T}) < num_real[:, None]` (padding only ever ends a layer's "
        "last token)",
    ),
    TokensColumn.POSITIONS: ("`[n, 3]` int32", "(global token index, layer index, token index within the layer)"),
    TokensColumn.LAYER_TYPES: ("`[n]` int16", "layer type ids (`geosane_hf.layer_types.LayerType`)"),
}


def tokens_schema(token_size: int) -> Any:
    """The Arrow schema of the ``tokens`` table for token size ``T``."""
    import pyarrow as pa

    types = {
        TokensColumn.MODEL_ID: pa.string(),
        TokensColumn.CHUNK_INDEX: pa.int32(),
        TokensColumn.TOKEN_OFFSET: pa.int64(),
        TokensColumn.NUM_TOKENS: pa.int32(),
        TokensColumn.TOKENS: pa.list_(pa.list_(pa.float32(), token_size)),  # [n, T]
        TokensColumn.NUM_REAL: pa.list_(pa.int16()),  # [n]
        TokensColumn.POSITIONS: pa.list_(pa.list_(pa.int32(), 3)),  # [n, 3]
        TokensColumn.LAYER_TYPES: pa.list_(pa.int16()),  # [n]
    }
    return pa.schema([pa.field(str(column), types[column], nullable=False) for column in TokensColumn])


def models_schema() -> Any:
    """The Arrow schema of the ``models`` table."""
    import pyarrow as pa

    string, int32, int64 = pa.string(), pa.int32(), pa.int64()
    types = {
        ModelsColumn.IN_CHANS: int32,
        ModelsColumn.NUM_CLASSES: int32,
        ModelsColumn.BANDS: pa.list_(string),
        ModelsColumn.NUM_PARAMETERS: int64,
        ModelsColumn.NUM_TENSORS: int32,
        ModelsColumn.NUM_LAYERS: int32,
        ModelsColumn.NUM_TOKENS: int64,
        ModelsColumn.NUM_CHUNKS: int32,
        ModelsColumn.NUM_REAL_VALUES: int64,
        ModelsColumn.MISSING_KEYS: pa.list_(string),
        ModelsColumn.TOKEN_SIZE: int32,
        ModelsColumn.CHUNK_TOKENS: int32,
    }
    return pa.schema([(str(column), types.get(column, string)) for column in ModelsColumn])


def tokens_columns_markdown(token_size: int, chunk_tokens: int) -> str:
    """The dataset card's table of the ``tokens`` columns.

    Example:
        >>> print(tokens_columns_markdown(230, 64).splitlines()[4])
        | `token_offset` | int64 | global index of the chunk's first token (`chunk_index * 64`) |
    """
    lines = ["| column | type | meaning |", "|---|---|---|"]
    for column in TokensColumn:
        kind, meaning = (text.replace("{T}", str(token_size)) for text in _TOKENS_CARD[column])
        lines.append(f"| `{column}` | {kind} | {meaning.replace('{C}', str(chunk_tokens))} |")
    return "\n".join(lines)
