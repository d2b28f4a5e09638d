"""Atomic writes: a reader sees the old output or the new one, never a torn or half-built one.

Three tools, one idea (stage beside the target, check, then rename into place):

- :func:`write_with` (and :func:`write_text`, :func:`write_json`, :func:`copy_file`): one file, written to a
  temporary sibling, optionally verified after it is closed (a writer that swallowed an error leaves a file that
  fails the check), flushed to disk and renamed over the target; the temporary file is removed on failure.
- :func:`staged_dir`: a whole output folder (a dataset, a checkpoint), built in a hidden sibling folder and swapped
  into place when complete, so a killed or failed rebuild keeps the old complete folder.
- :func:`exclusive_lock`: one writer per output; a second one is refused at once with a clear message (the lock
  dies with its process, so a killed writer never leaves a stale lock behind).

Every index, report, card, figure and dataset shard the package writes goes through here.

Example:
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "index.json"
    >>> _ = write_json(path, {"models": []})
    >>> json.loads(path.read_text())
    {'models': []}
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from geosane_hf.errors import GeoSANEError

__all__ = [
    "OutputBusyError",
    "copy_file",
    "exclusive_lock",
    "remove_stale_stages",
    "replace_dir",
    "staged_dir",
    "write_json",
    "write_text",
    "write_with",
]


class OutputBusyError(GeoSANEError, RuntimeError):
    """Another process is writing the same output (its lock is held)."""


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened for fsync
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_with(
    path: str | os.PathLike,
    write: Callable[[Path], Any],
    suffix: str = "",
    verify: Callable[[Path], None] | None = None,
) -> Path:
    """Calls ``write(tmp)`` on a temporary sibling of ``path``, checks it, and renames it into place; returns ``path``.

    Args:
        path: The destination (its folder is created).
        write: Writes the content to the path it is given.
        suffix: Extension of the temporary name, for writers that infer the format from it (``".png"``).
        verify: Called on the closed temporary file before the rename; raises when the file is not complete (for
            writers that do not always raise after a failed write, such as Parquet's).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        write(tmp)
        if verify is not None:
            verify(tmp)
        _fsync_file(tmp)
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


# ----------------------------------------------------------------------------------------------------------------
# whole folders
# ----------------------------------------------------------------------------------------------------------------

_STAGE_MARKERS = (".staging-", ".old-")
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _stage_name(target: Path, marker: str) -> Path:
    return target.with_name(f".{target.name}{marker}{os.getpid()}")


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is not available."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # an old kernel or a file system without the flag: fall back to two renames
    raise OSError(code, os.strerror(code), str(a))


def replace_dir(staged: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Moves the complete folder ``staged`` to ``target``, replacing (and then deleting) what was there.

    Where the kernel can swap two paths atomically (Linux), readers see the old folder or the new one at every
    instant. Elsewhere the old folder is renamed aside first: for that one rename the target is missing (a reader
    gets "not found", never a mix).
    """
    staged, target = Path(staged), Path(target)
    if not target.exists():
        os.rename(staged, target)
        _fsync_dir(target.parent)
        return target
    if _exchange(staged, target):
        shutil.rmtree(staged, ignore_errors=True)  # now holds the old folder
    else:
        old = _stage_name(target, ".old-")
        os.rename(target, old)
        os.rename(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(target.parent)
    return target


def remove_stale_stages(target: str | os.PathLike) -> list[Path]:
    """Deletes the hidden sibling folders that killed writers of ``target`` left (call it under the lock).

    Returns:
        The folders removed.
    """
    target = Path(target)
    prefixes = tuple(f".{target.name}{marker}" for marker in _STAGE_MARKERS)
    if not target.parent.is_dir():
        return []
    stale = [p for p in target.parent.iterdir() if p.name.startswith(prefixes) and p.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


@contextlib.contextmanager
def staged_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty hidden sibling of ``target`` to build in; swaps it into place when the block succeeds.

    On an exception (or a kill) ``target`` is untouched: the staging folder is removed (or, after a kill, left
    for :func:`remove_stale_stages`). Hold :func:`exclusive_lock` around it when other writers may exist.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "dataset"
        >>> with staged_dir(out) as stage:
        ...     _ = (stage / "part-0.txt").write_text("complete")
        >>> sorted(p.name for p in out.iterdir())
        ['part-0.txt']
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = _stage_name(target, ".staging-")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    replace_dir(stage, target)


@contextlib.contextmanager
def exclusive_lock(target: str | os.PathLike, what: str) -> Iterator[Path]:
    """Holds an exclusive lock for writing ``target``; refuses at once when another process holds it.

    The lock is ``flock`` on a hidden sibling file ``.<name>.lock`` (kept afterwards: deleting lock files races).
    The kernel releases it when the process ends, however it ends, so a killed writer never blocks the next one.
    On systems without ``fcntl`` (Windows) no lock is taken.

    Args:
        target: The output file or folder.
        what: What is being written, for the message (``"geosane build-dataset"``).

    Raises:
        OutputBusyError: Another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield Path(target)
        return
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.with_name(f".{target.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusyError(
                f"{what}: expected no other writer of {str(target)!r}, but another process is writing it (it holds "
                f"{str(lock)!r}); wait for it to finish or choose another output folder."
            ) from None
        yield lock
    finally:
        os.close(fd)  # releases the lock
