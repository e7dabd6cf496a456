"""The simulator's state machine, limits, money, expiry and faults, over loopback HTTP."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest

from runwatch.pricing import estimate
from runwatch.simulator import Fault, SimConfig, Simulator, parse_fault
from runwatch.simulator.world import FAILURE_TEXTS

from .conftest import SAMPLES


class Api:
    """A bare client: what a test needs to see every byte of Runway's answers."""

    opened: ClassVar[list[Api]] = []

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        Api.opened.append(self)
        self.http = httpx.Client(
            base_url=sim.url,
            headers={
                "Authorization": f"Bearer {sim.key}",
                "X-Runway-Version": "2024-11-06",
            },
        )

    def create(self, endpoint: str = "text_to_speech", **body: Any) -> httpx.Response:
        if not body:
            body = {
                "model": "eleven_multilingual_v2",
                "promptText": "hello",
                "voice": {"type": "runway-preset", "presetId": "Maya"},
            }
        return self.http.post(f"/v1/{endpoint}", json=body)

    def task(self, task_id: str) -> dict[str, Any]:
        resp = self.http.get(f"/v1/tasks/{task_id}")
        assert resp.status_code == 200, resp.text
        data: dict[str, Any] = resp.json()
        return data

    def video(self, **extra: Any) -> httpx.Response:
        return self.create("text_to_video", model="veo3.1", promptText="a field", ratio="1280:720", duration=8, **extra)


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Every client a test opened is closed with it (no stray sockets)."""
    yield
    while Api.opened:
        Api.opened.pop().http.close()


@pytest.fixture
def api(sim: Simulator) -> Api:
    return Api(sim)


def slow_sim(**kwargs: Any) -> Simulator:
    """A simulator at real speed, whose clock the test moves by hand."""
    return Simulator(SimConfig(time_scale=1.0, **kwargs))


class TestStateMachine:
    def test_members_of_each_status(self) -> None:
        """Each status carries exactly the members Runway's SDK types require, no more."""
        with slow_sim() as sim:
            api = Api(sim)
            task_id = api.video().json()["id"]
            seen: dict[str, set[str]] = {}
            for _ in range(400):
                body = api.task(task_id)
                seen[body["status"]] = set(body)
                if body["status"] == "SUCCEEDED":
                    break
                sim.advance(1.0)
        base = {"id", "createdAt", "status"}
        assert seen["PENDING"] == base | {"estimatedCost"}
        assert seen["RUNNING"] == base | {"estimatedCost", "progress"}
        assert seen["SUCCEEDED"] == base | {"output", "cost"}

    def test_progress_rises(self) -> None:
        """RUNNING progress goes up from 0 towards 1 as simulated time passes."""
        with slow_sim() as sim:
            api = Api(sim)
            task_id = api.video().json()["id"]
            sim.advance(10)
            values = []
            for _ in range(10):
                body = api.task(task_id)
                if body["status"] != "RUNNING":
                    break
                values.append(body["progress"])
                sim.advance(6)
        assert len(values) >= 3 and values == sorted(values) and 0 <= values[0] < values[-1] < 1

    def test_created_at_format(self, api: Api) -> None:
        """createdAt is ISO-8601 UTC with milliseconds, like 2026-08-26T06:30:33.796Z."""
        body = api.task(api.create().json()["id"])
        assert len(body["createdAt"]) == 24 and body["createdAt"].endswith("Z")

    def test_deterministic_under_seed(self) -> None:
        """The same seed gives the same task durations; another seed does not; ids are never reused."""

        def run(seed: int) -> tuple[list[float], list[str]]:
            with Simulator(SimConfig(seed=seed)) as sim:
                api = Api(sim)
                ids = [api.create().json()["id"] for _ in range(3)]
                return [sim.world.tasks[i].running_s for i in ids], ids

        first, again, other = run(7), run(7), run(8)
        assert first[0] == again[0] and first[0] != other[0]
        assert not set(first[1]) & set(again[1])

    def test_failed_members(self, sim: Simulator, api: Api) -> None:
        """FAILED carries failure, failureCode and cost 0 (the charge is refunded)."""
        sim.faults.add(Fault("fail", failure_code="ASSET.INVALID"))
        before = sim.world.balance
        task_id = api.create().json()["id"]
        sim.advance(60)
        body = api.task(task_id)
        assert body["status"] == "FAILED" and body["failureCode"] == "ASSET.INVALID"
        assert body["failure"] == FAILURE_TEXTS["ASSET.INVALID"] and body["cost"] == {"credits": 0}
        assert sim.world.balance == before

    def test_unknown_task(self, api: Api) -> None:
        """An unknown id is 404 "Could not find Task"."""
        resp = api.http.get("/v1/tasks/17f20503-6c24-4c16-946b-35dbbce2af2f")
        assert resp.status_code == 404 and resp.json()["error"] == "Could not find Task"


