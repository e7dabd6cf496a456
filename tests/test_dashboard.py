"""The dashboard's pages, sessions, outputs, live stream and submit form, asked over HTTP (httpx) from a real daemon
following real requests at the simulator, its uvicorn on a loopback port. The browser's own view is in
tests/test_dashboard_browser.py."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from runwatch.jobs.job import Job
from runwatch.jobs.states import State
from runwatch.simulator import Fault, Simulator
from runwatch.store import Journal
from runwatch.web.app import CSP
from runwatch.web.live import MAX_IDS, MAX_STREAMS

from .conftest import SAMPLES
from .rig import SEED_REQUESTS, Rig
from .webrig import KEY, SIGNATURE, SIGNED, TOKEN, busy_run, job_id, leaks, served

VIDEO = SEED_REQUESTS["text_to_video"][0]  # veo3.1, 8 s: 320 credits
SPEECH = SEED_REQUESTS["text_to_speech"][0]
I2V, I2V_MEDIA = SEED_REQUESTS["image_to_video"]


def client(rig: Rig) -> httpx.Client:
    assert rig.daemon is not None and rig.daemon.web is not None
    return httpx.Client(base_url=f"http://127.0.0.1:{rig.daemon.web.port}", timeout=30.0)


def log_in(http: httpx.Client) -> None:
    answer = http.post("/login", data={"token": TOKEN, "next": "/jobs"})
    assert answer.status_code == 303 and answer.headers["location"] == "/jobs"


def csrf_of(http: httpx.Client, page: str = "/") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', http.get(page).text)
    assert found, "the page has no CSRF token: not logged in?"
    return found.group(1)


class TestPages:
    def test_every_page_has_the_strict_policy_and_no_inline_code(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """Every page answers 200 with a Content-Security-Policy that allows no inline script or style and
        nothing from another origin; no page holds an inline script, a style attribute, an event handler
        attribute, or an asset from another site."""
        rig = served(rig_factory, sim, tmp_path, inbox={"approve_above": 10})
        rig.drop("big", VIDEO)
        rig.wait("big", {"held"})
        with client(rig) as http:
            log_in(http)
            pages = ["/", "/jobs", "/jobs?state=held", f"/jobs/{job_id(rig, 'big')}", "/submit", "/login"]
            for page in pages:
                answer = http.get(page)
                assert answer.status_code == 200, page
                assert answer.headers["content-security-policy"] == CSP
                assert "unsafe-inline" not in CSP and "script-src 'self'" in CSP and "style-src 'self'" in CSP
                assert answer.headers["x-frame-options"] == "DENY"
                html = answer.text
                assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == [], page
                assert re.findall(r"\sstyle\s*=", html) == [], page
                assert re.findall(r"\son[a-z]+\s*=", html) == [], page
                assert re.findall(r'(?:src|href)="(?:https?:)?//', html) == [], page
            for asset, kind in (("/static/dash.js", "javascript"), ("/static/dash.css", "text/css")):
                answer = http.get(asset)
                assert answer.status_code == 200 and kind in answer.headers["content-type"]

    def test_a_jobs_page(self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path) -> None:
        """A failed job's page shows its timeline (every state with its time), the error with its code, the
        credits, the status document, and the request with its local media as a link to the file runwatch
        kept."""
        sim.faults.add(Fault("fail", endpoint="image_to_video", count=1, failure_code="SAFETY.INPUT.IMAGE"))
        rig = served(rig_factory, sim, tmp_path)
        rig.drop("shot", I2V, media=I2V_MEDIA)
        status = rig.wait("shot")
        assert status["state"] == "failed"
        with client(rig) as http:
            html = http.get(f"/jobs/{job_id(rig, 'shot')}").text
            states = re.findall(r'<span class="badge state-([a-z_]+)">', html)
            assert states[0] == "accepted" and states[-1] == "failed"
            assert {"uploading", "submitted"} <= set(states)
            assert len(re.findall(r"<time datetime=", html)) == len(states)
            assert "SAFETY.INPUT.IMAGE" in html and "Estimated</dt><dd>25" in html
            assert f"&#34;task_id&#34;: &#34;{status['task_id']}&#34;" in html  # the status document
            link = re.search(r'<a href="(/jobs/[^"]+/media/still\.jpg)"', html)
            assert link, "the request's media is not linked"
            assert http.get(link.group(1)).content == (SAMPLES / "still.jpg").read_bytes()
            assert http.get(link.group(1).replace("still.jpg", "..%2Frunwatch.toml")).status_code == 404

    def test_jobs_table_filters_and_pages(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """The jobs table shows 50 jobs a page, newest first; "older" pages through every job once; the state,
        inbox and name filters narrow it; a state that is not one is said on the page."""
        (tmp_path / "state").mkdir()
        journal = Journal(tmp_path / "state" / "journal.sqlite3")
        journal.add_many(
            [
                Job(
                    id=f"2026T{n:05d}",
                    name=f"shot-{n:03d}",
                    inbox="inbox",
                    format="json",
                    state=State.FAILED if n % 10 == 0 else State.SUCCEEDED,
                    endpoint="text_to_speech",
                    created_at="2026-12-01T10:00:00.000Z",
                )
                for n in range(120)
            ]
        )
        journal.close()
        rig = served(rig_factory, sim, tmp_path)
        with client(rig) as http:
            seen: list[str] = []
            page = "/jobs"
            while page:
                html = http.get(page).text
                rows = re.findall(r'<tr data-job="([^"]+)">', html)
                assert len(rows) <= 50
                seen += rows
                older = re.search(r'<a href="([^"]+)" rel="next">', html)
                page = older.group(1).replace("&amp;", "&") if older else ""
            assert seen == [f"2026T{n:05d}" for n in reversed(range(120))]
            failed = re.findall(r'<tr data-job="([^"]+)">', http.get("/jobs?state=failed").text)
            assert failed == [f"2026T{n:05d}" for n in reversed(range(0, 120, 10))]
            named = http.get("/jobs", params={"name": "shot-007", "inbox": "inbox"}).text
            assert re.findall(r'<tr data-job="([^"]+)">', named) == ["2026T00007"]
            bad = http.get("/jobs?state=done").text
            assert "state &#39;done&#39; is not a state" in bad


class TestOutputs:
    def test_served_from_the_outbox_only(self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path) -> None:
        """A job's output is served from its outbox, with byte ranges for players; a name that is not one of its
        outputs, a path that climbs out, and an output replaced by a link to a file outside the outbox are 404."""
        rig = served(rig_factory, sim, tmp_path)
        rig.drop("film", VIDEO)
        status = rig.wait("film")
        ident = job_id(rig, "film")
        output = rig.outbox / status["outputs"][0]["file"]
        (rig.outbox / "other.mp4").write_bytes(b"not this job's")
        secret = tmp_path / "secret.mp4"
        secret.write_bytes(b"outside the outbox")
        with client(rig) as http:
            whole = http.get(f"/jobs/{ident}/files/{output.name}")
            assert whole.status_code == 200 and whole.content == output.read_bytes()
            assert whole.headers["content-type"] == "video/mp4"
            part = http.get(f"/jobs/{ident}/files/{output.name}", headers={"Range": "bytes=0-99"})
            assert part.status_code == 206 and part.content == output.read_bytes()[:100]
            assert http.get(f"/jobs/{ident}/files/other.mp4").status_code == 404
            assert http.get(f"/jobs/{ident}/files/..%2Fsecret.mp4").status_code == 404
            assert http.get(f"/jobs/{ident}/files/%2E%2E/secret.mp4").status_code == 404
            assert http.get(f"/jobs/no-such-job/files/{output.name}").status_code == 404
            output.unlink()
            os.symlink(secret, output)
            escaped = http.get(f"/jobs/{ident}/files/{output.name}")
        assert escaped.status_code == 404 and b"outside" not in escaped.content


class TestSessions:
    def test_buttons_need_a_session_csrf_and_a_confirmation(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """A button's POST without a session, or with the session but without its CSRF token, is refused and
        reaches no engine; a wrong token does not log in; with both, the first POST asks for confirmation
        naming the credits, and the confirmed one approves the request, which then succeeds."""
        rig = served(rig_factory, sim, tmp_path, inbox={"approve_above": 10})
        rig.drop("big", VIDEO)
        rig.wait("big", {"held"})
        ident = job_id(rig, "big")
        approve = f"/jobs/{ident}/approve"
        with client(rig) as http:
            assert http.post(approve, data={"confirmed": "1"}).status_code == 403
            wrong = http.post("/login", data={"token": "not-the-token", "next": "/"})
            assert wrong.status_code == 401 and not wrong.cookies
            log_in(http)
            cookie = next(c for c in http.cookies.jar if c.name.startswith("runwatch_session_"))
            assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") == "strict"
            assert http.post(approve, data={"confirmed": "1"}).status_code == 403
            assert http.post(approve, data={"confirmed": "1", "csrf": "0" * 64}).status_code == 403
            journal = rig.journal()
            try:
                assert journal.pending_commands() == [] and journal.get(ident).state == "held"  # type: ignore[union-attr]
            finally:
                journal.close()
            csrf = csrf_of(http, f"/jobs/{ident}")
            asked = http.post(approve, data={"csrf": csrf})
            assert asked.status_code == 200 and "Approve big?" in asked.text and "320 credits" in asked.text
            assert (rig.status("big") or {})["state"] == "held"
            done = http.post(approve, data={"csrf": csrf, "confirmed": "1"})
            assert done.status_code == 303
            assert "answered “approved”" in http.get(done.headers["location"]).text
        assert rig.wait("big")["state"] == "succeeded"

    def test_login_goes_to_own_pages_only(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """After logging in, a "next" that names another site goes to the overview instead."""
        rig = served(rig_factory, sim, tmp_path)
        with client(rig) as http:
            for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
                answer = http.post("/login", data={"token": TOKEN, "next": target})
                assert answer.status_code == 303 and answer.headers["location"] == "/"

    def test_the_cookie_is_secure_over_tls(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """A login through a TLS proxy (X-Forwarded-Proto: https) gets a Secure cookie; one over plain HTTP on
        loopback does not (the browser would never send it back)."""
        rig = served(rig_factory, sim, tmp_path)
        with client(rig) as http:
            tls = http.post("/login", data={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"})
            plain = http.post("/login", data={"token": TOKEN})
        assert "; secure" in tls.headers["set-cookie"].lower()
        assert "secure" not in plain.headers["set-cookie"].lower()

    def test_another_sites_form_is_refused(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """A form posted from another site's page (its Origin) is 403 even with a valid session and CSRF."""
        rig = served(rig_factory, sim, tmp_path, inbox={"approve_above": 10})
        rig.drop("big", VIDEO)
        rig.wait("big", {"held"})
        ident = job_id(rig, "big")
        with client(rig) as http:
            log_in(http)
            csrf = csrf_of(http, f"/jobs/{ident}")
            answer = http.post(
                f"/jobs/{ident}/approve",
                data={"csrf": csrf, "confirmed": "1"},
                headers={"Origin": "http://evil.example"},
            )
        assert answer.status_code == 403 and (rig.status("big") or {})["state"] == "held"

    def test_without_a_token_the_dashboard_only_shows(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """With no HTTP token set, the dashboard on loopback shows everything but its buttons are off: no login
        is possible and a write is refused."""
        rig = served(rig_factory, sim, tmp_path, token=False, inbox={"approve_above": 10})
        rig.drop("big", VIDEO)
        rig.wait("big", {"held"})
        ident = job_id(rig, "big")
        with client(rig) as http:
            page = http.get(f"/jobs/{ident}").text
            assert 'id="approve-button" disabled' in page and "no HTTP token is set" in page
            assert "there is nothing to log in with" in http.get("/login").text
            assert http.post("/login", data={"token": "anything"}).status_code == 401
            assert http.post(f"/jobs/{ident}/approve", data={"confirmed": "1"}).status_code == 403
        assert (rig.status("big") or {})["state"] == "held"

    def test_beyond_loopback_reads_need_a_session(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """A server listening beyond loopback sends a browser without a session to the login form, and serves
        no output or live stream to it; once logged in, the pages show."""
        rig = served(rig_factory, sim, tmp_path, listen="0.0.0.0:0")
        rig.drop("hello", SPEECH)
        status = rig.wait("hello")
        ident = job_id(rig, "hello")
        with client(rig) as http:
            first = http.get(f"/jobs/{ident}")
            assert first.status_code == 303 and first.headers["location"].startswith("/login?next=")
            assert http.get(f"/jobs/{ident}/files/{status['outputs'][0]['file']}").status_code == 401
            assert http.get(f"/live?ids={ident}").status_code == 401
            log_in(http)
            assert http.get(f"/jobs/{ident}").status_code == 200
            assert http.get(f"/jobs/{ident}/files/{status['outputs'][0]['file']}").status_code == 200


class TestLive:
    def test_pushes_progress_and_ends_with_the_daemon(
        self, rig_factory: Callable[..., Rig], paced_sim: Simulator, tmp_path: Path
    ) -> None:
        """The live stream of a running job pushes its progress as it changes (at most once a second); when the
        daemon stops, the stream ends and the server's thread with it."""
        rig = served(rig_factory, paced_sim, tmp_path)
        rig.drop("film", VIDEO)
        rig.wait("film", {"running"})
        ident = job_id(rig, "film")
        assert rig.daemon is not None and rig.daemon.web is not None
        web = rig.daemon.web
        seen: list[float] = []
        with client(rig) as http, http.stream("GET", f"/live?ids={ident}") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            for line in lines:
                if line.startswith("data: "):
                    job = json.loads(line.removeprefix("data: "))["jobs"][ident]
                    assert job["state"] == "running"
                    seen.append(job["progress"])
                    if len(set(seen)) >= 2:
                        break
            stopper = threading.Thread(target=rig.stop)
            stopper.start()
            for _ in lines:  # the loop ends: the server closed the stream
                pass
            stopper.join(30)
        assert len(set(seen)) >= 2 and seen == sorted(seen)
        assert web._thread is not None and not web._thread.is_alive()

    def test_streams_are_bounded(self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path) -> None:
        """A stream watches at most MAX_IDS jobs, however many it names, and at most MAX_STREAMS streams are open
        at once: one more is refused 503 until one closes."""
        (tmp_path / "state").mkdir()
        journal = Journal(tmp_path / "state" / "journal.sqlite3")
        ids = [f"2026T{n:05d}" for n in range(MAX_IDS + 50)]
        journal.add_many(
            [
                Job(id=i, name=f"n{n}", inbox="inbox", format="json", state=State.SUCCEEDED, created_at="2026-12-01")
                for n, i in enumerate(ids)
            ]
        )
        journal.close()
        rig = served(rig_factory, sim, tmp_path)
        with client(rig) as http, contextlib.ExitStack() as streams:
            first = streams.enter_context(http.stream("GET", "/live", params={"ids": ",".join(ids)}))
            lines = first.iter_lines()
            data = next(line for line in lines if line.startswith("data: "))
            assert len(json.loads(data.removeprefix("data: "))["jobs"]) == MAX_IDS
            reading = []  # kept: a line iterator dropped half-way closes its connection
            for _ in range(MAX_STREAMS - 1):
                more = streams.enter_context(http.stream("GET", "/live", params={"ids": ids[0]}))
                reading.append(more.iter_lines())
                assert next(reading[-1]).startswith("retry:")  # open and counted
            assert http.get("/live", params={"ids": ids[0]}).status_code == 503
            streams.close()
            deadline = time.monotonic() + 10
            while True:  # the server hears of the closed streams as it goes on
                with http.stream("GET", "/live", params={"ids": ids[0]}) as again:
                    if again.status_code == 200:
                        break
                assert time.monotonic() < deadline, "closed streams still count"
                time.sleep(0.1)


class TestSubmitForm:
    def test_errors_name_the_field(self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path) -> None:
        """A form with no name, extra fields that are not a JSON object, a bad duration, and media without the
        field they go in lands nothing; the page names each field."""
        rig = served(rig_factory, sim, tmp_path)
        with client(rig) as http:
            log_in(http)
            answer = http.post(
                "/submit",
                data={"csrf": csrf_of(http, "/submit"), "inbox": "inbox", "name": "", "extra": "[1]", "duration": "x"},
                files={"media": ("still.jpg", (SAMPLES / "still.jpg").read_bytes(), "image/jpeg")},
            )
        assert answer.status_code == 400
        named = re.findall(r"<li><code>([a-z_]+)</code>", answer.text)
        assert set(named) == {"name", "extra", "duration", "media_field"}
        assert [p.name for p in rig.inbox.iterdir() if p.name != ".runwatch"] == []  # .runwatch: the work area

    def test_lands_as_a_dropped_file(self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path) -> None:
        """A submitted request and its image land in the inbox and take the path every request takes (here the
        inbox's approval rule holds it); a second one of the same name while it waits is refused, naming the
        field; the waiting page leads to the request's page."""
        rig = served(rig_factory, sim, tmp_path, inbox={"approve_above": 10})
        fields = {
            "inbox": "inbox",
            "name": "waves",
            "endpoint": "image_to_video",
            "model": "gen4_turbo",
            "promptText": "waves",
            "ratio": "1280:720",
            "duration": "5",
            "media_field": "promptImage",
        }
        image = {"media": ("still.jpg", (SAMPLES / "still.jpg").read_bytes(), "image/jpeg")}
        with client(rig) as http:
            log_in(http)
            csrf = csrf_of(http, "/submit")
            answer = http.post("/submit", data={**fields, "csrf": csrf}, files=image)
            assert answer.status_code == 303 and answer.headers["location"].startswith("/submitted?")
            status = rig.wait("waves", {"held"})
            assert status["estimated_credits"] == 25
            waiting = http.get(answer.headers["location"])
            assert waiting.status_code == 303 and waiting.headers["location"] == f"/jobs/{job_id(rig, 'waves')}"
            again = http.post("/submit", data={**fields, "csrf": csrf}, files=image)
        assert again.status_code == 400 and "<code>name</code>: waves is still held" in again.text
        journal = rig.journal()
        try:
            job = journal.find("waves")
            assert job is not None
            body = {k: v for k, v in job.body.items() if k != "promptImage"}
            assert body == {"model": "gen4_turbo", "promptText": "waves", "ratio": "1280:720", "duration": 5}
            assert job.endpoint == "image_to_video"
        finally:
            journal.close()
        assert not [p for p in rig.inbox.iterdir() if p.name.endswith(".tmp")]

    def test_too_large_is_refused_before_reading(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """A submission announcing more than the limit is answered 413 without the server reading its body."""
        rig = served(rig_factory, sim, tmp_path)
        assert rig.daemon is not None and rig.daemon.web is not None
        port = rig.daemon.web.port
        with client(rig) as http:
            log_in(http)
            cookie = "; ".join(f"{c.name}={c.value}" for c in http.cookies.jar)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                f"POST /submit HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n"
                "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 9000000000\r\n\r\n".encode()
            )
            head = sock.recv(4096).decode("latin-1")
        assert head.startswith("HTTP/1.1 413")


class TestNothingSecretIsShown:
    def test_busy_run_shows_no_secret(self, rig_factory: Callable[..., Rig], s3: Any, tmp_path: Path) -> None:
        """Media through presigned S3 URLs, Runway failures quoting a signed URL, and every page of the dashboard
        (overview, jobs, each job's page, its live stream) read again and again while it runs: no byte holds the
        API key, a signature or the HTTP token; the same scan finds each of them when they are there."""
        planted = (SIGNATURE, "AKIAEXAMPLEKEY12", TOKEN)
        shown: list[bytes] = []

        def read_pass(http: httpx.Client) -> None:
            for page in ("/", "/jobs", "/submit"):
                shown.append(http.get(page).content)
            for ident in re.findall(r'<tr data-job="([^"]+)">', http.get("/jobs").text):
                shown.append(http.get(f"/jobs/{ident}").content)
                with http.stream("GET", f"/live?ids={ident}") as stream:
                    for line in stream.iter_lines():
                        if line.startswith("data: "):
                            shown.append(line.encode())
                            break

        def read_everything(rig: Rig, stop: threading.Event) -> None:
            with client(rig) as http:
                log_in(http)
                while not stop.is_set():
                    read_pass(http)

        def last_pass(rig: Rig) -> None:
            # Once every request has ended: the reader may have stopped before it saw the last ends.
            with client(rig) as http:
                log_in(http)
                read_pass(http)

        ends = busy_run(rig_factory, s3, tmp_path, read_everything, last_pass)
        assert ends["image_to_video"] == "succeeded" and ends["text_to_video"] == "failed"
        data = b"\n".join(shown)
        assert b"ASSET.INVALID" in data and b"REDACTED" in data  # the pages did show the failures
        assert leaks(data, KEY, planted) == []
        control = data + f"{KEY} {SIGNED} {TOKEN}".encode()
        found = leaks(control, KEY, planted)
        assert found[0].startswith("the API key") and {f"planted {p[:12]}" for p in planted} <= set(found)
