"""The HTTP server inside the daemon: health, readiness, metrics and the jobs API, served by uvicorn on loopback
from a real daemon following real requests at the simulator, asked with httpx as any client would."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runwatch import __version__, notifications
from runwatch.config import parse_config
from runwatch.daemon import Daemon
from runwatch.errors import ConfigError
from runwatch.simulator import Fault, Simulator
from runwatch.web.security import load_token

from .conftest import SAMPLES
from .rig import SEED_REQUESTS, Rig
from .test_notifications import Receiver, receiver_factory, with_notify
from .webrig import KEY, SIGNATURE, TOKEN, busy_run, job_id, leaks, served

SPEECH = SEED_REQUESTS["text_to_speech"][0]
VIDEO = SEED_REQUESTS["text_to_video"][0]  # veo3.1, 8 s: 320 credits
DASHBOARD = Path(__file__).resolve().parent.parent / "contrib" / "grafana-dashboard.json"
SFX = SEED_REQUESTS["sound_effect"][0]
__all__ = ["receiver_factory"]  # a fixture, used by name


def client(rig: Rig, **headers: str) -> httpx.Client:
    assert rig.daemon is not None and rig.daemon.web is not None
    return httpx.Client(base_url=rig.daemon.web.url, headers=headers, timeout=30.0)


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.05)


class TestHealth:
    def test_healthz_while_the_loop_turns(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """/healthz answers 200 while the main loop turns, saying how long ago it last did."""
        rig = served(rig_factory, sim, tmp_path)
        with client(rig) as http:
            answer = http.get("/healthz")
        assert answer.status_code == 200 and answer.json()["status"] == "ok"

    def test_healthz_when_the_loop_is_stuck(self, sim: Simulator, tmp_path: Path) -> None:
        """A main loop that stops turning makes /healthz answer 503 (an orchestrator restarts the daemon)."""
        rig = Rig(tmp_path, sim, http={"listen": "127.0.0.1:0"})
        daemon = Daemon(rig.config, api_key=sim.key)
        assert daemon.web is not None
        daemon.web.stale_after = 0.5
        daemon.start()
        stop, release = threading.Event(), threading.Event()
        thread = threading.Thread(target=daemon.run, args=(stop,), kwargs={"on_tick": lambda d: release.wait()})
        thread.start()
        try:
            with httpx.Client(base_url=daemon.web.url) as http:
                wait_for(lambda: http.get("/healthz").status_code == 503)
                assert http.get("/healthz").json()["status"] == "stuck"
                release.set()
        finally:
            stop.set()
            release.set()
            thread.join(30)

    def test_readyz(self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path) -> None:
        """/readyz is 200 while the inbox is watched and Runway answers; once the inbox's folder is gone it is
        503 with the reason as JSON."""
        rig = served(rig_factory, sim, tmp_path)
        with client(rig) as http:
            ready = http.get("/readyz")
            assert ready.status_code == 200 and ready.json() == {"ready": True, "reasons": []}
            rig.inbox.rename(tmp_path / "unmounted")
            wait_for(lambda: http.get("/readyz").status_code == 503)
            reasons = http.get("/readyz").json()["reasons"]
        assert any("is paused" in reason and str(rig.inbox) in reason for reason in reasons), reasons

    def test_readyz_when_runway_is_silent(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """Calls to Runway that get no answer for a while make /readyz 503, naming the call."""
        rig = served(rig_factory, sim, tmp_path)
        assert rig.daemon is not None and rig.daemon.web is not None
        rig.daemon.web.metrics.contact.grace = 0.0
        sim.faults.add(Fault("error", status=503, endpoint="text_to_speech"))
        sim.faults.add(Fault("error", status=503, endpoint="organization"))
        rig.drop("hello", SPEECH)
        with client(rig) as http:
            wait_for(lambda: http.get("/readyz").status_code == 503)
            reasons = http.get("/readyz").json()["reasons"]
        assert any(r.startswith("Runway has not answered") and "HTTP 503" in r for r in reasons), reasons


class TestJobs:
    def test_list_filter_and_pages(self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path) -> None:
        """/api/v1/jobs lists status documents plus job_id and inbox, newest first; state, inbox and name filter;
        limit and the cursor page through all of them without repeats."""
        rig = served(rig_factory, sim, tmp_path, inbox={"approve_above": 100})
        for n in range(5):
            rig.drop(f"say{n}", SPEECH)
        rig.drop("big", VIDEO)
        for n in range(5):
            rig.wait(f"say{n}")
        rig.wait("big", {"held"})
        with client(rig) as http:
            everything = http.get("/api/v1/jobs").json()
            assert {j["name"] for j in everything["jobs"]} == {"say0", "say1", "say2", "say3", "say4", "big"}
            assert everything["next_cursor"] is None
            first = everything["jobs"][0]
            assert set(first) >= {"job_id", "inbox", "name", "state", "endpoint", "model", "outputs", "error"}
            assert first["inbox"] == "inbox"
            held = http.get("/api/v1/jobs", params={"state": "held"}).json()["jobs"]
            assert [j["name"] for j in held] == ["big"] and held[0]["error"]["code"]
            named = http.get("/api/v1/jobs", params={"name": "say3", "inbox": "inbox"}).json()["jobs"]
            assert [j["name"] for j in named] == ["say3"] and named[0]["state"] == "succeeded"
            assert http.get("/api/v1/jobs", params={"inbox": "other"}).json()["jobs"] == []
            seen: list[str] = []
            params: dict[str, Any] = {"limit": 4}
            while True:
                page = http.get("/api/v1/jobs", params=params).json()
                seen += [j["job_id"] for j in page["jobs"]]
                if page["next_cursor"] is None:
                    break
                params["cursor"] = page["next_cursor"]
            assert seen == [j["job_id"] for j in everything["jobs"]]
            bad = http.get("/api/v1/jobs", params={"state": "done"})
            assert bad.status_code == 400 and "state 'done'" in bad.json()["error"]
            assert http.get("/api/v1/jobs", params={"limit": "0"}).status_code == 400
            assert http.get("/api/v1/jobs", params={"colour": "red"}).status_code == 400

    def test_one_job(self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path) -> None:
        """/api/v1/jobs/{job_id} is the job's status document, as the status file says it; an unknown id is 404."""
        rig = served(rig_factory, sim, tmp_path)
        rig.drop("hello", SPEECH)
        status = rig.wait("hello")
        ident = job_id(rig, "hello")
        with client(rig) as http:
            one = http.get(f"/api/v1/jobs/{ident}").json()
            missing = http.get("/api/v1/jobs/no-such-job")
        assert one["job_id"] == ident and one["inbox"] == "inbox"
        assert {k: v for k, v in one.items() if k not in ("job_id", "inbox")} == status
        assert missing.status_code == 404 and "no-such-job" in missing.json()["error"]


