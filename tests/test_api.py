"""The Runway client: typed calls, retries with backoff, and the rule that a create is never paid twice."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from runwatch.api import RunwayClient, backoff_delay, create_may_be_retried, create_possibly_made, parse_retry_after
from runwatch.errors import ApiConnectionError, ApiError, ApiStatusError, CreateUnconfirmedError, RateLimitedError
from runwatch.simulator import Fault, Simulator

TTS = {"model": "eleven_multilingual_v2", "promptText": "hi", "voice": {"type": "runway-preset", "presetId": "Maya"}}


class Sleeps:
    """Records the delays the client asked for instead of sleeping them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(sim: Simulator, sleeps: Sleeps) -> Iterator[RunwayClient]:
    with httpx.Client(timeout=5.0) as http:
        yield RunwayClient(http, base_url=sim.url, api_key=sim.key, sleep=sleeps, rng=lambda: 0.5)


class TestCreate:
    def test_created(self, client: RunwayClient, sim: Simulator) -> None:
        """A create answers the task id and Runway's estimate."""
        created = client.create_task("text_to_speech", TTS)
        assert created.id in sim.world.tasks and created.estimated_credits is not None

    @pytest.mark.parametrize("status", [502, 503, 504])
    @pytest.mark.parametrize("action", ["error", "html"])
    @pytest.mark.parametrize("after", [True, False])
    def test_gateway_errors_are_possibly_made(
        self, client: RunwayClient, sim: Simulator, sleeps: Sleeps, status: int, action: str, after: bool
    ) -> None:
        """A 502/503/504, as Runway's JSON or a proxy's HTML page, may come after the task was made: the create
        is never sent again, and the error says the task may exist (whether or not it was in fact made)."""
        sim.faults.add(Fault(action, status=status, count=1, after=after))
        with pytest.raises(CreateUnconfirmedError) as info:
            client.create_task("text_to_speech", TTS)
        assert f"HTTP {status}" in str(info.value) and "the task may exist at Runway" in str(info.value)
        assert sim.create_count() == (1 if after else 0) and len(sim.requests("/v1/text_to_speech")) == 1
        assert sleeps.delays == []

    def test_html_200_after_create_is_possibly_made(self, client: RunwayClient, sim: Simulator) -> None:
        """A 200 whose body is an HTML page (a proxy's) holds no task id: the task may exist; the error is no
        4xx status error a caller could read as "Runway refused it", and the create is not sent again."""
        sim.faults.add(Fault("html", status=200, count=1, after=True))
        with pytest.raises(CreateUnconfirmedError) as info:
            client.create_task("text_to_speech", TTS)
        assert not isinstance(info.value, ApiStatusError) and create_possibly_made(info.value)
        assert "HTTP 200 without a task id (text/html: '<html>" in str(info.value)
        assert "the task may exist at Runway" in str(info.value)
        assert sim.create_count() == 1 and len(sim.requests("/v1/text_to_speech")) == 1

    def test_429_honours_retry_after(self, client: RunwayClient, sim: Simulator, sleeps: Sleeps) -> None:
        """A 429 burst is waited out for exactly the Retry-After Runway sent."""
        sim.faults.add(Fault("rate_limit", count=2, retry_after=3))
        client.create_task("text_to_speech", TTS)
        assert sleeps.delays == [3.0, 3.0] and sim.create_count() == 1

    def test_429_without_retry_after_backs_off(self, client: RunwayClient, sim: Simulator, sleeps: Sleeps) -> None:
        """Without a hint the client backs off exponentially (with jitter)."""
        sim.faults.add(Fault("rate_limit", count=3))
        client.create_task("text_to_speech", TTS)
        assert sleeps.delays == [backoff_delay(n, None, lambda: 0.5) for n in (1, 2, 3)]
        assert sleeps.delays[0] < sleeps.delays[1] < sleeps.delays[2]

    def test_intent_hooks_per_attempt(self, client: RunwayClient, sim: Simulator) -> None:
        """The intent is recorded before every attempt and cleared after every answer proving nothing was
        created, so a crash during a backoff never looks like a lost create."""
        sim.faults.add(Fault("rate_limit", count=2, retry_after=0))
        calls: list[str] = []
        client.create_task("text_to_speech", TTS, lambda: calls.append("send"), lambda: calls.append("not_sent"))
        assert calls == ["send", "not_sent", "send", "not_sent", "send"]

    def test_intent_kept_when_the_answer_is_lost(self, client: RunwayClient, sim: Simulator) -> None:
        """After a lost answer the intent is left in place: the create may exist."""
        sim.faults.add(Fault("drop", after=True, count=1))
        calls: list[str] = []
        with pytest.raises(CreateUnconfirmedError):
            client.create_task("text_to_speech", TTS, lambda: calls.append("send"), lambda: calls.append("not_sent"))
        assert calls == ["send"]

    def test_answer_lost_after_create_is_never_resent(self, client: RunwayClient, sim: Simulator) -> None:
        """The connection drops after Runway created the task: no second create, an error that says so."""
        sim.faults.add(Fault("drop", after=True, count=1))
        with pytest.raises(CreateUnconfirmedError) as info:
            client.create_task("text_to_speech", TTS)
        cause = info.value.__cause__
        assert isinstance(cause, ApiConnectionError) and cause.sent and not create_may_be_retried(info.value)
        assert "may exist" in str(info.value) and sim.create_count() == 1

    def test_500_is_ambiguous(self, client: RunwayClient, sim: Simulator) -> None:
        """A 500 is not one of the statuses that prove nothing was created: not retried."""
        sim.faults.add(Fault("error", status=500, count=1, after=True))
        with pytest.raises(CreateUnconfirmedError) as info:
            client.create_task("text_to_speech", TTS)
        cause = info.value.__cause__
        assert isinstance(cause, ApiStatusError) and cause.status == 500 and not create_may_be_retried(info.value)
        assert sim.create_count() == 1 and len(sim.requests("/v1/text_to_speech")) == 1

    def test_read_timeout_is_ambiguous(self, sim: Simulator, sleeps: Sleeps) -> None:
        """No answer in time after sending: not retried."""
        sim.faults.add(Fault("slow", delay=1.0, count=1))
        with httpx.Client(timeout=0.3) as http:
            client = RunwayClient(http, base_url=sim.url, api_key=sim.key, sleep=sleeps)
            with pytest.raises(CreateUnconfirmedError) as info:
                client.create_task("text_to_speech", TTS)
        assert isinstance(info.value.__cause__, ApiConnectionError) and info.value.__cause__.sent
        assert sleeps.delays == []

    def test_connection_refused_is_retried(self, sleeps: Sleeps) -> None:
        """Nobody listening: surely not sent, so retried; after the attempts, a not-sent error."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with httpx.Client(timeout=1.0) as http:
            client = RunwayClient(
                http, base_url=f"http://127.0.0.1:{port}", api_key="key_" + "0" * 128, sleep=sleeps, max_attempts=3
            )
            with pytest.raises(ApiConnectionError) as info:
                client.create_task("text_to_speech", TTS)
        assert not info.value.sent and len(sleeps.delays) == 2

    def test_daily_limit_not_retried(self, client: RunwayClient, sim: Simulator, sleeps: Sleeps) -> None:
        """The daily-limit 429 will not clear in a retry loop: raised at once, marked daily."""
        sim.config.daily_limit = 1
        client.create_task("text_to_speech", TTS)
        with pytest.raises(RateLimitedError) as info:
            client.create_task("text_to_speech", TTS)
        assert info.value.daily and sleeps.delays == []

    def test_validation_issues(self, client: RunwayClient) -> None:
        """A 400 carries Runway's issues with their paths."""
        with pytest.raises(ApiStatusError) as info:
            client.create_task("text_to_speech", {"model": "eleven_multilingual_v2"})
        assert info.value.status == 400
        assert {tuple(i["path"]) for i in info.value.issues} == {("promptText",), ("voice",)}  # type: ignore[arg-type]


