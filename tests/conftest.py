"""Fixtures shared by the whole suite."""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import re
import shutil
import struct
import sys
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

from runwatch.simulator import SimConfig, Simulator
from tests.s3server import INSTALL_HINT, S3Server, S3ServerError, find_weed, start_s3_server

pytest_plugins = ["tests.rig", "tests.pgserver"]  # the daemon rig and a PostgreSQL server, for the tests that need them

# Under CI (the CI variable set, as CI services do) every tool the suite uses is installed, so a test never
# passes by being skipped for one that is missing: need() fails there, and any other skip fails too unless it
# says, through not_applicable(), that the test does not apply to this platform at all.
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
NOT_APPLICABLE = "does not apply here: "


def need(available: bool, what: str) -> None:
    """Skip the test when something it needs from the machine is missing (``what`` says what and how to get
    it); under CI, fail instead."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} (CI is set: the suite's tools must all be installed)", pytrace=False)
    pytest.skip(what)


def need_tool(*names: str, package: str) -> None:
    """need() for programs on PATH, naming the system package that has them."""
    missing = [name for name in names if shutil.which(name) is None]
    need(not missing, f"{' and '.join(missing)} not on PATH: install the {package} package")


def load_script(path: Path, name: str) -> ModuleType:
    """A script of bench/ or tools/ (folders of scripts, not packages) loaded by path as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def not_applicable(reason: str) -> NoReturn:
    """Skip a test that has no meaning on this platform (another Python, a filesystem limit); allowed in CI."""
    pytest.skip(NOT_APPLICABLE + reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI, a skip that is not a not_applicable() one is a failure."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not (IN_CI and report.skipped) or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
    if NOT_APPLICABLE not in reason:
        report.outcome = "failed"
        report.longrepr = f"skipped, and CI is set (every tool the suite uses must be there): {reason}"


@pytest.fixture(autouse=True)
def _no_real_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's real Runway or AWS credentials can never reach a test."""
    for name in list(os.environ):
        if name.startswith(("RUNWAYML_", "RUNWAY_", "AWS_")):
            monkeypatch.delenv(name, raising=False)
    # CI runs as root; the daemons the tests start are allowed to (tests of the refusal remove this).
    monkeypatch.setenv("RUNWATCH_ALLOW_ROOT", "1")


@pytest.fixture
def sim_config() -> SimConfig:
    """Fast simulated time (a minute of Runway time is about 0.1 s) and http:// media on loopback."""
    return SimConfig(time_scale=0.002, allow_http_loopback=True)


@pytest.fixture
def sim(sim_config: SimConfig) -> Iterator[Simulator]:
    """A simulator served over loopback HTTP for one test."""
    with Simulator(sim_config) as simulator:
        yield simulator


@pytest.fixture
def paced_sim() -> Iterator[Simulator]:
    """Tasks a third of Runway's pace: a video runs for about 20 s, long enough to watch it move."""
    with Simulator(SimConfig(time_scale=0.3, allow_http_loopback=True)) as simulator:
        yield simulator


@pytest.fixture
def slow_sim() -> Iterator[Simulator]:
    """Tasks at Runway's own pace (a minute or more): still running when a test cancels them."""
    with Simulator(SimConfig(time_scale=1.0, allow_http_loopback=True)) as simulator:
        yield simulator


SAMPLES = Path(__file__).resolve().parent.parent / "runwatch" / "data" / "samples"


@functools.cache
def _class_names() -> frozenset[str]:
    names: set[str] = set()
    for path in (SAMPLES.parent.parent).rglob("*.py"):
        tree = ast.parse(path.read_text("utf-8"))
        names.update(node.name.lstrip("_") for node in ast.walk(tree) if isinstance(node, ast.ClassDef))
    return frozenset(name for name in names if len(name) > 3)  # "S" and the like are not words of their own


def type_names_in(text: str) -> set[str]:
    """The names of runwatch's own classes that ``text`` uses: what a message for people must never say."""
    return set(re.findall(r"[A-Za-z]+", text)) & _class_names()


def png_of(size: int) -> bytes:
    """A real 1x1 PNG of exactly ``size`` bytes (at least 83): a comment chunk makes up the length."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    parts = [
        b"\x89PNG\r\n\x1a\n",
        chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)),
        chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")),
        chunk(b"IEND", b""),
    ]
    pad = size - sum(map(len, parts)) - 12 - len(b"c\0")
    assert pad >= 0, f"a PNG takes at least {size - pad} bytes"
    parts.insert(2, chunk(b"tEXt", b"c\0" + b"x" * pad))
    return b"".join(parts)


class MediaServer:
    """A tiny loopback web server for media fixtures: path -> (status, headers, body)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.hits: list[tuple[str, str]] = []
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        server.daemon_threads = True
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()

    def add(
        self, path: str, body: bytes, content_type: str | None, status: int = 200, headers: dict[str, str] | None = None
    ) -> str:
        hdrs = dict(headers or {})
        if content_type is not None:
            hdrs["Content-Type"] = content_type
        self.routes[path] = (status, hdrs, body)
        return self.url + path

    def sample(self, name: str, content_type: str) -> str:
        return self.add("/" + name, (SAMPLES / name).read_bytes(), content_type)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                outer.hits.append(("GET", self.path))
                status, headers, body = outer.routes.get(self.path, (404, {}, b"not found"))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def media_server() -> Iterator[MediaServer]:
    """Sample media served over loopback HTTP with chosen statuses and Content-Types."""
    server = MediaServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """A real SeaweedFS S3 server on loopback with one bucket, shared by the session; gone at the end."""
    if find_weed() is None:
        pytest.fail(f"SeaweedFS ('weed') is needed for the S3 tests; {INSTALL_HINT}", pytrace=False)
    try:
        server = start_s3_server()
    except S3ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()
