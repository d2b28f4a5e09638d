"""Tests for geosane_hf.checkpoints: every source type, key order, laziness and every bad input."""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import pickle
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from geosane_hf import checkpoints as ck
from geosane_hf.checkpoints import (
    CheckpointError,
    CheckpointNotFoundError,
    LazySafetensorsStateDict,
    TensorSpec,
    load_checkpoint,
    onnx_parameter_name,
    save_safetensors,
)
from geosane_hf.packaged import find_packaged


def _mixed_state_dict() -> dict[str, torch.Tensor]:
    """Keys deliberately not sorted, several dtypes, a 0-d tensor."""
    g = torch.Generator().manual_seed(0)
    return {
        "stem.conv.weight": torch.randn(4, 3, 3, 3, generator=g),
        "stem.bn.weight": torch.rand(4, generator=g),
        "stem.bn.bias": torch.randn(4, generator=g),
        "stem.bn.num_batches_tracked": torch.tensor(7),
        "blocks.10.fc.weight": torch.randn(5, 4, generator=g).half(),
        "blocks.2.fc.weight": torch.randn(5, 4, generator=g).bfloat16(),
        "a_head.bias": torch.randn(5, generator=g, dtype=torch.float64),
    }


def _assert_same(loaded, expected: dict[str, torch.Tensor]) -> None:
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        got = loaded[key]
        assert got.dtype == value.dtype, key
        assert torch.equal(got, value), key


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_raw_safetensors(path: Path, tensors: list[tuple[str, torch.Tensor]], metadata=None) -> None:
    """A streaming writer: lays the data out in the given order (JSON header keys come out sorted)."""
    header: dict = {}
    blobs = []
    offset = 0
    for name, t in tensors:
        data = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {
            "dtype": {torch.float32: "F32"}[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
        blobs.append(data)
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header, sort_keys=True).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


# ---------------------------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------------------------


def test_safetensors_round_trip_keeps_key_order_dtypes_and_values(tmp_path):
    sd = _mixed_state_dict()
    path = tmp_path / "model.safetensors"
    save_safetensors(sd, path, metadata={"note": "tiny"})

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:  # the format itself forgets the order...
        assert list(f.keys()) == sorted(sd)
    assert sorted(sd) != list(sd)

    ckpt = load_checkpoint(path)  # ...the loader restores it
    _assert_same(ckpt.state_dict, sd)
    meta = ckpt.metadata
    assert meta.format == "safetensors"
    assert meta.path == str(path)
    assert meta.num_tensors == 7
    assert meta.num_parameters == 108 + 4 + 4 + 20 + 20 + 5  # floating tensors only
    assert meta.dtypes == {"float32": 3, "int64": 1, "float16": 1, "bfloat16": 1, "float64": 1}
    assert meta.sha256 == _sha256(path)
    assert meta.extra["key_order"] == ["metadata"]
    assert meta.extra["safetensors_metadata"] == {"format": "pt", "note": "tiny"}
    json.dumps(meta.to_dict())  # JSON-serialisable


def test_safetensors_is_lazy_and_exposes_specs(tmp_path, monkeypatch):
    sd = _mixed_state_dict()
    path = tmp_path / "m.safetensors"
    save_safetensors(sd, path)

    import safetensors

    reads: list[str] = []
    real_safe_open = safetensors.safe_open

    class SpyHandle:
        def __init__(self, *args, **kwargs):
            self._h = real_safe_open(*args, **kwargs)

        def get_tensor(self, key):
            reads.append(key)
            return self._h.get_tensor(key)

    monkeypatch.setattr(safetensors, "safe_open", SpyHandle)
    state_dict = load_checkpoint(path).state_dict
    assert isinstance(state_dict, LazySafetensorsStateDict)
    assert state_dict.tensor_specs["blocks.10.fc.weight"] == TensorSpec((5, 4), torch.float16)
    assert state_dict.tensor_specs["stem.bn.num_batches_tracked"] == TensorSpec((), torch.int64)
    assert len(state_dict) == 7 and "stem.bn.bias" in state_dict and list(state_dict) == list(sd)
    assert reads == []  # specs, len, iteration and membership read no data
    assert torch.equal(state_dict["blocks.2.fc.weight"], sd["blocks.2.fc.weight"])
    assert reads == ["blocks.2.fc.weight"]  # exactly the requested tensor
    with pytest.raises(KeyError):
        state_dict["missing"]
    clone = pickle.loads(pickle.dumps(state_dict))  # picklable for DataLoader workers
    assert torch.equal(clone["stem.bn.bias"], sd["stem.bn.bias"])


def test_foreign_safetensors_use_data_offset_order(tmp_path):
    path = tmp_path / "streamed.safetensors"
    tensors = [("zeta.weight", torch.ones(2, 2)), ("alpha.weight", torch.zeros(3)), ("mid.bias", torch.arange(2.0))]
    _write_raw_safetensors(path, tensors)
    ckpt = load_checkpoint(path)
    assert list(ckpt.state_dict) == ["zeta.weight", "alpha.weight", "mid.bias"]
    assert ckpt.metadata.extra["key_order"] == ["data_offsets"]
    assert torch.equal(ckpt.state_dict["mid.bias"], torch.arange(2.0))


def test_a_recorded_key_order_that_does_not_fit_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "edited.safetensors"
    tensors = [("b", torch.ones(1)), ("a", torch.ones(2))]
    _write_raw_safetensors(path, tensors, metadata={ck.KEY_ORDER_METADATA_KEY: json.dumps(["a", "zzz"])})
    with pytest.warns(UserWarning, match="does not list exactly the file's tensors"):
        ckpt = load_checkpoint(path)
    assert list(ckpt.state_dict) == ["b", "a"]


def test_foreign_safetensors_of_a_timm_architecture_get_the_model_order(tmp_path):
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    sd = model.state_dict()
    save_file(dict(sd), str(tmp_path / "model.safetensors"))  # safetensors' writer: dtype, then name order
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "test_resnet", "num_classes": 3}))
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.metadata.architecture == "test_resnet"
    assert ckpt.metadata.extra["key_order"] == ["timm:test_resnet"]
    _assert_same(ckpt.state_dict, dict(sd))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda raw: raw[:-5], "truncated"),
        (lambda raw: raw[:3], "at least 8 bytes"),
        (lambda raw: raw[:8] + b"\xff" * 12 + raw[20:], "not valid UTF-8 JSON"),
        (lambda raw: struct.pack("<Q", 10**6) + raw[8:], "header needs 1000000 bytes"),
        (lambda raw: raw + b"\x00" * 4, "trailing bytes"),
    ],
    ids=["truncated-data", "tiny-file", "garbage-header", "header-length", "trailing"],
)
def test_corrupt_safetensors_give_a_clear_error(tmp_path, mutate, expected):
    path = tmp_path / "broken.safetensors"
    save_safetensors({"w": torch.randn(8, 8), "b": torch.randn(8)}, path)
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(CheckpointError, match=expected) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert "re-download or re-export" in str(info.value)


