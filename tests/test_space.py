"""The Space (spaces/app.py): gradio_client API tests and a real headless-browser test.

The app runs in this process on 127.0.0.1 (free port) with an untrained tiny GeoSANE and no BatchNorm calibration,
so one generation of the tiny ``test_resnet`` prompt takes about a second.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import socket
import sys
import time
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio_client

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "spaces"
PROMPT = "test_resnet"  # timm's tiny test architecture: generation takes about a second
SECRET = "hf_do_not_echo_this_token_123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _import_space():
    sys.path.insert(0, str(SPACE))
    try:
        backend = importlib.import_module("backend")
        app = importlib.import_module("app")
    finally:
        sys.path.remove(str(SPACE))
    return backend, app


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """(url, backend): the app on 127.0.0.1 with a tiny untrained GeoSANE; closed after the module."""
    import torch

    from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel

    backend_module, app_module = _import_space()
    eval_dir = tmp_path_factory.mktemp("eval")
    _write_png(eval_dir / "curves" / "convergence.png")
    torch.manual_seed(0)
    backend = backend_module.Backend(
        GeoSANEModel(GeoSANEConfig.from_preset("tiny")),
        backend_module.UNTRAINED_LABEL,
        eval_dir=str(eval_dir),
        calibrate=False,
        work_dir=str(tmp_path_factory.mktemp("space")),
    )
    demo = app_module.build_app(backend)
    demo.queue(default_concurrency_limit=1)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", backend
    finally:
        demo.close()


def _write_png(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0.3, 0.6, 0.8])
    fig.savefig(path)
    plt.close(fig)


@pytest.fixture(scope="module")
def client(space):
    return gradio_client.Client(space[0], verbose=False)


def _generate(client, architecture=PROMPT, bands=4, classes=6, sampler="prompt-noise", seed=0, samples=1):
    return client.predict(architecture, bands, classes, sampler, seed, samples, api_name="/generate")


def _check_zip(path: str | Path, in_chans: int, num_classes: int) -> dict:
    import timm
    from safetensors.torch import load

    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        assert {"model.safetensors", "config.json", "README.md"} <= names
        config = json.loads(archive.read("config.json"))
        weights = load(archive.read("model.safetensors"))
    assert config["architecture"] == PROMPT
    net = timm.create_model(PROMPT, pretrained=False, in_chans=in_chans, num_classes=num_classes)
    net.load_state_dict(weights, strict=True)  # the zip holds a complete, loadable timm model
    return config


def test_generate_endpoint_returns_summary_and_loadable_zip(client):
    summary, zip_path = _generate(client, bands=5, classes=3)
    assert f"Generated {PROMPT}" in summary and "Parameters" in summary and "untrained demo model" in summary
    assert '"in_chans": 5' in summary and '"sampler": "prompt-noise"' in summary
    _check_zip(zip_path, in_chans=5, num_classes=3)


def test_same_seed_same_weights_different_seed_differs(client):
    from safetensors.torch import load

    def weights(seed):
        with zipfile.ZipFile(_generate(client, seed=seed)[1]) as archive:
            return load(archive.read("model.safetensors"))

    a, b, c = weights(1), weights(1), weights(2)
    assert all((a[k] == b[k]).all() for k in a)
    assert any(not (a[k] == c[k]).all() for k in a if a[k].is_floating_point())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"architecture": ""}, "Choose a prompt architecture"),
        ({"bands": 0}, "number of bands between 1 and"),
        ({"classes": -3}, "number of classes between 1 and"),
        ({"samples": 10**9}, "number of samples between 1 and 8"),
        ({"architecture": "vit_huge_patch14_224"}, "more than this machine's limit"),
        ({"architecture": "resnet_does_not_exist"}, "expected a timm architecture name"),
        ({"sampler": "kde"}, "needs a collection"),
    ],
)
def test_bad_input_gives_readable_error_not_traceback(client, args, message):
    with pytest.raises(Exception) as info:  # gradio_client's AppError carries the gr.Error message
        _generate(client, **args)
    text = str(info.value)
    assert message in text
    assert "Traceback" not in text and 'File "' not in text


def test_push_requires_generation_repo_and_token_without_echoing_it(space):
    fresh = gradio_client.Client(space[0], verbose=False)  # a new session: nothing generated yet
    with pytest.raises(Exception, match="Generate a model first"):
        fresh.predict("user/repo", SECRET, True, api_name="/push")
    _generate(fresh)
    with pytest.raises(Exception, match="Paste a Hugging Face write token"):
        fresh.predict("user/repo", "", True, api_name="/push")
    with pytest.raises(Exception) as info:
        fresh.predict("no-namespace", SECRET, True, api_name="/push")
    assert "expected a Hub repo id" in str(info.value) and SECRET not in str(info.value)


def test_push_uploads_to_local_hub_and_token_is_not_kept(space, hub_env, capfd):
    from huggingface_hub import HfApi

    url, backend = space
    session = gradio_client.Client(url, verbose=False)
    _generate(session)
    repo_id = hub_env.unique_repo_id("space-push")
    status = session.predict(repo_id, hub_env.token, False, api_name="/push")
    assert status.startswith("Pushed:")
    files = set(HfApi(token=hub_env.token).list_repo_files(repo_id))
    assert {"model.safetensors", "config.json", "README.md"} <= files
    # Never stored on the backend or written to the output folder, never printed.
    assert hub_env.token not in repr(vars(backend))
    for path in Path(backend.work_dir).rglob("*"):
        if path.is_file():
            assert hub_env.token.encode() not in path.read_bytes(), path
    out, err = capfd.readouterr()
    assert hub_env.token not in out + err


def test_latent_view_and_curves_endpoints(client, space):
    _generate(client)
    plot = client.predict(api_name="/latent_view")
    assert plot is not None  # a matplotlib figure serialised by gr.Plot
    curves = client.predict(api_name="/curves")
    assert len(curves) == 1 and Path(curves[0]["image"]).suffix == ".png"


def test_backend_loads_a_hub_id_from_the_local_cache(tmp_path, monkeypatch):
    """GEOSANE_MODEL=geosane/base after `make demo` published it into the Hub cache (offline)."""
    import torch

    from geosane_hf.hub_cache import publish_to_cache
    from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel

    backend_module, _ = _import_space()
    torch.manual_seed(3)
    GeoSANEModel(GeoSANEConfig.from_preset("tiny")).save_pretrained(tmp_path / "model")
    publish_to_cache(tmp_path / "model", "geosane/base", cache_dir=tmp_path / "hub")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    backend = backend_module.Backend.from_env({"GEOSANE_MODEL": "geosane/base"})
    assert backend.model_label == "GeoSANE model geosane/base"
    expected = GeoSANEModel.from_pretrained(tmp_path / "model").state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in backend.model.state_dict().items())
    missing = backend_module.Backend.from_env({"GEOSANE_MODEL": "geosane/not-there"})
    assert missing.model_label.startswith("untrained demo model") and "could not be loaded" in missing.model_label


def test_backend_untrained_fallback_is_labelled(tmp_path):
    backend_module, _ = _import_space()
    backend = backend_module.Backend.from_env({"GEOSANE_MODEL": str(tmp_path / "missing")})
    assert backend.model_label.startswith("untrained demo model")
    assert backend.collection is None and backend.curve_images() == []


# ------------------------------------------------------------------------------------------------ browser

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt-get install -y chromium)")
def test_browser_choose_generate_download(space, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")
    url, _backend = space
    artifacts = Path(os.environ.get("GEOSANE_TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            accept_downloads=True,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = context.new_page()
            page.goto(url, wait_until="load", timeout=60_000)
            page.locator("#generate").wait_for(timeout=60_000)
            box = page.locator("#architecture input")
            box.click()
            box.fill("")  # clear the default, then type: the dropdown filters on key presses
            box.press_sequentially(PROMPT, delay=20)
            page.get_by_role("option", name=PROMPT, exact=True).click()
            page.locator("#generate").click()
            summary = page.locator("#summary")
            summary.get_by_text(f"Generated {PROMPT}").wait_for(timeout=120_000)
            assert "Parameters" in summary.inner_text()
            link = page.locator("#download a").first
            link.wait_for(timeout=30_000)
            with page.expect_download() as download_info:
                link.click()
            zip_file = tmp_path / "download.zip"
            download_info.value.save_as(zip_file)
            page.locator("#latent").scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            shot = artifacts / "space_generate.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            context.close()
    config = _check_zip(io.BytesIO(zip_file.read_bytes()), in_chans=4, num_classes=6)
    assert config["num_classes"] == 6
    print(f"screenshot: {shot} ({time.perf_counter() - start:.1f} s in the browser)")