class TestConcurrency:
    def test_excess_tasks_are_throttled_and_promoted_in_order(self) -> None:
        """Beyond the model's concurrency, tasks wait THROTTLED and start in submission order as slots free."""
        with slow_sim(concurrency=2) as sim:
            api = Api(sim)
            ids = [api.video().json()["id"] for _ in range(4)]
            states = [api.task(i)["status"] for i in ids]
            assert states[:2] == ["PENDING", "PENDING"] and states[2:] == ["THROTTLED", "THROTTLED"]
            first_end = min(sim.world.tasks[i].ends or 0 for i in ids[:2])
            sim.advance(first_end - sim.world.clock.now() + 0.01)
            states = [api.task(i)["status"] for i in ids]
            assert states.count("SUCCEEDED") == 1
            assert states[2] in ("PENDING", "RUNNING") and states[3] == "THROTTLED"
            # The promoted task started when the slot freed, not when someone asked.
            assert sim.world.tasks[ids[2]].slot_at == pytest.approx(first_end)

    def test_other_models_are_not_held_up(self) -> None:
        """Limits are per model: another model runs while one is throttled."""
        with slow_sim(concurrency=1) as sim:
            api = Api(sim)
            api.video()
            throttled = api.video().json()["id"]
            other = api.create().json()["id"]
            assert api.task(throttled)["status"] == "THROTTLED"
            assert api.task(other)["status"] == "PENDING"

    def test_cancelling_frees_a_slot(self) -> None:
        """Deleting a running task hands its slot to the next throttled one."""
        with slow_sim(concurrency=1) as sim:
            api = Api(sim)
            first, second = (api.video().json()["id"] for _ in range(2))
            assert api.http.delete(f"/v1/tasks/{first}").status_code == 204
            assert api.task(second)["status"] == "PENDING"


