"""Names and paths read from input files, checked before they touch the file system.

Ids in manifests and collection indexes become file names (``models/<id>.safetensors``), and indexes name files
relative to their own folder (``collection.jsonl``'s ``file``, a sharded checkpoint's ``index.json``, a packaged
file inside its package). A hostile or broken input must not make us write or read outside the folder it belongs
to: every such name goes through :func:`check_name`, every such path through :func:`resolve_inside`.

Example:
    >>> check_name("resnet18-eurosat_v1.2", "manifest id")
    'resnet18-eurosat_v1.2'
    >>> check_name("../../x", "manifest id")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    geosane_hf.errors.UnsafePathError: manifest id: expected a file-name-safe name ...
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

from geosane_hf.errors import UnsafePathError

__all__ = ["MAX_NAME_LENGTH", "check_name", "resolve_inside"]

MAX_NAME_LENGTH = 200  # file systems allow 255 bytes per name; room for a suffix such as ".safetensors.tmp-123"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@,-]*")


def check_name(name: object, what: str) -> str:
    """Returns ``name`` when it is safe as a single path component, else raises.

    Safe: a string of letters, digits and ``. _ + = @ , -``, starting with a letter or digit (no ``/``, ``\\``,
    ``..``, hidden names, control characters or spaces), at most :data:`MAX_NAME_LENGTH` characters.

    Args:
        name: The value read from the input.
        what: What it is, for the message (``"manifest entry 3 id"``).

    Raises:
        UnsafePathError: The name is not safe; the message shows it and says what is allowed.
    """
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH or ".." in name:
        raise UnsafePathError(
            f"{what}: expected a file-name-safe name (letters, digits and . _ + = @ , - ; starting with a letter or "
            f"digit; no '..', at most {MAX_NAME_LENGTH} characters), got {name!r}; rename it (e.g. 'org--model' "
            "instead of 'org/model')."
        )
    return name


def resolve_inside(root: str | os.PathLike, relative: object, what: str) -> Path:
    """``root / relative``, refused unless it stays inside ``root`` (after resolving ``..`` and symlinks).

    Args:
        root: The folder the path belongs to.
        relative: A relative path read from an input file (``"models/a.safetensors"``).
        what: What it is, for the message (``"collection.jsonl line 3 file"``).

    Returns:
        The joined path (not resolved: symlinks inside ``root`` keep their names).

    Raises:
        UnsafePathError: An absolute path, a drive, or a path that leaves ``root``.
    """
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise UnsafePathError(f"{what}: expected a relative path inside {str(root)!r}, got {relative!r}.")
    if (
        PurePosixPath(relative).is_absolute()
        or PureWindowsPath(relative).is_absolute()
        or PureWindowsPath(relative).drive
    ):
        raise UnsafePathError(
            f"{what}: expected a path relative to {str(root)!r}, got the absolute path {relative!r}; an index may "
            "only name files inside its own folder."
        )
    root = Path(root)
    joined = root / relative
    base = root.resolve()
    if not joined.resolve().is_relative_to(base):
        raise UnsafePathError(
            f"{what}: expected a path inside {str(root)!r}, got {relative!r}, which leads to "
            f"{str(joined.resolve())!r}; an index may only name files inside its own folder."
        )
    return joined
