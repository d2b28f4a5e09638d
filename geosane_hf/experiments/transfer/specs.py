"""The parts of an experiment config: a task (:class:`TaskSpec`), a target (:class:`TargetSpec`) and the GeoSANE
model with its generation options (:class:`GeoSANESpec`), each read from a YAML mapping and checked.

Example:
    >>> spec = TaskSpec.from_dict({"name": "statlog-classification", "max_train": 16, "targets": ["test_resnet"]})
    >>> spec.overrides(), spec.targets[0].architecture
    ({'max_train': 16}, 'test_resnet')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from geosane_hf.experiments.transfer.parsing import (
    ExperimentConfigError,
    _check_keys,
    _did_you_mean,
    _listed,
    _str_list,
)
from geosane_hf.experiments.transfer.start_kinds import SAMPLERS, _canonical_start
from geosane_hf.generation.registry import DEFAULT_SAMPLER

__all__ = ["BAND_METHODS", "GeoSANESpec", "TargetSpec", "TaskSpec"]

BAND_METHODS = ("wavelength", "repeat", "mean", "random")


@dataclass(frozen=True)
class TargetSpec:
    """A target architecture (the task's bands and classes are filled in per task).

    Attributes:
        architecture: timm name, e.g. "tf_efficientnet_lite0".
        teacher: a larger timm model of the same family with packaged ImageNet weights (weight selection,
            magnitude pruning, distillation); None: those starts are n/a for this target.
        starts: the starts of this target (None: the experiment's `starts`).
    """

    architecture: str
    teacher: str | None = None
    starts: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str = "targets") -> TargetSpec:
        if isinstance(data, str):
            return cls(data)
        data = _check_keys(data, cls, where, required="architecture")
        starts = data.get("starts")
        return cls(
            str(data["architecture"]),
            data.get("teacher"),
            tuple(_canonical_start(s) for s in _str_list(starts, f"{where}.starts")) if starts is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "teacher": self.teacher, "starts": _listed(self.starts)}


@dataclass(frozen=True)
class TaskSpec:
    """A built-in task with :meth:`Task.from_name` overrides.

    Attributes:
        name: a key of :data:`geosane_hf.evaluation.TASKS`.
        max_train, max_test: sample caps (None: all).
        subset: how capped splits are drawn: "random" (a seeded random subset, the same for every start and seed)
            or "first" (the first samples of the files; Statlog's patches are sorted by class: its first 192
            train patches hold no class 0 at all). ``Task.from_name`` caps take a class-stratified subset.
        input_size: image side (None: the task's).
        bands: band names for the stem adaptation and GeoSANE's BatchNorm calibration (None: the task's band
            names when they have known wavelengths, Landsat MSS names mapped to STAC names, else by count).
        targets: this task's targets (None: the experiment's `targets`).
        root: data folder of a ``torchgeo:<name>`` task (TorchGeo's layout) or a ``data:<label>`` task (a folder of
            the user's patches, see ``data_from_folder``); None for built-in tasks.
        kind: ``data:`` tasks: "classification", "segmentation" or "detection".
        sensor: ``data:`` tasks: sensor of the band names (``L8``, ``S2``, ``S1``).
    """

    name: str
    max_train: int | None = None
    max_test: int | None = None
    subset: str = "random"
    input_size: int | None = None
    bands: tuple[str, ...] | None = None
    targets: tuple[TargetSpec, ...] | None = None
    root: str | None = None
    kind: str | None = None
    sensor: str | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str = "tasks") -> TaskSpec:
        if isinstance(data, str):
            return cls(data)
        data = _check_keys(data, cls, where, required="name")
        for key in ("max_train", "max_test", "input_size"):
            value = data.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ExperimentConfigError(f"expected an integer >= 1 (or null) for {where}.{key}, got {value!r}")
        subset = data.get("subset", "random")
        if subset not in ("random", "first"):
            raise ExperimentConfigError(f"expected {where}.subset 'random' or 'first', got {subset!r}")
        targets = data.get("targets")
        return cls(
            str(data["name"]),
            data.get("max_train"),
            data.get("max_test"),
            subset,
            data.get("input_size"),
            _str_list(data["bands"], f"{where}.bands") if data.get("bands") is not None else None,
            tuple(TargetSpec.from_dict(t, f"{where}.targets[{i}]") for i, t in enumerate(targets))
            if targets is not None
            else None,
            str(data["root"]) if data.get("root") is not None else None,
            data.get("kind"),
            data.get("sensor"),
        )

    def overrides(self) -> dict[str, Any]:
        """Keyword overrides for :meth:`Task.from_name`."""
        return {
            k: v
            for k, v in (("max_train", self.max_train), ("max_test", self.max_test), ("input_size", self.input_size))
            if v is not None
        }

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "targets"}
        for key in ("root", "kind", "sensor"):  # only for data-folder / TorchGeo tasks (built-ins keep their keys)
            if out[key] is None:
                del out[key]
        out["bands"] = _listed(self.bands)
        out["targets"] = [t.to_dict() for t in self.targets] if self.targets is not None else None
        return out


@dataclass(frozen=True)
class GeoSANESpec:
    """The GeoSANE model and how its starts are generated.

    Attributes:
        model: a ``save_pretrained`` folder or Hub id (required by ``geosane:*`` starts).
        model_id: the id recorded in the generated repos' provenance and cards (e.g. the Hub id the model is
            published under when `model` is a local folder; default: `model`).
        revision: Hub revision of the model.
        collection: collector output folder: anchors for ``kde``/``bootstrap`` and the checkpoints of
            ``checkpoint_average``/``checkpoint_plus_noise``.
        store: folder store the generated models are published into (default: ``<out>/store``).
        noise_scale: latent noise (KDE bandwidth) relative to the latent std; None: each sampler's default.
        match_sampler: the GeoSANE start that plain ``prompt_plus_noise``/``checkpoint_plus_noise`` are matched to.
        band_method: stem adaptation of every ImageNet-derived start (prompt, teacher, GeoSANE).
        tokenizer_mode: "full" or "geosane".
        max_anchors, candidates, keep, rounds: sampler sizes.
        calibration: BatchNorm calibration images: "task" (train images of the task) or "packaged" (scene patches).
        calibration_count: images for calibration.
        reference: bootstrap scoring set: "task" (train images with image-level labels) or "packaged".
        reference_count: images in the reference set.
        sampler_options: per sampler name, other fields of its config, e.g. ``{"interpolate":
            {"cross_architecture": true}}`` (towards anchors of other architectures too: how a target without
            relatives of its own architecture moves at all).
    """

    model: str | None = None
    model_id: str | None = None
    revision: str | None = None
    collection: str | None = None
    store: str | None = None
    noise_scale: float | None = None
    match_sampler: str = DEFAULT_SAMPLER
    band_method: str = "wavelength"
    tokenizer_mode: str = "full"
    max_anchors: int = 8
    candidates: int = 8
    keep: int = 2
    rounds: int = 2
    calibration: str = "task"
    calibration_count: int = 16
    reference: str = "task"
    reference_count: int = 32
    sampler_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, where: str = "geosane") -> GeoSANESpec:
        spec = cls(**_check_keys(data or {}, cls, where))
        spec.check(where)
        return spec

    def check(self, where: str = "geosane") -> None:
        choices = {
            "match_sampler": SAMPLERS,
            "band_method": BAND_METHODS,
            "tokenizer_mode": ("full", "geosane"),
            "calibration": ("task", "packaged"),
            "reference": ("task", "packaged"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ExperimentConfigError(
                    f"expected {where}.{key} in {list(allowed)}, got {getattr(self, key)!r}."
                    + _did_you_mean(str(getattr(self, key)), allowed)
                )
        for key in ("max_anchors", "candidates", "keep", "rounds", "calibration_count", "reference_count"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ExperimentConfigError(f"expected an integer >= 1 for {where}.{key}, got {value!r}")
        if self.noise_scale is not None and (not isinstance(self.noise_scale, (int, float)) or self.noise_scale < 0):
            raise ExperimentConfigError(f"expected {where}.noise_scale >= 0, got {self.noise_scale!r}")
        if not isinstance(self.sampler_options, dict):
            raise ExperimentConfigError(
                f"expected {where}.sampler_options to map sampler names to options, got {self.sampler_options!r}"
            )
        for name, options in self.sampler_options.items():
            if name not in SAMPLERS:
                raise ExperimentConfigError(
                    f"expected sampler names {list(SAMPLERS)} in {where}.sampler_options, got {name!r}."
                    + _did_you_mean(str(name), SAMPLERS)
                )
            if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
                raise ExperimentConfigError(
                    f"expected {where}.sampler_options.{name} to be a mapping of option names, got {options!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_task_name(task: TaskSpec) -> None:
    """A built-in task, ``torchgeo:<name>`` with a ``root``, or ``data:<label>`` with a ``root``."""
    from geosane_hf.evaluation.tasks import TASKS

    prefix, sep, rest = task.name.partition(":")
    if sep and prefix in ("torchgeo", "data"):
        if not task.root:
            raise ExperimentConfigError(
                f"task {task.name!r} needs its data folder: set root in the config or pass --root DIR"
            )
        if prefix == "torchgeo":
            from geosane_hf.evaluation.torchgeo_data import TORCHGEO_DATASETS

            if rest not in TORCHGEO_DATASETS:
                raise ExperimentConfigError(
                    f"expected torchgeo:<name> with a name among {sorted(TORCHGEO_DATASETS)}, got {task.name!r}."
                    + _did_you_mean(rest, TORCHGEO_DATASETS)
                )
        elif (task.kind or "classification") not in ("classification", "segmentation", "detection"):
            raise ExperimentConfigError(
                f"expected kind classification, segmentation or detection for {task.name!r}, got {task.kind!r}"
            )
        return
    if task.name not in TASKS:
        raise ExperimentConfigError(
            f"expected a task among {sorted(TASKS)}, torchgeo:<name> or data:<label> (with root), got "
            f"{task.name!r}." + _did_you_mean(task.name, TASKS)
        )