class TestMoney:
    def test_charge_at_create_and_final_cost(self, sim: Simulator, api: Api) -> None:
        """The estimate is debited at create; a success costs exactly the estimate."""
        before = sim.world.balance
        created = api.video().json()
        body = {"model": "veo3.1", "promptText": "a field", "ratio": "1280:720", "duration": 8}
        assert created["estimatedCost"]["credits"] == estimate("text_to_video", "veo3.1", body).credits == 320
        assert sim.world.balance == before - created["estimatedCost"]["credits"]
        sim.advance(600)
        body = api.task(created["id"])
        assert body["cost"]["credits"] == created["estimatedCost"]["credits"]

    def test_cancel_before_running_refunds(self) -> None:
        """Cancelled while PENDING or THROTTLED: refunded, and usage nets to zero."""
        with slow_sim() as sim:
            api = Api(sim)
            before = sim.world.balance
            task_id = api.video().json()["id"]
            api.http.delete(f"/v1/tasks/{task_id}")
            assert sim.world.balance == before
            usage = api.http.post("/v1/organization/usage", json={}).json()
            assert usage["results"][0]["usedCredits"][0]["amount"] == 0

    def test_cancel_while_running_keeps_the_charge(self) -> None:
        """Cancelled while RUNNING: no refund, as Runway's docstring says."""
        with slow_sim() as sim:
            api = Api(sim)
            before = sim.world.balance
            created = api.video().json()
            sim.advance(10)
            assert api.task(created["id"])["status"] == "RUNNING"
            api.http.delete(f"/v1/tasks/{created['id']}")
            assert sim.world.balance == before - created["estimatedCost"]["credits"]

    def test_cancelled_visible_for_a_while(self) -> None:
        """With cancelled_visible, GET answers CANCELLED (with cost) before the task is gone."""
        with slow_sim(cancelled_visible=5.0) as sim:
            api = Api(sim)
            task_id = api.video().json()["id"]
            api.http.delete(f"/v1/tasks/{task_id}")
            body = api.task(task_id)
            assert body["status"] == "CANCELLED" and body["cost"] == {"credits": 0}
            sim.advance(6)
            assert api.http.get(f"/v1/tasks/{task_id}").status_code == 404

    def test_daily_limit_is_rolling(self) -> None:
        """The daily limit counts the past 24 h: after a day passes, creates are accepted again."""
        with slow_sim(daily_limit=2) as sim:
            api = Api(sim)
            assert [api.create().status_code for _ in range(3)] == [200, 200, 429]
            org = api.http.get("/v1/organization").json()
            assert org["usage"]["models"]["eleven_multilingual_v2"]["dailyGenerations"] == 2
            assert org["tier"]["models"]["eleven_multilingual_v2"]["maxDailyGenerations"] == 2
            sim.advance(86401)
            assert api.create().status_code == 200

    def test_429_daily_has_no_retry_after(self) -> None:
        """The daily-limit 429 carries no Retry-After, as observed from Runway."""
        with slow_sim(daily_limit=1) as sim:
            api = Api(sim)
            api.create()
            resp = api.create()
            assert resp.status_code == 429 and "retry-after" not in resp.headers

    def test_balance_and_usage_reflect_spending(self, sim: Simulator, api: Api) -> None:
        """GET /v1/organization shows the balance after charges; usage sums per model and day."""
        start = api.http.get("/v1/organization").json()["creditBalance"]
        costs = [api.video().json()["estimatedCost"]["credits"] for _ in range(2)]
        assert api.http.get("/v1/organization").json()["creditBalance"] == start - sum(costs)
        usage = api.http.post("/v1/organization/usage", json={}).json()
        assert usage["models"] == ["veo3.1"] and usage["results"][0]["usedCredits"] == [
            {"model": "veo3.1", "amount": sum(costs)}
        ]

    def test_admin_sets_balance(self, sim: Simulator, api: Api) -> None:
        """The inspection interface can set a small balance for money tests."""
        resp = api.http.post("/_sim/organization", json={"creditBalance": 3})
        assert resp.json()["creditBalance"] == 3
        assert api.video().json()["error"] == "You do not have enough credits to run this task."


