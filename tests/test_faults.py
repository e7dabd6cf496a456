"""The fault matrix: what Runway, the network and S3 do wrong, and the final state runwatch reaches for each,
never creating (so never paying for) one request twice."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runwatch.simulator import Fault, SimConfig, Simulator
from tests.s3server import S3Server

from .rig import SEED_REQUESTS, Rig

SPEECH = SEED_REQUESTS["text_to_speech"][0]
SFX = SEED_REQUESTS["sound_effect"][0]
I2V, I2V_MEDIA = SEED_REQUESTS["image_to_video"]


def _no_duplicates(sim: Simulator) -> None:
    assert sim.duplicate_creates() == []


class TestServerErrors:
    @pytest.mark.parametrize("status", [502, 503, 504])
    def test_5xx_rate_on_reads(self, rig_factory: Callable[..., Rig], sim: Simulator, status: int) -> None:
        """A third of all reads answered 502/503/504: reads are retried, every request succeeds, one create
        each."""
        sim.faults.add(Fault("error", status=status, rate=0.3, method="GET"))
        rig = rig_factory(sim).start()
        for i in range(3):
            rig.drop(f"r{i}", dict(SPEECH, promptText=f"line {i}"))
        for i in range(3):
            status_file = rig.wait(f"r{i}", timeout=60)
            assert status_file["state"] == "succeeded", status_file
            rig.check_outputs(status_file)
        assert sim.create_count() == 3
        _no_duplicates(sim)

    def test_500_on_create_is_not_resent(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A 500 on a create is not one of the "surely nothing created" answers: it is never resent blindly."""
        sim.faults.add(Fault("error", status=500, endpoint="text_to_speech", count=1))
        rig = rig_factory(sim).start()
        rig.drop("five", SPEECH)
        status = rig.wait("five", timeout=30)
        assert status["state"] in {"failed", "needs_attention"}, status
        assert status["error"]["code"]
        time.sleep(0.3)
        assert len(sim.requests("/v1/text_to_speech")) == 1  # one attempt only
        _no_duplicates(sim)


