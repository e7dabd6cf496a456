"""Credit estimates: every documented price reproduced, unknowns stay unknown, odd bodies never raise."""

from __future__ import annotations

import copy
import importlib
import json
import re
import typing
from collections.abc import Mapping
from importlib import resources
from typing import Any

import pytest

from runwatch import pricing
from runwatch.errors import CatalogError
from runwatch.pricing import Estimate, MediaHint, PriceBook, estimate, known_models, price_rule

from .conftest import type_names_in

I2V, T2V, V2V, T2I = "image_to_video", "text_to_video", "video_to_video", "text_to_image"
UPS, HDR, MAG = "video_upscale", "video_to_hdr", "magnific_video_upscaler_creative"

# Endpoint -> the SDK module whose TypedDicts type its request body (runwayml 5.24.0).
SDK_PARAMS = {
    "image_to_video": "image_to_video_create_params",
    "text_to_video": "text_to_video_create_params",
    "video_to_video": "video_to_video_create_params",
    "text_to_image": "text_to_image_create_params",
    "character_performance": "character_performance_create_params",
    "video_upscale": "video_upscale_create_params",
    "image_upscale": "image_upscale_create_params",
    "video_to_hdr": "video_to_hdr_create_params",
    "video_to_audio": "video_to_audio_create_params",
    "text_to_speech": "text_to_speech_create_params",
    "sound_effect": "sound_effect_create_params",
    "speech_to_speech": "speech_to_speech_create_params",
    "voice_dubbing": "voice_dubbing_create_params",
    "voice_isolation": "voice_isolation_create_params",
    "avatar_videos": "avatar_video_create_params",
}

# Ids gone from the SDK types that the reference still prices (§3.8, §7.4), with where they ran.
LEGACY = {
    "gen3a_turbo": {I2V},
    "gen4_aleph": {V2V},
    "veo3": {I2V, T2V},
    "upscale_v1": {"video_upscale"},
}


def _literals(tp: object) -> set[object]:
    if typing.get_origin(tp) is typing.Literal:
        return set(typing.get_args(tp))
    return {v for arg in typing.get_args(tp) for v in _literals(arg)}


@pytest.fixture(scope="module")
def sdk_models() -> dict[str, set[str]]:
    """Model id -> endpoints, read from the official SDK's create-params types."""
    found: dict[str, set[str]] = {}
    for endpoint, module_name in SDK_PARAMS.items():
        module = importlib.import_module(f"runwayml.types.{module_name}")
        for obj in vars(module).values():
            # the SDK builds its TypedDicts with typing_extensions, which typing.is_typeddict() misses
            if isinstance(obj, type) and hasattr(obj, "__total__") and hasattr(obj, "__required_keys__"):
                hint = typing.get_type_hints(obj).get("model")
                for model in _literals(hint) if hint is not None else ():
                    found.setdefault(str(model), set()).add(endpoint)
    assert found["gen4.5"] == {I2V, T2V}, "the SDK's types were not read"
    return found


def _raw_data() -> dict[str, Any]:
    text = resources.files("runwatch.data").joinpath("prices.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def hint(
    duration: float | None = None,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
) -> MediaHint:
    return MediaHint(duration=duration, width=width, height=height, fps=fps)


