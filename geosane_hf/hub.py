"""Saving generated models as timm repositories and publishing them to the Hub.

A repository is what timm's own ``save_for_hf`` writes (``model.safetensors``, never a pickle, and ``config.json``
with ``architecture``, ``num_classes``, ``model_args`` and a ``pretrained_cfg`` whose input size, mean and std are
the target's bands), plus ``README.md`` (the model card, built with huggingface_hub's ``ModelCardData`` from the
packaged template ``generated_model_card.md``), ``geosane_generation.json`` (provenance) and, for
``license="other"``, ``LICENSE.md`` (the licence chain the card's ``license_link`` points to).

Why not timm's ``push_to_hf_hub``: it writes timm's generic README (ours carries the provenance), pushes a pickle
next to the safetensors by default, and leaves a repository it created behind when the upload fails. The folder is
written with ``save_for_hf`` and uploaded by :func:`publish_folder` in one commit instead.

Completeness: a folder is written to a temporary sibling and renamed, so it exists complete or not at all. A push
is **one commit** holding every file, card and provenance included; the Hub applies a commit atomically, so a
failed upload never yields a commit with part of the files. The card's metadata is validated by the Hub
(``/api/validate-yaml``) before the repository is created; transient failures are retried with backoff; when the
upload fails for any reason and the repository was created by this call, it is deleted again, so no repository is
left behind that claims to hold a generated model.

Example:
    >>> import timm, tempfile
    >>> net = timm.create_model("test_resnet", in_chans=4, num_classes=6)
    >>> path = save_timm_repo(net, tempfile.mkdtemp() + "/out", {"architecture": "test_resnet", "in_chans": 4})
    >>> sorted(p.name for p in path.iterdir())
    ['LICENSE.md', 'README.md', 'config.json', 'geosane_generation.json', 'model.safetensors']
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosane_hf.cards import LICENSE_FILENAME, hub_repo_id, license_metadata
from geosane_hf.errors import GeoSANEError

__all__ = [
    "HubPublishError",
    "OutputExistsError",
    "build_card",
    "publish_folder",
    "render_card",
    "save_timm_repo",
    "timm_export_config",
]

PROVENANCE_FILENAME = "geosane_generation.json"


class HubPublishError(GeoSANEError, ValueError):
    """An upload that did not complete (after retries), or a card the Hub rejected."""


class OutputExistsError(GeoSANEError, FileExistsError):
    """The output folder exists and overwriting was not asked for."""


def timm_export_config(model: nn.Module, provenance: Mapping[str, Any], license: str = "other") -> dict[str, Any]:
    """Keyword arguments of timm's ``save_for_hf`` for a generated model: our tag, licence and band statistics.

    timm writes the schema (architecture, num_classes, model_args, pretrained_cfg without the ImageNet source);
    we add ``tag: geosane``, the card's licence and the target bands' standardisation as ``mean``/``std``.
    """
    in_chans = int(provenance.get("in_chans") or getattr(model, "pretrained_cfg", {}).get("input_size", [3])[0])
    pre = provenance.get("preprocessing") or {}
    return {
        "model_config": {"pretrained_cfg": {"tag": "geosane", "license": license}},
        "data_config": {
            "mean": tuple(float(v) for v in (pre.get("mean") or [0.0] * in_chans)),
            "std": tuple(float(v) for v in (pre.get("std") or [1.0] * in_chans)),
        },
    }


def _show(value: Any) -> str:
    if value is None:
        return "n/a"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def build_card(
    provenance: Mapping[str, Any],
    repo_id: str | None = None,
    license: str = "other",
    license_name: str | None = None,
    license_link: str | None = None,
):
    """The generated model's card: a ``huggingface_hub.ModelCard`` (``card.data`` is its metadata).

    ``base_model`` is the GeoSANE model only when that is a Hub repo id; a local folder stays in the body and in
    ``geosane_generation.json``.

    >>> card = build_card({"architecture": "resnet18", "geosane_model": "runs/small/model"}, "org/resnet18-landsat")
    >>> card.data.base_model is None, card.data.license_name
    (True, 'geosane-license-chain')
    >>> build_card({"geosane_model": "geosane/base"}, license="apache-2.0").data.base_model
    'geosane/base'
    """
    from huggingface_hub import ModelCard, ModelCardData

    from geosane_hf.package_data import card_template

    licence = license_metadata(license, license_name, license_link)
    geosane_model = provenance.get("geosane_model")
    base_model = hub_repo_id(geosane_model)
    data = ModelCardData(
        library_name="timm",
        pipeline_tag="image-classification",
        tags=["image-classification", "timm", "remote-sensing", "geosane", "generated-weights"],
        base_model=base_model,
        **licence,
    )
    if base_model is not None:
        data.base_model_relation = "finetune"  # generated from the base model's latent space, then calibrated
    link = f"[`{base_model}`](https://huggingface.co/{base_model})" if base_model else f"`{_show(geosane_model)}`"
    values = {
        "repo_id": repo_id or "ORG/NAME",
        "repo_name": (repo_id or provenance.get("architecture") or "generated").split("/")[-1],
        "geosane_model_link": link,
        "license_summary": licence["license"]
        + (f" ({licence['license_name']}, see {licence['license_link']})" if "license_name" in licence else ""),
        "band_adaptation": _show(provenance.get("band_adaptation") or "none"),
    }
    for key in ("geosane_model", "geosane_revision", "architecture", "in_chans", "num_classes", "prompt"):
        values[key] = _show(provenance.get(key))
    for key in ("prompt_source", "sampler", "seed", "noise_scale", "bands", "calibration", "tokenizer", "anchors"):
        values[key] = _show(provenance.get(key))
    values["scores"] = _show(provenance.get("scores"))
    return ModelCard.from_template(data, template_str=card_template("generated_model_card"), **values)


def render_card(
    provenance: Mapping[str, Any],
    repo_id: str | None = None,
    license: str = "other",
    license_name: str | None = None,
    license_link: str | None = None,
) -> str:
    """The model card's text (see :func:`build_card`)."""
    return str(build_card(provenance, repo_id, license, license_name, license_link))


