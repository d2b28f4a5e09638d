"""RS-tuned members: a target family's ImageNet prompt fine-tuned on a remote-sensing task, cached safely.

The transfer question of issue 15 is whether a population holds what the ImageNet prompt lacks. These members are
the first thing it can hold: the packaged ImageNet weights of an architecture (band-adapted by wavelength) fine-tuned
on one built-in task with the shared protocol. Each member records the content hash of the data it was tuned on,
and :func:`relatives` keeps only members whose *data source* differs from an evaluated task's (leave one source
out: the two Landsat-8 tasks share their scenes, the two SpaceNet tasks their tiles), checked by source name and by
content hash, so an evaluated task's images are never in what a start is built from.

Members are cached as ``<cache>/<arch>__<task>__<budget>.safetensors`` (the backbone only, no classifier) plus a
``.json`` record (score, seconds, data hash, protocol); loading never unpickles.

Example:
    >>> source_of("landsat8-cloud-segmentation"), source_of("statlog-classification")
    ('landsat8', 'statlog')
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from geosane_hf.atomic_io import write_json, write_with
from geosane_hf.collection.manifest import CollectionManifest
from geosane_hf.evaluation.finetune import FinetuneConfig, finetune
from geosane_hf.evaluation.geosane_start import fitted_prompt
from geosane_hf.evaluation.starts.base import _classifier_keys, _first_conv_key
from geosane_hf.evaluation.tasks import Task
from geosane_hf.task_data import EvaluationError

__all__ = [
    "SOURCES",
    "ZOO_DATA_SOURCES",
    "Member",
    "MemberBudget",
    "image_hashes",
    "member_body",
    "member_checkpoint",
    "members_manifest",
    "relatives",
    "source_of",
    "task_data_hash",
    "tune_member",
]

#: Built-in tasks grouped by the imagery they are made of: tasks of one source share scenes or tiles.
SOURCES: dict[str, tuple[str, ...]] = {
    "statlog": ("statlog-classification",),
    "landsat8": ("landsat8-cloudy-classification", "landsat8-cloud-segmentation"),
    "spacenet": ("spacenet-building-segmentation", "spacenet-building-detection"),
}


#: The trained zoo's data (the ``dataset`` names of its index, :mod:`geosane_hf.task_data.builtin`) by source: the
#: zoo trains on the same Statlog patches and the same Landsat-8 scene (16x16 tiles) as the built-in tasks.
ZOO_DATA_SOURCES: dict[str, str] = {"statlog-landsat": "statlog", "landsat8-cloud": "landsat8"}


def source_of(task: str) -> str:
    """The data source of a built-in task or zoo dataset (its own name for a task of the user's).

    >>> source_of("landsat8-cloud")  # the zoo's cloud tiles: the Landsat-8 scene of the built-in tasks
    'landsat8'
    """
    if task in ZOO_DATA_SOURCES:
        return ZOO_DATA_SOURCES[task]
    return next((source for source, tasks in SOURCES.items() if task in tasks), task)


def image_hashes(task: Task) -> list[str]:
    """A short sha256 (16 hex digits) of every train and test image of `task`, as float32 bytes, sorted."""
    out = []
    for split in (task.data.train, task.data.test):
        images = split.images.detach().to(torch.float32).contiguous()  # [N, C, H, W]
        out.extend(hashlib.sha256(image.numpy().tobytes()).hexdigest()[:16] for image in images)
    return sorted(out)


def task_data_hash(task: Task) -> str:
    """sha256 over :func:`image_hashes` (labels excluded: tasks made of the same images are one source).

    >>> task_data_hash(Task.from_name("statlog-classification")) == task_data_hash(Task.from_name("statlog-classification"))
    True
    """
    return hashlib.sha256("".join(image_hashes(task)).encode()).hexdigest()


def _full(task: Task) -> Task:
    """A built-in task without its caps (members record their whole source), else the task itself."""
    return Task.from_name(task.config.name) if task.config.data != "custom" else task


@dataclass(frozen=True)
class MemberBudget:
    """How a member is tuned: train-sample cap (None: all), epochs, learning rate, seed."""

    max_train: int | None = None
    epochs: int = 3
    lr: float = 1e-3
    seed: int = 0

    @property
    def tag(self) -> str:
        return f"n{self.max_train or 'all'}-e{self.epochs}-lr{self.lr:g}-s{self.seed}"


@dataclass
class Member:
    """One RS-tuned member: the backbone's tensors (no classifier) and where they come from."""

    architecture: str
    task: str
    source: str
    data_hash: str
    image_hashes: list[str]
    score: float
    primary_metric: str
    seconds: float
    budget: MemberBudget
    state_dict: dict[str, torch.Tensor]

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "state_dict"}


