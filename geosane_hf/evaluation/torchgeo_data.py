"""TorchGeo benchmarks as task data: EuroSAT, RESISC45, So2Sat and BigEarthNet, read by TorchGeo's own classes.

Needs the ``torchgeo`` extra (``pip install 'geosane-hf[torchgeo]'``: TorchGeo 0.8 and h5py for So2Sat). Nothing is
downloaded (``download=False``): ``root`` must hold the data set as TorchGeo lays it out (its docs and the
``torchgeo.datasets`` class docstrings say how; ``download=True`` in TorchGeo itself fetches it on a machine with
internet access). Images keep their band names, resolved for Sentinel-2 (``B08`` is NIR, ``B8A`` narrow NIR), so
band adaptation and BatchNorm calibration of generated models see the real bands.

=============  ==============================================  ====================  ==============================
name           TorchGeo class, splits                          bands (default)       labels
=============  ==============================================  ====================  ==============================
``eurosat``    ``EuroSAT`` train / val / test                   13 Sentinel-2 bands   10 land-cover classes
``resisc45``   ``RESISC45`` train / val / test                  RGB                   45 scene classes
``so2sat``     ``So2Sat`` (version 2) train / validation / test 10 Sentinel-2 bands   17 local climate zones
``bigearthnet`` ``BigEarthNet`` train / val / test (``s2``)     12 Sentinel-2 bands   19 classes, multi-label: the
                                                                                      task is "does the patch show
                                                                                      ``label_class``" (binary)
=============  ==============================================  ====================  ==============================

Example (on a machine with the data; the tests write tiny files in each data set's real layout):
    >>> data = torchgeo_task_data("eurosat", root="data/eurosat", max_train=256)  # doctest: +SKIP
    >>> data.band_names[7], data.sensor  # doctest: +SKIP
    ('B08', 'S2')
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geosane_hf.task_data import EvaluationError, TaskData, UnknownTaskError, data_from_arrays

__all__ = ["TORCHGEO_DATASETS", "TorchGeoSpec", "torchgeo_task_data"]


@dataclass(frozen=True)
class TorchGeoSpec:
    """How one TorchGeo data set becomes task data.

    Attributes:
        cls: the ``torchgeo.datasets`` class name.
        splits: our (train, test) -> TorchGeo's split names.
        sensor: sensor of the band names (None: RGB common names).
        band_names: ``(bands argument or None, our band names)`` per band choice; the first is the default.
        kwargs: fixed constructor arguments.
    """

    cls: str
    splits: tuple[str, str]
    sensor: str | None
    band_names: dict[str, tuple[Any, tuple[str, ...]]]
    kwargs: tuple[tuple[str, Any], ...] = ()


_S2_ALL = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")
_SO2SAT_S2 = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
_BEN_S2 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")

TORCHGEO_DATASETS: dict[str, TorchGeoSpec] = {
    "eurosat": TorchGeoSpec(
        "EuroSAT",
        ("train", "test"),
        "S2",
        {"all": (_S2_ALL, _S2_ALL), "rgb": (("B04", "B03", "B02"), ("B04", "B03", "B02"))},
    ),
    "resisc45": TorchGeoSpec("RESISC45", ("train", "test"), None, {"rgb": (None, ("red", "green", "blue"))}),
    "so2sat": TorchGeoSpec(
        "So2Sat",
        ("train", "test"),
        "S2",
        {"s2": (tuple(f"S2_{b}" for b in _SO2SAT_S2), _SO2SAT_S2)},
        (("version", "2"),),
    ),
    "bigearthnet": TorchGeoSpec(
        "BigEarthNet", ("train", "test"), "S2", {"s2": ("s2", _BEN_S2)}, (("num_classes", 19),)
    ),
}


def _torchgeo() -> Any:
    try:
        import torchgeo.datasets
    except ImportError as error:
        raise ImportError(
            "TorchGeo benchmarks need the torchgeo extra: `pip install 'geosane-hf[torchgeo]'` (TorchGeo 0.8, h5py)"
        ) from error
    return torchgeo.datasets


def _pick(count: int, cap: int | None, seed: int) -> np.ndarray:
    if cap is None or cap >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).permutation(count)[:cap])


def _read(dataset: Any, index: np.ndarray, label: Callable[[Any], int]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for i in index.tolist():
        sample = dataset[i]
        images.append(np.asarray(sample["image"], dtype=np.float32))  # [C, H, W]
        labels.append(label(sample["label"]))
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _label_class(label_class: str | int | None, classes: list[str], train: Any, index: np.ndarray) -> int:
    """Index of the BigEarthNet class whose presence is the label (default: the most frequent in `index`)."""
    if label_class is None:
        counts = sum(np.asarray(train[i]["label"]) for i in index.tolist())  # [19] positives per class
        return int(np.argmax(counts))
    if isinstance(label_class, int) or str(label_class).isdigit():
        target = int(label_class)
        if not 0 <= target < len(classes):
            raise EvaluationError(f"expected label_class in [0, {len(classes)}), got {target}")
        return target
    if label_class not in classes:
        near = difflib.get_close_matches(str(label_class), classes, n=2)
        raise EvaluationError(
            f"expected label_class among the 19 BigEarthNet classes, got {label_class!r}"
            + (f"; did you mean {', '.join(near)}?" if near else f" (classes: {classes})")
        )
    return classes.index(label_class)


def torchgeo_task_data(
    name: str,
    root: str | Path,
    *,
    bands: str | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    label_class: str | int | None = None,
    seed: int = 0,
) -> TaskData:
    """Classification task data from a TorchGeo data set in ``root`` (no download).

    Args:
        name: ``eurosat``, ``resisc45``, ``so2sat`` or ``bigearthnet``.
        root: The folder TorchGeo's class reads (``root=`` of the class).
        bands: A band choice of the data set (EuroSAT: ``all`` or ``rgb``; default: the first).
        max_train / max_test: Read at most this many samples per split (a seeded random subset).
        label_class: BigEarthNet only: the class (name or index of the 19) whose presence is the binary label
            (default: the most frequent class of the train subset).
        seed: Seeds the subsets.

    Returns:
        Task data normalised with train statistics; ``band_names`` are this package's band ids and ``sensor``
        their sensor.

    Raises:
        UnknownTaskError: An unknown data set name.
        EvaluationError: The data is not in ``root`` (TorchGeo's message says what is missing), or a bad option.
    """
    key = name.lower()
    if key not in TORCHGEO_DATASETS:
        near = difflib.get_close_matches(key, list(TORCHGEO_DATASETS), n=2)
        raise UnknownTaskError(
            f"expected a TorchGeo data set among {sorted(TORCHGEO_DATASETS)}, got {name!r}"
            + (f"; did you mean {', '.join(near)}?" if near else "")
        )
    spec = TORCHGEO_DATASETS[key]
    choice = bands or next(iter(spec.band_names))
    if choice not in spec.band_names:
        raise EvaluationError(f"expected bands among {sorted(spec.band_names)} for {key}, got {bands!r}")
    argument, band_names = spec.band_names[choice]
    datasets = _torchgeo()
    cls = getattr(datasets, spec.cls)
    kwargs: dict[str, Any] = dict(spec.kwargs)
    if "download" in inspect.signature(cls.__init__).parameters:
        kwargs["download"] = False  # So2Sat has no download option: it never downloads
    if argument is not None:
        kwargs["bands"] = argument
    loaded = {}
    for ours, theirs in zip(("train", "test"), spec.splits, strict=True):
        try:
            loaded[ours] = cls(root=str(root), split=theirs, **kwargs)
        except datasets.DatasetNotFoundError as error:
            raise EvaluationError(
                f"expected the {spec.cls} data set in {str(root)!r} for split {theirs!r} (TorchGeo's layout), got: "
                f"{error}. Download it once with torchgeo.datasets.{spec.cls}(root, download=True) on a machine "
                "with internet access"
            ) from error
    train_ds, test_ds = loaded["train"], loaded["test"]
    pick_train, pick_test = _pick(len(train_ds), max_train, seed), _pick(len(test_ds), max_test, seed + 1)
    note: dict[str, Any] = {}
    if key == "bigearthnet":
        classes = list(cls.class_sets[19])
        target = _label_class(label_class, classes, train_ds, pick_train)
        x_train, y_train = _read(train_ds, pick_train, lambda y: int(y[target]))
        x_test, y_test = _read(test_ds, pick_test, lambda y: int(y[target]))
        class_names: Sequence[str] = (f"no {classes[target]}", classes[target])
        note["label"] = f"presence of {classes[target]!r} (one of the 19 BigEarthNet classes)"
    else:
        x_train, y_train = _read(train_ds, pick_train, int)
        x_test, y_test = _read(test_ds, pick_test, int)
        class_names = tuple(getattr(train_ds, "classes", ()) or ())
    return data_from_arrays(
        f"torchgeo-{key}",
        "classification",
        x_train,
        x_test,
        train_targets=y_train,
        test_targets=y_test,
        class_names=class_names,
        band_names=band_names,
        sensor=spec.sensor,
        notes={"source": f"torchgeo.datasets.{spec.cls}(root={str(root)!r}, download=False)", "bands": choice, **note},
    )