def test_save_safetensors_handles_shared_and_non_contiguous_tensors(tmp_path):
    base = torch.randn(6, 4)
    sd = {
        "decoder.weight": base,
        "encoder.weight": base,  # tied weights: same storage, two names
        "proj.weight": base.t(),  # non-contiguous view of the same storage
        "row.bias": base[2],  # a slice
        "other": torch.randn(3, requires_grad=True),  # needs detach
    }
    path = tmp_path / "tied.safetensors"
    save_safetensors(sd, path)
    _assert_same(load_checkpoint(path).state_dict, {k: v.detach() for k, v in sd.items()})


def test_save_safetensors_is_atomic_and_validates(tmp_path):
    path = tmp_path / "out" / "model.safetensors"
    save_safetensors({"w": torch.ones(2)}, path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="expected a tensor for 'x'"):
        save_safetensors({"w": torch.zeros(2), "x": [1, 2]}, path)
    with pytest.raises(CheckpointError, match="reserved"):
        save_safetensors({"w": torch.zeros(2)}, path, metadata={ck.KEY_ORDER_METADATA_KEY: "[]"})
    with pytest.raises(CheckpointError, match="str -> str"):
        save_safetensors({"w": torch.zeros(2)}, path, metadata={"n": 3})
    assert path.read_bytes() == before  # a failed save leaves the previous file intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]  # no temp files left


def test_sharded_safetensors_directory(tmp_path):
    save_safetensors(
        {"b.weight": torch.ones(2), "a.weight": torch.zeros(2)}, tmp_path / "model-00001-of-00002.safetensors"
    )
    save_safetensors({"c.weight": torch.full((3,), 2.0)}, tmp_path / "model-00002-of-00002.safetensors")
    index = {
        "metadata": {},
        "weight_map": {
            "a.weight": "model-00001-of-00002.safetensors",
            "b.weight": "model-00001-of-00002.safetensors",
            "c.weight": "model-00002-of-00002.safetensors",
        },
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    ckpt = load_checkpoint(tmp_path)
    assert list(ckpt.state_dict) == ["b.weight", "a.weight", "c.weight"]
    assert isinstance(ckpt.state_dict, LazySafetensorsStateDict) and len(ckpt.state_dict.paths) == 2
    assert ckpt.metadata.num_parameters == 7 and len(ckpt.metadata.extra["shards"]) == 2


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
    sd = _mixed_state_dict()
    path = tmp_path / "ckpt.pt"
    torch.save(wrap(sd), path)
    ckpt = load_checkpoint(path)
    _assert_same(ckpt.state_dict, sd)
    assert ckpt.metadata.format == "torch"
    assert ckpt.metadata.extra.get("container") == container
    assert ckpt.metadata.sha256 == _sha256(path)


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
    _assert_same(online.state_dict, dict(sd))

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
