"""Account and repo routes: ``whoami-v2``, ``validate-yaml``, ``repos/create`` / ``repos/delete``, ``settings`` and
repo info.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from .base import HandlerBase
from .cards import _card_data, card_errors
from .model import URL_PREFIXES, HubError


class RepoRoutes(HandlerBase):
    """The account (whoami), repo creation, deletion and settings, repo info and the README metadata check."""

    def _whoami(self) -> None:
        self._require_token()
        self._send_json(
            {
                "type": "user",
                "id": "0" * 24,
                "name": self.hub.user,
                "fullname": "Hub Test User",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
            }
        )

    def _validate_yaml(self) -> None:
        payload = self._json_body()
        errors = card_errors(str(payload.get("content", "")), str(payload.get("repoType") or "model"))
        status = 400 if errors else 200
        self._send_json({"errors": [{"message": e} for e in errors], "warnings": []}, status=status)

    def _create_repo(self) -> None:
        self._require_token()
        payload = self._json_body()
        name = payload.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[\w.\-]{1,96}", name) or "--" in name:
            raise HubError(400, f"Expected a repo name of letters, digits, '-', '_', '.', got {name!r}")
        namespace = payload.get("organization") or self.hub.user
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"Expected type in {sorted(URL_PREFIXES)}, got {repo_type!r}")
        if repo_type == "space" and not payload.get("sdk"):
            raise HubError(400, "Expected an 'sdk' for a space")
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        repo_id = f"{namespace}/{name}"
        try:
            repo = self.hub.store.create_repo(repo_type, repo_id, private=private, sdk=payload.get("sdk"))
        except HubError as err:
            # Like the Hub, a 409 still carries the repo url (`create_repo(exist_ok=True)` reads it).
            err.body["url"] = f"{self.base_url}/{URL_PREFIXES[repo_type]}{repo_id}"
            raise
        self._send_json({"url": self._repo_url(repo), "name": repo.repo_id, "id": repo.repo_id})

    def _delete_repo(self) -> None:
        self._require_token()
        payload = self._json_body()
        namespace = payload.get("organization") or self.hub.user
        self.hub.store.delete_repo(payload.get("type") or "model", f"{namespace}/{payload.get('name')}")
        self._send_json({})

    def _settings(self, repo_type: str, repo_id: str) -> None:
        token = self._require_token()
        repo = self.hub.store.get_repo(repo_type, repo_id, token=token)
        payload = self._json_body()
        if "private" in payload:
            repo.private = bool(payload["private"])
        if "visibility" in payload:
            repo.private = payload["visibility"] == "private"
        self._send_json({"private": repo.private})

    def _repo_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        store = self.hub.store
        repo = store.get_repo(repo_type, repo_id, token=self.token)
        commit = store.resolve(repo, revision)
        with_blobs = self._flag("blobs")
        siblings = []
        for path in sorted(commit.files):
            entry = commit.files[path]
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=entry.size, blobId=entry.blob_id)
                if entry.lfs_sha256:
                    sibling["lfs"] = {
                        "size": entry.size,
                        "sha256": entry.lfs_sha256,
                        "pointerSize": entry.pointer_size,
                    }
            siblings.append(sibling)
        card = store.read(commit.files["README.md"]) if "README.md" in commit.files else None
        card_data = _card_data(card) if card is not None else None
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": list((card_data or {}).get("tags") or []),
            "siblings": siblings,
            "usedStorage": sum(e.size for e in commit.files.values()),
        }
        if card_data is not None:
            info["cardData"] = card_data
        if repo_type == "model":
            info["modelId"] = repo_id
            if card_data and card_data.get("library_name"):
                info["library_name"] = card_data["library_name"]
            if card_data and card_data.get("pipeline_tag"):
                info["pipeline_tag"] = card_data["pipeline_tag"]
            config = commit.files.get("config.json")
            if config is not None and config.size < 1_000_000:
                try:
                    parsed = json.loads(store.read(config))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    parsed = None
                if isinstance(parsed, dict):
                    info["config"] = {
                        k: parsed[k] for k in ("architectures", "model_type", "architecture") if k in parsed
                    }
        elif repo_type == "space":
            info.update(sdk=repo.sdk, runtime={"stage": "RUNNING", "hardware": {"current": "cpu-basic"}})
        expand = self.query.get("expand") or self.query.get("expand[]")
        if expand:
            info = {k: v for k, v in info.items() if k in {"_id", "id"} or k in expand}
        self._send_json(info)
