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

import logging
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if not sys.path or Path(sys.path[0] or ".").resolve() != HERE:
    sys.path.insert(0, str(HERE))  # the vendored geosane_hf, backend.py and ui.py win over installed copies

import space_settings  # noqa: E402 (after the path set-up)

space_settings.apply()

from backend import Backend  # noqa: E402
from ui import build_app  # noqa: E402

__all__ = ["Backend", "build_app", "main", "server_name"]


def server_name(environ: dict[str, str] | None = None) -> str:
    """The host to listen on: ``GRADIO_SERVER_NAME``, else ``0.0.0.0`` on a Space (``SPACE_ID``), else 127.0.0.1.

    Example:
        >>> server_name({"SPACE_ID": "user/geosane"}), server_name({})
        ('0.0.0.0', '127.0.0.1')
    """
    env = os.environ if environ is None else environ
    if env.get("GRADIO_SERVER_NAME"):
        return env["GRADIO_SERVER_NAME"]
    return "0.0.0.0" if env.get("SPACE_ID") or env.get("SYSTEM") == "spaces" else "127.0.0.1"


def main():
    """Builds the backend from the environment and launches (``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``)."""
    logging.basicConfig(level=logging.INFO)
    for name in ("httpx", "httpx2", "httpcore", "huggingface_hub"):  # request logs: keep them out of the console
        logging.getLogger(name).setLevel(logging.WARNING)
    backend = Backend.from_env()
    logging.getLogger("geosane.space").info("GeoSANE model: %s", backend.model_label)
    app = build_app(backend)
    app.queue(default_concurrency_limit=1)
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    app.launch(server_name=server_name(), server_port=port, prevent_thread_lock=True, show_error=False)
    return app


if __name__ == "__main__":
    demo = main()
    print(f"GeoSANE Space running on {demo.local_url} (Ctrl-C to stop)", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        demo.close()