def _license_text(provenance: Mapping[str, Any], licence: Mapping[str, str]) -> str:
    return (
        f"# {licence['license_name']}\n\n"
        "These weights were generated by a GeoSANE model, not trained on data. They derive from:\n\n"
        f"- the prompt `{_show(provenance.get('prompt'))}` ({_show(provenance.get('prompt_source'))}), under its "
        "authors' licence;\n"
        f"- the GeoSANE model `{_show(provenance.get('geosane_model'))}` (see its card), which was trained on the "
        "weights of its collection, each under its own licence (the dataset card's licence table).\n\n"
        "Use and redistribution follow the most restrictive of these licences.\n"
    )


def save_timm_repo(
    model: nn.Module,
    out_dir: str | Path,
    provenance: Mapping[str, Any],
    *,
    overwrite: bool = False,
    repo_id: str | None = None,
    license: str = "other",
    license_name: str | None = None,
    license_link: str | None = None,
) -> Path:
    """Writes a timm repository folder atomically (temp sibling folder, then rename).

    Args:
        model: The timm model.
        out_dir: The folder to write.
        provenance: The generation record (``GenerationOutput.provenance``).
        overwrite: Replace an existing folder.
        repo_id: The Hub repo the card's usage snippet names.
        license / license_name / license_link: The card's licence (see :func:`geosane_hf.cards.license_metadata`).

    Raises:
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is False.
    """
    from timm.models import save_for_hf

    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"expected a new output folder, got existing {out}; pass --overwrite to replace it")
    licence = license_metadata(license, license_name, license_link)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model = model.cpu()
        save_for_hf(model, str(tmp), safe_serialization=True, **timm_export_config(model, provenance, license))
        record = {**provenance, **licence}
        (tmp / PROVENANCE_FILENAME).write_text(json.dumps(record, indent=2, default=str) + "\n")
        if licence.get("license_link") == LICENSE_FILENAME:
            (tmp / LICENSE_FILENAME).write_text(_license_text(provenance, licence))
        (tmp / "README.md").write_text(render_card(provenance, repo_id, **licence))
        if out.exists():
            old = out.with_name(f".{out.name}.old-{time.time_ns()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _retryable(error: BaseException) -> bool:
    """Network trouble and server errors are retried; a refused request (4xx but 408/429) or a bug is not."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(error, HfHubHTTPError):
        status = getattr(getattr(error, "response", None), "status_code", None)
        return status is None or status >= 500 or status in (408, 429)
    return isinstance(error, OSError)


def publish_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    commit_message: str = "Add GeoSANE-generated weights",
) -> str:
    """Uploads every file of ``folder`` to ``repo_id`` in one commit, with retries; returns the commit URL.

    The card (``README.md``) is re-rendered for ``repo_id`` and checked by the Hub (``/api/validate-yaml``) before
    the repository is created, so a card the Hub refuses never leaves a repository behind. When the commit fails
    for any reason, a repository this call created is deleted again before the error is raised.

    Raises:
        HubPublishError: The card was refused, the repository could not be created, or the upload failed after
            ``retries`` tries (a repository this call created is deleted).
    """
    from huggingface_hub import CommitOperationAdd, HfApi, ModelCard

    api = HfApi(token=token)
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    # README.md (the card that claims completeness) goes last within the one commit.
    files.sort(key=lambda p: p.name == "README.md")
    readme, card = folder / "README.md", None
    provenance_path = folder / PROVENANCE_FILENAME
    if provenance_path.is_file() and readme.is_file():  # the card names the repo: render it for this one
        provenance = json.loads(provenance_path.read_text())
        licence = {k: provenance[k] for k in ("license", "license_name", "license_link") if provenance.get(k)}
        card = render_card(provenance, repo_id, **licence)
    elif readme.is_file():
        card = readme.read_text(encoding="utf-8")
    if card is not None:
        try:
            ModelCard(card).validate(repo_type="model")  # the Hub's own check, before anything is created
        except Exception as error:
            raise HubPublishError(
                f"the Hub refused the card of {folder} for {repo_id} ({error}); nothing was created: fix the card "
                "metadata (license, base_model, model-index) and publish again"
            ) from error
    try:
        existed = api.repo_exists(repo_id)
        api.create_repo(repo_id, private=private, exist_ok=True)
    except Exception as error:
        raise HubPublishError(
            f"could not create {repo_id} on {api.endpoint}: {error}; check the id and token"
        ) from error
    last: BaseException | None = None
    tries = 0
    try:
        for attempt in range(max(1, retries)):
            tries += 1
            operations = [
                CommitOperationAdd(str(p.relative_to(folder)), card.encode() if p == readme else str(p)) for p in files
            ]
            try:
                info = api.create_commit(repo_id, operations, commit_message=commit_message)
                return str(info.commit_url)
            except Exception as error:
                last = error
                if not _retryable(error) or attempt + 1 >= max(1, retries):
                    break
                time.sleep(backoff * 2**attempt)
    except BaseException as error:  # interrupted (Ctrl-C) between tries: clean up, then let it through
        last = error
        if not existed:
            with contextlib.suppress(Exception):
                api.delete_repo(repo_id)
        raise
    if not existed:
        with contextlib.suppress(Exception):
            api.delete_repo(repo_id)
    raise HubPublishError(
        f"uploading {folder} to {repo_id} failed after {tries} tries ({type(last).__name__}: {last}); nothing was "
        f"committed {'and the new repository was deleted' if not existed else '(the repository is unchanged)'}; "
        "retry later, or fix what the error names"
    ) from last


def load_generated_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads a saved repo's weights (safetensors only)."""
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))
