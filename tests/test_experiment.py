"""The comparison of starts: the GeoSANE start's publish path, matched noise, resume, workers, config and CLI errors."""

from __future__ import annotations

import importlib
import json

import pytest
import timm
import torch

from geosane_hf.evaluation import TargetArch, weight_distance
from geosane_hf.evaluation.geosane_start import distance_keys, fitted_prompt, geosane_start, matched_prompt_noise
from geosane_hf.experiments.transfer.config import TaskSpec, parse_start
from geosane_hf.experiments.transfer.run import (
    ExperimentConfig,
    ExperimentConfigError,
    load_experiment_config,
    load_task,
    packaged_experiments,
    plan_runs,
    run_experiment,
)
from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel

TARGET = TargetArch("test_resnet", 4, 6)  # timm's tiny test ResNet with BatchNorm (~0.1M parameters)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A randomly initialised tiny GeoSANE model saved like a trained one."""
    path = tmp_path_factory.mktemp("geosane") / "model"
    GeoSANEModel(GeoSANEConfig.from_preset("tiny")).save_pretrained(path)
    return path


def _config(model_dir, starts, seeds=(0,), **extra):
    data = {
        "name": "tiny",
        "tasks": [{"name": "statlog-classification", "max_train": 24, "max_test": 24}],
        "targets": [{"architecture": "test_resnet", "teacher": "test_resnet"}],
        "starts": list(starts),
        "seeds": list(seeds),
        "finetune": {"epochs": 1},
        "geosane": {"model": str(model_dir), "match_sampler": "prompt-noise"},
        **extra,
    }
    return ExperimentConfig.from_dict(data)


# ------------------------------------------------------------------------------------------------ the GeoSANE start


def test_geosane_start_publishes_a_loadable_repo_and_records_its_distance(model_dir, tmp_path):
    noise = {"sampler": "prompt-noise", "noise_scale": 0.1}  # a start that moves away from the prompt
    start = geosane_start(model_dir, TARGET, seed=0, store=tmp_path, group="task", img_size=32, **noise)
    folder = tmp_path / "task" / "test_resnet-prompt-noise-seed0"
    assert start.name == "geosane:prompt-noise" and start.provenance["published"] == str(folder)
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "config.json", "README.md"}
    net = timm.create_model(f"local-dir:{folder}", pretrained=True)  # what a user of the repo gets
    assert all(torch.equal(net.state_dict()[k], v) for k, v in start.state_dict.items())
    prompt = fitted_prompt(TARGET, 0)
    expected = weight_distance(prompt.state_dict, start.state_dict, distance_keys(TARGET, prompt.state_dict))
    assert start.provenance["distance_to_prompt"] == pytest.approx(expected) and expected > 0
    record = json.loads((folder / "geosane_generation.json").read_text())
    assert record["sampler"] == "prompt-noise" and record["seed"] == 0
    assert record["distance_to_prompt"] == pytest.approx(expected)
    assert start.provenance["model_fingerprint"] == record["model_fingerprint"]

    importlib.import_module(
        "geosane_hf.evaluation.geosane_start"
    )._GENERATED.clear()  # a new process: the published folder is reused, not regenerated
    again = geosane_start(model_dir, TARGET, seed=0, store=tmp_path, group="task", img_size=32, **noise)
    assert again.provenance["reused_published"] and not start.provenance["reused_published"]
    assert all(torch.equal(again.state_dict[k], v) for k, v in start.state_dict.items())
    other = geosane_start(model_dir, TARGET, seed=1, store=tmp_path, group="task", img_size=32, **noise)
    assert not torch.equal(other.state_dict["conv1.0.weight"], start.state_dict["conv1.0.weight"])


def test_matched_prompt_noise_has_exactly_the_geosane_distance(model_dir, tmp_path):
    generated = geosane_start(model_dir, TARGET, seed=2, store=tmp_path, img_size=32, sampler="prompt-noise")
    prompt = fitted_prompt(TARGET, 2)
    noise = matched_prompt_noise(prompt, generated, seed=2)
    keys = distance_keys(TARGET, prompt.state_dict)
    distance = generated.provenance["distance_to_prompt"]
    assert weight_distance(prompt.state_dict, noise.state_dict, keys) == pytest.approx(distance, rel=1e-6)
    assert weight_distance(generated.state_dict, noise.state_dict, keys) > 0.1 * distance  # another direction
    stats = [k for k in prompt.state_dict if k.endswith("running_var")]
    assert stats and all(torch.equal(noise.state_dict[k], prompt.state_dict[k]) for k in stats)
    assert noise.provenance["matched_to"]["start"] == "geosane:prompt-noise"


