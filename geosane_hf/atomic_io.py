"""Atomic file writes: a temporary sibling, then ``os.replace``, so a reader never sees a half-written file.

Every index, report, card and figure the package writes goes through here: an interrupted run leaves either the
old file or the new one, never a torn one (the temporary file is removed on failure).

Example:
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "index.json"
    >>> _ = write_json(path, {"models": []})
    >>> json.loads(path.read_text())
    {'models': []}
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["copy_file", "write_json", "write_text", "write_with"]


def write_with(path: str | os.PathLike, write: Callable[[Path], Any], suffix: str = "") -> Path:
    """Calls ``write(tmp)`` on a temporary sibling of ``path`` and renames it into place; returns ``path``.

    Args:
        path: The destination (its folder is created).
        write: Writes the content to the path it is given.
        suffix: Extension of the temporary name, for writers that infer the format from it (``".png"``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes UTF-8 text atomically."""
    return write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(
    path: str | os.PathLike, payload: Any, *, indent: int = 1, sort_keys: bool = False, default: Any = None
) -> Path:
    """Writes ``payload`` as JSON (plus a final newline) atomically."""
    text = json.dumps(payload, indent=indent, sort_keys=sort_keys, default=default) + "\n"
    return write_text(path, text)


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copies a file atomically."""
    return write_with(target, lambda tmp: shutil.copyfile(source, tmp))
