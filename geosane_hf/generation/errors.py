"""The generation room's error type (the CLI prints it as one line, without a traceback)."""

from __future__ import annotations

from geosane_hf.errors import GeoSANEError

__all__ = ["GenerationError"]


class GenerationError(GeoSANEError, ValueError):
    """Bad input to weight generation (the CLI prints it without a traceback)."""