def test_sampler_options_reach_the_sampler_and_are_part_of_the_request(model_dir, tmp_path):
    from geosane_hf.generation import GenerationError, generate_weights

    options = {"interpolation_min": 0.5, "interpolation_max": 0.5, "cross_architecture": True}
    start = geosane_start(model_dir, TARGET, seed=0, store=tmp_path, img_size=32, sampler_options=options)
    assert start.provenance["sampler_options"] == options
    record = json.loads(next(tmp_path.glob("*/*/geosane_generation.json")).read_text())
    plain = geosane_start(model_dir, TARGET, seed=0, store=tmp_path, img_size=32)  # another request: regenerated
    assert not plain.provenance["reused_published"] and plain.provenance["sampler_options"] == {}
    assert (
        record["request_fingerprint"]
        != json.loads(next(tmp_path.glob("*/*/geosane_generation.json")).read_text())["request_fingerprint"]
    )
    model = GeoSANEModel.from_pretrained(model_dir)
    with pytest.raises(GenerationError, match=r"expected sampler_options among the interpolate sampler's fields"):
        generate_weights(model, "test_resnet", sampler_options={"cross_arch": True}, calibrate=False)
    with pytest.raises(ExperimentConfigError, match="Did you mean interpolate"):
        _config(model_dir, ["scratch"], geosane={"sampler_options": {"interpolat": {}}})
    with pytest.raises(ExperimentConfigError, match="mapping of option names"):
        _config(model_dir, ["scratch"], geosane={"sampler_options": {"interpolate": [1]}})
    assert _config(
        model_dir, ["scratch"], geosane={"sampler_options": {"interpolate": options}}
    ).geosane.sampler_options


# ------------------------------------------------------------------------------------------------ running


def test_experiment_writes_results_and_resume_trains_nothing(model_dir, tmp_path, monkeypatch):
    starts = ["scratch", "imagenet_prompt", "prompt_plus_noise", "geosane:prompt-noise", "checkpoint_average"]
    config = _config(model_dir, starts, seeds=(0, 1))
    out = tmp_path / "out"
    first = run_experiment(config, out, progress=False)
    table = first.tables[0]
    rows = {row.start: row for row in table.rows}
    assert [row.start for row in table.rows] == starts
    assert rows["scratch"].status == "ok" and rows["scratch"].seeds == [0, 1]
    assert rows["imagenet_prompt"].status == "n/a" and "test_resnet" in rows["imagenet_prompt"].reason
    assert rows["checkpoint_average"].status == "n/a" and "collection" in rows["checkpoint_average"].reason
    # the matched baseline has the GeoSANE start's distance, seed by seed
    by_key = {(r["start"], r["seed"]): r for r in first.runs}
    for seed in (0, 1):
        generated = by_key[("geosane:prompt-noise", seed)]["distance_to_prompt"]
        assert by_key[("prompt_plus_noise", seed)]["distance_to_prompt"] == pytest.approx(generated, rel=1e-6)
    assert len(table.verdicts["geosane:prompt-noise"]) == 2  # scratch and prompt_plus_noise; weight_selection not run
    assert table.missing_opponents["geosane:prompt-noise"] == ["weight_selection"]
    markdown = (out / "results.md").read_text()
    assert "| geosane:prompt-noise |" in markdown and "n/a: no packaged ImageNet weights of test_resnet" in markdown
    assert "**geosane:prompt-noise** on test_resnet:" in markdown
    assert json.loads((out / "results.json").read_text())["tables"][0]["rows"][0]["start"] == "scratch"
    assert (out / table.plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((out / "runs").rglob("seed*.json"))) == len(plan_runs(config))

    def fail(*args, **kwargs):
        raise AssertionError("resume must not train or generate again")

    monkeypatch.setattr("geosane_hf.evaluation.runner.finetune", fail)
    monkeypatch.setattr("geosane_hf.generation.api.generate_weights", fail)
    second = run_experiment(config, out, progress=False)
    assert second.reused == len(plan_runs(config)) and not second.failed
    assert [r["score"] for r in second.runs if r["status"] == "ok"] == [
        r["score"] for r in first.runs if r["status"] == "ok"
    ]
    changed = ExperimentConfig.from_dict({**config.to_dict(), "finetune": {"epochs": 2}, "starts": ["scratch"]})
    third = run_experiment(changed, out, progress=False)  # another protocol: the run files do not apply
    assert third.reused == 0 and third.failed and "resume must not train" in third.failed[0]


