"""Per-model embeddings (geosane_hf.embedding), projections (geosane_hf.plots) and `geosane embed`."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import timm
import torch

from geosane_hf.checkpoints import save_safetensors
from geosane_hf.collection.collector import CollectedModel, write_collection_index
from geosane_hf.embedding import (
    EmbeddingError,
    architecture_of,
    embed_collection,
    embed_state_dict,
    load_embeddings,
    modality_of,
    save_embeddings,
)
from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
from geosane_hf.plots import MIN_UMAP_POINTS, latent_figure, project_2d


@pytest.fixture(scope="module")
def geosane():
    torch.manual_seed(0)
    return GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()


def _collection(root, specs):
    """A collector-format folder: specs = [(id, timm name, seed, sensor)]."""
    records = []
    for model_id, arch, seed, sensor in specs:
        torch.manual_seed(seed)
        sd = timm.create_model(arch, num_classes=4).state_dict()
        path = root / "models" / f"{model_id}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_safetensors(sd, path)
        records.append(
            CollectedModel(
                id=model_id,
                file=f"models/{model_id}.safetensors",
                file_bytes=path.stat().st_size,
                content_sha256=str(seed),
                spec_sha256="x",
                num_parameters=sum(v.numel() for v in sd.values()),
                num_tensors=len(sd),
                num_layers=sum("weight" in k for k in sd),
                dtypes={"float32": len(sd)},
                source=f"test:{arch}",
                source_revision=None,
                source_sha256=None,
                architecture={"library": "timm", "name": arch},
                strict_load=True,
                entry={"sensor": sensor},
            )
        )
    write_collection_index(root, records)
    return root


def test_embed_state_dict_is_mean_of_token_latents(geosane):
    from geosane_hf.tokenizer import WeightTokenizer

    sd = timm.create_model("test_resnet", num_classes=4).state_dict()
    vector = embed_state_dict(geosane, sd)
    tok = WeightTokenizer(230, mode="full").tokenize(sd)
    latents = geosane.encode_long(tok.tokens, tok.positions.long(), tok.mask, tok.layer_types)  # [N, L]
    assert vector.shape == (geosane.config.latent_size,)
    torch.testing.assert_close(vector, latents.float().mean(0), rtol=1e-5, atol=1e-5)


def test_embed_collection_labels_and_roundtrip(geosane, tmp_path):
    root = _collection(
        tmp_path / "c",
        [("a", "test_resnet", 0, "Sentinel-2"), ("b", "test_resnet", 1, "Sentinel-2"), ("c", "test_vit", 2, "SAR")],
    )
    emb = embed_collection(geosane, root, show_progress=False)
    assert emb.ids == ["a", "b", "c"]
    assert emb.architectures == ["test_resnet", "test_resnet", "test_vit"]
    assert emb.modalities == ["Sentinel-2", "Sentinel-2", "SAR"]
    assert emb.vectors.shape == (3, geosane.config.latent_size)
    assert not torch.equal(emb.vectors[0], emb.vectors[1])  # different weights, different embeddings
    back = load_embeddings(save_embeddings(emb, tmp_path / "out" / "e.safetensors"))
    assert back.ids == emb.ids and back.modalities == emb.modalities
    torch.testing.assert_close(back.vectors, emb.vectors)


def test_embed_collection_rejects_empty_folder(geosane, tmp_path):
    with pytest.raises(EmbeddingError, match="expected a collection folder"):
        embed_collection(geosane, tmp_path)


def test_labels_fall_back_sensibly():
    assert modality_of({"modality": "SAR", "sensor": "S1"}) == "SAR"
    assert modality_of({"bands": ["B2", "B3", "B4", "B8"]}) == "multispectral (4 bands)"
    assert architecture_of(None, {}) == "?"


def test_projection_falls_back_to_pca_with_few_points_and_labels_it():
    few = project_2d(torch.randn(MIN_UMAP_POINTS - 1, 5))
    assert few.method == "PCA" and "fallback" in few.note and few.coords.shape == (MIN_UMAP_POINTS - 1, 2)
    with pytest.raises(ValueError, match="expected method"):
        project_2d(torch.randn(4, 3), method="tsne")


def test_pca_separates_two_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (5, 6)), rng.normal(5, 0.1, (5, 6))])
    coords = project_2d(x, method="pca").coords
    gap = abs(coords[:5, 0].mean() - coords[5:, 0].mean())
    assert gap > 10 * coords[:5, 0].std()


@pytest.mark.slow  # numba compiles UMAP on first use: ~20 s
def test_umap_runs_on_enough_points():
    import umap  # noqa: F401  (the space extra, installed by make setup: a missing install fails)

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (10, 6)), rng.normal(5, 0.1, (10, 6))])
    projection = project_2d(x, method="umap")
    assert projection.method == "UMAP" and projection.coords.shape == (20, 2)
    a, b = projection.coords[:10], projection.coords[10:]
    assert np.linalg.norm(a.mean(0) - b.mean(0)) > max(a.std(0).max(), b.std(0).max())


def test_figure_marks_generated_model():
    p = project_2d(np.random.default_rng(0).normal(size=(4, 3)), method="pca")
    fig = latent_figure(p, ["x", "x", "y", "g"], ["S2", "L8", "S2", "g"], highlight=[3])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["x", "y", "generated"] and fig.axes[0].get_xlabel() == "PCA 1"


def test_embed_cli_writes_embeddings_and_png(tmp_path, capsys):
    from geosane_hf.commands import embed
    from geosane_hf.hub import save_timm_repo

    root = _collection(tmp_path / "c", [("a", "test_resnet", 0, "S2"), ("b", "test_vit", 1, "SAR")])
    net = timm.create_model("test_resnet", num_classes=4)
    generated = save_timm_repo(net, tmp_path / "gen", {"architecture": "test_resnet"})
    args = argparse.Namespace(
        collection=str(root),
        model=None,
        out=str(tmp_path / "out"),
        generated=[str(generated)],
        method="umap",
        seed=0,
        png_name="latent_umap.png",
        no_progress=True,
    )
    assert embed.run(args) == 0
    png = tmp_path / "out" / "latent_umap.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_embeddings(tmp_path / "out" / "embeddings.safetensors").ids == ["a", "b"]
    assert "PCA fallback" in capsys.readouterr().out  # 3 points: labelled PCA, never passed off as UMAP