def _paths(cache: Path, architecture: str, task: str, budget: MemberBudget) -> tuple[Path, Path]:
    stem = f"{architecture}__{task}__{budget.tag}"
    return cache / f"{stem}.safetensors", cache / f"{stem}.json"


def tune_member(
    architecture: str, task_name: str, budget: MemberBudget = MemberBudget(), *, cache: str | Path | None = None
) -> Member:
    """The packaged ImageNet `architecture` fine-tuned on the built-in task `task_name` (cached when `cache` is set).

    The stem is band-adapted to the task's bands by wavelength, the head initialised at `budget.seed`; the member keeps
    the backbone only (the task model's tensors under its backbone prefix, classifier dropped).

    Raises:
        EvaluationError: Unknown task, an architecture without packaged weights, or a cached record that does not match.
    """
    from safetensors.torch import load_file, save_file

    weights_path = record_path = None
    if cache is not None:
        cache = Path(cache)
        cache.mkdir(parents=True, exist_ok=True)
        weights_path, record_path = _paths(cache, architecture, task_name, budget)
        if weights_path.is_file() and record_path.is_file():
            try:
                record = json.loads(record_path.read_text())
                record["budget"] = MemberBudget(**record["budget"])
                return Member(**record, state_dict=load_file(str(weights_path)))
            except (ValueError, TypeError, KeyError, OSError) as error:  # JSON, fields, safetensors header
                raise EvaluationError(
                    f"expected a cached member at {weights_path} + {record_path.name}, got a damaged pair ({error}); "
                    "delete both files to tune the member again"
                ) from error
    task = Task.from_name(task_name, **({"max_train": budget.max_train} if budget.max_train else {}))
    target = task.target_for(architecture)
    started = time.perf_counter()
    prompt = fitted_prompt(target, budget.seed, bands=task.data.band_names)
    if "random init" in str(prompt.provenance.get("source")):
        raise EvaluationError(f"expected an architecture with packaged ImageNet weights, got {architecture}")
    model = task.build_model(target, prompt.state_dict, head_seed=budget.seed)
    result = finetune(
        model,
        task,
        FinetuneConfig(epochs=budget.epochs, lr=budget.lr, seed=budget.seed, eval_every_epoch=False, progress=False),
        description=f"member {architecture} on {task_name}",
    )
    prefix = task.backbone_prefix
    head = set(_classifier_keys(target.create()))
    body = {
        k[len(prefix) :]: v.detach().clone().contiguous()
        for k, v in model.state_dict().items()
        if k.startswith(prefix) and k[len(prefix) :] not in head
    }
    member = Member(
        architecture=architecture,
        task=task_name,
        source=source_of(task_name),
        data_hash=task_data_hash(_full(task)),
        image_hashes=image_hashes(_full(task)),
        score=result.score,
        primary_metric=result.primary_metric,
        seconds=time.perf_counter() - started,
        budget=budget,
        state_dict=body,
    )
    if weights_path is not None and record_path is not None:
        write_with(weights_path, lambda tmp: save_file(body, str(tmp)), suffix=".safetensors")
        write_json(record_path, member.record())
    return member


