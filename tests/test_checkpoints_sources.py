"""Tests of safe checkpoint loading: missing paths, folders, the Hub (offline cache, unreachable, a local server)."""

from __future__ import annotations

import json
import socket

import pytest
import torch
from checkpoint_helpers import assert_same

from geosane_hf.checkpoints import (
    CheckpointError,
    CheckpointNotFoundError,
    load_checkpoint,
    save_safetensors,
)

# ---------------------------------------------------------------------------------------------------------------
# sources, directories, the Hub
# ---------------------------------------------------------------------------------------------------------------


def test_missing_paths_and_misused_arguments(tmp_path):
    with pytest.raises(CheckpointNotFoundError):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint("checkpoints/nope.pt")
    path = tmp_path / "w.safetensors"
    save_safetensors({"w": torch.ones(1)}, path)
    with pytest.raises(CheckpointError, match="only apply to timm"):
        load_checkpoint(path, num_classes=3)
    with pytest.raises(CheckpointError, match="filename= is only used"):
        load_checkpoint(path, filename="other.safetensors")


def test_directory_prefers_safetensors_and_unknown_suffix_is_sniffed(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "pytorch_model.bin")
    save_safetensors({"w": torch.ones(2)}, tmp_path / "model.safetensors")
    assert load_checkpoint(tmp_path).metadata.format == "safetensors"
    assert load_checkpoint(tmp_path, filename="pytorch_model.bin").metadata.format == "torch"
    odd = tmp_path / "weights.model"
    save_safetensors({"w": torch.ones(3)}, odd)
    assert load_checkpoint(odd).state_dict["w"].shape == (3,)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointNotFoundError, match="holds no weights file"):
        load_checkpoint(empty)


def _offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_hub_offline_uncached_repo_gives_a_clear_error(tmp_path, monkeypatch):
    _offline(monkeypatch)
    for source in ("geosane-test/not-cached", "hf-hub:geosane-test/not-cached"):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(source, cache_dir=tmp_path)
        message = str(info.value)
        assert "'geosane-test/not-cached'" in message
        assert "HF_HUB_OFFLINE=1" in message and "model.safetensors" in message
        assert "HF_ENDPOINT" in message and "local file or directory" in message


def test_hub_offline_reads_the_cache_and_prefers_safetensors(tmp_path, monkeypatch):
    _offline(monkeypatch)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--geosane-test--cached"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_safetensors({"b": torch.ones(2), "a": torch.zeros(2)}, snapshot / "model.safetensors")
    torch.save({"other": torch.ones(1)}, snapshot / "pytorch_model.bin")
    (snapshot / "config.json").write_text(json.dumps({"architectures": ["TinyNet"]}))
    ckpt = load_checkpoint("geosane-test/cached", cache_dir=tmp_path)
    assert list(ckpt.state_dict) == ["b", "a"]
    assert ckpt.metadata.format == "safetensors" and ckpt.metadata.architecture == "TinyNet"
    assert ckpt.metadata.extra["hub_repo"] == "geosane-test/cached" and ckpt.metadata.extra["commit"] == commit
    bin_ckpt = load_checkpoint("hf-hub:geosane-test/cached", filename="pytorch_model.bin", cache_dir=tmp_path)
    assert list(bin_ckpt.state_dict) == ["other"]


def test_unreachable_hub_fails_fast_with_a_clear_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(CheckpointError, match="unreachable") as info:
        load_checkpoint("geosane-test/nowhere", cache_dir=tmp_path)
    assert "model_info" in str(info.value) and f"127.0.0.1:{port}" in str(info.value)


def test_hub_repo_round_trip_through_a_local_server_then_offline(hub_env, tmp_path, monkeypatch):
    """Ordinary huggingface_hub calls against the test server: safetensors preferred, then served from the cache."""
    import timm
    from huggingface_hub import HfApi, constants
    from safetensors.torch import save_file

    repo_id = hub_env.unique_repo_id("checkpoints")
    folder = tmp_path / "repo"
    folder.mkdir()
    sd = timm.create_model("test_resnet", pretrained=False, num_classes=3).state_dict()
    save_file(dict(sd), str(folder / "model.safetensors"))  # written the usual way: no key order recorded
    torch.save({"decoy": torch.ones(1)}, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"architecture": "test_resnet", "num_classes": 3}))
    api = HfApi()
    api.create_repo(repo_id)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id)

    online = load_checkpoint(repo_id)
    assert online.metadata.format == "safetensors" and online.metadata.architecture == "test_resnet"
    assert online.metadata.extra["key_order"] == ["timm:test_resnet"]
    assert_same(online.state_dict, dict(sd))

    missing = hub_env.unique_repo_id("missing")
    with pytest.raises(CheckpointError, match="RepositoryNotFoundError") as info:
        load_checkpoint(missing)
    assert repr(missing) in str(info.value) and "HF_TOKEN" in str(info.value)

    sha = api.model_info(repo_id).sha
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    offline = load_checkpoint(f"hf-hub:{repo_id}")
    assert offline.metadata.path == online.metadata.path
    assert offline.metadata.extra["commit"] == online.metadata.extra["commit"] == sha
    assert list(offline.state_dict) == list(sd)
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE=1"):
        load_checkpoint(hub_env.unique_repo_id("never-downloaded"))
