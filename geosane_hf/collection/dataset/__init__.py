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

Modules: ``config`` (:class:`DatasetBuildConfig`, the result, the error), ``chunks`` (chunked tokenization:
:func:`plan_layout`, :func:`iter_token_chunks`, :func:`mask_from_num_real`), ``shards`` (Parquet row groups and
shards of bounded size, written by two threads), ``build`` (:func:`build_dataset`: records, staging, the models
table) and ``card`` (:func:`render_dataset_card`, :func:`push_dataset_to_hub`); every public name is re-exported here.

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

from geosane_hf.checkpoints import open_safetensors
from geosane_hf.collection.dataset.build import build_dataset
from geosane_hf.collection.dataset.card import push_dataset_to_hub, render_dataset_card
from geosane_hf.collection.dataset.chunks import TokenChunk, iter_token_chunks, mask_from_num_real, plan_layout
from geosane_hf.collection.dataset.config import DatasetBuildConfig, DatasetBuildError, DatasetBuildResult
from geosane_hf.collection.schema import DATASET_FORMAT_VERSION, tokens_schema

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
    "render_dataset_card",
    "tokens_schema",
]