class TestCommands:
    def test_approve_held(self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path) -> None:
        """POST approve of a held request answers 200 with the engine's word, and the request ends succeeded."""
        rig = served(rig_factory, sim, tmp_path, inbox={"approve_above": 10})
        rig.drop("big", VIDEO)
        rig.wait("big", {"held"})
        with client(rig, **auth()) as http:
            answer = http.post(f"/api/v1/jobs/{job_id(rig, 'big')}/approve")
        assert answer.status_code == 200 and answer.json()["answer"] == "approved"
        status = rig.wait("big")
        assert status["state"] == "succeeded"
        rig.check_outputs(status)

    def test_cancel_running(self, rig_factory: Callable[..., Rig], slow_sim: Simulator, tmp_path: Path) -> None:
        """POST cancel of a task running at Runway answers 200 and the request ends cancelled, at Runway too."""
        rig = served(rig_factory, slow_sim, tmp_path)
        rig.drop("film", VIDEO)
        rig.wait("film", {"pending", "running", "throttled"})
        with client(rig, **auth()) as http:
            answer = http.post(f"/api/v1/jobs/{job_id(rig, 'film')}/cancel")
        assert answer.status_code == 200 and answer.json()["answer"] in ("cancelling", "cancelled")
        assert rig.wait("film")["state"] == "cancelled"
        assert len(slow_sim.requests("/v1/tasks/", method="DELETE")) == 1

    def test_retry_failed(self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path) -> None:
        """POST retry of a failed request answers 200 and the new attempt succeeds."""
        sim.faults.add(Fault("fail", endpoint="text_to_speech", count=1, failure_code="INTERNAL.BAD_OUTPUT.CODE01"))
        rig = served(rig_factory, sim, tmp_path)
        rig.drop("hello", SPEECH)
        assert rig.wait("hello")["state"] == "failed"
        with client(rig, **auth()) as http:
            answer = http.post(f"/api/v1/jobs/{job_id(rig, 'hello')}/retry")
        assert answer.status_code == 200 and answer.json()["answer"] == "resubmitting"
        wait_for(lambda: (rig.status("hello") or {}).get("state") == "succeeded")

    def test_refused_and_unknown(self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path) -> None:
        """A command the engine refuses answers 409 with its reason; an unknown job 404; an unknown action 404."""
        rig = served(rig_factory, sim, tmp_path)
        rig.drop("hello", SPEECH)
        assert rig.wait("hello")["state"] == "succeeded"
        ident = job_id(rig, "hello")
        with client(rig, **auth()) as http:
            refused = http.post(f"/api/v1/jobs/{ident}/approve")
            unknown = http.post("/api/v1/jobs/no-such-job/cancel")
            action = http.post(f"/api/v1/jobs/{ident}/delete")
        assert refused.status_code == 409 and "held" in refused.json()["error"]
        assert unknown.status_code == 404 and action.status_code == 404


