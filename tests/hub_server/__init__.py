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

Modules: ``model`` (files, commits, repos, faults, the error and git/LFS helpers), ``cards`` (the Hub's README
metadata rules, :func:`card_errors`), ``store`` (repos, commits and objects on disk), ``base`` (HTTP plumbing:
bodies, responses, errors, fault injection), the routes ``routes_repos`` (account, repos, repo info,
validate-yaml), ``routes_commits`` (preupload, LFS batch/upload/verify, commit) and ``routes_files`` (tree,
paths-info, refs, commits, branch, resolve), and ``server`` (routing, the threaded server, :class:`HubServer`).

Example:
    >>> import tempfile
    >>> from hub_server import HubServer
    >>> with HubServer(tempfile.mkdtemp()) as server:
    ...     server.create_repo("org/demo")
    ...     server.url.startswith("http://127.0.0.1:")
    True
"""

from __future__ import annotations

from .cards import HUB_LICENSES, card_errors
from .model import (
    DEFAULT_GITATTRIBUTES,
    REPO_TYPES,
    URL_PREFIXES,
    Fault,
    FileEntry,
    HubCommit,
    RequestRecord,
    git_blob_id,
    lfs_pointer,
)
from .server import HubServer

__all__ = [
    "DEFAULT_GITATTRIBUTES",
    "HUB_LICENSES",
    "REPO_TYPES",
    "URL_PREFIXES",
    "Fault",
    "FileEntry",
    "HubCommit",
    "HubServer",
    "RequestRecord",
    "card_errors",
    "git_blob_id",
    "lfs_pointer",
]
