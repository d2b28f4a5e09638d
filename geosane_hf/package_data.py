"""Files shipped inside the package (``geosane_hf/resources/``), found with :mod:`importlib.resources`.

Card templates (``model_cards/*.md``), the training configs (``training/*.yaml``), experiment configs and
manifests live in the package, so an installed wheel finds them exactly as a checkout does: never through a path
relative to the source tree.

Example:
    >>> sorted(training_configs())
    ['base-v1', 'small-demo', 'tiny-test', 'zoo-experiment']
    >>> training_config_path("tiny-test").name
    'tiny-test.yaml'
    >>> card_template("generated_model_card").startswith("---")
    True
"""

from __future__ import annotations

import difflib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = ["bundled_manifests", "card_template", "resource", "training_config_path", "training_configs"]

CARD_TEMPLATES = ("model_card", "generated_model_card", "dataset_card")


def resource(*parts: str) -> Traversable:
    """A file or folder under ``geosane_hf/resources``."""
    return resources.files("geosane_hf").joinpath("resources", *parts)


def card_template(name: str) -> str:
    """The Jinja2 card template ``name`` (``model_card``, ``generated_model_card`` or ``dataset_card``).

    Raises:
        FileNotFoundError: An unknown name, or a package installed without its data files.
    """
    if name not in CARD_TEMPLATES:
        raise FileNotFoundError(f"expected a card template among {CARD_TEMPLATES}, got {name!r}")
    template = resource("model_cards", f"{name}.md")
    if not template.is_file():
        raise FileNotFoundError(
            f"expected the card template {name}.md in geosane_hf/resources/model_cards, got none: the package was "
            "installed without its data files; reinstall it (pip install --force-reinstall geosane-hf)"
        )
    return template.read_text(encoding="utf-8")


def bundled_manifests() -> dict[str, Path]:
    """``{name: path}`` of the packaged collection manifests (``offline``, ``public_rs``).

    >>> sorted(bundled_manifests())
    ['offline', 'public_rs']
    """
    folder = resource("manifests")
    return {
        entry.name.removesuffix(".yaml"): Path(str(entry))
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.endswith(".yaml")
    }


def training_configs() -> dict[str, Path]:
    """``{name: path}`` of the packaged training configs (``tiny-test``, ``small-demo``, ``base-v1``, ``zoo-experiment``)."""
    folder = resource("training")
    return {
        entry.name.removesuffix(".yaml"): Path(str(entry))
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.endswith(".yaml")
    }


def training_config_path(name_or_path: str | Path) -> Path:
    """A training config YAML: an existing file, else a packaged config by name (``small-demo``).

    Raises:
        FileNotFoundError: Neither a file nor a packaged name (the message lists the names).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = training_configs()
    key = path.name.removesuffix(".yaml")
    # A name, or the path the configs had before they became package data (training/configs/<name>.yaml, relative
    # or inside a clone).
    old_home = path.parent.as_posix() in ("training/configs", ".") or path.parent.as_posix().endswith(
        "/training/configs"
    )
    if key in packaged and (str(name_or_path) == key or old_home):
        return packaged[key]
    near = difflib.get_close_matches(key, list(packaged), n=2)
    raise FileNotFoundError(
        f"expected a training config YAML file or a packaged name among {sorted(packaged)}, got {str(name_or_path)!r}"
        + (f"; did you mean {', '.join(near)}?" if near else "")
    )
