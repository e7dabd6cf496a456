"""What every route of the simulator's HTTP face shares: the answer raised from inside a handler (``_Reply``,
``_error`` in Runway's shape, ``_Handled`` when the route wrote it itself, ``_Dropped`` to hang up), the server
class, and ``Routes``, the base of the handler and of each area's routes (body reading, sending, JSON bodies).
"""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from runwatch.catalog import Issue

if TYPE_CHECKING:
    from runwatch.simulator.server import Simulator

DOC_URL = "https://docs.dev.runwayml.com/api"


class _Reply(Exception):
    """Raised inside a handler to send an answer at once (bytes are sent as they are, as ``content_type``)."""

    def __init__(
        self, status: int, body: Any = None, headers: dict[str, str] | None = None, content_type: str | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.content_type = content_type


def _error(status: int, message: str, issues: list[Issue] | None = None) -> _Reply:
    body: dict[str, Any] = {"error": message}
    if issues:
        body["issues"] = [i.to_json() for i in issues]
    body["docUrl"] = DOC_URL
    return _Reply(status, body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    sim: Simulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer is normal under fault injection; say nothing.
        return


class _Dropped(Exception):
    """The connection is to be closed without an answer."""


class _Handled(_Reply):
    def __init__(self) -> None:
        super().__init__(0)


class Routes(BaseHTTPRequestHandler):
    """The handler's plumbing, which each area's routes build on."""

    server: _Server

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json; charset=utf-8",
    ) -> None:
        payload = b""
        if isinstance(body, bytes):
            payload = body
        elif body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("apigw-requestid", uuid.uuid4().hex[:16])
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)

    def _drop(self) -> None:
        """Hang up without a word, as a broken network does."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _json(self, body: bytes, *, empty_ok: bool = False) -> Any:
        if not body and empty_ok:
            return {}
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _error(400, "Request body is not valid JSON.") from exc
