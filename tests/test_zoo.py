"""The trained population: architectures, quick zoo quality, strict reloads, resume and determinism."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest
import torch

from geosane_hf.collection import (
    ArchitectureError,
    ZooConfig,
    ZooError,
    build_architecture,
    count_parameters,
    list_architectures,
    load_task_data,
    load_zoo_model,
    plan_population,
    read_zoo_index,
    train_run,
    train_zoo,
    zoo_metrics,
)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def quick_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    return train_zoo(ZooConfig(out, quick=True), progress=False)


@pytest.mark.parametrize(
    ("name", "kwargs", "x", "out_shape"),
    [
        ("statlog_cnn", {"width": 8}, (2, 4, 3, 3), (2, 6)),
        ("tiny_resnet", {"in_chans": 6, "width": 8, "depth": 2}, (2, 6, 16, 16), (2, 2, 16, 16)),
        ("tiny_resnet", {"head": "classification", "num_classes": 3}, (2, 4, 8, 8), (2, 3)),
        ("tiny_mobilenet", {"width": 8, "expand_ratio": 3}, (2, 4, 16, 16), (2, 2, 16, 16)),
        ("tiny_mobilenet", {"head": "classification"}, (2, 4, 8, 8), (2, 2)),
    ],
)
def test_architectures_build_and_reload_strictly(name, kwargs, x, out_shape):
    torch.manual_seed(0)
    model = build_architecture(name, **kwargs).eval()
    inputs = torch.randn(*x)
    assert model(inputs).shape == out_shape
    keys = list(model.state_dict())
    assert all(
        k.split(".")[0] in {"conv1", "bn1", "conv2", "bn2", "head", "stem_conv", "stem_bn", "blocks"} for k in keys
    )
    twin = build_architecture(name, **kwargs).eval()
    twin.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(twin(inputs), model(inputs))


def test_architecture_registry_errors():
    assert {"statlog_cnn", "tiny_resnet", "tiny_mobilenet"} <= set(list_architectures())
    with pytest.raises(ArchitectureError, match="expected an architecture among"):
        build_architecture("resnet9000")
    with pytest.raises(ArchitectureError, match=r"got \['depth'\]"):
        build_architecture("statlog_cnn", depth=2)
    with pytest.raises(ArchitectureError, match="head"):
        build_architecture("tiny_resnet", head="detection")
    with pytest.raises(ArchitectureError, match="width >= 1"):
        build_architecture("statlog_cnn", width=0)


def test_plan_is_prefix_stable_and_seeded():
    short, long = plan_population(4, seed=3), plan_population(12, seed=3)
    assert short == long[:4]
    assert plan_population(4, seed=4) != short
    assert {spec.architecture for spec in long} == {"statlog_cnn", "tiny_resnet", "tiny_mobilenet"}
    assert all(spec.save_epochs[-1] == spec.epochs for spec in long)
    with pytest.raises(ZooError, match="at least one model"):
        plan_population(0)


def test_quick_zoo_beats_chance_clearly(quick_zoo):
    records = quick_zoo.records
    assert len({r["architecture"] for r in records}) >= 2 and len(records) == 12
    statlog = load_task_data("statlog-landsat")
    majority = torch.bincount(statlog.test_y).max().item() / len(statlog.test_y)  # ~0.235
    cloud = load_task_data("landsat8-cloud")
    all_clear = zoo_metrics(_constant(cloud.in_chans, 0), cloud.test_x, cloud.test_y, "segmentation", 2)
    for record in records:
        if record["dataset"] == "statlog-landsat":
            assert record["test_metric"] > majority + 0.4, record["id"]
        else:
            assert record["test_metric"] > all_clear["miou"] + 0.2, record["id"]  # all-clear mIoU ~0.42


def _constant(in_chans: int, label: int) -> torch.nn.Module:
    """A segmentation 'model' that predicts one class everywhere."""

    class Constant(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(x.shape[0], 2, *x.shape[2:])
            logits[:, label] = 1.0
            return logits

    return Constant()


def test_index_records_describe_each_file(quick_zoo):
    index = read_zoo_index(quick_zoo.out_dir)
    assert [r["id"] for r in index["models"]] == sorted(r["id"] for r in quick_zoo.records)
    for record in index["models"]:
        path = quick_zoo.out_dir / record["file"]
        assert _sha(path) == record["sha256"]
        model = build_architecture(record["architecture"], **record["architecture_kwargs"])
        assert count_parameters(model) == record["num_params"]
        assert record["in_chans"] == len(record["bands"]) == len(record["normalization"]["mean"])
        assert record["task"] in {"classification", "segmentation"} and record["sensor"] in {
            "landsat-mss",
            "landsat-8",
        }
        assert {"lr", "weight_decay", "batch_size", "run_epochs"} <= set(record["hyperparameters"])
        assert 1 <= record["epoch"] <= record["hyperparameters"]["run_epochs"]
        assert all(type(v) is float for v in [*record["test_metrics"].values(), *record["train_metrics"].values()])
        if record["task"] == "segmentation":
            assert set(record["test_metrics"]) == {"accuracy", "iou_clear", "iou_cloud", "miou"}


def test_saved_files_load_strictly_and_reproduce_the_recorded_metric(quick_zoo):
    for record in quick_zoo.records:
        model = load_zoo_model(quick_zoo.out_dir, record)
        data = load_task_data(record["dataset"])
        metrics = zoo_metrics(model, data.test_x, data.test_y, data.task, data.num_classes, data.class_names)
        assert metrics == record["test_metrics"]
        assert metrics[record["metric"]] == pytest.approx(record["test_metric"], abs=1e-6), record["id"]


def _weights(out_dir, record) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out_dir / record["file"]))


def test_resume_skips_complete_runs_and_retrains_missing_ones_identically(quick_zoo):
    out = quick_zoo.out_dir
    again = train_zoo(ZooConfig(out, quick=True), progress=False)
    assert (again.trained_runs, again.skipped_runs) == (0, 6)
    assert [r["sha256"] for r in again.records] == [r["sha256"] for r in quick_zoo.records]  # files untouched
    victim, orphan = quick_zoo.records[0], quick_zoo.records[2]
    weights = _weights(out, victim)
    (out / victim["file"]).unlink()
    index = json.loads((out / "index.json").read_text())
    index["models"] = [r for r in index["models"] if r["id"] != orphan["id"]]  # a lost index entry
    (out / "index.json").write_text(json.dumps(index))
    truncated = out / quick_zoo.records[-1]["file"]  # a run killed mid-write elsewhere: garbage bytes
    truncated.write_bytes(truncated.read_bytes()[:100])
    third = train_zoo(ZooConfig(out, quick=True), progress=False)
    assert third.trained_runs == 2  # deleted + truncated; the lost index entry is recovered from the file metadata
    records = {r["id"]: r for r in third.records}
    assert records[orphan["id"]] == {k: v for k, v in orphan.items() if k != "train_seconds"}
    retrained = _weights(out, records[victim["id"]])
    assert weights.keys() == retrained.keys() and all(torch.equal(weights[k], retrained[k]) for k in weights)
    assert records[victim["id"]]["test_metric"] == victim["test_metric"]
    assert all(_sha(out / r["file"]) == r["sha256"] for r in third.records)
    assert [r["id"] for r in read_zoo_index(out)["models"]] == sorted(records)
    with pytest.raises(ZooError, match="another --out folder"):
        train_zoo(ZooConfig(out, quick=True, seed=1), progress=False)


def test_training_is_deterministic_given_the_seed():
    spec = plan_population(1, seed=5, quick=True)[0]
    first, second = train_run(spec), train_run(spec)
    other = train_run(replace(spec, seed=spec.seed + 1))
    for a, b, c in zip(first, second, other, strict=True):
        assert a.state_dict.keys() == b.state_dict.keys()
        assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
        assert not torch.equal(a.state_dict["conv1.weight"], c.state_dict["conv1.weight"])


def test_cli_zoo_train(tmp_path, capsys):
    from geosane_hf.cli import main

    assert main(["zoo", "train", "--out", str(tmp_path), "--quick", "--num-models", "1", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 models from 1 runs" in out and "statlog_cnn" in out
    assert main(["zoo", "train", "--out", str(tmp_path), "--quick", "--checkpoints-per-run", "0"]) == 2


@pytest.mark.slow
def test_worker_processes_give_the_same_weights(tmp_path, quick_zoo):
    result = train_zoo(ZooConfig(tmp_path, quick=True, workers=2), progress=False)
    assert [r["id"] for r in result.records] == [r["id"] for r in quick_zoo.records]
    for ours, theirs in zip(result.records, quick_zoo.records, strict=True):
        a, b = _weights(tmp_path, ours), _weights(quick_zoo.out_dir, theirs)
        assert all(torch.equal(a[k], b[k]) for k in a) and ours["test_metric"] == theirs["test_metric"]
