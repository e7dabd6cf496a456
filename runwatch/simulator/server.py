"""The simulator's HTTP face: Runway's paths under ``/v1``, storage-like paths for uploads and outputs,
and an inspection interface under ``/_sim`` for tests and rehearsals.

Served by the standard library's threading HTTP server (HTTP/1.1 keep-alive, one thread per connection),
which holds hundreds of requests per second on two cores and needs no extra dependency.

This module is the server's core: the ``Simulator`` (life cycle, inspection from Python, outputs and upload
signatures), the handler that dispatches every request, and the gate, router and faults of ``/v1``. The routes
live by area in ``tasks``, ``uploads``, ``organization`` and ``inspection``; what they share in ``handling``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import shutil
import tempfile
import threading
import time
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from runwatch.catalog import Catalog, load_catalog
from runwatch.simulator.assets import AssetChecker, OutputSigner
from runwatch.simulator.faults import Fault, FaultBook
from runwatch.simulator.handling import DOC_URL, _Dropped, _error, _Handled, _Reply, _Server
from runwatch.simulator.inspection import InspectionRoutes, _loggable, mask_key
from runwatch.simulator.organization import OrganizationRoutes
from runwatch.simulator.tasks import TaskRoutes
from runwatch.simulator.uploads import UploadRoutes
from runwatch.simulator.world import SimClock, SimConfig, Task, Upload, World, iso_ms

__all__ = ["DOC_URL", "Simulator"]

KEY_RE = re.compile(r"^key_[0-9a-f]{128}$")
_TASK_PATH = re.compile(r"^/v1/tasks/([^/]+)$")


class Simulator:
    """A local Runway API. ``Simulator(...).start()`` serves it on loopback and returns its base URL.

    Use as a context manager in tests::

        with Simulator(SimConfig(time_scale=0.001)) as sim:
            client = runwayml.RunwayML(base_url=sim.url, api_key=sim.key)
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        faults: list[Fault] | None = None,
        clock: SimClock | None = None,
        catalog: Catalog | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.config = config or SimConfig()
        self.world = World(self.config, clock)
        self.faults = FaultBook(faults, self.config.seed)
        self.catalog = catalog or load_catalog()
        self.signer = OutputSigner(secrets.token_bytes(32))
        self._upload_secret = secrets.token_bytes(32)
        self._host, self._port = host, port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._dir: str | None = None
        self._fetcher = httpx.Client(timeout=self.config.fetch_timeout, follow_redirects=False)
        self.checker = AssetChecker(self.world, self._fetcher)
        self._output_cache: dict[tuple[str, int], bytes] = {}
        self._cache_lock = threading.Lock()
        # A well-formed key tests and demos can use when no key was configured.
        self.key = next(iter(self.config.keys)) if self.config.keys else "key_" + "0" * 128
        self.url = ""

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> str:
        self._dir = tempfile.mkdtemp(prefix="runwatch-sim-")
        server = _Server((self._host, self._port), _Handler)
        server.sim = self
        self._server = server
        host, port = server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="runwatch-simulator", daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._fetcher.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection from Python -------------------------------------------------------------------

    def requests(self, path_prefix: str = "", method: str | None = None) -> list[dict[str, Any]]:
        with self.world.lock:
            return [
                r
                for r in self.world.requests
                if r["path"].startswith(path_prefix) and (method is None or r["method"] == method)
            ]

    def create_count(self, endpoint: str | None = None) -> int:
        with self.world.lock:
            return sum(
                e["count"] for e in self.world.create_bodies.values() if endpoint is None or e["endpoint"] == endpoint
            )

    def duplicate_creates(self) -> list[dict[str, Any]]:
        """Bodies that were created more than once: what a careful client never causes."""
        with self.world.lock:
            return [dict(e) for e in self.world.create_bodies.values() if e["count"] > 1]

    def advance(self, seconds: float) -> None:
        self.world.clock.advance(seconds)

    def output_bytes(self, task_id: str, index: int) -> bytes:
        task = self.world.tasks[task_id]
        return self._output(task, index)

    # -- helpers used by the handler --------------------------------------------------------------

    def _output(self, task: Task, index: int) -> bytes:
        from runwatch.mediafiles import make_output

        key = (task.id, index)
        with self._cache_lock:
            data = self._output_cache.get(key)
        if data is None:
            data = make_output(task.outputs[index], f"{task.id}:{index}".encode())
            with self._cache_lock:
                if len(self._output_cache) > 2000:  # bounded: outputs are cheap to make again
                    self._output_cache.clear()
                self._output_cache[key] = data
        return data

    def output_urls(self, task: Task) -> list[str]:
        expires = self.world.clock.now() + self.config.output_ttl
        exts = {"jpeg": "jpg"}
        return [
            f"{self.url}/_outputs/{task.id}/{i}.{exts.get(fmt, fmt)}?_jwt={self.signer.sign(task.id, i, expires)}"
            for i, fmt in enumerate(task.outputs)
        ]

    def upload_signature(self, upload: Upload, policy: str) -> str:
        return hmac.new(self._upload_secret, f"{upload.id}:{policy}".encode(), hashlib.sha256).hexdigest()


