"""training/train.py: bad input before compute, exact resume, loss goes down, 2-process DDP, model card and push."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from geosane_hf.checkpoints import save_safetensors
from geosane_hf.collection.architectures import build_architecture
from geosane_hf.collection.collector import collect
from geosane_hf.collection.dataset import DatasetBuildConfig, build_dataset
from geosane_hf.collection.manifest import CollectionManifest
from geosane_hf.package_data import training_config_path
from training.config import TrainingConfigError, load_config
from training.data import TrainingDataError, WindowSampler, load_training_data
from training.launch import cpu_ddp_command
from training.train import TrainingSetupError, main, parse_args, training_function

REPO = Path(__file__).resolve().parent.parent
TINY = str(training_config_path("tiny-test"))
ARCH = {"library": "geosane", "name": "statlog_cnn", "kwargs": {"in_chans": 4, "num_classes": 6, "width": 8}}


def _trained_like(seed: int) -> dict[str, torch.Tensor]:
    """A statlog_cnn whose weights share structure across seeds (a common base + small noise), like a population."""
    base = build_architecture("statlog_cnn", in_chans=4, num_classes=6, width=8)
    torch.manual_seed(0)
    for p in base.parameters():
        torch.nn.init.normal_(p, 0.0, 0.5)
    g = torch.Generator().manual_seed(seed)
    return {
        k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in base.state_dict().items()
    }


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """8 statlog CNNs (permutable) + 1 bigger MLP without architecture, collected and tokenized (token size 230)."""
    root = tmp_path_factory.mktemp("train_data")
    entries = []
    for i in range(8):
        save_safetensors(_trained_like(i), root / f"cnn{i}.safetensors")
        entries.append(
            {"id": f"cnn-{i}", "source": {"kind": "local", "path": f"cnn{i}.safetensors"}, "architecture": ARCH}
        )
    g = torch.Generator().manual_seed(99)
    save_safetensors(
        {"fc.weight": torch.randn(40, 300, generator=g), "fc.bias": torch.zeros(40)}, root / "mlp.safetensors"
    )
    entries.append({"id": "mlp", "source": {"kind": "local", "path": "mlp.safetensors"}})
    manifest = CollectionManifest.from_dict({"name": "tiny", "models": entries}, root=root)
    collect(manifest, root / "collection", progress=False)
    build_dataset(root / "collection", root / "dataset", DatasetBuildConfig(chunk_tokens=16), progress=False)
    return root / "dataset"


def _args(dataset, out, *extra):
    return [
        "--config",
        TINY,
        "--dataset",
        str(dataset),
        "--output_dir",
        str(out),
        "--no_tensorboard",
        "--cpu",
        "--set",
        "holdout_ids=[cnn-3, cnn-7]",
        *extra,
    ]


def _train(dataset, out, *extra):
    config, args = parse_args(_args(dataset, out, *extra))
    return training_function(config, args)


# ------------------------------------------------------------------------------------------------ bad input


def test_unknown_config_key_lists_the_valid_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model_preset: tiny\nlearning_rte: 0.1\n")
    with pytest.raises(
        TrainingConfigError, match=r"unknown training config key\(s\) \['learning_rte'\].*learning_rate"
    ):
        load_config(path)


@pytest.mark.parametrize("key", ["fused_optimizer", "permute", "use_layer_types"])
def test_a_switch_that_is_not_true_or_false_is_refused(key):
    with pytest.raises(TrainingConfigError, match=rf"{key}: expected true or false, got 'maybe'"):
        load_config(None, [f"{key}=maybe"])


def test_cli_reports_bad_input_in_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["--config", TINY, "--dataset", str(tmp_path), "--set", "warmup_steps=3"]) == 2
    assert "unknown training config key(s) ['warmup_steps']" in capsys.readouterr().err


def test_window_larger_than_the_model_limit_fails_before_loading_data(tmp_path):
    # the dataset does not even exist: the window check comes first
    with pytest.raises(TrainingConfigError, match=r"expected at most the model's window_size 32.*got 64"):
        _train(tmp_path / "missing", tmp_path / "out", "--set", "window_size=64")


def test_empty_dataset_is_rejected(tiny_dataset, tmp_path):
    empty = tmp_path / "empty"
    for sub in ("tokens", "models"):
        (empty / sub).mkdir(parents=True)
        table = pq.read_table(next((tiny_dataset / sub).glob("train-*.parquet")))
        pq.write_table(table.slice(0, 0), empty / sub / "train-00000.parquet")
    with pytest.raises(TrainingDataError, match="expected a dataset with at least one model, got 0 models"):
        load_training_data(str(empty), token_size=230)


def test_dataset_token_size_must_match_the_model(tiny_dataset, tmp_path):
    other = tmp_path / "ts64"
    build_dataset(tiny_dataset.parent / "collection", other, DatasetBuildConfig(token_size=64), progress=False)
    with pytest.raises(TrainingDataError, match=r"expected dataset token size 230 .*got \[64\]"):
        _train(other, tmp_path / "out")


def test_unknown_holdout_id_is_rejected(tiny_dataset):
    with pytest.raises(TrainingDataError, match=r"unknown ids \['nope'\]"):
        load_training_data(str(tiny_dataset), token_size=230, holdout_ids=["nope"])


def test_resume_from_a_run_with_another_config_is_refused(tiny_dataset, tmp_path):
    _train(tiny_dataset, tmp_path / "run", "--num_steps", "4", "--stop_after_step", "1")
    with pytest.raises(TrainingSetupError, match=r"another config \(learning_rate: checkpoint 0.003 vs now 0.01\)"):
        _train(tiny_dataset, tmp_path / "run", "--num_steps", "4", "--resume", "--set", "learning_rate=0.01")


# --------------------------------------------------------------------------------------------------- sampling


def test_sampler_weights_models_by_sqrt_tokens_and_restores_its_state():
    sampler = WindowSampler([4, 400], window_size=8, weighting="sqrt", seed=1)
    picks = sampler.draw(4000)
    share_small = sum(m == 0 for m, _ in picks) / len(picks)
    assert abs(share_small - 2 / 22) < 0.02  # sqrt(4) / (sqrt(4) + sqrt(400))
    assert all(0 <= s <= 392 for m, s in picks if m == 1) and all(s == 0 for m, s in picks if m == 0)
    state = sampler.state_dict()
    ahead = sampler.draw(5)
    sampler.load_state_dict(json.loads(json.dumps(state)))
    assert sampler.draw(5) == ahead


# --------------------------------------------------------------------------------------------------- training


def test_loss_goes_down_and_the_model_is_saved_with_remote_code_and_a_card(tiny_dataset, tmp_path):
    result = _train(
        tiny_dataset, tmp_path / "run", "--num_steps", "30", "--set", "eval_every=0", "--set", "learning_rate=0.01"
    )
    losses = [row["reconstruction_loss"] for row in result.history]
    assert sum(losses[-3:]) / 3 < 0.85 * sum(losses[:3]) / 3, losses
    model_dir = Path(result.model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModel"].endswith("GeoSANEModel")
    assert (model_dir / "modeling_geosane.py").is_file() and (model_dir / "configuration_geosane.py").is_file()
    card = (model_dir / "README.md").read_text()
    assert "{{" not in card and "`cnn-3`, `cnn-7`" in card and "held-out R^2" in card
    final = result.evaluations[-1]
    assert final["num_models"] == 2 and set(final["r2_weights_by_type"]) >= {"CONV", "LINEAR"}
    assert card.count(f"{final['r2_tokens']:.4f}") >= 1
    import yaml
    from hub_server import card_errors

    meta = yaml.safe_load(card.split("---")[1])
    result = meta["model-index"][0]["results"][0]
    assert result["metrics"][0]["value"] == round(final["r2_tokens"], 4) and result["metrics"][0]["type"] == "r2"
    assert "datasets" not in meta and str(tiny_dataset) not in result["dataset"]["type"]  # a local folder: no id
    assert card_errors(card) == []  # what the Hub accepts
    assert json.loads((model_dir / "config.json").read_text())["custom_pipelines"]["weight-generation"]
    assert (model_dir / "pipeline.py").is_file()


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tiny_dataset, tmp_path):
    steps = ["--num_steps", "6", "--set", "checkpoint_every=0", "--set", "eval_every=0"]
    straight = _train(tiny_dataset, tmp_path / "a", *steps)
    first = _train(tiny_dataset, tmp_path / "b", *steps, "--stop_after_step", "3")
    assert first.step == 3 and first.model_dir is None
    resumed = _train(tiny_dataset, tmp_path / "b", *steps, "--resume")
    assert resumed.step == 6
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in straight.history], rel=1e-5)
    # the counter bug: the final save after resuming is a new checkpoint, not an overwrite of checkpoint_0
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["checkpoint_0", "checkpoint_1"]


def test_two_cpu_processes_finish_with_identical_weights(tiny_dataset, tmp_path):
    script = tmp_path / "run_ddp.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from safetensors.torch import save_file\n"
        "from training.train import parse_args, training_function\n"
        "config, args = parse_args(sys.argv[2:])\n"
        "result = training_function(config, args)\n"
        "import os\n"
        "save_file({k: v.contiguous() for k, v in result.model.state_dict().items()}, "
        "f'{sys.argv[1]}/rank{os.environ[\"RANK\"]}.safetensors')\n"
    )
    command, env = cpu_ddp_command(
        [script, tmp_path, *_args(tiny_dataset, tmp_path / "run", "--num_steps", "4", "--set", "eval_every=0")],
        hf_home=tmp_path / "hf_home",
    )
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout + done.stderr
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    from accelerate.utils import set_seed

    from geosane_hf.modeling import GeoSANEModel
    from training.train import build_model_config

    set_seed(0)
    initial = GeoSANEModel(build_model_config(parse_args(_args(tiny_dataset, tmp_path))[0])).state_dict()
    assert any(not torch.equal(initial[k], rank0[k]) for k in rank0)  # and they did train


def test_push_to_hub_uploads_the_model_folder(tiny_dataset, tmp_path, hub_env):
    from huggingface_hub import HfApi

    repo_id = hub_env.unique_repo_id("geosane")
    _train(tiny_dataset, tmp_path / "run", "--num_steps", "2", "--set", "eval_every=0", "--push_to_hub", repo_id)
    files = set(HfApi().list_repo_files(repo_id))
    assert {"config.json", "model.safetensors", "modeling_geosane.py", "README.md"} <= files


def test_per_layer_normalization_standardises_each_model_with_its_own_statistics(tiny_dataset):
    from geosane_hf.token_norm import destandardize

    raw = load_training_data(str(tiny_dataset), token_size=230, holdout_ids=["cnn-3"])
    normed = load_training_data(str(tiny_dataset), token_size=230, holdout_ids=["cnn-3"], normalization="per-layer")
    for a, b in zip(raw.train + raw.holdout, normed.train + normed.holdout, strict=True):
        assert a.stats is None and b.stats is not None
        values = b.tokenized.tokens[b.tokenized.mask]
        assert abs(values.mean().item()) < 1e-4
        back = destandardize(b.tokenized.tokens, b.tokenized.mask, b.stats)
        torch.testing.assert_close(back, a.tokenized.tokens, rtol=1e-5, atol=1e-6)
    with pytest.raises(TrainingDataError, match="token normalization"):
        load_training_data(str(tiny_dataset), token_size=230, normalization="per-tensor")


def test_fused_and_unfused_adamw_take_the_same_step():
    from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
    from training.config import TrainingConfig
    from training.train import build_optimizer

    torch.manual_seed(0)
    models = [GeoSANEModel(GeoSANEConfig.from_preset("tiny")) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    steps = []
    for model, use_fused in zip(models, (True, False), strict=True):
        optimizer = build_optimizer(model, TrainingConfig(fused_optimizer=use_fused, weight_decay=0.1))
        assert bool(optimizer.defaults["fused"]) is use_fused
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        optimizer.step()
        steps.append(model.state_dict())
    for key, value in steps[0].items():  # same update up to float rounding
        torch.testing.assert_close(value, steps[1][key], atol=1e-6, rtol=1e-5)