class TestPossiblyMade:
    """A create whose answer does not prove that no task was made: one task at most, never a second create,
    and the request in needs_attention with a message that says the task may exist."""

    def _one_create_then_attention(self, rig: Rig, sim: Simulator, tasks: int) -> dict[str, Any]:
        rig.drop("gated", SFX)
        status = rig.wait("gated", timeout=30)
        assert status["state"] == "needs_attention" and status["error"]["code"] == "create_unconfirmed", status
        assert "the task may exist at Runway" in status["error"]["message"], status
        time.sleep(0.5)  # a resend would have gone out by now
        assert len(sim.requests("/v1/sound_effect")) == 1 and sim.create_count() == tasks
        assert sim.duplicate_creates() == []
        return status

    @pytest.mark.parametrize("status", [502, 503, 504])
    @pytest.mark.parametrize("action", ["error", "html"])
    def test_gateway_error_after_the_task_was_made(
        self, rig_factory: Callable[..., Rig], sim: Simulator, status: int, action: str
    ) -> None:
        """Runway made the task, then a gateway answered 502/503/504 (Runway's JSON or a proxy's HTML page)."""
        sim.faults.add(Fault(action, status=status, after=True, endpoint="sound_effect", count=1))
        status_file = self._one_create_then_attention(rig_factory(sim).start(), sim, tasks=1)
        assert f"HTTP {status}" in status_file["error"]["message"]

    def test_html_200_after_the_task_was_made(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Runway made the task, then a proxy answered 200 with an HTML page: no task id to follow."""
        sim.faults.add(Fault("html", status=200, after=True, endpoint="sound_effect", count=1))
        status = self._one_create_then_attention(rig_factory(sim).start(), sim, tasks=1)
        assert "HTTP 200 without a task id" in status["error"]["message"]

    def test_gateway_error_before_any_work(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A 502 that came before Runway did anything reads exactly like one after: runwatch cannot tell, so
        it does not resend either (no task was made, and none is)."""
        sim.faults.add(Fault("error", status=502, endpoint="sound_effect", count=1))
        self._one_create_then_attention(rig_factory(sim).start(), sim, tasks=0)


class TestRateLimits:
    def test_429_burst_with_retry_after(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Five 429s with Retry-After on the create: honoured, then one create."""
        sim.faults.add(Fault("rate_limit", count=5, retry_after=0.1, endpoint="text_to_speech"))
        rig = rig_factory(sim).start()
        started = time.monotonic()
        rig.drop("burst", SPEECH)
        status = rig.wait("burst", timeout=60)
        assert status["state"] == "succeeded", status
        assert time.monotonic() - started >= 0.5  # five waits of 0.1 s, at least
        assert len(sim.requests("/v1/text_to_speech")) == 6 and sim.create_count() == 1
        _no_duplicates(sim)

    def test_429_burst_without_retry_after(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Three bare 429s: exponential backoff with jitter, then one create."""
        sim.faults.add(Fault("rate_limit", count=3, endpoint="text_to_speech"))
        rig = rig_factory(sim).start()
        rig.drop("bare", SPEECH)
        status = rig.wait("bare", timeout=60)
        assert status["state"] == "succeeded", status
        assert len(sim.requests("/v1/text_to_speech")) == 4 and sim.create_count() == 1
        _no_duplicates(sim)

    def test_429_on_polls(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """429s on task GETs only slow the polling; the output still arrives."""
        sim.faults.add(Fault("rate_limit", rate=0.5, retry_after=0.05, endpoint="tasks"))
        rig = rig_factory(sim).start()
        rig.drop("polled", SPEECH)
        status = rig.wait("polled", timeout=60)
        assert status["state"] == "succeeded", status
        rig.check_outputs(status)
        _no_duplicates(sim)

    def test_daily_limit_429_holds(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """The daily-limit 429 is not retried in a loop: the request is held with the reason, nothing created."""
        sim.config.model_limits["eleven_multilingual_v2"] = (5, 0)
        rig = rig_factory(sim).start()
        rig.drop("limited", SPEECH)
        status = rig.wait("limited", {"held"}, timeout=30)
        assert "daily" in status["error"]["message"].lower(), status
        time.sleep(0.5)
        assert sim.create_count() == 0 and len(sim.requests("/v1/text_to_speech")) <= 2
        _no_duplicates(sim)


class TestConnections:
    def test_slow_polls(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Slow answers (below the timeout) on task GETs: succeeded."""
        sim.faults.add(Fault("slow", delay=0.3, endpoint="tasks", count=5))
        rig = rig_factory(sim).start()
        rig.drop("slowpoke", SPEECH)
        status = rig.wait("slowpoke", timeout=60)
        assert status["state"] == "succeeded", status
        _no_duplicates(sim)

    def test_create_answer_slower_than_timeout(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A create that times out after it was sent may have created a task: needs_attention, never resent."""
        sim.faults.add(Fault("slow", delay=2.0, endpoint="sound_effect", count=1))
        rig = rig_factory(sim, runway={"timeout": 0.5}).start()
        rig.drop("timeout", SFX)
        status = rig.wait("timeout", timeout=30)
        assert status["state"] == "needs_attention" and status["error"]["code"] == "create_unconfirmed", status
        time.sleep(2.0)  # the slow answer has long been given up: nothing is sent again
        assert len(sim.requests("/v1/sound_effect")) == 1
        _no_duplicates(sim)

    def test_dropped_polls(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Connections cut on a third of task GETs: the task is followed to the end."""
        sim.faults.add(Fault("drop", rate=0.3, endpoint="tasks"))
        rig = rig_factory(sim).start()
        rig.drop("cut", SPEECH)
        status = rig.wait("cut", timeout=60)
        assert status["state"] == "succeeded", status
        rig.check_outputs(status)
        _no_duplicates(sim)

    def test_create_dropped_after_work(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """The create happened, the answer was lost: needs_attention, one task at Runway."""
        sim.faults.add(Fault("drop", after=True, endpoint="sound_effect", count=1))
        rig = rig_factory(sim).start()
        rig.drop("lost", SFX)
        status = rig.wait("lost", timeout=30)
        assert status["state"] == "needs_attention" and status["error"]["code"] == "create_unconfirmed"
        time.sleep(0.3)
        assert sim.create_count() == 1
        _no_duplicates(sim)

    def test_create_dropped_before_work(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """The connection is cut after the request was sent but before Runway did anything: runwatch cannot
        know that, so it does not resend either."""
        sim.faults.add(Fault("drop", endpoint="sound_effect", count=1))
        rig = rig_factory(sim).start()
        rig.drop("cutoff", SFX)
        status = rig.wait("cutoff", timeout=30)
        assert status["state"] == "needs_attention", status
        time.sleep(0.3)
        assert sim.create_count() == 0 and len(sim.requests("/v1/sound_effect")) == 1

    def test_nothing_listening_then_back(self, tmp_path: Path) -> None:
        """Runway unreachable (connection refused: nothing was sent) for a while: the create is retried and the
        request succeeds once the API is back, one create."""
        sim = Simulator(SimConfig(time_scale=0.002, allow_http_loopback=True))
        sim.start()
        url = sim.url
        port = int(url.rsplit(":", 1)[1])
        sim.stop()  # the port is free: connections are refused
        rig = Rig(tmp_path, sim, runway={"base_url": url}).start()
        try:
            rig.drop("offline", SPEECH)
            time.sleep(1.5)
            assert (rig.status("offline") or {}).get("state") not in {"failed", "needs_attention"}
            with Simulator(SimConfig(time_scale=0.002, allow_http_loopback=True), port=port) as back:
                rig.sim = back
                status = rig.wait("offline", timeout=90)
                assert status["state"] == "succeeded", status
                rig.check_outputs(status)
                assert back.create_count() == 1 and back.duplicate_creates() == []
        finally:
            rig.stop()


class TestOutputs:
    def test_expired_output_url_is_refreshed(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Output URLs expire before the download (the simulator's clock jumps two hours the first time a
        succeeded task is read): the outbox GETs the task again for fresh URLs and the bytes still arrive."""
        sim.config.output_ttl = 3600
        jumped: list[str] = []
        original = sim.output_urls

        def stale_urls(task: Any) -> list[str]:
            urls = original(task)
            if task.id not in jumped and task.status(sim.world.clock.now()) == "SUCCEEDED":
                jumped.append(task.id)
                sim.advance(7200)  # the URLs just handed out are already past their expiry
            return urls

        sim.output_urls = stale_urls  # type: ignore[method-assign]
        rig = rig_factory(sim).start()
        rig.drop("stale", SPEECH)
        status = rig.wait("stale", timeout=60)
        assert status["state"] == "succeeded", status
        rig.check_outputs(status)
        assert jumped and len(sim.requests("/v1/tasks/", method="GET")) >= 2
        _no_duplicates(sim)


FAILURE_CODES = [
    "SAFETY.INPUT.TEXT",
    "SAFETY.INPUT.IMAGE",
    "SAFETY.OUTPUT.VIDEO",
    "INTERNAL.BAD_OUTPUT.CODE01",
    "INPUT_PREPROCESSING.SAFETY.TEXT",
    "INPUT_PREPROCESSING.INTERNAL",
    "ASSET.INVALID",
    "INTERNAL",
    "THIRD_PARTY.UNAVAILABLE",
    "SOMETHING.NEW.TOMORROW",
]


class TestTaskFailures:
    @pytest.mark.parametrize("code", FAILURE_CODES)
    def test_failure_code(self, rig_factory: Callable[..., Rig], sim: Simulator, code: str) -> None:
        """Each failureCode family ends failed with that code and Runway's text; never created again."""
        sim.faults.add(Fault("fail", failure_code=code, count=1))
        rig = rig_factory(sim).start()
        rig.drop("doomed", SFX)
        status = rig.wait("doomed", timeout=30)
        assert status["state"] == "failed" and status["error"]["code"] == code, status
        assert status["error"]["message"] and status["outputs"] == []
        time.sleep(0.2)
        assert sim.create_count() == 1
        _no_duplicates(sim)


class TestCredits:
    def test_out_of_credits_is_held(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """An organisation without credits: the request is held with the reason, nothing is created."""
        sim.world.balance = 1
        rig = rig_factory(sim).start()
        rig.drop("broke", dict(SEED_REQUESTS["text_to_video"][0]))
        status = rig.wait("broke", {"held"}, timeout=30)
        message = status["error"]["message"].lower()
        assert "credit" in message or "balance" in message, status
        time.sleep(0.3)
        assert sim.create_count() == 0
        _no_duplicates(sim)


class TestS3:
    def test_s3_unreachable_for_a_while(self, tmp_path: Path, sim: Simulator, s3: S3Server) -> None:
        """The S3 endpoint refuses connections at first (nothing listens at its address), then comes back:
        the request is not failed meanwhile, nothing is created without its media, then it succeeds."""
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            dead_port = probe.getsockname()[1]
        # A loopback relay that refuses while closed and forwards to the real SeaweedFS once opened.
        relay = _Relay(dead_port, s3.endpoint_url)
        rig = Rig(tmp_path, sim, s3=_S3At(s3, f"http://127.0.0.1:{dead_port}")).start()
        try:
            rig.drop("bucketless", I2V, media=I2V_MEDIA)
            time.sleep(2.0)
            assert (rig.status("bucketless") or {}).get("state") not in {"failed", "rejected", "succeeded"}
            assert sim.create_count() == 0
            relay.open()
            status = rig.wait("bucketless", timeout=120)
            assert status["state"] == "succeeded", status
            rig.check_outputs(status)
            assert sim.create_count() == 1
            _no_duplicates(sim)
        finally:
            rig.stop()
            relay.close()


class _S3At:
    """The shared S3 server seen at another address."""

    def __init__(self, s3: S3Server, endpoint_url: str) -> None:
        self._s3, self.endpoint_url = s3, endpoint_url
        self.bucket, self.region = s3.bucket, s3.region

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        from tests.s3server import ACCESS_KEY, SECRET_KEY

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2, read_timeout=30
            ),
        )


class _Relay:
    """A TCP relay on a fixed loopback port: closed (connections refused) until ``open``."""

    def __init__(self, port: int, target_url: str) -> None:
        self.port = port
        host, _, target_port = target_url.removeprefix("http://").partition(":")
        self.target = (host, int(target_port.rstrip("/")))
        self._server: Any = None

    def open(self) -> None:
        import socketserver
        import threading

        target = self.target

        class Pipe(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                import select
                import socket

                upstream = socket.create_connection(target)
                sockets = [self.request, upstream]
                try:
                    while True:
                        ready, _, _ = select.select(sockets, [], [], 30)
                        if not ready:
                            return
                        for sock in ready:
                            data = sock.recv(65536)
                            if not data:
                                return
                            (upstream if sock is self.request else self.request).sendall(data)
                finally:
                    upstream.close()

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Pipe)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


T2V = SEED_REQUESTS["text_to_video"][0]
T2I, T2I_MEDIA = SEED_REQUESTS["text_to_image"]


class TestBadOutputs:
    """Outputs are checked before a request succeeds: the size Runway's store announced and a container that
    parses for the output's media type. A bad output is a failed download: fetched again at the next poll, and
    the request fails with download_failed when it stays bad."""

    @pytest.mark.parametrize("action", ["short", "garbage"])
    @pytest.mark.parametrize(
        ("request_body", "media"), [(T2V, ()), (SPEECH, ()), (T2I, T2I_MEDIA)], ids=["mp4", "mp3", "png"]
    )
    def test_a_bad_output_once_is_fetched_again(
        self,
        rig_factory: Callable[..., Rig],
        sim: Simulator,
        action: str,
        request_body: dict[str, Any],
        media: tuple[str, ...],
    ) -> None:
        """One output served cut short (with a Content-Length that matches) or as garbage bytes: never taken for
        the output; the next download brings the real bytes and the request succeeds, one create."""
        sim.faults.add(Fault(action, endpoint="outputs", count=1, keep=0.6))
        rig = rig_factory(sim).start()
        rig.drop("checked", request_body, media=media)
        status = rig.wait("checked", timeout=60)
        assert status["state"] == "succeeded", status
        rig.check_outputs(status)  # byte-identical to what the task made, not the bad copy
        assert sim.create_count() == 1
        _no_duplicates(sim)

    @pytest.mark.parametrize(
        ("action", "words"),
        [("short", "is not a valid MP4 (it ends inside its 'mdat' box"), ("garbage", "is not a valid MP4 (")],
    )
    def test_an_output_that_stays_bad_fails_the_request(
        self, rig_factory: Callable[..., Rig], sim: Simulator, monkeypatch: pytest.MonkeyPatch, action: str, words: str
    ) -> None:
        """An output that is bad at every download ends the request failed, download_failed, with a message
        that names the output and what is wrong; no bad file is left in the outbox."""
        monkeypatch.setattr("runwatch.jobs.lifecycle.DOWNLOAD_TRIES", 1)  # two downloads, not nine, in a test
        sim.faults.add(Fault(action, endpoint="outputs"))
        rig = rig_factory(sim).start()
        rig.drop("broken", T2V)
        status = rig.wait("broken", timeout=60)
        assert status["state"] == "failed" and status["error"]["code"] == "download_failed", status
        assert f"output 1 {words}" in status["error"]["message"], status
        assert status["outputs"] == [] and sorted(p.name for p in rig.outbox.iterdir()) == ["broken.status.json"]
        assert sim.create_count() == 1
        _no_duplicates(sim)


class TestOddAnswers:
    """Runway's answers distrusted: what a task GET should never say ends in a clear code, never a crash."""

    def test_success_without_outputs_is_asked_again(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Twice SUCCEEDED without `output`, then the real answer: runwatch asks again and gets the outputs."""
        sim.faults.add(Fault("odd", what="no_output", count=2))
        rig = rig_factory(sim).start()
        rig.drop("rain", SEED_REQUESTS["sound_effect"][0])
        status = rig.wait("rain")
        assert status["state"] == "succeeded"
        rig.check_outputs(status)

    @pytest.mark.parametrize("what", ["no_output", "null_output"])
    def test_success_that_never_names_an_output(
        self, rig_factory: Callable[..., Rig], sim: Simulator, what: str
    ) -> None:
        """A task that keeps saying SUCCEEDED with no usable `output` (missing, or null) fails with no_outputs."""
        sim.faults.add(Fault("odd", what=what))
        rig = rig_factory(sim).start()
        rig.drop("rain", SEED_REQUESTS["sound_effect"][0])
        status = rig.wait("rain")
        assert status["state"] == "failed" and status["error"]["code"] == "no_outputs", status
        assert sim.create_count() == 1

    @pytest.mark.parametrize("what", ["nan_progress", "big_progress"])
    def test_progress_out_of_range(self, rig_factory: Callable[..., Rig], sim: Simulator, what: str) -> None:
        """A progress that is NaN or above 1 never reaches a status file as such; the request succeeds."""
        sim.config.time_scale = 0.2
        sim.faults.add(Fault("odd", what=what))
        rig = rig_factory(sim).start()
        rig.drop("film", SEED_REQUESTS["text_to_video"][0])
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = rig.status("film")
            if status is not None:
                seen.append(status["progress"])
                if status["state"] in ("succeeded", "failed", "needs_attention"):
                    break
            time.sleep(0.05)
        assert status is not None and status["state"] == "succeeded", status
        assert all(p is None or 0.0 <= p <= 1.0 for p in seen)
