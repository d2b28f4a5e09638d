"""`geosane experiment` (geosane_hf.experiments.heldout): leave one data source out, win/tie/loss per baseline."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from geosane_hf.experiments import bundled_experiment
from geosane_hf.experiments.heldout import HeldoutConfig, HeldoutError, heldout_stages, tally
from geosane_hf.experiments.heldout.run import fold_experiment, folds_of


def test_every_source_of_the_packaged_comparison_is_a_fold_with_its_own_model_and_collection(tmp_path):
    config = HeldoutConfig(out_dir=tmp_path)
    experiment = bundled_experiment("heldout")
    assert folds_of(experiment) == {
        "statlog": ["statlog-classification"],
        "landsat8": ["landsat8-cloudy-classification", "landsat8-cloud-segmentation"],
        "spacenet": ["spacenet-building-segmentation", "spacenet-building-detection"],
    }
    fold = fold_experiment(config, "landsat8")
    assert [t.name for t in fold.tasks] == ["landsat8-cloudy-classification", "landsat8-cloud-segmentation"]
    assert fold.geosane.model == str(tmp_path / "folds" / "landsat8" / "train" / "model")
    assert fold.geosane.collection == str(tmp_path / "folds" / "landsat8" / "collection")
    assert fold.starts == experiment.starts and fold.seeds == experiment.seeds and len(fold.seeds) >= 5
    names = [s.name for s in heldout_stages(config)]
    assert names[:2] == ["zoo", "members"] and names[-1] == "evaluate-spacenet"
    assert [n for n in names if n.startswith("train-")] == ["train-statlog", "train-landsat8", "train-spacenet"]


def test_the_tally_counts_only_differences_beyond_the_spread():
    verdict = {"exceeds_spread": True}
    tables = [
        {
            "task": "a",
            "target": "x",
            "verdicts": {"geosane:interpolate": [{**verdict, "opponent": "scratch", "difference": 0.2}]},
        },
        {
            "task": "b",
            "target": "x",
            "verdicts": {"geosane:interpolate": [{**verdict, "opponent": "scratch", "difference": -0.2}]},
        },
        {
            "task": "c",
            "target": "x",
            "verdicts": {"geosane:interpolate": [{"exceeds_spread": False, "opponent": "scratch", "difference": 0.5}]},
        },
        {
            "task": "d",
            "target": "x",
            "verdicts": {"geosane:kde": [{**verdict, "opponent": "scratch", "difference": 0.3}]},
        },
    ]
    (row,) = tally(tables)
    assert (row.baseline, row.wins, row.losses, row.ties, row.total) == ("scratch", 1, 1, 1, 3)
    assert row.cells[1] == "b / x: loss (-0.200)"


@pytest.mark.parametrize("settings", [{"workers": 0}, {"member_epochs": 0}, {"member_architectures": ()}])
def test_bad_settings_say_what_is_expected(settings, tmp_path):
    with pytest.raises(HeldoutError, match="expected"):
        HeldoutConfig(out_dir=tmp_path, **settings)


@pytest.mark.slow
def test_quick_experiment_runs_every_stage_checks_the_leave_out_and_resumes(tmp_path):
    out = tmp_path / "exp"
    command = [sys.executable, "-m", "geosane_hf.cli", "experiment", "--quick", "--out", str(out), "--no-progress"]
    command += ["--docs", str(tmp_path / "docs")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((out / "experiment_state.json").read_text())
    assert all(record["done"] for record in state.values())
    collected = state["collect-spacenet"]["summary"]
    assert collected["members"] and all("spacenet" not in m for m in collected["members"])
    check = collected["leave_out_check"]["spacenet-building-segmentation"]
    assert check["images"] == 128 + 68 and check["images_shared"] == 0
    assert collected["zoo_left_out"]["models"] == 0  # the zoo trains on Statlog and Landsat-8 data only
    report = (out / "experiment.md").read_text()
    result = json.loads((out / "experiment.json").read_text())
    baselines = {row["baseline"] for row in result["tally"]}
    assert {"scratch", "imagenet_prompt", "prompt_plus_noise:interpolate", "checkpoint_average"} <= baselines
    assert all(row["wins"] + row["ties"] + row["losses"] == 1 for row in result["tally"])
    assert "| scratch |" in report and "## The leave-out check" in report
    docs = (tmp_path / "docs" / "experiment.md").read_text()
    assert (
        "figures/experiment/spacenet/" in docs and (tmp_path / "docs" / "figures" / "experiment" / "spacenet").is_dir()
    )
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("done before") == len(state)


def test_zoo_models_trained_on_the_held_out_source_are_left_out_of_its_fold():
    from geosane_hf.experiments.heldout.run import _zoo_keeps

    assert not _zoo_keeps("statlog", "statlog-landsat", "m1")  # the same Statlog patches
    assert not _zoo_keeps("landsat8", "landsat8-cloud", "m2")  # the same Landsat-8 scene, other tiles
    assert _zoo_keeps("spacenet", "statlog-landsat", "m1") and _zoo_keeps("statlog", "landsat8-cloud", "m2")
    with pytest.raises(HeldoutError, match=r"known source.*ZOO_DATA_SOURCES"):
        _zoo_keeps("statlog", "eurosat", "m3")  # unknown data: refused rather than risked


def test_a_change_of_the_comparison_reruns_its_evaluation_and_nothing_before(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("extends: heldout\n")
    changed = tmp_path / "changed.yaml"
    changed.write_text("extends: heldout\nseeds: [0, 1, 2, 3, 4, 5]\n")
    one = {s.name: s.fingerprint for s in heldout_stages(HeldoutConfig(out_dir=tmp_path, experiment=str(base)))}
    two = {s.name: s.fingerprint for s in heldout_stages(HeldoutConfig(out_dir=tmp_path, experiment=str(changed)))}
    assert [n for n in one if one[n] != two[n]] == ["evaluate-statlog", "evaluate-landsat8", "evaluate-spacenet"]
    more_steps = HeldoutConfig(out_dir=tmp_path, experiment=str(base), train_steps=10)
    three = {s.name: s.fingerprint for s in heldout_stages(more_steps)}
    assert {n for n in one if one[n] != three[n]} == {
        f"{stage}-{fold}" for stage in ("train", "evaluate") for fold in ("statlog", "landsat8", "spacenet")
    }


def test_the_report_refuses_a_folder_without_an_evaluated_fold(tmp_path):
    from geosane_hf.experiments.heldout.report import read_fold_tables, write_report

    config = HeldoutConfig(out_dir=tmp_path)
    assert read_fold_tables(config) == {"statlog": None, "landsat8": None, "spacenet": None}
    with pytest.raises(HeldoutError, match="expected at least one evaluated fold"):
        write_report(config)


def test_quick_mode_keeps_what_is_set():
    quick = HeldoutConfig(quick=True, experiment="heldout", member_epochs=6)
    assert (quick.experiment, quick.member_epochs, quick.member_max_train, quick.train_steps) == ("heldout", 6, 16, 30)


def test_verdicts_between_identical_starts_are_listed_as_an_aa_test():
    from geosane_hf.experiments.heldout.report import aa_verdicts

    def table(distance):
        verdicts = [
            {"opponent": name, "difference": -0.05, "spread": 0.03, "exceeds_spread": True}
            for name in ("scratch", "imagenet_prompt", "prompt_plus_noise:interpolate")
        ]
        return {
            "task": "t",
            "target": "a",
            "rows": [{"start": "geosane:interpolate", "distance": distance}],
            "verdicts": {"geosane:interpolate": verdicts},
        }

    found = aa_verdicts({"f": [table(0.0), table(2.5)]})  # the prompt itself, then a start that moved
    assert [v["opponent"] for v in found] == ["imagenet_prompt", "prompt_plus_noise:interpolate"]
