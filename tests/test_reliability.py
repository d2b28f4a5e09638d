"""Bad input, one test per class of fault (issue 18): each asserts the clear error, or the safe outcome, that the
package now gives where it used to write outside its folder, read forever, fail late or answer silently wrong.

The kill / full-disk / concurrent-writer scenarios are in test_fault_injection.py; docs/reliability.md maps every
guarantee to its test.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors import SafetensorError

from geosane_hf.checkpoints import CheckpointError, load_checkpoint, save_safetensors
from geosane_hf.collection import collector as collector_module
from geosane_hf.collection.architectures import build_architecture
from geosane_hf.collection.collector import CollectedModel, collect, read_collection_index, write_collection_index
from geosane_hf.collection.manifest import CollectionManifest, ManifestError, manifest_from_zoo
from geosane_hf.errors import GeoSANEError, UnsafePathError
from geosane_hf.redaction import redact

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parent.parent
ARCH = {"library": "geosane", "name": "statlog_cnn", "kwargs": {"in_chans": 4, "num_classes": 6, "width": 8}}
TOKEN = "hf_reliabilityTestTokenABCDEFGHIJKLMNOPQRS"


def _cnn(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {
        k: v.clone()
        for k, v in build_architecture("statlog_cnn", in_chans=4, num_classes=6, width=8).state_dict().items()
    }


def _manifest(root: Path, *entries: dict) -> CollectionManifest:
    return CollectionManifest.from_dict({"name": "t", "models": list(entries)}, root=root)


def _local(model_id: str, path: str, **extra) -> dict:
    return {"id": model_id, "source": {"kind": "local", "path": path}, **extra}


# ----------------------------------------------------------------------------------------------- class 1 and 10
# Names and paths from input files never lead outside the folder they belong to.


@pytest.mark.parametrize("bad_id", ["../../../x", "a/b", "..", ".hidden", "a\nb", "C:\\x", "x" * 201])
def test_unsafe_manifest_ids_are_refused_before_anything_is_written(tmp_path, bad_id):
    save_safetensors(_cnn(0), tmp_path / "a.safetensors")
    with pytest.raises(UnsafePathError, match="file-name-safe name"):
        _manifest(tmp_path, _local(bad_id, "a.safetensors"))
    from geosane_hf.cli import main

    (tmp_path / "m.yaml").write_text(json.dumps({"name": "t", "models": [_local(bad_id, "a.safetensors")]}))
    assert main(["collect", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "deep" / "out"), "--no-progress"]) == 2
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.safetensors", "m.yaml"]


@pytest.mark.parametrize("bad_file", ["/etc/hostname", "../outside.safetensors", "models/../../outside.safetensors"])
def test_index_paths_outside_their_folder_are_refused(tmp_path, bad_file):
    # collection.jsonl
    collection = tmp_path / "collection"
    save_safetensors(_cnn(0), tmp_path / "outside.safetensors")
    record = dict.fromkeys(("content_sha256", "spec_sha256", "source"), "x")
    record |= {"id": "a", "file": bad_file, "file_bytes": 1, "num_parameters": 1, "num_tensors": 1, "num_layers": 1}
    record |= {
        "dtypes": {},
        "source_revision": None,
        "source_sha256": None,
        "architecture": None,
        "strict_load": False,
    }
    collection.mkdir()
    (collection / "collection.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(UnsafePathError, match="inside"):
        read_collection_index(collection)
    # a zoo index
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "index.json").write_text(json.dumps({"format": "geosane-zoo", "models": [{"id": "a", "file": bad_file}]}))
    with pytest.raises(UnsafePathError, match="inside"):
        manifest_from_zoo(zoo)
    # a sharded checkpoint's index.json
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": bad_file}}))
    with pytest.raises(CheckpointError, match="inside"):
        load_checkpoint(ckpt)
    # a packaged file
    from geosane_hf.packaged import package_file

    with pytest.raises(UnsafePathError, match="inside"):
        package_file("torch", bad_file)


@pytest.mark.timeout(60)
def test_a_fifo_named_like_a_checkpoint_is_refused_not_read(tmp_path):
    os.mkfifo(tmp_path / "weights.pt")  # opening it for reading would block forever
    with pytest.raises(CheckpointError, match="FIFO"):
        load_checkpoint(tmp_path / "weights.pt")
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "dir" / "model.safetensors")
    with pytest.raises(CheckpointError, match="holds no weights file"):  # a folder's FIFO is not a candidate
        load_checkpoint(tmp_path / "dir")


def test_recorded_size_and_hash_are_checked_before_a_dataset_is_built(tmp_path):
    from geosane_hf.collection.dataset import DatasetBuildError, build_dataset

    save_safetensors(_cnn(0), tmp_path / "a.safetensors")
    collect(_manifest(tmp_path, _local("a", "a.safetensors", architecture=ARCH)), tmp_path / "c", progress=False)
    (record,) = read_collection_index(tmp_path / "c")
    swapped = tmp_path / "c" / record.file
    save_safetensors(_cnn(1), swapped, metadata={"geosane.content_sha256": "0" * 64, "geosane.model_id": "a"})
    record = CollectedModel(**{**record.__dict__, "file_bytes": swapped.stat().st_size})
    write_collection_index(tmp_path / "c", [record])
    with pytest.raises(DatasetBuildError, match="holds other tensors"):
        build_dataset(tmp_path / "c", tmp_path / "ds", progress=False)
    write_collection_index(
        tmp_path / "c", [CollectedModel(**{**record.__dict__, "file_bytes": record.file_bytes + 1})]
    )
    with pytest.raises(DatasetBuildError, match="the file changed after collecting"):
        build_dataset(tmp_path / "c", tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()


# ----------------------------------------------------------------------------------------------------- class 7
# One bad file never aborts `geosane collect`: every loader exception is a per-entry error in the report.


@pytest.mark.parametrize(
    "error",
    [
        zipfile.BadZipFile("File is not a zip file"),
        SafetensorError("Error while deserializing header: HeaderTooLarge"),
        pickle.UnpicklingError("invalid load key, 'x'."),
        EOFError("Ran out of input"),
        struct.error("unpack requires a buffer of 8 bytes"),
        OSError(errno.EIO, "Input/output error"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_loader_exception_is_a_reported_entry_error(tmp_path, monkeypatch, error):
    for name in ("a", "bad", "c"):
        save_safetensors(_cnn(ord(name[0])), tmp_path / f"{name}.safetensors")
    real = collector_module.load_checkpoint

    def load(source, **kwargs):
        if Path(str(source)).name == "bad.safetensors":
            raise error
        return real(source, **kwargs)

    monkeypatch.setattr(collector_module, "load_checkpoint", load)
    entries = [_local(n, f"{n}.safetensors", architecture=ARCH) for n in ("a", "bad", "c")]
    report = collect(_manifest(tmp_path, *entries), tmp_path / "out", progress=False)
    assert [m.id for m in report.collected] == ["a", "c"]
    assert [(f.id, f.reason.split(":")[0]) for f in report.failed] == [("bad", type(error).__name__)]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["failed"][0]["id"] == "bad"


def test_a_full_disk_stops_collect_with_a_report_and_the_next_run_resumes(tmp_path, monkeypatch):
    for name in "abc":
        save_safetensors(_cnn(ord(name)), tmp_path / f"{name}.safetensors")
    manifest = _manifest(tmp_path, *[_local(n, f"{n}.safetensors", architecture=ARCH) for n in "abc"])
    real = collector_module.save_safetensors

    def full_after_first(state_dict, path, metadata=None):
        if Path(path).name != "a.safetensors":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(state_dict, path, metadata=metadata)

    monkeypatch.setattr(collector_module, "save_safetensors", full_after_first)
    report = collect(manifest, tmp_path / "out", progress=False)
    assert [m.id for m in report.collected] == ["a"]
    assert [(f.id, f.kind) for f in report.failed] == [("b", "error"), ("c", "not-attempted")]
    assert "disk is full" in report.failed[1].reason
    monkeypatch.setattr(collector_module, "save_safetensors", real)
    again = collect(manifest, tmp_path / "out", progress=False)
    assert again.reused == ["a"] and [m.id for m in again.collected] == ["a", "b", "c"] and not again.failed


def test_a_corrupt_zip_with_an_unknown_suffix_is_a_checkpoint_error(tmp_path):
    (tmp_path / "weights.bin2").write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a valid one"):
        load_checkpoint(tmp_path / "weights.bin2")


def test_identical_weights_in_another_key_order_are_duplicates(tmp_path):
    state = {"fc.weight": torch.randn(4, 8), "fc.bias": torch.randn(4), "emb": torch.randn(3, 8)}
    save_safetensors(state, tmp_path / "a.safetensors")
    save_safetensors(dict(reversed(list(state.items()))), tmp_path / "b.safetensors")
    report = collect(
        _manifest(tmp_path, _local("a", "a.safetensors"), _local("b", "b.safetensors")), tmp_path / "o", progress=False
    )
    assert [m.id for m in report.collected] == ["a"]
    assert [(f.id, f.kind) for f in report.failed] == [("b", "duplicate")]


# ----------------------------------------------------------------------------------------------------- the CLI
# Our errors are one redacted line with exit code 2; a bug keeps its traceback.


@pytest.mark.parametrize(
    "name",
    ["CheckpointError", "ManifestError", "GenerationError", "EvaluationError", "ZooError", "TrainingConfigError"],
)
def test_every_package_error_is_a_geosane_error_and_keeps_its_old_base(name):
    modules = {
        "CheckpointError": "geosane_hf.checkpoints",
        "ManifestError": "geosane_hf.collection.manifest",
        "GenerationError": "geosane_hf.generation.api",
        "EvaluationError": "geosane_hf.evaluation.data",
        "ZooError": "geosane_hf.collection.zoo",
        "TrainingConfigError": "training.config",
    }
    cls = getattr(importlib.import_module(modules[name]), name)
    assert issubclass(cls, GeoSANEError) and issubclass(cls, ValueError)


def test_cli_prints_our_errors_on_one_redacted_line_and_lets_bugs_raise(tmp_path, monkeypatch, capsys):
    from geosane_hf import cli
    from geosane_hf.commands import collect as collect_command

    monkeypatch.setenv("HF_TOKEN", TOKEN)

    def refuse(args):
        raise ManifestError(f"expected a manifest,\n  got one that mentions {TOKEN}")

    monkeypatch.setattr(collect_command, "run", refuse)
    assert cli.main(["collect", "x", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expected a manifest, got one" in err and TOKEN not in err and "[redacted]" in err

    def bug(args):
        raise ZeroDivisionError("a real bug")

    monkeypatch.setattr(collect_command, "run", bug)
    with pytest.raises(ZeroDivisionError):
        cli.main(["collect", "x", "--out", str(tmp_path)])


def test_redaction_covers_a_token_as_pasted_and_as_used():
    pasted = f"{TOKEN}\n"
    assert TOKEN not in redact(f"401 Unauthorized for token {TOKEN}", secrets=[pasted])
    assert pasted not in redact(f"echo {pasted}", secrets=[pasted])
    assert redact("Authorization: Bearer abcdefgh12345678") == "Authorization: Bearer [redacted]"
    assert redact("plain text, nothing secret") == "plain text, nothing secret"


# ----------------------------------------------------------------------------------------------------- class 9
# Config types, repo ids and output folders are checked before any training step.


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learning_rate=1e-3", r"learning_rate: expected a finite number, got '1e-3' \(YAML reads .* 1\.0e-3"),
        ("learning_rate=.inf", "learning_rate: expected a finite number, got inf"),
        ("checkpoints_total_limit=0", "checkpoints_total_limit: expected an integer >= 1"),
        ("num_steps=ten", "num_steps: expected an integer, got 'ten'"),
        ("holdout_ids=cnn-1", "holdout_ids: expected a list of strings"),
        ("adam_betas=[0.9, 1.5]", r"adam_betas: expected two numbers in \[0, 1\)"),
        ("model_overrides=3", "model_overrides: expected a mapping"),
    ],
)
def test_config_type_errors_are_clear(override, message):
    from training.config import TrainingConfigError, load_config

    with pytest.raises(TrainingConfigError, match=message):
        load_config(REPO / "training" / "configs" / "tiny-test.yaml", [override])


def test_bad_outputs_are_refused_before_the_dataset_is_even_read(tmp_path, capsys):
    from training.train import main

    base = ["--config", str(REPO / "training" / "configs" / "tiny-test.yaml"), "--dataset", str(tmp_path / "none")]
    (tmp_path / "file").write_text("")
    cases = [
        (["--output_dir", str(tmp_path / "file" / "run")], "expected a folder this process can write"),
        (["--output_dir", str(tmp_path / "ok"), "--push_to_hub", "bad repo/id!"], "--push_to_hub: expected a Hub"),
    ]
    (tmp_path / "used" / "checkpoints").mkdir(parents=True)
    cases.append((["--output_dir", str(tmp_path / "used")], "holds an earlier run"))
    for extra, message in cases:
        assert main([*base, *extra, "--cpu", "--no_tensorboard"]) == 2
        err = capsys.readouterr().err
        assert message in err and "dataset" not in err.split(message)[0], err  # the output check came first


# --------------------------------------------------------------------------------------------- class 5 and 6
# A prompt that does not fit is an error; non-finite values never come out silently.


@pytest.fixture(scope="module")
def geosane():
    from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel

    torch.manual_seed(0)
    return GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()


def test_a_prompt_that_does_not_fit_is_an_error_not_random_weights(geosane, tmp_path):
    import timm

    from geosane_hf.generation import generate_weights
    from geosane_hf.generation.api import GenerationError

    state = timm.create_model("test_resnet", pretrained=False).state_dict()
    lightning = {f"model.{k}": v for k, v in state.items()}
    partial = {k: v for i, (k, v) in enumerate(state.items()) if i % 2}
    for name, sd in (("lightning", lightning), ("partial", partial), ("empty", {"unrelated": torch.zeros(1)})):
        save_safetensors(sd, tmp_path / f"{name}.safetensors")
        with pytest.raises(GenerationError, match=r"missing .* a prompt is never replaced by random weights"):
            generate_weights(geosane, tmp_path / f"{name}.safetensors", architecture="test_resnet", calibrate=False)


def test_non_finite_generation_is_an_error(geosane):
    from geosane_hf.generation import generate_weights
    from geosane_hf.generation.api import GenerationError

    with pytest.raises(GenerationError, match="finite noise_scale"):
        generate_weights(geosane, "test_resnet", noise_scale=float("inf"), calibrate=False)
    broken = type(geosane)(geosane.config).eval()
    broken.load_state_dict(geosane.state_dict())
    with torch.no_grad():
        next(p for n, p in broken.named_parameters() if "decoder" in n and p.ndim == 2)[0, 0] = float("nan")
    with pytest.raises(GenerationError, match="expected finite generated weights"):
        generate_weights(broken, "test_resnet", calibrate=False)


def test_nan_in_evaluation_data_is_refused_at_construction():
    from geosane_hf.evaluation.data import EvaluationError, Split, TaskData

    images = torch.randn(4, 3, 8, 8)
    labels = torch.tensor([0, 1, 0, 1])
    TaskData("ok", "classification", Split(images, labels), Split(images, labels), num_classes=2)
    bad = images.clone()
    bad[2, 1, 3, 3] = float("nan")
    with pytest.raises(EvaluationError, match=r"1 NaN/Inf pixel values \(the first in sample 2, band 1\)"):
        TaskData("nan", "classification", Split(bad, labels), Split(images, labels), num_classes=2)


def test_nan_tokens_in_a_training_dataset_are_refused_at_load(tmp_path):
    from geosane_hf.collection.dataset import DatasetBuildConfig, build_dataset
    from training.data import TrainingDataError, load_training_data

    save_safetensors(_cnn(0), tmp_path / "a.safetensors")
    collect(_manifest(tmp_path, _local("a", "a.safetensors", architecture=ARCH)), tmp_path / "c", progress=False)
    build_dataset(tmp_path / "c", tmp_path / "ds", DatasetBuildConfig(chunk_tokens=16), progress=False)
    shard = next((tmp_path / "ds" / "tokens").glob("train-*.parquet"))
    table = pq.read_table(shard)
    rows = table.column("tokens").to_pylist()
    rows[0][0][0] = float("nan")
    column = pa.array(rows, type=table.schema.field("tokens").type)
    pq.write_table(table.set_column(table.schema.get_field_index("tokens"), "tokens", column), shard)
    with pytest.raises(TrainingDataError, match="expected finite token values, got 1 NaN/Inf values in model 'a'"):
        load_training_data(str(tmp_path / "ds"), token_size=230)


# --------------------------------------------------------------------------------------------------- the rest


def test_same_content_gives_byte_identical_safetensors(tmp_path):
    metadata = {f"key{i}": str(i) for i in range(12)}
    blobs = set()
    for i in range(6):
        save_safetensors({"w": torch.arange(6.0)}, tmp_path / f"{i}.safetensors", metadata=metadata)
        blobs.add((tmp_path / f"{i}.safetensors").read_bytes())
    assert len(blobs) == 1
    (length,) = struct.unpack("<Q", next(iter(blobs))[:8])
    keys = list(json.loads(next(iter(blobs))[8 : 8 + length])["__metadata__"])
    assert keys == sorted(keys)


def test_a_newline_in_a_license_is_refused(tmp_path, capsys):
    from geosane_hf.cli import main

    with pytest.raises(SystemExit) as info:
        main(
            [
                "generate",
                "--prompt",
                "test_resnet",
                "--model",
                "m",
                "--out",
                str(tmp_path / "o"),
                "--license",
                "mit\nx: y",
            ]
        )
    assert info.value.code == 2 and "expected a license id" in capsys.readouterr().err
    with pytest.raises(ManifestError, match="license must be a one-line string"):
        _manifest(tmp_path, _local("a", "a.safetensors", license="MIT\nextra: field"))


# ---------------------------------------------------------------------------------------------------- class 8


def _space_backend(tmp_path, keep_runs=2):
    sys.path.insert(0, str(REPO / "spaces"))
    try:
        backend_module = importlib.import_module("backend")
    finally:
        sys.path.remove(str(REPO / "spaces"))
    from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel

    torch.manual_seed(0)
    model = GeoSANEModel(GeoSANEConfig.from_preset("tiny"))
    return backend_module, backend_module.Backend(
        model, backend_module.UNTRAINED_LABEL, calibrate=False, work_dir=str(tmp_path), keep_runs=keep_runs
    )


def test_space_redacts_a_pasted_token_and_cleans_up_after_each_request(tmp_path, monkeypatch):
    import gradio  # noqa: F401  (installed by make setup: a missing install fails)

    backend_module, backend = _space_backend(tmp_path / "work", keep_runs=2)
    zips = [backend.generate("test_resnet", 4, 3, "prompt-noise", seed, 1).zip_path for seed in range(3)]
    assert not list((tmp_path / "work").rglob("config.json"))  # repo folders are deleted once zipped
    assert [z.exists() for z in zips] == [False, True, True]  # only the last keep_runs zips stay
    import geosane_hf.hub as hub

    def failing_publish(folder, repo_id, *, token, **kwargs):
        assert (Path(folder) / "model.safetensors").is_file() and token == TOKEN  # pushed stripped
        raise RuntimeError(f"401 Client Error: Unauthorized (token {token!r} for {repo_id})")

    monkeypatch.setattr(hub, "publish_folder", failing_publish)
    with pytest.raises(backend_module.InputError) as info:
        backend.push(str(zips[-1]), "user/repo", f"{TOKEN}\n")
    assert TOKEN not in str(info.value) and "[redacted]" in str(info.value)
    with pytest.raises(backend_module.InputError) as info:
        backend.push(str(zips[-1]), TOKEN, f" {TOKEN}\n")  # the token pasted into the repo id box
    assert TOKEN not in str(info.value)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == sorted(z.parent.name for z in zips[1:])
