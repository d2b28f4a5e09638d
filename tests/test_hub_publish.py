"""Round trips through the local Hub-compatible server: generated timm repos, the GeoSANE model, failures.

The weights-dataset push + load/stream round trip is in ``tests/test_dataset.py::test_push_to_hub_then_load_and_stream``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

from geosane_hf.generation import generate_weights
from geosane_hf.hub import PROVENANCE_FILENAME, HubPublishError, OutputExistsError, publish_folder, save_timm_repo
from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel


@pytest.fixture(scope="module")
def geosane():
    torch.manual_seed(0)
    return GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()


def _generate_and_save(geosane, arch, tmp_path, **kwargs):
    out = generate_weights(geosane, arch, in_chans=4, num_classes=6, model_id="geosane-test/tiny", **kwargs)
    folder = save_timm_repo(out.models[0], tmp_path / arch, out.provenance, repo_id=f"org/{arch}")
    return out, folder


def _check_loaded(net, state_dict, arch):
    assert net.pretrained_cfg["architecture"] == arch and net.num_classes == 6
    loaded = net.state_dict()
    assert loaded.keys() == state_dict.keys() and all(torch.equal(loaded[k], state_dict[k]) for k in loaded)
    size = net.pretrained_cfg["input_size"]
    assert size[0] == 4
    y = net.eval()(torch.randn(1, *size))
    assert y.shape == (1, 6) and torch.isfinite(y).all()


def _publish_roundtrip(geosane, arch, tmp_path, hub_env, **kwargs):
    out, folder = _generate_and_save(geosane, arch, tmp_path, **kwargs)
    config = json.loads((folder / "config.json").read_text())
    assert {"in_chans": 4, "num_classes": 6}.items() <= config["model_args"].items()  # written by timm's save_for_hf
    assert config["pretrained_cfg"]["tag"] == "geosane" and "hf_hub_id" not in config["pretrained_cfg"]
    assert config["pretrained_cfg"]["license"] == "other"  # the card's licence, not the ImageNet weights' one
    _check_loaded(timm.create_model(f"local-dir:{folder}", pretrained=True), out.state_dicts[0], arch)
    repo_id = hub_env.unique_repo_id(arch.replace("_", "-"))
    publish_folder(folder, repo_id)
    _check_loaded(timm.create_model(f"hf-hub:{repo_id}", pretrained=True), out.state_dicts[0], arch)
    return out, folder, repo_id


def test_generated_model_publishes_and_loads_with_timm_hf_hub(geosane, tmp_path, hub_env):
    _out, _folder, repo_id = _publish_roundtrip(geosane, "test_resnet", tmp_path, hub_env, img_size=32)
    from huggingface_hub import HfApi, hf_hub_download

    files = set(HfApi().list_repo_files(repo_id))
    assert {"model.safetensors", "config.json", "README.md", PROVENANCE_FILENAME} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files)
    card = Path(hf_hub_download(repo_id, "README.md")).read_text()
    assert "library_name: timm" in card and "geosane-test/tiny" in card and "interpolate" in card
    assert "hf-hub:" + repo_id in card
    card_data = HfApi().model_info(repo_id).card_data
    assert card_data["base_model"] == "geosane-test/tiny" and card_data["license"] == "other"
    assert card_data["license_link"] == "LICENSE.md" and "LICENSE.md" in files
    provenance = json.loads(Path(hf_hub_download(repo_id, PROVENANCE_FILENAME)).read_text())
    assert provenance["seed"] == 0 and provenance["architecture"] == "test_resnet"
    # a clean process loads it too
    hub_env.run_python(
        f"import timm, torch; m = timm.create_model('hf-hub:{repo_id}', pretrained=True).eval(); "
        "assert m(torch.randn(1, 4, 32, 32)).shape == (1, 6)"
    )


def test_existing_output_folder_is_refused(geosane, tmp_path):
    net = timm.create_model("test_resnet", in_chans=4, num_classes=6)
    path = save_timm_repo(net, tmp_path / "out", {"architecture": "test_resnet", "in_chans": 4})
    with pytest.raises(OutputExistsError, match="--overwrite"):
        save_timm_repo(net, path, {"architecture": "test_resnet", "in_chans": 4})
    save_timm_repo(net, path, {"architecture": "test_resnet", "in_chans": 4, "seed": 9}, overwrite=True)
    assert json.loads((path / PROVENANCE_FILENAME).read_text())["seed"] == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folders left


BAD_CARD = "---\nlibrary_name: timm\nlicense: other\nbase_model: runs/small/model\n---\n# bad\n"


def test_server_rejects_card_metadata_the_hub_refuses(hub_env):
    from huggingface_hub import HfApi, ModelCard

    errors = []
    try:
        ModelCard(BAD_CARD).validate()
    except ValueError as error:
        errors = str(error)
    assert "license_name" in errors and "license_link" in errors and "runs/small/model" in errors
    good = ModelCard(BAD_CARD.replace("base_model: runs/small/model", "license_name: x\nlicense_link: LICENSE.md"))
    good.validate()  # accepted
    for bad, problem in (
        ("---\nlicense: apache-2\n---\n", "licence ids"),
        ("---\nmodel-index:\n- name: m\n  results:\n  - task: {type: x}\n    metrics: [{type: r2}]\n---\n", "dataset"),
        ("---\nbase_model: [org/a, /abs/path]\n---\n", "/abs/path"),
    ):
        with pytest.raises(ValueError, match=problem):
            ModelCard(bad).validate()
    # the commit itself is refused too (a client that skips /api/validate-yaml)
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    repo_id = hub_env.unique_repo_id("bad-card")
    api.create_repo(repo_id)
    api._validate_yaml = lambda *a, **k: None  # this instance skips the client-side check
    with pytest.raises(HfHubHTTPError, match="license_name"):
        api.create_commit(repo_id, [CommitOperationAdd("README.md", BAD_CARD.encode())], commit_message="bad")
    assert "README.md" not in api.list_repo_files(repo_id)


def test_refused_card_never_creates_the_repo(tmp_path, hub_env):
    from huggingface_hub import HfApi

    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "README.md").write_text(BAD_CARD)
    (folder / "weights.txt").write_text("x")
    repo_id = hub_env.unique_repo_id("refused")
    with pytest.raises(HubPublishError, match="refused the card"):
        publish_folder(folder, repo_id, retries=1, backoff=0.01)
    assert not HfApi().repo_exists(repo_id)


def test_a_refused_commit_deletes_the_repo_it_created(tmp_path, hub_env):
    from huggingface_hub import HfApi

    net = timm.create_model("test_resnet", in_chans=4, num_classes=6)
    folder = save_timm_repo(net, tmp_path / "out", {"architecture": "test_resnet", "in_chans": 4})
    repo_id = hub_env.unique_repo_id("refused-commit")
    fault = hub_env.server.fail_next(r"POST /api/.*/commit/", times=None, status=403, message="forbidden")
    try:
        with pytest.raises(HubPublishError, match="failed after 1 tries"):
            publish_folder(folder, repo_id, retries=3, backoff=0.01)  # 403 is not transient: no retry
    finally:
        hub_env.server.clear_faults()
    assert fault.hits == 1 and not HfApi().repo_exists(repo_id)


def test_local_geosane_model_stays_out_of_card_metadata(geosane, tmp_path, hub_env):
    from huggingface_hub import HfApi

    local = tmp_path / "runs" / "model"  # looks like org/name, but it is a folder
    local.mkdir(parents=True)
    out = generate_weights(geosane, "test_resnet", in_chans=4, num_classes=6, model_id=str(local), calibrate=False)
    folder = save_timm_repo(out.models[0], tmp_path / "gen", out.provenance, license="cc-by-4.0")
    repo_id = hub_env.unique_repo_id("local-base")
    publish_folder(folder, repo_id)
    card_data = HfApi().model_info(repo_id).card_data
    assert "base_model" not in card_data.to_dict() and card_data.license == "cc-by-4.0"
    assert json.loads((folder / PROVENANCE_FILENAME).read_text())["geosane_model"] == str(local)


def test_failed_upload_leaves_no_repo_claiming_completeness(tmp_path, hub_env):
    from huggingface_hub import HfApi

    net = timm.create_model("test_resnet", in_chans=4, num_classes=6)
    folder = save_timm_repo(net, tmp_path / "out", {"architecture": "test_resnet", "in_chans": 4})
    repo_id = hub_env.unique_repo_id("fails")
    hub_env.server.fail_next(r"POST /api/.*/commit/", times=None, status=503, after_bytes=64, message="disk full")
    try:
        with pytest.raises(HubPublishError, match="failed after 2 tries"):
            publish_folder(folder, repo_id, retries=2, backoff=0.01)
    finally:
        hub_env.server.clear_faults()
    assert not HfApi().repo_exists(repo_id)  # created by this call, deleted again


def test_transient_failure_is_retried(tmp_path, hub_env):
    from huggingface_hub import HfApi

    net = timm.create_model("test_resnet", in_chans=4, num_classes=6)
    folder = save_timm_repo(net, tmp_path / "out", {"architecture": "test_resnet", "in_chans": 4})
    repo_id = hub_env.unique_repo_id("retry")
    hub_env.server.fail_next(r"POST /api/.*/commit/", times=1, status=503, after_bytes=64)
    publish_folder(folder, repo_id, retries=3, backoff=0.01)
    assert "README.md" in HfApi().list_repo_files(repo_id)


def test_weight_generation_pipeline_from_a_hub_repo(geosane, tmp_path, hub_env):
    from huggingface_hub import HfApi

    from geosane_hf.generation.pipeline import save_pretrained_with_pipeline

    folder = save_pretrained_with_pipeline(geosane, tmp_path / "model")
    assert json.loads((folder / "config.json").read_text())["custom_pipelines"]["weight-generation"]["pt"] == [
        "AutoModel"
    ]
    repo_id = hub_env.unique_repo_id("pipe")
    HfApi().create_repo(repo_id)
    HfApi().upload_folder(folder_path=str(folder), repo_id=repo_id)
    # a fresh process that never imported geosane_hf: the task comes from the repo's config and pipeline.py
    hub_env.run_python(
        f"""
        import sys
        from transformers import pipeline
        pipe = pipeline(model={repo_id!r}, trust_remote_code=True)
        assert type(pipe).__name__ == "WeightGenerationPipeline", type(pipe)
        out = pipe("test_resnet", in_chans=4, num_classes=6, calibrate=False)
        assert out.models[0].num_classes == 6
        """
    )


def test_geosane_model_push_and_automodel_roundtrip(geosane, hub_env):
    from transformers import AutoModel

    repo_id = hub_env.unique_repo_id("geosane")
    geosane.push_to_hub(repo_id)
    loaded = AutoModel.from_pretrained(repo_id)
    tokens, positions = torch.randn(1, 8, 230), torch.zeros(1, 8, 3, dtype=torch.long)
    torch.testing.assert_close(loaded.eval().encode(tokens, positions), geosane.encode(tokens, positions))
    hub_env.run_python(
        f"""
        import torch
        from transformers import AutoModel
        m = AutoModel.from_pretrained({repo_id!r}, trust_remote_code=True).eval()
        assert type(m).__module__.startswith("transformers_modules"), type(m).__module__
        assert m.encode(torch.randn(1, 8, 230), torch.zeros(1, 8, 3, dtype=torch.long)).shape == (1, 8, 16)
        """
    )


def test_cli_push_to_hub(geosane, tmp_path, hub_env):
    from geosane_hf.cli import main

    model_dir = tmp_path / "geosane"
    geosane.save_pretrained(model_dir)
    repo_id = hub_env.unique_repo_id("cli")
    code = main(
        [
            "generate",
            "--prompt",
            "test_resnet",
            "--in-chans",
            "4",
            "--num-classes",
            "6",
            "--model",
            str(model_dir),
            "--out",
            str(tmp_path / "gen"),
            "--push-to-hub",
            repo_id,
            "--no-calibrate",
        ]
    )
    assert code == 0
    net = timm.create_model(f"hf-hub:{repo_id}", pretrained=True)
    assert net.num_classes == 6


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch", ["mobilenetv2_100", "resnet50", "vit_base_patch16_224", "swin_base_patch4_window7_224"]
)
def test_big_architectures_generate_publish_load(geosane, arch, tmp_path, hub_env):
    _publish_roundtrip(geosane, arch, tmp_path, hub_env, calibration_count=4, window_batch_size=64)


def test_fast_real_architecture_generate_publish_load(geosane, tmp_path, hub_env):
    _publish_roundtrip(geosane, "mobilenetv2_050", tmp_path, hub_env, calibration_count=4, img_size=64)