class TestOutputs:
    def _done(self, sim: Simulator, api: Api) -> dict[str, Any]:
        task_id = api.create().json()["id"]
        sim.advance(120)
        return api.task(task_id)

    def test_output_url_expires(self) -> None:
        """An output URL works until its expiry, then answers 403; a fresh GET of the task mints a new one."""
        with Simulator(SimConfig(time_scale=1.0, output_ttl=60)) as sim:
            api = Api(sim)
            url = self._done(sim, api)["output"][0]
            assert httpx.get(url).status_code == 200
            sim.advance(61)
            assert httpx.get(url).status_code == 403
            fresh = api.task(self._last_id(sim))["output"][0]
            assert fresh != url and httpx.get(fresh).status_code == 200

    @staticmethod
    def _last_id(sim: Simulator) -> str:
        return max(sim.world.tasks.values(), key=lambda t: t.seq).id

    def test_altered_url_is_refused(self) -> None:
        """Changing the token, the task or the index in an output URL gets 403."""
        with slow_sim() as sim:
            api = Api(sim)
            url = self._done(sim, api)["output"][0]
            assert httpx.get(url[:-3] + "AAA").status_code == 403
            assert httpx.get(url.replace("/0.", "/1.", 1)).status_code == 403

    def test_output_kinds(self) -> None:
        """Audio endpoints give audio, image endpoints images: checked by content, not by name."""
        from runwatch.mediafiles import probe

        with slow_sim() as sim:
            api = Api(sim)
            out = self._done(sim, api)["output"]
            assert probe(httpx.get(out[0]).content).kind == "audio"  # type: ignore[union-attr]
            task_id = api.create(
                "text_to_image",
                model="gen4_image",
                promptText="x",
                ratio="1280:720",
            ).json()["id"]
            sim.advance(120)
            image = httpx.get(api.task(task_id)["output"][0]).content
            assert probe(image).kind == "image"  # type: ignore[union-attr]

    def test_output_faults(self) -> None:
        """Output faults, each on one download: ``truncate`` announces the whole file and hangs up part-way,
        ``short`` serves part of it as if it were all, ``garbage`` random bytes of the same length and type;
        the next download is the real file."""
        with slow_sim() as sim:
            api = Api(sim)
            url = self._done(sim, api)["output"][0]
            real = httpx.get(url)
            sim.faults.add(Fault("truncate", endpoint="outputs", count=1, keep=0.25))
            with pytest.raises(httpx.RemoteProtocolError):
                httpx.get(url)
            sim.faults.add(Fault("short", endpoint="outputs", count=1, keep=0.25))
            short = httpx.get(url)
            assert short.content == real.content[: len(real.content) // 4]
            assert short.headers["content-length"] == str(len(short.content))
            sim.faults.add(Fault("garbage", endpoint="outputs", count=1))
            garbage = httpx.get(url)
            assert len(garbage.content) == len(real.content) and garbage.content != real.content
            assert garbage.headers["content-type"] == real.headers["content-type"]
            assert httpx.get(url).content == real.content
            assert parse_fault("short:keep=0.1:endpoint=outputs").keep == 0.1

    def test_deleted_task_outputs_are_gone(self) -> None:
        """After DELETE of a finished task its output URL no longer serves the file."""
        with slow_sim() as sim:
            api = Api(sim)
            body = self._done(sim, api)
            api.http.delete(f"/v1/tasks/{body['id']}")
            assert httpx.get(body["output"][0]).status_code == 404


class TestUploads:
    def _upload(self, api: Api, data: bytes, filename: str = "still.jpg") -> tuple[dict[str, Any], int]:
        start = api.http.post("/v1/uploads", json={"filename": filename, "type": "ephemeral"}).json()
        resp = httpx.post(start["uploadUrl"], data=start["fields"], files={"file": (filename, data)})
        return start, resp.status_code

    def test_upload_expires_after_a_day(self) -> None:
        """A runway:// URI is usable for 24 h, then refused."""
        with slow_sim() as sim:
            api = Api(sim)
            start, status = self._upload(api, (SAMPLES / "still.jpg").read_bytes())
            assert status == 204
            body = {"model": "gen4_turbo", "promptImage": start["runwayUri"], "ratio": "1280:720"}
            assert api.create("image_to_video", **body).status_code == 200
            sim.advance(86401)
            resp = api.create("image_to_video", **body)
            assert resp.status_code == 400 and "expired" in resp.json()["issues"][0]["message"]

    def test_tampered_fields_are_refused(self, api: Api) -> None:
        """The presigned form is the credential: a changed key or signature is 403."""
        start = api.http.post("/v1/uploads", json={"filename": "a.jpg"}).json()
        fields = dict(start["fields"], key="uploads/other/a.jpg")
        resp = httpx.post(start["uploadUrl"], data=fields, files={"file": ("a.jpg", b"x" * 1000)})
        assert resp.status_code == 403 and b"AccessDenied" in resp.content

    def test_file_must_come_last(self, api: Api) -> None:
        """A form whose file part is not last is refused, as S3's presigned POST refuses it."""
        start = api.http.post("/v1/uploads", json={"filename": "a.jpg"}).json()
        boundary = "xyz"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
            + "x" * 600
            + "\r\n"
        ]
        parts += [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in start["fields"].items()
        ]
        body = "".join(parts) + f"--{boundary}--\r\n"
        resp = httpx.post(
            start["uploadUrl"],
            content=body.encode(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert resp.status_code == 400

    def test_uploaded_kind_must_match_the_field(self, api: Api) -> None:
        """An audio file uploaded and used as an image is refused on that field."""
        start, status = self._upload(api, (SAMPLES / "speech.mp3").read_bytes(), "speech.mp3")
        assert status == 204
        resp = api.create("image_to_video", model="gen4_turbo", promptImage=start["runwayUri"], ratio="1280:720")
        assert resp.json()["issues"][0]["message"] == "Unsupported asset type."


class TestMediaRules:
    def test_data_uri_rules(self, api: Api) -> None:
        """data: URIs need base64 and a specific type of the right kind."""
        raw = (SAMPLES / "still.jpg").read_bytes()
        good = "data:image/jpeg;base64," + base64.b64encode(raw).decode()
        cases = {
            good: 200,
            "data:image/jpeg," + "x" * 20: 400,
            "data:application/octet-stream;base64," + base64.b64encode(raw).decode(): 400,
            "data:image/jpeg;base64,@@@@": 400,
        }
        for uri, status in cases.items():
            resp = api.create("image_to_video", model="gen4_turbo", promptImage=uri, ratio="1280:720")
            assert resp.status_code == status, (uri[:40], resp.text)

    def test_data_uri_cap(self) -> None:
        """A data URI longer than its cap is refused with too_big."""
        with Simulator(SimConfig(data_uri_caps={"image": 1000, "video": 1000, "audio": 1000})) as sim:
            uri = "data:image/jpeg;base64," + base64.b64encode((SAMPLES / "still.jpg").read_bytes()).decode()
            resp = Api(sim).create("image_to_video", model="gen4_turbo", promptImage=uri, ratio="1280:720")
            assert resp.json()["issues"][0]["code"] == "too_big"

    def test_narrow_image_is_refused(self, api: Api) -> None:
        """An image narrower than 1:2 gets Runway's aspect-ratio text."""
        from runwatch.mediafiles import _png, _scene  # a real 100x300 PNG

        png = _png(100, 300, _scene(b"narrow", 100, 300), "narrow")
        uri = "data:image/png;base64," + base64.b64encode(png).decode()
        resp = api.create("image_to_video", model="gen4_turbo", promptImage=uri, ratio="1280:720")
        assert resp.json()["issues"][0]["message"].startswith("Invalid asset aspect ratio.")

    def test_too_short_audio_for_isolation(self, api: Api) -> None:
        """voice_isolation refuses audio under 4.6 s, measured from the file itself."""
        from runwatch.mediafiles import make_output

        wav = make_output("wav", b"short")  # about a second
        uri = "data:audio/wav;base64," + base64.b64encode(wav).decode()
        resp = api.create("voice_isolation", model="eleven_voice_isolation", audioUri=uri)
        assert resp.json()["issues"][0]["code"] == "too_small"

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("https://203.0.113.7/a.jpg", "URLs must be hosted on a domain."),
            ("ftp://example.com/a.jpg", "Only HTTPS URLs are allowed."),
            ("https://example.com/" + "a" * 2100, "Too big: expected string to have <=2048 characters"),
        ],
    )
    def test_url_shape_rules(self, url: str, message: str) -> None:
        """URL rules that need no fetch: a domain, https, at most 2048 characters."""
        with Simulator(SimConfig(fetch=False)) as sim:
            resp = Api(sim).create("image_to_video", model="gen4_turbo", promptImage=url, ratio="1280:720")
            assert resp.json()["issues"][0]["message"] == message

    def test_no_fetch_accepts_well_formed_https(self) -> None:
        """With fetching off, a well-formed https URL is accepted without any request leaving."""
        with Simulator(SimConfig(fetch=False, time_scale=0.002)) as sim:
            resp = Api(sim).create(
                "image_to_video", model="gen4_turbo", promptImage="https://media.example.com/a.jpg", ratio="1280:720"
            )
            assert resp.status_code == 200 and sim.world.fetches == []


