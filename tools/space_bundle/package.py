"""The vendored package: the files ``pip install .`` would install, and the third-party modules they import."""

from __future__ import annotations

import ast
import functools
import sys
import tomllib
from pathlib import Path, PurePosixPath

from packaging.utils import canonicalize_name

from space_bundle.config import IMPORT_TO_DISTRIBUTION, PACKAGE, ROOT, BundleError

__all__ = ["import_distribution", "package_files", "third_party_imports"]


def _package_folder(name: str, package_dir: dict[str, str]) -> PurePosixPath:
    """Source folder of package ``name`` under setuptools' ``package-dir`` rules (longest mapped prefix wins)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in package_dir:
            return PurePosixPath(package_dir[prefix], *parts[cut:])
    return PurePosixPath(package_dir.get("", "."), *parts)


def _skipped(path: PurePosixPath) -> bool:
    return (
        "__pycache__" in path.parts
        or "tests" in path.parts
        or path.suffix in (".pyc", ".pyo")
        or path.name.startswith("test_")
    )


def package_files(root: Path = ROOT) -> dict[PurePosixPath, Path]:
    """The files ``pip install .`` puts into ``geosane_hf/``: ``{destination in the bundle: source}``.

    Read from ``[tool.setuptools]`` in ``pyproject.toml``: each listed package's ``*.py`` (not recursive: every
    sub-package is listed) and the ``package-data`` globs; ``__pycache__``, ``*.pyc`` and tests are left out.

    Example:
        >>> files = package_files()
        >>> PurePosixPath("geosane_hf/modeling/modeling_geosane.py") in files
        True
    """
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir: dict[str, str] = config.get("package-dir", {})
    package_data: dict[str, list[str]] = config.get("package-data", {})
    files: dict[PurePosixPath, Path] = {}
    for name in config["packages"]:
        if name.split(".")[0] != PACKAGE:
            continue
        source = root / _package_folder(name, package_dir)
        if not (source / "__init__.py").is_file():
            raise BundleError(
                f"expected {source}/__init__.py for the package {name} listed in pyproject.toml, got no such file"
            )
        destination = PurePosixPath(*name.split("."))
        patterns = ["*.py", *package_data.get(name, []), *package_data.get("*", [])]
        for pattern in patterns:
            for path in sorted(source.glob(pattern)):
                relative = PurePosixPath(path.relative_to(source).as_posix())
                if path.is_file() and not _skipped(relative):
                    files[destination / relative] = path
    if PurePosixPath(PACKAGE, "modeling", "__init__.py") not in files:
        raise BundleError(f"expected {PACKAGE}.modeling in [tool.setuptools] packages of pyproject.toml, got none")
    return files


def third_party_imports(files: dict[PurePosixPath, Path]) -> dict[str, list[str]]:
    """Top-level modules the package imports that are neither the standard library nor first-party.

    Every ``import x`` / ``from x import y`` counts, also inside functions (lazy imports are still run-time needs).

    Returns:
        ``{module: [bundle-relative files that import it]}``.
    """
    found: dict[str, set[str]] = {}
    for destination, path in files.items():
        if path.suffix != ".py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for module in {name.split(".")[0] for name in names}:
                if module not in sys.stdlib_module_names and module not in (PACKAGE, "__future__"):
                    found.setdefault(module, set()).add(str(destination))
    return {module: sorted(users) for module, users in sorted(found.items())}


@functools.cache
def _installed_distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return dict(packages_distributions())


def import_distribution(module: str) -> str:
    """Canonical distribution name that provides import ``module`` (installed metadata first, then a fixed map).

    Example:
        >>> import_distribution("yaml"), import_distribution("torch")
        ('pyyaml', 'torch')
    """
    installed = _installed_distributions().get(module)
    if installed:
        return canonicalize_name(installed[0])
    return canonicalize_name(IMPORT_TO_DISTRIBUTION.get(module, module))
