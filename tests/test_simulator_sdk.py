"""The simulator, driven by the official ``runwayml`` SDK: if the SDK cannot tell it from Runway, neither can we."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import runwayml
from runwayml.lib import polling
from runwayml.types import task_retrieve_response as trr

from runwatch.simulator import Fault, SimConfig, Simulator

from .conftest import SAMPLES, MediaServer


@pytest.fixture(autouse=True)
def _fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's poller sleeps 4.5-7.5 s between GETs; the simulator's time is scaled, so is the poller's."""
    monkeypatch.setattr(polling, "POLL_TIME", 0.02)
    monkeypatch.setattr(polling, "POLL_JITTER", 0.01)


@pytest.fixture
def client(sim: Simulator) -> Iterator[runwayml.RunwayML]:
    with runwayml.RunwayML(base_url=sim.url, api_key=sim.key, max_retries=2) as c:
        yield c


def data_uri(name: str, ctype: str) -> str:
    return f"data:{ctype};base64," + base64.b64encode((SAMPLES / name).read_bytes()).decode()


IMAGE = ("still.jpg", "image/jpeg")
VIDEO = ("clip.mp4", "video/mp4")
AUDIO = ("speech.mp3", "audio/mpeg")

# One valid create per task endpoint, through the SDK's own typed methods (snake_case kwargs).
# Each takes a function that turns (sample name, content type) into a media reference.
CREATES: dict[str, Callable[[runwayml.RunwayML, Callable[[tuple[str, str]], str]], Any]] = {
    "image_to_video": lambda c, m: c.image_to_video.create(
        model="gen4_turbo", prompt_image=m(IMAGE), ratio="1280:720", duration=5, prompt_text="a calm sea"
    ),
    "text_to_video": lambda c, m: c.text_to_video.create(
        model="veo3.1", prompt_text="a forest at dawn", ratio="1280:720", duration=8
    ),
    "video_to_video": lambda c, m: c.video_to_video.create(
        model="aleph2", video_uri=m(VIDEO), prompt_text="make it snow"
    ),
    "text_to_image": lambda c, m: c.text_to_image.create(
        model="gen4_image", prompt_text="a red bicycle", ratio="1920:1080"
    ),
    "video_upscale": lambda c, m: c.video_upscale.create(model="magnific_video_upscaler_creative", video_uri=m(VIDEO)),
    "image_upscale": lambda c, m: c.image_upscale.create(model="magnific_precision_upscaler_v2", image_uri=m(IMAGE)),
    "video_to_hdr": lambda c, m: c.video_to_hdr.create(model="ruby", video_uri=m(VIDEO)),
    "video_to_audio": lambda c, m: c.video_to_audio.create(model="mirelo_sfx_2_0", video_uri=m(VIDEO), duration=3),
    "character_performance": lambda c, m: c.character_performance.create(
        model="act_two", character={"type": "image", "uri": m(IMAGE)}, reference={"type": "video", "uri": m(VIDEO)}
    ),
    "sound_effect": lambda c, m: c.sound_effect.create(
        model="eleven_text_to_sound_v2", prompt_text="a door creaks open"
    ),
    "text_to_speech": lambda c, m: c.text_to_speech.create(
        model="eleven_multilingual_v2", prompt_text="Hello there.", voice={"type": "runway-preset", "preset_id": "Maya"}
    ),
    "speech_to_speech": lambda c, m: c.speech_to_speech.create(
        model="eleven_multilingual_sts_v2",
        media={"type": "audio", "uri": m(AUDIO)},
        voice={"type": "runway-preset", "preset_id": "Bernard"},
    ),
    "voice_dubbing": lambda c, m: c.voice_dubbing.create(
        model="eleven_voice_dubbing", audio_uri=m(AUDIO), target_lang="es"
    ),
    "voice_isolation": lambda c, m: c.voice_isolation.create(model="eleven_voice_isolation", audio_uri=m(AUDIO)),
}


