"""Listing and download routes: ``tree``, ``paths-info``, ``refs``, ``commits``, ``branch`` and ``resolve``."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from .base import HandlerBase
from .model import HubCommit, HubError, Repo


class FileRoutes(HandlerBase):
    """Listings (tree, paths-info, refs, commits), branches and downloads (resolve)."""

    # -- listing ---------------------------------------------------------------------------------------------
    def _entries(self, repo: Repo, commit: HubCommit, prefix: str, recursive: bool) -> list[tuple[str, str]]:
        """Sorted ``(kind, path)`` under ``prefix``; folders are implied by file paths, as in git."""
        base = prefix + "/" if prefix else ""
        files: set[str] = set()
        folders: set[str] = set()
        for path in commit.files:
            if not path.startswith(base):
                continue
            rest = path[len(base) :].split("/")
            depth = len(rest) if recursive else 1
            for i in range(1, min(depth, len(rest) - 1) + 1):
                folders.add(base + "/".join(rest[:i]))
            if recursive or len(rest) == 1:
                files.add(path)
        return sorted([("directory", p) for p in folders] + [("file", p) for p in files], key=lambda e: e[1])

    def _entry_json(self, repo: Repo, commit: HubCommit, kind: str, path: str, expand: bool) -> dict[str, Any]:
        if kind == "file":
            entry = commit.files[path]
            item: dict[str, Any] = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": path}
            if entry.lfs_sha256:
                item["lfs"] = {"oid": entry.lfs_sha256, "size": entry.size, "pointerSize": entry.pointer_size}
        else:
            prefix = path + "/"
            tree = hashlib.sha1(
                "".join(
                    f"{p}\0{e.blob_id}\n" for p, e in sorted(commit.files.items()) if p.startswith(prefix)
                ).encode()
            ).hexdigest()
            item = {"type": "directory", "oid": tree, "size": 0, "path": path}
        if expand:
            last = self.hub.store.last_commit(repo, commit, path)
            item["lastCommit"] = {"id": last.oid, "title": last.title, "date": last.date}
            if kind == "file":
                item["securityFileStatus"] = {
                    "status": "safe",
                    "avScan": {"virusFound": False, "virusNames": None},
                    "pickleImportScan": None,
                }
        return item

    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        store = self.hub.store
        repo = store.get_repo(repo_type, repo_id, token=self.token)
        commit = store.resolve(repo, revision)
        if path and not any(p.startswith(path + "/") for p in commit.files):
            raise HubError(
                404, f"Directory {path} not found at {revision}", "EntryNotFound", {"X-Repo-Commit": commit.oid}
            )
        expand = self._flag("expand")
        entries = self._entries(repo, commit, path, self._flag("recursive"))
        page_size = self.hub.tree_page_size_expand if expand else self.hub.tree_page_size
        if self.query.get("limit"):
            page_size = min(page_size, max(1, int(self.query["limit"][0])))
        start = 0
        if self.query.get("cursor"):
            try:
                start = int(base64.urlsafe_b64decode(self.query["cursor"][0].encode()).decode())
            except ValueError as err:
                raise HubError(400, f"Invalid cursor {self.query['cursor'][0]!r}") from err
        page = entries[start : start + page_size]
        headers = {"X-Repo-Commit": commit.oid}
        if start + page_size < len(entries):
            cursor = base64.urlsafe_b64encode(str(start + page_size).encode()).decode()
            params = {k: v[-1] for k, v in self.query.items() if k != "cursor"}
            params["cursor"] = cursor
            headers["Link"] = f'<{self.base_url}{self.route_path}?{urlencode(params)}>; rel="next"'
        self._send_json([self._entry_json(repo, commit, kind, p, expand) for kind, p in page], headers=headers)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        store = self.hub.store
        repo = store.get_repo(repo_type, repo_id, token=self.token)
        commit = store.resolve(repo, revision)
        body = self._read_body()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            payload = json.loads(body or b"{}")
            paths = payload.get("paths", [])
            expand = bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode(), keep_blank_values=True)
            paths = form.get("paths", []) + form.get("paths[]", [])
            expand = (form.get("expand") or ["false"])[-1].lower() in {"1", "true"}
        out = []
        for raw_path in paths if isinstance(paths, list) else [paths]:
            path = raw_path.strip("/")
            if path in commit.files:
                out.append(self._entry_json(repo, commit, "file", path, expand))
            elif path and any(p.startswith(path + "/") for p in commit.files):
                out.append(self._entry_json(repo, commit, "directory", path, expand))
        self._send_json(out, headers={"X-Repo-Commit": commit.oid})

    def _refs(self, repo_type: str, repo_id: str) -> None:
        repo = self.hub.store.get_repo(repo_type, repo_id, token=self.token)
        with self.hub.store.lock:
            refs = dict(repo.refs)
        branches = [
            {"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
            for name, oid in sorted(refs.items())
            if not name.startswith("refs/")
        ]
        payload: dict[str, Any] = {"branches": branches, "converts": [], "tags": []}
        if self._flag("include_prs"):
            payload["pullRequests"] = [
                {"name": name.removeprefix("refs/pr/"), "ref": name, "targetCommit": oid}
                for name, oid in sorted(refs.items())
                if name.startswith("refs/pr/")
            ]
        self._send_json(payload)

    def _commits(self, repo_type: str, repo_id: str, revision: str) -> None:
        store = self.hub.store
        repo = store.get_repo(repo_type, repo_id, token=self.token)
        commit = store.resolve(repo, revision)
        history = []
        while True:
            history.append(
                {
                    "id": commit.oid,
                    "title": commit.title,
                    "message": commit.message,
                    "date": commit.date,
                    "authors": [{"user": self.hub.user}],
                }
            )
            if not commit.parents:
                break
            commit = repo.commits[commit.parents[0]]
        self._send_json(history)

    def _branch(self, repo_type: str, repo_id: str, branch: str) -> None:
        token = self._require_token()
        store = self.hub.store
        repo = store.get_repo(repo_type, repo_id, token=token)
        with store.lock:
            if self.command == "DELETE":
                if branch not in repo.refs or branch == "main":
                    raise HubError(404, f"Cannot delete branch {branch}", "RevisionNotFound")
                del repo.refs[branch]
            else:
                payload = self._json_body()
                if branch in repo.refs:
                    raise HubError(409, f"Reference refs/heads/{branch} already exists")
                start = store.resolve(repo, payload.get("startingPoint") or "main")
                repo.refs[branch] = start.oid
            store.persist_refs(repo)
        self._send_json({})

    # -- downloads -------------------------------------------------------------------------------------------
    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        for _ in self._iter_body():  # GET/HEAD carry no body, but keep the keep-alive connection in sync
            pass
        store = self.hub.store
        repo = store.get_repo(repo_type, repo_id, token=self.token)
        commit = store.resolve(repo, revision)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(
                404, f"Entry not found: {path} at {revision}", "EntryNotFound", {"X-Repo-Commit": commit.oid}
            )
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{entry.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
        }
        if entry.lfs_sha256:
            headers.update({"X-Linked-Etag": f'"{entry.lfs_sha256}"', "X-Linked-Size": str(entry.size)})
        start, end, status = 0, entry.size - 1, 200
        range_header = self.headers.get("Range")
        if range_header:
            match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", range_header)
            if match is None or match.group(1) == match.group(2) == "":
                raise HubError(
                    416, f"Unsupported Range {range_header!r}", headers={"Content-Range": f"bytes */{entry.size}"}
                )
            if match.group(1) == "":
                start = max(0, entry.size - int(match.group(2)))
            else:
                start = int(match.group(1))
                end = min(entry.size - 1, int(match.group(2))) if match.group(2) else entry.size - 1
            if start >= entry.size or start > end:
                raise HubError(
                    416,
                    f"Range {range_header!r} outside 0-{entry.size}",
                    headers={"Content-Range": f"bytes */{entry.size}"},
                )
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        length = max(0, end - start + 1)
        headers["Content-Length"] = str(length)
        self._status = status
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD" or length == 0:
            return
        with open(store.content_path(entry), "rb") as f:
            f.seek(start)
            left = length
            while left > 0:
                data = f.read(min(1 << 20, left))
                if not data:
                    break
                self.wfile.write(data)
                left -= len(data)