@pytest.mark.slow  # two spawned processes import torch, timm and evaluate (~30-60 s on a shared 2-core machine)
def test_two_workers_give_the_same_results_as_one(model_dir, tmp_path):
    config = _config(model_dir, ["scratch", "prompt_plus_noise", "distillation", "geosane:prompt-noise"], seeds=(0, 1))
    one = run_experiment(config, tmp_path / "one", workers=1, progress=False)
    two = run_experiment(config, tmp_path / "two", workers=2, progress=False)
    assert not one.failed and not two.failed
    assert [(r["start"], r["seed"], r["score"], r["curve"]) for r in one.runs] == [
        (r["start"], r["seed"], r["score"], r["curve"]) for r in two.runs
    ]
    assert list((tmp_path / "two" / "teachers" / "statlog-classification").glob("*.safetensors"))


# ------------------------------------------------------------------------------------------------ config


def test_config_errors_name_what_was_expected(model_dir):
    base = {"tasks": ["statlog-classification"], "targets": ["test_resnet"], "starts": ["scratch"]}
    with pytest.raises(ExperimentConfigError, match=r"unknown key\(s\) \['epoch'\].*valid keys.*'tasks'"):
        ExperimentConfig.from_dict({**base, "epoch": 3})
    with pytest.raises(ExperimentConfigError, match=r"unknown key\(s\) \['epoch'\] in finetune.*Did you mean epochs"):
        ExperimentConfig.from_dict({**base, "finetune": {"epoch": 3}})
    with pytest.raises(ExperimentConfigError, match="seed"):
        ExperimentConfig.from_dict({**base, "finetune": {"seed": 3}})
    with pytest.raises(ExperimentConfigError, match="Did you mean statlog-classification"):
        ExperimentConfig.from_dict({**base, "tasks": ["statlog-clasification"]})
    with pytest.raises(ExperimentConfigError, match="Did you mean weight_selection"):
        ExperimentConfig.from_dict({**base, "starts": ["weight_selecton"]})
    with pytest.raises(ExperimentConfigError, match="sampler"):
        parse_start("geosane:gaussian")
    with pytest.raises(ExperimentConfigError, match="valid keys"):
        ExperimentConfig.from_dict({**base, "targets": [{"architecture": "test_resnet", "teachr": "x"}]})
    with pytest.raises(ExperimentConfigError, match="timm architecture"):
        ExperimentConfig.from_dict({**base, "targets": ["resnet_nonexistent"]})
    no_model = ExperimentConfig.from_dict({**base, "starts": ["geosane:kde"]})  # loads; cannot run
    with pytest.raises(ExperimentConfigError, match="needs a GeoSANE model"):
        no_model.validate()
    with pytest.raises(ExperimentConfigError, match="collection"):
        no_model.with_geosane(model=str(model_dir)).validate()
    with pytest.raises(ExperimentConfigError, match="no such folder"):
        missing = ExperimentConfig.from_dict({**base, "starts": ["geosane"], "geosane": {"model": "/nonexistent/m"}})
        run_experiment(missing, "/tmp/unused")
    with pytest.raises(ExperimentConfigError, match="not found"):
        ExperimentConfig.from_yaml("/nonexistent.yaml")


def test_packaged_configs_load_and_plan():
    assert {"demo", "quick", "samplers"} <= set(packaged_experiments())
    demo = load_experiment_config("demo")
    assert [t.name for t in demo.tasks] == ["landsat8-cloud-segmentation", "statlog-classification"]
    assert demo.seeds == (0, 1, 2)
    lite0, lite2 = demo.targets
    assert (lite0.architecture, lite0.teacher, lite2.architecture) == (
        "tf_efficientnet_lite0",
        "tf_efficientnet_lite2",
        "tf_efficientnet_lite2",
    )
    assert {"geosane:interpolate", "prompt_plus_noise:interpolate", "distillation"} <= set(demo.all_starts())
    assert not {s for s in demo.all_starts() if s.startswith("geosane:")} - {"geosane:interpolate"}  # the default only
    samplers = load_experiment_config("samplers")
    every = {
        f"{kind}:{s}"
        for kind in ("geosane", "prompt_plus_noise")
        for s in ("interpolate", "prompt-noise", "kde", "bootstrap")
    }
    assert every <= set(samplers.all_starts())
    assert (samplers.tasks, samplers.seeds, samplers.finetune) == (demo.tasks, demo.seeds, demo.finetune)
    quick = load_experiment_config("quick")
    assert len(quick.tasks) == 1 and quick.finetune.epochs == 1 and len(quick.seeds) == 2
    subset = demo.select(tasks=["statlog-classification"], starts=["scratch", "geosane"], seeds=[0])
    assert {(k.task, k.start) for k in plan_runs(subset)} == {
        ("statlog-classification", "scratch"),
        ("statlog-classification", "geosane:interpolate"),  # "geosane" alone: the default sampler
    }
    with pytest.raises(ExperimentConfigError, match="Did you mean landsat8-cloud-segmentation"):
        demo.select(tasks=["landsat8-cloud-segmentaton"])


