"""Publishing a model folder into the local Hub cache (`geosane_hf.hub_cache`): what `make demo` does with geosane/base."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from geosane_hf.hub_cache import CachePublishError, cache_repo_folder, publish_to_cache
from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = GeoSANEModel(GeoSANEConfig.from_preset("tiny"))
    out = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(out)
    return out


def test_published_model_loads_offline_in_a_clean_process(tiny_model_dir, tmp_path):
    """AutoModel.from_pretrained("geosane/base") with HF_HUB_OFFLINE=1, from a process without geosane_hf on its path."""
    hf_home = tmp_path / "hf"
    commit = publish_to_cache(tiny_model_dir, "geosane/base", cache_dir=hf_home / "hub")
    assert (cache_repo_folder("geosane/base", cache_dir=hf_home / "hub") / "refs" / "main").read_text() == commit
    expected = GeoSANEModel.from_pretrained(tiny_model_dir).state_dict()
    torch.save(dict(expected), tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.path = [p for p in sys.path if p not in ("", {str(Path.cwd())!r})]
        from transformers import AutoModel
        model = AutoModel.from_pretrained("geosane/base", trust_remote_code=True)
        assert "geosane_hf" not in sys.modules, "the package must not be needed"
        expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
        state = model.state_dict()
        assert list(state) == list(expected)
        assert all(torch.equal(state[k], expected[k]) for k in expected)
        print("OK", type(model).__name__)
        """
    )
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OK GeoSANEModel" in done.stdout


def test_publishing_twice_gives_the_same_commit_and_new_content_a_new_one(tiny_model_dir, tmp_path):
    cache = tmp_path / "hub"
    first = publish_to_cache(tiny_model_dir, "org/name", cache_dir=cache)
    assert publish_to_cache(tiny_model_dir, "org/name", cache_dir=cache) == first
    changed = tmp_path / "changed"
    changed.mkdir()
    for path in tiny_model_dir.iterdir():
        (changed / path.name).write_bytes(path.read_bytes())
    (changed / "README.md").write_text("another card\n")
    second = publish_to_cache(changed, "org/name", cache_dir=cache)
    assert second != first
    repo = cache_repo_folder("org/name", cache_dir=cache)
    assert (repo / "refs" / "main").read_text() == second
    # The old snapshot is untouched and its links still resolve.
    assert (repo / "snapshots" / first / "config.json").resolve().is_file()
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(cache)
    (scanned,) = [r for r in info.repos if r.repo_id == "org/name"]
    assert {rev.commit_hash for rev in scanned.revisions} == {first, second}
    assert not info.warnings


def test_bad_input_is_refused_and_nothing_is_written(tmp_path):
    cache = tmp_path / "hub"
    with pytest.raises(CachePublishError, match="expected a model folder"):
        publish_to_cache(tmp_path / "missing", "org/name", cache_dir=cache)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CachePublishError, match="expected files"):
        publish_to_cache(empty, "org/name", cache_dir=cache)
    with pytest.raises(CachePublishError, match="org/name"):
        publish_to_cache(empty, "no-slash", cache_dir=cache)
    assert not cache.exists()
