"""Bundles ``spaces/`` into a self-contained Hugging Face Space folder, with the ``geosane_hf`` package vendored.

A Space runs ``pip install -r requirements.txt`` before the repository files are copied, and ``geosane-hf`` is not
on PyPI, so neither a local wheel path nor ``-e .`` works there. The bundle carries the package next to ``app.py``
(the script's folder comes first on ``sys.path``) and a ``requirements.txt`` of its run-time dependencies only.

Layout of ``--out``:

- ``README.md``: ``spaces/README.md`` (front matter kept, ``app_file: app.py``, ``models:`` the default model) and
  a note on the default model;
- ``app.py``: the entry point (``tools/space_entry.py``): fills the defaults of ``space_settings.py``, then
  builds the backend and the UI and listens on ``GRADIO_SERVER_NAME`` (``0.0.0.0`` on a Space);
- ``space_settings.py``: the Space's defaults (``GEOSANE_MODEL=<--model-id>``); a variable set in the Space's
  settings wins;
- ``ui.py`` and ``backend.py``: ``spaces/app.py`` and ``spaces/backend.py`` as they are;
- ``geosane_hf/``: what ``pip install .`` would install (the packages and package data of ``[tool.setuptools]`` in
  ``pyproject.toml``, ``modeling/`` as ``geosane_hf/modeling/``), without ``__pycache__`` or tests;
- ``requirements.txt``: ``pyproject.toml``'s dependencies and its ``space`` extra, every module the package imports,
  and the data packages generation reads, pinned to ``constraints.txt`` (torch/torchvision: the Makefile's
  ``TORCH_PIN``).

The folder is written next to ``--out`` under a temporary name and renamed into place when complete.

The parts live in ``tools/space_bundle/`` (``config``, ``package``, ``requirements``, ``space_files``); this script
writes the folder with them and re-exports their names.

Usage:
    python tools/bundle_space.py --out dist/space [--model-id geosane/base] [--overwrite]
    hf upload USER/SPACE dist/space . --repo-type space   # then, with network and a token

Example:
    >>> result = bundle_space(BundleConfig(out=Path("dist/space"), model_id="geosane/base"))  # doctest: +SKIP
    >>> sorted(p.name for p in result.out.iterdir())  # doctest: +SKIP
    ['README.md', 'app.py', 'backend.py', 'geosane_hf', 'requirements.txt', 'space_settings.py', 'ui.py']
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from packaging.requirements import InvalidRequirement

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path (tests): the space_bundle package beside it
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from space_bundle import (
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
    import_distribution,
    package_files,
    read_pins,
    render_readme,
    render_requirements,
    render_settings,
    space_requirements,
    third_party_imports,
)
from space_bundle.space_files import _check_model_id

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
    "bundle_space",
    "import_distribution",
    "main",
    "package_files",
    "read_pins",
    "render_readme",
    "render_requirements",
    "render_settings",
    "space_requirements",
    "third_party_imports",
]


def bundle_space(config: BundleConfig) -> BundleResult:
    """Writes the self-contained Space folder ``config.out`` (atomically: a temporary folder, then a rename).

    Raises:
        BundleError: ``out`` exists without ``overwrite``, a bad ``model_id``, or an inconsistent repository.
    """
    root = Path(config.root).resolve()
    out = Path(config.out).resolve()
    model_id = _check_model_id(config.model_id)
    if out.exists() and not config.overwrite:
        raise BundleError(f"expected --out to be a new folder, got existing {out}; pass --overwrite to replace it")
    spaces = root / "spaces"
    for name in ("app.py", "backend.py", "README.md"):
        if not (spaces / name).is_file():
            raise BundleError(f"expected {spaces / name}, got no such file")
    files = package_files(root)
    groups, undeclared = space_requirements(root, files)
    requirements = [line for group in groups for line in group.lines]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for destination, source in files.items():
            target = tmp / destination
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        shutil.copy2(spaces / "app.py", tmp / "ui.py")
        shutil.copy2(spaces / "backend.py", tmp / "backend.py")
        shutil.copy2(root / "tools" / "space_entry.py", tmp / "app.py")
        (tmp / "space_settings.py").write_text(render_settings(model_id))
        (tmp / "README.md").write_text(render_readme((spaces / "README.md").read_text(), model_id))
        (tmp / "requirements.txt").write_text(render_requirements(groups))
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0o700
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(old / out.name)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    num_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return BundleResult(out, sorted(str(d) for d in files), requirements, undeclared, num_bytes)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python tools/bundle_space.py --out dist/space [--model-id geosane/base] [--overwrite]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the Space folder to write (new unless --overwrite)")
    parser.add_argument(
        "--model-id",
        default=DEFAULT_MODEL_ID,
        help=f"Hub id the Space loads when GEOSANE_MODEL is unset (default {DEFAULT_MODEL_ID}; '' = untrained demo)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    try:
        result = bundle_space(BundleConfig(out=args.out, model_id=args.model_id, overwrite=args.overwrite))
    except (BundleError, InvalidRequirement) as error:
        print(f"bundle_space: {error}", file=sys.stderr)
        return 2
    print(
        f"wrote {result.out} ({len(result.package_files)} package files, {len(result.requirements)} requirements, "
        f"{result.num_bytes / 1e6:.1f} MB)"
    )
    if result.undeclared_imports:
        print(f"note: imported but not in pyproject.toml dependencies: {', '.join(result.undeclared_imports)}")
    print(f"upload: hf upload USER/SPACE {args.out} . --repo-type space")
    return 0


if __name__ == "__main__":
    sys.exit(main())
