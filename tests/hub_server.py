"""A Hub-compatible HTTP server for the test suite (stdlib only, plus PyYAML for card metadata).

The Hugging Face Hub is unreachable from this project's machines, yet the code under test must keep making its
ordinary ``huggingface_hub`` / ``datasets`` / ``timm`` calls. This module implements the part of the Hub's HTTP API
that a push/pull round trip uses, so that real, unmodified clients can talk to ``http://127.0.0.1:PORT`` through
``HF_ENDPOINT``. It is a test double of the *server*, never of the client.

Routes (``{type}`` is ``models``, ``datasets`` or ``spaces``; ``{prefix}`` is ``""``, ``"datasets/"`` or
``"spaces/"``; revisions are URL-quoted branch names or 40-hex commit ids):

==========================================================  ==========================================================
``GET  /api/whoami-v2``                                     the token's user (401 without a token)
``POST /api/repos/create`` / ``POST /api/repos/delete``     create (409 if it exists) / delete a repo
``PUT  /api/{type}/{ns}/{name}/settings``                   change visibility (``private``)
``GET  /api/{type}/{ns}/{name}[/revision/{rev}]``           repo info: ``sha``, ``siblings`` (``?blobs=1`` adds sizes
                                                            and LFS data), ``cardData`` from README.md, ``expand``
``POST /api/{type}/{ns}/{name}/preupload/{rev}``            ``uploadMode`` per file: ``lfs`` for files above
                                                            ``lfs_threshold``, binary samples and ``.gitattributes``
                                                            LFS patterns (``*.safetensors``, ``*.parquet``, ...)
``POST /{prefix}{ns}/{name}.git/info/lfs/objects/batch``    LFS batch API (basic transfer, upload + verify actions)
``PUT  /_hub/lfs/upload/{oid}?size=&sig=``                  upload href: streamed to disk, sha256 and size checked
``POST /_hub/lfs/verify/{oid}``                             verify href
``POST /api/{type}/{ns}/{name}/commit/{rev}``               ndjson commit: ``header`` (``parentCommit``), ``file``
                                                            (base64), ``lfsFile``, ``deletedFile``, ``deletedFolder``;
                                                            ``?create_pr=1`` commits to a new ``refs/pr/N``
``GET  /api/{type}/{ns}/{name}/tree/{rev}[/{path}]``        ``recursive``, ``expand`` (``lastCommit``), cursor
                                                            pagination through a ``Link: <...>; rel="next"`` header
``POST /api/{type}/{ns}/{name}/paths-info/{rev}``           form ``paths`` (repeated), ``expand``
``GET  /api/{type}/{ns}/{name}/refs``                       branches (and ``include_prs``)
``GET  /api/{type}/{ns}/{name}/commits/{rev}``              history, newest first
``POST/DELETE /api/{type}/{ns}/{name}/branch/{branch}``     create (``startingPoint``) / delete a branch
``POST /api/validate-yaml``                                 README metadata check: 400 with ``errors`` for invalid
                                                            YAML or metadata the Hub refuses (:func:`card_errors`)
``HEAD/GET /{prefix}{ns}/{name}/resolve/{rev}/{path}``      file content with ``X-Repo-Commit``, ``ETag`` (git blob id,
                                                            or the sha256 for LFS files, also as ``X-Linked-Etag``),
                                                            ``Content-Length``, single ``Range`` (206/416)
==========================================================  ==========================================================

Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) and ``X-Error-Message``
headers plus a JSON ``{"error": ...}`` body, which is what ``huggingface_hub.utils.hf_raise_for_status`` turns into
``RepositoryNotFoundError``, ``RevisionNotFoundError`` and ``RemoteEntryNotFoundError``. Writes need an
``Authorization: Bearer <any token>`` header (401 otherwise); reads of private repos too. The Xet protocol is not
implemented: clients must run with ``HF_HUB_DISABLE_XET=1`` (the ``hub_env`` fixture sets it).

Storage (under ``root``): ``objects/lfs/<sha256>`` (LFS objects), ``objects/blobs/<git-blob-sha1>`` (regular files),
``repos/<type>/<ns>/<name>/commits/<commit>.json`` (one immutable snapshot per commit: the full path -> file map)
and ``refs.json`` (branch -> commit). A commit is atomic: it is validated completely (every LFS object uploaded
with the declared size, every deleted path present, ``parentCommit`` still the head, a ``README.md`` whose metadata
:func:`card_errors` accepts) before the branch moves, so an upload that fails half-way never yields a commit.

Failure injection: :meth:`HubServer.fail_next` makes the next matching requests fail with a status, after reading
part of the request body, or by dropping the connection; :attr:`HubServer.requests` records what was served.

Example:
    >>> import tempfile
    >>> from hub_server import HubServer
    >>> with HubServer(tempfile.mkdtemp()) as server:
    ...     server.create_repo("org/demo")
    ...     server.url.startswith("http://127.0.0.1:")
    True
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as _dt
import fnmatch
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import yaml

__all__ = ["DEFAULT_GITATTRIBUTES", "Fault", "FileEntry", "HubCommit", "HubServer", "RequestRecord"]

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
class _Repo:
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


class _HubError(Exception):
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


def _card_data(readme: bytes) -> dict | None:
    text = readme.decode("utf-8", errors="replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, flags=re.DOTALL)
    if match is None:
        return None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


# ----------------------------------------------------------------------------------------------------------------
# Card metadata: the Hub's rules for the fields GeoSANE-HF writes
# ----------------------------------------------------------------------------------------------------------------

#: Licence ids the Hub accepts (https://huggingface.co/docs/hub/repositories-licenses).
HUB_LICENSES = frozenset(
    """apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
    afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0
    cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0
    cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0
    cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl
    gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr
    mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license
    llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 gemma unknown other""".split()  # noqa: SIM905 (a readable table)
)
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")
_BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")


def _is_repo_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_REPO_ID.match(value)) and "--" not in value and ".." not in value


def _str_list(data: dict, key: str, errors: list[str], check: Any = None) -> None:
    value = data.get(key)
    if value is None:
        return
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        errors.append(f'"{key}" must be a string or an array of strings, got {value!r}')
        return
    for item in items:
        if check is not None and not check(item):
            errors.append(f'"{key}" must name Hub repositories ("org/name"), got {item!r}')


def _model_index_errors(index: Any) -> list[str]:
    if not isinstance(index, list):
        return [f'"model-index" must be an array, got {type(index).__name__}']
    errors = []
    for i, entry in enumerate(index):
        where = f"model-index[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            errors.append(f'"{where}.name" is required and must be a string')
            continue
        results = entry.get("results")
        if not isinstance(results, list):
            errors.append(f'"{where}.results" must be an array')
            continue
        for j, result in enumerate(results):
            at = f"{where}.results[{j}]"
            task = result.get("task") if isinstance(result, dict) else None
            dataset = result.get("dataset") if isinstance(result, dict) else None
            metrics = result.get("metrics") if isinstance(result, dict) else None
            if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                errors.append(f'"{at}.task.type" is required and must be a string')
            if not isinstance(dataset, dict) or not all(isinstance(dataset.get(k), str) for k in ("type", "name")):
                errors.append(f'"{at}.dataset.type" and "{at}.dataset.name" are required and must be strings')
            if not isinstance(metrics, list) or not metrics:
                errors.append(f'"{at}.metrics" must be a non-empty array')
                continue
            for k, metric in enumerate(metrics):
                ok = isinstance(metric, dict) and isinstance(metric.get("type"), str)
                value = metric.get("value") if isinstance(metric, dict) else None
                if not ok or isinstance(value, bool) or not isinstance(value, (int, float, str)):
                    errors.append(f'"{at}.metrics[{k}]" needs a string "type" and a number or string "value"')
    return errors


def card_errors(readme: str, repo_type: str = "model") -> list[str]:
    """What the Hub refuses in a README's metadata (empty: accepted); the rules cover the fields cards here write.

    YAML that does not parse or is not a mapping; ``license`` not a Hub licence id; ``license: other`` without
    ``license_name`` (lowercase id) and ``license_link``; ``tags``, ``datasets``, ``base_model`` not strings / lists
    of strings; ``base_model`` and ``datasets`` not Hub repo ids (a local path such as ``runs/small/model`` or
    ``/data/x``); ``base_model_relation`` not one of the Hub's; ``library_name`` / ``pipeline_tag`` / ``pretty_name``
    not strings; a ``model-index`` without task type, dataset type and name, metric type and value; dataset
    ``configs`` without ``config_name`` and ``data_files``.

    >>> card_errors("---\\nlicense: other\\n---\\n")
    ['"license_name" is required when "license" is "other"', '"license_link" is required when "license" is "other"']
    """
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", readme, flags=re.DOTALL)
    if match is None:
        return []
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        return [f"Invalid YAML in README.md metadata: {err}"]
    if data is None:
        return []
    if not isinstance(data, dict):
        return [f"README.md metadata must be a mapping, got {type(data).__name__}"]
    errors: list[str] = []
    license = data.get("license")
    if license is not None:
        if not isinstance(license, str) or license not in HUB_LICENSES:
            errors.append(f'"license" must be one of the Hub\'s licence ids (or "other"), got {license!r}')
        if license == "other":
            name = data.get("license_name")
            if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", name):
                errors.append('"license_name" is required when "license" is "other"')
            if not isinstance(data.get("license_link"), str) or not data["license_link"]:
                errors.append('"license_link" is required when "license" is "other"')
    for key in ("library_name", "pipeline_tag", "pretty_name", "license_name", "license_link", "model_name"):
        if key in data and not isinstance(data[key], str):
            errors.append(f'"{key}" must be a string, got {data[key]!r}')
    _str_list(data, "tags", errors)
    _str_list(data, "base_model", errors, _is_repo_id)
    _str_list(data, "datasets", errors, _is_repo_id)
    relation = data.get("base_model_relation")
    if relation is not None and relation not in _BASE_MODEL_RELATIONS:
        errors.append(f'"base_model_relation" must be one of {list(_BASE_MODEL_RELATIONS)}, got {relation!r}')
    if relation is not None and "base_model" not in data:
        errors.append('"base_model_relation" needs a "base_model"')
    if "model-index" in data:
        if repo_type != "model":
            errors.append('"model-index" is only valid in model cards')
        errors += _model_index_errors(data["model-index"])
    configs = data.get("configs")
    valid = isinstance(configs, list) and all(
        isinstance(c, dict) and isinstance(c.get("config_name"), str) and "data_files" in c for c in configs
    )
    if configs is not None and not valid:
        errors.append('"configs" must be an array of {config_name, data_files}')
    return errors


# ----------------------------------------------------------------------------------------------------------------
# Storage
# ----------------------------------------------------------------------------------------------------------------


class _Store:
    """Repos, commits and objects, kept in ``root``. All public methods are thread-safe."""

    def __init__(self, root: Path, *, user: str, lfs_threshold: int):
        self.root = root
        self.user = user
        self.lfs_threshold = lfs_threshold
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], _Repo] = {}
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
    def get_repo(self, repo_type: str, repo_id: str, *, token: str | None = None) -> _Repo:
        with self.lock:
            repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and token is None):
            raise _HubError(404, f"Repository {repo_type}s/{repo_id} not found", "RepoNotFound")
        return repo

    def create_repo(self, repo_type: str, repo_id: str, *, private: bool = False, sdk: str | None = None) -> _Repo:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise _HubError(409, "You already created this repo", headers={"X-Error-Code": "RepoExists"})
            repo = _Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now(), sdk=sdk)
            self.repos[(repo_type, repo_id)] = repo
            blob_id = self.put_blob(DEFAULT_GITATTRIBUTES.encode())
            entry = FileEntry(".gitattributes", len(DEFAULT_GITATTRIBUTES.encode()), blob_id)
            self._add_commit(repo, "main", [], {".gitattributes": entry}, "initial commit", "")
            return repo

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            if self.repos.pop((repo_type, repo_id), None) is None:
                raise _HubError(404, f"Repository {repo_type}s/{repo_id} not found", "RepoNotFound")
            shutil.rmtree(self._repo_dir(repo_type, repo_id), ignore_errors=True)

    def _repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / repo_type / repo_id

    def resolve(self, repo: _Repo, revision: str) -> HubCommit:
        """A branch name, ``refs/heads/<branch>``, ``refs/pr/N`` or a full commit id -> commit."""
        with self.lock:
            name = revision.removeprefix("refs/heads/")
            if name in repo.refs:
                return repo.commits[repo.refs[name]]
            if _COMMIT_OID.match(revision) and revision in repo.commits:
                return repo.commits[revision]
        raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _add_commit(
        self, repo: _Repo, branch: str, parents: list[str], files: dict[str, FileEntry], title: str, message: str
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

    def _persist(self, repo: _Repo, commit: HubCommit) -> None:
        repo_dir = self._repo_dir(repo.repo_type, repo.repo_id)
        (repo_dir / "commits").mkdir(parents=True, exist_ok=True)
        snapshot = dataclasses.asdict(commit)
        snapshot["files"] = {path: dataclasses.asdict(entry) for path, entry in commit.files.items()}
        _write_json_atomic(repo_dir / "commits" / f"{commit.oid}.json", snapshot)
        self.persist_refs(repo)

    def persist_refs(self, repo: _Repo) -> None:
        _write_json_atomic(self._repo_dir(repo.repo_type, repo.repo_id) / "refs.json", repo.refs)

    def commit(
        self,
        repo: _Repo,
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
                raise _HubError(404, f"Invalid rev id: {revision} (commits go to a branch)", "RevisionNotFound")
            head = repo.commits[repo.refs[name]]
            if parent_commit is not None and parent_commit != head.oid:
                raise _HubError(
                    412,
                    f"A commit has happened since. Expected parent commit {parent_commit}, got head {head.oid}. "
                    "Please fetch the latest commit and retry.",
                )
            files = dict(head.files)
            for op in operations:
                key, value = op.get("key"), op.get("value") or {}
                path = value.get("path")
                if key in {"file", "lfsFile", "deletedFile", "deletedFolder"} and not isinstance(path, str):
                    raise _HubError(400, f"Expected a 'path' in operation {key!r}, got {value!r}")
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise _HubError(400, f"Expected encoding 'base64', got {value.get('encoding')!r}")
                    content = base64.b64decode(value.get("content", ""))
                    files[path] = FileEntry(path, len(content), self.put_blob(content))
                elif key == "lfsFile":
                    oid = value.get("oid")
                    if value.get("algo", "sha256") != "sha256" or not isinstance(oid, str):
                        raise _HubError(400, f"Expected an LFS sha256 oid for {path}, got {value!r}")
                    if not self.has_lfs(oid):
                        raise _HubError(
                            422,
                            f"LFS object {oid} for {path} was never uploaded: upload it through the batch API first",
                        )
                    size = self.lfs_path(oid).stat().st_size
                    if value.get("size") is not None and int(value["size"]) != size:
                        raise _HubError(422, f"LFS object {oid} for {path}: expected size {value['size']}, got {size}")
                    pointer = lfs_pointer(oid, size)
                    files[path] = FileEntry(path, size, git_blob_id(pointer), oid, len(pointer))
                elif key == "deletedFile":
                    if path not in files:
                        raise _HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    doomed = [p for p in files if p.startswith(prefix)]
                    if not doomed:
                        raise _HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del files[p]
                else:
                    raise _HubError(400, f"Unknown commit operation {key!r}: expected file, lfsFile, deletedFile")
            branch = name
            pr_num = None
            if create_pr:
                pr_num = repo.next_pr
                repo.next_pr += 1
                branch = f"refs/pr/{pr_num}"
            return self._add_commit(repo, branch, [head.oid], files, title, message), pr_num

    def is_lfs_path(self, repo: _Repo, revision: str, path: str, size: int, sample: bytes) -> bool:
        if size > self.lfs_threshold or b"\0" in sample:
            return True
        try:
            head = self.resolve(repo, revision)
        except _HubError:
            head = None
        gitattributes = DEFAULT_GITATTRIBUTES
        if head is not None and ".gitattributes" in head.files:
            gitattributes = self.read(head.files[".gitattributes"]).decode("utf-8", errors="replace")
        return any(_matches_gitattributes(path, pattern) for pattern in _lfs_patterns(gitattributes))

    def last_commit(self, repo: _Repo, start: HubCommit, path: str) -> HubCommit:
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


# ----------------------------------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GeoSANEHubTestServer/1.0"
    hub: HubServer  # set on a subclass by HubServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing --------------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        # One handler instance serves every request of a keep-alive connection: reset the per-request state.
        self._body_consumed = False
        self._length_left: int | None = None
        self._chunk_left: int | None = None
        self._status = 0
        split = urlsplit(self.path)
        self.route_path = split.path
        self.query = parse_qs(split.query, keep_blank_values=True)
        try:
            fault = self.hub._take_fault(f"{self.command} {self.route_path}")
            if fault is not None:
                self._inject(fault)
                return
            self._route()
        except _HubError as err:
            self._send_error_if_possible(err)
        except (ConnectionError, TimeoutError):  # the client went away (e.g. mid-download)
            self.close_connection = True
        except Exception as err:  # a bug in the server: answer a 500 the client can read, and log the traceback
            self._send_error_if_possible(_HubError(500, f"Internal test-server error: {type(err).__name__}: {err}"))
            raise
        finally:
            if not self._body_consumed and self._status != 0:
                # Unread request body would corrupt the next request on this keep-alive connection.
                self.close_connection = True
            self.hub._record(RequestRecord(self.command, self.path, self._status))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _inject(self, fault: Fault) -> None:
        if fault.after_bytes is not None:
            read = 0
            for chunk in self._iter_body():
                read += len(chunk)
                if read >= fault.after_bytes:
                    break
        if fault.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault.after_bytes is not None:
            for _ in self._iter_body():  # drain: a client still sending would otherwise see a reset, not the status
                pass
        self._send_error_if_possible(_HubError(fault.status, fault.message))

    def _iter_body(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the request body (Content-Length or chunked); resumable, so a fault can read part of it first."""
        if self._body_consumed:
            return
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            if self._chunk_left is None:
                self._chunk_left = 0
            while True:
                if self._chunk_left == 0:
                    line = self.rfile.readline(65537)
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                            pass
                        self._body_consumed = True
                        return
                    self._chunk_left = size
                data = self.rfile.read(min(chunk_size, self._chunk_left))
                if not data:
                    raise ConnectionError("client closed the connection mid-body")
                self._chunk_left -= len(data)
                if self._chunk_left == 0:
                    self.rfile.readline(65537)  # CRLF after the chunk
                yield data
        else:
            if self._length_left is None:
                self._length_left = int(self.headers.get("Content-Length") or 0)
            while self._length_left > 0:
                data = self.rfile.read(min(chunk_size, self._length_left))
                if not data:
                    raise ConnectionError("client closed the connection mid-body")
                self._length_left -= len(data)
                yield data
            self._body_consumed = True

    def _read_body(self) -> bytes:
        return b"".join(self._iter_body())

    def _json_body(self) -> Any:
        body = self._read_body()
        try:
            return json.loads(body or b"{}")
        except json.JSONDecodeError as err:
            raise _HubError(400, f"Expected a JSON body, got {body[:80]!r}: {err}") from err

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        if not self._body_consumed:
            for _ in self._iter_body():
                pass
        self._status = status
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _send_error_if_possible(self, err: _HubError) -> None:
        if self._status != 0:  # a response is already (partly) out: the connection is unusable
            self.close_connection = True
            return
        try:
            self._send_error(err)
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def _send_error(self, err: _HubError) -> None:
        header_message = " ".join(err.message.split()).encode("ascii", "replace").decode()[:1000]
        headers = {"X-Error-Message": header_message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._send_json({"error": err.message, **err.body}, status=err.status, headers=headers)

    @property
    def token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer ") and auth[7:].strip():
            return auth[7:].strip()
        return None

    def _require_token(self) -> str:
        if self.token is None:
            raise _HubError(401, "Invalid credentials in Authorization header: write operations need a token")
        return self.token

    @property
    def base_url(self) -> str:
        return f"http://{self.headers.get('Host') or self.hub.host_port}"

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.base_url}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    def _flag(self, name: str) -> bool:
        values = self.query.get(name) or self.query.get(f"{name}[]")
        return bool(values) and values[-1].lower() in {"1", "true", "yes"}

    # -- routing ---------------------------------------------------------------------------------------------
    def _route(self) -> None:
        parts = [unquote(p) for p in self.route_path.strip("/").split("/")] if self.route_path.strip("/") else []
        method = self.command
        if parts[:2] == ["api", "whoami-v2"] and method == "GET":
            return self._whoami()
        if parts[:2] == ["api", "validate-yaml"] and method == "POST":
            return self._validate_yaml()
        if parts[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo()
        if parts[:3] == ["api", "repos", "delete"] and method in {"POST", "DELETE"}:
            return self._delete_repo()
        if parts[:3] == ["_hub", "lfs", "upload"] and len(parts) == 4 and method == "PUT":
            return self._lfs_upload(parts[3])
        if parts[:3] == ["_hub", "lfs", "verify"] and len(parts) == 4 and method == "POST":
            return self._lfs_verify(parts[3])
        if len(parts) >= 4 and parts[0] == "api" and parts[1] in REPO_TYPES:
            repo_type = REPO_TYPES[parts[1]]
            repo_id = f"{parts[2]}/{parts[3]}"
            return self._repo_api(repo_type, repo_id, parts[4:])
        # Git/LFS and file routes: /{prefix}{ns}/{name}.git/info/lfs/objects/batch, /{prefix}{ns}/{name}/resolve/...
        repo_type = "model"
        if parts and parts[0] in REPO_TYPES and parts[0] != "models":
            repo_type, parts = REPO_TYPES[parts[0]], parts[1:]
        if len(parts) >= 2 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(repo_type, f"{parts[0]}/{parts[1][:-4]}")
        if len(parts) >= 5 and parts[2] == "resolve" and method in {"GET", "HEAD"}:
            return self._resolve(repo_type, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        raise _HubError(404, f"No route for {method} {self.route_path} in the test Hub server")

    def _repo_api(self, repo_type: str, repo_id: str, rest: list[str]) -> None:
        method = self.command
        head, args = (rest[0], rest[1:]) if rest else ("", [])
        if head == "" and method == "GET":
            return self._repo_info(repo_type, repo_id, "main")
        if head == "revision" and len(args) == 1 and method == "GET":
            return self._repo_info(repo_type, repo_id, args[0])
        if head == "preupload" and len(args) == 1 and method == "POST":
            return self._preupload(repo_type, repo_id, args[0])
        if head == "commit" and len(args) == 1 and method == "POST":
            return self._commit(repo_type, repo_id, args[0])
        if head == "tree" and args and method == "GET":
            return self._tree(repo_type, repo_id, args[0], "/".join(args[1:]).strip("/"))
        if head == "paths-info" and len(args) == 1 and method == "POST":
            return self._paths_info(repo_type, repo_id, args[0])
        if head == "refs" and not args and method == "GET":
            return self._refs(repo_type, repo_id)
        if head == "commits" and len(args) == 1 and method == "GET":
            return self._commits(repo_type, repo_id, args[0])
        if head == "branch" and len(args) == 1 and method in {"POST", "DELETE"}:
            return self._branch(repo_type, repo_id, args[0])
        if head == "settings" and not args and method == "PUT":
            return self._settings(repo_type, repo_id)
        if head.startswith("xet-"):
            raise _HubError(
                501, "The test Hub server does not implement Xet: run the client with HF_HUB_DISABLE_XET=1"
            )
        raise _HubError(404, f"No route for {method} {self.route_path} in the test Hub server")

    # -- account / repos -------------------------------------------------------------------------------------
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
            raise _HubError(400, f"Expected a repo name of letters, digits, '-', '_', '.', got {name!r}")
        namespace = payload.get("organization") or self.hub.user
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise _HubError(400, f"Expected type in {sorted(URL_PREFIXES)}, got {repo_type!r}")
        if repo_type == "space" and not payload.get("sdk"):
            raise _HubError(400, "Expected an 'sdk' for a space")
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        repo_id = f"{namespace}/{name}"
        try:
            repo = self.hub.store.create_repo(repo_type, repo_id, private=private, sdk=payload.get("sdk"))
        except _HubError as err:
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

    # -- uploads ---------------------------------------------------------------------------------------------
    def _preupload(self, repo_type: str, repo_id: str, revision: str) -> None:
        token = self._require_token()
        store = self.hub.store
        repo = store.get_repo(repo_type, repo_id, token=token)
        if not self._flag("create_pr"):
            store.resolve(repo, revision)
        payload = self._json_body()
        try:
            head = store.resolve(repo, revision)
        except _HubError:
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
            raise _HubError(400, f"Expected operation 'upload', got {payload.get('operation')!r}")
        transfers = payload.get("transfers") or ["basic"]
        if "basic" not in transfers:
            raise _HubError(400, f"Expected the 'basic' transfer among {transfers}")
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
            raise _HubError(403, "Expected a signed upload URL from the LFS batch API")
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
                raise _HubError(400, f"Expected {size} bytes for LFS object {oid}, got {written}")
            if digest.hexdigest() != oid:
                raise _HubError(400, f"Expected content with sha256 {oid}, got {digest.hexdigest()}")
            os.replace(tmp, store.lfs_path(oid))
        finally:
            tmp.unlink(missing_ok=True)
        self._send(200, b"", {"ETag": f'"{oid}"', "Content-Type": "text/plain"})

    def _lfs_verify(self, oid: str) -> None:
        self._require_token()
        payload = self._json_body()
        if payload.get("oid") != oid or not self.hub.store.has_lfs(oid, payload.get("size")):
            raise _HubError(404, f"LFS object {oid} of size {payload.get('size')} not found", "EntryNotFound")
        self._send_json({"success": True})

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> None:
        token = self._require_token()
        store = self.hub.store
        repo = store.get_repo(repo_type, repo_id, token=token)
        lines = [line for line in self._read_body().splitlines() if line.strip()]
        try:
            items = [json.loads(line) for line in lines]
        except json.JSONDecodeError as err:
            raise _HubError(400, f"Expected an ndjson commit payload: {err}") from err
        if not items or items[0].get("key") != "header":
            raise _HubError(400, "Expected the first ndjson line to be the 'header'")
        header = items[0].get("value") or {}
        if not str(header.get("summary", "")).strip():
            raise _HubError(400, "Expected a non-empty commit summary")
        for item in items[1:]:
            value = item.get("value") or {}
            if item.get("key") == "file" and value.get("path") == "README.md":
                text = base64.b64decode(value.get("content", "")).decode("utf-8", "replace")
                errors = card_errors(text, repo_type.removesuffix("s"))
                if errors:
                    raise _HubError(400, "Invalid metadata in README.md.\n" + "\n".join(f"- {e}" for e in errors))
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

    # -- listing ---------------------------------------------------------------------------------------------
    def _entries(self, repo: _Repo, commit: HubCommit, prefix: str, recursive: bool) -> list[tuple[str, str]]:
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

    def _entry_json(self, repo: _Repo, commit: HubCommit, kind: str, path: str, expand: bool) -> dict[str, Any]:
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
            raise _HubError(
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
                raise _HubError(400, f"Invalid cursor {self.query['cursor'][0]!r}") from err
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
                    raise _HubError(404, f"Cannot delete branch {branch}", "RevisionNotFound")
                del repo.refs[branch]
            else:
                payload = self._json_body()
                if branch in repo.refs:
                    raise _HubError(409, f"Reference refs/heads/{branch} already exists")
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
            raise _HubError(
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
                raise _HubError(
                    416, f"Unsupported Range {range_header!r}", headers={"Content-Range": f"bytes */{entry.size}"}
                )
            if match.group(1) == "":
                start = max(0, entry.size - int(match.group(2)))
            else:
                start = int(match.group(1))
                end = min(entry.size - 1, int(match.group(2))) if match.group(2) else entry.size - 1
            if start >= entry.size or start > end:
                raise _HubError(
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._active: set[socket.socket] = set()
        self._active_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            self._active.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._active_lock:
            self._active.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Close the clients' keep-alive connections, so that no handler thread outlives the server."""
        with self._active_lock:
            active = list(self._active)
        for request in active:
            with contextlib.suppress(OSError):
                request.shutdown(socket.SHUT_RDWR)


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------


class HubServer:
    """A Hub-compatible HTTP server on ``host`` (a free port by default), storing repos under ``root``.

    Args:
        root: Folder for repos and objects (created if missing).
        host: Interface to bind; keep the loopback.
        port: 0 picks a free port.
        lfs_threshold: Files above this size (bytes) are answered as LFS in preupload, like the Hub's 10 MB.
        user: The user name every token belongs to (the namespace of repos created without an organization).
        tree_page_size: Entries per page of the tree API (the Hub uses 1000, and 50 with ``expand``).

    Example:
        >>> import tempfile
        >>> server = HubServer(tempfile.mkdtemp()).start()
        >>> server.create_repo("org/model")
        >>> server.head("org/model") == server.commits("org/model")[0].oid
        True
        >>> server.stop()
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        lfs_threshold: int = 10 * 1024 * 1024,
        user: str = "hub-test-user",
        tree_page_size: int = 1000,
    ):
        self.root = Path(root)
        self.user = user
        self.tree_page_size = tree_page_size
        self.tree_page_size_expand = min(50, tree_page_size)
        self.store = _Store(self.root, user=user, lfs_threshold=lfs_threshold)
        self._secret = os.urandom(16)
        self._faults: list[Fault] = []
        self._faults_lock = threading.Lock()
        self.requests: list[RequestRecord] = []
        handler = type("HubHandler", (_Handler,), {"hub": self})
        self._httpd = _Server((host, port), handler)
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    @property
    def host_port(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        """The endpoint to put in ``HF_ENDPOINT``."""
        return f"http://{self.host_port}"

    def start(self) -> HubServer:
        """Serve in a daemon thread; returns ``self``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-test-server", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (the storage folder is left to its owner)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.close_connections()
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- failure injection -----------------------------------------------------------------------------------
    def fail_next(
        self,
        pattern: str,
        *,
        times: int | None = 1,
        status: int = 500,
        after_bytes: int | None = None,
        drop: bool = False,
        message: str = "Injected failure",
    ) -> Fault:
        """Make the next ``times`` requests whose ``"METHOD /path"`` matches the regex ``pattern`` fail.

        Useful patterns: ``"PUT /_hub/lfs/upload/"`` (LFS content upload), ``"POST /api/.*/commit/"`` (the commit),
        ``"POST /api/.*/preupload/"``, ``"POST .*/info/lfs/objects/batch"``, ``"(GET|HEAD) .*/resolve/"``.

        Note that the client retries 5xx answers and network errors of uploads (5 times, waiting 1+2+4+8+8 s), so a
        failure that must reach the caller quickly should use a status it does not retry (e.g. 400 or 403), and a
        transient failure ``times=1``.

        Args:
            pattern: Regular expression searched in ``"METHOD /path"``.
            times: Number of requests to fail; ``None`` for all of them until :meth:`clear_faults`.
            status: Status code to answer.
            after_bytes: Read this many request-body bytes before failing ("fails mid-upload").
            drop: Close the connection instead of answering (a reset socket for the client).
            message: Error message.

        Returns:
            The :class:`Fault`, whose ``hits`` counts the failed requests.
        """
        re.compile(pattern)
        fault = Fault(pattern, times, status, after_bytes, drop, message)
        with self._faults_lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._faults_lock:
            self._faults.clear()

    def _take_fault(self, request_line: str) -> Fault | None:
        with self._faults_lock:
            for fault in self._faults:
                if re.search(fault.pattern, request_line):
                    fault.hits += 1
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _record(self, record: RequestRecord) -> None:
        with self._faults_lock:
            self.requests.append(record)

    def _sign(self, oid: str, size: int) -> str:
        return hmac.new(self._secret, f"{oid}:{size}".encode(), hashlib.sha256).hexdigest()

    # -- inspection (server side, for assertions) ------------------------------------------------------------
    def create_repo(self, repo_id: str, repo_type: str = "model", *, private: bool = False) -> None:
        """Create a repo directly (server side), with the Hub's initial commit."""
        self.store.create_repo(repo_type, repo_id, private=private, sdk="gradio" if repo_type == "space" else None)

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        with self.store.lock:
            return (repo_type, repo_id) in self.store.repos

    def head(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> str:
        """Commit id that ``revision`` points to."""
        repo = self.store.get_repo(repo_type, repo_id, token="server")
        return self.store.resolve(repo, revision).oid

    def commits(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> list[HubCommit]:
        """History of ``revision``, newest first."""
        repo = self.store.get_repo(repo_type, repo_id, token="server")
        commit = self.store.resolve(repo, revision)
        history = [commit]
        while commit.parents:
            commit = repo.commits[commit.parents[0]]
            history.append(commit)
        return history

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, FileEntry]:
        """Snapshot of ``revision``: path -> :class:`FileEntry`."""
        repo = self.store.get_repo(repo_type, repo_id, token="server")
        return dict(self.store.resolve(repo, revision).files)

    def read_file(self, repo_id: str, path: str, repo_type: str = "model", revision: str = "main") -> bytes:
        return self.store.read(self.files(repo_id, repo_type, revision)[path])

    def lfs_objects(self) -> set[str]:
        """sha256 of every complete LFS object stored."""
        return {p.name for p in (self.root / "objects" / "lfs").iterdir()}

    def partial_uploads(self) -> list[Path]:
        """Temporary files of uploads in progress (should be empty between requests)."""
        return sorted((self.root / "tmp").glob("*.part"))
