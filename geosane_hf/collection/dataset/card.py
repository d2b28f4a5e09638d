"""The dataset card (``DatasetCardData`` metadata + the packaged template) and the upload to a Hub dataset repo."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from geosane_hf.collection.dataset.config import DatasetBuildConfig, DatasetBuildError, DatasetBuildResult
from geosane_hf.collection.schema import (
    DATASET_FORMAT_VERSION,
    MODELS_DIR,
    TOKENS_DIR,
    tokens_columns_markdown,
)


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
