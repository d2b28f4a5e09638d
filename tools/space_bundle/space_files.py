"""The Space's own files: ``README.md`` (front matter, a note on the default model) and ``space_settings.py``."""

from __future__ import annotations

import json

from space_bundle.config import BundleError

__all__ = ["render_readme", "render_settings"]


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
