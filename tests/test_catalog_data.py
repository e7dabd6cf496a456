"""The committed model catalogue (runwatch/data/catalog.json) against the pinned SDK and the API reference.

Expected values quote docs/catalog-format.md and the Runway API reference (§2.1 model counts, Appendix A
per-model schemas), so a regenerated file that drifts from either fails here.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import sys
import textwrap
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import load_script, not_applicable

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "runwatch" / "data" / "catalog.json"


gen_catalog = load_script(ROOT / "tools" / "gen_catalog.py", "gen_catalog")

# Reference §2.1: models per generation endpoint in runwayml 5.24.0.
REFERENCE_MODEL_COUNTS = {
    "image_to_video": 25,
    "text_to_video": 24,
    "video_to_video": 12,
    "text_to_image": 21,
    "character_performance": 1,
    "video_upscale": 2,
    "image_upscale": 1,
    "video_to_hdr": 1,
    "video_to_audio": 1,
    "text_to_speech": 4,
    "sound_effect": 3,
    "speech_to_speech": 1,
    "voice_dubbing": 1,
    "voice_isolation": 1,
}
OUTPUTS = {
    "image_to_video": "video",
    "text_to_video": "video",
    "video_to_video": "video",
    "video_upscale": "video",
    "video_to_hdr": "video",
    "character_performance": "video",
    "text_to_image": "image",
    "image_upscale": "image",
    "video_to_audio": "audio",
    "sound_effect": "audio",
    "text_to_speech": "audio",
    "speech_to_speech": "audio",
    "voice_dubbing": "audio",
    "voice_isolation": "audio",
}
MEDIA_NAMES = {
    "promptImage",
    "promptVideo",
    "referenceImages",
    "referenceVideos",
    "referenceAudio",
    "referenceAudios",
}
# Appendix A.1: the same six sizes, listed in a different order by the two models.
GEN4_TURBO_RATIOS = ["1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672"]
GEN45_RATIOS = ["1280:720", "720:1280", "1104:832", "960:960", "832:1104", "1584:672"]
# Reference §3.7: the 29 target languages of voice_dubbing, in the SDK's order.
DUBBING_LANGUAGES = [
    "en", "hi", "pt", "zh", "es", "fr", "de", "ja", "ar", "ru", "ko", "id", "it", "nl", "tr",
    "pl", "sv", "fil", "ms", "ro", "uk", "el", "cs", "da", "fi", "bg", "hr", "sk", "ta",
]  # fmt: skip
# The SDK types these as Iterable[object]: no string exists to carry a media kind (reference A.1/A.2).
UNTYPED_MEDIA_FIELDS = {
    ("image_to_video", "kling_4", "referenceVideos"),
    ("text_to_video", "kling_4", "referenceVideos"),
}

# docs/catalog-format.md: the members each TYPE kind may carry besides "kind".
KIND_MEMBERS: dict[str, set[str]] = {
    "string": {"media", "minLength", "maxLength", "lengthUnit", "rangeSource"},
    "integer": {"minimum", "maximum", "rangeSource"},
    "number": {"minimum", "maximum", "rangeSource"},
    "boolean": set(),
    "literal": {"values"},
    "array": {"items", "minItems", "maxItems", "rangeSource"},
    "object": {"name", "fields"},
    "map": {"values"},
    "union": {"options"},
    "null": set(),
    "any": set(),
}
INTEGER_2_TO_10 = {"kind": "integer", "minimum": 2, "maximum": 10, "rangeSource": "docstring"}
BOUNDS = {"minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems"}

Generated = tuple[dict[str, Any], list[str]]  # (catalogue, warnings)


@pytest.fixture(scope="module")
def generated() -> Generated:
    catalog, warnings = gen_catalog.generate()
    return catalog, warnings


@pytest.fixture(scope="module")
def catalog() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(CATALOG.read_text(encoding="utf-8"))
    return loaded


def models(catalog: dict[str, Any], endpoint: str) -> dict[str, Any]:
    found: dict[str, Any] = catalog["endpoints"][endpoint]["models"]
    return found


def field(catalog: dict[str, Any], endpoint: str, model: str, wire: str) -> dict[str, Any]:
    found: dict[str, Any] = models(catalog, endpoint)[model]["fields"][wire]
    return found


def walk_fields(fields: dict[str, Any], path: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, wire name, FIELD) for every field, nested objects included."""
    for wire, entry in fields.items():
        yield f"{path}.{wire}", wire, entry
        for node in walk_types(entry["type"]):
            if node["kind"] == "object":
                yield from walk_fields(node["fields"], f"{path}.{wire}")


