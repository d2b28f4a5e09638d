"""Tests of safe checkpoint loading: safetensors (lazy reads, key order, corrupt files, atomic writes, shards).

Other formats are in test_checkpoints_formats.py, folders and the Hub in test_checkpoints_sources.py.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from checkpoint_helpers import assert_same, file_sha256, mixed_state_dict

from geosane_hf import checkpoints as ck
from geosane_hf.checkpoints import (
    CheckpointError,
    LazySafetensorsStateDict,
    TensorSpec,
    load_checkpoint,
    save_safetensors,
)


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
    sd = mixed_state_dict()
    path = tmp_path / "model.safetensors"
    save_safetensors(sd, path, metadata={"note": "tiny"})

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:  # the format itself forgets the order...
        assert list(f.keys()) == sorted(sd)
    assert sorted(sd) != list(sd)

    ckpt = load_checkpoint(path)  # ...the loader restores it
    assert_same(ckpt.state_dict, sd)
    meta = ckpt.metadata
    assert meta.format == "safetensors"
    assert meta.path == str(path)
    assert meta.num_tensors == 7
    assert meta.num_parameters == 108 + 4 + 4 + 20 + 20 + 5  # floating tensors only
    assert meta.dtypes == {"float32": 3, "int64": 1, "float16": 1, "bfloat16": 1, "float64": 1}
    assert meta.sha256 == file_sha256(path)
    assert meta.extra["key_order"] == ["metadata"]
    assert meta.extra["safetensors_metadata"] == {"format": "pt", "note": "tiny"}
    json.dumps(meta.to_dict())  # JSON-serialisable


def test_safetensors_is_lazy_and_exposes_specs(tmp_path, monkeypatch):
    sd = mixed_state_dict()
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
    assert_same(ckpt.state_dict, dict(sd))


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
    assert_same(load_checkpoint(path).state_dict, {k: v.detach() for k, v in sd.items()})


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
