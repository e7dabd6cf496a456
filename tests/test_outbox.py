"""The outbox: atomic status files, output names, downloads over real loopback HTTP, clean-up."""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import struct
import threading
import tomllib
import tracemalloc
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from runwatch.errors import OutboxError
from runwatch.jobs.job import Job
from runwatch.mediafiles import make_output
from runwatch.outbox import (
    NAME_MAX,
    STATUS_KEYS,
    DownloadError,
    OutputRecord,
    clean_partials,
    download_outputs,
    extension_for,
    ordered_status,
    output_name,
    reserve_unique,
    status_document,
    status_path,
    write_status,
)

SIG = "a" * 64
Format = Literal["json", "toml"]


def _leftovers(outbox: Path) -> list[str]:
    return sorted(p.name for p in outbox.iterdir() if p.name.endswith(".tmp"))


# -- a loopback origin, standing in for Runway's CloudFront --------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.server.origin.hits.append(self.path)
        route = self.server.origin.routes.get(parts.path)
        try:
            if route is None:
                self.reply(404, b"not found", "text/plain")
            else:
                route(self, {k: v[0] for k, v in parse_qs(parts.query).items()})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client walked away (a stopped download)

    def reply(self, status: int, body: bytes, content_type: str | None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    origin: Origin

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that hangs up mid-body is part of the tests, not noise


Route = Callable[[_Handler, dict[str, str]], None]


class Origin:
    """A real HTTP server on loopback whose routes are small functions of (handler, query)."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: list[str] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.origin = self
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def static(self, path: str, body: bytes, content_type: str | None, status: int = 200) -> str:
        self.routes[path] = lambda h, q: h.reply(status, body, content_type)
        return self.base + path

    def route(self, path: str, fn: Route) -> str:
        self.routes[path] = fn
        return self.base + path

    def hits_on(self, path: str) -> int:
        return sum(1 for hit in self.hits if urlsplit(hit).path == path)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    path = tmp_path / "outbox"
    path.mkdir()
    return path


def _blocks(seed: int, size: int, block: int = 64 << 10) -> Iterator[bytes]:
    """Deterministic pseudo-random bytes, ``block`` at a time: the server and the test agree without a copy."""
    rng = random.Random(seed)
    left = size
    while left:
        n = min(block, left)
        yield rng.randbytes(n)
        left -= n


def _mp4_blocks(seed: int, size: int) -> Iterator[bytes]:
    """A real MP4 of ``size`` bytes: a small one, then a ``free`` box of pseudo-random filler, as it streams."""
    head = make_output("mp4", str(seed).encode())
    yield head + struct.pack(">I4s", size - len(head), b"free")
    yield from _blocks(seed, size - len(head) - 8)


def _mp4(size: int, seed: int = 0) -> bytes:
    return b"".join(_mp4_blocks(seed, size))


def _generated(seed: int, size: int, content_type: str) -> Route:
    def serve(h: _Handler, q: dict[str, str]) -> None:
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(size))
        h.end_headers()
        for data in _mp4_blocks(seed, size):
            h.wfile.write(data)

    return serve


def _truncated(body: bytes, content_type: str) -> Route:
    """Promises the whole body, sends half, hangs up: a connection lost mid-download."""

    def serve(h: _Handler, q: dict[str, str]) -> None:
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[: len(body) // 2])
        h.wfile.flush()
        h.close_connection = True

    return serve


# -- status files ---------------------------------------------------------------------------------------


def _status(**extra: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": "clip",
        "state": "succeeded",
        "endpoint": "image_to_video",
        "model": "gen4_turbo",
        "task_id": "6f6f6f6f-0000-4000-8000-000000000000",
        "progress": None,
        "estimated_credits": 25,
        "credits": 25,
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:01:00Z",
        "finished_at": "2025-01-01T00:01:00Z",
        "outputs": [{"file": "clip.mp4", "bytes": 10, "sha256": "0" * 64}],
        "error": None,
        "request": "/srv/inbox/.runwatch/done/20250101T000000Z-0a0b0c0d/clip.json",
        "runwatch_version": "0.1.0",
    }
    status.update(extra)
    return status


class TestStatusPath:
    def test_names_follow_the_request_format(self, outbox: Path) -> None:
        """A JSON request gets NAME.status.json, a TOML request NAME.status.toml, both in the outbox."""
        assert status_path(outbox, "clip", "json") == outbox / "clip.status.json"
        assert status_path(outbox, "clip", "toml") == outbox / "clip.status.toml"

    @pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "a\0b"])
    def test_names_that_escape_the_outbox_are_refused(self, outbox: Path, name: str) -> None:
        """A name that is not one plain path component never becomes a path."""
        with pytest.raises(OutboxError):
            status_path(outbox, name, "json")


class TestLongNames:
    """Names too long for a file name keep their start, gain ``~`` and a short hash, and fit NAME_MAX bytes."""

    @pytest.mark.parametrize(("name", "fmt"), [("x" * 245, "json"), ("é" * 125, "toml"), ("日x" * 61, "json")])
    def test_status_file_of_a_long_name_is_written(self, outbox: Path, name: str, fmt: Format) -> None:
        """A request refused for its 245-byte name still gets its status file: under a name of at most 255
        bytes that keeps the start of the name, cut between characters, then ~ and 8 hex digits."""
        path = write_status(outbox, name, fmt, _status(name=name))
        assert path == status_path(outbox, name, fmt) and path.is_file()
        assert len(path.name.encode()) <= NAME_MAX and path.name.endswith(f".status.{fmt}")
        stem = path.name.removesuffix(f".status.{fmt}")
        start, _, digest = stem.rpartition("~")
        assert name.startswith(start) and len(start) > 100 and len(digest) == 8
        assert digest == hashlib.sha256(name.encode()).hexdigest()[:8]
        assert _leftovers(outbox) == []

    def test_names_that_begin_alike_stay_apart(self, outbox: Path) -> None:
        """Two long names that differ only at their ends get two status files; short names are unchanged."""
        first, second = "x" * 250 + "a", "x" * 250 + "b"
        assert status_path(outbox, first, "json") != status_path(outbox, second, "json")
        assert status_path(outbox, "x" * 243, "json").name == "x" * 243 + ".status.json"  # exactly 255 bytes
        assert status_path(outbox, "x" * 244, "json").name != "x" * 244 + ".status.json"

    def test_outputs_of_a_long_name_fit(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """Outputs are named after the request too: with several of them, and a taken name, every file name
        still fits, keeps its _N and its extension, and the bytes arrive."""
        name = "é" * 126
        urls = [origin.static(f"/o/{i}", make_output("png", f"out {i}".encode()), "image/png") for i in range(2)]
        taken = output_name(name, 0, 2, "png")
        assert len(taken.encode()) <= NAME_MAX - len(".9999") and taken.endswith("_1.png")
        (outbox / taken).write_bytes(b"the user's")
        records = download_outputs(http, urls, outbox, name)
        assert [r.file.rsplit("_", 1)[-1] for r in records] == ["1.2.png", "2.png"]
        for index, record in enumerate(records):
            assert len(record.file.encode()) <= NAME_MAX
            assert (outbox / record.file).read_bytes() == make_output("png", f"out {index}".encode())
        assert (outbox / taken).read_bytes() == b"the user's"


class TestWriteStatus:
    def test_json_round_trip_in_contract_order(self, outbox: Path) -> None:
        """JSON status: indented, UTF-8 as is, contract keys in order, extra keys after them alphabetically."""
        status = dict(reversed(list(_status(zeta=1, alpha="ü", progress=0.5).items())))
        path = write_status(outbox, "clip", "json", status)
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        assert list(data) == [*STATUS_KEYS, "alpha", "zeta"]
        assert data["alpha"] == "ü" and '"ü"' in text
        assert data["error"] is None  # JSON keeps null
        assert text.startswith('{\n  "name": "clip",') and text.endswith("}\n")

    def test_nested_keys_keep_the_order_given(self, outbox: Path) -> None:
        """Only the top level is put in contract order; inner objects keep the caller's order."""
        error = {"message": "bad", "code": "INPUT_PREPROCESSING.SAFETY", "issues": [{"path": "p", "message": "m"}]}
        data = json.loads(write_status(outbox, "clip", "json", _status(state="failed", error=error)).read_text())
        assert list(data["error"]) == ["message", "code", "issues"]

    def test_toml_round_trip_drops_none(self, outbox: Path) -> None:
        """TOML has no null: None values are left out, at the top level, in tables and in arrays of tables."""
        status = _status(
            error={"code": 400, "message": "bad", "issues": [{"path": "ratio", "message": "no", "hint": None}]},
            outputs=[{"file": "clip.mp4", "bytes": 1, "sha256": "f" * 64, "note": None}],
            extra={"nested": {"gone": None, "kept": 0}},
        )
        path = write_status(outbox, "clip", "toml", status)
        assert path == outbox / "clip.status.toml"
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        assert "progress" not in data
        assert data["error"]["issues"] == [{"path": "ratio", "message": "no"}]
        assert data["outputs"] == [{"file": "clip.mp4", "bytes": 1, "sha256": "f" * 64}]
        assert data["extra"] == {"nested": {"kept": 0}}
        assert list(data)[:3] == ["name", "state", "endpoint"]

    def test_paths_and_tuples_are_written_plainly(self, outbox: Path) -> None:
        """A Path becomes its string and a tuple a list, in both formats."""
        status = _status(request=Path("/srv/x/clip.json"), outputs=(), extra=("a", "b"))
        data = json.loads(write_status(outbox, "clip", "json", status).read_text())
        assert data["request"] == "/srv/x/clip.json" and data["outputs"] == [] and data["extra"] == ["a", "b"]
        back = tomllib.loads(write_status(outbox, "clip", "toml", status).read_text())
        assert back["request"] == "/srv/x/clip.json" and back["extra"] == ["a", "b"]

    def test_rewrite_replaces_and_leaves_no_temporary_file(self, outbox: Path) -> None:
        """A second write replaces the first; nothing but the status file remains in the outbox."""
        write_status(outbox, "clip", "json", _status(state="running"))
        write_status(outbox, "clip", "json", _status(state="succeeded"))
        assert [p.name for p in outbox.iterdir()] == ["clip.status.json"]
        assert json.loads((outbox / "clip.status.json").read_text())["state"] == "succeeded"

    def test_unserialisable_value_is_an_outbox_error(self, outbox: Path) -> None:
        """A value JSON cannot hold (NaN, an object) raises OutboxError and writes nothing."""
        with pytest.raises(OutboxError):
            write_status(outbox, "clip", "json", _status(progress=float("nan")))
        with pytest.raises(OutboxError):
            write_status(outbox, "clip", "json", _status(extra=object()))
        assert list(outbox.iterdir()) == []

    def test_missing_outbox_is_an_outbox_error(self, tmp_path: Path) -> None:
        """An outbox that is not there (an unmounted share) is reported, not created."""
        with pytest.raises(OutboxError):
            write_status(tmp_path / "gone", "clip", "json", _status())
        assert not (tmp_path / "gone").exists()

    def test_new_files_follow_the_umask(self, outbox: Path) -> None:
        """Status files are readable by others under a usual umask (not mkstemp's owner-only 0600)."""
        old = os.umask(0o022)
        try:
            path = write_status(outbox, "clip", "json", _status())
        finally:
            os.umask(old)
        assert path.stat().st_mode & 0o777 == 0o644


class TestStatusDocument:
    @pytest.mark.parametrize("fmt", ["json", "toml"])
    def test_a_name_with_undecodable_bytes_is_written(self, tmp_path: Path, fmt: Format) -> None:
        """A request named by a file whose name is not UTF-8 still gets a status file, bytes shown as \\xNN."""
        name = os.fsdecode(b"clip-\xff")
        job = Job(
            id="j1",
            name=name,
            inbox="main",
            format=fmt,
            endpoint="text_to_video",
            model="veo3.1",
            state="running",
            request_path=str(tmp_path / os.fsdecode(b"clip-\xff.json")),
        )
        document = status_document(job)
        assert document["name"] == "clip-\\xff" and document["request"].endswith("clip-\\xff.json")
        assert list(document) == [key for key in STATUS_KEYS if key in document]
        path = write_status(tmp_path, document["name"], fmt, document)
        assert "clip-\\\\xff" in path.read_text(encoding="utf-8")  # the backslash escaped, in JSON and TOML


class TestAtomicStatus:
    @pytest.mark.parametrize("fmt", ["json", "toml"])
    def test_concurrent_reader_never_sees_half_a_file(self, outbox: Path, fmt: Format) -> None:
        """A reader polling the status file while it is rewritten 500 times only ever parses whole versions."""
        path = status_path(outbox, "clip", fmt)
        write_status(outbox, "clip", fmt, _status(progress=0.0, counter=0, outputs=[]))
        parse: Callable[[str], Any] = json.loads if fmt == "json" else tomllib.loads
        done = threading.Event()
        seen: list[int] = []
        bad: list[str] = []

        def reader() -> None:
            while not done.is_set():
                text = path.read_text(encoding="utf-8")
                try:
                    data = parse(text)
                except ValueError:
                    bad.append(text)
                    continue
                # Each version's outputs list has a length tied to its counter: a mixed file would not match.
                if len(data["outputs"]) != data["counter"] % 37 or data["name"] != "clip":
                    bad.append(text)
                seen.append(data["counter"])

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for i in range(500):
                outputs = [{"file": f"clip_{k}.mp4", "bytes": k, "sha256": "e" * 64} for k in range(i % 37)]
                write_status(outbox, "clip", fmt, _status(progress=i / 500, counter=i, outputs=outputs))
        finally:
            done.set()
            thread.join()
        assert bad == []
        assert len(seen) > 50 and seen == sorted(seen)  # many reads, and versions only move forward
        assert _leftovers(outbox) == []


class TestOrderedStatus:
    def test_contract_keys_first_then_the_rest_sorted(self) -> None:
        """Known keys come in the contract's order, whatever order they were given in; unknown ones follow."""
        given = {"b_extra": 1, "error": None, "name": "n", "a_extra": 2, "state": "accepted"}
        assert list(ordered_status(given)) == ["name", "state", "error", "a_extra", "b_extra"]

    def test_status_keys_match_the_contract(self) -> None:
        """The key list is the contract's §5 table, in its order."""
        assert STATUS_KEYS[:4] == ("name", "state", "endpoint", "model") and STATUS_KEYS[-1] == "runwatch_version"
        assert len(STATUS_KEYS) == len(set(STATUS_KEYS)) == 15


# -- output names ---------------------------------------------------------------------------------------


class TestOutputNames:
    @pytest.mark.parametrize(
        ("index", "count", "ext", "expected"),
        [
            (0, 1, "mp4", "clip.mp4"),
            (0, 2, "png", "clip_1.png"),
            (1, 2, "png", "clip_2.png"),
            (3, 4, ".jpg", "clip_4.jpg"),
            (0, 1, "", "clip"),
        ],
    )
    def test_output_name(self, index: int, count: int, ext: str, expected: str) -> None:
        """One output is NAME.EXT; several are NAME_1.EXT, NAME_2.EXT... counted from 1."""
        assert output_name("clip", index, count, ext) == expected

    def test_free_name_is_kept(self, outbox: Path) -> None:
        """With nothing in the way the name is used as is, and no file is created by reserving it."""
        assert reserve_unique(outbox, "clip.mp4") == outbox / "clip.mp4"
        assert list(outbox.iterdir()) == []

    def test_taken_names_get_deterministic_suffixes(self, outbox: Path) -> None:
        """A taken name gets .2, then .3, before the extension; the same state always gives the same answer."""
        (outbox / "clip.mp4").write_bytes(b"user's own")
        assert reserve_unique(outbox, "clip.mp4") == outbox / "clip.2.mp4"
        assert reserve_unique(outbox, "clip.mp4") == outbox / "clip.2.mp4"
        (outbox / "clip.2.mp4").write_bytes(b"earlier run")
        assert reserve_unique(outbox, "clip.mp4") == outbox / "clip.3.mp4"
        (outbox / "clip_1.png").write_bytes(b"x")
        assert reserve_unique(outbox, "clip_1.png") == outbox / "clip_1.2.png"
        assert (outbox / "clip.mp4").read_bytes() == b"user's own"

    def test_suffix_without_extension(self, outbox: Path) -> None:
        """A name without an extension gets the suffix at its end."""
        (outbox / "clip").write_bytes(b"x")
        assert reserve_unique(outbox, "clip") == outbox / "clip.2"

    def test_status_file_of_the_request_is_not_in_the_way(self, outbox: Path) -> None:
        """NAME.status.json is not an output: NAME.mp4 is still free next to it."""
        write_status(outbox, "clip", "json", _status())
        assert reserve_unique(outbox, "clip.mp4") == outbox / "clip.mp4"

    def test_status_like_names_are_never_given_to_outputs(self, outbox: Path) -> None:
        """An output of a request named "x.status" never takes x.status.json, the status file of request "x"."""
        assert reserve_unique(outbox, "x.status.json") == outbox / "x.status.2.json"

    def test_dangling_symlink_counts_as_taken(self, outbox: Path) -> None:
        """A symlink whose target is gone still occupies its name."""
        (outbox / "clip.mp4").symlink_to(outbox / "nowhere")
        assert reserve_unique(outbox, "clip.mp4") == outbox / "clip.2.mp4"


class TestExtensionFor:
    @pytest.mark.parametrize(
        ("content_type", "url", "expected"),
        [
            ("video/mp4", "https://h/a", "mp4"),
            ("video/quicktime", "https://h/a.mp4", "mov"),
            ("image/png", "https://h/a", "png"),
            ("image/jpeg", "https://h/a.jpeg", "jpg"),
            ("image/webp", "https://h/a", "webp"),
            ("audio/mpeg", "https://h/a", "mp3"),
            ("audio/wav", "https://h/a", "wav"),
            ("audio/x-wav", "https://h/a", "wav"),
            ("audio/flac", "https://h/a", "flac"),
            ("audio/ogg", "https://h/a", "ogg"),
            ("application/zip", "https://h/a", "zip"),
            ("Video/MP4; charset=binary", "https://h/a", "mp4"),
            ("application/octet-stream", "https://h/out/0.MOV?_jwt=x.y.z", "mov"),
            (None, "https://h/out/clip%2Efinal.webm?sig=1", "webm"),
            (None, "https://h/out/noext?x=a.png", "bin"),
            (None, "https://h/out/weird.m p4", "bin"),
            ("", "https://h/", "bin"),
        ],
    )
    def test_extension(self, content_type: str | None, url: str, expected: str) -> None:
        """Content-Type first, then the URL path's extension (query ignored), else bin."""
        assert extension_for(url, content_type) == expected


# -- downloads ------------------------------------------------------------------------------------------


class TestDownloads:
    def test_single_output_is_byte_identical(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """One output lands as NAME.EXT with its exact bytes, size and sha256."""
        body = _mp4(300_000)
        url = origin.static("/o/0", body, "video/mp4")
        records = download_outputs(http, [url], outbox, "clip")
        assert records == [OutputRecord("clip.mp4", len(body), hashlib.sha256(body).hexdigest(), 0)]
        assert (outbox / "clip.mp4").read_bytes() == body
        assert records[0].to_json() == {"file": "clip.mp4", "bytes": len(body), "sha256": records[0].sha256}
        assert _leftovers(outbox) == []

    def test_several_outputs_are_numbered(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """Several outputs become NAME_1, NAME_2... with extensions from their own Content-Types."""
        bodies = [make_output("png", b"one"), make_output("jpeg", b"two"), b"bin-three"]
        urls = [
            origin.static("/o/0", bodies[0], "image/png"),
            origin.static("/o/1", bodies[1], "image/jpeg"),
            origin.static("/o/2.dat", bodies[2], None),
        ]
        records = download_outputs(http, urls, outbox, "shot", chunk=4)
        assert [r.file for r in records] == ["shot_1.png", "shot_2.jpg", "shot_3.dat"]
        assert [r.index for r in records] == [0, 1, 2]
        for record, body in zip(records, bodies, strict=True):
            assert (outbox / record.file).read_bytes() == body
            assert record.bytes == len(body) and record.sha256 == hashlib.sha256(body).hexdigest()

    def test_user_files_are_never_touched(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """An existing file with the output's name stays as it was; the output takes the next free suffix."""
        (outbox / "clip.mp4").write_bytes(b"the user's edit")
        (outbox / "clip.2.mp4").write_bytes(b"an earlier run")
        url = origin.static("/o/0", make_output("mp4", b"new"), "video/mp4")
        records = download_outputs(http, [url], outbox, "clip")
        assert records[0].file == "clip.3.mp4"
        assert (outbox / "clip.mp4").read_bytes() == b"the user's edit"
        assert (outbox / "clip.2.mp4").read_bytes() == b"an earlier run"
        assert (outbox / "clip.3.mp4").read_bytes() == make_output("mp4", b"new")

    def test_a_repeated_download_is_not_copied(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """A kill after an output was published but before it was recorded: downloading it again finds the
        same bytes under its name and uses that file instead of adding NAME.2 (found behind a user's file too)."""
        (outbox / "clip.mp4").write_bytes(b"the user's edit")
        body = _mp4(50_000)
        url = origin.static("/o/0", body, "video/mp4")
        first = download_outputs(http, [url], outbox, "clip")
        again = download_outputs(http, [url], outbox, "clip")
        assert first == again and first[0].file == "clip.2.mp4"
        assert sorted(p.name for p in outbox.iterdir()) == ["clip.2.mp4", "clip.mp4"]
        assert (outbox / "clip.mp4").read_bytes() == b"the user's edit" and _leftovers(outbox) == []

    def test_redirects_are_followed(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """A CDN redirect leads to the file, and the extension still comes from the final Content-Type."""
        origin.static("/real", make_output("mp3", b"moved"), "audio/mpeg")

        def redirect(h: _Handler, q: dict[str, str]) -> None:
            h.send_response(302)
            h.send_header("Location", "/real")
            h.send_header("Content-Length", "0")
            h.end_headers()

        records = download_outputs(http, [origin.route("/r", redirect)], outbox, "voice")
        assert records[0].file == "voice.mp3" and (outbox / "voice.mp3").read_bytes() == make_output("mp3", b"moved")

    def test_done_outputs_are_skipped(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """Outputs already in ``done`` are not fetched again; they come back with the new ones, by index."""
        zero, one = make_output("png", b"zero"), make_output("png", b"one")
        urls = [origin.static("/o/0", zero, "image/png"), origin.static("/o/1", one, "image/png")]
        earlier = OutputRecord("shot_1.png", len(zero), hashlib.sha256(zero).hexdigest(), 0)
        records = download_outputs(http, urls, outbox, "shot", done=[earlier])
        assert origin.hits_on("/o/0") == 0 and origin.hits_on("/o/1") == 1
        assert records == [earlier, OutputRecord("shot_2.png", len(one), hashlib.sha256(one).hexdigest(), 1)]

    def test_all_done_makes_no_request(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """When every output is done, nothing is fetched at all."""
        done = [OutputRecord("a_2.png", 1, "0" * 64, 1), OutputRecord("a_1.png", 1, "1" * 64, 0)]
        assert download_outputs(http, ["http://127.0.0.1:9/x", "http://127.0.0.1:9/y"], outbox, "a", done=done) == [
            done[1],
            done[0],
        ]
        assert origin.hits == []


class TestExpiredUrls:
    @staticmethod
    def _signed(origin: Origin, path: str, body: bytes) -> None:
        def serve(h: _Handler, q: dict[str, str]) -> None:
            if q.get("_jwt") != "fresh":
                h.reply(403, b'{"message":"Forbidden"}', "application/json")  # as CloudFront answers
            else:
                h.reply(200, body, "video/mp4")

        origin.route(path, serve)

    def test_expired_url_is_refreshed_once(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """A 403 on an old token makes one refresh; the fresh URLs serve this output and the next one."""
        self._signed(origin, "/o/0", make_output("mp4", b"first"))
        self._signed(origin, "/o/1", make_output("mp4", b"second"))
        calls: list[int] = []

        def refresh() -> list[str]:
            calls.append(1)
            return [f"{origin.base}/o/0?_jwt=fresh", f"{origin.base}/o/1?_jwt=fresh"]

        old = [f"{origin.base}/o/0?_jwt=old", f"{origin.base}/o/1?_jwt=old"]
        records = download_outputs(http, old, outbox, "clip", refresh=refresh)
        assert len(calls) == 1
        assert [(outbox / r.file).read_bytes() for r in records] == [
            make_output("mp4", t) for t in (b"first", b"second")
        ]
        assert origin.hits == ["/o/0?_jwt=old", "/o/0?_jwt=fresh", "/o/1?_jwt=fresh"]

    def test_404_counts_as_expired(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """A 404 also sends for fresh URLs."""
        good = origin.static("/o/new", make_output("png", b"ok"), "image/png")
        records = download_outputs(http, [origin.base + "/o/missing"], outbox, "img", refresh=lambda: [good])
        assert records[0].file == "img.png"

    def test_still_expired_after_refresh_fails(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """A second 403 after the refresh is an OutboxError; no temporary file, no output; the URL is masked."""
        self._signed(origin, "/o/0", b"x")
        calls: list[int] = []

        def refresh() -> list[str]:
            calls.append(1)
            return [f"{origin.base}/o/0?_jwt=stale{SIG}"]

        with pytest.raises(OutboxError) as info:
            download_outputs(http, [f"{origin.base}/o/0?_jwt=old"], outbox, "clip", refresh=refresh)
        assert len(calls) == 1 and origin.hits_on("/o/0") == 2
        assert "403" in str(info.value) and SIG not in str(info.value)
        assert list(outbox.iterdir()) == []

    def test_expired_without_refresh_fails(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """Without a way to refresh, an expired URL fails at once."""
        self._signed(origin, "/o/0", b"x")
        with pytest.raises(OutboxError, match="403"):
            download_outputs(http, [f"{origin.base}/o/0?_jwt=old"], outbox, "clip")
        assert origin.hits_on("/o/0") == 1 and list(outbox.iterdir()) == []

    def test_refresh_with_fewer_outputs_fails(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """A refreshed task that no longer lists the output is an OutboxError, not an IndexError."""
        urls = [origin.static("/o/0", make_output("png", b"a"), "image/png"), origin.base + "/o/gone"]
        with pytest.raises(DownloadError) as info:
            download_outputs(http, urls, outbox, "clip", refresh=lambda: [urls[0]])
        assert [r.file for r in info.value.records] == ["clip_1.png"]


class TestFailures:
    def test_permanent_network_failure(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """A connection that always drops mid-body is retried three times, then OutboxError; nothing is left."""
        url = origin.route("/o/0", _truncated(os.urandom(200_000), "video/mp4"))
        with pytest.raises(OutboxError, match="gave up after 4 attempts"):
            download_outputs(http, [url], outbox, "clip")
        assert origin.hits_on("/o/0") == 4
        assert list(outbox.iterdir()) == []

    @pytest.mark.parametrize("first", ["truncated", "503"])
    def test_passing_failure_is_retried(self, origin: Origin, http: httpx.Client, outbox: Path, first: str) -> None:
        """One dropped connection or one 503 costs a retry, not the output."""
        body = _mp4(100_000)
        attempts: list[int] = []

        def serve(h: _Handler, q: dict[str, str]) -> None:
            attempts.append(1)
            if len(attempts) > 1:
                h.reply(200, body, "video/mp4")
            elif first == "503":
                h.reply(503, b"busy", "text/plain")
            else:
                _truncated(body, "video/mp4")(h, q)

        records = download_outputs(http, [origin.route("/o/0", serve)], outbox, "clip")
        assert len(attempts) == 2 and (outbox / records[0].file).read_bytes() == body
        assert _leftovers(outbox) == []

    def test_client_error_is_not_retried(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """A 410 or a 400 will not change on retry: one request, then OutboxError."""
        url = origin.static("/o/0", b"gone", "text/plain", status=410)
        with pytest.raises(OutboxError, match="410"):
            download_outputs(http, [url], outbox, "clip", refresh=lambda: [url])
        assert origin.hits_on("/o/0") == 1

    def test_connection_refused(self, http: httpx.Client, outbox: Path) -> None:
        """Nobody listening is a network error: retried, then OutboxError with nothing left behind."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with pytest.raises(OutboxError, match="ConnectError"):
            download_outputs(http, [f"http://127.0.0.1:{port}/o/0"], outbox, "clip")
        assert list(outbox.iterdir()) == []

    def test_failure_reports_the_outputs_already_written(
        self, origin: Origin, http: httpx.Client, outbox: Path
    ) -> None:
        """When a later output fails, the error carries the records of those on disk, so none is fetched twice."""
        urls = [
            origin.static("/o/0", make_output("png", b"zero"), "image/png"),
            origin.static("/o/1", b"x", "text/plain", status=400),
        ]
        with pytest.raises(DownloadError) as info:
            download_outputs(http, urls, outbox, "shot")
        assert [r.file for r in info.value.records] == ["shot_1.png"]
        assert sorted(p.name for p in outbox.iterdir()) == ["shot_1.png"]

    def test_unusable_url(self, http: httpx.Client, outbox: Path) -> None:
        """A URL httpx cannot fetch at all is an OutboxError at once, not a retry loop."""
        with pytest.raises(OutboxError):
            download_outputs(http, ["ftp://example.invalid/x.mp4"], outbox, "clip")


class TestOutputChecks:
    def test_an_output_cut_short_is_not_published(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """An MP4 served cut short with a Content-Length that matches: DownloadError naming the output and what
        is wrong, nothing published, no temporary file left; the outputs before it are kept."""
        whole, cut = make_output("png", b"one"), make_output("mp4", b"two")[:-300]
        urls = [origin.static("/o/0", whole, "image/png"), origin.static("/o/1", cut, "video/mp4")]
        with pytest.raises(DownloadError) as info:
            download_outputs(http, urls, outbox, "clip")
        assert "clip: output 2 is not a valid MP4 (it ends inside its 'mdat' box" in str(info.value)
        assert [r.file for r in info.value.records] == ["clip_1.png"]
        assert sorted(p.name for p in outbox.iterdir()) == ["clip_1.png"]

    def test_garbage_is_not_published(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """Random bytes served as image/png are not an output."""
        url = origin.static("/o/0", random.Random(1).randbytes(2000), "image/png")
        with pytest.raises(DownloadError, match=r"output 1 is not a valid PNG \(2000 bytes that no media format"):
            download_outputs(http, [url], outbox, "shot")
        assert list(outbox.iterdir()) == []


class TestLargeAndStopped:
    def test_large_download_keeps_memory_flat(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """50 MB generated on the fly arrive intact while Python's allocations peak under 8 MB."""
        size = 50 << 20
        url = origin.route("/big.mp4", _generated(7, size, "video/mp4"))
        tracemalloc.start()
        try:
            records = download_outputs(http, [url], outbox, "big")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        expected = hashlib.sha256()
        for block in _mp4_blocks(7, size):
            expected.update(block)
        assert records == [OutputRecord("big.mp4", size, expected.hexdigest(), 0)]
        assert (outbox / "big.mp4").stat().st_size == size
        assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB"

    def test_stop_abandons_cleanly(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """A stop set mid-body ends the download between chunks: OutboxError("stopped"), no file left."""
        stop = threading.Event()
        size = 8 << 20

        def serve(h: _Handler, q: dict[str, str]) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "video/mp4")
            h.send_header("Content-Length", str(size))
            h.end_headers()
            for n, block in enumerate(_blocks(1, size)):
                if n == 16:  # after 1 MiB: the rest is only sent once the stop is set
                    stop.set()
                h.wfile.write(block)

        with pytest.raises(OutboxError, match=r"^stopped$"):
            download_outputs(http, [origin.route("/o/0", serve)], outbox, "clip", chunk=64 << 10, stop=stop)
        assert list(outbox.iterdir()) == []

    def test_stop_before_start_fetches_nothing(self, origin: Origin, http: httpx.Client, outbox: Path) -> None:
        """A stop already set means no request at all."""
        stop = threading.Event()
        stop.set()
        url = origin.static("/o/0", b"x", "video/mp4")
        with pytest.raises(OutboxError, match=r"^stopped$"):
            download_outputs(http, [url], outbox, "clip", stop=stop)
        assert origin.hits == [] and list(outbox.iterdir()) == []


class TestCleanPartials:
    def test_only_our_temporary_files_are_removed(self, outbox: Path) -> None:
        """Our .NAME.partN.<hex>.tmp and status temporaries go; user files that merely look similar stay."""
        ours = [
            ".clip.part0.0123456789abcdef.tmp",
            ".a b.c.part12.fedcba9876543210.tmp",
            ".clip.status.json.00112233445566ff.tmp",
            ".clip.status.toml.00112233445566ff.tmp",
        ]
        theirs = [
            ".notes.tmp",
            "clip.tmp",
            ".clip.part0.tmp",
            ".clip.part0.XYZ.tmp",
            "clip.part0.0123456789abcdef.tmp",
            ".clip.part0.0123456789abcdef.tmp.keep",
            "clip.mp4",
            ".clip.backup.0123456789abcdef.tmp",
        ]
        for name in ours + theirs:
            (outbox / name).write_bytes(b"x")
        (outbox / ".dir.part0.0123456789abcdef.tmp").mkdir()
        assert clean_partials(outbox) == len(ours)
        assert sorted(p.name for p in outbox.iterdir()) == sorted([*theirs, ".dir.part0.0123456789abcdef.tmp"])
        assert clean_partials(outbox) == 0

    def test_leftover_of_an_interrupted_download_is_cleaned(
        self, origin: Origin, http: httpx.Client, outbox: Path
    ) -> None:
        """The temporary name a download really uses is one clean_partials recognises."""
        seen: list[str] = []

        def serve(h: _Handler, q: dict[str, str]) -> None:
            h.send_response(200)
            h.send_header("Content-Length", "2")
            h.end_headers()
            h.wfile.write(b"a")
            h.wfile.flush()
            # Record the partial's name while the client is still inside the body.
            for _ in range(200):
                seen.extend(p.name for p in outbox.iterdir())
                if seen:
                    break
                threading.Event().wait(0.01)
            h.wfile.write(b"b")

        download_outputs(http, [origin.route("/o/0", serve)], outbox, "clip")
        assert seen and all(n.startswith(".clip.part0.") and n.endswith(".tmp") for n in seen)
        (outbox / seen[0]).write_bytes(b"left by a crash")
        assert clean_partials(outbox) == 1

    def test_missing_outbox_is_an_outbox_error(self, tmp_path: Path) -> None:
        """A vanished outbox is reported as OutboxError."""
        with pytest.raises(OutboxError):
            clean_partials(tmp_path / "gone")