def test_random_subset_keeps_every_class():
    first = load_task(TaskSpec("statlog-classification", max_train=192, max_test=64, subset="first"))
    random = load_task(TaskSpec("statlog-classification", max_train=192, max_test=64))
    assert random.data.train.labels.unique().numel() == 6 > first.data.train.labels.unique().numel()
    assert torch.equal(
        random.data.train.images, load_task(TaskSpec("statlog-classification", 192, 64)).data.train.images
    )


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_exit_codes(model_dir, tmp_path, capsys):
    from geosane_hf.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(
        "tasks: [{name: statlog-classification, max_train: 16, max_test: 16}]\n"
        "targets: [test_resnet]\nstarts: [scratch, geosane:prompt-noise]\nseeds: [0]\nfinetune: {epochs: 1}\n"
    )
    out = str(tmp_path / "out")
    cases = {
        "no model": ["--config", str(config), "--out", out],
        "unknown task": ["--config", str(config), "--out", out, "--tasks", "statlog", "--model", str(model_dir)],
        "unknown start": ["--config", str(config), "--out", out, "--starts", "scrach"],
        "missing config": ["--config", str(tmp_path / "nope.yaml"), "--out", out],
    }
    for what, args in cases.items():
        assert main(["evaluate", *args]) == 2, what
        err = capsys.readouterr().err.strip()
        assert err.startswith("geosane evaluate: error: expected") or "needs a GeoSANE model" in err, err
        assert len(err.splitlines()) == 1 and "Traceback" not in err, what
    assert main(["evaluate", "--config", str(config), "--out", out, "--model", str(model_dir), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| scratch |" in printed and "| geosane:prompt-noise |" in printed


def test_extends_starts_from_a_base_config(tmp_path):
    (tmp_path / "base.yaml").write_text("extends: demo\nname: base\nseeds: [4]\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nname: child\nstarts: [scratch, imagenet_prompt]\n")
    config = ExperimentConfig.from_yaml(child)
    demo = load_experiment_config("demo")
    assert (config.name, config.seeds, config.starts) == ("child", (4,), ("scratch", "imagenet_prompt"))
    assert (config.tasks, config.finetune) == (demo.tasks, demo.finetune)  # the rest from the packaged demo
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ExperimentConfigError, match="without a cycle"):
        ExperimentConfig.from_yaml(tmp_path / "a.yaml")
    (tmp_path / "missing.yaml").write_text("extends: no-such-config\n")
    with pytest.raises(ExperimentConfigError, match="not found"):
        ExperimentConfig.from_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- extends\n")
    with pytest.raises(ExperimentConfigError, match="mapping of settings"):
        ExperimentConfig.from_yaml(tmp_path / "list.yaml")


def test_verdicts_cover_every_baseline_that_exists_for_the_target():
    from geosane_hf.experiments.transfer.report import StartRow, _opponents

    rows = {
        name: StartRow(name, status)
        for name, status in [
            ("scratch", "ok"),
            ("imagenet_prompt", "ok"),
            ("prompt_plus_noise:interpolate", "ok"),
            ("prompt_plus_noise:kde", "ok"),
            ("magnitude_pruning", "failed"),
            ("checkpoint_average", "n/a"),
            ("geosane:kde", "ok"),
            ("geosane:interpolate", "ok"),
        ]
    }
    assert _opponents("interpolate", rows, None) == [
        "scratch",
        "prompt_plus_noise:interpolate",
        "weight_selection",  # always asked for: reported missing when not run
        "imagenet_prompt",
        "magnitude_pruning",  # failed: reported missing
    ]
