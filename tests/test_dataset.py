"""The tokenized-weights dataset: chunked tokenization, Parquet shards, loading, determinism, atomicity, the Hub."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from geosane_hf.checkpoints import load_checkpoint, save_safetensors
from geosane_hf.collection.collector import collect, read_collection_index, write_collection_index
from geosane_hf.collection.dataset import (
    DatasetBuildConfig,
    DatasetBuildError,
    build_dataset,
    iter_token_chunks,
    mask_from_num_real,
    push_dataset_to_hub,
)
from geosane_hf.collection.manifest import CollectionManifest
from geosane_hf.tokenizer import WeightTokenizer


def _mixed_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """Weights with biases whose rows straddle token and chunk boundaries, norms, buffers, fp16 and a 0-d scalar."""
    g = torch.Generator().manual_seed(seed)
    return {
        "stem.weight": torch.randn(7, 3, 3, 3, generator=g),
        "stem.bias": torch.randn(7, generator=g),
        "norm.weight": torch.rand(7, generator=g),
        "norm.bias": torch.randn(7, generator=g),
        "norm.running_mean": torch.randn(7, generator=g),
        "norm.num_batches_tracked": torch.tensor(5),
        "pos_embed": torch.randn(1, 5, 11, generator=g),
        "fc.weight": torch.randn(13, 37, generator=g).half(),
        "fc.bias": torch.randn(13, generator=g).half(),
        "head.weight": torch.randn(3, 101, generator=g),
        "logit_scale": torch.tensor(2.5),
    }


@pytest.mark.parametrize("mode", ["full", "geosane"])
@pytest.mark.parametrize(("token_size", "chunk_tokens"), [(8, 1), (8, 3), (16, 7), (230, 512)])
def test_chunks_concatenate_to_the_tokenizer_output(mode, token_size, chunk_tokens):
    state_dict = _mixed_state_dict(0)
    tokenizer = WeightTokenizer(token_size=token_size, mode=mode)
    reference = tokenizer.tokenize(state_dict)
    chunks = list(iter_token_chunks(state_dict, tokenizer, chunk_tokens))
    assert [c.token_offset for c in chunks] == list(range(0, reference.num_tokens, chunk_tokens))
    assert all(c.num_tokens == chunk_tokens for c in chunks[:-1]) and 0 < chunks[-1].num_tokens <= chunk_tokens
    tokens = np.concatenate([c.tokens for c in chunks])
    assert np.array_equal(tokens, reference.tokens.numpy())
    num_real = np.concatenate([c.num_real for c in chunks])
    assert torch.equal(mask_from_num_real(num_real, token_size), reference.mask)
    assert np.array_equal(np.concatenate([c.positions for c in chunks]), reference.positions.numpy())
    assert np.array_equal(np.concatenate([c.layer_types for c in chunks]), reference.layer_types.numpy())


def test_nan_weights_are_rejected_with_the_layer_name():
    state_dict = _mixed_state_dict(0)
    state_dict["head.weight"][1, 2] = float("inf")
    with pytest.raises(DatasetBuildError, match=r"NaN/Inf in 1 tokens of layers \['head.weight'\]"):
        list(iter_token_chunks(state_dict, WeightTokenizer(token_size=8, mode="full"), 4))


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """A crafted 3-model collection made by the collector: two mixed models and one bigger one (many chunks)."""
    root = tmp_path_factory.mktemp("collection")
    g = torch.Generator().manual_seed(7)
    save_safetensors(_mixed_state_dict(1), root / "m1.safetensors")
    save_safetensors(_mixed_state_dict(2), root / "m2.safetensors")
    big = {"a.weight": torch.randn(64, 300, generator=g), "a.bias": torch.randn(64, generator=g)}
    save_safetensors(big, root / "big.safetensors")
    entries = [
        {"id": "zeta", "source": {"kind": "local", "path": "m1.safetensors"}, "license": "MIT", "task": "seg"},
        {"id": "alpha", "source": {"kind": "local", "path": "m2.safetensors"}, "role": "prompt"},
        {"id": "big", "source": {"kind": "local", "path": "big.safetensors"}, "license": "Apache-2.0"},
    ]
    manifest = CollectionManifest.from_dict({"name": "t", "models": entries}, root=root)
    report = collect(manifest, root / "collection", progress=False)
    assert not report.failed
    return root / "collection"


SMALL = DatasetBuildConfig(mode="full", token_size=16, chunk_tokens=64, max_shard_mb=0.06, row_group_rows=2)


@pytest.fixture(scope="module")
def built(collection, tmp_path_factory):
    out = tmp_path_factory.mktemp("dataset")
    return build_dataset(collection, out, SMALL, progress=False)


def test_dataset_loads_and_rebuilds_every_model_exactly(built, collection, tmp_path):
    import datasets

    tokens = datasets.load_dataset(str(built.out_dir), "tokens", split="train", cache_dir=str(tmp_path / "cache"))
    models = datasets.load_dataset(str(built.out_dir), "models", split="train", cache_dir=str(tmp_path / "cache"))
    assert models["model_id"] == ["alpha", "big", "zeta"]  # sorted ids: deterministic order
    assert len(tokens) == built.num_chunks and sum(tokens["num_tokens"]) == built.num_tokens
    assert tokens.features["tokens"].feature.length == SMALL.token_size  # fixed-width [n, T]
    tokens = tokens.with_format("numpy")
    for meta in models:
        rows = [r for r in tokens if r["model_id"] == meta["model_id"]]
        assert [r["chunk_index"] for r in rows] == list(range(meta["num_chunks"]))
        assert all(r["token_offset"] == r["chunk_index"] * SMALL.chunk_tokens for r in rows)
        values = torch.as_tensor(np.concatenate([np.stack(r["tokens"]) for r in rows]))  # [N, T]
        back = WeightTokenizer().detokenize(values, json.loads(meta["layout"]))
        record = next(m for m in read_collection_index(collection) if m.id == meta["model_id"])
        original = load_checkpoint(collection / record.file).state_dict
        assert list(back) == list(original)
        assert all(torch.equal(back[k], original[k]) and back[k].dtype == original[k].dtype for k in original)
        mask = mask_from_num_real(np.concatenate([r["num_real"] for r in rows]), SMALL.token_size)
        assert int(mask.sum()) == meta["num_real_values"]
        assert not values[~mask].any()  # padding is zero


def test_streaming_reads_the_same_rows(built, tmp_path):
    import datasets

    eager = datasets.load_dataset(str(built.out_dir), "tokens", split="train", cache_dir=str(tmp_path / "c"))
    stream = datasets.load_dataset(str(built.out_dir), "tokens", split="train", streaming=True)
    streamed = list(stream)
    assert len(streamed) == len(eager)
    assert streamed[5]["tokens"] == eager[5]["tokens"] and streamed[5]["positions"] == eager[5]["positions"]


def test_shards_are_bounded_and_byte_identical_across_builds(built, collection, tmp_path):
    assert len(built.token_shards) > 1
    for shard in built.token_shards:
        metadata = pq.ParquetFile(built.out_dir / shard).metadata
        assert (built.out_dir / shard).stat().st_size <= SMALL.max_shard_mb * 2**20
        assert all(metadata.row_group(i).num_rows <= SMALL.row_group_rows for i in range(metadata.num_row_groups))
    again = build_dataset(collection, tmp_path / "again", SMALL, progress=False)
    files = sorted(p.relative_to(built.out_dir) for p in built.out_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again.out_dir) for p in again.out_dir.rglob("*") if p.is_file())
    for relative in files:
        assert (built.out_dir / relative).read_bytes() == (again.out_dir / relative).read_bytes(), relative


def test_card_has_configs_table_licenses_and_loading(built):
    import yaml

    card = (built.out_dir / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert [c["config_name"] for c in front["configs"]] == ["tokens", "models"]
    assert front["configs"][0]["data_files"][0]["path"] == "tokens/train-*.parquet"
    assert "| big | rs-model |" in card and "| alpha | prompt |" in card
    assert "| MIT | 1: zeta |" in card and "| unknown (ask the authors before redistributing) | 1: alpha |" in card
    assert 'load_dataset("PATH_OR_REPO_ID", "tokens"' in card and "{{" not in card
    from hub_server import card_errors

    assert front["license"] == "other" and front["license_name"] and front["license_link"]
    assert card_errors(card, "dataset") == []


def test_a_build_that_fails_midway_leaves_no_output_and_keeps_an_earlier_build(collection, tmp_path):
    broken = tmp_path / "broken"
    (broken / "models").mkdir(parents=True)
    records = read_collection_index(collection)
    for record in records:
        (broken / record.file).write_bytes((collection / record.file).read_bytes())
    bad = _mixed_state_dict(3)
    bad["head.weight"][0, 0] = float("nan")
    path = broken / "models" / "zz-nan.safetensors"
    save_safetensors(bad, path)
    nan_record = type(records[0])(
        **{
            **records[0].__dict__,
            "id": "zz-nan",
            "file": "models/zz-nan.safetensors",
            "file_bytes": path.stat().st_size,
        }
    )
    write_collection_index(broken, [*records, nan_record])  # sorted last: fails after the others were written
    with pytest.raises(DatasetBuildError, match="NaN/Inf"):
        build_dataset(broken, tmp_path / "out", SMALL, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".out.lock") == ["broken"]  # nothing half-built
    build_dataset(collection, tmp_path / "out", SMALL, progress=False)
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    with pytest.raises(DatasetBuildError, match="NaN/Inf"):
        build_dataset(broken, tmp_path / "out", SMALL, progress=False)
    assert {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()} == before  # the old build stays


def test_missing_collection_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetBuildError, match="no collected models"):
        build_dataset(tmp_path, tmp_path / "out", progress=False)


def test_cli_build_dataset(collection, tmp_path, capsys):
    from geosane_hf.cli import main

    code = main(
        ["build-dataset", str(collection), "--out", str(tmp_path / "ds"), "--mode", "geosane", "--no-progress"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "3 models" in out and "alpha" in out
    models = pq.read_table(tmp_path / "ds" / "models" / "train-00000.parquet").to_pylist()
    assert {m["mode"] for m in models} == {"geosane"}
    assert "norm.running_mean" in next(m for m in models if m["model_id"] == "alpha")["missing_keys"]


def test_push_to_hub_then_load_and_stream(built, hub_env):
    import datasets

    repo_id = hub_env.unique_repo_id("tokens")
    push_dataset_to_hub(built.out_dir, repo_id)
    tokens = datasets.load_dataset(repo_id, "tokens", split="train")
    assert len(tokens) == built.num_chunks
    models = datasets.load_dataset(repo_id, "models", split="train")
    assert models["model_id"] == ["alpha", "big", "zeta"]
    first = next(iter(datasets.load_dataset(repo_id, "tokens", split="train", streaming=True)))
    assert first["model_id"] == "alpha" and first["chunk_index"] == 0
    assert first["tokens"] == tokens[0]["tokens"]