def walk_types(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every TYPE inside `node` (itself included), not descending into object fields."""
    yield node
    if node["kind"] == "array":
        yield from walk_types(node["items"])
    elif node["kind"] == "map":
        yield from walk_types(node["values"])
    elif node["kind"] == "union":
        for option in node["options"]:
            yield from walk_types(option)


def all_fields(catalog: dict[str, Any]) -> Iterator[tuple[str, str, str, str, dict[str, Any]]]:
    """(endpoint, model, path, wire name, FIELD) across the whole catalogue."""
    for endpoint, spec in catalog["endpoints"].items():
        for model, entry in spec["models"].items():
            for path, wire, found in walk_fields(entry["fields"], f"{endpoint}/{model}"):
                yield endpoint, model, path, wire, found


def media_kinds(node: dict[str, Any]) -> set[str]:
    """Media kinds of strings anywhere inside a TYPE, nested objects included."""
    kinds = set()
    for inner in walk_types(node):
        if inner["kind"] == "string" and "media" in inner:
            kinds.add(inner["media"])
        if inner["kind"] == "object":
            for child in inner["fields"].values():
                kinds |= media_kinds(child["type"])
    return kinds


class TestPinnedSdk:
    def test_installed_sdk_is_the_pinned_version(self) -> None:
        """The tests run against runwayml 5.24.0, the version the generator and pyproject pin."""
        assert importlib.metadata.version("runwayml") == "5.24.0"
        assert gen_catalog.PINNED_SDK_VERSION == "5.24.0"
        pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
        assert "runwayml==5.24.0" in pyproject["project"]["optional-dependencies"]["test"]

    def test_generator_refuses_another_sdk_version(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        """With a different runwayml installed the generator stops with a clear message and writes nothing."""
        monkeypatch.setattr(gen_catalog, "installed_sdk_version", lambda: "5.23.0")
        with pytest.raises(gen_catalog.SdkVersionError, match=r"5\.23\.0"):
            gen_catalog.build_catalog()
        target = tmp_path / "catalog.json"
        assert gen_catalog.main([], catalog_path=target) == 2
        assert "pinned to 5.24.0" in capsys.readouterr().err
        assert not target.exists()


class TestCommittedFile:
    def test_committed_file_equals_fresh_generation(self, generated: Generated) -> None:
        """The committed catalogue is exactly what build_catalog() produces, byte for byte."""
        fresh, _ = generated
        assert json.loads(CATALOG.read_text(encoding="utf-8")) == fresh
        assert CATALOG.read_text(encoding="utf-8") == gen_catalog.render(fresh)

    def test_build_catalog_is_the_generated_catalogue(self, generated: Generated) -> None:
        """build_catalog(), the function other code imports, returns the same dict as a full generation."""
        assert gen_catalog.build_catalog() == generated[0]

    def test_file_is_sorted_indented_and_newline_terminated(self) -> None:
        """Keys are sorted, indentation is two spaces and the file ends in exactly one newline."""
        text = CATALOG.read_text(encoding="utf-8")
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def test_header(self, catalog: dict[str, Any]) -> None:
        """The header names the format version, the SDK it came from and the generator."""
        assert catalog["format"] == 1
        assert catalog["sdk"] == {"package": "runwayml", "version": "5.24.0"}
        assert catalog["generator"] == "tools/gen_catalog.py"

    def test_generator_places_every_field(self, generated: Generated) -> None:
        """For the pinned SDK the generator has nothing to warn about (every media-looking string placed)."""
        assert generated[1] == []

    def test_check_mode_accepts_the_committed_file(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`--check` exits 0 when the committed file is current."""
        assert gen_catalog.main(["--check"]) == 0
        assert "up to date" in capsys.readouterr().out

    def test_check_mode_reports_a_stale_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`--check` exits 1 and names what differs when the file is out of date."""
        stale = json.loads(CATALOG.read_text(encoding="utf-8"))
        del stale["endpoints"]["voice_isolation"]
        field(stale, "voice_dubbing", "eleven_voice_dubbing", "targetLang")["doc"] = "edited by hand"
        target = tmp_path / "catalog.json"
        target.write_text(json.dumps(stale), encoding="utf-8")
        assert gen_catalog.main(["--check"], catalog_path=target) == 1
        out = capsys.readouterr().out
        assert "endpoint voice_isolation: added" in out
        assert "voice_dubbing/eleven_voice_dubbing.targetLang: changed" in out


class TestEndpoints:
    def test_all_fourteen_endpoints_present(self, catalog: dict[str, Any]) -> None:
        """Exactly the 14 task endpoints, each with its path, params type and output kind."""
        assert set(catalog["endpoints"]) == set(OUTPUTS)
        for name, spec in catalog["endpoints"].items():
            assert spec["path"] == f"/v1/{name}"
            assert spec["output"] == OUTPUTS[name]
            assert spec["params_type"] == "".join(p.capitalize() for p in name.split("_")) + "CreateParams"

    @pytest.mark.parametrize(("endpoint", "count"), sorted(REFERENCE_MODEL_COUNTS.items()))
    def test_model_count_matches_reference(self, catalog: dict[str, Any], endpoint: str, count: int) -> None:
        """Model counts per endpoint are those of reference §2.1."""
        assert len(models(catalog, endpoint)) == count

    @pytest.mark.parametrize("endpoint", sorted(REFERENCE_MODEL_COUNTS))
    def test_models_match_sdk_union(self, catalog: dict[str, Any], endpoint: str) -> None:
        """Each endpoint lists one model per member of the SDK's params union, under its TypedDict name."""
        module = importlib.import_module(f"runwayml.types.{endpoint}_create_params")
        root = getattr(module, catalog["endpoints"][endpoint]["params_type"])
        members = typing.get_args(root) if typing.get_origin(root) is typing.Union else (root,)
        classes = sorted(entry["class"] for entry in models(catalog, endpoint).values())
        assert classes == sorted(member.__name__ for member in members)

    def test_every_model_declares_its_own_model_literal(self, catalog: dict[str, Any]) -> None:
        """The required `model` field of each model is the one-value literal of its key."""
        for endpoint in catalog["endpoints"]:
            for model, entry in models(catalog, endpoint).items():
                assert entry["fields"]["model"]["required"] is True
                assert entry["fields"]["model"]["type"] == {"kind": "literal", "values": [model]}


class TestReferenceSpotChecks:
    def test_gen45_image_to_video_duration(self, catalog: dict[str, Any]) -> None:
        """gen4.5 i2v duration: required integer 2–10, from its docstring (A.1)."""
        duration = field(catalog, "image_to_video", "gen4.5", "duration")
        assert duration["required"] is True
        assert duration["type"] == INTEGER_2_TO_10

    def test_gen4_turbo_ratio_values_in_sdk_order(self, catalog: dict[str, Any]) -> None:
        """gen4_turbo ratio lists its six sizes in the SDK's order, not gen4.5's (A.1)."""
        ratio = field(catalog, "image_to_video", "gen4_turbo", "ratio")
        assert ratio["required"] is True
        assert ratio["type"]["values"] == GEN4_TURBO_RATIOS
        gen45 = field(catalog, "image_to_video", "gen4.5", "ratio")["type"]["values"]
        assert gen45 == GEN45_RATIOS

    def test_speech_to_speech_media_is_audio_or_video_object(self, catalog: dict[str, Any]) -> None:
        """speech_to_speech media is a union of {type: audio, uri} and {type: video, uri} objects (A.10)."""
        media = field(catalog, "speech_to_speech", "eleven_multilingual_sts_v2", "media")
        assert media["required"] is True
        options = media["type"]["options"]
        assert [o["name"] for o in options] == ["MediaAudio", "MediaVideo"]
        for option, kind in zip(options, ["audio", "video"], strict=True):
            assert option["fields"]["type"]["type"] == {"kind": "literal", "values": [kind]}
            assert option["fields"]["uri"]["required"] is True
            assert option["fields"]["uri"]["type"] == {"kind": "string", "media": kind}

    def test_voice_dubbing_target_languages(self, catalog: dict[str, Any]) -> None:
        """voice_dubbing targetLang is required and offers the 29 language codes of §3.7."""
        target = field(catalog, "voice_dubbing", "eleven_voice_dubbing", "targetLang")
        assert target["required"] is True
        assert target["python"] == "target_lang"
        assert target["type"] == {"kind": "literal", "values": DUBBING_LANGUAGES}

    @pytest.mark.parametrize("model", ["magnific_video_upscaler_creative", "enhance_frame_rate"])
    def test_video_upscale_takes_a_video_uri(self, catalog: dict[str, Any], model: str) -> None:
        """Both video_upscale models require videoUri, a video reference (§3.6)."""
        video_uri = field(catalog, "video_upscale", model, "videoUri")
        assert video_uri["required"] is True
        assert video_uri["python"] == "video_uri"
        assert video_uri["type"] == {"kind": "string", "media": "video"}

    def test_eleven_v3_speed(self, catalog: dict[str, Any]) -> None:
        """eleven_v3 speed is an optional number 0.7–1.2 defaulting to 1.0 (§3.7)."""
        speed = field(catalog, "text_to_speech", "eleven_v3", "speed")
        assert speed["required"] is False
        assert speed["type"] == {"kind": "number", "minimum": 0.7, "maximum": 1.2, "rangeSource": "docstring"}
        assert speed["default"] == 1.0

    def test_prompt_text_length_in_utf16(self, catalog: dict[str, Any]) -> None:
        """Runway-native prompts are non-empty and at most 1000 UTF-16 code units (§3.0.3)."""
        prompt = field(catalog, "image_to_video", "gen4.5", "promptText")
        assert prompt["type"] == {
            "kind": "string",
            "minLength": 1,
            "maxLength": 1000,
            "lengthUnit": "utf16",
            "rangeSource": "docstring",
        }

    def test_seed_range_comes_from_the_reference(self, catalog: dict[str, Any]) -> None:
        """Seeds without a documented range take 0–4294967295 from reference §3.0.4; eleven_v3 states it."""
        seed = field(catalog, "image_to_video", "gen4.5", "seed")["type"]
        assert seed == {"kind": "integer", "minimum": 0, "maximum": 4294967295, "rangeSource": "reference"}
        v3 = field(catalog, "text_to_speech", "eleven_v3", "seed")["type"]
        assert v3 == {"kind": "integer", "minimum": 0, "maximum": 4294967295, "rangeSource": "docstring"}

    def test_gen4_image_turbo_reference_images(self, catalog: dict[str, Any]) -> None:
        """gen4_image_turbo requires one to three reference images (§3.4)."""
        refs = field(catalog, "text_to_image", "gen4_image_turbo", "referenceImages")
        assert refs["required"] is True
        assert (refs["type"]["minItems"], refs["type"]["maxItems"]) == (1, 3)
        assert refs["type"]["items"]["fields"]["uri"]["type"] == {"kind": "string", "media": "image"}

    def test_act_two_character_and_intensity(self, catalog: dict[str, Any]) -> None:
        """act_two takes an image or video character and an expressionIntensity of 1–5 (§3.5)."""
        character = field(catalog, "character_performance", "act_two", "character")["type"]
        kinds = [o["fields"]["uri"]["type"]["media"] for o in character["options"]]
        assert kinds == ["image", "video"]
        intensity = field(catalog, "character_performance", "act_two", "expressionIntensity")["type"]
        assert (intensity["minimum"], intensity["maximum"]) == (1, 5)

    def test_promptimage_shorthand_string_is_an_image(self, catalog: dict[str, Any]) -> None:
        """promptImage is an image string or an array of {uri, position} keyframes (§3.0.2)."""
        prompt_image = field(catalog, "image_to_video", "veo3.1", "promptImage")["type"]
        string, array = prompt_image["options"]
        assert string == {"kind": "string", "media": "image"}
        assert array["items"]["fields"]["position"]["type"]["values"] == ["first", "last"]

    def test_stated_defaults(self, catalog: dict[str, Any]) -> None:
        """Defaults appear where a docstring states one, and conditional ones are left out (§3.0.5)."""
        stated = {
            ("image_to_video", "kling2.5_turbo_pro", "duration"): 5,
            ("image_upscale", "magnific_precision_upscaler_v2", "scaleFactor"): 2,
            ("video_upscale", "magnific_video_upscaler_creative", "resolution"): "2k",
            ("text_to_video", "seedance2_5", "audio"): True,
            ("image_to_video", "kling3.0_pro", "cfgScale"): 0.5,
        }
        for (endpoint, model, wire), default in stated.items():
            assert field(catalog, endpoint, model, wire)["default"] == default
        assert "default" not in field(catalog, "image_to_video", "gen4.5", "proresProfile")
        assert "default" not in field(catalog, "text_to_image", "ideogram_4_5", "quality")


class TestMediaFields:
    def test_media_named_fields_carry_a_media_kind(self, catalog: dict[str, Any]) -> None:
        """Every *Uri/uri, promptImage/Video, referenceImages/Videos/Audio(s) field holds a media string."""
        missing = []
        for endpoint, model, path, wire, entry in all_fields(catalog):
            if not (wire.endswith(("Uri", "uri")) or wire in MEDIA_NAMES):
                continue
            if (endpoint, model, wire) in UNTYPED_MEDIA_FIELDS:
                assert entry["type"]["kind"] == "array"
                assert entry["type"]["items"] == {"kind": "any"}
                continue
            if not media_kinds(entry["type"]):
                missing.append(path)
        assert missing == []

    def test_media_kind_agrees_with_the_field_name(self, catalog: dict[str, Any]) -> None:
        """A field named after a kind (videoUri, promptImage, referenceAudios, ...) holds only that kind."""
        for _, _, path, wire, entry in all_fields(catalog):
            named = {k for k in ("image", "video", "audio") if k in wire.lower()}
            found = media_kinds(entry["type"])
            if named and found:
                assert found == named, path
        assert media_kinds(field(catalog, "text_to_image", "ideogram_4_5", "maskUri")["type"]) == {"image"}

    def test_only_strings_carry_media(self, catalog: dict[str, Any]) -> None:
        """`media` sits on string TYPEs only and is image, video or audio."""
        for _, _, path, _, entry in all_fields(catalog):
            for node in walk_types(entry["type"]):
                if "media" in node:
                    assert node["kind"] == "string", path
                    assert node["media"] in ("image", "video", "audio"), path


class TestFormat:
    def test_every_field_has_the_documented_members(self, catalog: dict[str, Any]) -> None:
        """FIELD has python, required, doc and type, plus default only when stated."""
        for _, _, path, _, entry in all_fields(catalog):
            assert set(entry) - {"default"} == {"python", "required", "doc", "type"}, path
            assert isinstance(entry["required"], bool)
            assert entry["doc"] == " ".join(entry["doc"].split()), path
            assert entry["python"].isidentifier() and entry["python"] == entry["python"].lower(), path

    def test_every_type_uses_only_its_kinds_members(self, catalog: dict[str, Any]) -> None:
        """Each TYPE has a known kind and only the members the format allows for it."""
        for _, _, path, _, entry in all_fields(catalog):
            for node in walk_types(entry["type"]):
                assert node["kind"] in KIND_MEMBERS, path
                assert set(node) - {"kind"} <= KIND_MEMBERS[node["kind"]], path

    def test_bounds_come_with_their_source(self, catalog: dict[str, Any]) -> None:
        """A bound always has rangeSource docstring or reference, and rangeSource always has a bound."""
        for _, _, path, _, entry in all_fields(catalog):
            for node in walk_types(entry["type"]):
                has_bound = bool(BOUNDS & set(node))
                assert has_bound == ("rangeSource" in node), path
                if has_bound:
                    assert node["rangeSource"] in ("docstring", "reference"), path
                if "lengthUnit" in node:
                    assert node["lengthUnit"] == "utf16" and "maxLength" in node, path

    def test_defaults_fit_their_types(self, catalog: dict[str, Any]) -> None:
        """Every recorded default is a value the field's type accepts."""
        for _, _, path, _, entry in all_fields(catalog):
            if "default" in entry:
                ok, value = gen_catalog.coerce_default(str(entry["default"]), entry["type"])
                assert ok and value == entry["default"], path


class TestDeterminism:
    def test_literal_order_ignores_typing_cache(self) -> None:
        """Literal values keep source order even when typing's cache holds an equal, reordered Literal."""
        cleanups = getattr(typing, "_cleanups", None)
        if cleanups is None:
            not_applicable("this Python exposes no typing cache to reset")
        from runwayml.types import image_to_video_create_params as i2v

        try:
            for clear in cleanups:
                clear()
            # gen4_turbo's ratio is gen4.5's set in another order; evaluated first, it wins the cache.
            typing.get_type_hints(i2v.Gen4Turbo, include_extras=True)
            poisoned = typing.get_type_hints(i2v.Gen4_5, include_extras=True)["ratio"]
            if list(typing.get_args(typing.get_args(poisoned)[0])) != GEN4_TURBO_RATIOS:
                not_applicable("typing no longer returns reordered literals from its cache")
            fresh = gen_catalog.build_catalog()
            assert field(fresh, "image_to_video", "gen4.5", "ratio")["type"]["values"] == GEN45_RATIOS
        finally:
            for clear in cleanups:
                clear()


class TestDocstringHeuristics:
    @pytest.mark.parametrize(
        ("doc", "integer", "bounds"),
        [
            ("Must be an integer from 2 to 10.", True, {"minimum": 2, "maximum": 10}),
            ("How much detail to add, from 0 (faithful) to 100.", True, {"minimum": 0, "maximum": 100}),
            ("Voice stability (0–1). Lower values...", False, {"minimum": 0, "maximum": 1}),
            ("Speech speed multiplier (0.7–1.2).", False, {"minimum": 0.7, "maximum": 1.2}),
            ("The number of images to generate (1-10).", True, {"minimum": 1, "maximum": 10}),
            ("In seconds, between 0.5 and 30 seconds.", False, {"minimum": 0.5, "maximum": 30}),
            ("Position as a fraction [0.0, 1.0] of the input.", False, {"minimum": 0.0, "maximum": 1.0}),
            ("Up to four images can be generated at once.", True, {"maximum": 4}),
            ("Target output resolution from 720p to 4k.", True, None),
            ("The number of audio variations to generate.", True, None),
        ],
    )
    def test_numeric_bounds(self, doc: str, integer: bool, bounds: dict[str, float] | None) -> None:
        """Numeric ranges are read only from unambiguous wording."""
        assert gen_catalog.numeric_bounds(doc, integer) == bounds

    @pytest.mark.parametrize(
        ("doc", "bounds"),
        [
            (
                "A non-empty string up to 1000 characters (measured in UTF-16 code units).",
                {"minLength": 1, "maxLength": 1000, "lengthUnit": "utf16"},
            ),
            ("A non-empty string up to 32,000 characters.", {"minLength": 1, "maxLength": 32000}),
            ("An optional text prompt up to 3500 characters.", {"maxLength": 3500}),
            ("Must be 3-16 characters, start with a letter.", {"minLength": 3, "maxLength": 16}),
            ("A text prompt describing what should appear in the output video.", None),
        ],
    )
    def test_string_bounds(self, doc: str, bounds: dict[str, Any] | None) -> None:
        """String lengths, their unit and non-emptiness come from the docstring wording."""
        assert gen_catalog.string_bounds(doc) == bounds

    @pytest.mark.parametrize(
        ("doc", "bounds"),
        [
            ("Up to three reference audio clips.", {"maxItems": 3}),
            ("An optional array of reference images (up to 7).", {"maxItems": 7}),
            ("An array of one to three images to be used as references.", {"minItems": 1, "maxItems": 3}),
            ("An array of up to 14 images. Up to five of those images can pass subject.", {"maxItems": 14}),
            ("The combined duration must not exceed 15 seconds.", None),
        ],
    )
    def test_item_bounds(self, doc: str, bounds: dict[str, int] | None) -> None:
        """List sizes: the first "up to N" or "N to M" bounds the list."""
        assert gen_catalog.item_bounds(doc) == bounds

    @pytest.mark.parametrize(
        ("doc", "candidates"),
        [
            ("The duration of the output video in seconds. Defaults to 5.", ["5"]),
            ("Scale for generation. Defaults to 0.5.", ["0.5"]),
            ("`mp4` (default) returns an H.264 .mp4.", ["mp4"]),
            ("Speed (0.7–1.2). 1.0 is default; values below slow down.", ["1.0"]),
            ("Live search. Default false for deterministic output.", ["false"]),
            ('Shot type. Defaults to "customize" when multiPrompt is provided.', []),
        ],
    )
    def test_default_candidates(self, doc: str, candidates: list[str]) -> None:
        """Stated defaults are found; conditional ones are not defaults."""
        assert gen_catalog.default_candidates(doc) == candidates

    @pytest.mark.parametrize(
        ("doc", "kinds"),
        [
            ("A HTTPS URL ... (e.g. `data:video/mp4;base64,...`) containing an encoded video.", {"video"}),
            ("A list of image URIs.", {"image"}),
            ("Text describing what should not appear in the output video.", set()),
        ],
    )
    def test_media_from_doc(self, doc: str, kinds: set[str]) -> None:
        """Only wording about encoded media or media URIs marks a string as a media reference."""
        assert gen_catalog.media_from_doc(doc) == kinds


SYNTHETIC_PARAMS = '''
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union
from typing_extensions import Annotated, Literal, NotRequired, Required, TypedDict

from runwayml._utils import PropertyInfo


class Clip(TypedDict, total=False):
    type: Required[Literal["video"]]

    uri: Required[str]


class Synthetic(TypedDict):
    model: Literal["synthetic"]

    tags: NotRequired[Dict[str, int]]

    extra: NotRequired[Dict[str, object]]

    clips: List[Clip]
    """Up to 4 clips."""

    level: NotRequired[Optional[int]]
    """A level from 1 to 3. Defaults to 2."""

    order: Annotated[Union[Literal["b", "a"], Sequence[str]], PropertyInfo(alias="sortOrder")]
'''


class TestTypeMapping:
    @pytest.fixture
    def synthetic(self, tmp_path: Path) -> dict[str, Any]:
        """Fields of a TypedDict in typing forms the pinned SDK does not use (Dict, List, Optional...)."""
        path = tmp_path / "synthetic_params.py"
        path.write_text(textwrap.dedent(SYNTHETIC_PARAMS), encoding="utf-8")
        spec = importlib.util.spec_from_file_location("synthetic_params", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
            builder = gen_catalog.CatalogBuilder()
            builder.use_module(module)
            fields: dict[str, Any] = builder.fields(module.Synthetic, "synthetic", "synthetic", "synthetic")
        finally:
            del sys.modules[spec.name]
        assert builder.warnings == []
        return fields

    def test_required_follows_totality_and_markers(self, synthetic: dict[str, Any]) -> None:
        """A total TypedDict's fields are required unless marked NotRequired."""
        assert {w: f["required"] for w, f in synthetic.items()} == {
            "model": True,
            "tags": False,
            "extra": False,
            "clips": True,
            "level": False,
            "sortOrder": True,
        }

    def test_maps_lists_and_optionals(self, synthetic: dict[str, Any]) -> None:
        """Dict[str, X] is a map, Dict[str, object] is any, List is an array, Optional adds null."""
        assert synthetic["tags"]["type"] == {"kind": "map", "values": {"kind": "integer"}}
        assert synthetic["extra"]["type"] == {"kind": "any"}
        clips = synthetic["clips"]["type"]
        assert (clips["kind"], clips["maxItems"], clips["rangeSource"]) == ("array", 4, "docstring")
        assert clips["items"]["fields"]["uri"]["type"] == {"kind": "string", "media": "video"}
        level = synthetic["level"]
        assert level["type"]["options"] == [
            {"kind": "integer", "minimum": 1, "maximum": 3, "rangeSource": "docstring"},
            {"kind": "null"},
        ]
        assert level["default"] == 2

    def test_alias_and_union_order(self, synthetic: dict[str, Any]) -> None:
        """Wire names come from PropertyInfo aliases; union members and literals keep source order."""
        order = synthetic["sortOrder"]
        assert order["python"] == "order"
        assert order["type"]["options"] == [
            {"kind": "literal", "values": ["b", "a"]},
            {"kind": "array", "items": {"kind": "string"}},
        ]
