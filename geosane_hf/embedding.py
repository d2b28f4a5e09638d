"""Per-model embeddings of a collection: one vector per checkpoint from GeoSANE's latent space.

A checkpoint is tokenized (:class:`~geosane_hf.tokenizer.WeightTokenizer`, the model's token size), encoded with
``GeoSANEModel.encode_long`` (halo windows, any length) into latents ``[N, L]``, and **mean-pooled over its N
tokens** into one ``[L]`` vector. Mean pooling makes models of different sizes comparable (a ResNet-50 and a
MobileNet both give ``L`` numbers) at the cost of ignoring where in the network a difference lies.

Example:
    >>> import tempfile
    >>> from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
    >>> import timm
    >>> model = GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()
    >>> vector = embed_state_dict(model, timm.create_model("test_resnet", num_classes=4).state_dict())
    >>> tuple(vector.shape)
    (16,)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosane_hf.errors import GeoSANEError

__all__ = [
    "CollectionEmbeddings",
    "EmbeddingError",
    "LatentView",
    "architecture_of",
    "embed_collection",
    "embed_state_dict",
    "load_embeddings",
    "load_geosane",
    "modality_of",
    "save_embeddings",
    "write_latent_view",
]


class EmbeddingError(GeoSANEError, ValueError):
    """Bad input to the embedding step (the CLI prints it without a traceback)."""


@dataclass
class CollectionEmbeddings:
    """One embedding per model of a collection.

    Attributes:
        ids: Model ids (``collection.jsonl`` order).
        architectures: Architecture name per model (``"?"`` when the record has none).
        modalities: Modality per model (see :func:`modality_of`).
        vectors: ``[M, L]`` float32 mean-pooled latents.
        pooling: How the token latents were pooled (``"mean"``).
        geosane_model: Name or path of the GeoSANE model that encoded them.
    """

    ids: list[str]
    architectures: list[str]
    modalities: list[str]
    vectors: torch.Tensor
    pooling: str = "mean"
    geosane_model: str = "unsaved"
    extra: dict[str, Any] = field(default_factory=dict)


def modality_of(entry: Mapping[str, Any]) -> str:
    """The modality of a collection record's manifest metadata.

    Looks at ``modality``, then ``sensor``, then the band count; ``"unknown"`` otherwise.

    Example:
        >>> modality_of({"sensor": "Sentinel-2"}), modality_of({"bands": ["R", "G", "B"]}), modality_of({})
        ('Sentinel-2', 'RGB (3 bands)', 'unknown')
    """
    for key in ("modality", "sensor"):
        value = entry.get(key)
        if value:
            return str(value)
    bands = entry.get("bands")
    if isinstance(bands, (list, tuple)) and bands:
        return f"RGB ({len(bands)} bands)" if len(bands) == 3 else f"multispectral ({len(bands)} bands)"
    if isinstance(bands, int) and bands > 0:
        return f"{bands} bands"
    return "unknown"


def architecture_of(architecture: Mapping[str, Any] | None, entry: Mapping[str, Any]) -> str:
    """The architecture label of a record: the spec's name, else the entry's ``family``, else ``"?"``.

    Example:
        >>> architecture_of({"name": "resnet18"}, {}), architecture_of(None, {"family": "ukis-csmask"})
        ('resnet18', 'ukis-csmask')
    """
    name = (architecture or {}).get("name") or entry.get("family")
    return str(name) if name else "?"


@torch.no_grad()
def embed_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, batch_size: int = 32
) -> torch.Tensor:
    """Encodes one checkpoint and mean-pools the token latents: returns ``[L]`` float32 on the CPU.

    Raises:
        EmbeddingError: ``model`` is not a GeoSANE model, or the state_dict has nothing to tokenize.
    """
    from geosane_hf.tokenizer import WeightTokenizer

    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "encode_long"):
        raise EmbeddingError(f"expected a GeoSANEModel, got {type(model).__name__}")
    tokenized = WeightTokenizer(config.token_size, mode="full").tokenize(state_dict)
    if tokenized.num_tokens == 0:
        raise EmbeddingError("expected a state_dict with floating-point weights, got no tokens")
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    tokens = tokenized.tokens
    if getattr(config, "token_normalization", "none") == "per-layer":  # the model was trained on standardised layers
        from geosane_hf.token_norm import layer_stats, standardize

        tokens = standardize(tokens, tokenized.mask, layer_stats(tokens, tokenized.mask, tokenized.positions))
    latents = model.encode_long(
        tokens.to(device, dtype),  # [N, T]
        tokenized.positions.to(device).long(),  # [N, 3]
        tokenized.mask.to(device),  # [N, T]
        tokenized.layer_types.to(device),  # [N]
        batch_size=batch_size,
    )  # [N, L]
    return latents.float().mean(0).cpu()  # [L]


def embed_collection(
    model: nn.Module, collection: str | os.PathLike, *, show_progress: bool = True, limit: int | None = None
) -> CollectionEmbeddings:
    """Embeds every model of a collector output folder (``collection.jsonl`` + ``models/*.safetensors``).

    Raises:
        EmbeddingError: The folder has no ``collection.jsonl`` or no models.

    Example:
        >>> import tempfile
        >>> embed_collection(None, tempfile.mkdtemp())  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        EmbeddingError: expected a collection folder ...
    """
    from tqdm.auto import tqdm

    from geosane_hf.checkpoints import load_checkpoint
    from geosane_hf.collection.collector import read_collection_index

    root = Path(collection)
    records = read_collection_index(root)
    if not records:
        raise EmbeddingError(
            f"expected a collection folder with collection.jsonl and models/, got {root}; run `geosane collect`"
        )
    records = records[:limit] if limit else records
    vectors = []
    for record in tqdm(records, desc="embed", disable=not show_progress):
        vectors.append(embed_state_dict(model, load_checkpoint(root / record.file).state_dict))
    name = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", "") or "unsaved"
    return CollectionEmbeddings(
        ids=[r.id for r in records],
        architectures=[architecture_of(r.architecture, r.entry or {}) for r in records],
        modalities=[modality_of(r.entry or {}) for r in records],
        vectors=torch.stack(vectors),  # [M, L]
        geosane_model=str(name),
        extra={"collection": str(root)},
    )


def save_embeddings(embeddings: CollectionEmbeddings, path: str | os.PathLike) -> Path:
    """Writes ``embeddings.safetensors`` (tensor ``vectors``) with the labels as JSON metadata, atomically."""
    from geosane_hf.checkpoints import save_safetensors

    path = Path(path)
    metadata = {
        "ids": json.dumps(embeddings.ids),
        "architectures": json.dumps(embeddings.architectures),
        "modalities": json.dumps(embeddings.modalities),
        "pooling": embeddings.pooling,
        "geosane_model": embeddings.geosane_model,
        "extra": json.dumps(embeddings.extra),
    }
    save_safetensors({"vectors": embeddings.vectors.contiguous()}, path, metadata=metadata)  # atomic, sorted header
    return path


def load_embeddings(path: str | os.PathLike) -> CollectionEmbeddings:
    """Reads a file written by :func:`save_embeddings`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        vectors = handle.get_tensor("vectors")
    if "ids" not in meta:
        raise EmbeddingError(f"expected an embeddings file written by `geosane embed`, got {path}")
    return CollectionEmbeddings(
        ids=json.loads(meta["ids"]),
        architectures=json.loads(meta["architectures"]),
        modalities=json.loads(meta["modalities"]),
        vectors=vectors,
        pooling=meta.get("pooling", "mean"),
        geosane_model=meta.get("geosane_model", "unsaved"),
        extra=json.loads(meta.get("extra", "{}")),
    )


# ------------------------------------------------------------------------------------------------- latent view


@dataclass
class LatentView:
    """What :func:`write_latent_view` wrote.

    Attributes:
        embeddings: ``embeddings.safetensors`` (one row per collection model).
        figure: The PNG.
        projection: The 2-D projection (method and note).
        num_models / dim: Rows and width of the embeddings.
    """

    embeddings: Path
    figure: Path
    projection: Any
    num_models: int
    dim: int


def load_geosane(path: str | os.PathLike | None) -> tuple[torch.nn.Module, str]:
    """(model in eval mode, label for titles): a saved GeoSANE folder, or an untrained tiny one when None."""
    from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel

    if path is None:
        torch.manual_seed(0)
        return GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval(), "untrained demo model (tiny, random)"
    if not Path(path).exists():
        raise FileNotFoundError(f"expected a GeoSANE model folder (save_pretrained output), got missing {path}")
    return GeoSANEModel.from_pretrained(path).eval(), f"GeoSANE {Path(path).name}"


def write_latent_view(
    model: torch.nn.Module,
    collection: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    label: str = "GeoSANE",
    generated: Sequence[str | os.PathLike] = (),
    method: str = "umap",
    seed: int = 0,
    png_name: str = "latent_umap.png",
    progress: bool = True,
) -> LatentView:
    """Embeds every collection model, saves the embeddings and draws the 2-D picture (``geosane embed``).

    Args:
        model: The GeoSANE model.
        collection: Collector output folder.
        out_dir: Where ``embeddings.safetensors`` and the PNG go.
        label: Figure title prefix.
        generated: Generated timm repo folders, drawn as stars.
        method: ``"umap"`` or ``"pca"``.
        seed: Projection seed.
        png_name: File name of the figure.
        progress: Progress bar.
    """
    from geosane_hf.hub import load_generated_state_dict
    from geosane_hf.plots import latent_figure, project_2d

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    embeddings = embed_collection(model, collection, show_progress=progress)
    path = save_embeddings(embeddings, out / "embeddings.safetensors")
    vectors, archs, mods = [embeddings.vectors], list(embeddings.architectures), list(embeddings.modalities)
    highlight = []
    for folder in generated:
        highlight.append(len(archs))
        vectors.append(embed_state_dict(model, load_generated_state_dict(folder))[None])
        archs.append("generated")
        mods.append("generated")
    projection = project_2d(torch.cat(vectors), method=method, seed=seed)
    fig = latent_figure(projection, archs, mods, highlight=highlight, title=f"{label}, {len(embeddings.ids)} models")
    png = out / png_name
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(png)
    return LatentView(path, png, projection, len(embeddings.ids), int(embeddings.vectors.shape[1]))