class TestDocumentedPrices:
    """Each price the reference's §7.4 states comes out of the shipped data."""

    @pytest.mark.parametrize(
        ("endpoint", "model", "body", "media", "credits"),
        [
            # per second of output, from `duration`
            (T2V, "gen4.5", {"duration": 5}, None, 60),
            (I2V, "gen4.5", {"duration": 10, "ratio": "1584:672"}, None, 120),
            (I2V, "gen4.5", {"duration": 2}, None, 24),
            (I2V, "gen4_turbo", {"duration": 10}, None, 50),
            (I2V, "gen4_turbo", {"duration": 5}, None, 25),
            (I2V, "gen3a_turbo", {"duration": 10}, None, 50),
            (T2V, "veo3", {"duration": 8}, None, 320),
            (I2V, "veo3", {}, None, 320),
            (I2V, "seedance2", {"duration": 5}, None, 180),
            (T2V, "seedance2", {"duration": 10}, None, 360),
            (V2V, "seedance2", {"duration": 4}, None, 144),
            # presumed audio split
            (I2V, "veo3.1", {"duration": 8, "audio": True}, None, 320),
            (T2V, "veo3.1", {"duration": 8, "audio": False}, None, 160),
            (T2V, "veo3.1", {"duration": 4, "audio": False}, None, 80),
            (I2V, "veo3.1_fast", {"duration": 8, "audio": True}, None, 120),
            (T2V, "veo3.1_fast", {"duration": 6, "audio": False}, None, 60),
            # output-format surcharges (pixels from ratio)
            (T2V, "gen4.5", {"duration": 5, "outputFormat": "mp4"}, None, 60),
            (T2V, "gen4.5", {"duration": 5, "outputFormat": "prores"}, None, 85),
            (I2V, "gen4.5", {"duration": 5, "outputFormat": "png_sequence"}, None, 85),
            (T2V, "gen4.5", {"duration": 5, "outputFormat": "hdr10", "ratio": "1280:720"}, None, 160),
            (I2V, "gen4.5", {"duration": 10, "outputFormat": "hlg", "ratio": "960:960"}, None, 320),
            (
                I2V,
                "gen4.5",
                {"duration": 5, "outputFormat": "sdr_rec709_10bit", "ratio": "1104:832"},
                None,
                160,
            ),
            (
                I2V,
                "gen4.5",
                {"duration": 5, "outputFormat": "hdr_exr_sequence", "ratio": "832:1104"},
                None,
                160,
            ),
            (T2V, "gen4.5", {"duration": 5, "outputFormat": "hdr_prores", "ratio": "3840:2160"}, None, 260),
            (T2V, "gen4.5", {"duration": 5, "outputFormat": "hdr10", "ratio": "2560:1440"}, None, 160),
            # per second of input media
            ("character_performance", "act_two", {}, {"reference.uri": hint(12)}, 60),
            (V2V, "gen4_aleph", {}, {"videoUri": hint(5)}, 75),
            ("video_upscale", "upscale_v1", {}, {"videoUri": hint(10)}, 20),
            (HDR, "ruby", {}, {"videoUri": hint(5.7, 1920, 1080)}, 114),
            (HDR, "ruby", {"outputFormat": "hdr_prores"}, {"videoUri": hint(5.7, 1920, 1080)}, 114),
            (HDR, "ruby", {}, {"videoUri": hint(10, 2560, 1440)}, 200),
            (HDR, "ruby", {}, {"videoUri": hint(10, 3840, 2160)}, 400),
            (HDR, "ruby", {}, {"videoUri": hint(5.75, 1280, 720)}, 115),
            (HDR, "ruby", {}, {"videoUri": hint(0.33, 1280, 720)}, 6.6),
            ("voice_isolation", "eleven_voice_isolation", {}, {"audioUri": hint(12)}, 2),
            ("voice_isolation", "eleven_voice_isolation", {}, {"audioUri": hint(13)}, 3),
            ("voice_isolation", "eleven_voice_isolation", {}, {"audioUri": hint(4.7)}, 1),
            ("voice_dubbing", "eleven_voice_dubbing", {}, {"audioUri": hint(10)}, 5),
            ("voice_dubbing", "eleven_voice_dubbing", {}, {"audioUri": hint(11)}, 6),
            ("speech_to_speech", "eleven_multilingual_sts_v2", {}, {"media.uri": hint(9)}, 3),
            ("speech_to_speech", "eleven_multilingual_sts_v2", {}, {"media.uri": hint(10)}, 4),
            # per output frame: 1 credit = 1 cent, so 0.9 cents/frame is 0.9 credits/frame
            (UPS, MAG, {}, {"videoUri": hint(3, fps=24)}, 65),
            (UPS, MAG, {"resolution": "2k"}, {"videoUri": hint(3, fps=24)}, 65),
            (UPS, MAG, {"resolution": "720p"}, {"videoUri": hint(10, fps=30)}, 210),
            (UPS, MAG, {"resolution": "1k"}, {"videoUri": hint(1, fps=25)}, 18),
            (UPS, MAG, {"resolution": "4k"}, {"videoUri": hint(2, fps=30)}, 72),
            (UPS, MAG, {"resolution": "4k"}, {"videoUri": hint(5, fps=23.976)}, 144),
            (UPS, MAG, {"fpsBoost": False}, {"videoUri": hint(0.04, fps=24)}, 1),
            # per image
            (T2I, "gen4_image", {"ratio": "1920:1080"}, None, 8),
            (T2I, "gen4_image", {"ratio": "1080:1920"}, None, 8),
            (T2I, "gen4_image", {"ratio": "1024:1024"}, None, 8),
            (T2I, "gen4_image", {"ratio": "1360:768"}, None, 8),
            (T2I, "gen4_image", {"ratio": "1680:720"}, None, 8),
            (T2I, "gen4_image", {"ratio": "1280:720"}, None, 5),
            (T2I, "gen4_image", {"ratio": "720:1280"}, None, 5),
            (T2I, "gen4_image", {"ratio": "960:720"}, None, 5),
            (T2I, "gen4_image", {"ratio": "720:720"}, None, 5),
            (T2I, "gen4_image_turbo", {"ratio": "1920:1080"}, None, 2),
            (T2I, "gen4_image_turbo", {"ratio": "720:720"}, None, 2),
            (T2I, "gen4_image_turbo", {}, None, 2),
            (T2I, "gemini_2.5_flash", {"ratio": "1024:1024"}, None, 5),
            (T2I, "muse_image", {}, None, 1),
            (T2I, "muse_image", {"outputCount": 4}, None, 4),
            (T2I, "ideogram_4_0", {"quality": "low"}, None, 4),
            (T2I, "ideogram_4_0", {"quality": "medium", "outputCount": 2}, None, 14),
            (T2I, "ideogram_4_0", {"quality": "high"}, None, 11),
            (T2I, "ideogram_4_5", {"quality": "very_low", "referenceImages": [{"uri": "x"}]}, None, 1),
            (T2I, "ideogram_4_5", {"quality": "low"}, None, 4),
            (T2I, "ideogram_4_5", {"quality": "medium", "outputCount": 3}, None, 24),
            (T2I, "ideogram_4_5", {"quality": "high"}, None, 25),
            (T2I, "ideogram_4_5", {}, None, 25),
            (T2I, "ideogram_4_5", {"referenceImages": [{"uri": "x"}]}, None, 8),
            (T2I, "ideogram_4_5", {"referenceImages": []}, None, 25),
            (T2I, "ideogram_4_5", {"referenceImages": [{"uri": "x"}], "preciseEdit": True}, None, 25),
            (T2I, "ideogram_4_5", {"referenceImages": [{"uri": "x"}], "preciseEdit": False}, None, 8),
            (T2I, "bria_fibo_1_5", {"ratio": "1024:1024"}, None, 5),
            (T2I, "bria_fibo_1_5", {"ratio": "576:1024"}, None, 5),
            (T2I, "bria_fibo_1_5", {"ratio": "2048:2048"}, None, 10),
            (T2I, "bria_fibo_1_5", {"ratio": "1152:2048"}, None, 10),
            # per characters, per generation
            ("text_to_speech", "eleven_multilingual_v2", {"promptText": "x" * 120}, None, 3),
            ("text_to_speech", "eleven_multilingual_v2", {"promptText": "x" * 50}, None, 1),
            ("text_to_speech", "eleven_multilingual_v2", {"promptText": "x" * 51}, None, 2),
            ("text_to_speech", "eleven_multilingual_v2", {"promptText": "hi"}, None, 1),
            ("text_to_speech", "eleven_multilingual_v2", {"promptText": "\U0001f600" * 25}, None, 1),
            ("text_to_speech", "eleven_multilingual_v2", {"promptText": "\U0001f600" * 26}, None, 2),
            ("sound_effect", "eleven_text_to_sound_v2", {"promptText": "rain"}, None, 2),
            ("sound_effect", "eleven_text_to_sound_v2", {"promptText": "rain", "duration": 30}, None, 2),
        ],
    )
    def test_price(
        self,
        endpoint: str,
        model: str,
        body: dict[str, Any],
        media: dict[str, MediaHint] | None,
        credits: float,
    ) -> None:
        """The estimate equals the price the sources state for these inputs."""
        result = estimate(endpoint, model, body, media)
        assert result.credits == credits, result
        assert result.known

    @pytest.mark.parametrize(
        ("endpoint", "model", "body", "media"),
        [
            (T2V, "gen4.5", {"duration": 5}, None),
            (I2V, "veo3.1", {"duration": 8, "audio": True}, None),
            (T2I, "gen4_image", {"ratio": "1280:720"}, None),
            (HDR, "ruby", {}, {"videoUri": hint(5.7, 1280, 720)}),
            (UPS, MAG, {"resolution": "720p"}, {"videoUri": hint(10, fps=30)}),
            ("text_to_speech", "eleven_multilingual_v2", {"promptText": "x" * 120}, None),
        ],
    )
    def test_whole_results_are_ints(
        self, endpoint: str, model: str, body: dict[str, Any], media: dict[str, MediaHint] | None
    ) -> None:
        """Whole credits come back as int; exact arithmetic keeps 0.7 × 30 × 10 at 210 and 20 × 5.7 at 114."""
        assert type(estimate(endpoint, model, body, media).credits) is int

    def test_fractional_seconds_stay_fractional(self) -> None:
        """ruby is linear in fractional seconds and is not rounded (no source says it is)."""
        result = estimate(HDR, "ruby", {}, {"videoUri": hint(0.33, 1280, 720)})
        assert result.credits == pytest.approx(6.6)
        assert isinstance(result.credits, float)


