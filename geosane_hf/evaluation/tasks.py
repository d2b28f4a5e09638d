"""Downstream tasks: classification, segmentation and detection on built-in or user data.

A task = a typed :class:`TaskConfig` (which data, input size, sample caps) + :class:`Task`, which builds the task
model from a start (a state_dict for a :class:`~geosane_hf.evaluation.models.TargetArch`), computes the training
loss of a batch, and evaluates a model with the local `evaluate` metric modules. :func:`evaluate_model` is the
one-call "model in, metrics out" entry point; :func:`geosane_hf.evaluation.finetune.finetune` trains.

Inputs smaller than the config's ``input_size`` are bilinearly upsampled (masks: nearest, boxes: scaled): timm CNNs
downsample 32x, so the 3x3-pixel Statlog patches become 32x32 images (the content is still 3x3 pixels of 80 m).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geosane_hf.evaluation.metrics import load_metric
from geosane_hf.evaluation.models import TargetArch, build_classifier, build_detector, build_segmenter
from geosane_hf.task_data import (
    IGNORE_INDEX,
    BandMismatchError,
    EvaluationError,
    Split,
    TaskData,
    TaskKind,
    UnknownTaskError,
    load_task_data,
    resize_images,
)


@dataclass(frozen=True)
class TaskConfig:
    """One downstream task.

    Attributes:
        name: task name (a key of `TASKS` for built-ins).
        kind: "classification", "segmentation" or "detection".
        data: built-in data set name (see `geosane_hf.task_data.BUILTIN_DATA`), or "custom".
        input_size: images are resized to input_size x input_size when their side differs.
        max_train, max_test: caps on the number of samples (None: all), for quick runs.
        eval_batch_size: batch size at evaluation.
    """

    name: str
    kind: TaskKind
    data: str
    input_size: int = 32
    max_train: int | None = None
    max_test: int | None = None
    eval_batch_size: int = 64

    @property
    def primary_metric(self) -> str:
        return {"classification": "f1_macro", "segmentation": "mean_iou", "detection": "map_50"}[self.kind]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Built-in tasks on real imagery shipped in pip packages.
TASKS: dict[str, TaskConfig] = {
    c.name: c
    for c in (
        TaskConfig("statlog-classification", "classification", "statlog", input_size=32),
        TaskConfig("landsat8-cloudy-classification", "classification", "landsat8-cloudy", input_size=32),
        TaskConfig("landsat8-cloud-segmentation", "segmentation", "landsat8-clouds", input_size=32),
        TaskConfig("spacenet-building-segmentation", "segmentation", "spacenet-buildings", input_size=64),
        TaskConfig("spacenet-building-detection", "detection", "spacenet-boxes", input_size=128, eval_batch_size=8),
    )
}


def get_task_config(name: str, **overrides: Any) -> TaskConfig:
    """A built-in task config by name, with fields overridden.

    >>> get_task_config("statlog-classification", max_train=64).max_train
    64
    >>> get_task_config("statlog")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    UnknownTaskError: expected a task among [...], got 'statlog'. Did you mean statlog-classification?
    """
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS), n=3, cutoff=0.3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownTaskError(f"expected a task among {sorted(TASKS)}, got {name!r}.{hint}")
    return replace(TASKS[name], **overrides)


class Task:
    """A task config bound to its data: builds models, computes losses, evaluates.

    Args:
        config: the task config.
        data: task data; default: the config's built-in data set. Its kind must match the config's.

    >>> task = Task(get_task_config("statlog-classification", max_train=32, max_test=16))
    >>> task.data.in_chans, len(task.data.train), task.primary_metric
    (4, 32, 'f1_macro')
    """

    def __init__(self, config: TaskConfig, data: TaskData | None = None) -> None:
        if data is None:
            data = load_task_data(config.data)
        if data.kind != config.kind:
            raise EvaluationError(f"expected {config.kind} data for task {config.name!r}, got {data.kind} data")
        if config.max_train is not None or config.max_test is not None:
            data = data.slice(
                len(data.train) if config.max_train is None else config.max_train,
                len(data.test) if config.max_test is None else config.max_test,
            )
        self.config = config
        self.data = data

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> Task:
        """A built-in task by name (`TASKS`), with config fields overridden."""
        return cls(get_task_config(name, **overrides))

    @classmethod
    def custom(cls, data: TaskData, input_size: int | None = None, **overrides: Any) -> Task:
        """A task on the user's own data (see `data_from_folder`, `data_from_dataset`, `data_from_arrays`).

        >>> import numpy as np
        >>> from geosane_hf.task_data import data_from_arrays
        >>> x = np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype("float32")
        >>> data = data_from_arrays("mine", "classification", x, x, num_classes=2, train_targets=[0, 1] * 4,
        ...                         test_targets=[1, 0] * 4)
        >>> Task.custom(data).config.input_size
        32
        """
        size = input_size or max(32, int(data.train.images.shape[-1]))
        config = TaskConfig(name=data.name, kind=data.kind, data="custom", input_size=size, **overrides)
        return cls(config, data)

    @classmethod
    def from_torchgeo(
        cls,
        name: str,
        root: str,
        *,
        bands: str | None = None,
        max_train: int | None = None,
        max_test: int | None = None,
        input_size: int | None = None,
        label_class: str | int | None = None,
        **overrides: Any,
    ) -> Task:
        """A TorchGeo benchmark (``eurosat``, ``resisc45``, ``so2sat``, ``bigearthnet``) read from ``root``.

        Needs ``pip install 'geosane-hf[torchgeo]'``; never downloads. See
        :mod:`geosane_hf.evaluation.torchgeo_data` for the data sets, band choices and labels.

        >>> task = Task.from_torchgeo("eurosat", root="data/eurosat", max_train=512)  # doctest: +SKIP
        >>> task.config.name, task.data.sensor, task.data.band_names[7]  # doctest: +SKIP
        ('torchgeo:eurosat', 'S2', 'B08')
        """
        from geosane_hf.evaluation.torchgeo_data import torchgeo_task_data

        data = torchgeo_task_data(
            name, root, bands=bands, max_train=max_train, max_test=max_test, label_class=label_class
        )
        size = input_size or max(32, int(data.train.images.shape[-1]))
        config = TaskConfig(f"torchgeo:{name.lower()}", data.kind, "torchgeo", input_size=size, **overrides)
        return cls(config, data)

    @classmethod
    def from_folder(
        cls,
        root: str,
        *,
        kind: TaskKind = "classification",
        bands: Any = None,
        sensor: str | None = None,
        input_size: int | None = None,
        **overrides: Any,
    ) -> Task:
        """A task on a folder of the user's patches (GeoTIFF or .npy; layout: :func:`data_from_folder`).

        >>> Task.from_folder("/nonexistent")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        FileNotFoundError: expected a folder of patches at /nonexistent/train/images ...
        """
        from geosane_hf.task_data import data_from_folder

        data = data_from_folder(root, kind=kind, bands=bands, sensor=sensor)
        size = input_size or max(32, int(data.train.images.shape[-1]))
        config = TaskConfig(f"data:{data.name}", kind, "custom", input_size=size, **overrides)
        return cls(config, data)

    @property
    def kind(self) -> TaskKind:
        return self.config.kind

    @property
    def primary_metric(self) -> str:
        return self.config.primary_metric

    @property
    def backbone_prefix(self) -> str:
        """Prefix of the start's tensors inside the task model ("" for classification)."""
        return {"classification": "", "segmentation": "encoder.", "detection": "backbone.encoder."}[self.kind]

    def head_parameter_names(self, model: nn.Module) -> list[str]:
        """Names of the task head's parameters in a task model: what a linear probe trains.

        Classification: the classifier of the timm model (``get_classifier()``); segmentation and detection: every
        parameter outside the backbone (the decoder, the FPN and detection heads).

        >>> import timm
        >>> task = Task.from_name("statlog-classification", max_train=8, max_test=8)
        >>> task.head_parameter_names(timm.create_model("test_resnet", in_chans=4, num_classes=6))
        ['fc.weight', 'fc.bias']
        """
        names = [name for name, _ in model.named_parameters()]
        if self.kind != "classification":
            return [name for name in names if not name.startswith(self.backbone_prefix)]
        classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
        if not isinstance(classifier, nn.Module):
            raise EvaluationError(
                f"expected a timm classifier with get_classifier() for a linear probe, got {type(model).__name__}"
            )
        owned = {id(p) for p in classifier.parameters()}
        head = [name for name, p in model.named_parameters() if id(p) in owned]
        if not head:
            raise EvaluationError(f"expected the classifier of {type(model).__name__} to have parameters, got none")
        return head

    def target_for(self, architecture: str, library: str = "timm", **kwargs: Any) -> TargetArch:
        """The target architecture of this task: the data's bands and classes (the classifier's classes).

        >>> Task.from_name("statlog-classification", input_size=3).target_for("statlog_cnn", "collection", width=8)
        TargetArch(name='statlog_cnn', in_chans=4, num_classes=6, library='collection', kwargs=(('width', 8),))
        """
        return TargetArch(architecture, self.data.in_chans, self.data.num_classes, library, tuple(kwargs.items()))

    # ------------------------------------------------------------------------------------------------ models

    def build_model(self, target: TargetArch, state_dict: Mapping[str, torch.Tensor], head_seed: int = 0) -> nn.Module:
        """The task model with the start's weights (the decoder / detection heads seeded by `head_seed`)."""
        if target.in_chans != self.data.in_chans:
            raise BandMismatchError(
                f"expected a model with {self.data.in_chans} input bands for {self.data.name!r} "
                f"({', '.join(self.data.band_names)}), got in_chans={target.in_chans}; build the start with "
                f"in_chans={self.data.in_chans} (band adaptation is in geosane_hf.evaluation.starts)"
            )
        if self.kind == "classification":
            if target.num_classes != self.data.num_classes:
                raise EvaluationError(
                    f"expected a classifier with {self.data.num_classes} classes, got num_classes={target.num_classes}"
                )
            return build_classifier(target, state_dict)
        if self.kind == "segmentation":
            return build_segmenter(target, state_dict, self.data.num_classes, head_seed)
        if target.library != "timm":
            raise EvaluationError(
                f"expected a timm backbone for detection, got the {target.library} model {target.name!r}"
            )
        return build_detector(target, state_dict, self.data.num_classes, self.config.input_size, head_seed)

    def check_model(self, model: nn.Module) -> None:
        """Raises BandMismatchError when the model's first conv does not take the data's bands."""
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is not None and first.in_channels != self.data.in_chans:
            raise BandMismatchError(
                f"expected a model taking {self.data.in_chans} bands for {self.data.name!r}, got a first conv with "
                f"in_channels={first.in_channels}; adapt the stem (geosane_hf.evaluation.starts.adapt_input_conv)"
            )

    # ------------------------------------------------------------------------------------------------ batches

    def batch(
        self, split: Split, index: torch.Tensor, device: torch.device, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, Any]:
        """Images [B, C, S, S] on `device` and the targets of `index`; random flips when `generator` is given."""
        images = split.images[index]  # [B, C, h, w]
        h, w = images.shape[-2:]
        size = self.config.input_size
        images = resize_images(images, size)  # [B, C, S, S]
        flips = None
        if generator is not None:
            flips = torch.rand(len(index), 2, generator=generator) < 0.5  # [B, (horizontal, vertical)]
            images = _flip(images, flips)
        if self.kind == "classification":
            return images.to(device), split.labels[index].to(device)
        if self.kind == "segmentation":
            masks = split.masks[index]  # [B, h, w]
            if masks.shape[-2:] != (size, size):
                masks = F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()
            if flips is not None:
                masks = _flip(masks[:, None], flips)[:, 0]
            return images.to(device), masks.to(device)
        targets = []
        for row, i in enumerate(index.tolist()):
            boxes = split.boxes[i].clone() * torch.tensor([size / w, size / h, size / w, size / h])  # [M, 4]
            if flips is not None and flips[row, 0]:
                boxes[:, [0, 2]] = size - boxes[:, [2, 0]]
            if flips is not None and flips[row, 1]:
                boxes[:, [1, 3]] = size - boxes[:, [3, 1]]
            targets.append({"boxes": boxes.to(device), "labels": (split.box_labels[i] + 1).to(device)})
        return images.to(device), targets

    # ------------------------------------------------------------------------------------------------ losses

    def forward_loss(
        self, model: nn.Module, images: torch.Tensor, targets: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(training loss, logits for distillation or None) of one batch; the model must be in train mode."""
        if self.kind == "detection":
            losses = model(list(images), targets)  # dict of 4 scalar losses
            return sum(losses.values()), None
        logits = model(images)  # [B, K] or [B, K, S, S]
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX), logits

    # ------------------------------------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: Split | None = None) -> dict[str, Any]:
        """Metrics of `model` on `split` (default: the test split); the model's mode is restored afterwards."""
        split = split if split is not None else self.data.test
        self.check_model(model)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        preds: list[Any] = []
        refs: list[Any] = []
        try:
            for start in range(0, len(split), self.config.eval_batch_size):
                index = torch.arange(start, min(start + self.config.eval_batch_size, len(split)))
                images, targets = self.batch(split, index, device)
                if self.kind == "detection":
                    for out, ref in zip(model(list(images)), targets, strict=True):
                        preds.append(
                            {
                                "boxes": out["boxes"].cpu().tolist(),
                                "scores": out["scores"].cpu().tolist(),
                                "labels": (out["labels"] - 1).cpu().tolist(),
                            }
                        )
                        refs.append(
                            {"boxes": ref["boxes"].cpu().tolist(), "labels": (ref["labels"] - 1).cpu().tolist()}
                        )
                    continue
                predicted = model(images).argmax(dim=1)  # [B] or [B, S, S]
                if self.kind == "classification":
                    preds.extend(predicted.cpu().tolist())
                    refs.extend(targets.cpu().tolist())
                else:
                    preds.extend(p.reshape(-1).cpu().numpy() for p in predicted)
                    refs.extend(t.reshape(-1).cpu().numpy() for t in targets)
        finally:
            model.train(was_training)
        if self.kind == "classification":
            return load_metric("accuracy_f1").compute(
                predictions=preds, references=refs, num_classes=self.data.num_classes
            )
        if self.kind == "segmentation":
            return load_metric("mean_iou").compute(
                predictions=preds, references=refs, num_classes=self.data.num_classes, ignore_index=IGNORE_INDEX
            )
        return load_metric("map50").compute(predictions=preds, references=refs)


def _flip(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Flips [B, C, H, W] rows of `x` horizontally where flips[:, 0] and vertically where flips[:, 1]."""
    x = torch.where(flips[:, 0, None, None, None], x.flip(-1), x)
    return torch.where(flips[:, 1, None, None, None], x.flip(-2), x)


def evaluate_model(
    task: Task | str,
    model: nn.Module | None = None,
    *,
    target: TargetArch | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Metrics of a task model, given either the model or a (target, state_dict) pair (no training).

    Args:
        task: a Task or a built-in task name.
        model: a task model (a timm classifier for classification).
        target, state_dict: alternatively, the architecture and weights to build the task model from.
        split: "test" or "train".

    >>> import timm
    >>> task = Task.from_name("statlog-classification", max_train=16, max_test=16)
    >>> metrics = evaluate_model(task, timm.create_model("test_resnet", in_chans=4, num_classes=6))
    >>> sorted(metrics)
    ['accuracy', 'balanced_accuracy', 'f1_macro']
    """
    task = task if isinstance(task, Task) else Task.from_name(task)
    if model is None:
        if target is None or state_dict is None:
            raise EvaluationError("expected a model, or both target and state_dict, got neither")
        model = task.build_model(target, state_dict)
    if split not in ("train", "test"):
        raise EvaluationError(f"expected split 'train' or 'test', got {split!r}")
    return task.evaluate(model, getattr(task.data, split))