class TestEveryEndpoint:
    @pytest.mark.parametrize("endpoint", sorted(CREATES))
    def test_create_and_wait_with_data_uris(self, client: runwayml.RunwayML, sim: Simulator, endpoint: str) -> None:
        """A valid create on every endpoint runs to SUCCEEDED and the SDK parses it into its Succeeded class."""
        created = CREATES[endpoint](client, lambda s: data_uri(*s))
        assert created.id
        task = created.wait_for_task_output(timeout=30)
        assert isinstance(task, trr.Succeeded), type(task)
        assert task.output and all(u.startswith(sim.url + "/_outputs/") for u in task.output)
        assert task.cost.credits >= 0
        assert sim.create_count(endpoint) == 1

    @pytest.mark.parametrize("endpoint", ["image_to_video", "video_to_video", "speech_to_speech"])
    def test_https_media_are_fetched(
        self, client: runwayml.RunwayML, sim: Simulator, media_server: MediaServer, endpoint: str
    ) -> None:
        """URL media are really fetched by the simulator, once each, with the Content-Type checked."""
        task = CREATES[endpoint](client, lambda s: media_server.sample(*s)).wait_for_task_output(timeout=30)
        assert isinstance(task, trr.Succeeded)
        fetched = [f for f in sim.world.fetches if f["status"] == 200]
        assert fetched and all(f["content_type"] in ("image/jpeg", "video/mp4", "audio/mpeg") for f in fetched)
        assert len(media_server.hits) == len(fetched)

    def test_outputs_download_and_differ_per_task(self, client: runwayml.RunwayML, sim: Simulator) -> None:
        """Output URLs serve real files of the right type, different from one task to the next."""
        import httpx

        bodies = []
        for _ in range(2):
            task = CREATES["text_to_image"](client, lambda s: "").wait_for_task_output(timeout=30)
            assert isinstance(task, trr.Succeeded)
            resp = httpx.get(task.output[0])
            assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
            assert resp.content.startswith(b"\x89PNG\r\n\x1a\n")
            bodies.append(resp.content)
        assert bodies[0] != bodies[1]

    def test_several_outputs_when_asked(self, client: runwayml.RunwayML) -> None:
        """``outputCount`` makes a task return that many output URLs."""
        task = client.text_to_image.create(
            model="gemini_image3.1_flash",
            prompt_text="four cats",
            ratio="1024:1024",
            output_count=4,
        ).wait_for_task_output(timeout=30)
        assert isinstance(task, trr.Succeeded)
        assert len(task.output) == 4 and len(set(task.output)) == 4