class TestBasisAndAssumptions:
    """Each estimate says how it was worked out and what it had to assume."""

    @pytest.mark.parametrize(
        ("endpoint", "model", "body", "media", "basis"),
        [
            (T2V, "gen4.5", {"duration": 5}, None, "12 credits/s × 5 s"),
            (
                T2V,
                "gen4.5",
                {"duration": 5, "outputFormat": "prores"},
                None,
                "17 credits/s (12 + 5 for outputFormat=prores) × 5 s",
            ),
            (
                T2V,
                "gen4.5",
                {"duration": 5, "outputFormat": "hdr10", "ratio": "1280:720"},
                None,
                "32 credits/s (12 + 20 for outputFormat=hdr10, ≤ 4 MP) × 5 s",
            ),
            (I2V, "veo3.1", {"duration": 8, "audio": True}, None, "40 credits/s (with audio) × 8 s"),
            (T2I, "gen4_image", {"ratio": "1920:1080"}, None, "8 credits/image (1080p) × 1 image"),
            (T2I, "muse_image", {"outputCount": 3}, None, "1 credit/image × 3 images"),
            (
                T2I,
                "ideogram_4_5",
                {"referenceImages": [{"uri": "x"}]},
                None,
                "8 credits/image (quality=medium by default) × 1 image",
            ),
            (
                "text_to_speech",
                "eleven_multilingual_v2",
                {"promptText": "x" * 120},
                None,
                "1 credit per 50 characters × 120 characters = 2.4, rounded up",
            ),
            (
                "voice_isolation",
                "eleven_voice_isolation",
                {},
                {"audioUri": hint(12)},
                "1 credit per 6 s × 12 s",
            ),
            (HDR, "ruby", {}, {"videoUri": hint(5.7, 1920, 1080)}, "20 credits/s (source ≤ 4 MP) × 5.7 s"),
            (
                UPS,
                MAG,
                {},
                {"videoUri": hint(3, fps=24)},
                "0.9 credits/frame (resolution=2k by default) × 24 fps × 3 s = 64.8, rounded up",
            ),
            (
                UPS,
                MAG,
                {},
                {"videoUri": hint(0.01, fps=24)},
                "0.9 credits/frame (resolution=2k by default) × 24 fps × 0.01 s = 0.216, rounded up",
            ),
            (
                "sound_effect",
                "eleven_text_to_sound_v2",
                {},
                None,
                "2 credits per generation (1–2; the maximum is used)",
            ),
        ],
    )
    def test_basis(
        self, endpoint: str, model: str, body: dict[str, Any], media: dict[str, MediaHint] | None, basis: str
    ) -> None:
        """The basis is short human text of the arithmetic."""
        assert estimate(endpoint, model, body, media).basis == basis

    @pytest.mark.parametrize(
        ("endpoint", "model", "body", "media", "credits", "expected"),
        [
            (T2V, "gen4.5", {}, None, 60, ["duration not given; assumed 5 s"]),
            (I2V, "gen4_turbo", {}, None, 25, ["duration not given; assumed 5 s"]),
            (I2V, "seedance2", {}, None, 180, ["duration not given; assumed 5 s"]),
            (
                T2V,
                "veo3.1",
                {"audio": False},
                None,
                160,
                ["presumed price", "duration not given; assumed 8 s"],
            ),
            (
                T2V,
                "veo3.1",
                {"duration": 4},
                None,
                160,
                ["presumed price", "audio not given (default undocumented); assumed true"],
            ),
            (I2V, "veo3.1_fast", {}, None, 120, ["presumed price", "assumed true", "assumed 8 s"]),
            (I2V, "gen3a_turbo", {"duration": 5}, None, 25, ["legacy model"]),
            (T2I, "gen4_image", {}, None, 8, ["ratio not given; assumed the dearer tier (1080p)"]),
            (T2I, "gen4_image", {"ratio": "auto"}, None, 8, ["ratio 'auto' gives no pixel size"]),
            (
                T2I,
                "ideogram_4_0",
                {},
                None,
                11,
                [
                    "quality not given (default undocumented); assumed high",
                    "outputCount not given; assumed 1",
                ],
            ),
            (
                T2V,
                "gen4.5",
                {"duration": 5, "outputFormat": "hdr10"},
                None,
                260,
                ["ratio not given; assumed the dearer tier (> 4 MP)"],
            ),
            (
                HDR,
                "ruby",
                {},
                {"videoUri": hint(5)},
                200,
                ["size of videoUri not given; assumed the dearer tier (source > 4 MP)"],
            ),
        ],
    )
    def test_assumptions(
        self,
        endpoint: str,
        model: str,
        body: dict[str, Any],
        media: dict[str, MediaHint] | None,
        credits: int,
        expected: list[str],
    ) -> None:
        """An undocumented default is taken at its dearest (an upper bound) and recorded as an assumption."""
        result = estimate(endpoint, model, body, media)
        assert result.credits == credits
        for fragment in expected:
            assert any(fragment in a for a in result.assumptions), (fragment, result.assumptions)

    @pytest.mark.parametrize(
        ("endpoint", "model", "body", "media"),
        [
            (T2V, "gen4.5", {"duration": 5, "ratio": "1280:720", "outputFormat": "prores"}, None),
            (T2I, "gen4_image", {"ratio": "1280:720"}, None),
            (T2I, "gen4_image_turbo", {}, None),
            (T2I, "ideogram_4_5", {"outputCount": 1}, None),
            (UPS, MAG, {}, {"videoUri": hint(3, fps=24)}),
            (HDR, "ruby", {}, {"videoUri": hint(5.7, 1920, 1080)}),
        ],
    )
    def test_documented_defaults_assume_nothing(
        self, endpoint: str, model: str, body: dict[str, Any], media: dict[str, MediaHint] | None
    ) -> None:
        """Documented defaults (mp4, 2k, ideogram's quality rule) and complete inputs need no assumption."""
        assert estimate(endpoint, model, body, media).assumptions == ()