class _Handler(TaskRoutes, UploadRoutes, OrganizationRoutes, InspectionRoutes):
    """Every request, dispatched by path to the area that answers it."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes; don't wait 40 ms for an ACK
    server_version = "runwatch-simulator"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        return  # the inspection log replaces the access log

    # Every method goes through one dispatcher.
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    # -- plumbing ---------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        sim = self.server.sim
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self._drop()
            return
        now = sim.world.clock.now()
        entry: dict[str, Any] = {
            "time": iso_ms(now),
            "at": now,
            "method": method,
            "path": path,
            "query": parts.query,
            "headers": {k: (mask_key(v) if k.lower() == "authorization" else v) for k, v in self.headers.items()},
        }
        try:
            if path.startswith("/v1/"):
                entry["body"] = _loggable(body, self.headers.get("Content-Type", ""))
                sim.world.log_request(entry)
                self._api(method, path, body)
            elif path.startswith("/_outputs/"):
                self._serve_output(method, path, query)
            elif path.startswith("/_uploads/"):
                self._receive_upload(method, path, body)
            elif path.startswith("/_sim/"):
                self._admin(method, path, body, query)
            else:
                raise _error(404, "Not found")
        except _Handled:
            entry["status"] = 200
        except _Reply as reply:
            entry["status"] = reply.status
            ctype = reply.content_type or (
                "application/xml" if isinstance(reply.body, bytes) else "application/json; charset=utf-8"
            )
            self._send(reply.status, reply.body, reply.headers, ctype)
        except _Dropped:
            entry["status"] = "dropped"
            self._drop()

    # -- /v1 --------------------------------------------------------------------------------------

    def _api(self, method: str, path: str, body: bytes) -> None:
        sim = self.server.sim
        label, handler = self._route(method, path)
        fault = sim.faults.pick(("error", "html", "rate_limit", "slow", "drop"), method, label)
        if fault is not None and not fault.after:
            if fault.action == "slow":
                time.sleep(fault.delay)
                fault = None
            else:
                self._fault_reply(fault)
        self._gate()
        try:
            handler(body)
        except _Reply:
            if fault is not None and fault.after:
                if fault.action == "slow":
                    time.sleep(fault.delay)
                    raise
                self._fault_reply(fault)  # the work is done; the answer is lost
            raise
        raise _error(500, "An unexpected error occurred.")  # a handler always raises _Reply

    def _fault_reply(self, fault: Fault) -> None:
        if fault.action == "drop":
            raise _Dropped
        if fault.action == "rate_limit":
            headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            raise _Reply(429, {"error": "Too many requests.", "docUrl": DOC_URL}, headers)
        try:
            phrase = HTTPStatus(fault.status).phrase
        except ValueError:  # a status HTTP has no name for
            phrase = "Error"
        if fault.action == "html":
            page = f"<html><head><title>{fault.status} {phrase}</title></head><body><h1>{phrase}</h1></body></html>"
            raise _Reply(fault.status, page.encode(), content_type="text/html")
        raise _Reply(fault.status, {"error": fault.message or phrase, "docUrl": DOC_URL})

    def _gate(self) -> None:
        """Authorization and X-Runway-Version, as every /v1 path checks them."""
        config = self.server.sim.config
        auth = self.headers.get("Authorization")
        if not auth:
            raise _error(
                401, "No API key was provided. Pass your API key in the Authorization header as a Bearer token."
            )
        scheme, _, key = auth.partition(" ")
        if scheme != "Bearer" or not KEY_RE.match(key) or (config.keys is not None and key not in config.keys):
            raise _error(
                401,
                "Invalid API key. Make sure the key is correct, has no trailing whitespace, "
                "and is used with api.dev.runwayml.com.",
            )
        if config.check_version:
            version = self.headers.get("X-Runway-Version")
            if not version:
                raise _error(400, "The X-Runway-Version header is required. Use 2024-11-06.")
            if version not in config.versions:
                raise _error(
                    400,
                    f"The API version {version!r} is not supported. "
                    f"Supported versions: {', '.join(sorted(config.versions))}.",
                )

    def _route(self, method: str, path: str) -> tuple[str | None, Any]:
        sim = self.server.sim
        name = path[len("/v1/") :]
        if name in sim.catalog.endpoints:
            return name, self._allow(method, "POST", lambda b: self._create(name, b))
        match = _TASK_PATH.match(path)
        if match:
            task_id = match.group(1)
            if method == "GET":
                return "tasks", lambda b: self._get_task(task_id)
            return "tasks", self._allow(method, "DELETE", lambda b: self._delete_task(task_id))
        if path == "/v1/uploads":
            return "uploads", self._allow(method, "POST", self._create_upload)
        if path == "/v1/organization":
            return "organization", self._allow(method, "GET", lambda b: self._organization())
        if path == "/v1/organization/usage":
            return "organization", self._allow(method, "POST", self._usage)
        return None, self._not_found

    @staticmethod
    def _allow(method: str, wanted: str, handler: Any) -> Any:
        if method == wanted:
            return handler

        def refuse(body: bytes) -> None:
            raise _error(405, f"Method {method} is not allowed on this path.")

        return refuse

    def _not_found(self, body: bytes) -> None:
        raise _error(404, "Not found")
