"""Fault injection: SIGKILL mid-write, a full disk, two writers. Each test asserts that no reader sees a partial
output and that the next run recovers (issue 18; the guarantees are listed in docs/reliability.md).

Kills hit child processes this module starts, stopped at a known point of the write (see fault_helpers.py). Full
disks are injected (``OSError(ENOSPC)`` from the write step, or a Parquet writer whose close silently loses data):
mounting a small tmpfs needs privileges a test run cannot count on.
"""

from __future__ import annotations

import errno
import json
import textwrap

import pyarrow.parquet as pq
import pytest
import torch
from fault_helpers import (
    MARKER,
    REPO,
    SMALL_BUILD,
    build_tiny_collection,
    build_tiny_dataset,
    sigkill,
    snapshot,
    start_stopped_child,
)
from safetensors.torch import load_file

from geosane_hf.atomic_io import OutputBusyError, exclusive_lock
from geosane_hf.collection.collector import collect
from geosane_hf.collection.dataset import build_dataset
from geosane_hf.collection.dataset import shards as shards_module
from geosane_hf.collection.manifest import CollectionManifest

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(300)]

TINY = str(REPO / "training" / "configs" / "tiny-test.yaml")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_dataset(tmp_path_factory.mktemp("fault"))


def _train_args(dataset, out, *extra):
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
        "holdout_ids=[cnn-5]",
        "--set",
        "torch_threads=1",  # the same float results in the child and in this process
        "--num_steps",
        "6",
        "--set",
        "checkpoint_every=2",
        *extra,
    ]


def _train(dataset, out, *extra):
    from training.train import parse_args, training_function

    config, args = parse_args(_train_args(dataset, out, *extra))
    return training_function(config, args)


def _tokens_rows(folder) -> int:
    return sum(pq.read_metadata(p).num_rows for p in sorted((folder / "tokens").glob("train-*.parquet")))


# ------------------------------------------------------------------------------------------------------ training


KILL_DURING_SECOND_SAVE = textwrap.dedent(f"""
    import sys
    import accelerate
    from training.train import parse_args, training_function

    save_state, saves = accelerate.Accelerator.save_state, []

    def stopping_save_state(self, *args, **kwargs):
        result = save_state(self, *args, **kwargs)  # the weights and optimizer are in the stage ...
        saves.append(1)
        if len(saves) == 2:  # ... of the second checkpoint, whose trainer state is not written yet
            print("{MARKER}", flush=True)
            sys.stdin.read()
        return result

    accelerate.Accelerator.save_state = stopping_save_state
    config, args = parse_args(sys.argv[1:])
    training_function(config, args)
""")


def test_sigkill_during_a_training_save_then_resume_finishes_like_an_uninterrupted_run(tiny, tmp_path):
    from training.train import complete_checkpoints, find_resume_dir

    out = tmp_path / "run"
    child = start_stopped_child(KILL_DURING_SECOND_SAVE, *_train_args(tiny, out), log=tmp_path / "child.log")
    try:
        with pytest.raises(OutputBusyError, match="another process is writing it"):  # a second writer is refused
            _train(tiny, out, "--resume")
        assert [p.name for p in complete_checkpoints(out)] == ["checkpoint_0"]  # readers never see checkpoint_1
    finally:
        sigkill(child)
    assert (out / "checkpoints" / ".checkpoint_1.partial").is_dir()  # what the kill left, hidden
    assert find_resume_dir("latest", out).name == "checkpoint_0"
    resumed = _train(tiny, out, "--resume")  # the lock died with the child; the leftover is removed
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_0", "checkpoint_1", "checkpoint_2"]
    straight = _train(tiny, tmp_path / "straight")
    assert resumed.step == straight.step == 6
    a, b = (
        load_file(out / "model" / "model.safetensors"),
        load_file(tmp_path / "straight" / "model" / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_full_disk_during_a_training_save_leaves_only_complete_checkpoints(tiny, tmp_path, monkeypatch):
    import training.train as train_module
    from training.train import complete_checkpoints

    real, calls = train_module.write_json, []

    def full_disk_on_the_second_trainer_state(path, *args, **kwargs):
        if path.name == train_module.STATE_FILE:
            calls.append(path)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(train_module, "write_json", full_disk_on_the_second_trainer_state)
    with pytest.raises(OSError, match="No space left"):
        _train(tiny, tmp_path / "run")
    assert [p.name for p in complete_checkpoints(tmp_path / "run")] == ["checkpoint_0"]
    assert not (tmp_path / "run" / "model").exists()
    monkeypatch.setattr(train_module, "write_json", real)
    assert _train(tiny, tmp_path / "run", "--resume").step == 6
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_an_incomplete_checkpoint_left_by_an_older_version_is_reported_and_removed(tiny, tmp_path, caplog):
    out = tmp_path / "run"
    _train(tiny, out, "--stop_after_step", "2")
    (out / "checkpoints" / "checkpoint_1").mkdir()  # an empty folder: what a kill mid-save used to leave
    with caplog.at_level("WARNING", logger="geosane.train"):
        assert _train(tiny, out, "--resume").step == 6
    assert "checkpoint_1: an interrupted checkpoint save" in caplog.text
    assert all((p / "trainer_state.json").is_file() for p in (out / "checkpoints").iterdir())


def test_a_diverging_run_stops_before_saving_non_finite_weights(tiny, tmp_path):
    from training.train import TrainingDivergedError, complete_checkpoints

    with pytest.raises(TrainingDivergedError, match=r"NaN/Inf|loss became"):
        _train(tiny, tmp_path / "run", "--set", "learning_rate=1.0e+30", "--set", "max_grad_norm=0")
    assert not (tmp_path / "run" / "model").exists()
    for checkpoint in complete_checkpoints(tmp_path / "run"):
        weights = load_file(checkpoint / "model.safetensors")
        assert all(torch.isfinite(v).all() for v in weights.values())


# ------------------------------------------------------------------------------------------------------ datasets


KILL_DURING_BUILD = textwrap.dedent(f"""
    import sys
    from geosane_hf.collection import dataset
    from geosane_hf.collection.dataset import shards

    write, writes = shards._Shard.write, []

    def stopping_write(self, table):
        write(self, table)
        writes.append(1)
        if len(writes) == 2:  # a shard is open, half the models are tokenized
            print("{MARKER}", flush=True)
            sys.stdin.read()

    shards._Shard.write = stopping_write
    dataset.build_dataset(sys.argv[1], sys.argv[2], dataset.DatasetBuildConfig(chunk_tokens=16), progress=False)
""")


def test_sigkill_during_a_rebuild_keeps_the_old_dataset_then_the_next_build_recovers(tiny, tmp_path):
    collection = tiny.parent / "collection"
    out = tmp_path / "dataset"
    build_dataset(collection, out, SMALL_BUILD, progress=False)
    before = snapshot(out)
    rows = _tokens_rows(out)
    child = start_stopped_child(KILL_DURING_BUILD, str(collection), str(out), log=tmp_path / "child.log")
    try:
        assert snapshot(out) == before and _tokens_rows(out) == rows  # a reader mid-build sees the old dataset
        with pytest.raises(OutputBusyError, match="another process is writing it"):  # two builders: refused
            build_dataset(collection, out, SMALL_BUILD, progress=False)
    finally:
        sigkill(child)
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir() if ".staging-" in p.name]  # the kill left its stage aside
    build_dataset(collection, out, SMALL_BUILD, progress=False)  # lock released by the kill; the stage is removed
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "child.log") == [".dataset.lock", "dataset"]
    assert snapshot(out) == before  # same collection, same bytes


