"""Storage: repos, commits and objects on disk, with atomic commits (see the package docstring for the layout)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

from .model import (
    _COMMIT_OID,
    DEFAULT_GITATTRIBUTES,
    FileEntry,
    HubCommit,
    HubError,
    Repo,
    _lfs_patterns,
    _matches_gitattributes,
    _now,
    _write_json_atomic,
    git_blob_id,
    lfs_pointer,
)


class Store:
    """Repos, commits and objects, kept in ``root``. All public methods are thread-safe."""

    def __init__(self, root: Path, *, user: str, lfs_threshold: int):
        self.root = root
        self.user = user
        self.lfs_threshold = lfs_threshold
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self._counter = 0
        for sub in ("objects/lfs", "objects/blobs", "repos", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    # -- objects ---------------------------------------------------------------------------------------------
    def lfs_path(self, oid: str) -> Path:
        return self.root / "objects" / "lfs" / oid

    def blob_path(self, blob_id: str) -> Path:
        return self.root / "objects" / "blobs" / blob_id

    def has_lfs(self, oid: str, size: int | None = None) -> bool:
        path = self.lfs_path(oid)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def put_blob(self, content: bytes) -> str:
        blob_id = git_blob_id(content)
        path = self.blob_path(blob_id)
        if not path.exists():
            tmp = self.root / "tmp" / f"{blob_id}.{uuid.uuid4().hex}"
            tmp.write_bytes(content)
            os.replace(tmp, path)
        return blob_id

    def content_path(self, entry: FileEntry) -> Path:
        return self.lfs_path(entry.lfs_sha256) if entry.lfs_sha256 else self.blob_path(entry.blob_id)

    def read(self, entry: FileEntry) -> bytes:
        return self.content_path(entry).read_bytes()

    # -- repos -----------------------------------------------------------------------------------------------
    def get_repo(self, repo_type: str, repo_id: str, *, token: str | None = None) -> Repo:
        with self.lock:
            repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and token is None):
            raise HubError(404, f"Repository {repo_type}s/{repo_id} not found", "RepoNotFound")
        return repo

    def create_repo(self, repo_type: str, repo_id: str, *, private: bool = False, sdk: str | None = None) -> Repo:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, "You already created this repo", headers={"X-Error-Code": "RepoExists"})
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now(), sdk=sdk)
            self.repos[(repo_type, repo_id)] = repo
            blob_id = self.put_blob(DEFAULT_GITATTRIBUTES.encode())
            entry = FileEntry(".gitattributes", len(DEFAULT_GITATTRIBUTES.encode()), blob_id)
            self._add_commit(repo, "main", [], {".gitattributes": entry}, "initial commit", "")
            return repo

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            if self.repos.pop((repo_type, repo_id), None) is None:
                raise HubError(404, f"Repository {repo_type}s/{repo_id} not found", "RepoNotFound")
            shutil.rmtree(self._repo_dir(repo_type, repo_id), ignore_errors=True)

    def _repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / repo_type / repo_id

    def resolve(self, repo: Repo, revision: str) -> HubCommit:
        """A branch name, ``refs/heads/<branch>``, ``refs/pr/N`` or a full commit id -> commit."""
        with self.lock:
            name = revision.removeprefix("refs/heads/")
            if name in repo.refs:
                return repo.commits[repo.refs[name]]
            if _COMMIT_OID.match(revision) and revision in repo.commits:
                return repo.commits[revision]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _add_commit(
        self, repo: Repo, branch: str, parents: list[str], files: dict[str, FileEntry], title: str, message: str
    ) -> HubCommit:
        with self.lock:
            self._counter += 1
            date = _now()
            digest = hashlib.sha1()
            digest.update(
                json.dumps([repo.repo_type, repo.repo_id, parents, title, message, date, self._counter]).encode()
            )
            for path in sorted(files):
                digest.update(f"{path}\0{files[path].blob_id}\n".encode())
            commit = HubCommit(
                oid=digest.hexdigest(),
                parents=tuple(parents),
                title=title,
                message=message,
                date=date,
                files=dict(files),
            )
            repo.commits[commit.oid] = commit
            repo.refs[branch] = commit.oid
            self._persist(repo, commit)
            return commit

    def _persist(self, repo: Repo, commit: HubCommit) -> None:
        repo_dir = self._repo_dir(repo.repo_type, repo.repo_id)
        (repo_dir / "commits").mkdir(parents=True, exist_ok=True)
        snapshot = dataclasses.asdict(commit)
        snapshot["files"] = {path: dataclasses.asdict(entry) for path, entry in commit.files.items()}
        _write_json_atomic(repo_dir / "commits" / f"{commit.oid}.json", snapshot)
        self.persist_refs(repo)

    def persist_refs(self, repo: Repo) -> None:
        _write_json_atomic(self._repo_dir(repo.repo_type, repo.repo_id) / "refs.json", repo.refs)

    def commit(
        self,
        repo: Repo,
        revision: str,
        operations: list[dict[str, Any]],
        *,
        title: str,
        message: str,
        parent_commit: str | None,
        create_pr: bool,
    ) -> tuple[HubCommit, int | None]:
        """Apply ndjson operations atomically on ``revision`` (a branch); returns the commit and the PR number."""
        with self.lock:
            name = revision.removeprefix("refs/heads/")
            if name not in repo.refs:
                raise HubError(404, f"Invalid rev id: {revision} (commits go to a branch)", "RevisionNotFound")
            head = repo.commits[repo.refs[name]]
            if parent_commit is not None and parent_commit != head.oid:
                raise HubError(
                    412,
                    f"A commit has happened since. Expected parent commit {parent_commit}, got head {head.oid}. "
                    "Please fetch the latest commit and retry.",
                )
            files = dict(head.files)
            for op in operations:
                key, value = op.get("key"), op.get("value") or {}
                path = value.get("path")
                if key in {"file", "lfsFile", "deletedFile", "deletedFolder"} and not isinstance(path, str):
                    raise HubError(400, f"Expected a 'path' in operation {key!r}, got {value!r}")
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"Expected encoding 'base64', got {value.get('encoding')!r}")
                    content = base64.b64decode(value.get("content", ""))
                    files[path] = FileEntry(path, len(content), self.put_blob(content))
                elif key == "lfsFile":
                    oid = value.get("oid")
                    if value.get("algo", "sha256") != "sha256" or not isinstance(oid, str):
                        raise HubError(400, f"Expected an LFS sha256 oid for {path}, got {value!r}")
                    if not self.has_lfs(oid):
                        raise HubError(
                            422,
                            f"LFS object {oid} for {path} was never uploaded: upload it through the batch API first",
                        )
                    size = self.lfs_path(oid).stat().st_size
                    if value.get("size") is not None and int(value["size"]) != size:
                        raise HubError(422, f"LFS object {oid} for {path}: expected size {value['size']}, got {size}")
                    pointer = lfs_pointer(oid, size)
                    files[path] = FileEntry(path, size, git_blob_id(pointer), oid, len(pointer))
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    doomed = [p for p in files if p.startswith(prefix)]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del files[p]
                else:
                    raise HubError(400, f"Unknown commit operation {key!r}: expected file, lfsFile, deletedFile")
            branch = name
            pr_num = None
            if create_pr:
                pr_num = repo.next_pr
                repo.next_pr += 1
                branch = f"refs/pr/{pr_num}"
            return self._add_commit(repo, branch, [head.oid], files, title, message), pr_num

    def is_lfs_path(self, repo: Repo, revision: str, path: str, size: int, sample: bytes) -> bool:
        if size > self.lfs_threshold or b"\0" in sample:
            return True
        try:
            head = self.resolve(repo, revision)
        except HubError:
            head = None
        gitattributes = DEFAULT_GITATTRIBUTES
        if head is not None and ".gitattributes" in head.files:
            gitattributes = self.read(head.files[".gitattributes"]).decode("utf-8", errors="replace")
        return any(_matches_gitattributes(path, pattern) for pattern in _lfs_patterns(gitattributes))

    def last_commit(self, repo: Repo, start: HubCommit, path: str) -> HubCommit:
        """The newest commit (first-parent walk from ``start``) that changed ``path`` (a file or a folder)."""

        def state(commit: HubCommit) -> Any:
            if path in commit.files:
                return commit.files[path].blob_id
            prefix = path + "/"
            return tuple(sorted((p, e.blob_id) for p, e in commit.files.items() if p.startswith(prefix)))

        current = start
        current_state = state(current)
        while current.parents:
            parent = repo.commits[current.parents[0]]
            if state(parent) != current_state:
                return current
            current = parent
        return current