class TestReads:
    def test_get_retries_drops_and_5xx(self, client: RunwayClient, sim: Simulator) -> None:
        """GETs change nothing, so any transient failure is retried, 5xx and a gateway's page included."""
        task_id = client.create_task("text_to_speech", TTS).id
        sim.faults.add(Fault("drop", method="GET", count=1))
        sim.faults.add(Fault("error", status=500, method="GET", count=1))
        sim.faults.add(Fault("html", status=502, method="GET", count=1))
        sim.faults.add(Fault("error", status=504, method="GET", count=1))
        assert client.get_task(task_id)["id"] == task_id
        assert len(sim.requests(f"/v1/tasks/{task_id}")) == 5

    def test_get_unknown_is_404(self, client: RunwayClient) -> None:
        """An unknown task is a 404 status error, not retried."""
        with pytest.raises(ApiStatusError) as info:
            client.get_task("17f20503-6c24-4c16-946b-35dbbce2af2f")
        assert info.value.status == 404

    def test_delete_and_organization(self, client: RunwayClient, sim: Simulator) -> None:
        """DELETE and the organization endpoints are reachable through the client."""
        task_id = client.create_task("text_to_speech", TTS).id
        client.delete_task(task_id)
        assert client.organization()["creditBalance"] > 0
        assert "results" in client.usage()

    def test_headers(self, client: RunwayClient, sim: Simulator) -> None:
        """Every request carries the bearer key and the API version."""
        client.organization()
        headers = sim.requests("/v1/organization")[0]["headers"]
        assert headers["X-Runway-Version"] == "2024-11-06" and headers["Authorization"].startswith("Bearer key_")

    def test_create_upload(self, client: RunwayClient) -> None:
        """The upload slot comes back typed."""
        target = client.create_upload("still.jpg")
        assert target.runway_uri.startswith("runway://") and "policy" in target.fields