class TestValidationErrors:
    def _error(self, client: runwayml.RunwayML, **kwargs: Any) -> runwayml.BadRequestError:
        with pytest.raises(runwayml.BadRequestError) as info:
            client.image_to_video.create(**kwargs)
        return info.value

    def test_unknown_model(self, client: runwayml.RunwayML, sim: Simulator) -> None:
        """An unknown model answers 400 with Runway's no-matching-discriminator issue and creates nothing."""
        err = self._error(client, model="gen9", prompt_image="https://example.com/a.jpg", ratio="1280:720")
        body = err.body
        assert isinstance(body, dict)
        assert body["error"] == "Validation of body failed"
        assert body["issues"][0]["code"] == "invalid_union"
        assert body["issues"][0]["path"] == ["model"]
        assert body["docUrl"].startswith("https://docs.dev.runwayml.com")
        assert sim.create_count() == 0

    def test_missing_required_and_out_of_range(self, client: runwayml.RunwayML) -> None:
        """Every problem is listed with its path: a missing field and a duration outside 2-10."""
        err = self._error(
            client, model="gen4.5", prompt_image="https://example.com/a.jpg", duration=11, ratio="1280:720"
        )
        issues = {tuple(i["path"]): i for i in err.body["issues"]}  # type: ignore[index]
        assert issues[("promptText",)]["code"] == "invalid_type"
        assert issues[("duration",)]["code"] == "too_big" and issues[("duration",)]["maximum"] == 10

    def test_value_outside_allowed_set(self, client: runwayml.RunwayML) -> None:
        """A ratio the model does not offer lists the allowed values."""
        err = self._error(client, model="gen4_turbo", prompt_image="https://example.com/a.jpg", ratio="1:1")
        issue = err.body["issues"][0]  # type: ignore[index]
        assert issue["code"] == "invalid_value" and "1280:720" in issue["values"]

    def test_unknown_field(self, client: runwayml.RunwayML) -> None:
        """A field the model does not have is refused, not ignored."""
        with pytest.raises(runwayml.BadRequestError) as info:
            client.image_to_video.create(
                model="gen4_turbo",
                prompt_image="https://example.com/a.jpg",
                ratio="1280:720",
                extra_body={"colour": "red"},
            )
        issue = info.value.body["issues"][0]  # type: ignore[index]
        assert issue["code"] == "unrecognized_keys" and issue["keys"] == ["colour"]

    def test_unfetchable_media(self, client: runwayml.RunwayML, media_server: MediaServer) -> None:
        """A URL that answers 404 fails with Runway's fetch text on the field's path."""
        err = self._error(client, model="gen4_turbo", prompt_image=media_server.url + "/missing.jpg", ratio="1280:720")
        issue = err.body["issues"][0]  # type: ignore[index]
        assert issue["path"] == ["promptImage"]
        assert issue["message"] == 'Failed to fetch asset. Received HTTP response code "404".'

    @pytest.mark.parametrize("ctype", ["application/octet-stream", "binary/octet-stream", "video/mp4"])
    def test_wrong_or_generic_content_type(
        self, client: runwayml.RunwayML, media_server: MediaServer, ctype: str
    ) -> None:
        """Generic types (what S3 serves when none was stored) and the wrong kind are refused."""
        url = media_server.add("/x.jpg", (SAMPLES / "still.jpg").read_bytes(), ctype)
        err = self._error(client, model="gen4_turbo", prompt_image=url, ratio="1280:720")
        assert err.body["issues"][0]["message"] == "Unsupported asset type."  # type: ignore[index]

    def test_redirects_are_not_followed(self, client: runwayml.RunwayML, media_server: MediaServer) -> None:
        """Runway does not follow redirects; any 3xx is a fetch failure."""
        url = media_server.add("/moved.jpg", b"", None, status=302, headers={"Location": "/still.jpg"})
        err = self._error(client, model="gen4_turbo", prompt_image=url, ratio="1280:720")
        assert '"302"' in err.body["issues"][0]["message"]  # type: ignore[index]

    def test_http_is_refused_off_loopback_switch(self, media_server: MediaServer) -> None:
        """Without the loopback switch, plain http:// is refused as Runway refuses it."""
        with (
            Simulator(SimConfig(time_scale=0.002)) as strict,
            runwayml.RunwayML(base_url=strict.url, api_key=strict.key) as c,
            pytest.raises(runwayml.BadRequestError) as info,
        ):
            c.image_to_video.create(model="gen4_turbo", prompt_image=media_server.sample(*IMAGE), ratio="1280:720")
        assert info.value.body["issues"][0]["message"] == "Only HTTPS URLs are allowed."  # type: ignore[index]


class TestUploads:
    def test_create_ephemeral_then_use_runway_uri(self, client: runwayml.RunwayML, sim: Simulator) -> None:
        """The SDK's two-step upload works, and the runway:// URI it returns is usable as media."""
        upload = client.uploads.create_ephemeral(file=SAMPLES / "still.jpg")
        assert upload.uri.startswith("runway://")
        task = client.image_to_video.create(
            model="gen4_turbo",
            prompt_image=upload.uri,
            ratio="1280:720",
            duration=5,
        ).wait_for_task_output(timeout=30)
        assert isinstance(task, trr.Succeeded)

    def test_too_small_upload_is_refused(self, client: runwayml.RunwayML) -> None:
        """Uploads under 512 bytes are refused by the storage form, as Runway's are."""
        with pytest.raises(runwayml.APIStatusError) as info:
            client.uploads.create_ephemeral(file=("tiny.png", b"\x89PNG" + b"0" * 100))
        assert info.value.status_code == 400

    def test_unknown_runway_uri(self, client: runwayml.RunwayML) -> None:
        """A runway:// URI that no upload produced is refused on its field."""
        with pytest.raises(runwayml.BadRequestError) as info:
            client.image_to_video.create(
                model="gen4_turbo", prompt_image="runway://uploads/" + "0" * 32, ratio="1280:720"
            )
        assert info.value.body["issues"][0]["path"] == ["promptImage"]  # type: ignore[index]


