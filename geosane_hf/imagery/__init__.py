"""Readers for the real remote-sensing data that PyPI packages ship (no downloads).

- :func:`load_statlog`: UCI Statlog Landsat MSS patches [N, 4, 3, 3], 6 land-cover classes.
- :func:`load_landsat8_scene` + :func:`cloud_tiles`: a Landsat-8 L1 scene with BQA cloud labels, tiled with a
  spatial-block train/test split (segmentation masks and cloudy-patch labels).
- :func:`load_sentinel2_scene` + :func:`random_patches`: a 13-band Sentinel-2 L1C scene on one grid (unlabelled;
  BatchNorm calibration, multispectral inputs).
- :func:`compute_band_stats`: per-band normalisation from a training split.
"""

from geosane_hf.imagery._resources import MissingDataPackageError, package_data_path
from geosane_hf.imagery.bands import (
    AmbiguousBandError,
    BandNameError,
    qualify_bands,
    resolve_bands,
    sensor_id,
)
from geosane_hf.imagery.landsat8 import (
    LANDSAT8_BAND_NAMES,
    BQAField,
    Confidence,
    ImageryError,
    Landsat8Scene,
    bqa_confidence,
    cloud_mask_from_bqa,
    fill_mask_from_bqa,
    load_landsat8_scene,
)
from geosane_hf.imagery.normalization import BandStats, compute_band_stats
from geosane_hf.imagery.sentinel2 import (
    SENTINEL2_BAND_NAMES,
    Sentinel2Scene,
    jp2_driver_available,
    load_sentinel2_scene,
)
from geosane_hf.imagery.statlog import (
    STATLOG_BAND_NAMES,
    STATLOG_CLASS_NAMES,
    StatlogFormatError,
    StatlogLandsat,
    StatlogSplit,
    load_statlog,
    parse_statlog_lines,
)
from geosane_hf.imagery.tiles import (
    CLOUD_CLASS_NAMES,
    CloudTileDataset,
    Tiles,
    TileSplitConfig,
    cloud_tiles,
    is_test_block,
    random_patches,
    split_blocks,
    tile_scene,
)

__all__ = [
    "CLOUD_CLASS_NAMES",
    "LANDSAT8_BAND_NAMES",
    "SENTINEL2_BAND_NAMES",
    "STATLOG_BAND_NAMES",
    "STATLOG_CLASS_NAMES",
    "AmbiguousBandError",
    "BQAField",
    "BandNameError",
    "BandStats",
    "CloudTileDataset",
    "Confidence",
    "ImageryError",
    "Landsat8Scene",
    "MissingDataPackageError",
    "Sentinel2Scene",
    "StatlogFormatError",
    "StatlogLandsat",
    "StatlogSplit",
    "TileSplitConfig",
    "Tiles",
    "bqa_confidence",
    "cloud_mask_from_bqa",
    "cloud_tiles",
    "compute_band_stats",
    "fill_mask_from_bqa",
    "is_test_block",
    "jp2_driver_available",
    "load_landsat8_scene",
    "load_sentinel2_scene",
    "load_statlog",
    "package_data_path",
    "parse_statlog_lines",
    "qualify_bands",
    "random_patches",
    "resolve_bands",
    "sensor_id",
    "split_blocks",
    "tile_scene",
]
