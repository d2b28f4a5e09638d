"""The end-to-end demo in its quick mode (`make demo-quick`): every stage runs for real, offline, and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from geosane_hf.experiments.demo import STATE_FILE, DemoConfig, DemoError, demo_stages, holdout_runs, run_demo


def _run_cli(args: list[str], hf_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "geosane_hf.cli", "demo", *args, "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    out, hf_home = root / "out", root / "hf"
    done = _run_cli(["--quick", "--out", str(out)], hf_home)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return out, hf_home, done.stdout


def test_quick_demo_runs_every_stage_and_writes_the_report(quick_demo):
    out, _, stdout = quick_demo
    state = json.loads((out / STATE_FILE).read_text())
    expected = [s.name for s in demo_stages(DemoConfig(out_dir=out, quick=True))]
    assert list(state) == expected
    assert all(record["done"] for record in state.values())
    report = (out / "results.md").read_text()
    for stage in expected:
        assert f"| {stage} |" in report
    assert "## Fine-tuning every start" in report and "## Zoo experiment" in report
    # The held-out models are whole population runs that exist in the zoo.
    holdout = state["train"]["summary"]["holdout_ids"]
    index = json.loads((out / "zoo" / "index.json").read_text())
    ids = {m["id"]: m["run_id"] for m in index["models"]}
    assert set(holdout) <= set(ids)
    assert {ids[h] for h in holdout} and all(
        m["id"] in holdout for m in index["models"] if m["run_id"] in {ids[h] for h in holdout}
    )
    assert "demo finished" in stdout


def test_trained_model_is_published_as_geosane_base_in_the_hub_cache(quick_demo):
    out, hf_home, _ = quick_demo
    from transformers import AutoModel

    published = AutoModel.from_pretrained("geosane/base", cache_dir=hf_home / "hub", local_files_only=True)
    trained = AutoModel.from_pretrained(out / "train" / "model")
    expected = trained.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in published.state_dict().items())
    card = (out / "train" / "model" / "README.md").read_text()
    assert "GeoSANE" in card


def test_generated_models_are_timm_repos_that_load(quick_demo):
    import timm

    out, _, _ = quick_demo
    rows = json.loads((out / STATE_FILE).read_text())["generate"]["summary"]["generated"]
    assert [r["prompt"] for r in rows] == list(DemoConfig().prompts)
    for row in rows:
        folder = Path(row["folder"])
        assert (folder / "model.safetensors").is_file() and (folder / "README.md").is_file()
        config = json.loads((folder / "config.json").read_text())
        assert config["architecture"] == row["prompt"] and config["num_classes"] == 6
        model = timm.create_model(f"local-dir:{folder}", pretrained=True)
        assert model.conv_stem.weight.shape[1] == 4  # 4 Landsat bands


def test_rerun_skips_every_done_stage(quick_demo):
    out, hf_home, _ = quick_demo
    before = (out / "results.md").read_text()
    done = _run_cli(["--quick", "--out", str(out)], hf_home)
    assert done.returncode == 0, done.stderr[-3000:]
    stages = demo_stages(DemoConfig(out_dir=out, quick=True))
    assert done.stdout.count("done before") == len(stages)
    assert (out / "results.md").read_text() == before


def test_bad_input_fails_clearly(tmp_path):
    with pytest.raises(DemoError, match="expected stage names"):
        run_demo(DemoConfig(out_dir=tmp_path, quick=True), only=["nope"])
    with pytest.raises(DemoError, match="workers >= 1"):
        DemoConfig(out_dir=tmp_path, workers=0)
    with pytest.raises(DemoError, match="found no models"):
        holdout_runs(tmp_path / "zoo")


def test_publish_stage_also_pushes_to_the_hub_when_asked(tmp_path, hub_env):
    """`geosane demo --push-to-hub org/name`: the cache copy plus one upload to HF_ENDPOINT (the test Hub server)."""
    from huggingface_hub import HfApi

    from geosane_hf.experiments.demo.stages import _publish
    from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel

    torch.manual_seed(0)
    GeoSANEModel(GeoSANEConfig.from_preset("tiny")).save_pretrained(tmp_path / "out" / "train" / "model")
    repo_id = hub_env.unique_repo_id("geosane-base")
    config = DemoConfig(out_dir=tmp_path / "out", cache_dir=str(tmp_path / "cache"), push_to_hub=repo_id)
    summary = _publish(config)
    assert summary["repo_id"] == "geosane/base" and summary["pushed"]
    files = set(HfApi().list_repo_files(repo_id))
    assert {"config.json", "model.safetensors", "modeling_geosane.py", "configuration_geosane.py"} <= files
