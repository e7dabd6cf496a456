"""Notifications ([[notify]]): signed webhooks to a receiver on loopback, the events of a real daemon run against
the simulator, retries, refusals of link-local and metadata addresses, and Apprise URLs through the real library."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog

from runwatch import notifications
from runwatch.config import DEFAULT_NOTIFY_EVENTS, NotifyConfig, parse_config
from runwatch.daemon import Daemon, keep_restart_settings
from runwatch.errors import ConfigError
from runwatch.notifications import Notifier
from runwatch.simulator import Fault, Simulator
from runwatch.webhook import sign

from .rig import SEED_REQUESTS, Rig

SFX = SEED_REQUESTS["sound_effect"][0]
SECRET = b"s3cret-for-the-webhook"
README = Path(__file__).resolve().parent.parent / "README.md"


def readme_verifier() -> Callable[..., bool]:
    """The signature check the README gives receivers, taken from its ```python block and run as written."""
    text = README.read_text()
    marker = "# verify a runwatch webhook"
    start = text.index(marker)
    end = text.index("```\n", start)
    scope: dict[str, Any] = {}
    exec(compile(text[start:end], "README.md", "exec"), scope)  # the README's own example, run as written
    verify: Callable[..., bool] = scope["verify_runwatch"]
    return verify


