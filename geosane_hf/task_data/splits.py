"""Task data: typed train/test splits for classification, segmentation and detection.

Every split holds float32 images [N, C, H, W] already normalised with per-band statistics of the TRAIN split, and
its targets: class indices [N] (classification), class-index masks [N, H, W] (segmentation, `ignore_index` allowed),
or per-image boxes [M, 4] xyxy in pixels with class indices [M] (detection). Class indices are 0-based everywhere
(detection adds the background class internally).

One definition for every reader: the zoo trainer (:mod:`geosane_hf.collection.zoo`), the evaluation's tasks
(:mod:`geosane_hf.evaluation.tasks`) and the experiments. Builders of task data from arrays, `datasets` and
folders are in :mod:`geosane_hf.task_data.sources`, the built-in data sets in :mod:`geosane_hf.task_data.builtin`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F

from geosane_hf.errors import GeoSANEError
from geosane_hf.imagery import BandStats

TaskKind = Literal["classification", "segmentation", "detection"]
IGNORE_INDEX = 255


class EvaluationError(GeoSANEError, ValueError):
    """Bad input to an evaluation task (data, model or configuration)."""


class UnknownTaskError(EvaluationError):
    """A task name that does not exist."""


class BandMismatchError(EvaluationError):
    """Images have another number of bands than the model's input."""


class LabelRangeError(EvaluationError):
    """Labels outside [0, num_classes)."""


class EmptySplitError(EvaluationError):
    """A split without samples."""