class TestUnknown:
    """Where no source gives a price, or the body lacks what the rule reads, credits is None with a reason."""

    @pytest.mark.parametrize(
        ("endpoint", "model", "body", "media", "reason"),
        [
            (T2V, "no_such_model", {}, None, "no price data for model 'no_such_model'"),
            (T2V, "", {}, None, "no price data"),
            (T2V, "kling_4", {"duration": 5}, None, "no documented price for kling_4"),
            (I2V, "seedance2_5", {"duration": 5}, None, "no documented price"),
            (V2V, "aleph2", {}, {"videoUri": hint(5)}, "Base price not captured"),
            (T2I, "grok_imagine_image_2", {"ratio": "1024:1024"}, None, "Base price not captured"),
            (T2I, "gpt_image_2_5_flare", {}, None, "Base price not captured"),
            ("sound_effect", "mirelo_sfx_2_0", {"duration": 5}, None, "no documented price"),
            ("avatar_videos", "gwm1_avatars", {}, None, "no documented price"),
            (V2V, "gen4.5", {"duration": 5}, None, "no price for gen4.5 on endpoint 'video_to_video'"),
            ("nowhere", "gen4_turbo", {"duration": 5}, None, "it is offered on image_to_video"),
            (T2V, "seedance2", {"duration": "auto"}, None, "'auto' is billed at the model's maximum"),
            (HDR, "ruby", {}, None, "needs the duration of the input at videoUri"),
            (HDR, "ruby", {}, {"audioUri": hint(5)}, "needs the duration of the input at videoUri"),
            ("character_performance", "act_two", {}, {"videoUri": hint(5)}, "input at reference.uri"),
            ("voice_isolation", "eleven_voice_isolation", {}, {"audioUri": hint()}, "needs the duration"),
            (UPS, MAG, {}, {"videoUri": hint(3)}, "needs the fps"),
            (UPS, MAG, {"fpsBoost": True}, {"videoUri": hint(3, fps=24)}, "fpsBoost"),
            (
                UPS,
                MAG,
                {"resolution": "8k"},
                {"videoUri": hint(3, fps=24)},
                "resolution=8k has no documented price",
            ),
            (
                T2V,
                "gen4.5",
                {"duration": 5, "outputFormat": "mkv"},
                None,
                "outputFormat=mkv has no documented price",
            ),
            (T2I, "ideogram_4_0", {"quality": "ultra"}, None, "quality=ultra"),
            (T2V, "veo3.1", {"audio": "yes"}, None, "audio=yes has no documented price"),
            (T2V, "veo3.1", {"audio": 1}, None, "audio=1 has no documented price"),
            ("text_to_speech", "eleven_multilingual_v2", {}, None, "promptText must be a non-empty string"),
            ("text_to_speech", "eleven_multilingual_v2", {"promptText": ""}, None, "non-empty string"),
        ],
    )
    def test_unknown(
        self, endpoint: str, model: str, body: dict[str, Any], media: dict[str, MediaHint] | None, reason: str
    ) -> None:
        """The estimate is unknown and its basis says why."""
        result = estimate(endpoint, model, body, media)
        assert result.credits is None
        assert not result.known
        assert reason in result.basis, result.basis

    @pytest.mark.parametrize(
        ("endpoint", "model", "body", "media"),
        [
            (HDR, "ruby", {}, None),
            (HDR, "ruby", {"videoUri": "https://example.com/clip.mp4"}, {}),
            (UPS, MAG, {}, {"videoUri": hint(3)}),
        ],
    )
    def test_reasons_are_in_peoples_words(
        self, endpoint: str, model: str, body: dict[str, Any], media: dict[str, MediaHint] | None
    ) -> None:
        """The reason is shown by `runwatch validate` and in status files: it names fields, never a class of
        runwatch's own (an input without a readable length is a local file runwatch could not read, not a
        missing "MediaHint")."""
        result = estimate(endpoint, model, body, media)
        assert result.credits is None and result.basis
        assert type_names_in(result.basis) == set(), result.basis

    def test_unknown_keeps_no_partial_assumptions(self) -> None:
        """An assumption made on the way to a missing input is dropped: it says nothing about a price."""
        result = estimate(HDR, "ruby", {}, {"videoUri": hint(width=1920)})
        assert result.credits is None
        assert result.assumptions == ()


