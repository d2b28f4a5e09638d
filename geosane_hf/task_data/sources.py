"""Task data from the user's data: numpy arrays, `datasets.Dataset` splits and folders of patches.

:func:`data_from_arrays` is the one builder: the others read their source into arrays and call it, so every task
data is normalised with its train-split statistics the same way (the built-in data sets too).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geosane_hf.imagery import BandStats, compute_band_stats
from geosane_hf.task_data.splits import (
    BandMismatchError,
    EmptySplitError,
    EvaluationError,
    Split,
    TaskData,
    TaskKind,
)


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
    num_classes: int | None = None,
    train_targets: Any,
    test_targets: Any,
    class_names: Sequence[str] = (),
    band_names: Sequence[str] = (),
    normalize: bool = True,
    notes: dict[str, Any] | None = None,
    sensor: str | None = None,
    common_names: Sequence[str] = (),
) -> TaskData:
    """Task data from numpy arrays [N, C, H, W] and targets (labels [N], masks [N, H, W], or (boxes, labels) lists).

    Args:
        name: a name for reports.
        kind: "classification", "segmentation" or "detection".
        train_images, test_images: band-first image stacks.
        num_classes: number of classes (object classes for detection); default: one per class name, else the
            largest label + 1.
        train_targets, test_targets: labels [N] / masks [N, H, W] / a pair (list of [M, 4] xyxy, list of [M]).
        class_names, band_names: optional names.
        normalize: standardise each band with train-split statistics.
        notes: provenance for reports.
        sensor: sensor of the band names ("L8", "S2", ...). The names are resolved to this package's band ids
            (geosane_hf.imagery.bands.resolve_bands): a name such as "B8" that Landsat-8 and Sentinel-2 use for
            different bands needs the sensor or a qualified name ("S2:B8").
        common_names: STAC `eo` common names of the bands, when known.

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
    if num_classes is None:
        num_classes = _count_classes(kind, class_names, train_targets, test_targets)
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
        common_names=tuple(common_names),
    )


def _count_classes(kind: TaskKind, class_names: Sequence[str], train_targets: Any, test_targets: Any) -> int:
    """One class per name, else the largest label (or box label) of both splits + 1."""
    if class_names:
        return len(class_names)
    if kind == "detection":
        labels = [int(v) for targets in (train_targets, test_targets) for per in targets[1] for v in np.ravel(per)]
        return max(labels, default=0) + 1
    return int(max(np.max(np.asarray(train_targets)), np.max(np.asarray(test_targets)))) + 1


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

    (x_train, y_train), (x_test, y_test) = arrays(train), arrays(test)
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
