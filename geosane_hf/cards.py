"""Model and dataset cards through huggingface_hub's own card classes (metadata the Hub accepts).

The metadata block is built with ``ModelCardData`` / ``EvalResult`` / ``DatasetCardData`` and the body rendered with
``ModelCard.from_template`` / ``DatasetCard.from_template`` from the Jinja2 templates shipped in
``geosane_hf/resources/model_cards``. Rules the Hub enforces on the fields we write, applied here:

- ``base_model`` (and ``datasets``) name Hub repositories: a local folder such as ``runs/small/model`` is not a repo
  id and goes into the card body and the provenance file, never into the metadata (:func:`hub_repo_id`).
- ``license: other`` comes with ``license_name`` and ``license_link`` (:func:`license_metadata`).
- ``model-index`` is built from ``EvalResult`` objects, so every result has a task type, a dataset name and type and
  a metric type and value.

Example:
    >>> hub_repo_id("geosane/base"), hub_repo_id("runs/small/model"), hub_repo_id("./model")
    ('geosane/base', None, None)
    >>> license_metadata("other")["license_link"]
    'LICENSE.md'
"""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = ["LICENSE_FILENAME", "hub_repo_id", "license_metadata", "render_card"]

LICENSE_FILENAME = "LICENSE.md"
# "name" or "org/name": letters, digits, "-", "_", "."; no "--" or ".." and no leading/trailing "-" or "." (the Hub's
# repo-id rules, as huggingface_hub.utils.validate_repo_id checks them).
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")


def hub_repo_id(value: Any) -> str | None:
    """``value`` when it is a Hub repo id (``org/name``) and not a local path, else None.

    A string that exists on disk (``runs/model``) is a local model even when it looks like ``org/name``.
    """
    if not isinstance(value, str) or not _REPO_ID.match(value) or "--" in value or ".." in value:
        return None
    if value.endswith((".", "-")) or os.path.exists(value):
        return None
    return value


def license_metadata(
    license: str = "other", license_name: str | None = None, license_link: str | None = None
) -> dict[str, str]:
    """The licence fields of a card: ``license`` and, for ``other``, ``license_name`` and ``license_link``.

    Args:
        license: A Hub licence id (``apache-2.0``, ``cc-by-4.0``, ...) or ``other``.
        license_name: For ``other``: a short id in lowercase letters, digits, ``-`` and ``.``.
        license_link: For ``other``: a URL or a file in the repository (default ``LICENSE.md``).

    Raises:
        ValueError: An empty licence, or a ``license_name`` the Hub refuses.
    """
    if not isinstance(license, str) or not license.strip():
        raise ValueError(f"expected a Hub licence id (e.g. 'apache-2.0', or 'other'), got {license!r}")
    if license != "other":
        return {"license": license}
    name = license_name or "geosane-license-chain"
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", name):
        raise ValueError(
            f"expected license_name in lowercase letters, digits, '-' and '.', got {name!r}; e.g. 'my-license-1.0'"
        )
    return {"license": "other", "license_name": name, "license_link": license_link or LICENSE_FILENAME}


def render_card(template: str, card_data: Any, *, repo_type: str = "model", **values: Any) -> str:
    """Renders a packaged Jinja2 template with huggingface_hub's ``from_template``; returns the card's text.

    Args:
        template: A template name of :func:`geosane_hf.package_data.card_template`.
        card_data: A ``ModelCardData`` or ``DatasetCardData``.
        repo_type: ``"model"`` or ``"dataset"``.
        **values: The template's other fields.
    """
    from huggingface_hub import DatasetCard, ModelCard

    from geosane_hf.package_data import card_template

    cls = DatasetCard if repo_type == "dataset" else ModelCard
    return str(cls.from_template(card_data, template_str=card_template(template), **values))