class Receiver:
    """A webhook receiver on loopback: records every POST; answers from a list of statuses (then 200), or hangs."""

    def __init__(self, answers: list[int] | None = None, *, hang: bool = False) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.answers = list(answers or [])
        self.hang = hang
        self.release = threading.Event()
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.cond:
                    receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    receiver.cond.notify_all()
                if receiver.hang:
                    receiver.release.wait(30)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self) -> list[dict[str, Any]]:
        with self.cond:
            return [json.loads(body) for _, body in self.posts]

    def wait_for(self, test: Callable[[list[dict[str, Any]]], bool], timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.events()
            if test(events):
                return events
            time.sleep(0.02)
        raise AssertionError(f"the receiver did not get what was expected in {timeout} s; got {self.events()}")

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(*args: Any, **kwargs: Any) -> Receiver:
        receiver = Receiver(*args, **kwargs)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Back-offs and timeouts shortened, so bounded retries end within a test."""
    monkeypatch.setattr(notifications, "BACKOFF", 0.05)
    monkeypatch.setattr(notifications, "TIMEOUT", 0.5)
    monkeypatch.setattr(notifications, "DRAIN", 1.0)


def with_notify(rig: Rig, *targets: dict[str, Any], budget: dict[str, Any] | None = None) -> Rig:
    """The rig's config with [[notify]] sections (and a [budget]) added."""
    rig.data["notify"] = list(targets)
    if budget is not None:
        rig.data["budget"] = budget
    rig.config = parse_config(rig.data, str(rig.root / "runwatch.toml"))
    return rig


def webhook(receiver: Receiver, secret_file: Path, events: list[str] | None = None) -> dict[str, Any]:
    target: dict[str, Any] = {"url": receiver.url, "secret_file": str(secret_file)}
    if events is not None:
        target["events"] = events
    return target


def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "webhook-secret"
    path.write_bytes(SECRET + b"\n")
    return path


def config_problems(notify: list[dict[str, Any]]) -> dict[str, str]:
    data = {"inbox": [{"path": "/srv/in", "outbox": "/srv/out"}], "notify": notify}
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.toml", env={})
    return {p.path: p.message for p in info.value.problems}


class TestConfig:
    def test_defaults(self) -> None:
        """A [[notify]] with only a URL tells the default events; http(s) is a webhook, other schemes Apprise."""
        data = {
            "inbox": [{"path": "/srv/in", "outbox": "/srv/out"}],
            "notify": [{"url": "https://hooks.example.org/runwatch"}, {"url": "ntfy://ntfy.sh/my-topic"}],
        }
        config = parse_config(data, "test.toml", env={})
        hook, push = config.notify
        assert hook.events == DEFAULT_NOTIFY_EVENTS == ("failed", "needs_attention", "held", "budget")
        assert hook.webhook and not push.webhook and hook.secret_file is None

    @pytest.mark.parametrize(
        "url",
        [
            "http://169.254.169.254/latest/meta-data/",
            "https://169.254.10.1/hook",
            "http://[fe80::1]/hook",
            "http://[::ffff:169.254.169.254]/hook",
            "http://metadata.google.internal/computeMetadata/v1/",
            "json://169.254.169.254/hook",
        ],
    )
    def test_link_local_and_metadata_refused(self, url: str) -> None:
        """A URL whose host is a link-local or cloud metadata address is refused when the config is read."""
        problems = config_problems([{"url": url}])
        assert "link-local or cloud metadata address" in problems["notify[0].url"]

    def test_unknown_event_names_the_key(self) -> None:
        """An unknown event name is an error at notify[N].events, with the nearest name and the allowed ones."""
        problems = config_problems([{"url": "https://h.example/x"}, {"url": "https://h.example/y", "events": ["fail"]}])
        message = problems["notify[1].events"]
        assert '"fail"' in message and 'did you mean "failed"' in message and "inbox_paused" in message

    def test_secret_never_in_the_config(self) -> None:
        """A webhook secret written in the config is refused with where it belongs instead; a secret_file for
        an Apprise URL is an error too (only webhooks are signed)."""
        problems = config_problems(
            [
                {"url": "https://h.example/x", "secret": "abc"},
                {"url": "ntfy://ntfy.sh/topic", "secret_file": "/etc/runwatch/s"},
            ]
        )
        assert "secret_file" in problems["notify[0].secret"] and "abc" not in problems["notify[0].secret"]
        assert "only a webhook" in problems["notify[1].secret_file"]

    @pytest.mark.parametrize(("content", "why"), [(None, "No such file"), (b"short\n", "at least 16 characters")])
    def test_secret_file_unusable(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path, content: bytes | None, why: str
    ) -> None:
        """A secret_file that cannot be read, or holds a guessable secret, stops the daemon's start with an
        error naming notify[N].secret_file."""
        path = tmp_path / "webhook-secret"
        if content is not None:
            path.write_bytes(content)
        rig = with_notify(rig_factory(sim), {"url": "https://hooks.example.org/x", "secret_file": str(path)})
        with pytest.raises(ConfigError) as info:
            Daemon(rig.config, api_key=sim.key)
        assert [p.path for p in info.value.problems] == ["notify[0].secret_file"]
        assert why in info.value.problems[0].message

    def test_apprise_url_it_does_not_know(self) -> None:
        """A scheme Apprise does not know is an error at notify[N].url."""
        problems = config_problems([{"url": "nosuchservice://x/y"}])
        assert "Apprise does not understand" in problems["notify[0].url"]


class TestWebhook:
    def test_signed_events_of_a_daemon_run(
        self, rig_factory: Callable[..., Rig], sim: Simulator, receiver_factory: Callable[..., Receiver], tmp_path: Path
    ) -> None:
        """A daemon run tells the webhook of a failed, a held, a rejected and a succeeded request (when asked
        for), each a signed JSON POST of the event and the status document (plus job_id and inbox) that the
        README's verification accepts; a tampered body or an old timestamp fails it."""
        sim.faults.add(Fault("fail", failure_code="SAFETY.INPUT.TEXT", count=1))
        receiver = receiver_factory()
        events = ["failed", "held", "rejected", "succeeded"]
        rig = rig_factory(sim, inbox={"approve_above": 100})
        with_notify(rig, webhook(receiver, secret_file(tmp_path), events)).start()
        rig.drop("doomed", SFX)
        assert rig.wait("doomed")["state"] == "failed"
        rig.drop("fine", SFX)
        assert rig.wait("fine")["state"] == "succeeded"
        rig.drop("costly", SEED_REQUESTS["text_to_video"][0])
        rig.wait("costly", {"held"})
        rig.drop("broken", {"endpoint": "text_to_video"})
        rig.wait("broken")
        got = receiver.wait_for(lambda e: len(e) >= 4)
        by_name = {e["job"]["name"]: e for e in got}
        assert {n: e["event"] for n, e in by_name.items()} == {
            "doomed": "failed",
            "fine": "succeeded",
            "costly": "held",
            "broken": "rejected",
        }
        assert "approve" in by_name["costly"]["job"]["error"]["message"]
        assert by_name["doomed"]["job"]["error"]["code"] == "SAFETY.INPUT.TEXT"
        for event in got:
            job = event["job"]
            status = rig.status(job["name"])
            assert status is not None and {k: job[k] for k in status} == status
            assert job["inbox"] == rig.config.inboxes[0].name and job["job_id"]
        verify = readme_verifier()
        for headers, body in receiver.posts:
            header = headers["x-runwatch-signature"]
            assert verify(SECRET, header, body)
            assert headers["x-runwatch-event"] == json.loads(body)["event"]
            assert not verify(SECRET, header, body.replace(b"}", b" }", 1))
            assert not verify(b"another secret", header, body)
        old = sign(SECRET, body, int(time.time()) - 3600)
        assert not verify(SECRET, old, body)

    def test_needs_attention_budget_and_paused_inbox(
        self, rig_factory: Callable[..., Rig], sim: Simulator, receiver_factory: Callable[..., Receiver], tmp_path: Path
    ) -> None:
        """An inbox whose folder is missing is told as paused; needs_attention is told; the daily budget is told
        at 80 % and at 100 %, once each (a create with no answer counts its estimate, as the money guard does)."""
        sim.faults.add(Fault("slow", delay=2.0, endpoint="sound_effect", count=1))
        receiver = receiver_factory()
        rig = rig_factory(sim, runway={"timeout": 0.5})
        shutil.rmtree(rig.inbox)  # not there at the start: paused
        events = ["needs_attention", "budget", "inbox_paused"]
        with_notify(rig, webhook(receiver, secret_file(tmp_path), events), budget={"daily": 5, "monthly": 1000})
        rig.start()
        paused = receiver.wait_for(lambda e: any(x["event"] == "inbox_paused" for x in e))[0]
        assert paused["inbox"]["name"] == rig.config.inboxes[0].name and "missing" in paused["inbox"]["reason"]
        rig.inbox.mkdir()
        rig.drop("unanswered", SFX)  # 2 credits may be spent: 40 %
        assert rig.wait("unanswered")["state"] == "needs_attention"
        rig.drop("second", SFX)  # 4 credits: 80 %
        assert rig.wait("second")["state"] == "succeeded"
        rig.drop("third", SEED_REQUESTS["text_to_speech"][0])  # 5 credits: 100 %
        assert rig.wait("third")["state"] == "succeeded"
        rig.drop("fourth", SEED_REQUESTS["text_to_speech"][0])  # would be 6: held, and nothing more is told
        assert rig.wait("fourth", {"held"})["state"] == "held"
        got = receiver.wait_for(lambda e: sum(x["event"] == "budget" for x in e) >= 2)
        rig.stop()
        got = receiver.events()
        assert [e["job"]["name"] for e in got if e["event"] == "needs_attention"] == ["unanswered"]
        budgets = [e["budget"] for e in got if e["event"] == "budget"]
        assert [(b["scope"], b["threshold"], b["spent"], b["limit"]) for b in budgets] == [
            ("daily", 80, 4.0, 5.0),
            ("daily", 100, 5.0, 5.0),
        ]
        assert budgets[0]["period"] == time.strftime("%Y-%m-%d", time.gmtime())
        assert [e["event"] for e in got].count("inbox_paused") == 1

    def test_inbox_budget(
        self, rig_factory: Callable[..., Rig], sim: Simulator, receiver_factory: Callable[..., Receiver], tmp_path: Path
    ) -> None:
        """An inbox's own daily budget is told with its name when a request brings it to 80 %; a monthly
        budget far from its thresholds is not told."""
        receiver = receiver_factory()
        rig = rig_factory(sim, inbox={"budget_daily": 2.5})
        with_notify(rig, webhook(receiver, secret_file(tmp_path), ["budget"]), budget={"monthly": 1000}).start()
        rig.drop("first", SFX)  # 2 of 2.5 credits
        assert rig.wait("first")["state"] == "succeeded"
        rig.stop()
        budgets = [e["budget"] for e in receiver.events()]
        name = rig.config.inboxes[0].name
        assert [(b["scope"], b["inbox"], b["threshold"], b["spent"]) for b in budgets] == [
            ("inbox_daily", name, 80, 2.0)
        ]

    def test_retries_after_500(self, receiver_factory: Callable[..., Receiver], fast_retries: None) -> None:
        """A 500 and a 503 are tried again with back-off; the third attempt's 200 counts as sent."""
        receiver = receiver_factory([500, 503])
        notifier = Notifier([NotifyConfig(url=receiver.url, events=("failed",))], log=structlog.get_logger(), env={})
        notifier.targets[0].start()
        notifier.post("failed", "title", "text", {"job": {"name": "x"}})
        receiver.wait_for(lambda e: len(e) == 3)
        notifier.close()
        assert notifier.counts()[notifier.targets[0].label] == {"retried": 2, "sent": 1}
        assert "x-runwatch-signature" not in receiver.posts[0][0]  # no secret: not signed

    def test_secret_from_a_systemd_credential(self, receiver_factory: Callable[..., Receiver], tmp_path: Path) -> None:
        """Without a secret_file, the systemd credential runwatch_webhook_secret signs the webhook."""
        receiver = receiver_factory()
        (tmp_path / "runwatch_webhook_secret").write_bytes(SECRET)
        target = NotifyConfig(url=receiver.url, events=("failed",))
        notifier = Notifier([target], log=structlog.get_logger(), env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
        notifier.targets[0].start()
        notifier.post("failed", "title", "text", {})
        notifier.close()
        headers, body = receiver.posts[0]
        assert readme_verifier()(SECRET, headers["x-runwatch-signature"], body)

    def test_a_4xx_is_not_retried(self, receiver_factory: Callable[..., Receiver], fast_retries: None) -> None:
        """A receiver that refuses (404) is not asked again: one attempt, counted as failed."""
        receiver = receiver_factory([404])
        notifier = Notifier([NotifyConfig(url=receiver.url, events=("failed",))], log=structlog.get_logger(), env={})
        notifier.targets[0].start()
        notifier.post("failed", "title", "text", {})
        notifier.close()
        assert len(receiver.posts) == 1 and notifier.counts()[notifier.targets[0].label] == {"failed": 1}

    @pytest.mark.parametrize("scheme", ["http", "json"])
    def test_metadata_address_refused_when_sending(self, fast_retries: None, scheme: str) -> None:
        """A webhook (or an Apprise json:// URL) at 169.254.169.254 that got past the config (built directly
        here) is refused when sent: counted as refused, never tried again."""
        target = NotifyConfig(url=f"{scheme}://169.254.169.254/latest/meta-data/", events=("failed",))
        notifier = Notifier([target], log=structlog.get_logger(), env={})
        notifier.targets[0].start()
        notifier.post("failed", "title", "text", {})
        notifier.close()
        assert notifier.counts() == {f"notify[0] {scheme}://169.254.169.254": {"refused": 1}}


class TestReload:
    def test_notify_changes_wait_for_a_restart(self, tmp_path: Path) -> None:
        """A reload that changes [[notify]] keeps the running targets and names the section as needing a
        restart (their workers and secrets are set up at the start)."""
        base = {"inbox": [{"path": str(tmp_path / "in"), "outbox": str(tmp_path / "out")}]}
        running = parse_config(dict(base, notify=[{"url": "https://a.example/x"}]), "test.toml", env={})
        new = parse_config(dict(base, notify=[{"url": "https://b.example/y"}]), "test.toml", env={})
        kept, ignored = keep_restart_settings(running, new)
        assert ignored == ["notify"] and kept.notify == running.notify


class TestNeverInTheWay:
    def test_receiver_that_never_answers(
        self,
        rig_factory: Callable[..., Rig],
        sim: Simulator,
        receiver_factory: Callable[..., Receiver],
        tmp_path: Path,
        fast_retries: None,
    ) -> None:
        """With a webhook that takes every request and never answers, requests still succeed, and the notifier
        gives up within its bounds: each message is failed or dropped, none tried more than ATTEMPTS times."""
        receiver = receiver_factory(hang=True)
        rig = rig_factory(sim)
        with_notify(rig, webhook(receiver, secret_file(tmp_path), ["succeeded"])).start()
        names = [f"quiet{i}" for i in range(3)]
        for name in names:
            rig.drop(name, SFX)
        assert [rig.wait(name)["state"] for name in names] == ["succeeded"] * 3
        assert rig.daemon is not None and rig.daemon.notifier is not None
        notifier = rig.daemon.notifier
        rig.stop()
        counts = notifier.counts()[notifier.targets[0].label]
        assert counts.get("sent", 0) == 0 and counts.get("failed", 0) + counts.get("dropped", 0) == 3, counts
        assert 1 <= len(receiver.posts) <= 3 * notifications.ATTEMPTS

    def test_no_secret_in_a_message(self, receiver_factory: Callable[..., Receiver], tmp_path: Path) -> None:
        """The API key, a presigned signature and the webhook secret never reach a receiver, whatever a
        message would carry; the rest of the text does (the positive control)."""
        receiver = receiver_factory()
        api_key = "key_" + "ab12" * 32
        target = NotifyConfig(url=receiver.url, events=("failed",), secret_file=secret_file(tmp_path))
        notifier = Notifier([target], log=structlog.get_logger(), env={}, secrets=("a-plain-api-key-of-some-length",))
        notifier.targets[0].start()
        leaky = (
            f"visible {api_key} https://bucket.example/o?X-Amz-Signature=deadbeef01&X-Amz-Credential=AKIAX "
            f"{SECRET.decode()} a-plain-api-key-of-some-length"
        )
        notifier.post("failed", f"title {leaky}", leaky, {"job": {"error": {"message": leaky}}})
        notifier.close()
        headers, body = receiver.posts[0]
        everything = json.dumps(headers).encode() + body
        assert b"visible" in everything and b"REDACTED" in everything
        for secret in (api_key.encode(), b"deadbeef01", SECRET, b"a-plain-api-key"):
            assert secret not in everything


class TestApprise:
    def test_labels_hold_no_token(self) -> None:
        """Targets are named in logs and counts by place, scheme and host only: the tokens Slack, Telegram and
        e-mail URLs carry never show."""
        urls = ["tgram://123456789:AAsecretbot/4242", "slack://T0SECRET/B0SECRET/XSECRET/#ops", "mailto://me:pw@ex.org"]
        notifier = Notifier([NotifyConfig(url=u) for u in urls], log=structlog.get_logger(), env={})
        assert [t.label for t in notifier.targets] == [
            "notify[0] tgram",
            "notify[1] slack",
            "notify[2] mailto://ex.org",
        ]
        notifier.close()

    def test_json_url_to_a_receiver(
        self, rig_factory: Callable[..., Rig], sim: Simulator, receiver_factory: Callable[..., Receiver]
    ) -> None:
        """An Apprise json:// URL, sent through the real apprise library, brings a failed request's title and
        text to an HTTP receiver on loopback."""
        sim.faults.add(Fault("fail", failure_code="SAFETY.INPUT.TEXT", count=1))
        receiver = receiver_factory()
        rig = rig_factory(sim)
        url = receiver.url.replace("http://", "json://")
        with_notify(rig, {"url": url, "events": ["failed"]}).start()
        rig.drop("doomed", SFX)
        assert rig.wait("doomed")["state"] == "failed"
        message = receiver.wait_for(lambda e: len(e) >= 1)[0]
        assert message["title"] == "runwatch: doomed failed"
        assert "SAFETY.INPUT.TEXT" in message["message"] and "doomed" in message["message"]
        assert "x-runwatch-signature" not in receiver.posts[0][0]


class TestOnce:
    def test_messages_of_a_once_run_are_sent_before_it_returns(
        self, rig_factory: Callable[..., Rig], sim: Simulator, receiver_factory: Callable[..., Receiver], tmp_path: Path
    ) -> None:
        """`run --once` returns only after the message of its last request has reached the receiver, even when
        that takes a retry (a stopping daemon gives its queue time to drain)."""
        sim.faults.add(Fault("fail", failure_code="SAFETY.INPUT.TEXT", count=1))
        receiver = receiver_factory([503])
        rig = with_notify(rig_factory(sim), webhook(receiver, secret_file(tmp_path), ["failed"]))
        rig.drop("doomed", SFX)
        daemon = Daemon(rig.config, api_key=sim.key)
        daemon.start()
        assert daemon.run(threading.Event(), once=True) == 1
        assert [e["job"]["name"] for e in receiver.events()] == ["doomed", "doomed"]
        assert daemon.notifier is not None and daemon.notifier.counts()[daemon.notifier.targets[0].label] == {
            "retried": 1,
            "sent": 1,
        }