class TestOddBodies:
    """Bodies and hints of the wrong shape give an unknown estimate, never an exception."""

    @pytest.mark.parametrize(
        ("endpoint", "model", "body", "media"),
        [
            (T2V, "gen4.5", {"duration": "abc"}, None),
            (T2V, "gen4.5", {"duration": None}, None),
            (T2V, "gen4.5", {"duration": True}, None),
            (T2V, "gen4.5", {"duration": -5}, None),
            (T2V, "gen4.5", {"duration": 0}, None),
            (T2V, "gen4.5", {"duration": float("nan")}, None),
            (T2V, "gen4.5", {"duration": float("inf")}, None),
            (T2V, "gen4.5", {"duration": [5]}, None),
            (T2V, "gen4.5", {"duration": {"s": 5}}, None),
            (T2V, "gen4.5", {"duration": 10**400}, None),
            (T2V, "gen4.5", {"duration": 5, "outputFormat": ["prores"]}, None),
            (T2V, "gen4.5", {"duration": 5, "outputFormat": "hdr10", "ratio": 1280}, None),
            (T2V, "gen4.5", {"duration": 5, "outputFormat": "hdr10", "ratio": "1280x720"}, None),
            (T2V, "gen4.5", {"duration": 5, "outputFormat": "hdr10", "ratio": ":"}, None),
            (T2V, "gen4.5", {"duration": 5, "outputFormat": "hdr10", "ratio": "-1280:720"}, None),
            (T2I, "gen4_image", {}, None),
            (T2I, "gen4_image", {"ratio": None}, None),
            (T2I, "gen4_image", {"ratio": "0:0"}, None),
            (T2I, "gen4_image", {"ratio": "１２８０:７２０"}, None),
            (T2I, "muse_image", {"outputCount": "3"}, None),
            (T2I, "muse_image", {"outputCount": 2.5}, None),
            (T2I, "muse_image", {"outputCount": 0}, None),
            (T2I, "muse_image", {"outputCount": False}, None),
            (T2I, "ideogram_4_5", {"referenceImages": "not a list", "preciseEdit": "yes"}, None),
            ("text_to_speech", "eleven_multilingual_v2", {"promptText": 42}, None),
            ("text_to_speech", "eleven_multilingual_v2", {"promptText": "\ud800" * 60}, None),
            (
                "speech_to_speech",
                "eleven_multilingual_sts_v2",
                {"media": "not an object"},
                {"media.uri": hint(6)},
            ),
            (HDR, "ruby", {}, {"videoUri": "not a hint"}),
            (HDR, "ruby", {}, {"videoUri": hint(-1)}),
            (HDR, "ruby", {}, {"videoUri": hint(float("nan"))}),
            (HDR, "ruby", {}, {"videoUri": hint(5, width=-1, height=10)}),
            (HDR, "ruby", {}, {"videoUri": MediaHint(duration="5")}),  # type: ignore[arg-type]
            (HDR, "ruby", {}, ["not", "a", "mapping"]),
            (UPS, MAG, {}, {"videoUri": hint(3, fps=0)}),
            (T2V, "gen4.5", ["not", "a", "body"], None),
            (T2V, "gen4.5", None, None),
            (T2V, None, {}, None),
            (T2V, ["gen4.5"], {}, None),
            (None, "gen4.5", {}, None),
        ],
    )
    def test_never_raises(
        self, endpoint: str, model: str, body: Mapping[str, Any], media: Mapping[str, MediaHint] | None
    ) -> None:
        """Whatever the body holds, estimate() returns an Estimate with a reason or a number."""
        result = estimate(endpoint, model, body, media)
        assert isinstance(result, Estimate)
        assert result.basis
        assert result.credits is None or result.credits >= 0

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            ({"duration": "abc"}, "duration must be a positive number, got 'abc'"),
            ({"duration": -5}, "duration must be a positive number, got -5"),
            ({"duration": True}, "duration must be a positive number, got True"),
        ],
    )
    def test_wrong_type_reason(self, body: dict[str, Any], reason: str) -> None:
        """A wrong type is named in the reason."""
        result = estimate(T2V, "gen4.5", body)
        assert (result.credits, result.basis) == (None, reason)

    def test_body_is_not_changed(self) -> None:
        """Estimating reads the body and leaves it as it was."""
        body = {"duration": 5, "outputFormat": "hdr10", "nested": {"a": [1]}}
        before = copy.deepcopy(body)
        estimate(T2V, "gen4.5", body)
        assert body == before