class TestAccount:
    def test_organization_retrieve(self, client: runwayml.RunwayML, sim: Simulator) -> None:
        """The organization parses into the SDK's types and reflects spending and daily counts."""
        before = client.organization.retrieve()
        task = CREATES["text_to_image"](client, lambda s: "").wait_for_task_output(timeout=30)
        assert isinstance(task, trr.Succeeded)
        after = client.organization.retrieve()
        assert task.cost.credits == 8  # gen4_image at 1080p, per the price data
        assert after.credit_balance == before.credit_balance - task.cost.credits
        assert after.usage.models["gen4_image"].daily_generations == 1
        assert after.tier.models["gen4_image"].max_concurrent_generations == sim.config.concurrency

    def test_usage_report(self, client: runwayml.RunwayML) -> None:
        """Usage per day and model reflects what was charged."""
        CREATES["sound_effect"](client, lambda s: "").wait_for_task_output(timeout=30)
        usage = client.organization.retrieve_usage()
        assert "eleven_text_to_sound_v2" in usage.models
        assert usage.results[-1].used_credits[0].amount > 0


class TestTasks:
    def test_delete_then_gone(self, client: runwayml.RunwayML, sim: Simulator) -> None:
        """DELETE answers 204 and the task is gone: a later GET is NotFoundError ("Could not find Task")."""
        sim.config.time_scale = 1.0  # long enough to still be running
        created = CREATES["text_to_video"](client, lambda s: "")
        assert client.tasks.delete(created.id) is None
        with pytest.raises(runwayml.NotFoundError) as info:
            client.tasks.retrieve(created.id)
        assert info.value.body == {"error": "Could not find Task", "docUrl": "https://docs.dev.runwayml.com/api"}

    def test_running_task_parses_as_running(self, client: runwayml.RunwayML, sim: Simulator) -> None:
        """A RUNNING body carries progress and estimatedCost, so the SDK types it as Running."""
        sim.config.time_scale = 1.0
        created = CREATES["text_to_video"](client, lambda s: "")
        sim.advance(10)  # past the queue, into the run
        task = client.tasks.retrieve(created.id)
        assert isinstance(task, trr.Running) and 0.0 <= task.progress < 1.0

    def test_waiting_states_parse_as_their_classes(self, sim: Simulator) -> None:
        """THROTTLED, PENDING and CANCELLED bodies parse into the SDK's own classes, not the fallback."""
        sim.config.time_scale = 1.0
        sim.config.concurrency = 1
        sim.config.cancelled_visible = 60.0
        with runwayml.RunwayML(base_url=sim.url, api_key=sim.key) as c:
            first = CREATES["text_to_video"](c, lambda s: "")
            second = CREATES["text_to_video"](c, lambda s: "")
            pending, throttled = c.tasks.retrieve(first.id), c.tasks.retrieve(second.id)
            assert isinstance(pending, trr.Pending) and pending.status == "PENDING"
            assert isinstance(throttled, trr.Throttled) and not isinstance(throttled, trr.Pending)
            c.tasks.delete(first.id)
            cancelled = c.tasks.retrieve(first.id)
            assert isinstance(cancelled, trr.Cancelled) and cancelled.cost.credits == 0

    def test_failed_task(self, client: runwayml.RunwayML, sim: Simulator) -> None:
        """A failure injected for an endpoint ends in Failed with the failureCode; the SDK raises TaskFailedError."""
        sim.faults.add(Fault("fail", endpoint="text_to_image", failure_code="SAFETY.INPUT.TEXT"))
        created = CREATES["text_to_image"](client, lambda s: "")
        with pytest.raises(polling.TaskFailedError) as info:
            created.wait_for_task_output(timeout=30)
        details = info.value.task_details
        assert isinstance(details, trr.Failed)
        assert details.failure_code == "SAFETY.INPUT.TEXT" and details.cost.credits == 0


