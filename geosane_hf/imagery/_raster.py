"""Reading single-band rasters onto a common pixel grid (rasterio is imported lazily)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def require_rasterio() -> Any:
    """Imports rasterio or says how to install it."""
    try:
        import rasterio
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading GeoTIFF/JPEG2000 scenes needs rasterio, a core dependency of geosane-hf missing from this "
            "environment; install it with `pip install 'rasterio>=1.4'`"
        ) from error
    return rasterio


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid: `transform` maps (col, row) to map coordinates in `crs`."""

    transform: Any  # affine.Affine
    crs: Any  # rasterio.crs.CRS
    height: int
    width: int

    @property
    def resolution(self) -> float:
        return float(self.transform.a)


def grid_of(path: Path) -> Grid:
    """Returns the pixel grid of a raster file."""
    rasterio = require_rasterio()
    with rasterio.open(path) as src:
        return Grid(transform=src.transform, crs=src.crs, height=src.height, width=src.width)


def read_band(path: Path, grid: Grid | None = None) -> np.ndarray:
    """Reads band 1 of `path` as float32 [H, W], resampled onto `grid` when given and different.

    Downsampling averages the source pixels (``Resampling.average``), upsampling is bilinear, and a grid equal
    to the file's own is read as is (no resampling).
    """
    rasterio = require_rasterio()
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    with rasterio.open(path) as src:
        same = grid is None or (
            src.transform == grid.transform and src.crs == grid.crs and src.shape == (grid.height, grid.width)
        )
        if same:
            return src.read(1).astype(np.float32)  # [H, W]
        source = src.read(1).astype(np.float32)
        resampling = Resampling.average if abs(src.transform.a) < grid.resolution else Resampling.bilinear
        out = np.zeros((grid.height, grid.width), dtype=np.float32)  # [H, W]
        reproject(
            source,
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            resampling=resampling,
        )
        return out