class TestPureRules:
    @pytest.mark.parametrize(
        ("attempt", "retry_after", "expected"),
        [
            (1, None, 0.375),
            (2, None, 0.75),
            (3, None, 1.5),
            (10, None, 22.5),
            (30, None, 22.5),
            (1, 2.0, 2.0),
            (1, 0.0, 0.0),
            (1, 9999.0, 300.0),
        ],
    )
    def test_backoff(self, attempt: int, retry_after: float | None, expected: float) -> None:
        """Exponential from 0.5 s, capped at 30 s, jittered by up to half; Retry-After wins (capped)."""
        assert backoff_delay(attempt, retry_after, lambda: 0.5) == pytest.approx(expected)

    @pytest.mark.parametrize(
        ("headers", "expected"),
        [
            ({"retry-after": "3"}, 3.0),
            ({"retry-after": "1.5"}, 1.5),
            ({"retry-after-ms": "250"}, 0.25),
            ({"retry-after": "Thu, 01 Jan 2026 00:00:10 GMT"}, 10.0),
            ({"retry-after": "soon"}, None),
            ({}, None),
            ({"retry-after": "-5"}, 0.0),
        ],
    )
    def test_retry_after(self, headers: dict[str, str], expected: float | None) -> None:
        """Retry-After as seconds, milliseconds or an HTTP date; garbage is ignored."""
        now = 1767225600.0  # 2026-01-01T00:00:00Z
        assert parse_retry_after(headers, now=now) == expected

    @pytest.mark.parametrize(
        ("error", "possibly_made", "retried"),
        [
            (ApiConnectionError("refused before sending", sent=False), False, True),
            (RateLimitedError(429, {}, daily=False, retry_after=None), False, True),
            (RateLimitedError(429, {}, daily=True, retry_after=None), False, False),
            (ApiStatusError(400, {"issues": []}), False, False),
            (ApiStatusError(401, {}), False, False),
            (ApiStatusError(404, {}), False, False),
            (ApiStatusError(422, {}), False, False),
            (ApiConnectionError("timeout or drop after sending", sent=True), True, False),
            (ApiStatusError(500, {}), True, False),
            (ApiStatusError(502, {}), True, False),
            (ApiStatusError(503, {}), True, False),
            (ApiStatusError(504, "<html>Bad Gateway</html>"), True, False),
            (CreateUnconfirmedError("HTTP 200 without a task id"), True, False),
        ],
    )
    def test_create_rule(self, error: ApiError, possibly_made: bool, retried: bool) -> None:
        """The money rule as a table: a create is possibly made unless the answer proves otherwise, and sent
        again at once only when nothing was made and another attempt may get through."""
        assert create_possibly_made(error) is possibly_made
        assert create_may_be_retried(error) is retried
