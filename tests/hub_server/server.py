"""The handler that routes requests to the route modules, the threaded HTTP server and :class:`HubServer`."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import socket
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from .model import REPO_TYPES, Fault, FileEntry, HubCommit, HubError, RequestRecord
from .routes_commits import CommitRoutes
from .routes_files import FileRoutes
from .routes_repos import RepoRoutes
from .store import Store


class _Handler(RepoRoutes, CommitRoutes, FileRoutes):
    """Routes each request (``HandlerBase._dispatch`` calls :meth:`_route`) to a method of a route class."""

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
        raise HubError(404, f"No route for {method} {self.route_path} in the test Hub server")

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
            raise HubError(501, "The test Hub server does not implement Xet: run the client with HF_HUB_DISABLE_XET=1")
        raise HubError(404, f"No route for {method} {self.route_path} in the test Hub server")


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
        self.store = Store(self.root, user=user, lfs_threshold=lfs_threshold)
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
