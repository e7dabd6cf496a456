"""The simulator's HTTP face: Runway's paths under ``/v1``, storage-like paths for uploads and outputs,
and an inspection interface under ``/_sim`` for tests and rehearsals.

Served by the standard library's threading HTTP server (HTTP/1.1 keep-alive, one thread per connection),
which holds hundreds of requests per second on two cores and needs no extra dependency.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
import uuid
from base64 import b64encode
from datetime import date
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from runwatch.catalog import Catalog, Issue, load_catalog
from runwatch.simulator.assets import AssetChecker, Checked, OutputSigner, mask_url, plan_outputs
from runwatch.simulator.faults import OUTPUT_ACTIONS, Fault, FaultBook
from runwatch.simulator.multipart import MultipartError, parse_multipart
from runwatch.simulator.world import SimClock, SimConfig, Task, Upload, World, iso_ms

__all__ = ["DOC_URL", "Simulator"]

DOC_URL = "https://docs.dev.runwayml.com/api"
KEY_RE = re.compile(r"^key_[0-9a-f]{128}$")
_TASK_PATH = re.compile(r"^/v1/tasks/([^/]+)$")
_OUTPUT_PATH = re.compile(r"^/_outputs/([0-9a-f-]{36})/(\d+)\.(\w+)$")
_UPLOAD_PATH = re.compile(r"^/_uploads/([0-9a-f]{32})$")


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


def mask_key(value: str) -> str:
    """An Authorization header fit for the inspection log: the scheme and the key's last four digits."""
    scheme, _, key = value.partition(" ")
    return f"{scheme} {key[:4]}…{key[-4:]}" if len(key) > 12 else f"{scheme} ***"


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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    sim: Simulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer is normal under fault injection; say nothing.
        return


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes; don't wait 40 ms for an ACK
    server_version = "runwatch-simulator"
    sys_version = ""
    server: _Server

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

    def _json(self, body: bytes, *, empty_ok: bool = False) -> Any:
        if not body and empty_ok:
            return {}
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _error(400, "Request body is not valid JSON.") from exc

    def _create(self, endpoint: str, raw: bytes) -> None:
        sim = self.server.sim
        body = self._json(raw)
        result = sim.catalog.validate(endpoint, body)
        if not result.ok:
            raise _error(400, "Validation of body failed", list(result.issues))
        assert result.model is not None
        checked: list[Checked] = []
        problems: list[Issue] = []
        for ref in result.media:
            outcome = sim.checker.check(endpoint, ref)
            (problems.append if isinstance(outcome, Issue) else checked.append)(outcome)  # type: ignore[arg-type]
        if problems:
            raise _error(400, "Validation of body failed", problems)
        estimate = _estimate(endpoint, result.model, body, checked, sim.config.unknown_price_credits)
        world = sim.world
        with world.lock:
            now = world.advance()
            daily = world.limits(result.model)[1]
            if daily is not None and world.daily_count(result.model, now) >= daily:
                raise _error(429, "Your daily task limit has been reached.")
            if estimate > world.balance:
                raise _error(400, "You do not have enough credits to run this task.")
            fail = sim.faults.pick(("fail",), "POST", endpoint)
            outputs = plan_outputs(sim.catalog.endpoints[endpoint].output, body)
            task = world.create(
                endpoint,
                result.model,
                body,
                estimate,
                outputs,
                fail.failure_code if fail else None,
                failure=fail.message if fail else None,
            )
        raise _Reply(200, {"id": task.id, "estimatedCost": {"credits": estimate}})

    def _get_task(self, task_id: str) -> None:
        sim = self.server.sim
        task = sim.world.visible_task(task_id)
        if task is None:
            raise _error(404, "Could not find Task")
        answer = sim.world.task_json(task, sim.output_urls(task))
        raise _Reply(200, _oddly(answer, sim.faults, "GET"))

    def _delete_task(self, task_id: str) -> None:
        if not self.server.sim.world.delete(task_id):
            raise _error(404, "Could not find Task")
        raise _Reply(204)

    def _organization(self) -> None:
        sim = self.server.sim
        models = [m for ep in sim.catalog.endpoints.values() for m in ep.models]
        raise _Reply(200, sim.world.organization_json(models))

    def _usage(self, raw: bytes) -> None:
        world = self.server.sim.world
        body = self._json(raw, empty_ok=True)
        start, before = world.default_usage_window()
        try:
            if isinstance(body, dict) and body.get("startDate"):
                start = date.fromisoformat(body["startDate"])
                before = date.fromordinal(start.toordinal() + 30)
            if isinstance(body, dict) and body.get("beforeDate"):
                before = date.fromisoformat(body["beforeDate"])
        except (TypeError, ValueError) as exc:
            raise _error(
                400,
                "Validation of body failed",
                [Issue("invalid_format", ("startDate",), "Invalid date: expected YYYY-MM-DD")],
            ) from exc
        if (before - start).days > 90 or before <= start:
            raise _error(400, "beforeDate must be after startDate and at most 90 days later.")
        raise _Reply(200, world.usage_json(start, before))

    def _create_upload(self, raw: bytes) -> None:
        sim = self.server.sim
        body = self._json(raw)
        filename = body.get("filename") if isinstance(body, dict) else None
        if not isinstance(filename, str) or not filename.strip() or "/" in filename:
            raise _error(
                400,
                "Validation of body failed",
                [
                    Issue(
                        "invalid_type",
                        ("filename",),
                        "Invalid input: expected string, received undefined",
                        {"expected": "string"},
                    )
                ],
            )
        if body.get("type", "ephemeral") != "ephemeral":
            raise _error(
                400,
                "Validation of body failed",
                [Issue("invalid_value", ("type",), 'Invalid input: expected "ephemeral"', {"values": ["ephemeral"]})],
            )
        now = sim.world.clock.now()
        upload = Upload(id=uuid.uuid4().hex, filename=filename, created=now, secret="")
        key = f"uploads/{upload.id}/{filename}"
        policy = b64encode(
            json.dumps(
                {
                    "expiration": iso_ms(now + 3600),
                    "conditions": [
                        {"key": key},
                        ["content-length-range", sim.config.upload_min, sim.config.upload_max],
                    ],
                }
            ).encode()
        ).decode()
        fields = {
            "key": key,
            "policy": policy,
            "x-amz-algorithm": "AWS4-HMAC-SHA256",
            "x-amz-credential": f"SIMULATOR/{iso_ms(now)[:10].replace('-', '')}/us-east-1/s3/aws4_request",
            "x-amz-date": iso_ms(now)[:19].replace("-", "").replace(":", "") + "Z",
        }
        fields["x-amz-signature"] = sim.upload_signature(upload, policy)
        upload.secret = fields["x-amz-signature"]
        with sim.world.lock:
            sim.world.uploads[upload.id] = upload
        raise _Reply(
            200,
            {
                "uploadUrl": f"{sim.url}/_uploads/{upload.id}",
                "fields": fields,
                "runwayUri": f"runway://uploads/{upload.id}",
            },
        )

    # -- storage-like paths -----------------------------------------------------------------------

    def _s3_error(self, status: int, code: str, message: str) -> _Reply:
        xml = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
        ).encode()
        return _Reply(status, xml)

    def _receive_upload(self, method: str, path: str, raw: bytes) -> None:
        sim = self.server.sim
        match = _UPLOAD_PATH.match(path)
        if method != "POST" or not match:
            raise self._s3_error(405, "MethodNotAllowed", "The specified method is not allowed.")
        with sim.world.lock:
            upload = sim.world.uploads.get(match.group(1))
        if upload is None:
            raise self._s3_error(404, "NoSuchUpload", "The upload does not exist.")
        try:
            form, file_part = parse_multipart(self.headers.get("Content-Type", ""), raw)
        except MultipartError as exc:
            raise self._s3_error(400, "MalformedPOSTRequest", str(exc)) from exc
        policy = form.get("policy", "")
        if (
            form.get("x-amz-signature") != upload.secret
            or not hmac.compare_digest(sim.upload_signature(upload, policy), upload.secret)
            or form.get("key") != f"uploads/{upload.id}/{upload.filename}"
        ):
            raise self._s3_error(403, "AccessDenied", "Invalid according to Policy: signature or key mismatch.")
        if sim.world.clock.now() > upload.created + 3600:
            raise self._s3_error(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
        if file_part is None:
            raise self._s3_error(400, "InvalidArgument", "POST requires exactly one file upload per request.")
        data = file_part.data
        if len(data) < sim.config.upload_min:
            raise self._s3_error(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size")
        if len(data) > sim.config.upload_max:
            raise self._s3_error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
        from runwatch.mediafiles import probe

        info = probe(data)
        target = os.path.join(sim._dir or tempfile.gettempdir(), upload.id)
        with open(target, "wb") as fh:
            fh.write(data)
        with sim.world.lock:
            upload.path, upload.size = target, len(data)
            upload.content_type = info.content_type if info else file_part.content_type
            upload.kind = info.kind if info else None
        raise _Reply(204)

    def _serve_output(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        sim = self.server.sim
        match = _OUTPUT_PATH.match(path)
        if method not in ("GET", "HEAD") or not match:
            raise _Reply(403, {"message": "Forbidden"})
        task_id, index = match.group(1), int(match.group(2))
        token = (query.get("_jwt") or [""])[0]
        if not sim.signer.verify(token, task_id, index, sim.world.clock.now()):
            raise _Reply(403, {"message": "Forbidden"})  # expired or altered, as CloudFront answers
        task = sim.world.visible_task(task_id)
        if task is None or index >= len(task.outputs):
            raise _Reply(404, {"message": "Not Found"})
        if sim.config.output_delay:
            time.sleep(sim.config.output_delay)
        from runwatch.mediafiles import content_type

        data = sim._output(task, index)
        ctype = content_type(task.outputs[index])
        fault = sim.faults.pick(OUTPUT_ACTIONS, method, "outputs")
        if fault is not None and fault.action == "truncate":  # the whole file announced, part of it sent
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: int(len(data) * fault.keep)])
            self.wfile.flush()
            raise _Dropped  # and hang up
        if fault is not None and fault.action == "short":  # part of the file, as if it were all of it
            data = data[: int(len(data) * fault.keep)]
        elif fault is not None and fault.action == "garbage":
            data = random.Random(f"{task_id}:{index}:garbage").randbytes(len(data))  # noqa: S311 - not crypto
        self._send(200, data, content_type=ctype)
        raise _Handled

    # -- /_sim ------------------------------------------------------------------------------------

    def _admin(self, method: str, path: str, raw: bytes, query: dict[str, list[str]]) -> None:
        sim = self.server.sim
        world = sim.world
        name = path[len("/_sim/") :]
        if name == "health":
            raise _Reply(200, {"ok": True, "now": iso_ms(world.clock.now())})
        if name == "requests" and method == "GET":
            since = int((query.get("since") or ["0"])[0])
            with world.lock:
                rows = [r for r in world.requests if r["seq"] > since]
            raise _Reply(200, {"requests": rows, "total": world.request_count})
        if name == "creates" and method == "GET":
            with world.lock:
                bodies = [dict(e) for e in world.create_bodies.values()]
            raise _Reply(200, {"total": sum(e["count"] for e in bodies), "bodies": bodies})
        if name == "tasks" and method == "GET":
            with world.lock:
                now = world.advance()
                rows = [_task_row(t, now) for t in world.tasks.values()]
            raise _Reply(200, {"tasks": rows, "counts": dict(world.counts())})
        if name == "fetches" and method == "GET":
            with world.lock:
                raise _Reply(200, {"fetches": list(world.fetches)})
        if name == "faults":
            if method == "GET":
                raise _Reply(200, {"faults": [f.to_json() for f in sim.faults.list()]})
            if method == "DELETE":
                sim.faults.clear()
                raise _Reply(204)
            if method == "POST":
                try:
                    sim.faults.add(Fault(**self._json(raw)))
                except (TypeError, Exception) as exc:
                    raise _error(400, f"bad fault: {exc}") from exc
                raise _Reply(201, {"faults": [f.to_json() for f in sim.faults.list()]})
        if name == "clock" and method == "POST":
            body = self._json(raw)
            world.clock.advance(float(body.get("advance", 0)))
            raise _Reply(200, {"now": iso_ms(world.clock.now())})
        if name == "organization" and method == "POST":
            self._set_org(self._json(raw))
        raise _error(404, "Not found")

    def _set_org(self, body: dict[str, Any]) -> None:
        world = self.server.sim.world
        config = world.config
        with world.lock:
            if "creditBalance" in body:
                world.balance = float(body["creditBalance"])
            if "concurrency" in body:
                config.concurrency = body["concurrency"]
            if "dailyLimit" in body:
                config.daily_limit = body["dailyLimit"]
            for model, (conc, daily) in (body.get("models") or {}).items():
                config.model_limits[model] = (conc, daily)
            world.advance()
        raise _Reply(200, world.organization_json([]))


class _Dropped(Exception):
    """The connection is to be closed without an answer."""


class _Handled(_Reply):
    def __init__(self) -> None:
        super().__init__(0)


def _oddly(answer: dict[str, Any], faults: Any, method: str) -> Any:
    """A task answer made odd by an ``odd`` fault whose oddity fits the task's state (see faults.py)."""
    status = answer.get("status")
    wanted = {"SUCCEEDED": ("no_output", "null_output"), "RUNNING": ("nan_progress", "big_progress")}.get(
        str(status), ()
    )
    if not wanted:
        return answer
    fault = faults.pick_odd(method, wanted)
    if fault is None:
        return answer
    odd = dict(answer)
    if fault.what == "no_output":
        odd.pop("output", None)
    elif fault.what == "null_output":
        odd["output"] = None
    elif fault.what == "nan_progress":
        odd["progress"] = float("nan")  # json.dumps writes NaN, which strict JSON forbids
    else:
        odd["progress"] = 7.5
    return odd


def _task_row(task: Task, now: float) -> dict[str, Any]:
    return {
        "id": task.id,
        "endpoint": task.endpoint,
        "model": task.model,
        "status": task.status(now),
        "createdAt": iso_ms(task.created),
        "estimatedCost": task.estimate,
        "cost": task.cost,
        "failureCode": task.failure_code,
        "deleted": task.deleted,
        "outputs": task.outputs,
        "body": task.body,
    }


def _loggable(body: bytes, content_type: str) -> Any:
    if not body:
        return None
    if "json" in content_type:
        try:
            data = json.loads(body)
            return _mask_media(data)
        except ValueError:
            pass
    return {"bytes": len(body)}


def _mask_media(value: Any) -> Any:
    """Bodies as logged: signatures in URLs blanked, data URIs shortened."""
    if isinstance(value, dict):
        return {k: _mask_media(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_media(v) for v in value]
    if isinstance(value, str):
        if value.startswith("data:") and len(value) > 80:
            return value[:48] + f"…({len(value)} chars)"
        if value.startswith(("https://", "http://")):
            return mask_url(value)
    return value


def _estimate(endpoint: str, model: str, body: dict[str, Any], checked: list[Checked], fallback: float) -> float:
    from runwatch.catalog import format_path
    from runwatch.pricing import MediaHint, estimate

    hints = {format_path(c.ref.path): MediaHint(duration=c.duration, width=c.width, height=c.height) for c in checked}
    result = estimate(endpoint, model, body, hints)
    return float(result.credits) if result.credits is not None else fallback