@dataclass
class Split:
    """One split of a task.

    Attributes:
        images: float32 [N, C, H, W].
        labels: int64 [N] class indices (classification), else None.
        masks: int64 [N, H, W] class indices or IGNORE_INDEX (segmentation), else None.
        boxes: per image float32 [M, 4] xyxy pixels (detection), else None.
        box_labels: per image int64 [M] class indices (detection), else None.
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    boxes: list[torch.Tensor] | None = None
    box_labels: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def targets(self) -> torch.Tensor:
        """The dense targets: `labels` [N] (classification) or `masks` [N, H, W] (segmentation)."""
        if self.labels is not None:
            return self.labels
        if self.masks is not None:
            return self.masks
        raise EvaluationError("expected labels or masks in the split, got a detection split (boxes per image)")

    def subset(self, index: Sequence[int] | torch.Tensor) -> Split:
        """The samples at `index` (a tiny slice for tests, a bootstrap sample ...)."""
        index = torch.as_tensor(index, dtype=torch.long)
        pick = index.tolist()
        return Split(
            images=self.images[index],
            labels=None if self.labels is None else self.labels[index],
            masks=None if self.masks is None else self.masks[index],
            boxes=None if self.boxes is None else [self.boxes[i] for i in pick],
            box_labels=None if self.box_labels is None else [self.box_labels[i] for i in pick],
        )


@dataclass
class TaskData:
    """Train and test splits of one task, validated on construction.

    Attributes:
        name: data set name, e.g. "statlog".
        kind: "classification", "segmentation" or "detection".
        train, test: the splits (normalised with train statistics).
        num_classes: number of (object) classes, background excluded for detection.
        class_names: one name per class.
        band_names: one name per input band.
        band_stats: the train-split statistics the images were normalised with (None when given pre-normalised).
        notes: provenance and preprocessing, for reports.
        sensor: the sensor of `band_names` ("L8", "S2", "S1"; None: common names, SAR or unknown), so that band
            adaptation reads Landsat-8 "B8" and Sentinel-2 "B08" right (see geosane_hf.imagery.bands). The zoo's
            data sets keep their scene's sensor name ("landsat-8", "landsat-mss"), which its index records.
        common_names: STAC `eo` common names of the bands, when known.
    """

    name: str
    kind: TaskKind
    train: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...] = ()
    band_names: tuple[str, ...] = ()
    band_stats: BandStats | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    sensor: str | None = None
    common_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("classification", "segmentation", "detection"):
            raise EvaluationError(f"expected kind 'classification', 'segmentation' or 'detection', got {self.kind!r}")
        if self.num_classes < 1 or (self.kind != "detection" and self.num_classes < 2):
            raise EvaluationError(f"expected num_classes >= 2 (>= 1 for detection), got {self.num_classes}")
        if not self.class_names:
            self.class_names = tuple(str(i) for i in range(self.num_classes))
        for split_name, split in (("train", self.train), ("test", self.test)):
            _validate_split(self, split_name, split)
        if self.train.images.shape[1] != self.test.images.shape[1]:
            raise BandMismatchError(
                f"expected train and test images with the same bands, got {self.train.images.shape[1]} and "
                f"{self.test.images.shape[1]}"
            )
        if not self.band_names:
            self.band_names = tuple(f"band{i}" for i in range(self.in_chans))

    @property
    def in_chans(self) -> int:
        return int(self.train.images.shape[1])

    # Shorthands the zoo trainer and the zoo experiment read (collection.zoo, experiments.zoo).

    @property
    def train_x(self) -> torch.Tensor:
        """`train.images` [N, C, H, W]."""
        return self.train.images

    @property
    def train_y(self) -> torch.Tensor:
        """`train.targets` [N] or [N, H, W]."""
        return self.train.targets

    @property
    def test_x(self) -> torch.Tensor:
        """`test.images` [N, C, H, W]."""
        return self.test.images

    @property
    def test_y(self) -> torch.Tensor:
        """`test.targets` [N] or [N, H, W]."""
        return self.test.targets

    @property
    def task(self) -> TaskKind:
        """`kind`."""
        return self.kind

    @property
    def metric(self) -> str:
        """The zoo's primary metric (a key of :func:`geosane_hf.collection.zoo.zoo_metrics`): accuracy or miou."""
        if self.kind == "detection":
            raise EvaluationError(f"expected classification or segmentation data for a zoo metric, got {self.name!r}")
        return "miou" if self.kind == "segmentation" else "accuracy"

    def slice(self, train: int, test: int, seed: int = 0) -> TaskData:
        """At most `train` / `test` samples of each split, drawn so that the subset stays representative.

        Classification splits are sampled per class in proportion to its share (largest remainders; every class
        present keeps at least one sample when the cap allows), other kinds uniformly at random. Files such as
        Statlog's are sorted by class: their first 192 samples miss class 0 entirely, which is why the first `n`
        are never taken. Deterministic for a given `seed`; the kept samples stay in their original order.

        >>> from geosane_hf.task_data import load_task_data
        >>> data = load_task_data("statlog").slice(64, 32)
        >>> len(data.train), len(data.test), data.in_chans
        (64, 32, 4)
        >>> sorted(set(data.train.labels.tolist())) == list(range(data.num_classes))
        True
        """
        for name, cap in (("train", train), ("test", test)):
            if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
                raise EvaluationError(
                    f"expected a positive int cap for the {name} split of {self.name!r}, got {cap!r}; "
                    "leave the cap unset (None) to keep every sample"
                )
        return replace(
            self,
            train=self.train.subset(sample_index(self.train, train, seed)),
            test=self.test.subset(sample_index(self.test, test, seed + 1)),
        )


def sample_index(split: Split, count: int, seed: int, stratify: bool = True) -> torch.Tensor:
    """Sorted indices of `count` samples of `split` (all of them when `count` >= its size).

    Uniformly at random for `stratify=False` or a split without class labels; else per class in proportion to its
    share (see `TaskData.slice`). Deterministic for a given `seed`.
    """
    size = len(split)
    if count >= size:
        return torch.arange(size)
    generator = torch.Generator().manual_seed(seed)
    if split.labels is None or not stratify:
        return torch.randperm(size, generator=generator)[:count].sort().values
    classes, counts = split.labels.unique(return_counts=True)  # [K], [K]
    quota = counts.double() * count / size  # [K] proportional share
    take = quota.floor().long()
    if count >= len(classes):
        take = take.clamp(min=1)  # every class keeps one sample
    while int(take.sum()) > count:  # the clamp overshot: take back where the most is over quota, never below 1
        over = torch.where(take > 1, take - quota, torch.finfo(quota.dtype).min)
        take[int(torch.argmax(over))] -= 1
    remainder = quota - take.double()
    for k in torch.argsort(remainder, descending=True)[: count - int(take.sum())]:
        take[k] += 1  # largest remainders get the samples left over
    picks = []
    for label, n in zip(classes.tolist(), take.tolist(), strict=True):
        members = torch.nonzero(split.labels == label).flatten()  # [n_k]
        picks.append(members[torch.randperm(len(members), generator=generator)[:n]])
    return torch.cat(picks).sort().values


