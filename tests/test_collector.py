"""The collector: safe loading, strict architecture checks, key maps, bad input, dedupe, resuming, atomic index."""

from __future__ import annotations

import json
import time

import pytest
import torch

from geosane_hf.checkpoints import load_checkpoint, save_safetensors
from geosane_hf.collection import collector as collector_module
from geosane_hf.collection.architectures import build_architecture
from geosane_hf.collection.collector import collect, read_collection_index
from geosane_hf.collection.manifest import CollectionManifest

ARCH = {"library": "geosane", "name": "statlog_cnn", "kwargs": {"in_chans": 4, "num_classes": 6, "width": 8}}


def _cnn_state_dict(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_architecture("statlog_cnn", in_chans=4, num_classes=6, width=8)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _entry(model_id: str, path: str, **extra) -> dict:
    return {"id": model_id, "source": {"kind": "local", "path": path}, "architecture": ARCH, **extra}


def _manifest(tmp_path, entries) -> CollectionManifest:
    return CollectionManifest.from_dict({"name": "test", "models": entries}, root=tmp_path)


@pytest.fixture
def files(tmp_path):
    """Checkpoints of every kind of (bad) input, next to where the manifest lives."""
    good = _cnn_state_dict(0)
    save_safetensors(good, tmp_path / "a.safetensors")
    save_safetensors(_cnn_state_dict(1), tmp_path / "b.safetensors")
    save_safetensors(good, tmp_path / "a_copy.safetensors")  # same tensors as a
    nan = _cnn_state_dict(2)
    nan["conv2.weight"][0, 0, 0, 0] = float("nan")
    save_safetensors(nan, tmp_path / "nan.safetensors")
    # A Lightning-style pickle: weights nested under "state_dict", keys prefixed "model.", extra non-tensor entries.
    lightning = {"epoch": 3, "state_dict": {f"model.{k}": v for k, v in _cnn_state_dict(3).items()}}
    torch.save(lightning, tmp_path / "lightning.ckpt")
    return tmp_path


def test_bad_entries_are_reported_and_skipped(files):
    manifest = _manifest(
        files,
        [
            _entry("a", "a.safetensors"),
            _entry("lightning", "lightning.ckpt"),
            _entry("missing", "nowhere.safetensors"),
            _entry(
                "wrong-arch", "b.safetensors", architecture={**ARCH, "kwargs": {**ARCH["kwargs"], "num_classes": 10}}
            ),
            _entry("nan", "nan.safetensors"),
            _entry("a-again", "a_copy.safetensors"),
        ],
    )
    report = collect(manifest, files / "out", progress=False)
    assert [m.id for m in report.collected] == ["a", "lightning"]
    reasons = {f.id: f for f in report.failed}
    assert "nowhere.safetensors' does not exist" in reasons["missing"].reason
    assert "does not fit geosane:statlog_cnn" in reasons["wrong-arch"].reason
    assert "head.weight: expected [10, 8], got [6, 8]" in reasons["wrong-arch"].reason
    assert "'conv2.weight' has 1 NaN/Inf values" in reasons["nan"].reason
    assert reasons["a-again"].kind == "duplicate" and "duplicate of 'a'" in reasons["a-again"].reason
    assert not (files / "out" / "models" / "a-again.safetensors").exists()  # nothing written for a duplicate
    # The report lists everything, in the table and in JSON.
    markdown = (files / "out" / "report.md").read_text()
    assert all(f"| {name} |" in markdown for name in ("a", "lightning", "missing", "wrong-arch", "nan", "a-again"))
    assert json.loads((files / "out" / "report.json").read_text())["collected"] == ["a", "lightning"]


def test_collected_files_are_safetensors_in_architecture_order_and_load_strictly(files):
    report = collect(_manifest(files, [_entry("lightning", "lightning.ckpt")]), files / "out", progress=False)
    (model,) = report.collected
    assert model.strict_load and model.num_parameters == 950 + 2 * 2 * 8  # params + BN running stats
    state_dict = load_checkpoint(files / "out" / model.file).state_dict
    reference = build_architecture("statlog_cnn", in_chans=4, num_classes=6, width=8)
    assert list(state_dict) == list(reference.state_dict())  # prefix "model." stripped, order kept
    reference.load_state_dict(dict(state_dict), strict=True)
    expected = _cnn_state_dict(3)
    assert all(torch.equal(state_dict[k], expected[k]) for k in expected)


def test_key_map_by_order_renames_onto_the_architecture(files):
    foreign = {f"_layers.{i}.{k.rsplit('.', 1)[1]}": v for i, (k, v) in enumerate(_cnn_state_dict(4).items())}
    save_safetensors(foreign, files / "foreign.safetensors")
    shuffled = dict(reversed(list(foreign.items())))
    save_safetensors(shuffled, files / "shuffled.safetensors")
    manifest = _manifest(
        files,
        [
            _entry("by-name", "foreign.safetensors"),
            _entry("by-order", "foreign.safetensors", key_map="by-order"),
            _entry("wrong-order", "shuffled.safetensors", key_map="by-order"),
        ],
    )
    report = collect(manifest, files / "out", progress=False)
    assert [m.id for m in report.collected] == ["by-order"]
    failed = {f.id: f.reason for f in report.failed}
    assert "use key_map: by-order when only the names differ" in failed["by-name"]
    assert "key_map by-order: tensor 0" in failed["wrong-order"]
    stored = load_checkpoint(files / "out" / report.collected[0].file).state_dict
    assert list(stored) == list(_cnn_state_dict(0))
    assert torch.equal(stored["head.weight"], _cnn_state_dict(4)["head.weight"])


def test_packaged_prompts_map_by_order_and_geoembed_is_transposed(tmp_path):
    from importlib.resources import as_file, files

    import timm

    with as_file(files("geosane_hf") / "resources" / "manifests" / "offline.yaml") as path:
        offline = CollectionManifest.from_yaml(path)
    keep = {"efficientnet-lite0-imagenet", "geoembed-v3"}
    manifest = CollectionManifest("offline-part", [e for e in offline.entries if e.id in keep], root=offline.root)
    report = collect(manifest, tmp_path, progress=False)
    assert sorted(m.id for m in report.collected) == sorted(keep), report.failed
    lite = next(m for m in report.collected if m.id.startswith("efficientnet"))
    assert lite.strict_load and lite.key_map == "by-order"
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(dict(load_checkpoint(tmp_path / lite.file).state_dict), strict=True)
    geoembed = load_checkpoint(tmp_path / "models" / "geoembed-v3.safetensors").state_dict
    assert geoembed.tensor_specs["fc.weight"].shape == (256, 8192)  # torch Linear layout, not netcl's [in, out]


def test_unreachable_hub_id_offline_fails_fast_with_a_clear_line(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    manifest = CollectionManifest.from_dict(
        {"name": "hub", "models": [{"id": "remote", "source": {"kind": "hub", "repo_id": "org/not-cached"}}]}
    )
    start = time.perf_counter()
    report = collect(manifest, tmp_path / "out", progress=False)
    assert time.perf_counter() - start < 20  # no network timeouts: the cache is looked up, nothing else
    (failed,) = report.failed
    assert "Could not load 'org/not-cached'" in failed.reason and "HF_HUB_OFFLINE=1" in failed.reason
    assert report.collected == []


def test_second_run_reuses_and_a_changed_entry_is_recollected(files):
    entries = [_entry("a", "a.safetensors"), _entry("b", "b.safetensors")]
    first = collect(_manifest(files, entries), files / "out", progress=False)
    assert first.reused == []
    stamp = (files / "out" / "models" / "a.safetensors").stat().st_mtime_ns
    second = collect(_manifest(files, entries), files / "out", progress=False)
    assert second.reused == ["a", "b"]
    assert (files / "out" / "models" / "a.safetensors").stat().st_mtime_ns == stamp
    assert [m.content_sha256 for m in second.collected] == [m.content_sha256 for m in first.collected]
    changed = [_entry("a", "b_renamed.safetensors"), entries[1]]
    (files / "b_renamed.safetensors").write_bytes((files / "a.safetensors").read_bytes())
    third = collect(_manifest(files, changed), files / "out", progress=False)
    assert third.reused == ["b"]  # a's source changed: collected again


def test_index_is_valid_after_a_crash_and_the_rerun_resumes(files, monkeypatch):
    entries = [_entry("a", "a.safetensors"), _entry("b", "b.safetensors"), _entry("lightning", "lightning.ckpt")]
    real_save = collector_module.save_safetensors
    calls = []

    def crash_on_third(state_dict, path, metadata=None):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the process were killed while writing the third model
        real_save(state_dict, path, metadata=metadata)

    monkeypatch.setattr(collector_module, "save_safetensors", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        collect(_manifest(files, entries), files / "out", progress=False)
    assert [m.id for m in read_collection_index(files / "out")] == ["a", "b"]  # every line a complete record
    assert not list((files / "out").glob(".collection.jsonl.tmp*"))
    monkeypatch.setattr(collector_module, "save_safetensors", real_save)
    report = collect(_manifest(files, entries), files / "out", progress=False)
    assert report.reused == ["a", "b"] and [m.id for m in report.collected] == ["a", "b", "lightning"]


def test_cli_collect_with_zoo_prints_the_table_and_sets_the_exit_code(files, capsys):
    from geosane_hf.cli import main

    zoo = files / "zoo"
    (zoo / "models").mkdir(parents=True)
    records = []
    for i in range(2):
        model_id = f"statlog_cnn-000{i}-e003"
        save_safetensors(_cnn_state_dict(10 + i), zoo / "models" / f"{model_id}.safetensors")
        records.append(
            {
                "id": model_id,
                "file": f"models/{model_id}.safetensors",
                "architecture": "statlog_cnn",
                "architecture_kwargs": ARCH["kwargs"],
                "task": "classification",
                "dataset": "statlog-landsat",
                "test_metrics": {"accuracy": 0.8 + i / 100},
            }
        )
    (zoo / "index.json").write_text(json.dumps({"format": "geosane-zoo", "version": 1, "models": records}))
    manifest = files / "manifest.yaml"
    manifest.write_text(
        "name: mixed\nmodels:\n- id: missing\n  source: {kind: local, path: nowhere.pt}\n"
        "- id: b\n  source: {kind: local, path: b.safetensors}\n"
    )
    assert main(["collect", str(manifest), "--out", str(files / "out"), "--zoo", str(zoo), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 collected" in out and "| statlog_cnn-0001-e003 | rs-model | classification |" in out
    assert "## Skipped" in out and "| missing | error |" in out
    index = read_collection_index(files / "out")
    zoo_model = next(m for m in index if m.id == "statlog_cnn-0000-e003")
    assert zoo_model.strict_load and zoo_model.entry["metrics"] == {"test_accuracy": 0.8}
    only_bad = files / "bad.yaml"
    only_bad.write_text("name: bad\nmodels:\n- id: missing\n  source: {kind: local, path: nowhere.pt}\n")
    assert main(["collect", str(only_bad), "--out", str(files / "out2"), "--no-progress"]) == 1


def test_cli_reports_an_unknown_manifest_field_without_a_traceback(tmp_path, capsys):
    from geosane_hf.cli import main

    manifest = tmp_path / "m.yaml"
    manifest.write_text("name: x\nmodels:\n- id: a\n  source: {kind: local, path: a.pt}\n  colour: red\n")
    assert main(["collect", str(manifest), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "unknown field(s) ['colour']" in err and "Traceback" not in err
