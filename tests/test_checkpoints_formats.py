"""Tests of safe checkpoint loading: PyTorch files (malicious pickles refused), ONNX, numpy .npz and timm."""

from __future__ import annotations

import builtins
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_helpers import assert_same, file_sha256, mixed_state_dict

from geosane_hf.checkpoints import (
    CheckpointError,
    load_checkpoint,
    onnx_parameter_name,
)
from geosane_hf.packaged import find_packaged

# ---------------------------------------------------------------------------------------------------------------
# PyTorch files
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wrap", "container"),
    [
        (lambda sd: sd, None),
        (lambda sd: {"state_dict": sd, "epoch": 3}, "state_dict"),
        (lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {"state": {}}, "epoch": 1}, "model_state_dict"),
        (lambda sd: {"model": sd, "args": {"lr": 0.1}}, "model"),
        (
            lambda sd: {  # a Lightning checkpoint (plain-dict hyper-parameters)
                "epoch": 4,
                "global_step": 120,
                "pytorch-lightning_version": "2.5.0",
                "state_dict": sd,
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.001}]}],
                "lr_schedulers": [],
                "callbacks": {},
                "hyper_parameters": {"hidden": 32},
            },
            "state_dict",
        ),
    ],
    ids=["plain", "state_dict", "model_state_dict", "model", "lightning"],
)
def test_torch_checkpoints_unwrap_containers(tmp_path, wrap, container):
    sd = mixed_state_dict()
    path = tmp_path / "ckpt.pt"
    torch.save(wrap(sd), path)
    ckpt = load_checkpoint(path)
    assert_same(ckpt.state_dict, sd)
    assert ckpt.metadata.format == "torch"
    assert ckpt.metadata.extra.get("container") == container
    assert ckpt.metadata.sha256 == file_sha256(path)


def test_torch_checkpoint_drops_non_tensors_strips_ddp_prefix_and_reads_legacy_format(tmp_path):
    path = tmp_path / "ddp.pth"
    torch.save(
        {"module.fc.weight": torch.ones(2, 2), "module.fc.bias": torch.zeros(2), "step": 5},
        path,
        _use_new_zipfile_serialization=False,
    )
    ckpt = load_checkpoint(path)
    assert list(ckpt.state_dict) == ["fc.weight", "fc.bias"]
    assert ckpt.metadata.extra["stripped_prefix"] == "module."
    assert ckpt.metadata.extra["dropped_non_tensor_keys"] == ["step"]


def _marker_writer(kind: str, marker: Path):
    class Evil:
        def __reduce__(self):
            if kind == "os.system":
                return (os.system, (f"touch {marker}",))
            return (builtins.open, (str(marker), "w"))

    return Evil()


@pytest.mark.parametrize("kind", ["os.system", "builtins.open"])
@pytest.mark.parametrize("container", ["torch.save", "raw-pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, kind, container):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    payload = {"weight": torch.ones(2), "evil": _marker_writer(kind, marker)}
    if container == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload["evil"], protocol=2))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert "arbitrary code" in message and "safetensors" in message
    assert not marker.exists()


