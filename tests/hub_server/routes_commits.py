"""Upload routes: ``preupload``, the LFS batch API with its upload and verify hrefs, and the ndjson ``commit``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import uuid
from urllib.parse import urlencode

from .base import HandlerBase
from .cards import card_errors
from .model import HubError


class CommitRoutes(HandlerBase):
    """Uploads: ``preupload``, the LFS batch API, its upload and verify hrefs, and the ndjson commit."""

    def _preupload(self, repo_type: str, repo_id: str, revision: str) -> None:
        token = self._require_token()
        store = self.hub.store
        repo = store.get_repo(repo_type, repo_id, token=token)
        if not self._flag("create_pr"):
            store.resolve(repo, revision)
        payload = self._json_body()
        try:
            head = store.resolve(repo, revision)
        except HubError:
            head = None
        files = []
        for item in payload.get("files", []):
            path = item["path"]
            sample = base64.b64decode(item.get("sample", ""))
            lfs = store.is_lfs_path(repo, revision, path, int(item.get("size", 0)), sample)
            existing = head.files.get(path) if head is not None else None
            oid = None if existing is None else (existing.lfs_sha256 or existing.blob_id)
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._send_json({"files": files, "commitOid": head.oid if head else None})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        token = self._require_token()
        store = self.hub.store
        store.get_repo(repo_type, repo_id, token=token)
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise HubError(400, f"Expected operation 'upload', got {payload.get('operation')!r}")
        transfers = payload.get("transfers") or ["basic"]
        if "basic" not in transfers:
            raise HubError(400, f"Expected the 'basic' transfer among {transfers}")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj.get("oid"), obj.get("size")
            if not isinstance(oid, str) or not re.fullmatch(r"[0-9a-f]{64}", oid) or not isinstance(size, int):
                objects.append({"oid": str(oid), "size": int(size or 0), "error": {"code": 422, "message": "bad oid"}})
                continue
            if store.has_lfs(oid, size):
                objects.append({"oid": oid, "size": size})  # already uploaded: no actions
                continue
            sig = self.hub._sign(oid, size)
            query = urlencode({"size": size, "sig": sig})
            objects.append(
                {
                    "oid": oid,
                    "size": size,
                    "authenticated": True,
                    "actions": {
                        "upload": {"href": f"{self.base_url}/_hub/lfs/upload/{oid}?{query}", "expires_in": 3600},
                        "verify": {
                            "href": f"{self.base_url}/_hub/lfs/verify/{oid}",
                            "header": {"Authorization": f"Bearer {token}"},
                        },
                    },
                }
            )
        self._send_json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_upload(self, oid: str) -> None:
        store = self.hub.store
        size_values, sig_values = self.query.get("size"), self.query.get("sig")
        if (
            not size_values
            or not sig_values
            or not hmac.compare_digest(sig_values[0], self.hub._sign(oid, int(size_values[0])))
        ):
            raise HubError(403, "Expected a signed upload URL from the LFS batch API")
        size = int(size_values[0])
        tmp = store.root / "tmp" / f"{oid}.{uuid.uuid4().hex}.part"
        digest = hashlib.sha256()
        written = 0
        try:
            with open(tmp, "wb") as f:
                for chunk in self._iter_body():
                    digest.update(chunk)
                    written += len(chunk)
                    f.write(chunk)
            if written != size:
                raise HubError(400, f"Expected {size} bytes for LFS object {oid}, got {written}")
            if digest.hexdigest() != oid:
                raise HubError(400, f"Expected content with sha256 {oid}, got {digest.hexdigest()}")
            os.replace(tmp, store.lfs_path(oid))
        finally:
            tmp.unlink(missing_ok=True)
        self._send(200, b"", {"ETag": f'"{oid}"', "Content-Type": "text/plain"})

    def _lfs_verify(self, oid: str) -> None:
        self._require_token()
        payload = self._json_body()
        if payload.get("oid") != oid or not self.hub.store.has_lfs(oid, payload.get("size")):
            raise HubError(404, f"LFS object {oid} of size {payload.get('size')} not found", "EntryNotFound")
        self._send_json({"success": True})

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> None:
        token = self._require_token()
        store = self.hub.store
        repo = store.get_repo(repo_type, repo_id, token=token)
        lines = [line for line in self._read_body().splitlines() if line.strip()]
        try:
            items = [json.loads(line) for line in lines]
        except json.JSONDecodeError as err:
            raise HubError(400, f"Expected an ndjson commit payload: {err}") from err
        if not items or items[0].get("key") != "header":
            raise HubError(400, "Expected the first ndjson line to be the 'header'")
        header = items[0].get("value") or {}
        if not str(header.get("summary", "")).strip():
            raise HubError(400, "Expected a non-empty commit summary")
        for item in items[1:]:
            value = item.get("value") or {}
            if item.get("key") == "file" and value.get("path") == "README.md":
                text = base64.b64decode(value.get("content", "")).decode("utf-8", "replace")
                errors = card_errors(text, repo_type.removesuffix("s"))
                if errors:
                    raise HubError(400, "Invalid metadata in README.md.\n" + "\n".join(f"- {e}" for e in errors))
        commit, pr_num = store.commit(
            repo,
            revision,
            items[1:],
            title=header["summary"],
            message=header.get("description") or "",
            parent_commit=header.get("parentCommit"),
            create_pr=self._flag("create_pr"),
        )
        url = self._repo_url(repo)
        self._send_json(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{url}/commit/{commit.oid}",
                "hookOutput": "",
                "pullRequestUrl": f"{url}/discussions/{pr_num}" if pr_num is not None else None,
            }
        )