def _validate_split(data: TaskData, name: str, split: Split) -> None:
    if len(split) == 0:
        raise EmptySplitError(
            f"expected a non-empty {name} split for task data {data.name!r}, got 0 samples; check the split or "
            f"the tiling (smaller tiles give more samples)"
        )
    if split.images.ndim != 4:
        raise EvaluationError(f"expected {name} images [N, C, H, W], got shape {tuple(split.images.shape)}")
    if split.images.is_floating_point() and not bool(torch.isfinite(split.images).all()):
        bad = ~torch.isfinite(split.images)  # [N, C, H, W]
        sample, band = (int(i) for i in bad.nonzero()[0][:2])
        raise EvaluationError(
            f"expected finite {name} images for task data {data.name!r}, got {int(bad.sum())} NaN/Inf pixel values "
            f"(the first in sample {sample}, band {band}); one would turn every score into chance without a word. "
            "Fill no-data pixels (e.g. with 0 or the band mean) or drop those tiles."
        )
    k = data.num_classes
    if data.kind == "classification":
        values = _required(split.labels, "labels", name, data.kind)
        if values.shape != (len(split),):
            raise EvaluationError(f"expected {name} labels [N={len(split)}], got {tuple(values.shape)}")
    elif data.kind == "segmentation":
        values = _required(split.masks, "masks", name, data.kind)
        if values.shape != (len(split), *split.images.shape[2:]):
            raise EvaluationError(
                f"expected {name} masks [N, H, W] = {(len(split), *split.images.shape[2:])}, got {tuple(values.shape)}"
            )
        values = values[values != IGNORE_INDEX]
    else:
        boxes = _required(split.boxes, "boxes", name, data.kind)
        labels = _required(split.box_labels, "box_labels", name, data.kind)
        if len(boxes) != len(split) or len(labels) != len(split):
            raise EvaluationError(
                f"expected one boxes/box_labels entry per {name} image, got {len(boxes)}/{len(labels)}"
            )
        for b, lab in zip(boxes, labels, strict=True):
            if b.ndim != 2 or b.shape[1] != 4 or lab.shape != (b.shape[0],):
                raise EvaluationError(
                    f"expected {name} boxes [M, 4] with labels [M], got {tuple(b.shape)}, {tuple(lab.shape)}"
                )
            if b.is_floating_point() and not bool(torch.isfinite(b).all()):
                raise EvaluationError(f"expected finite {name} box coordinates, got NaN/Inf in {b.tolist()[:3]}")
            if b.numel() and bool(((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any()):
                raise EvaluationError(f"expected {name} boxes as xyxy with x2 > x1 and y2 > y1, got a degenerate box")
        values = torch.cat([lab.reshape(-1) for lab in labels]) if labels else torch.zeros(0, dtype=torch.long)
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= k):
        raise LabelRangeError(
            f"expected {name} labels of {data.name!r} in [0, {k}) (num_classes={k}), got values in "
            f"[{int(values.min())}, {int(values.max())}]; remap the labels or raise num_classes"
            + (f" (masks may also use ignore_index {IGNORE_INDEX})" if data.kind == "segmentation" else "")
        )


def _required(value: Any, what: str, split: str, kind: str) -> Any:
    if value is None:
        raise EvaluationError(f"expected {what} in the {split} split of a {kind} task, got None")
    return value


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of [N, C, H, W] to [N, C, size, size] (no-op when already that size)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
