"""RS-tuned members (geosane_hf.experiments.members): tuning, safe caching, leave-one-source-out relatives."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from geosane_hf.evaluation import EvaluationError, Task
from geosane_hf.experiments.members import (
    MemberBudget,
    image_hashes,
    member_body,
    relatives,
    source_of,
    tune_member,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

ARCH = "tf_efficientnet_lite0"
TINY = MemberBudget(max_train=8, epochs=1)


@pytest.fixture(scope="module")
def member(tmp_path_factory):
    return tune_member(ARCH, "landsat8-cloud-segmentation", TINY, cache=tmp_path_factory.mktemp("members"))


def test_a_member_is_the_tuned_backbone_cached_as_safetensors(member, tmp_path):
    target = Task.from_name("landsat8-cloud-segmentation").target_for(ARCH)
    own = target.create().state_dict()
    assert "classifier.weight" not in member.state_dict and set(member.state_dict) < set(own)
    assert member.source == "landsat8" and len(member.image_hashes) == 258 + 84
    first = tune_member(ARCH, "landsat8-cloud-segmentation", TINY, cache=tmp_path)
    files = sorted(p.suffix for p in tmp_path.iterdir())
    assert files == [".json", ".safetensors"]
    again = tune_member(ARCH, "landsat8-cloud-segmentation", TINY, cache=tmp_path)  # from the cache
    assert all(torch.equal(first.state_dict[k], again.state_dict[k]) for k in first.state_dict)
    assert again.record() == first.record()


def test_relatives_leave_the_evaluated_source_out(member):
    assert relatives([member], Task.from_name("landsat8-cloudy-classification", max_train=8)) == []
    assert relatives([member], Task.from_name("statlog-classification", max_train=8)) == [member]
    assert source_of("spacenet-building-detection") == source_of("spacenet-building-segmentation")


def test_a_member_holding_the_evaluated_images_is_refused(member):
    statlog = Task.from_name("statlog-classification")
    leaked = dataclasses.replace(member, source="elsewhere", image_hashes=image_hashes(statlog)[:3])
    with pytest.raises(EvaluationError, match="3 in common"):
        relatives([leaked], Task.from_name("statlog-classification", max_train=8))


def test_member_body_keeps_the_prompts_stem_and_head(member):
    from geosane_hf.evaluation.geosane_start import fitted_prompt

    target = Task.from_name("statlog-classification").target_for(ARCH)
    prompt = fitted_prompt(target, 0).state_dict
    body = member_body(member, prompt, target.create())
    assert torch.equal(body["conv_stem.weight"], prompt["conv_stem.weight"])  # 4 MSS bands, the prompt's
    assert torch.equal(body["classifier.weight"], prompt["classifier.weight"])
    changed = [k for k in prompt if not torch.equal(body[k], prompt[k])]
    assert changed and all(torch.equal(body[k], member.state_dict[k]) for k in changed)


def test_a_damaged_cache_is_a_clear_error(member, tmp_path):
    tune_member(ARCH, "landsat8-cloud-segmentation", TINY, cache=tmp_path)
    record = next(tmp_path.glob("*.json"))
    record.write_text("{not json")
    with pytest.raises(EvaluationError, match=r"damaged pair.*delete both files"):
        tune_member(ARCH, "landsat8-cloud-segmentation", TINY, cache=tmp_path)


def test_unknown_task_and_architecture_are_refused(tmp_path):
    with pytest.raises(EvaluationError, match="expected a task among"):
        tune_member(ARCH, "no-such-task", TINY, cache=tmp_path)
    with pytest.raises(EvaluationError):
        tune_member("no_such_arch_xyz", "landsat8-cloud-segmentation", TINY, cache=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written


def _research_tool():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "research_transfer.py"
    spec = importlib.util.spec_from_file_location("research_transfer", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["research_transfer"] = module
    spec.loader.exec_module(module)
    return module


def test_research_summary_pairs_seeds_and_respects_the_spread(tmp_path):
    summary = _research_tool()._summary
    protocol = {"epochs": 2, "probe_epochs": 0, "lr": 1e-3, "fraction": 0.1}

    def row(start, seed, score):
        return {
            "task": "t",
            "start": start,
            "seed": seed,
            "protocol": protocol,
            "score": score,
            "initial": 0.1,
            "curve": [score / 2, score],
        }

    prompt = [0.60, 0.62, 0.64]
    rows = [row("imagenet_prompt", s, v) for s, v in enumerate(prompt)]
    rows += [row("far", s, v + 0.2) for s, v in enumerate(prompt)]  # +0.2 on every seed: beyond a 0.02 spread
    rows += [row("near", s, v + d) for s, (v, d) in enumerate(zip(prompt, (0.01, -0.01, 0.015), strict=True))]
    rows += [row("single", 0, 0.99)]  # one seed: never "beyond the spread"
    summary(rows, tmp_path / "summary.md")
    lines = {line.split(" | ")[2]: line for line in (tmp_path / "summary.md").read_text().splitlines()[2:]}
    assert "+0.200 (beyond the spread) | 0.000 | 3/3" in lines["far"]
    assert "(beyond the spread)" not in lines["near"] and "| 2/3 |" in lines["near"]
    assert "(beyond the spread)" not in lines["single"] and "| 1/1 |" in lines["single"]
    assert "2 epochs, lr 0.001" in lines["far"]
    assert [p.name for p in (tmp_path / "plots").glob("*.png")] == ["t--2-epochs--lr-0-001.png"]  # one per protocol


def test_research_rows_survive_a_cut_off_last_line(tmp_path):
    load = _research_tool()._load_rows
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}\n{"c": ')  # killed while appending the third row
    assert load(path) == [{"a": 1}, {"b": 2}]
    assert path.read_text() == '{"a": 1}\n{"b": 2}\n'  # the cut-off row is gone, the others are kept
    path.write_text('{"a": 1}\nnot json\n{"c": 3}\n')  # damage in the middle is not guessed away
    with pytest.raises(SystemExit, match="line 2 is damaged"):
        load(path)
    assert load(tmp_path / "missing.jsonl") == []


def test_members_are_collected_as_imagenet_layout_checkpoints_with_their_tuned_body(member, tmp_path):
    import timm

    from geosane_hf.collection.collector import collect, read_collection_index
    from geosane_hf.experiments.members import member_checkpoint, members_manifest
    from geosane_hf.packaged import imagenet_state_dict

    imagenet = imagenet_state_dict(ARCH)
    checkpoint = member_checkpoint(member)
    timm.create_model(ARCH).load_state_dict(checkpoint)  # strict: the whole ImageNet layout
    assert torch.equal(checkpoint["conv_stem.weight"], imagenet["conv_stem.weight"])  # stem and head stay ImageNet's
    assert torch.equal(checkpoint["classifier.weight"], imagenet["classifier.weight"])
    tuned = "blocks.6.0.conv_pwl.weight"
    assert torch.equal(checkpoint[tuned], member.state_dict[tuned]) and not torch.equal(
        checkpoint[tuned], imagenet[tuned]
    )

    manifest = members_manifest([member], tmp_path / "members")
    (entry,) = manifest.entries
    assert entry.architecture.name == ARCH and entry.role == "rs-model" and entry.task == "segmentation"
    assert member.data_hash[:16] in entry.training_data
    report = collect(manifest, tmp_path / "collection", progress=False)
    assert not report.failed
    (record,) = read_collection_index(tmp_path / "collection")
    assert record.architecture["name"] == ARCH
    with pytest.raises(EvaluationError, match="at least one member"):
        members_manifest([], tmp_path / "none")