class TestShippedData:
    """The data file names only real models, cites a source everywhere and loads once."""

    def test_every_model_is_an_sdk_or_legacy_model(self, sdk_models: dict[str, set[str]]) -> None:
        """Each id is a `model` literal of runwayml 5.24.0's create-params types or a legacy id."""
        unknown = known_models() - set(sdk_models) - set(LEGACY)
        assert not unknown

    def test_every_sdk_model_has_an_entry(self, sdk_models: dict[str, set[str]]) -> None:
        """No SDK model is missing: unpriced ones are recorded as unknown, not left out."""
        assert set(sdk_models) <= known_models()

    def test_endpoints_match_the_sdk(self, sdk_models: dict[str, set[str]]) -> None:
        """Each entry lists exactly the endpoints the SDK (or, for legacy ids, the reference) offers it on."""
        data = _raw_data()["models"]
        for model, entry in data.items():
            expected = LEGACY[model] if model in LEGACY else sdk_models[model]
            assert set(entry["endpoints"]) == expected, model

    def test_legacy_flag_marks_exactly_the_legacy_ids(self) -> None:
        """`legacy: true` is set on the removed models and nowhere else."""
        data = _raw_data()["models"]
        assert {m for m, e in data.items() if e.get("legacy")} == set(LEGACY)

    def test_every_entry_cites_a_source(self) -> None:
        """Every entry (and override) carries source tags as the reference writes them."""
        tag = r"\[[A-Za-z0-9][^\[\]]*\]"
        pattern = re.compile(rf"{tag}(, {tag})*")
        for model, entry in _raw_data()["models"].items():
            assert pattern.fullmatch(entry["source"]), model
            for override in entry.get("overrides", {}).values():
                assert pattern.fullmatch(override.get("source", entry["source"])), model

    def test_presumed_prices_are_exactly_the_uncertain_splits(self) -> None:
        """Only the veo3.1 audio splits, which the reference marks UNCERTAIN, are presumed."""
        data = _raw_data()["models"]
        presumed = {m for m, e in data.items() if e.get("confidence") == "presumed"}
        assert presumed == {"veo3.1", "veo3.1_fast"}
        assert all("UNCERTAIN" in data[m]["note"] for m in presumed)

    def test_unknown_entries_say_why(self) -> None:
        """An unknown price always has a note."""
        for model, entry in _raw_data()["models"].items():
            if entry["price"]["per"] == "unknown":
                assert entry["note"], model

    def test_priced_models(self) -> None:
        """The models with a price are the ones §7.4 prices (plus its legacy ids)."""
        data = _raw_data()["models"]
        priced = {m for m, e in data.items() if e["price"]["per"] != "unknown"}
        assert priced == {
            "act_two", "bria_fibo_1_5", "eleven_multilingual_sts_v2", "eleven_multilingual_v2",
            "eleven_text_to_sound_v2", "eleven_voice_dubbing", "eleven_voice_isolation", "gemini_2.5_flash",
            "gen3a_turbo", "gen4.5", "gen4_aleph", "gen4_image", "gen4_image_turbo", "gen4_turbo",
            "ideogram_4_0", "ideogram_4_5", "magnific_video_upscaler_creative", "muse_image", "ruby",
            "seedance2", "upscale_v1", "veo3", "veo3.1", "veo3.1_fast",
        }  # fmt: skip

    def test_loaded_once(self) -> None:
        """The file is read and checked once per process."""
        assert pricing.load_prices() is pricing.load_prices()

    def test_price_rule_returns_a_copy(self) -> None:
        """price_rule() gives the entry as written; changing it does not change later estimates."""
        rule = price_rule("gen4_turbo")
        assert rule is not None
        assert rule["price"] == {"per": "second", "rate": 5, "seconds": {"field": "duration", "assume": 5}}
        rule["price"]["rate"] = 1000
        assert estimate(I2V, "gen4_turbo", {"duration": 10}).credits == 50
        assert price_rule("no_such_model") is None

    def test_known_models(self) -> None:
        """known_models() lists every entry, priced or not."""
        models = known_models()
        assert {"gen4.5", "ruby", "kling_4", "veo3"} <= models
        assert "no_such_model" not in models


