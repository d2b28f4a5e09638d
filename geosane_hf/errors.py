"""The package's one base error: every error that reports bad input or a refused operation derives from it.

Each module keeps its own error class (``CheckpointError``, ``ManifestError``, ``GenerationError`` ...) with its
historical built-in base (``ValueError``, ``FileNotFoundError`` ...), so code that catches those keeps working, and
adds :class:`GeoSANEError`: the ``geosane`` CLI prints a ``GeoSANEError`` as a one-line message (exit code 2),
while anything else (a bug) keeps its traceback.

Example:
    >>> from geosane_hf.checkpoints import CheckpointError
    >>> issubclass(CheckpointError, GeoSANEError), issubclass(CheckpointError, ValueError)
    (True, True)
"""

from __future__ import annotations

__all__ = ["GeoSANEError", "UnsafePathError", "UsageError"]


class GeoSANEError(Exception):
    """Base of the package's errors: bad input or a refused operation, with a message that says what to do."""


class UsageError(GeoSANEError, ValueError):
    """A command-line value that argparse cannot check by itself (a JSON option, a combination of flags)."""


class UnsafePathError(GeoSANEError, ValueError):
    """A name or path from an input file that would leave the folder it belongs to (``../x``, ``/etc/x``)."""
