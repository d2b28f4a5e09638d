"""GeoSANE weight generation: a Gradio Space.

Pick a prompt architecture (any timm name), the bands and classes of your task, a sampler and a seed; GeoSANE
generates a backbone, which you can download as a timm repo (zip) or push to the Hub, and see where it sits in the
latent space among the models GeoSANE learned from. Configuration: see ``spaces/backend.py`` (``GEOSANE_MODEL``,
``GEOSANE_COLLECTION``, ``GEOSANE_EMBEDDINGS``, ``GEOSANE_EVAL_DIR``, ``GEOSANE_MAX_PARAMS``).

Run locally (offline): ``GRADIO_ANALYTICS_ENABLED=False python spaces/app.py`` (``make space``).

Named API endpoints (``gradio_client.Client(url).predict(..., api_name=...)``):
    /generate (architecture, bands, classes, sampler, seed, num_samples) -> (summary markdown, zip file)
    /latent_view () -> plot of the last generated model among the collection
    /push (repo_id, token, private) -> status markdown
    /curves () -> convergence-curve images of the last evaluation
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # `backend` next to this file, also when run as a Space

import gradio as gr
from backend import (
    DEFAULT_ARCHITECTURE,
    DEFAULT_SAMPLER,
    MAX_SAMPLES,
    SAMPLERS,
    UNTRAINED_LABEL,
    Backend,
    InputError,
)

from geosane_hf.redaction import redact

logger = logging.getLogger("geosane.space")


def _friendly(error: BaseException, secrets: tuple[str | None, ...] = ()) -> gr.Error:
    """A readable message for the page, redacted (the token as pasted and as used, any Hub token); the traceback
    goes to the server log only, redacted too."""
    if isinstance(error, InputError):
        return gr.Error(redact(error, secrets), print_exception=False)
    text = "".join(traceback.format_exception_only(type(error), error)).strip()
    logger.error("unexpected error: %s", redact(text, secrets))
    return gr.Error(
        redact(f"Something went wrong ({type(error).__name__}: {error}). Try a smaller or different model.", secrets),
        print_exception=False,
    )


def _architectures() -> list[str]:
    import timm

    return timm.list_models()


def build_app(backend: Backend) -> gr.Blocks:
    """The Blocks UI wired to ``backend``."""

    def generate(architecture, bands, classes, sampler, seed, num_samples, progress=gr.Progress()):  # noqa: B008 (gradio API)
        progress(0.05, desc="checking the request")
        try:
            progress(0.2, desc=f"generating {architecture or '?'} with GeoSANE")
            result = backend.generate(architecture, bands, classes, sampler, seed, num_samples)
        except Exception as error:
            raise _friendly(error) from None
        progress(1.0, desc="done")
        state = {
            "zip_path": str(result.zip_path),
            "architecture": result.provenance.get("architecture"),
            "state_dict": result.state_dict,
        }
        return result.summary, str(result.zip_path), state

    def latent_view(state):
        try:
            state = state or {}
            return backend.latent_plot(state.get("state_dict"), state.get("architecture") or "model")
        except Exception as error:
            raise _friendly(error) from None

    def push(repo_id, token, private, state):
        try:
            url = backend.push((state or {}).get("zip_path"), repo_id, token, private=bool(private))
        except Exception as error:
            raise _friendly(error, secrets=(token,)) from None
        return f"Pushed: {url}"

    def curves():
        return backend.curve_images()

    # delete_cache: gradio's own copies of the served zips are removed after an hour, checked hourly (the backend
    # bounds its zips with keep_runs): a public Space must not fill its disk.
    with gr.Blocks(title="GeoSANE weight generation", delete_cache=(3600, 3600)) as app:
        gr.Markdown("# GeoSANE: generate a remote-sensing backbone")
        banner = f"**GeoSANE model:** {backend.model_label}"
        if backend.model_label.startswith(UNTRAINED_LABEL):
            banner += " (weights are random: outputs only show that the pipeline works)"
        gr.Markdown(banner, elem_id="model-banner")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                architecture = gr.Dropdown(
                    choices=_architectures(),
                    value=DEFAULT_ARCHITECTURE,
                    label="Prompt architecture (timm; type to search)",
                    allow_custom_value=True,
                    filterable=True,
                    elem_id="architecture",
                )
                with gr.Row():
                    bands = gr.Number(value=4, label="Bands (input channels)", precision=0, elem_id="bands")
                    classes = gr.Number(value=6, label="Classes", precision=0, elem_id="classes")
                with gr.Row():
                    sampler = gr.Dropdown(choices=list(SAMPLERS), value=DEFAULT_SAMPLER, label="Sampler")
                    seed = gr.Number(value=0, label="Seed", precision=0)
                    num_samples = gr.Number(value=1, label=f"Samples (1-{MAX_SAMPLES})", precision=0)
                run = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=1):
                summary = gr.Markdown("No model generated yet.", elem_id="summary")
                download = gr.File(label="Model repo (zip)", elem_id="download")
        with gr.Accordion("Push to the Hugging Face Hub", open=False):
            with gr.Row():
                repo_id = gr.Textbox(label="Repo id", placeholder="user/my-geosane-backbone")
                token = gr.Textbox(label="Write token (used once, never stored)", type="password")
                private = gr.Checkbox(value=True, label="Private")
            push_button = gr.Button("Push")
            push_status = gr.Markdown()
        with gr.Tab("Latent space"):
            plot = gr.Plot(label="The generated model (star) among the collection", elem_id="latent")
        with gr.Tab("Convergence curves (last evaluation)"):
            gallery = gr.Gallery(label="Evaluation curves", columns=2)
            refresh = gr.Button("Refresh")

        run.click(
            generate,
            [architecture, bands, classes, sampler, seed, num_samples],
            [summary, download, state],
            api_name="generate",
        ).success(latent_view, [state], [plot], api_name="latent_view")
        push_button.click(push, [repo_id, token, private, state], [push_status], api_name="push")
        refresh.click(curves, None, [gallery], api_name="curves")
        app.load(curves, None, [gallery], api_name=False)
    return app


def server_name(environ: Mapping[str, str] | None = None) -> str:
    """The host to listen on: ``GRADIO_SERVER_NAME``, else ``0.0.0.0`` on a Space (``SPACE_ID``), else 127.0.0.1.

    Example:
        >>> server_name({"SPACE_ID": "user/geosane"}), server_name({})
        ('0.0.0.0', '127.0.0.1')
    """
    env = os.environ if environ is None else environ
    if env.get("GRADIO_SERVER_NAME"):
        return env["GRADIO_SERVER_NAME"]
    return "0.0.0.0" if env.get("SPACE_ID") or env.get("SYSTEM") == "spaces" else "127.0.0.1"


def main() -> gr.Blocks:
    """Builds the backend from the environment and launches on :func:`server_name` (``GRADIO_SERVER_PORT`` or 7860)."""
    logging.basicConfig(level=logging.INFO)
    for name in ("httpx", "httpx2", "httpcore", "huggingface_hub"):  # request logs: keep them out of the console
        logging.getLogger(name).setLevel(logging.WARNING)
    backend = Backend.from_env()
    logging.getLogger("geosane.space").info("GeoSANE model: %s", backend.model_label)
    app = build_app(backend)
    app.queue(default_concurrency_limit=1)
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    app.launch(server_name=server_name(), server_port=port, prevent_thread_lock=True, show_error=False)
    return app


def serve() -> None:
    """:func:`main`, then block until Ctrl-C (``python spaces/app.py``, and the bundle's ``app.py``)."""
    demo = main()
    print(f"GeoSANE Space running on {demo.local_url} (Ctrl-C to stop)", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        demo.close()


if __name__ == "__main__":
    serve()
