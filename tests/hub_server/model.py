"""The test Hub's data model: repos, commits, files, faults, request records, its error and git/LFS helpers."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import fnmatch
import hashlib
import json
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_COMMIT_OID = re.compile(r"^[0-9a-f]{40}$")

# The .gitattributes that the Hub writes into every new repo (abridged to the patterns that matter here).
DEFAULT_GITATTRIBUTES = """\
*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.ftz filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.joblib filter=lfs diff=lfs merge=lfs -text
*.lz4 filter=lfs diff=lfs merge=lfs -text
*.mlmodel filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.ot filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pb filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.rar filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
saved_model/**/* filter=lfs diff=lfs merge=lfs -text
*.tar.* filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.tflite filter=lfs diff=lfs merge=lfs -text
*.tgz filter=lfs diff=lfs merge=lfs -text
*.wasm filter=lfs diff=lfs merge=lfs -text
*.xz filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
"""


# ----------------------------------------------------------------------------------------------------------------
# Data model
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """One file of a commit snapshot.

    Attributes:
        path: Path in the repo (POSIX).
        size: Size of the file content in bytes (for LFS files, of the object, not of the pointer).
        blob_id: Git blob id: sha1 of the content for regular files, of the LFS pointer for LFS files.
        lfs_sha256: sha256 of the content for LFS files, ``None`` for regular files.
        pointer_size: Size of the LFS pointer file (0 for regular files).
    """

    path: str
    size: int
    blob_id: str
    lfs_sha256: str | None = None
    pointer_size: int = 0

    @property
    def etag(self) -> str:
        """The ETag the Hub serves: the sha256 for LFS files, the git blob id otherwise."""
        return self.lfs_sha256 or self.blob_id


@dataclasses.dataclass(frozen=True)
class HubCommit:
    """An immutable snapshot of a repo.

    Attributes:
        oid: 40-hex commit id.
        parents: Parent commit ids (empty for the first commit).
        title: Commit summary.
        message: Commit description.
        date: ISO-8601 UTC timestamp.
        files: Full snapshot: path -> file.
    """

    oid: str
    parents: tuple[str, ...]
    title: str
    message: str
    date: str
    files: Mapping[str, FileEntry]


@dataclasses.dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    sdk: str | None = None
    refs: dict[str, str] = dataclasses.field(default_factory=dict)  # branch / refs/pr/N -> commit oid
    commits: dict[str, HubCommit] = dataclasses.field(default_factory=dict)
    next_pr: int = 1


@dataclasses.dataclass
class Fault:
    """A failure to inject into matching requests (see :meth:`HubServer.fail_next`).

    Attributes:
        pattern: Regular expression searched in ``"METHOD /path"`` (path without the query string).
        remaining: How many more requests fail; ``None`` means every matching request.
        status: HTTP status to answer with (ignored when ``drop``).
        after_bytes: Read this many bytes of the request body first (``None``: do not read it before failing).
        drop: Close the connection without any response (the client sees a network error, like a reset socket).
        message: Error message sent in the body and the ``X-Error-Message`` header.
        hits: How many requests this fault has failed so far.
    """

    pattern: str
    remaining: int | None = 1
    status: int = 500
    after_bytes: int | None = None
    drop: bool = False
    message: str = "Injected failure"
    hits: int = 0


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """One served request: method, path (with query string) and the status sent (0 for a dropped connection)."""

    method: str
    path: str
    status: int


class HubError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.body = body or {}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_id(content: bytes) -> str:
    """Git's blob id: ``sha1(b"blob <size>\\0" + content)``."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The LFS pointer file that git stores in place of an LFS object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _lfs_patterns(gitattributes: str) -> list[str]:
    patterns = []
    for line in gitattributes.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            patterns.append(parts[0])
    return patterns


def _matches_gitattributes(path: str, pattern: str) -> bool:
    # Patterns without a slash match the basename at any depth (git semantics); others match the full path.
    if "/" not in pattern:
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    return fnmatch.fnmatchcase(path, pattern.replace("**/", "*"))


def _write_json_atomic(target: Path, payload: Any) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, target)