class TestFaults:
    def test_drop_after_creates_the_task(self, sim: Simulator, api: Api) -> None:
        """A connection dropped after the create took effect: the client sees an error, the task exists."""
        sim.faults.add(Fault("drop", endpoint="text_to_speech", after=True, count=1))
        with pytest.raises(httpx.TransportError):
            api.create()
        assert sim.create_count("text_to_speech") == 1

    def test_drop_before_creates_nothing(self, sim: Simulator, api: Api) -> None:
        """Dropped before processing: no task."""
        sim.faults.add(Fault("drop", count=1))
        with pytest.raises(httpx.TransportError):
            api.create()
        assert sim.create_count() == 0

    def test_error_rate_hits_some(self, sim: Simulator, api: Api) -> None:
        """A 50% 502 rate fails roughly half the requests, and only those create nothing."""
        sim.faults.add(Fault("error", status=502, rate=0.5))
        statuses = [api.create().status_code for _ in range(60)]
        assert 10 < statuses.count(502) < 50 and set(statuses) == {200, 502}
        assert sim.create_count() == statuses.count(200)

    def test_slow_response(self, sim: Simulator, api: Api) -> None:
        """A slow rule delays the answer by its delay."""
        sim.faults.add(Fault("slow", delay=0.3, count=1, method="GET"))
        started = time.monotonic()
        api.http.get("/v1/organization")
        assert time.monotonic() - started >= 0.3

    def test_per_endpoint_rules(self, sim: Simulator, api: Api) -> None:
        """A rule for one endpoint leaves the others alone."""
        sim.faults.add(Fault("error", status=504, endpoint="text_to_video"))
        assert api.video().status_code == 504
        assert api.create().status_code == 200

    def test_faults_at_run_time_over_http(self, sim: Simulator, api: Api) -> None:
        """Faults can be added, listed and cleared through /_sim/faults."""
        assert (
            api.http.post("/_sim/faults", json={"action": "rate_limit", "count": 1, "retry_after": 2}).status_code
            == 201
        )
        resp = api.create()
        assert resp.status_code == 429 and resp.headers["retry-after"] == "2"
        assert api.http.delete("/_sim/faults").status_code == 204
        assert api.http.get("/_sim/faults").json() == {"faults": []}

    @pytest.mark.parametrize("code", sorted(FAILURE_TEXTS))
    def test_every_failure_code(self, sim: Simulator, api: Api, code: str) -> None:
        """Every failureCode family can be injected and comes back as written."""
        sim.faults.add(Fault("fail", failure_code=code))
        task_id = api.create().json()["id"]
        sim.advance(120)
        assert api.task(task_id)["failureCode"] == code

    def test_parse_fault_specs(self) -> None:
        """Command-line fault specs parse into rules; nonsense is refused with the reason."""
        fault = parse_fault("error:rate=0.25:status=504:endpoint=image_to_video")
        assert (fault.action, fault.rate, fault.status, fault.endpoint) == ("error", 0.25, 504, "image_to_video")
        from runwatch.errors import SimulatorError

        for bad in ("explode", "error:rate=2", "error:colour=red", "error:status=abc"):
            with pytest.raises(SimulatorError):
                parse_fault(bad)


