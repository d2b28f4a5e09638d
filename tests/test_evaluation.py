"""Evaluation tasks, local metric modules and the shared fine-tuning loop, on tiny slices of the real packaged data."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from geosane_hf.evaluation import (
    BandMismatchError,
    EmptySplitError,
    EvaluationError,
    FinetuneConfig,
    LabelRangeError,
    TargetArch,
    Task,
    UnknownTaskError,
    data_from_arrays,
    data_from_dataset,
    data_from_folder,
    evaluate_model,
    finetune,
    get_task_config,
    kd_loss,
    load_metric,
    load_task_data,
    metric_path,
    scratch,
)
from geosane_hf.evaluation.metrics import UnknownMetricError

TINY = FinetuneConfig(epochs=1, batch_size=8, progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# ------------------------------------------------------------------------------------------- metrics vs hand values


def test_accuracy_f1_matches_hand_computed_values():
    # refs  0 1 1 2 2 0 / preds 0 0 1 2 2 2: class 0 TP 1 FP 1 FN 1 -> F1 1/2; class 1 TP 1 FP 0 FN 1 -> 2/3;
    # class 2 TP 2 FP 1 FN 0 -> 4/5. Accuracy 4/6; recalls 1/2, 1/2, 1 -> balanced 2/3.
    out = load_metric("accuracy_f1").compute(predictions=[0, 0, 1, 2, 2, 2], references=[0, 1, 1, 2, 2, 0])
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["f1_macro"] == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 3)
    assert out["balanced_accuracy"] == pytest.approx(2 / 3)


def test_mean_iou_matches_hand_computed_values_and_ignores_index():
    # image 1: refs 0 0 1 1 / preds 0 1 1 1; image 2: refs 1 255 0 / preds 0 0 0 (255 dropped).
    # class 0: I = 1 + 1 = 2, U = |{p0 or r0}| = 2 (img1) + 2 (img2) = 4 -> 0.5; class 1: I = 2, U = 3 + 1 = 4 -> 0.5.
    out = load_metric("mean_iou").compute(
        predictions=[[0, 1, 1, 1], [0, 0, 0]], references=[[0, 0, 1, 1], [1, 255, 0]], num_classes=2
    )
    assert out["per_class_iou"] == pytest.approx([0.5, 0.5])
    assert out["mean_iou"] == pytest.approx(0.5)
    assert out["pixel_accuracy"] == pytest.approx(4 / 6)
    # Dataset-level, not the mean of per-image mIoU (which would be (7/12 + 1/4) / 2 here).
    assert out["mean_iou"] != pytest.approx((7 / 12 + 0.25) / 2)
    # A class absent from both predictions and references is left out of the mean.
    out3 = load_metric("mean_iou").compute(predictions=[[0, 1]], references=[[0, 1]], num_classes=3)
    assert out3["mean_iou"] == pytest.approx(1.0) and math.isnan(out3["per_class_iou"][2])


def test_map50_matches_hand_computed_values():
    metric = load_metric("map50")
    a, b = [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]
    near = [1.0, 1.0, 11.0, 11.0]  # IoU with a = 81 / 119 = 0.68 > 0.5: a hit
    perfect = metric.compute(
        predictions=[{"boxes": [near], "scores": [0.9], "labels": [0]}], references=[{"boxes": [a], "labels": [0]}]
    )
    assert perfect["map_50"] == pytest.approx(1.0)
    # 1 of 2 boxes found at precision 1: 101-point AP = 51 / 101.
    half = metric.compute(
        predictions=[{"boxes": [a], "scores": [0.9], "labels": [0]}], references=[{"boxes": [a, b], "labels": [0, 0]}]
    )
    assert half["map_50"] == pytest.approx(51 / 101, abs=1e-6)
    # A false positive ranked above the only hit: precision 1/2 at every recall -> AP 0.5.
    fp_first = metric.compute(
        predictions=[{"boxes": [b, a], "scores": [0.9, 0.8], "labels": [0, 0]}],
        references=[{"boxes": [a], "labels": [0]}],
    )
    assert fp_first["map_50"] == pytest.approx(0.5, abs=1e-6)


def test_metric_modules_are_local_files():
    for name in ("accuracy_f1", "mean_iou", "map50"):
        assert metric_path(name).is_file()
    with pytest.raises(UnknownMetricError, match="expected a metric among"):
        metric_path("bleu")


@pytest.mark.slow
def test_metrics_load_with_hub_offline():
    code = (
        "from geosane_hf.evaluation.metrics import load_metric\n"
        "print(load_metric('accuracy_f1').compute(predictions=[1, 1], references=[1, 0])['accuracy'])\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0.5"


# ------------------------------------------------------------------------------------------- tasks on tiny slices


@pytest.mark.parametrize(
    ("name", "n_train", "n_test", "arch"),
    [
        ("statlog-classification", 32, 32, "test_resnet"),
        ("landsat8-cloudy-classification", 16, 16, "test_efficientnet"),
        ("landsat8-cloud-segmentation", 8, 4, "test_resnet"),
        ("spacenet-building-segmentation", 8, 4, "test_efficientnet"),
        ("spacenet-building-detection", 4, 2, "test_resnet"),
    ],
)
def test_each_task_trains_and_evaluates_on_a_tiny_slice(name, n_train, n_test, arch):
    task = Task.from_name(name, max_train=n_train, max_test=n_test)
    start = scratch(task.target_for(arch), seed=0)
    before = {k: v.clone() for k, v in start.state_dict.items()}
    model = task.build_model(start.target, start.state_dict)
    first = task.backbone_prefix + next(iter(start.state_dict))  # the stem conv, inside the task model
    stem_before = model.state_dict()[first].clone()
    result = finetune(model, task, FinetuneConfig(epochs=1, batch_size=4, progress=False))
    assert (
        len(result.history) == 1 and math.isfinite(result.history[0].train_loss) and result.history[0].train_loss > 0
    )
    assert 0.0 <= result.score <= 1.0
    assert set(result.final_metrics) >= {task.primary_metric}
    assert result.notes["train_samples"] == n_train and result.notes["test_samples"] == n_test
    assert not torch.equal(model.state_dict()[first], stem_before)  # the backbone trained
    assert all(torch.equal(before[k], start.state_dict[k]) for k in before)  # the start was not modified in place


def test_statlog_is_upsampled_and_training_lowers_the_loss():
    task = Task.from_name("statlog-classification", max_train=48, max_test=48)
    images, labels = task.batch(task.data.train, torch.arange(4), torch.device("cpu"))
    assert images.shape == (4, 4, 32, 32) and labels.shape == (4,)
    model = scratch(task.target_for("test_resnet")).build()
    result = finetune(model, task, FinetuneConfig(epochs=3, batch_size=16, lr=3e-3, progress=False))
    losses = [h.train_loss for h in result.history]
    assert losses[-1] < losses[0]
    assert result.score > result.initial_metrics["f1_macro"]


def test_collection_architectures_run_at_native_resolution():
    # The zoo experiment's path: a population CNN on 3x3 Statlog patches (no upsampling), and a collection
    # segmentation model used as its own segmenter.
    task = Task.from_name("statlog-classification", input_size=3, max_train=256, max_test=128)
    target = task.target_for("statlog_cnn", "collection", width=8)
    result = finetune(scratch(target).build(), task, FinetuneConfig(epochs=2, batch_size=32, lr=3e-3, progress=False))
    assert result.score > result.initial_metrics["f1_macro"]
    seg = Task.from_name("landsat8-cloud-segmentation", max_train=4, max_test=2)
    seg_target = seg.target_for("tiny_resnet", "collection", width=4, depth=1, head="segmentation")
    assert seg.build_model(seg_target, scratch(seg_target).state_dict)(seg.data.test.images).shape == (2, 2, 32, 32)
    with pytest.raises(EvaluationError, match="head='segmentation'"):
        seg.build_model(
            seg.target_for("statlog_cnn", "collection"),
            scratch(seg.target_for("statlog_cnn", "collection")).state_dict,
        )


def test_finetune_is_deterministic_for_a_seed():
    task = Task.from_name("statlog-classification", max_train=16, max_test=16)
    runs = [finetune(scratch(task.target_for("test_resnet")).build(), task, TINY) for _ in range(2)]
    assert runs[0].history[0].train_loss == runs[1].history[0].train_loss
    assert runs[0].final_metrics == runs[1].final_metrics


def test_spacenet_and_landsat_builtins_have_real_labels_and_spatial_splits():
    boxes = load_task_data("spacenet-boxes")
    assert boxes.in_chans == 1 and boxes.num_classes == 1
    assert sum(len(b) for b in boxes.train.boxes) > 10 and sum(len(b) for b in boxes.test.boxes) > 5
    seg = load_task_data("spacenet-buildings")
    fraction = float(seg.train.masks.float().mean())
    assert 0.01 < fraction < 0.2  # buildings are a few % of the sample
    clouds = load_task_data("landsat8-clouds")
    assert set(np.unique(clouds.train.masks.numpy())) == {0, 1}


def test_distillation_loss_in_the_loop():
    assert float(kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), 4.0)) == 0.0
    assert float(kd_loss(torch.zeros(2, 3), torch.tensor([[5.0, 0, 0], [0, 5.0, 0]]), 1.0)) > 0.1
    task = Task.from_name("statlog-classification", max_train=16, max_test=16)
    teacher = scratch(task.target_for("test_resnet"), seed=5).build()
    plain = finetune(scratch(task.target_for("test_resnet")).build(), task, TINY)
    distilled = finetune(scratch(task.target_for("test_resnet")).build(), task, TINY, teacher=teacher)
    assert plain.history[0].train_loss != distilled.history[0].train_loss
    x = np.zeros((2, 4, 32, 32), np.float32)
    boxes = ([[[1.0, 1.0, 9.0, 9.0]]] * 2, [[0]] * 2)
    det = Task.custom(
        data_from_arrays("det", "detection", x, x, num_classes=1, train_targets=boxes, test_targets=boxes)
    )
    with pytest.raises(EvaluationError, match="distillation"):
        finetune(teacher, det, TINY, teacher=teacher)


def test_evaluate_model_from_state_dict_and_target():
    task = Task.from_name("statlog-classification", max_train=8, max_test=24)
    target = task.target_for("test_resnet")
    metrics = evaluate_model(task, target=target, state_dict=scratch(target).state_dict)
    assert set(metrics) == {"accuracy", "f1_macro", "balanced_accuracy"}
    with pytest.raises(EvaluationError, match="expected a model"):
        evaluate_model(task)


# ------------------------------------------------------------------------------------------- user data


def test_folder_of_npy_patches_is_a_classification_task(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (tmp_path / split / "images").mkdir(parents=True)
        rows = ["file,label"]
        for i in range(6):
            np.save(tmp_path / split / "images" / f"p{i}.npy", rng.normal(size=(3, 8, 8)).astype(np.float32))
            rows.append(f"p{i}.npy,{i % 3}")
        (tmp_path / split / "labels.csv").write_text("\n".join(rows))
    data = data_from_folder(tmp_path)
    assert data.num_classes == 3 and data.in_chans == 3 and len(data.train) == 6
    assert data.train.labels.tolist() == [0, 1, 2, 0, 1, 2]
    task = Task.custom(data)
    assert task.config.input_size == 32
    result = finetune(scratch(task.target_for("test_resnet")).build(), task, TINY)
    assert 0.0 <= result.score <= 1.0


def test_folder_segmentation_and_missing_folder(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "masks").mkdir(parents=True)
        for i in range(2):
            np.save(tmp_path / split / "images" / f"t{i}.npy", np.ones((2, 16, 16), np.float32) * i)
            np.save(tmp_path / split / "masks" / f"t{i}.npy", np.eye(16, dtype=np.int64))
    data = data_from_folder(tmp_path, kind="segmentation")
    assert data.train.masks.shape == (2, 16, 16) and data.num_classes == 2
    with pytest.raises(FileNotFoundError, match="expected a folder of patches"):
        data_from_folder(tmp_path / "nope")


def test_datasets_dataset_is_a_classification_task():
    import datasets

    x = np.random.default_rng(0).normal(size=(4, 5, 8, 8)).astype(np.float32)
    features = datasets.Features(
        {"image": datasets.Array3D((5, 8, 8), "float32"), "label": datasets.ClassLabel(names=["a", "b", "c"])}
    )
    ds = datasets.Dataset.from_dict({"image": list(x), "label": [0, 1, 2, 0]}, features=features)
    data = data_from_dataset(ds, ds)
    assert data.num_classes == 3 and data.class_names == ("a", "b", "c") and data.in_chans == 5


# ------------------------------------------------------------------------------------------- bad input


def _arrays(labels, n=4, bands=2):
    x = np.random.default_rng(0).normal(size=(n, bands, 8, 8)).astype(np.float32)
    return x, labels


def test_labels_out_of_range_are_rejected():
    x, _ = _arrays(None)
    with pytest.raises(LabelRangeError, match=r"in \[0, 2\).*got values in \[0, 5\]"):
        data_from_arrays(
            "bad", "classification", x, x, num_classes=2, train_targets=[0, 1, 5, 0], test_targets=[0, 1, 1, 0]
        )
    with pytest.raises(LabelRangeError):
        data_from_arrays(
            "bad",
            "segmentation",
            x,
            x,
            num_classes=2,
            train_targets=np.full((4, 8, 8), 3),
            test_targets=np.zeros((4, 8, 8)),
        )
    # ignore_index is allowed in masks.
    data_from_arrays(
        "ok",
        "segmentation",
        x,
        x,
        num_classes=2,
        train_targets=np.full((4, 8, 8), 255),
        test_targets=np.zeros((4, 8, 8)),
    )


def test_empty_split_is_rejected():
    x, _ = _arrays(None)
    with pytest.raises(EmptySplitError, match="non-empty test split"):
        data_from_arrays(
            "empty", "classification", x, x[:0], num_classes=2, train_targets=[0, 1, 0, 1], test_targets=[]
        )


def test_band_count_mismatch_is_rejected():
    task = Task.from_name("statlog-classification", max_train=8, max_test=8)
    with pytest.raises(BandMismatchError, match=r"expected a model with 4 input bands.*got in_chans=3"):
        task.build_model(TargetArch("test_resnet", 3, 6), scratch(TargetArch("test_resnet", 3, 6)).state_dict)
    with pytest.raises(BandMismatchError, match="taking 4 bands"):
        finetune(scratch(TargetArch("test_resnet", 3, 6)).build(), task, TINY)
    x, _ = _arrays(None)
    with pytest.raises(BandMismatchError):
        data_from_arrays(
            "bands",
            "classification",
            x,
            x[:, :1],
            num_classes=2,
            train_targets=[0, 1, 0, 1],
            test_targets=[0, 1, 0, 1],
        )


def test_unknown_task_and_data_names_are_rejected():
    with pytest.raises(UnknownTaskError, match="Did you mean statlog-classification"):
        get_task_config("statlog-clasification")
    with pytest.raises(UnknownTaskError, match="expected a built-in data set"):
        load_task_data("eurosat")
    with pytest.raises(EvaluationError, match="expected a timm model name"):
        TargetArch("not_a_model", 3, 2).create()
    with pytest.raises(EvaluationError, match="expected epochs >= 0"):
        FinetuneConfig(batch_size=0)


def test_a_trailing_one_sample_batch_is_skipped():
    # 9 samples at batch 8: the last batch holds 1 sample, which BatchNorm cannot train on (1x1 maps at 32x32).
    task = Task.from_name("statlog-classification", max_train=9, max_test=4)
    result = finetune(scratch(task.target_for("test_resnet")).build(), task, TINY)
    assert math.isfinite(result.history[0].train_loss)


# ------------------------------------------------------------------------------------------- capped task data


def _sorted_by_class(counts: list[int]) -> object:
    labels = torch.cat([torch.full((n,), k) for k, n in enumerate(counts)])  # sorted, like Statlog's file
    images = torch.arange(len(labels), dtype=torch.float32)[:, None, None, None].expand(-1, 2, 4, 4).contiguous()
    return data_from_arrays(
        "sorted",
        "classification",
        images.numpy(),
        images.numpy(),
        num_classes=len(counts),
        train_targets=labels.numpy(),
        test_targets=labels.numpy(),
        normalize=False,
    )


def test_capped_classification_data_keeps_every_class_in_proportion():
    data = _sorted_by_class([60, 20, 10, 10]).slice(20, 10)
    train = data.train.labels.bincount(minlength=4).tolist()
    assert train == [12, 4, 2, 2]  # 60/20/10/10 of 100, scaled to 20
    assert sorted(set(data.test.labels.tolist())) == [0, 1, 2, 3]
    ids = data.train.images[:, 0, 0, 0]
    assert torch.equal(ids, ids.sort().values)  # original order kept
    assert torch.equal(data.train.labels, data.train.labels.sort().values)


def test_capped_data_is_deterministic_and_seeded():
    data = _sorted_by_class([30, 30, 30])
    a, b, c = data.slice(9, 9), data.slice(9, 9), data.slice(9, 9, seed=5)
    assert torch.equal(a.train.images, b.train.images)
    assert not torch.equal(a.train.images, c.train.images)


def test_a_cap_at_the_class_count_keeps_every_rare_class():
    data = _sorted_by_class([97, 1, 1, 1]).slice(4, 100)
    assert sorted(data.train.labels.tolist()) == [0, 1, 2, 3]


def test_a_cap_below_the_class_count_takes_the_largest_classes_first():
    data = _sorted_by_class([50, 30, 15, 5]).slice(2, 100)
    assert sorted(data.train.labels.tolist()) == [0, 1]
    assert len(data.test) == 100  # a cap at or above the split's size keeps it whole


@pytest.mark.parametrize("cap", [0, -3, 2.5, True])
def test_a_cap_that_is_not_a_positive_int_is_refused(cap):
    with pytest.raises(EvaluationError, match="expected a positive int cap for the train split"):
        Task.from_name("statlog-classification", max_train=cap)


def test_statlog_capped_as_in_the_demo_covers_all_six_classes():
    data = load_task_data("statlog").slice(192, 300)
    assert data.train.labels.unique().tolist() == list(range(6))
    assert data.test.labels.unique().tolist() == list(range(6))


@pytest.mark.parametrize(
    ("name", "arch"),
    [("statlog-classification", "test_resnet"), ("landsat8-cloud-segmentation", "test_resnet")],
)
def test_linear_probe_trains_only_the_head_then_every_weight(name, arch):
    task = Task.from_name(name, max_train=16, max_test=8)
    target = task.target_for(arch)
    model = task.build_model(target, scratch(target, 0).state_dict)
    head = set(task.head_parameter_names(model))
    assert head and len(head) < len(dict(model.named_parameters()))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    probe = finetune(model, task, FinetuneConfig(epochs=0, probe_epochs=2, batch_size=8, progress=False))
    moved = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert moved and moved <= head, sorted(moved - head)[:3]  # the backbone stayed frozen
    assert all(p.requires_grad for p in model.parameters())  # unfrozen afterwards
    assert [h.phase for h in probe.history] == ["probe", "probe"] and probe.final_metrics == probe.history[-1].metrics
    both = finetune(model, task, FinetuneConfig(epochs=1, probe_epochs=1, batch_size=8, progress=False))
    assert [(h.epoch, h.phase) for h in both.history] == [(1, "probe"), (2, "finetune")]
    assert any(not torch.equal(v, before[k]) for k, v in model.named_parameters() if k not in head)


def test_probe_settings_are_checked():
    with pytest.raises(EvaluationError, match="probe_epochs >= 0"):
        FinetuneConfig(probe_epochs=-1)
    with pytest.raises(EvaluationError, match="probe_lr > 0"):
        FinetuneConfig(probe_lr=0.0)


@pytest.mark.parametrize(
    ("name", "arch"),
    [
        ("statlog-classification", "test_resnet"),
        ("landsat8-cloud-segmentation", "test_resnet"),
        ("spacenet-building-detection", "test_resnet"),
    ],
)
def test_bn_calibration_gives_every_start_the_same_statistics(name, arch):
    task = Task.from_name(name, max_train=8, max_test=4)
    target = task.target_for(arch)
    config = FinetuneConfig(epochs=0, bn_calibration=8, progress=False)
    stats = []
    for seed in (0, 1):  # two different starts: their weights differ, so must their calibrated statistics
        model = task.build_model(target, scratch(target, seed).state_dict)
        result = finetune(model, task, config)
        assert result.notes["bn_calibration_images"] == 8
        prefix = task.backbone_prefix
        stats.append({k: v.clone() for k, v in model.state_dict().items() if k.startswith(prefix) and "running_" in k})
    assert stats[0] and all(not torch.equal(stats[0][k], stats[1][k]) for k in stats[0] if "running_mean" in k)
    # the same start twice: the same statistics (a seeded subset), and different from the untouched ones
    again = task.build_model(target, scratch(target, 1).state_dict)
    untouched = {k: v.clone() for k, v in again.state_dict().items() if k in stats[1]}
    finetune(again, task, config)
    assert all(torch.equal(again.state_dict()[k], stats[1][k]) for k in stats[1])
    assert any(not torch.equal(untouched[k], stats[1][k]) for k in stats[1])
    with pytest.raises(EvaluationError, match="bn_calibration >= 0"):
        FinetuneConfig(bn_calibration=-1)


def test_calibrating_on_no_images_is_refused():
    from geosane_hf.evaluation.finetune import calibrate_backbone

    task = Task.from_name("statlog-classification", max_train=8, max_test=4)
    model = scratch(task.target_for("test_resnet")).build()
    with pytest.raises(EvaluationError, match="at least 1 calibration image"):
        calibrate_backbone(model, task, 0)


def test_lerp_state_dicts_refuses_different_layouts():
    from geosane_hf.evaluation.starts import StartError, lerp_state_dicts

    a = {"w": torch.zeros(2, 3), "b": torch.zeros(2)}
    assert torch.equal(
        lerp_state_dicts(a, {"w": torch.ones(2, 3), "b": torch.ones(2)}, 0.5)["w"], torch.full((2, 3), 0.5)
    )
    with pytest.raises(StartError, match="same keys"):
        lerp_state_dicts(a, {"w": torch.ones(2, 3)}, 0.5)
    with pytest.raises(StartError, match=r"w: \(2, 3\) vs \(3, 2\)"):
        lerp_state_dicts(a, {"w": torch.ones(3, 2), "b": torch.ones(2)}, 0.5)
