"""HTTP plumbing shared by the route modules: request bodies (Content-Length or chunked), responses, errors, faults."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .model import URL_PREFIXES, Fault, HubError, Repo, RequestRecord

if TYPE_CHECKING:
    from .server import HubServer


class HandlerBase(BaseHTTPRequestHandler):
    """Per-request plumbing of the route classes; ``_dispatch`` calls ``self._route()`` (defined in ``server``)."""

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
        except HubError as err:
            self._send_error_if_possible(err)
        except (ConnectionError, TimeoutError):  # the client went away (e.g. mid-download)
            self.close_connection = True
        except Exception as err:  # a bug in the server: answer a 500 the client can read, and log the traceback
            self._send_error_if_possible(HubError(500, f"Internal test-server error: {type(err).__name__}: {err}"))
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
        self._send_error_if_possible(HubError(fault.status, fault.message))

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
            raise HubError(400, f"Expected a JSON body, got {body[:80]!r}: {err}") from err

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

    def _send_error_if_possible(self, err: HubError) -> None:
        if self._status != 0:  # a response is already (partly) out: the connection is unusable
            self.close_connection = True
            return
        try:
            self._send_error(err)
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def _send_error(self, err: HubError) -> None:
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
            raise HubError(401, "Invalid credentials in Authorization header: write operations need a token")
        return self.token

    @property
    def base_url(self) -> str:
        return f"http://{self.headers.get('Host') or self.hub.host_port}"

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.base_url}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    def _flag(self, name: str) -> bool:
        values = self.query.get(name) or self.query.get(f"{name}[]")
        return bool(values) and values[-1].lower() in {"1", "true", "yes"}
