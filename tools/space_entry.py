"""GeoSANE weight generation: the entry point of the bundled Hugging Face Space (``app.py`` in the bundle).

``tools/bundle_space.py`` copies this file into the bundle as ``app.py``; edit it here, not in the bundle. Next to
it in the bundle: ``ui.py`` (``spaces/app.py`` as is: the Blocks UI), ``backend.py``, ``space_settings.py``
(written by the bundler: the Space's defaults, e.g. ``GEOSANE_MODEL=geosane/base``) and ``geosane_hf/`` (the
package, vendored because it is not on PyPI).

Before the backend reads the environment, the defaults of ``space_settings.py`` fill the variables that are unset
(a variable set in the Space's settings wins). The server listens on ``GRADIO_SERVER_NAME`` (Spaces set
``0.0.0.0``; on a Space without it, ``0.0.0.0`` too; elsewhere ``127.0.0.1``) and ``GRADIO_SERVER_PORT`` (7860).

Run the bundle locally: ``cd dist/space && python app.py``. Importing this module builds nothing:

    >>> import app  # doctest: +SKIP
    >>> app.build_app(app.Backend.from_env({}))  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if not sys.path or Path(sys.path[0] or ".").resolve() != HERE:
    sys.path.insert(0, str(HERE))  # the vendored geosane_hf, backend.py and ui.py win over installed copies

import space_settings  # noqa: E402 (after the path set-up)

space_settings.apply()

from backend import Backend  # noqa: E402
from ui import build_app, main, serve, server_name  # noqa: E402  (one launcher: spaces/app.py, copied as ui.py)

__all__ = ["Backend", "build_app", "main", "server_name"]

if __name__ == "__main__":
    serve()
