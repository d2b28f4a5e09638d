"""The parts of ``tools/bundle_space.py`` (the self-contained Hugging Face Space folder), one module per concern.

- :mod:`.config`: :class:`BundleConfig`, :class:`BundleResult`, :class:`BundleError`, the data packages' table;
- :mod:`.package`: the files of the vendored package and the modules they import;
- :mod:`.requirements`: the pins and ``requirements.txt``;
- :mod:`.space_files`: the Space's ``README.md`` and ``space_settings.py``.

``tools/bundle_space.py`` (the script, ``make space-bundle``) writes the folder with them and re-exports every name.
"""

from space_bundle.config import (
    DATA_PACKAGES,
    DEFAULT_MODEL_ID,
    IMPORT_TO_DISTRIBUTION,
    PACKAGE,
    ROOT,
    BundleConfig,
    BundleError,
    BundleResult,
    DataPackage,
    RequirementGroup,
)
from space_bundle.package import import_distribution, package_files, third_party_imports
from space_bundle.requirements import read_pins, render_requirements, space_requirements
from space_bundle.space_files import render_readme, render_settings

__all__ = [
    "DATA_PACKAGES",
    "DEFAULT_MODEL_ID",
    "IMPORT_TO_DISTRIBUTION",
    "PACKAGE",
    "ROOT",
    "BundleConfig",
    "BundleError",
    "BundleResult",
    "DataPackage",
    "RequirementGroup",
    "import_distribution",
    "package_files",
    "read_pins",
    "render_readme",
    "render_requirements",
    "render_settings",
    "space_requirements",
    "third_party_imports",
]