@pytest.mark.parametrize("fault", ["enospc-on-write", "silent-loss-on-close"])
def test_a_full_disk_during_a_build_keeps_the_old_dataset(tiny, tmp_path, monkeypatch, fault):
    collection = tiny.parent / "collection"
    out = tmp_path / "dataset"
    build_dataset(collection, out, SMALL_BUILD, progress=False)
    before = snapshot(out)
    if fault == "enospc-on-write":
        write, writes = shards_module._Shard.write, []

        def full(self, table):
            writes.append(1)
            if len(writes) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            write(self, table)

        monkeypatch.setattr(shards_module._Shard, "write", full)
        expected = "No space left"
    else:  # pyarrow's close() does not always raise after a failed write: the file ends up short
        close = pq.ParquetWriter.close

        def lossy_close(self):
            close(self)
            with open(self.where, "r+b") as f:
                f.truncate(f.seek(0, 2) // 2)

        monkeypatch.setattr(pq.ParquetWriter, "close", lossy_close)
        expected = "is incomplete"
    with pytest.raises(OSError, match=expected):
        build_dataset(collection, out, SMALL_BUILD, progress=False)
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dataset.lock", "dataset"]  # nothing half-built left
    monkeypatch.undo()
    build_dataset(collection, out, SMALL_BUILD, progress=False)
    assert snapshot(out) == before


def test_a_second_collector_on_one_folder_is_refused(tmp_path):
    collection = build_tiny_collection(tmp_path / "src", count=2)
    entries = [{"id": "cnn-0", "source": {"kind": "local", "path": "cnn0.safetensors"}}]
    manifest = CollectionManifest.from_dict({"name": "t", "models": entries}, root=tmp_path / "src")
    with exclusive_lock(collection, "another collector"), pytest.raises(OutputBusyError, match="geosane collect"):
        collect(manifest, collection, progress=False)
    assert json.loads((collection / "report.json").read_text())["collected"] == ["cnn-0", "cnn-1"]  # untouched


# ------------------------------------------------------------------------------------------------------ publish


KILL_DURING_PUBLISH = textwrap.dedent(f"""
    import sys
    import timm
    from geosane_hf import hub

    render = hub.render_card

    def stopping_render(*args, **kwargs):
        # timm's save_for_hf has written the new weights and config into the staging folder by now
        print("{MARKER}", flush=True)
        sys.stdin.read()
        return render(*args, **kwargs)

    hub.render_card = stopping_render
    net = timm.create_model("test_resnet", pretrained=False, in_chans=4, num_classes=3)
    hub.save_timm_repo(net, sys.argv[1], {{"architecture": "test_resnet", "in_chans": 4}}, overwrite=True)
""")


def test_sigkill_during_a_publish_keeps_the_old_repo_then_the_next_publish_recovers(tmp_path):
    import timm

    from geosane_hf.hub import save_timm_repo

    out = tmp_path / "repo"
    torch.manual_seed(0)
    old = timm.create_model("test_resnet", pretrained=False, in_chans=4, num_classes=3)
    save_timm_repo(old, out, {"architecture": "test_resnet", "in_chans": 4})
    before = snapshot(out)
    child = start_stopped_child(KILL_DURING_PUBLISH, str(out), log=tmp_path / "child.log")
    try:
        assert snapshot(out) == before  # mid-publish, readers see the old repo
    finally:
        sigkill(child)
    assert snapshot(out) == before
    net = timm.create_model("local-dir:" + str(out), pretrained=True)  # still a loadable repo
    assert net.num_classes == 3
    torch.manual_seed(1)
    save_timm_repo(
        timm.create_model("test_resnet", num_classes=3, in_chans=4),
        out,
        {"architecture": "test_resnet", "in_chans": 4},
        overwrite=True,
    )
    assert snapshot(out)["model.safetensors"] != before["model.safetensors"]