def test_pickled_module_is_refused(tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(CheckpointError, match=r"arbitrary code.*torch\.nn\.modules\.linear\.Linear"):
        load_checkpoint(path)


def test_garbage_pickle_is_reported_as_corrupt_not_as_code(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"\x80\x02\xff\xff\xff not a pickle")
    with pytest.raises(CheckpointError, match=r"invalid pickle data \(Unsupported operand 255\)") as info:
        load_checkpoint(path)
    assert "arbitrary code" not in str(info.value) and "re-download" in str(info.value)


def test_truncated_torch_file(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save({"w": torch.randn(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_real_packaged_pth_loads_in_order():
    path = find_packaged("mobilenet_v2-imagenet")
    ckpt = load_checkpoint(path)
    import torchvision

    reference = torchvision.models.mobilenet_v2().state_dict()
    assert list(ckpt.state_dict) == list(reference)
    assert ckpt.metadata.dtypes == {"float32": 262, "int64": 52}


# ---------------------------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------------------------


def _tiny_onnx(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    arrays = {
        "onnx::Conv_11": rng.standard_normal((4, 3, 3, 3)).astype(np.float16),
        "onnx::Conv_12": rng.standard_normal(4).astype(np.float16),
        "onnx::Conv_13": rng.standard_normal((4, 4, 1, 1)).astype(np.float16),  # a second node with the same scope
        "encoder.bn1.weight": rng.random(4).astype(np.float16),  # already a parameter name: kept
        "onnx::BN_2": rng.standard_normal(4).astype(np.float16),
        "onnx::BN_3": rng.standard_normal(4).astype(np.float16),
        "onnx::BN_4": rng.random(4).astype(np.float16),
        "shape_const": np.array([1, -1], dtype=np.int64),  # not a weight: dropped
        "onnx::MatMul_20": rng.standard_normal((4, 5)).astype(np.float32),
        "/head/fc/Constant_output_0": rng.standard_normal(5).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "onnx::Conv_11", "onnx::Conv_12"], ["c1"], name="/encoder/conv_stem/Conv"),
        helper.make_node("Conv", ["c1", "onnx::Conv_13"], ["c2"], name="/encoder/conv_stem/Conv_1"),
        helper.make_node(
            "BatchNormalization",
            ["c2", "encoder.bn1.weight", "onnx::BN_2", "onnx::BN_3", "onnx::BN_4"],
            ["b1"],
            name="/encoder/bn1/BatchNormalization",
        ),
        helper.make_node("GlobalAveragePool", ["b1"], ["p"], name="/pool/GlobalAveragePool"),
        helper.make_node("Reshape", ["p", "shape_const"], ["f"], name="/Reshape"),
        helper.make_node("MatMul", ["f", "onnx::MatMul_20"], ["m"], name="/head/fc/MatMul"),
        helper.make_node("Add", ["/head/fc/Constant_output_0", "m"], ["y"], name="/head/fc/Add"),
    ]
    # initializers listed in an order different from the graph order
    inits = [numpy_helper.from_array(arrays[k], k) for k in reversed(list(arrays))]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        initializer=inits,
    )
    onnx.save(helper.make_model(graph, producer_name="test"), str(path))
    return arrays


def test_onnx_names_are_sensible_unique_in_graph_order_and_fp16_is_kept(tmp_path):
    path = tmp_path / "tiny.onnx"
    arrays = _tiny_onnx(path)
    ckpt = load_checkpoint(path)
    expected_names = {
        "encoder.conv_stem.weight": "onnx::Conv_11",
        "encoder.conv_stem.bias": "onnx::Conv_12",
        "encoder.conv_stem.weight_1": "onnx::Conv_13",
        "encoder.bn1.weight": "encoder.bn1.weight",
        "encoder.bn1.bias": "onnx::BN_2",
        "encoder.bn1.running_mean": "onnx::BN_3",
        "encoder.bn1.running_var": "onnx::BN_4",
        "head.fc.weight": "onnx::MatMul_20",
        "head.fc.bias": "/head/fc/Constant_output_0",
    }
    assert list(ckpt.state_dict) == list(expected_names)
    assert ckpt.metadata.extra["onnx_names"] == expected_names
    assert ckpt.metadata.extra["dropped_non_float_initializers"] == ["shape_const"]
    for name, original in expected_names.items():
        tensor = ckpt.state_dict[name]
        assert tensor.dtype == torch.from_numpy(arrays[original]).dtype
        assert torch.equal(tensor, torch.from_numpy(arrays[original]))
    assert ckpt.metadata.dtypes == {"float16": 7, "float32": 2}
    assert ckpt.metadata.format == "onnx"


def test_onnx_parameter_name_rules():
    assert onnx_parameter_name("onnx::Conv_7", "/encoder/conv_stem/Conv", "Conv", 1, 0) == "encoder.conv_stem.weight"
    # PyTorch exporter scopes repeat the parent: conv1/conv1.0 is the module conv1.0
    assert (
        onnx_parameter_name("onnx::Conv_8", "/model/decoder/blocks.4/conv1/conv1.0/Conv", "Conv", 2, 3)
        == "model.decoder.blocks.4.conv1.0.bias"
    )
    assert onnx_parameter_name("onnx::Gemm_3", "", "Gemm", 1, 42) == "gemm_42.weight"
    assert onnx_parameter_name("onnx::Resize_9", "/up/Resize", "Resize", 2, 1) == "up.resize_2"


def test_real_onnx_names_match_the_pytorch_state_dict_even_when_anonymised(tmp_path):
    import onnx

    path = find_packaged("ukis-csmask-4b-l1c")
    ckpt = load_checkpoint(path)
    model = onnx.load(str(path))
    original_names = [init.name for init in model.graph.initializer]
    assert list(ckpt.state_dict) == original_names  # PyTorch names kept, in graph order
    assert list(ckpt.state_dict)[:2] == ["model.encoder._conv_stem.weight", "model.encoder._bn0.weight"]
    assert ckpt.metadata.dtypes == {"float16": 655}
    assert ckpt.metadata.num_parameters == 19_543_611

    # Strip every name (as exporters without parameter names do): the node scopes give the same names back.
    rename = {name: f"onnx::Init_{i}" for i, name in enumerate(original_names)}
    for init in model.graph.initializer:
        init.name = rename[init.name]
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    anonymous = tmp_path / "anonymous.onnx"
    onnx.save(model, str(anonymous))
    derived = load_checkpoint(anonymous)
    assert list(derived.state_dict) == original_names
    assert derived.metadata.extra["onnx_renamed"] == 655
    for name in (
        "model.encoder._conv_stem.weight",
        "model.decoder.blocks.4.conv1.1.running_var",
        "model.segmentation_head.0.bias",
    ):
        assert torch.equal(derived.state_dict[name], ckpt.state_dict[name])


def test_onnx_without_the_package_says_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "tiny.onnx"
    _tiny_onnx(path)
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)
    with pytest.raises(CheckpointError, match="pip install 'onnx"):
        load_checkpoint(path)


def test_corrupt_onnx(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x08\x07garbage that is not protobuf \xff\xff\xff")
    with pytest.raises(CheckpointError, match="re-download or re-export"):
        load_checkpoint(path)


# ---------------------------------------------------------------------------------------------------------------
# numpy .npz
# ---------------------------------------------------------------------------------------------------------------


def test_npz_keys_order_and_dtypes(tmp_path):
    path = tmp_path / "w.npz"
    arrays = {
        "enc/conv/weight": np.ones((2, 3), np.float16),
        "enc/conv/bias": np.zeros(2, np.float32),
        "config_dim": np.array([256], np.int32),
    }
    np.savez(path, **arrays)
    ckpt = load_checkpoint(path)
    assert list(ckpt.state_dict) == ["enc.conv.weight", "enc.conv.bias", "config_dim"]
    assert ckpt.state_dict["enc.conv.weight"].dtype == torch.float16
    assert ckpt.metadata.extra["npz_names"] == {"enc.conv.weight": "enc/conv/weight", "enc.conv.bias": "enc/conv/bias"}
    assert ckpt.metadata.num_parameters == 8 and ckpt.metadata.format == "npz"


def test_npz_object_arrays_are_refused_and_name_clashes_reported(tmp_path):
    evil = tmp_path / "obj.npz"
    np.savez(evil, w=np.ones(2), meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="pickled object array"):
        load_checkpoint(evil)
    clash = tmp_path / "clash.npz"
    np.savez(clash, **{"a/b": np.ones(1), "a.b": np.ones(1)})
    with pytest.raises(CheckpointError, match=r"both map to 'a\.b'"):
        load_checkpoint(clash)


def test_real_geoembed_npz():
    ckpt = load_checkpoint(find_packaged("geoembed-v3"))
    keys = list(ckpt.state_dict)
    assert keys[:4] == ["embed_dim", "base_channels", "pool_size", "bb.stem.0.weight"]
    assert keys[-2:] == ["fc.weight", "fc.bias"]
    assert ckpt.metadata.num_parameters == 13_275_840
    assert ckpt.metadata.dtypes == {"int32": 3, "float32": 102}


# ---------------------------------------------------------------------------------------------------------------
# timm
# ---------------------------------------------------------------------------------------------------------------


def test_timm_random_init_offline_seeded_and_with_kwargs():
    import timm

    a = load_checkpoint("timm:test_vit", seed=1)
    b = load_checkpoint("test_vit", seed=1)  # bare registry name
    c = load_checkpoint("timm:test_vit", seed=2)
    reference = timm.create_model("test_vit", pretrained=False).state_dict()
    assert list(a.state_dict) == list(reference)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in reference)
    assert not torch.equal(a.state_dict["head.weight"], c.state_dict["head.weight"])
    assert a.metadata.format == "timm" and a.metadata.architecture == "test_vit" and a.metadata.path is None
    four_band = load_checkpoint("timm:test_resnet", in_chans=4, num_classes=3)
    assert four_band.state_dict["conv1.0.weight"].shape[1] == 4
    assert four_band.state_dict["fc.weight"].shape[0] == 3


@pytest.mark.parametrize(
    ("source", "suggestion"), [("resnet5O", "resnet50"), ("timm:vit_base_patch16_22", "vit_base_patch16_224")]
)
def test_unknown_timm_name_suggests_close_names(source, suggestion):
    with pytest.raises(CheckpointError, match="Did you mean") as info:
        load_checkpoint(source)
    assert suggestion in str(info.value)