class TestRetries:
    def test_5xx_is_retried_by_the_sdk(self, client: runwayml.RunwayML, sim: Simulator) -> None:
        """Two 503s then success: the SDK retries and one task exists."""
        sim.faults.add(Fault("error", status=503, count=2, endpoint="text_to_image"))
        CREATES["text_to_image"](client, lambda s: "")
        assert len(sim.requests("/v1/text_to_image")) == 3
        assert sim.create_count("text_to_image") == 1

    def test_429_with_retry_after_is_honoured(self, client: runwayml.RunwayML, sim: Simulator) -> None:
        """A 429 burst with Retry-After is retried by the SDK after the hinted delay."""
        sim.faults.add(Fault("rate_limit", count=1, retry_after=0.2))
        CREATES["sound_effect"](client, lambda s: "")
        reqs = sim.requests("/v1/sound_effect")
        assert [r["status"] for r in reqs] == [429, 200]

    def test_daily_limit(self, client: runwayml.RunwayML, sim: Simulator) -> None:
        """Past the model's daily limit, creates answer 429 with Runway's text."""
        sim.config.model_limits["eleven_text_to_sound_v2"] = (5, 1)
        CREATES["sound_effect"](client, lambda s: "")
        with pytest.raises(runwayml.RateLimitError) as info:
            client.with_options(max_retries=0).sound_effect.create(model="eleven_text_to_sound_v2", prompt_text="x")
        assert info.value.body["error"] == "Your daily task limit has been reached."  # type: ignore[index]

    def test_not_enough_credits(self, client: runwayml.RunwayML, sim: Simulator) -> None:
        """A create costing more than the balance answers 400 with Runway's text and charges nothing."""
        sim.world.balance = 10
        with pytest.raises(runwayml.BadRequestError) as info:
            CREATES["text_to_video"](client, lambda s: "")
        assert info.value.body["error"] == "You do not have enough credits to run this task."  # type: ignore[index]
        assert sim.world.balance == 10


class TestAuth:
    def test_wrong_key(self, sim: Simulator) -> None:
        """A malformed key is refused with 401 and Runway's envelope."""
        with (
            runwayml.RunwayML(base_url=sim.url, api_key="key_nothex") as c,
            pytest.raises(runwayml.AuthenticationError),
        ):
            c.organization.retrieve()

    def test_configured_key_only(self) -> None:
        """With keys configured, another well-formed key is refused."""
        good, other = "key_" + "a" * 128, "key_" + "b" * 128
        with Simulator(SimConfig(keys=frozenset({good}))) as s:
            with runwayml.RunwayML(base_url=s.url, api_key=good) as c:
                assert c.organization.retrieve().credit_balance > 0
            with runwayml.RunwayML(base_url=s.url, api_key=other) as c, pytest.raises(runwayml.AuthenticationError):
                c.organization.retrieve()

    def test_version_header_required(self, sim: Simulator) -> None:
        """Without X-Runway-Version the API answers 400."""
        import httpx

        resp = httpx.get(sim.url + "/v1/organization", headers={"Authorization": f"Bearer {sim.key}"})
        assert resp.status_code == 400 and "X-Runway-Version" in resp.json()["error"]
        resp = httpx.get(
            sim.url + "/v1/organization",
            headers={"Authorization": f"Bearer {sim.key}", "X-Runway-Version": "1999-01-01"},
        )
        assert resp.status_code == 400
