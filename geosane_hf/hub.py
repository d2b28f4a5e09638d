"""Saving generated models as timm repositories and publishing them to the Hub.

A repository holds ``model.safetensors`` (never a pickle), ``config.json`` (what timm's ``hf-hub:``/``local-dir:``
loading reads: ``architecture``, ``num_classes``, ``model_args`` and a ``pretrained_cfg`` of its own), ``README.md``
(the model card from ``model_cards/generated_model_card.md``) and ``geosane_generation.json`` (provenance).

Completeness: a folder is written to a temporary sibling and renamed, so it exists complete or not at all. A push
is **one commit** holding every file, card and provenance included; the Hub applies a commit atomically, so a
failed upload never yields a commit with part of the files. Transient failures are retried with backoff; when
every try failed and the repository was created by this call, it is deleted again, so no repository is left
behind that claims to hold a generated model.

Example:
    >>> import timm, tempfile
    >>> net = timm.create_model("test_resnet", in_chans=4, num_classes=6)
    >>> path = save_timm_repo(net, tempfile.mkdtemp() + "/out", {"architecture": "test_resnet"})
    >>> sorted(p.name for p in path.iterdir())
    ['README.md', 'config.json', 'geosane_generation.json', 'model.safetensors']
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosane_hf.errors import GeoSANEError

__all__ = ["HubPublishError", "OutputExistsError", "publish_folder", "render_card", "save_timm_repo", "timm_config"]

PROVENANCE_FILENAME = "geosane_generation.json"
_DROP_CFG = ("hf_hub_id", "hf_hub_filename", "url", "file", "source", "tag", "license", "paper_ids", "origin_url")


class HubPublishError(GeoSANEError, ValueError):
    """An upload that did not complete (after retries)."""


class OutputExistsError(GeoSANEError, FileExistsError):
    """The output folder exists and overwriting was not asked for."""


def timm_config(model: nn.Module, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """``config.json`` for timm: architecture, num_classes, model_args and a pretrained_cfg of the generated model.

    The pretrained_cfg starts from the architecture's (``first_conv``, ``classifier``, pooling, crop) with every
    field naming an ImageNet source removed (hub id, url, tag, license) and the input size, mean and std replaced
    by the target's bands and their standardisation.
    """
    cfg = {k: v for k, v in dict(getattr(model, "pretrained_cfg", {})).items() if k not in _DROP_CFG}
    in_chans = int(provenance.get("in_chans") or 3)
    num_classes = int(getattr(model, "num_classes", provenance.get("num_classes", 0)))
    size = list(cfg.get("input_size", (3, 224, 224)))[1:]
    cfg["input_size"] = [in_chans, *size]
    for key in ("test_input_size", "min_input_size"):
        if cfg.get(key):
            cfg[key] = [in_chans, *list(cfg[key])[1:]]
    pre = provenance.get("preprocessing") or {}
    cfg["mean"] = list(pre.get("mean") or [0.0] * in_chans)
    cfg["std"] = list(pre.get("std") or [1.0] * in_chans)
    cfg["num_classes"] = num_classes
    cfg["tag"] = "geosane"
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if v is not None}
    architecture = provenance.get("architecture") or cfg.get("architecture")
    cfg["architecture"] = architecture
    return {
        "architecture": architecture,
        "num_classes": num_classes,
        "num_features": int(getattr(model, "num_features", 0)),
        "model_args": {"in_chans": in_chans, "num_classes": num_classes},
        "pretrained_cfg": cfg,
    }


def render_card(provenance: Mapping[str, Any], repo_id: str | None = None, license: str = "other") -> str:
    """The model card, filled from a provenance record."""
    template = resources.files("geosane_hf").joinpath("..", "model_cards", "generated_model_card.md")
    path = Path(str(template))
    if not path.is_file():  # installed without the repo: a minimal card
        text = "---\nlibrary_name: timm\nlicense: {license}\ntags:\n- timm\n- geosane\n---\n# {repo_name}\n"
    else:
        text = path.read_text()

    def show(value: Any) -> str:
        return json.dumps(value) if isinstance(value, (dict, list)) else str(value)

    fields = {
        "license": license,
        "repo_id": repo_id or "ORG/NAME",
        "repo_name": (repo_id or provenance.get("architecture", "generated")).split("/")[-1],
        "geosane_model": provenance.get("geosane_model"),
        "geosane_revision": provenance.get("geosane_revision"),
        "architecture": provenance.get("architecture"),
        "in_chans": provenance.get("in_chans"),
        "num_classes": provenance.get("num_classes"),
        "prompt": provenance.get("prompt"),
        "prompt_source": provenance.get("prompt_source"),
        "sampler": provenance.get("sampler"),
        "seed": provenance.get("seed"),
        "noise_scale": provenance.get("noise_scale"),
        "bands": show(provenance.get("bands")),
        "band_adaptation": show(provenance.get("band_adaptation") or "none"),
        "calibration": show(provenance.get("calibration")),
        "tokenizer": show(provenance.get("tokenizer")),
        "anchors": show(provenance.get("anchors")),
        "scores": show(provenance.get("scores")),
    }
    return text.format(**{k: ("n/a" if v is None else v) for k, v in fields.items()})


def save_timm_repo(
    model: nn.Module,
    out_dir: str | Path,
    provenance: Mapping[str, Any],
    *,
    overwrite: bool = False,
    repo_id: str | None = None,
    license: str = "other",
) -> Path:
    """Writes a timm repository folder atomically (temp sibling folder, then rename).

    Raises:
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is False.
    """
    from geosane_hf.checkpoints import save_safetensors

    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"expected a new output folder, got existing {out}; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_safetensors(state, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(timm_config(model, provenance), indent=2) + "\n")
        record = {**provenance, "license": license}
        (tmp / PROVENANCE_FILENAME).write_text(json.dumps(record, indent=2, default=str) + "\n")
        (tmp / "README.md").write_text(render_card(provenance, repo_id, license))
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

    Raises:
        HubPublishError: The upload failed after ``retries`` tries (a repository this call created is deleted).
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    # README.md (the card that claims completeness) goes last within the one commit.
    files.sort(key=lambda p: p.name == "README.md")
    try:
        existed = api.repo_exists(repo_id)
        api.create_repo(repo_id, private=private, exist_ok=True)
    except (HfHubHTTPError, OSError) as error:
        raise HubPublishError(
            f"could not create {repo_id} on {api.endpoint}: {error}; check the id and token"
        ) from error
    readme, card = folder / "README.md", None
    provenance_path = folder / PROVENANCE_FILENAME
    if provenance_path.is_file() and readme.is_file():  # the card names the repo: render it for this one
        provenance = json.loads(provenance_path.read_text())
        card = render_card(provenance, repo_id, provenance.get("license", "other")).encode()
    last: BaseException | None = None
    for attempt in range(max(1, retries)):
        operations = [CommitOperationAdd(str(p.relative_to(folder)), card if p == readme else str(p)) for p in files]
        try:
            info = api.create_commit(repo_id, operations, commit_message=commit_message)
            return str(info.commit_url)
        except (HfHubHTTPError, OSError) as error:
            last = error
            time.sleep(backoff * 2**attempt)
    if not existed:
        with contextlib.suppress(HfHubHTTPError, OSError):
            api.delete_repo(repo_id)
    raise HubPublishError(
        f"uploading {folder} to {repo_id} failed after {retries} tries ({last}); nothing was committed "
        f"{'and the new repository was deleted' if not existed else '(the repository is unchanged)'}; retry later"
    ) from last


def load_generated_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads a saved repo's weights (safetensors only)."""
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))