class TestInspection:
    def test_request_log_masks_the_key(self, sim: Simulator, api: Api) -> None:
        """The request log records headers and bodies, but never the whole API key."""
        api.create()
        logged = api.http.get("/_sim/requests").json()["requests"]
        assert logged[0]["path"] == "/v1/text_to_speech" and logged[0]["body"]["model"] == "eleven_multilingual_v2"
        assert sim.key not in json.dumps(logged)

    def test_creates_grouped_by_body(self, sim: Simulator, api: Api) -> None:
        """Identical bodies created twice show up as one entry with count 2: a duplicate spend."""
        api.create()
        api.create()
        creates = api.http.get("/_sim/creates").json()
        assert creates["total"] == 2 and creates["bodies"][0]["count"] == 2
        assert len(sim.duplicate_creates()) == 1

    def test_tasks_listing(self, sim: Simulator, api: Api) -> None:
        """/_sim/tasks lists every task with its state and body."""
        task_id = api.create().json()["id"]
        rows = api.http.get("/_sim/tasks").json()["tasks"]
        assert rows[0]["id"] == task_id and rows[0]["model"] == "eleven_multilingual_v2"


class TestCommandLine:
    def test_simulate_serves_until_sigterm(self) -> None:
        """``runwatch simulate --port N`` serves the API and stops cleanly on SIGTERM."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        argv = [sys.executable, "-m", "runwatch.cli", "simulate", "--port", str(port), "--key", "key_" + "c" * 128]
        with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
            try:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                assert f"http://127.0.0.1:{port}" in line
                headers = {"Authorization": "Bearer key_" + "c" * 128, "X-Runway-Version": "2024-11-06"}
                resp = httpx.get(f"http://127.0.0.1:{port}/v1/organization", headers=headers)
                assert resp.status_code == 200 and resp.json()["creditBalance"] == 100_000
            finally:
                proc.terminate()
                assert proc.wait(timeout=10) == 0

    def test_bad_fault_spec_is_a_usage_error(self) -> None:
        """A malformed --fault exits 2 with the reason."""
        proc = subprocess.run(
            [sys.executable, "-m", "runwatch.cli", "simulate", "--fault", "boom"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2 and "boom" in proc.stderr