def relatives(members: Sequence[Member], task: Task) -> list[Member]:
    """The members that `task` may use: other data sources, by name and by image content hash.

    Raises:
        EvaluationError: A member of another source holds one of the task's images (same content hash).
    """
    own_source, own = source_of(task.config.name), set(image_hashes(_full(task)))
    kept = []
    for member in members:
        if member.source == own_source:
            continue
        shared = own.intersection(member.image_hashes)
        if shared:
            raise EvaluationError(
                f"expected member {member.task} (source {member.source}) to hold none of the images of "
                f"{task.config.name}, got {len(shared)} in common (by content hash): group the two tasks under one "
                "source in SOURCES"
            )
        kept.append(member)
    return kept


def member_body(
    member: Member, prompt: dict[str, torch.Tensor], target_model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """The prompt's state_dict with the member's tensors where shapes agree, except the stem and the classifier.

    The stem stays the prompt's (band-adapted to the evaluated task's bands: the member's stem took its own task's
    bands); BatchNorm statistics come with the member's body.
    """
    skip = set(_classifier_keys(target_model)) | {_first_conv_key(target_model)}
    out = dict(prompt)
    for key, value in member.state_dict.items():
        if key in out and key not in skip and out[key].shape == value.shape:
            out[key] = value.to(out[key].dtype).clone()
    return out


def member_checkpoint(member: Member) -> dict[str, torch.Tensor]:
    """The member as a whole ImageNet-layout timm checkpoint: the packaged ImageNet weights (3 bands, 1000 classes)
    with the member's RS-tuned body (:func:`member_body` around the ImageNet weights).

    The stem and the classifier stay ImageNet's (the member's stem took its own task's bands, its head its classes),
    so the file loads strictly into ``timm.create_model(architecture)`` and every consumer fits it to a task the way
    it fits the ImageNet prompt (stem band-adapted by wavelength, head re-initialised).
    """
    import timm

    from geosane_hf.packaged import imagenet_state_dict

    model = timm.create_model(member.architecture, pretrained=False)
    body = member_body(member, imagenet_state_dict(member.architecture), model)
    return {k: v.contiguous() for k, v in body.items()}


def members_manifest(members: Sequence[Member], folder: str | Path, name: str = "rs-members") -> CollectionManifest:
    """Writes each member as :func:`member_checkpoint` into `folder` and returns the manifest that collects them.

    Entries are ``local`` safetensors files with a strict timm architecture, ``role: rs-model``, the member's task,
    source, score and data hash (so a collection records which images its members saw).

    Raises:
        EvaluationError: No members given.
    """
    from safetensors.torch import save_file

    if not members:
        raise EvaluationError("expected at least one member to write a manifest, got none")
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    models = []
    for member in members:
        stem = f"{member.architecture}__{member.task}__{member.budget.tag}"
        path = root / f"{stem}.safetensors"  # always rewritten: a member tuned again replaces its old file
        state = member_checkpoint(member)
        write_with(path, lambda tmp, state=state: save_file(state, str(tmp)), suffix=".safetensors")
        models.append(
            {
                "id": f"member-{stem}".replace("_", "-").replace(".", "-"),
                "source": {"kind": "local", "path": path.name},
                "architecture": {"library": "timm", "name": member.architecture},
                "role": "rs-model",
                "task": member.task.rsplit("-", 1)[-1],
                "in_chans": 3,
                "training_data": f"{member.task} (source {member.source}, data sha256 {member.data_hash[:16]})",
                "license": "Apache-2.0",
                "citation": "GeoSANE-HF RS-tuned member (geosane_hf.experiments.members)",
                "family": f"rs-member/{member.architecture}",
                "num_classes": 1000,
                "metrics": {member.primary_metric: round(member.score, 6)},
                "notes": f"ImageNet {member.architecture} fine-tuned on {member.task}, budget {member.budget.tag}; "
                "stem and classifier kept from ImageNet",
            }
        )
    return CollectionManifest.from_dict({"name": name, "models": models}, root=root, where=name)
