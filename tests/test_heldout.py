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
    assert names[:2] == ["zoo", "members"] and names[-1] == "report"
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
    assert check["images"] == 128 + 68 and check["images_shared_with_members"] == 0
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
    assert again.returncode == 0 and again.stdout.count("done before") == len(state) - 1  # all but the report
