"""The Space's backend: input checks, the one adapter onto ``generate_weights``, saving, zipping, pushing, plots.

Everything the UI does goes through :class:`Backend`; app.py only wires widgets. Errors a person can fix raise
:class:`InputError` (a ``ValueError``) with a readable message; app.py turns them into ``gr.Error``.

Configuration (environment):
    GEOSANE_MODEL: folder of a saved GeoSANE model (``save_pretrained``) or a Hub id such as ``geosane/base``
        (resolved through the local Hub cache first, where ``make demo`` publishes it). Unset or missing: an
        untrained tiny model with random weights, labelled "untrained demo model" everywhere.
    GEOSANE_COLLECTION: collector output folder for the latent view (optional).
    GEOSANE_EMBEDDINGS: the collection's embeddings file from ``geosane embed`` (skips embedding at first use).
    GEOSANE_EVAL_DIR: evaluation output folder; its ``*.png`` files (convergence curves) are shown (optional).
    GEOSANE_MAX_PARAMS: largest prompt architecture accepted, in parameters (default 60M).

Example:
    >>> b = Backend.from_env({})
    >>> b.model_label
    'untrained demo model (tiny, random weights)'
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from geosane_hf.errors import GeoSANEError
from geosane_hf.generation.registry import DEFAULT_SAMPLER
from geosane_hf.generation.registry import SAMPLER_NAMES as SAMPLERS  # the one table of sampler names

MAX_SAMPLES = 8
MAX_BANDS = 64
MAX_CLASSES = 10_000
DEFAULT_MAX_PARAMS = 60_000_000
DEFAULT_ARCHITECTURE = "mobilenetv3_small_050"
UNTRAINED_LABEL = "untrained demo model (tiny, random weights)"
DEFAULT_KEEP_RUNS = 8  # generated zips kept on disk (downloads and pushes of recent requests), the oldest go first


class InputError(GeoSANEError, ValueError):
    """Input a person can fix; the message is shown as is."""


@dataclass
class GenerationResult:
    """What one click on "Generate" produced.

    Attributes:
        summary: Markdown summary (parameters, layers, time, provenance).
        zip_path: The saved timm repo (model.safetensors, config.json, provenance, README.md) as a zip: the one file
            a request leaves on disk (the folder is deleted once zipped; the oldest zips beyond ``keep_runs`` go too).
        provenance: The provenance record.
        state_dict: The generated weights (sample 0).
        seconds: Wall time of the generation.
    """

    summary: str
    zip_path: Path
    provenance: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    seconds: float
    num_parameters: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def estimate_parameters(architecture: str, in_chans: int, num_classes: int) -> int:
    """Parameter count of a timm architecture built on the meta device (no memory, no init time).

    Raises:
        InputError: Not a timm architecture.

    Example:
        >>> estimate_parameters("resnet18", 3, 1000)
        11689512
    """
    import timm

    if not timm.is_model(architecture):
        import difflib

        near = difflib.get_close_matches(architecture, timm.list_models(), n=3, cutoff=0.5)
        raise InputError(f"expected a timm architecture name, got {architecture!r}; did you mean {near or 'none'}?")
    with torch.device("meta"):
        model = timm.create_model(architecture, pretrained=False, in_chans=in_chans, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())


def _as_int(name: str, value: Any, low: int, high: int) -> int:
    if value is None or value == "":
        raise InputError(f"expected {name} between {low} and {high}, got nothing")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"expected {name} to be a whole number, got {value!r}") from None
    if not number.is_integer():
        raise InputError(f"expected {name} to be a whole number, got {value!r}")
    if not low <= number <= high:
        raise InputError(f"expected {name} between {low} and {high}, got {int(number)}")
    return int(number)


def check_request(
    architecture: str | None,
    bands: Any,
    classes: Any,
    sampler: str | None,
    seed: Any,
    num_samples: Any,
    *,
    max_params: int = DEFAULT_MAX_PARAMS,
    has_collection: bool = False,
) -> dict[str, Any]:
    """Validates the form; returns normalised values or raises :class:`InputError`.

    Example:
        >>> check_request("resnet10t", 4, 6, "prompt-noise", 0, 1)["in_chans"]
        4
        >>> check_request("", 4, 6, "prompt-noise", 0, 1)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        InputError: Choose a prompt architecture ...
    """
    if not architecture or not str(architecture).strip():
        raise InputError("Choose a prompt architecture first (type to search the timm names, e.g. resnet10t).")
    architecture = str(architecture).strip()
    in_chans = _as_int("the number of bands", bands, 1, MAX_BANDS)
    num_classes = _as_int("the number of classes", classes, 1, MAX_CLASSES)
    num_samples = _as_int("the number of samples", num_samples, 1, MAX_SAMPLES)
    seed = _as_int("the seed", seed, 0, 2**31 - 1)
    if sampler not in SAMPLERS:
        raise InputError(f"expected a sampler in {list(SAMPLERS)}, got {sampler!r}")
    from geosane_hf.generation.registry import get_sampler_class

    if get_sampler_class(sampler).requires_anchors and not has_collection:  # kde
        raise InputError(
            f"the {sampler!r} sampler needs a collection of anchor models; set GEOSANE_COLLECTION or use "
            f"{DEFAULT_SAMPLER}"
        )
    count = estimate_parameters(architecture, in_chans, num_classes)
    if count > max_params:
        raise InputError(
            f"{architecture} has {count / 1e6:.1f}M parameters, more than this machine's limit of "
            f"{max_params / 1e6:.0f}M (GEOSANE_MAX_PARAMS); choose a smaller architecture."
        )
    return {
        "architecture": architecture,
        "in_chans": in_chans,
        "num_classes": num_classes,
        "sampler": sampler,
        "seed": seed,
        "num_samples": num_samples,
        "estimated_parameters": count,
    }


def run_generation(model: torch.nn.Module, request: Mapping[str, Any], **options: Any):
    """The adapter onto the generation API: the only place that calls :func:`generate_weights`.

    Returns a :class:`geosane_hf.generation.GenerationOutput`; its ``GenerationError`` becomes :class:`InputError`.
    """
    from geosane_hf.generation import GenerationError, generate_weights

    try:
        return generate_weights(
            model,
            request["architecture"],
            num_samples=request["num_samples"],
            sampler=request["sampler"],
            seed=request["seed"],
            in_chans=request["in_chans"],
            num_classes=request["num_classes"],
            **options,
        )
    except GenerationError as error:
        raise InputError(str(error)) from error


class Backend:
    """Holds the GeoSANE model, the collection embeddings (computed once) and the output folder."""

    def __init__(
        self,
        model: torch.nn.Module,
        model_label: str,
        *,
        collection: str | None = None,
        eval_dir: str | None = None,
        max_params: int = DEFAULT_MAX_PARAMS,
        work_dir: str | None = None,
        calibrate: bool = True,
        embeddings: str | None = None,
        keep_runs: int = DEFAULT_KEEP_RUNS,
    ) -> None:
        self.model = model.eval()
        self.model_label = model_label
        self.collection = collection if collection and Path(collection, "collection.jsonl").is_file() else None
        self.eval_dir = eval_dir
        self.max_params = max_params
        self.calibrate = calibrate
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="geosane-space-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.keep_runs = max(1, int(keep_runs))
        self._embeddings = None
        if embeddings and Path(embeddings).is_file():
            from geosane_hf.embedding import load_embeddings

            self._embeddings = load_embeddings(embeddings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Backend:
        """Builds the backend from the ``GEOSANE_*`` variables (see module doc)."""
        from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel

        env = os.environ if environ is None else environ
        path = env.get("GEOSANE_MODEL", "")
        model, label = None, UNTRAINED_LABEL
        if path and Path(path, "config.json").is_file():
            model, label = GeoSANEModel.from_pretrained(path), f"GeoSANE model {path}"
        elif path and not Path(path).exists() and path.count("/") == 1:  # a Hub id, e.g. geosane/base (cache first)
            try:
                model, label = GeoSANEModel.from_pretrained(path), f"GeoSANE model {path}"
            except OSError as error:  # not cached and no Hub reachable
                label = f"{UNTRAINED_LABEL}: {path} could not be loaded ({type(error).__name__})"
        elif path:
            label = f"{UNTRAINED_LABEL}: {path} has no config.json"
        if model is None:
            torch.manual_seed(0)
            model = GeoSANEModel(GeoSANEConfig.from_preset("tiny"))
        return cls(
            model,
            label,
            collection=env.get("GEOSANE_COLLECTION") or None,
            eval_dir=env.get("GEOSANE_EVAL_DIR") or None,
            max_params=int(env.get("GEOSANE_MAX_PARAMS", DEFAULT_MAX_PARAMS)),
            calibrate=env.get("GEOSANE_CALIBRATE", "1") not in ("0", "false", "False"),
            embeddings=env.get("GEOSANE_EMBEDDINGS") or None,
            keep_runs=int(env.get("GEOSANE_KEEP_RUNS", DEFAULT_KEEP_RUNS)),
        )

    # ------------------------------------------------------------------------------------------------ generation

    def generate(self, architecture, bands, classes, sampler, seed, num_samples) -> GenerationResult:
        """Checks the form, generates, saves the repo folder and its zip; returns a :class:`GenerationResult`."""
        from geosane_hf.hub import save_timm_repo

        request = check_request(
            architecture,
            bands,
            classes,
            sampler,
            seed,
            num_samples,
            max_params=self.max_params,
            has_collection=self.collection is not None,
        )
        start = time.perf_counter()
        output = run_generation(
            self.model,
            request,
            collection=self.collection,
            calibrate=self.calibrate,
            model_id=self.model_label,
        )
        seconds = time.perf_counter() - start
        provenance = dict(output.provenance)
        name = f"{request['architecture']}-{request['in_chans']}b-{request['num_classes']}c-seed{request['seed']}"
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=self.work_dir))
        try:
            repo = save_timm_repo(output.models[0], run_dir / name, provenance)
            zip_path = Path(shutil.make_archive(str(run_dir / name), "zip", root_dir=repo))
            shutil.rmtree(repo)  # the zip is what the page serves and what a push unpacks
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        self._prune_runs(keep=run_dir)
        net = output.models[0]
        num_parameters = sum(p.numel() for p in net.parameters())
        layers = sum(1 for k in output.state_dicts[0] if k.endswith("weight"))
        summary = render_summary(provenance, output.timings, seconds, num_parameters, layers, self.model_label)
        return GenerationResult(summary, zip_path, provenance, output.state_dicts[0], seconds, num_parameters)

    def _prune_runs(self, keep: Path) -> None:
        """Deletes the oldest run folders beyond ``keep_runs`` (a public Space must not fill its disk)."""
        runs = sorted(
            (p for p in self.work_dir.glob("run-*") if p.is_dir() and p != keep), key=lambda p: p.stat().st_mtime
        )
        for old in runs[: max(0, len(runs) - (self.keep_runs - 1))]:
            shutil.rmtree(old, ignore_errors=True)

    def push(self, zip_path: str | None, repo_id: str | None, token: str | None, private: bool = True) -> str:
        """Uploads the last generated repo; the token is used for this call only, never stored, logged or shown.

        The repo is unpacked from the request's zip into a temporary folder that is deleted afterwards. Every
        message is redacted for the token as pasted and as used (stripped of whitespace).
        """
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        from geosane_hf.hub import publish_folder
        from geosane_hf.redaction import redact

        def refuse(message: str) -> InputError:
            return InputError(redact(message, secrets=[token]))

        if not zip_path or not Path(zip_path).is_file():
            raise refuse(
                "Generate a model first; there is nothing to push yet (or it was removed to free space: generate "
                "again)."
            )
        if not token or not token.strip():
            raise refuse("Paste a Hugging Face write token to push (it is not stored).")
        repo_id = (repo_id or "").strip()
        try:
            if "/" not in repo_id:
                raise HFValidationError("a namespace is needed")
            validate_repo_id(repo_id)
        except HFValidationError as error:
            raise refuse(f"expected a Hub repo id like 'user/my-backbone', got {repo_id!r} ({error})") from None
        folder = Path(tempfile.mkdtemp(prefix="push-", dir=self.work_dir))
        try:
            shutil.unpack_archive(zip_path, folder, "zip")
            return publish_folder(folder, repo_id, private=private, token=token.strip(), retries=2)
        except Exception as error:
            raise refuse(f"push failed: {type(error).__name__}: {error}") from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------------------------------------------ latent view

    def collection_embeddings(self):
        """The collection's embeddings (computed on first use, then cached), or None without a collection."""
        if self._embeddings is None and self.collection is not None:
            from geosane_hf.embedding import embed_collection

            self._embeddings = embed_collection(self.model, self.collection, show_progress=False)
        return self._embeddings

    def latent_plot(self, state_dict: Mapping[str, torch.Tensor] | None, architecture: str = "generated"):
        """Matplotlib figure: the collection (if any) and the generated model as a star."""
        from geosane_hf.embedding import embed_state_dict
        from geosane_hf.plots import latent_figure, project_2d

        vectors, archs, mods, highlight = [], [], [], []
        emb = self.collection_embeddings()
        if emb is not None:
            vectors.append(emb.vectors)
            archs += emb.architectures
            mods += emb.modalities
        if state_dict is not None:
            highlight.append(len(archs))
            vectors.append(embed_state_dict(self.model, state_dict)[None])
            archs.append(f"generated {architecture}")
            mods.append("generated")
        if not vectors:
            return None
        projection = project_2d(torch.cat(vectors), method="umap")
        title = f"{self.model_label}" + ("" if emb else " (no collection: set GEOSANE_COLLECTION)")
        return latent_figure(projection, archs, mods, highlight=highlight, title=title)

    def curve_images(self) -> list[str]:
        """PNG files of the last evaluation (convergence curves), newest first; empty when none."""
        if not self.eval_dir or not Path(self.eval_dir).is_dir():
            return []
        files = sorted(Path(self.eval_dir).rglob("*.png"), key=lambda p: p.stat().st_mtime, reverse=True)
        return [str(p) for p in files[:12]]


def render_summary(
    provenance: Mapping[str, Any],
    timings: Mapping[str, float],
    seconds: float,
    num_parameters: int,
    layers: int,
    model_label: str,
) -> str:
    """Markdown summary of one generation.

    Example:
        >>> print(render_summary({"architecture": "resnet10t"}, {"encode": 0.5}, 1.0, 10, 2, "m").splitlines()[0])
        ### Generated resnet10t
    """
    steps = ", ".join(f"{k} {v:.2f}s" for k, v in timings.items())
    keep = {
        k: provenance.get(k)
        for k in ("prompt_source", "in_chans", "num_classes", "bands", "sampler", "seed", "noise_scale", "head")
    }
    return "\n".join(
        [
            f"### Generated {provenance.get('architecture', '?')}",
            f"- **Parameters:** {num_parameters:,}",
            f"- **Layers (weight tensors):** {layers}",
            f"- **Time:** {seconds:.2f} s ({steps})",
            f"- **GeoSANE model:** {model_label}",
            "",
            "**Provenance**",
            "```json",
            json.dumps(keep, indent=1, default=str),
            "```",
        ]
    )