def _doc(price: object, **entry: object) -> dict[str, Any]:
    return {
        "format": 1,
        "models": {"m": {"endpoints": ["e", "f"], "price": price, "source": "[X]", "note": "n", **entry}},
    }


SECOND = {"per": "second", "rate": 2, "seconds": {"field": "duration"}}
LOW, HIGH = {"upTo": 5, "value": 1}, {"value": 2}


def _image(price: object) -> dict[str, Any]:
    return _doc({"per": "image", "price": price})


def _select(**extra: object) -> dict[str, Any]:
    return {"field": "q", "cases": [{"in": ["a"], "value": 1}], **extra}


def _tiered(*tiers: object, **extra: object) -> dict[str, Any]:
    return {"pixelsOf": {"field": "r"}, "tiers": list(tiers), **extra}


class TestPriceBook:
    """The rule format itself, on small hand-made price books."""

    def test_override_per_endpoint(self) -> None:
        """An override prices one endpoint differently and does not inherit the base confidence."""
        book = PriceBook(
            _doc(SECOND, confidence="presumed", overrides={"f": {"price": {"per": "generation", "price": 7}}})
        )
        assert book.estimate("e", "m", {"duration": 3}).credits == 6
        assert book.estimate("e", "m", {"duration": 3}).assumptions != ()
        assert book.estimate("f", "m", {"duration": 3}) == Estimate(7, "7 credits per generation", ())
        merged = book.price_rule("m", "f")
        assert merged is not None
        assert merged["price"] == {"per": "generation", "price": 7}
        assert "confidence" not in merged

    @pytest.mark.parametrize(
        ("price", "body", "credits"),
        [
            (SECOND, {"duration": 3}, 6),
            ({**SECOND, "every": 4, "round": "ceil"}, {"duration": 5}, 3),
            ({**SECOND, "minimum": 10}, {"duration": 1}, 10),
            ({**SECOND, "seconds": {"field": "d.s", "default": 2}}, {}, 4),
            ({**SECOND, "seconds": {"field": "d.s"}}, {"d": {"s": 4}}, 8),
            ({"per": "second", "rate": 0.1, "seconds": {"field": "duration"}}, {"duration": 3}, 0.3),
            ({"per": "image", "price": {"field": "k", "cases": [{"in": [1, 2], "value": 3}]}}, {"k": 2}, 3),
            ({"per": "image", "price": 1, "count": {"field": "n", "default": 4}}, {}, 4),
            ({"per": "characters", "field": "t", "rate": 2, "every": 10}, {"t": "abcde"}, 1),
        ],
    )
    def test_rules(self, price: dict[str, Any], body: dict[str, Any], credits: float) -> None:
        """Each rule kind and option computes as the format document says."""
        assert PriceBook(_doc(price)).estimate("e", "m", body).credits == pytest.approx(credits)

    def test_select_without_default_needs_the_field(self) -> None:
        """A select with no `absent` needs its field."""
        price = {"per": "image", "price": {"field": "q", "cases": [{"in": ["a"], "value": 1}]}}
        result = PriceBook(_doc(price)).estimate("e", "m", {})
        assert (result.credits, result.basis) == (None, "q not given and it has no documented default")

    @pytest.mark.parametrize(
        "data",
        [
            None,
            [],
            {"format": 2, "models": {"m": {}}},
            {"format": 1},
            {"format": 1, "models": {}},
            {"format": 1, "models": {"m": {}}, "extra": 1},
            {"format": 1, "models": {"m": {"endpoints": ["e"], "price": {"per": "unknown"}}}},
            _doc({"per": "unknown"}, note=""),
            _doc({"per": "unknown"}, confidence="documented"),
            _doc(SECOND, confidence="sure"),
            _doc(SECOND, endpoints=[]),
            _doc(SECOND, endpoints="e"),
            _doc(SECOND, legacy="yes"),
            _doc(SECOND, source=""),
            _doc(SECOND, colour="red"),
            _doc(SECOND, overrides={"g": {"price": SECOND}}),
            _doc(SECOND, overrides={"e": {"note": "no price"}}),
            _doc({"per": "hour", "rate": 1}),
            _doc({"rate": 1}),
            _doc("12 per second"),
            _doc({"per": "second", "rate": 1}),
            _doc({**SECOND, "rate": -1}),
            _doc({**SECOND, "rate": "12"}),
            _doc({**SECOND, "rate": True}),
            _doc({**SECOND, "every": 0}),
            _doc({**SECOND, "round": "up"}),
            _doc({**SECOND, "surcharges": {"a": 1}}),
            _doc({**SECOND, "seconds": {"field": "d", "media": "v"}}),
            _doc({**SECOND, "seconds": {"media": "v", "assume": 5}}),
            _doc({**SECOND, "seconds": {"field": "d", "default": 5, "assume": 5}}),
            _doc({**SECOND, "seconds": {"field": "d", "assume": 0}}),
            _doc({**SECOND, "unknownWhen": [{"when": {"field": "x"}, "reason": "r"}]}),
            _doc({**SECOND, "unknownWhen": [{"when": {"field": "x", "equals": 1}}]}),
            _doc({"per": "unknown", "round": "ceil"}),
            _image({"field": "q", "cases": []}),
            _image({"field": "q", "cases": [{"in": "a", "value": 1}]}),
            _image({"field": "q", "cases": [{"in": [["a"]], "value": 1}]}),
            _image(_select(absent="b")),
            _image(_select(absent=[{"when": {"field": "x", "equals": 1}, "use": "a"}])),
            _image(_tiered({"value": 1})),
            _image(_tiered({"value": 1}, {"value": 2})),
            _image(_tiered(LOW, {"upTo": 9, "value": 2})),
            _image(_tiered({"upTo": 9, "value": 1}, LOW, HIGH)),
            _image(_tiered(LOW, HIGH, pixelsOf={"field": "r", "media": "v"})),
            _image(_tiered(LOW, HIGH, absent="min")),
        ],
    )
    def test_malformed_data_raises_catalog_error(self, data: object) -> None:
        """A malformed price book is refused as a whole, with CatalogError, when it is loaded."""
        with pytest.raises(CatalogError, match=r"prices\.json"):
            PriceBook(data)

    def test_unreadable_file_raises_catalog_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A data file that is not JSON is reported as CatalogError, not as a JSON error."""

        class _Broken:
            def joinpath(self, name: str) -> _Broken:
                return self

            def read_text(self, encoding: str) -> str:
                return "{not json"

        monkeypatch.setattr(resources, "files", lambda package: _Broken())
        pricing.load_prices.cache_clear()
        try:
            with pytest.raises(CatalogError, match="cannot read the price data"):
                pricing.load_prices()
        finally:
            monkeypatch.undo()
            pricing.load_prices.cache_clear()
        assert pricing.estimate(T2V, "gen4.5", {"duration": 5}).credits == 60