def routes(rig: Rig, ident: str) -> list[tuple[str, str]]:
    """Every (method, path) the server routes under /api/, /healthz, /readyz and /metrics, with ``ident`` for
    a job id: read from the running app itself, so a route added later is covered too."""
    assert rig.daemon is not None and rig.daemon.web is not None and rig.daemon.web._server is not None
    app = rig.daemon.web._server.config.app.app  # the Starlette app behind the guard
    found = []
    for route in app.routes:
        path = route.path
        if path.startswith("/api/") or path in ("/healthz", "/readyz", "/metrics"):
            for method in sorted(set(route.methods) - {"HEAD"}):
                found.append((method, path.replace("{job_id}", ident)))
    return found


class TestEveryRoute:
    def test_version(self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path) -> None:
        """GET /api/v1 names the runwatch version answering."""
        rig = served(rig_factory, sim, tmp_path)
        with client(rig) as http:
            answer = http.get("/api/v1")
        assert answer.status_code == 200 and answer.json() == {"runwatch_version": __version__}

    def test_foreign_origin_refused_on_every_route(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """Every route refuses a request whose Origin is another site's with 403, token or not, and nothing
        reaches the engine; the same requests without that Origin get through (the control)."""
        rig = served(rig_factory, sim, tmp_path, inbox={"approve_above": 10})
        rig.drop("big", VIDEO)
        rig.wait("big", {"held"})
        ident = job_id(rig, "big")
        every = routes(rig, ident)
        assert {("POST", f"/api/v1/jobs/{ident}/{kind}") for kind in ("approve", "cancel", "retry")} <= set(every)
        assert {("GET", "/api/v1/jobs"), ("GET", f"/api/v1/jobs/{ident}"), ("GET", "/metrics")} <= set(every)
        with client(rig, **auth()) as http:
            for method, path in every:
                answer = http.request(method, path, headers={"Origin": "http://evil.example"})
                assert answer.status_code == 403, (method, path, answer.status_code)
                assert "another site" in answer.json()["error"]
            journal = rig.journal()
            try:
                assert journal.pending_commands() == []
            finally:
                journal.close()
            assert rig.status("big")["state"] == "held"  # type: ignore[index]
            for method, path in every:
                if method == "GET":
                    answer = http.request(method, path)
                    assert answer.status_code in (200, 503), (method, path, answer.status_code)

    def test_writes_need_the_token_on_every_route(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """On loopback, every route that writes answers 401 without the token (and with a wrong one) and
        records no command; every route that reads answers without one."""
        rig = served(rig_factory, sim, tmp_path, inbox={"approve_above": 10})
        rig.drop("big", VIDEO)
        rig.wait("big", {"held"})
        every = routes(rig, job_id(rig, "big"))
        writes = [(m, p) for m, p in every if m != "GET"]
        assert len(writes) == 3
        with client(rig) as http:
            for method, path in writes:
                assert http.request(method, path).status_code == 401, (method, path)
                wrong = http.request(method, path, headers={"Authorization": "Bearer " + "x" * len(TOKEN)})
                assert wrong.status_code == 401, (method, path)
            for method, path in every:
                if method == "GET":
                    assert http.request(method, path).status_code in (200, 503), (method, path)
        journal = rig.journal()
        try:
            assert journal.pending_commands() == [] and journal.find("big").state == "held"  # type: ignore[union-attr]
        finally:
            journal.close()

    def test_beyond_loopback_every_route_needs_the_token(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """Listening on every address, every route, reads included, answers 401 without the token and serves
        with it (prompts and spending are nobody else's business on a network)."""
        token_file = tmp_path / "http-token"
        token_file.write_text(TOKEN)
        rig = rig_factory(sim, http={"listen": "0.0.0.0:0", "token_file": str(token_file)}).start()
        rig.drop("hello", SPEECH)
        rig.wait("hello")
        assert rig.daemon is not None and rig.daemon.web is not None
        every = routes(rig, job_id(rig, "hello"))
        with httpx.Client(base_url=f"http://127.0.0.1:{rig.daemon.web.port}", timeout=30.0) as http:
            for method, path in every:
                refused = http.request(method, path)
                assert refused.status_code == 401, (method, path, refused.status_code)
                assert refused.headers["www-authenticate"].startswith("Bearer")
            for method, path in every:
                if method == "GET":
                    assert http.request(method, path, headers=auth()).status_code in (200, 503), (method, path)
            retry = http.post(f"/api/v1/jobs/{job_id(rig, 'hello')}/retry", headers=auth())
        assert retry.status_code == 409  # through the guard to the engine, which refuses: it succeeded


class TestSecurity:
    def test_writes_need_the_token(self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path) -> None:
        """A write without the token, or with another one, is 401 and reaches no engine; reads on loopback need
        none."""
        rig = served(rig_factory, sim, tmp_path, inbox={"approve_above": 10})
        rig.drop("big", VIDEO)
        rig.wait("big", {"held"})
        ident = job_id(rig, "big")
        with client(rig) as http:
            assert http.get("/api/v1/jobs").status_code == 200
            none = http.post(f"/api/v1/jobs/{ident}/approve")
            wrong = http.post(f"/api/v1/jobs/{ident}/approve", headers={"Authorization": "Bearer nope"})
        assert none.status_code == 401 and wrong.status_code == 401
        assert none.headers["www-authenticate"].startswith("Bearer")
        journal = rig.journal()
        try:
            assert journal.pending_commands() == [] and journal.get(ident).state == "held"  # type: ignore[union-attr]
        finally:
            journal.close()

    def test_foreign_host_and_origin(self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path) -> None:
        """A Host or an Origin that is not the server's own is 403, even with the token (DNS rebinding, another
        site's page); the server's own Origin and localhost pass."""
        rig = served(rig_factory, sim, tmp_path)
        assert rig.daemon is not None and rig.daemon.web is not None
        port = rig.daemon.web.port
        with client(rig, **auth()) as http:
            assert http.get("/api/v1/jobs", headers={"Host": "evil.example:80"}).status_code == 403
            assert http.get("/api/v1/jobs", headers={"Host": f"evil.example:{port}"}).status_code == 403
            assert http.get("/metrics", headers={"Origin": "http://evil.example"}).status_code == 403
            assert http.post("/api/v1/jobs/x/cancel", headers={"Origin": "null"}).status_code == 403
            assert http.get("/healthz", headers={"Origin": f"http://127.0.0.1:{port}"}).status_code == 200
            assert http.get("/healthz", headers={"Host": f"localhost:{port}"}).status_code == 200

    def test_beyond_loopback_needs_a_token(self, sim: Simulator, tmp_path: Path) -> None:
        """Listening beyond loopback without a token refuses to start, naming http.listen."""
        rig = Rig(tmp_path, sim, http={"listen": "0.0.0.0:0"})
        with pytest.raises(ConfigError) as caught:
            Daemon(rig.config, api_key=sim.key)
        assert "http.listen" in str(caught.value) and "token" in str(caught.value)

    def test_token_sources_in_order(self, tmp_path: Path) -> None:
        """The token comes from $RUNWATCH_HTTP_TOKEN, then the systemd credential, then http.token_file; a
        token file that is named but missing is an error naming the key."""
        (tmp_path / "creds").mkdir()
        (tmp_path / "creds" / "runwatch_http_token").write_text("from-credential\n")
        (tmp_path / "file").write_text("  from-file\n")
        base = {"state": {"dir": str(tmp_path)}, "inbox": [{"path": "i", "outbox": "o"}]}
        config = parse_config({**base, "http": {"token_file": "file"}}, "r.toml", env={}, base=tmp_path)
        creds = {"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")}
        assert load_token(config, {"RUNWATCH_HTTP_TOKEN": "from-env", **creds}) == "from-env"
        assert load_token(config, creds) == "from-credential"
        assert load_token(config, {}) == "from-file"
        missing = parse_config({**base, "http": {"token_file": "gone"}}, "r.toml", env={}, base=tmp_path)
        with pytest.raises(ConfigError) as caught:
            load_token(missing, {})
        assert "http.token_file" in str(caught.value) and "no such file" in str(caught.value)

    def test_token_never_from_the_config(self, tmp_path: Path) -> None:
        """A token written in [http] itself is refused, saying where it goes instead."""
        data = {"state": {"dir": str(tmp_path)}, "http": {"token": "abc"}, "inbox": [{"path": "i", "outbox": "o"}]}
        with pytest.raises(ConfigError) as caught:
            parse_config(data, "runwatch.toml", env={}, base=tmp_path)
        assert "http.token" in str(caught.value) and "RUNWATCH_HTTP_TOKEN" in str(caught.value)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _declared(text: str) -> set[str]:
    """Every series name the exposition declares, with or without samples yet (a counter's ``_total``, a
    histogram's ``_bucket``, ``_count`` and ``_sum``)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(family.type, ())
        names.update(family.name + suffix for suffix in suffixes)
    return names


def _notified(got: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[tuple[str, ...], float]:
    """The notification series: (metric, target, kind, event[, outcome]) -> value."""
    order = ("target", "kind", "event", "outcome")
    found = {}
    for (name, labels), value in got.items():
        if name.startswith("runwatch_notification"):
            named = dict(labels)
            found[(name, *(named[key] for key in order if key in named))] = value
    return found


class TestMetrics:
    def test_values_match_the_journal(self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path) -> None:
        """After a known run, /metrics parses as Prometheus text and its figures agree with the journal: jobs by
        state, held by reason, creates, credits spent, bytes downloaded, calls to Runway, durations."""
        rig = served(rig_factory, sim, tmp_path, inbox={"approve_above": 100})
        for n in range(3):
            rig.drop(f"say{n}", SPEECH)
        rig.drop("big", VIDEO)
        statuses = [rig.wait(f"say{n}") for n in range(3)]
        rig.wait("big", {"held"})
        with client(rig) as http:
            answer = http.get("/metrics")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
        got = _samples(answer.text)
        journal = rig.journal()
        try:
            counts = journal.counts()
            jobs = journal.listing(limit=100)
        finally:
            journal.close()
        assert got[("runwatch_jobs", (("state", "succeeded"),))] == counts["succeeded"] == 3
        assert got[("runwatch_jobs", (("state", "held"),))] == 1
        assert got[("runwatch_jobs", (("state", "failed"),))] == 0
        held_code = next(j.error["code"] for j in jobs if j.state == "held")
        assert got[("runwatch_held_requests", (("reason", held_code),))] == 1
        model = SPEECH["model"]
        created = (("endpoint", "text_to_speech"), ("model", model), ("outcome", "created"))
        assert got[("runwatch_creates_total", created)] == 3
        spent = sum(j.credits or 0 for j in jobs)
        assert spent > 0
        assert got[("runwatch_credits_spent_total", (("inbox", "inbox"), ("model", model)))] == spent
        assert got[("runwatch_download_bytes_total", ())] == sum(o["bytes"] for s in statuses for o in s["outputs"])
        assert got[("runwatch_task_seconds_count", (("model", model),))] == 3
        assert got[("runwatch_drop_to_create_seconds_count", (("model", model),))] == 3
        posts = len(sim.requests("/v1/text_to_speech", method="POST"))
        assert (
            got[
                (
                    "runwatch_api_requests_total",
                    (("method", "POST"), ("route", "/v1/text_to_speech"), ("status", "200")),
                )
            ]
            == posts
        )
        assert (
            got[("runwatch_api_request_seconds_count", (("method", "POST"), ("route", "/v1/text_to_speech")))] == posts
        )
        assert got[("runwatch_inboxes_paused", ())] == 0
        assert ("runwatch_credit_balance", ()) in got
        shown = set(re.findall(r"runwatch_[a-z_]+", DASHBOARD.read_text()))
        assert shown and shown <= _declared(answer.text)  # the shipped Grafana dashboard asks for what is served

    def test_media_bytes_and_transitions(self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path) -> None:
        """A request with a local image: the bytes uploaded are the image's size, the bytes downloaded its
        outputs', each state it went through counted once, its inbox not paused."""
        body, media = SEED_REQUESTS["image_to_video"]
        rig = served(rig_factory, sim, tmp_path)
        rig.drop("clip", body, media=media)
        status = rig.wait("clip")
        assert status["state"] == "succeeded"
        with client(rig) as http:
            got = _samples(http.get("/metrics").text)
        assert got[("runwatch_upload_bytes_total", ())] == sum((SAMPLES / m).stat().st_size for m in media) > 0
        assert got[("runwatch_download_bytes_total", ())] == sum(o["bytes"] for o in status["outputs"]) > 0
        entered = {labels[0][1]: v for (name, labels), v in got.items() if name == "runwatch_job_transitions_total"}
        assert {state for state, n in entered.items() if n} >= {"uploading", "submitted", "succeeded"}
        assert all(n == 1 for n in entered.values()), entered
        assert got[("runwatch_inbox_paused", (("inbox", "inbox"),))] == 0

    def test_notifications_counted(
        self,
        rig_factory: Callable[..., Rig],
        sim: Simulator,
        receiver_factory: Callable[..., Receiver],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Notifications are counted by target (its place and kind, never its URL), event and outcome: a webhook
        answering 500 then 200 counts one retry and one sent, one answering 404 one failed, an Apprise json://
        URL one sent; every event a target is told shows, at 0 until it happens; the figures agree with what
        the receivers saw."""
        monkeypatch.setattr(notifications, "BACKOFF", 0.05)
        flaky, refusing, apprise = receiver_factory([500]), receiver_factory([404]), receiver_factory()
        rig = rig_factory(sim, http={"listen": "127.0.0.1:0"})
        with_notify(
            rig,
            {"url": flaky.url, "events": ["succeeded", "failed"]},
            {"url": refusing.url, "events": ["succeeded"]},
            {"url": apprise.url.replace("http://", "json://"), "events": ["succeeded"]},
        ).start()
        rig.drop("fine", SFX)
        assert rig.wait("fine")["state"] == "succeeded"
        with client(rig) as http:

            def settled() -> dict[tuple[str, ...], float]:
                return _notified(_samples(http.get("/metrics").text))

            # The receivers see a post before runwatch has its answer: wait for all three messages to end.
            wait_for(lambda: sum(v for k, v in settled().items() if k[0] == "runwatch_notifications_total") == 3)
            text = http.get("/metrics").text
        got = _notified(_samples(text))
        sent = "runwatch_notifications_total"
        retried = "runwatch_notification_retries_total"
        assert len(flaky.posts) == 2 and len(refusing.posts) == 1 and len(apprise.posts) == 1
        assert got[(sent, "notify[0]", "webhook", "succeeded", "sent")] == 1
        assert got[(retried, "notify[0]", "webhook", "succeeded")] == len(flaky.posts) - 1 == 1
        assert got[(sent, "notify[0]", "webhook", "succeeded", "failed")] == 0
        assert got[(sent, "notify[0]", "webhook", "failed", "sent")] == 0  # told, not happened: shown at 0
        assert got[(sent, "notify[1]", "webhook", "succeeded", "failed")] == len(refusing.posts) == 1
        assert got[(retried, "notify[1]", "webhook", "succeeded")] == 0
        assert got[(sent, "notify[2]", "apprise", "succeeded", "sent")] == len(apprise.posts) == 1
        assert {k[4] for k in got if k[0] == sent} == {"sent", "failed", "refused", "dropped"}
        lines = [line for line in text.splitlines() if line.startswith("runwatch_notification")]
        assert lines and not [line for line in lines if "127.0.0.1" in line or "/hook" in line or "json:" in line]
        shown = set(re.findall(r"runwatch_notification[a-z_]+", DASHBOARD.read_text()))
        assert shown and shown <= {k[0] for k in got}  # the dashboard's notification panels have series to show

    def test_dropped_notifications(
        self,
        rig_factory: Callable[..., Rig],
        sim: Simulator,
        receiver_factory: Callable[..., Receiver],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Behind a receiver that never answers, a queue of one drops a message when a third comes: /metrics
        counts it as dropped under its event while the first waits for its answer."""
        monkeypatch.setattr(notifications, "QUEUE_SIZE", 1)
        monkeypatch.setattr(notifications, "TIMEOUT", 120.0)  # the first message waits for the whole test
        silent = receiver_factory(hang=True)
        rig = rig_factory(sim, http={"listen": "127.0.0.1:0"})
        with_notify(rig, {"url": silent.url, "events": ["succeeded"]}).start()
        for n in range(3):
            rig.drop(f"say{n}", SPEECH)
        for n in range(3):
            assert rig.wait(f"say{n}")["state"] == "succeeded"
        key = ("runwatch_notifications_total", "notify[0]", "webhook", "succeeded", "dropped")
        with client(rig) as http:
            wait_for(lambda: _notified(_samples(http.get("/metrics").text)).get(key) == 1)
            got = _notified(_samples(http.get("/metrics").text))
        assert len(silent.posts) == 1 and got[key] == 1
        assert got[("runwatch_notifications_total", "notify[0]", "webhook", "succeeded", "sent")] == 0


class TestNothingSecretIsServed:
    def test_busy_run_serves_no_secret(self, rig_factory: Callable[..., Rig], s3: Any, tmp_path: Path) -> None:
        """Media through presigned S3 URLs, Runway failures quoting a signed URL, every route read again and
        again while it runs: no byte served holds the API key or a signature."""
        served_bytes: list[bytes] = []

        def read_everything(rig: Rig, stop: threading.Event) -> None:
            with client(rig, **auth()) as http:
                while not stop.is_set():
                    for path in ("/healthz", "/readyz", "/metrics", "/api/v1/jobs"):
                        served_bytes.append(http.get(path).content)
                    for job in http.get("/api/v1/jobs").json()["jobs"]:
                        served_bytes.append(http.get(f"/api/v1/jobs/{job['job_id']}").content)

        ends = busy_run(rig_factory, s3, tmp_path, read_everything)
        assert ends == {
            "image_to_video": "succeeded",
            "speech_to_speech": "succeeded",
            "text_to_video": "failed",
            "sound_effect": "failed",
        }
        data = b"\n".join(served_bytes)
        assert b"REDACTED" in data and b"image_to_video" in data  # the answers did show the run and its errors
        assert leaks(data, KEY, (SIGNATURE, "AKIAEXAMPLEKEY12")) == []

    def test_the_scan_finds_leaks(self) -> None:
        """A control: the same scan notices the key, a signature and the planted access key id when present."""
        data = f'{{"k": "{KEY}", "u": "https://s3/x?X-Amz-Signature={SIGNATURE}&X-Amz-Credential=AKIAEXAMPLEKEY12"}}'
        assert len(leaks(data.encode(), KEY, (SIGNATURE, "AKIAEXAMPLEKEY12"))) == 5
