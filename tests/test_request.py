"""Request files: parsing, defaults, aliases, the runwatch table, media containment, validation before spending."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import tomli_w

from runwatch.catalog import load_catalog
from runwatch.errors import RequestError
from runwatch.request import (
    CONTROL_SUFFIXES,
    MEDIA_SUFFIXES,
    REQUEST_SUFFIXES,
    LocalMedia,
    Request,
    RequestOptions,
    bare_media_request,
    classify,
    is_ignored,
    load_request,
    request_name,
)

from .conftest import need, not_applicable, type_names_in

SAMPLES = Path(__file__).resolve().parent.parent / "runwatch" / "data" / "samples"
PRESET = {"type": "runway-preset", "presetId": "Maya"}


@dataclass(frozen=True)
class Inbox:
    """The attributes of an inbox a request reads, as the config module's frozen dataclass has them."""

    path: Path
    endpoint: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    media_field: str = "promptImage"
    accept_media: bool = False
    media_transport: str = "runway"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An inbox folder with the sample media in it."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    for name in ("still.jpg", "clip.mp4", "speech.mp3", "speech.wav"):
        shutil.copy(SAMPLES / name, folder / name)
    return folder


def write(folder: Path, name: str, data: dict[str, Any] | str | bytes) -> Path:
    """A request file: a dict is written as JSON or TOML by the name's suffix, text and bytes as they are."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    elif isinstance(data, str):
        path.write_text(data, "utf-8")
    elif name.endswith(".toml"):
        path.write_text(tomli_w.dumps(data), "utf-8")
    else:
        path.write_text(json.dumps(data), "utf-8")
    return path


def load(path: Path, root: Path, **inbox: Any) -> Request:
    unknown = inbox.pop("unknown_models", "pass")
    return load_request(path, root=root, inbox=Inbox(path=root, **inbox), unknown_models=unknown)


def refuse(path: Path, root: Path, **inbox: Any) -> RequestError:
    with pytest.raises(RequestError) as info:
        load(path, root, **inbox)
    assert info.value.path == str(path)
    return info.value


def problems(err: RequestError) -> dict[str, str]:
    """Problems by path; a path given twice keeps both messages."""
    out: dict[str, str] = {}
    for p in err.problems:
        out[p.path] = f"{out[p.path]} | {p.message}" if p.path in out else p.message
    return out


I2V = {"endpoint": "image_to_video", "model": "gen4_turbo", "promptImage": "still.jpg", "ratio": "1280:720"}


class TestNames:
    """What the inbox makes of a file name."""

    @pytest.mark.parametrize(
        ("name", "ignored"),
        [
            ("a.json", False),
            (".a.json", True),
            ("~a.json", True),
            ("a.json.tmp", True),
            ("a.json.TMP", True),
            ("clip.mp4.part", True),
            ("clip.mp4.partial", True),
            ("clip.mp4.crdownload", True),
            ("clip.mp4.download", True),
            ("a.json~", False),
            ("downloads.json", False),
            ("a.tmp.json", False),
            (".runwatch", True),
        ],
    )
    def test_is_ignored(self, name: str, ignored: bool) -> None:
        """Dotfiles, ``~`` files and partial-download suffixes (any case) are ignored; nothing else is."""
        assert is_ignored(name) is ignored

    @pytest.mark.parametrize(
        ("name", "accept_media", "kind"),
        [
            ("a.json", False, "request"),
            ("a.toml", False, "request"),
            ("a.JSON", False, "request"),
            ("a.cancel", False, "control"),
            ("a.approve", True, "control"),
            ("clip.mp4", False, "other"),
            ("clip.mp4", True, "media"),
            ("still.JPG", True, "media"),
            ("speech.wav", True, "media"),
            ("notes.txt", True, "other"),
            ("README", True, "other"),
            ("a.json.part", False, "ignored"),
            (".clip.mp4", True, "ignored"),
            ("~still.jpg", True, "ignored"),
        ],
    )
    def test_classify(self, name: str, accept_media: bool, kind: str) -> None:
        """Requests, control files, bare media (only when the inbox accepts them), ignored names, the rest."""
        assert classify(name, accept_media) == kind

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("shot.json", "shot"),
            ("shot.toml", "shot"),
            ("shot.v2.json", "shot.v2"),
            ("shot.cancel", "shot"),
            ("shot.approve", "shot"),
            ("clip.mp4", "clip"),
            ("shot", "shot"),
            ("notes.txt", "notes.txt"),
        ],
    )
    def test_request_name(self, name: str, expected: str) -> None:
        """The name is the file name without its request (or control or media) suffix."""
        assert request_name(Path("/in") / name) == expected

    def test_suffix_sets(self) -> None:
        """The suffix constants hold what the watcher relies on."""
        assert REQUEST_SUFFIXES == (".json", ".toml")
        assert CONTROL_SUFFIXES == (".cancel", ".approve")
        assert {
            ".jpg",
            ".jpeg",
            ".png",
            ".webp",
            ".mp4",
            ".mov",
            ".webm",
            ".mp3",
            ".wav",
            ".flac",
            ".ogg",
            ".m4a",
            ".aac",
        } <= MEDIA_SUFFIXES


# endpoint cases: request body, expected (field path, kind, file) of every local media
ENDPOINT_CASES: list[tuple[str, dict[str, Any], list[tuple[tuple[str | int, ...], str, str]]]] = [
    (
        "image_to_video",
        {
            "endpoint": "image_to_video",
            "model": "gen4_turbo",
            "promptImage": "still.jpg",
            "promptText": "a slow pan",
            "ratio": "1280:720",
            "duration": 5,
        },
        [(("promptImage",), "image", "still.jpg")],
    ),
    (
        "image_to_video_keyframes",
        {
            "endpoint": "image_to_video",
            "model": "gen4_turbo",
            "ratio": "1280:720",
            "promptImage": [{"uri": "still.jpg", "position": "first"}],
        },
        [(("promptImage", 0, "uri"), "image", "still.jpg")],
    ),
    (
        "text_to_video",
        {
            "endpoint": "text_to_video",
            "model": "veo3.1",
            "promptText": "waves at dusk",
            "ratio": "1920:1080",
            "duration": 8,
            "audio": True,
        },
        [],
    ),
    (
        "text_to_speech",
        {
            "endpoint": "text_to_speech",
            "model": "eleven_multilingual_v2",
            "promptText": "Hello there.",
            "voice": PRESET,
        },
        [],
    ),
    (
        "speech_to_speech",
        {
            "endpoint": "speech_to_speech",
            "model": "eleven_multilingual_sts_v2",
            "media": {"type": "audio", "uri": "speech.mp3"},
            "voice": PRESET,
        },
        [(("media", "uri"), "audio", "speech.mp3")],
    ),
    (
        "speech_to_speech_video",
        {
            "endpoint": "speech_to_speech",
            "model": "eleven_multilingual_sts_v2",
            "media": {"type": "video", "uri": "clip.mp4"},
            "voice": PRESET,
        },
        [(("media", "uri"), "video", "clip.mp4")],
    ),
    (
        "text_to_image",
        {
            "endpoint": "text_to_image",
            "model": "gen4_image_turbo",
            "promptText": "@cat on a sofa",
            "ratio": "1920:1080",
            "referenceImages": [
                {"uri": "still.jpg", "tag": "cat"},
                {"uri": "https://example.com/b.png", "tag": "sofa"},
            ],
        },
        [(("referenceImages", 0, "uri"), "image", "still.jpg")],
    ),
]


class TestRequests:
    """Well-formed requests for several endpoints, in both formats."""

    @pytest.mark.parametrize("suffix", [".json", ".toml"])
    @pytest.mark.parametrize(("case", "data", "expected"), ENDPOINT_CASES, ids=[c[0] for c in ENDPOINT_CASES])
    def test_endpoints(
        self,
        root: Path,
        suffix: str,
        case: str,
        data: dict[str, Any],
        expected: list[tuple[tuple[str | int, ...], str, str]],
    ) -> None:
        """The body is the file minus ``endpoint``/``runwatch``; each local media file is found and probed."""
        path = write(root, "shot" + suffix, data)
        req = load(path, root)
        assert req.name == "shot"
        assert req.source == path
        assert req.format == suffix[1:]
        assert req.endpoint == data["endpoint"]
        assert req.model == data["model"]
        assert req.known_model
        assert req.body == {k: v for k, v in data.items() if k != "endpoint"}
        assert req.options == RequestOptions("shot")
        got = [(m.field, m.kind, m.rel) for m in req.media]
        assert got == expected
        for media in req.media:
            assert media.file == (root / media.rel).resolve()
            assert media.size == (root / media.rel).stat().st_size
            assert media.content_type is not None and media.content_type.startswith(media.kind + "/")

    @pytest.mark.parametrize(
        "uri",
        [
            "https://example.com/still.jpg",
            "HTTPS://example.com/still.jpg",
            "runway://abc123",
            "data:image/png;base64,iVBORw0KGgo=",
        ],
    )
    def test_uris_pass_through(self, root: Path, uri: str) -> None:
        """https://, runway:// and data: URIs are left as they are and are not local media."""
        req = load(write(root, "a.json", {**I2V, "promptImage": uri}), root)
        assert req.body["promptImage"] == uri
        assert req.media == ()

    def test_subfolder_paths(self, root: Path) -> None:
        """Paths are relative to the request file's folder; a ``..`` that stays inside the inbox is fine."""
        (root / "shots" / "media").mkdir(parents=True)
        shutil.copy(SAMPLES / "portrait.jpg", root / "shots" / "media" / "p.jpg")
        path = write(
            root / "shots",
            "a.json",
            {
                "endpoint": "text_to_image",
                "model": "gen4_image_turbo",
                "promptText": "@one and @two",
                "ratio": "1024:1024",
                "referenceImages": [
                    {"uri": "media/p.jpg", "tag": "one"},
                    {"uri": "../still.jpg", "tag": "two"},
                    {"uri": "./media/../../still.jpg", "tag": "three"},
                ],
            },
        )
        req = load(path, root)
        assert [m.file for m in req.media] == [
            (root / "shots/media/p.jpg").resolve(),
            (root / "still.jpg").resolve(),
            (root / "still.jpg").resolve(),
        ]
        assert [m.rel for m in req.media] == ["media/p.jpg", "../still.jpg", "./media/../../still.jpg"]

    def test_bom_accepted(self, root: Path) -> None:
        """A UTF-8 byte-order mark, as some editors write, is skipped."""
        req = load(write(root, "a.json", b"\xef\xbb\xbf" + json.dumps(I2V).encode()), root)
        assert req.model == "gen4_turbo"

    def test_unicode_text(self, root: Path) -> None:
        """Non-ASCII text travels as it is."""
        req = load(write(root, "a.toml", {**I2V, "promptText": "Kirschblüten im Wind, 夜"}), root)
        assert req.body["promptText"] == "Kirschblüten im Wind, 夜"

    def test_nothing_is_modified(self, root: Path) -> None:
        """Loading (even a refused request) reads files and changes none."""
        write(root, "ok.json", I2V)
        write(root, "bad.json", {**I2V, "promptImage": "clip.mp4", "ratio": "1:1"})

        def snapshot() -> dict[str, tuple[str, int, int]]:
            out = {}
            for p in sorted(root.rglob("*")):
                st = p.lstat()
                out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_mode)
            return out

        before = snapshot()
        load(root / "ok.json", root)
        refuse(root / "bad.json", root)
        assert snapshot() == before


class TestMalformed:
    """Files that cannot be parsed, or parse into something that is not a request."""

    @pytest.mark.parametrize(
        ("name", "text", "where"),
        [
            ("a.json", '{"endpoint": "image_to_video", "model": ', "line 1, column 41"),
            ("a.json", '{"endpoint": "image_to_video",\n  "model": "gen4_turbo",\n', "line 3, column 1"),
            ("a.json", "", "line 1, column 1"),
            ("a.json", "{'model': 'x'}", "line 1, column 2"),
            ("a.toml", 'endpoint = "image_to_video"\nmodel = "gen4', "end of document"),
            ("a.toml", 'endpoint = "image_to_video"\nmodel = gen4\n', "line 2, column 9"),
            ("a.toml", "endpoint = \n", "line 1"),
            ("a.toml", "[runwatch\n", "line 1"),
        ],
    )
    def test_parse_errors_are_incomplete(self, root: Path, name: str, text: str, where: str) -> None:
        """A file that does not parse may still be being written: ``incomplete``, with line and column."""
        err = refuse(write(root, name, text), root)
        assert err.incomplete
        assert len(err.problems) == 1
        assert err.problems[0].path == ""
        assert where in err.problems[0].message

    def test_bad_utf8_is_incomplete(self, root: Path) -> None:
        """Bytes that are not UTF-8 (perhaps a multi-byte character cut in half) are located."""
        err = refuse(write(root, "a.json", b'{"promptText": "caf\xc3'), root)
        assert err.incomplete
        assert "line 1, column 20" in err.problems[0].message

    @pytest.mark.parametrize("text", ["[1, 2]", '"text"', "42", "null"])
    def test_top_level_must_be_object(self, root: Path, text: str) -> None:
        """A complete JSON file that is not an object is refused outright (not incomplete)."""
        err = refuse(write(root, "a.json", text), root)
        assert not err.incomplete
        assert "object" in err.problems[0].message

    @pytest.mark.parametrize(
        ("name", "text"),
        [
            ("a.json", '{"model": "gen4_turbo", "seed": NaN}'),
            ("a.json", '{"model": "gen4_turbo", "seed": Infinity}'),
            ("a.json", '{"model": "gen4_turbo", "seed": -Infinity}'),
            ("a.json", '{"model": "gen4_turbo", "seed": 1e999}'),
            ("a.toml", 'model = "gen4_turbo"\nseed = nan\n'),
            ("a.toml", 'model = "gen4_turbo"\nseed = -inf\n'),
        ],
    )
    def test_non_finite_numbers(self, root: Path, name: str, text: str) -> None:
        """NaN and infinities cannot be sent as JSON; they are refused by name."""
        err = refuse(write(root, name, text), root)
        assert not err.incomplete
        assert "finite" in err.problems[0].message

    @pytest.mark.parametrize(
        ("text", "paths"),
        [
            ('{"endpoint": "image_to_video", "model": "gen4_turbo", "model": "gen4.5"}', ["model"]),
            ('{"endpoint": "text_to_speech", "voice": {"presetId": "Maya", "presetId": "Mark"}}', ["voice.presetId"]),
            (
                '{"endpoint": "text_to_image", "referenceImages": [{"uri": "a", "uri": "b"}], "seed": 1, "seed": 2}',
                ["referenceImages[0].uri", "seed"],
            ),
        ],
    )
    def test_duplicate_keys(self, root: Path, text: str, paths: list[str]) -> None:
        """A key given twice is an error naming the key and where it is, not a silent last-one-wins."""
        err = refuse(write(root, "a.json", text), root)
        dups = {p.path: p.message for p in err.problems if "more than once" in p.message}
        assert sorted(dups) == sorted(paths)
        for path, message in dups.items():
            assert json.dumps(path.rsplit(".", 1)[-1].split("[")[0]) in message
        assert not err.incomplete

    @pytest.mark.parametrize(
        ("name", "text"),
        [
            ("a.json", "[" * 100_000 + "]" * 100_000),
            ("a.json", '{"a":' * 5_000 + "1" + "}" * 5_000),  # deeper than the recursion limit, within the key limit
            ("a.toml", "x = " + "[" * 100_000 + "]" * 100_000),
            ("a.toml", "x = " + "{a = " * 5_000 + "1" + "}" * 5_000),
            ("a.json", json.dumps({**I2V, "x": json.loads("[" * 40 + "]" * 40)})),
        ],
    )
    def test_deep_nesting(self, root: Path, name: str, text: str) -> None:
        """Deep nesting is refused cleanly: a RequestError, never a RecursionError."""
        err = refuse(write(root, name, text), root)
        assert any("nested too deeply" in p.message for p in err.problems)
        assert not err.incomplete

    def test_nesting_limit(self, root: Path) -> None:
        """32 levels are allowed (a model the catalogue lacks may take anything); 33 are not."""

        def nest(levels: int) -> Any:
            value: Any = 1
            for _ in range(levels):
                value = {"k": value}
            return value

        base = {"endpoint": "image_to_video", "model": "gen99_future", "promptText": "x"}
        req = load(write(root, "ok.json", {**base, "deep": nest(31)}), root)  # the top level is the first
        assert req.body["deep"] == nest(31)
        err = refuse(write(root, "deep.json", {**base, "deep": nest(32)}), root)
        assert err.problems[0].path.startswith("deep.k.k")

    def test_too_large(self, root: Path) -> None:
        """A file over 1 MiB is not a request and is not read."""
        path = write(root, "big.json", json.dumps({**I2V, "promptText": "x" * (1 << 20)}))
        err = refuse(path, root)
        assert "1 MiB" in err.problems[0].message
        assert not err.incomplete

    def test_toml_datetime(self, root: Path) -> None:
        """TOML dates cannot go into a JSON body; the field is named."""
        text = 'endpoint = "image_to_video"\nmodel = "gen99_future"\nwhen = 1979-05-27T07:32:00Z\n'
        err = refuse(write(root, "a.toml", text), root)
        assert "date" in problems(err)["when"]

    def test_lone_surrogate(self, root: Path) -> None:
        r"""A JSON ``\ud800`` escape is not text and could not be sent."""
        err = refuse(write(root, "a.json", json.dumps(I2V)[:-1] + ', "promptText": "a\\ud800b"}'), root)
        assert "surrogate" in problems(err)["promptText"]

    def test_missing_request_file(self, root: Path) -> None:
        """A request that vanished (renamed away mid-scan) is incomplete, not rejected."""
        err = refuse(root / "gone.json", root)
        assert err.incomplete

    def test_fifo_request_not_opened(self, root: Path) -> None:
        """A FIFO named like a request is refused without being opened (opening it would block)."""
        os.mkfifo(root / "pipe.json")
        err = refuse(root / "pipe.json", root)
        assert "regular file" in err.problems[0].message

    def test_request_symlink_out_of_root(self, root: Path, tmp_path: Path) -> None:
        """A request file that is a symlink to a file outside the inbox is not read."""
        outside = write(tmp_path, "secret.json", I2V)
        (root / "a.json").symlink_to(outside)
        err = refuse(root / "a.json", root)
        assert "outside" in err.problems[0].message


class TestDefaults:
    """The inbox's defaults are merged under the file."""

    def test_merged_under(self, root: Path) -> None:
        """Defaults fill what the file leaves out; the file wins where both speak."""
        path = write(root, "a.json", {"promptImage": "still.jpg", "duration": 10})
        req = load(
            path, root, endpoint="image_to_video", defaults={"model": "gen4_turbo", "ratio": "1280:720", "duration": 5}
        )
        assert req.body == {"model": "gen4_turbo", "ratio": "1280:720", "duration": 10, "promptImage": "still.jpg"}
        assert req.endpoint == "image_to_video"

    def test_nested_tables_merged_key_by_key(self, root: Path) -> None:
        """A nested table in the file adds to the default's table instead of replacing it."""
        path = write(root, "a.toml", {"promptText": "Hi.", "voice": {"presetId": "Mark"}})
        req = load(
            path,
            root,
            endpoint="text_to_speech",
            defaults={"model": "eleven_multilingual_v2", "voice": {"type": "runway-preset", "presetId": "Maya"}},
        )
        assert req.body["voice"] == {"type": "runway-preset", "presetId": "Mark"}

    def test_lists_replaced(self, root: Path) -> None:
        """Lists are values: the file's list replaces the default's."""
        default_refs = [{"uri": "https://example.com/a.png", "tag": "aaa"}, {"uri": "https://example.com/b.png"}]
        path = write(root, "a.json", {"referenceImages": [{"uri": "still.jpg", "tag": "cat"}]})
        req = load(
            path,
            root,
            endpoint="text_to_image",
            defaults={
                "model": "gen4_image_turbo",
                "promptText": "@cat",
                "ratio": "1024:1024",
                "referenceImages": default_refs,
            },
        )
        assert req.body["referenceImages"] == [{"uri": "still.jpg", "tag": "cat"}]

    def test_read_only_defaults(self, root: Path) -> None:
        """Frozen config values (read-only mappings, tuples) are copied into plain JSON containers."""
        ref = types.MappingProxyType({"uri": "still.jpg", "tag": "cat"})
        defaults = types.MappingProxyType(
            {"model": "gen4_image_turbo", "ratio": "1024:1024", "referenceImages": (ref,)}
        )
        req = load(write(root, "a.json", {"promptText": "@cat"}), root, endpoint="text_to_image", defaults=defaults)
        assert req.body["referenceImages"] == [{"uri": "still.jpg", "tag": "cat"}]
        assert type(req.body["referenceImages"]) is list and type(req.body["referenceImages"][0]) is dict
        req.body["referenceImages"][0]["tag"] = "dog"
        assert ref["tag"] == "cat"
        assert [m.field for m in req.media] == [("referenceImages", 0, "uri")]

    def test_file_endpoint_wins(self, root: Path) -> None:
        """The file's endpoint overrides the inbox's."""
        path = write(
            root, "a.json", {"endpoint": "text_to_video", "model": "veo3.1", "promptText": "x", "ratio": "1280:720"}
        )
        assert load(path, root, endpoint="image_to_video").endpoint == "text_to_video"

    def test_defaults_in_snake_case(self, root: Path) -> None:
        """Defaults may use the SDK's spellings too; they meet the file's under wire names, file winning."""
        path = write(root, "a.json", {"promptText": "from the file"})
        req = load(
            path,
            root,
            endpoint="image_to_video",
            defaults={
                "model": "gen4_turbo",
                "ratio": "1280:720",
                "prompt_image": "still.jpg",
                "prompt_text": "from defaults",
            },
        )
        assert req.body["promptText"] == "from the file"
        assert req.body["promptImage"] == "still.jpg"
        assert [m.field for m in req.media] == [("promptImage",)]


class TestAliases:
    """The official SDK's snake_case spellings are accepted and renamed to wire names."""

    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (
                {
                    "endpoint": "image_to_video",
                    "model": "gen4_turbo",
                    "prompt_image": "still.jpg",
                    "prompt_text": "pan",
                    "ratio": "1280:720",
                },
                {"model": "gen4_turbo", "promptImage": "still.jpg", "promptText": "pan", "ratio": "1280:720"},
            ),
            (
                {
                    "endpoint": "text_to_speech",
                    "model": "eleven_multilingual_v2",
                    "prompt_text": "Hi.",
                    "voice": {"type": "runway-preset", "preset_id": "Maya"},
                },
                {"model": "eleven_multilingual_v2", "promptText": "Hi.", "voice": PRESET},
            ),
            (
                {
                    "endpoint": "image_to_video",
                    "model": "gen4_turbo",
                    "prompt_image": "still.jpg",
                    "ratio": "1280:720",
                    "content_moderation": {"public_figure_threshold": "low"},
                },
                {
                    "model": "gen4_turbo",
                    "promptImage": "still.jpg",
                    "ratio": "1280:720",
                    "contentModeration": {"publicFigureThreshold": "low"},
                },
            ),
            (
                {
                    "endpoint": "text_to_image",
                    "model": "gen4_image_turbo",
                    "prompt_text": "@cat",
                    "ratio": "1024:1024",
                    "reference_images": [{"uri": "still.jpg", "tag": "cat"}],
                },
                {
                    "model": "gen4_image_turbo",
                    "promptText": "@cat",
                    "ratio": "1024:1024",
                    "referenceImages": [{"uri": "still.jpg", "tag": "cat"}],
                },
            ),
        ],
    )
    @pytest.mark.parametrize("suffix", [".json", ".toml"])
    def test_renamed(self, root: Path, suffix: str, data: dict[str, Any], expected: dict[str, Any]) -> None:
        """Top-level and nested aliases become wire names; media are found under the wire name."""
        req = load(write(root, "a" + suffix, data), root)
        assert req.body == expected
        assert all(m.field[0] in expected for m in req.media)

    @pytest.mark.parametrize(
        ("data", "path"),
        [
            ({**I2V, "prompt_text": "a", "promptText": "b"}, "promptText"),
            ({**I2V, "prompt_image": "still.jpg"}, "promptImage"),
            (
                {
                    "endpoint": "text_to_speech",
                    "model": "eleven_multilingual_v2",
                    "promptText": "Hi.",
                    "voice": {"type": "runway-preset", "presetId": "Maya", "preset_id": "Mark"},
                },
                "voice.presetId",
            ),
            (
                {
                    "endpoint": "image_to_video",
                    "model": "gen99_future",
                    "promptImage": "still.jpg",
                    "my_field": 1,
                    "myField": 2,
                },
                "myField",
            ),
        ],
    )
    def test_both_spellings(self, root: Path, data: dict[str, Any], path: str) -> None:
        """One field given under both spellings is a problem on its wire name, naming both spellings."""
        err = refuse(write(root, "a.json", data), root)
        message = problems(err)[path]
        assert "twice" in message
        assert not err.incomplete

    def test_unknown_model_generic(self, root: Path) -> None:
        """For a model the catalogue lacks, snake_case keys become camelCase at every level."""
        req = load(
            write(
                root,
                "a.json",
                {
                    "endpoint": "image_to_video",
                    "model": "gen99_future",
                    "prompt_text": "x",
                    "prompt_image": [{"uri": "still.jpg", "position": "first"}],
                    "camera_motion": {"pan_speed": 2, "alreadyCamel": True, "x": 1},
                },
            ),
            root,
        )
        assert req.body == {
            "model": "gen99_future",
            "promptText": "x",
            "promptImage": [{"uri": "still.jpg", "position": "first"}],
            "cameraMotion": {"panSpeed": 2, "alreadyCamel": True, "x": 1},
        }
        assert not req.known_model

    def test_unknown_model_keeps_snake_wire_names(self, root: Path) -> None:
        """Wire names that are snake_case in the API itself (aleph2's ``range.start_seconds``) stay as they are."""
        req = load(
            write(
                root,
                "a.json",
                {
                    "endpoint": "video_to_video",
                    "model": "aleph99",
                    "video_uri": "clip.mp4",
                    "keyframes": [{"uri": "still.jpg", "seconds": 1, "range": {"start_seconds": 0, "end_seconds": 2}}],
                },
            ),
            root,
        )
        assert req.body["keyframes"][0]["range"] == {"start_seconds": 0, "end_seconds": 2}
        assert req.body["videoUri"] == "clip.mp4"


class TestRunwatchTable:
    """The request's own options."""

    def test_options(self, root: Path) -> None:
        """name, priority and max_credits are read and kept out of the body."""
        path = write(root, "a.toml", {**I2V, "runwatch": {"name": "hero shot", "priority": 5, "max_credits": 50}})
        req = load(path, root)
        assert req.options == RequestOptions("hero shot", 5, 50.0)
        assert req.name == "hero shot"
        assert "runwatch" not in req.body and "endpoint" not in req.body

    def test_defaults(self, root: Path) -> None:
        """Without a table the name is the file name and nothing else is set."""
        assert load(write(root, "shot-01.json", I2V), root).options == RequestOptions("shot-01", 0, None)

    @pytest.mark.parametrize(
        ("table", "path", "words"),
        [
            ({"name": ""}, "runwatch.name", "cannot be a file name"),
            ({"name": "."}, "runwatch.name", "cannot be a file name"),
            ({"name": ".."}, "runwatch.name", "cannot be a file name"),
            ({"name": "a/b"}, "runwatch.name", '"/"'),
            ({"name": "../../etc/x"}, "runwatch.name", '"/"'),
            ({"name": "a\\b"}, "runwatch.name", '"/"'),
            ({"name": "a\u2215b"}, "runwatch.name", "look-alike"),
            ({"name": "a\x00b"}, "runwatch.name", "control"),
            ({"name": "a\nb"}, "runwatch.name", "control"),
            ({"name": "a\u202eb"}, "runwatch.name", "control"),
            ({"name": "x" * 201}, "runwatch.name", "too long"),
            ({"name": "é" * 101}, "runwatch.name", "too long"),
            ({"name": 5}, "runwatch.name", "string"),
            ({"priority": "high"}, "runwatch.priority", "whole number"),
            ({"priority": 1.5}, "runwatch.priority", "whole number"),
            ({"priority": True}, "runwatch.priority", "whole number"),
            ({"priority": 10**7}, "runwatch.priority", "whole number"),
            ({"max_credits": 0}, "runwatch.max_credits", "above 0"),
            ({"max_credits": -5}, "runwatch.max_credits", "above 0"),
            ({"max_credits": "10"}, "runwatch.max_credits", "above 0"),
            ({"max_credits": False}, "runwatch.max_credits", "above 0"),
            ({"maxCredits": 10}, "runwatch.maxCredits", "max_credits"),
            ({"retries": 3}, "runwatch.retries", "unknown option"),
        ],
    )
    def test_bad_options(self, root: Path, table: dict[str, Any], path: str, words: str) -> None:
        """Every bad option is a problem on its own path saying what is allowed."""
        err = refuse(write(root, "a.json", {**I2V, "runwatch": table}), root)
        assert words in problems(err)[path]

    def test_whole_float_priority(self, root: Path) -> None:
        """JSON has one number type: a priority of 3.0 is the whole number 3."""
        assert load(write(root, "a.json", {**I2V, "runwatch": {"priority": 3.0}}), root).options.priority == 3

    @pytest.mark.parametrize("table", [[1, 2], "fast", 3])
    def test_not_a_table(self, root: Path, table: Any) -> None:
        """``runwatch`` must be a table."""
        err = refuse(write(root, "a.json", {**I2V, "runwatch": table}), root)
        assert "table" in problems(err)["runwatch"]

    @pytest.mark.parametrize(
        ("filename", "words"),
        [
            ("bad\x01name.json", "control"),
            ("bad\x7fname.json", "control"),
            ("right\u202egpj.exe.json", "control"),
            ("a\u2215b.json", "look-alike"),
            ("a\\b.json", '"\\"'),
            ("x" * 201 + ".json", "too long"),
            ("\udcff\udcfe.json", "UTF-8"),
        ],
    )
    def test_unsafe_file_names(self, root: Path, filename: str, words: str) -> None:
        """A name taken from a tricky file name is refused on ``runwatch.name``; an explicit name fixes it."""
        if len(os.fsencode(filename)) > 255:
            not_applicable("the filesystem cannot hold this name")
        err = refuse(write(root, filename, I2V), root)
        assert words in problems(err)["runwatch.name"]
        assert "file name" in problems(err)["runwatch.name"]
        req = load(write(root, filename, {**I2V, "runwatch": {"name": "fixed"}}), root)
        assert req.name == "fixed"


class TestValidation:
    """Validation against the catalogue: every problem names its field, what was wrong and what is allowed."""

    @pytest.mark.parametrize(
        ("change", "path", "words"),
        [
            ({"ratio": "16:9"}, "ratio", ['"16:9"', '"1280:720"', '"720:1280"']),
            ({"duration": 11}, "duration", ["11", "at most 10"]),
            ({"duration": 1}, "duration", ["1", "at least 2"]),
            ({"duration": "5"}, "duration", ["wrong type", "whole number"]),
            ({"seed": -1}, "seed", ["at least 0"]),
            ({"promptText": "x" * 1001}, "promptText", ["too long", "1000"]),
            ({"promptText": ""}, "promptText", ["too short", "1"]),
            ({"promtText": "x"}, "promtText", ["unknown field", '"promptText"', "promptImage"]),
            ({"ratio": None}, "ratio", ["null", '"1280:720"']),
            (
                {"promptImage": 5},
                "promptImage",
                ["does not fit", "an image", 'a list of objects {position: "first", uri}'],
            ),
            (
                {"promptImage": [{"uri": "still.jpg", "position": "last"}]},
                "promptImage[0].position",
                ['"last"', '"first"'],
            ),
            (
                {"contentModeration": {"publicFigureThreshold": "off"}},
                "contentModeration.publicFigureThreshold",
                ['"off"', '"auto"', '"low"'],
            ),
        ],
    )
    def test_issue_messages(self, root: Path, change: dict[str, Any], path: str, words: list[str]) -> None:
        """Each catalogue issue becomes one sentence on the field's dotted path."""
        err = refuse(write(root, "a.json", {**I2V, **change}), root)
        message = problems(err)[path]
        for word in words:
            assert word in message
        assert not err.incomplete

    def test_media_under_failed_union(self, root: Path) -> None:
        """Media inside a value that fails validation are still checked, so one round shows every problem."""
        err = refuse(write(root, "a.json", {**I2V, "promptImage": [{"uri": "../a.jpg"}, {"uri": "clip.mp4"}]}), root)
        assert set(problems(err)) >= {"promptImage[0].position", "promptImage[0].uri", "promptImage[1].uri"}
        assert "outside" in problems(err)["promptImage[0].uri"]
        assert "a video" in problems(err)["promptImage[1].uri"]

    def test_one_of_several_objects(self, root: Path) -> None:
        """A value fitting no option of a union of objects says what each option looks like."""
        err = refuse(
            write(
                root,
                "a.json",
                {
                    "endpoint": "speech_to_speech",
                    "model": "eleven_multilingual_sts_v2",
                    "media": {"type": "sound", "uri": "speech.mp3"},
                    "voice": PRESET,
                },
            ),
            root,
        )
        assert 'an object {type: "audio", uri} or an object {type: "video", uri}' in problems(err)["media"]
        assert "media.uri" not in problems(err)  # an audio file fits one option, a video file the other
        err = refuse(
            write(
                root,
                "b.json",
                {
                    "endpoint": "speech_to_speech",
                    "model": "eleven_multilingual_sts_v2",
                    "media": {"type": "sound", "uri": "clip.mp4"},
                    "voice": PRESET,
                },
            ),
            root,
        )
        assert set(problems(err)) == {"media"}

    def test_missing_required(self, root: Path) -> None:
        """A missing required field is named with what it takes."""
        err = refuse(write(root, "a.json", {k: v for k, v in I2V.items() if k != "ratio"}), root)
        assert "required" in problems(err)["ratio"]
        assert '"1280:720"' in problems(err)["ratio"]

    def test_array_bounds(self, root: Path) -> None:
        """Too many items in a list names the bound."""
        refs = [{"uri": f"https://example.com/{i}.png"} for i in range(4)]
        err = refuse(
            write(
                root,
                "a.json",
                {
                    "endpoint": "text_to_image",
                    "model": "gen4_image_turbo",
                    "promptText": "x",
                    "ratio": "1024:1024",
                    "referenceImages": refs,
                },
            ),
            root,
        )
        assert "at most 3" in problems(err)["referenceImages"]

    def test_all_problems_at_once(self, root: Path) -> None:
        """Problems in the table, the body and the media all come back together, not the first only."""
        err = refuse(
            write(
                root,
                "a.json",
                {
                    **I2V,
                    "ratio": "1:1",
                    "duration": 99,
                    "extra": 1,
                    "promptImage": "../x.jpg",
                    "runwatch": {"priority": "high"},
                },
            ),
            root,
        )
        assert set(problems(err)) == {"ratio", "duration", "extra", "promptImage", "runwatch.priority"}

    @pytest.mark.parametrize(
        ("data", "words"),
        [
            ({"model": "gen4_turbo"}, ["required", "image_to_video", "text_to_speech"]),
            ({"endpoint": "image-to-video", "model": "gen4_turbo"}, ['"image-to-video"', "image_to_video"]),
            ({"endpoint": "/v1/image_to_video", "model": "gen4_turbo"}, ["image_to_video"]),
            ({"endpoint": 5, "model": "gen4_turbo"}, ["5", "image_to_video"]),
        ],
    )
    def test_endpoint(self, root: Path, data: dict[str, Any], words: list[str]) -> None:
        """A missing or unknown endpoint is a problem on ``endpoint`` listing the allowed ones."""
        err = refuse(write(root, "a.json", data), root)
        for word in words:
            assert word in problems(err)["endpoint"]

    @pytest.mark.parametrize(
        ("data", "words"),
        [
            ({"endpoint": "image_to_video"}, ["required", "gen4_turbo", "veo3.1"]),
            ({"endpoint": "image_to_video", "model": 4}, ["string", "gen4_turbo"]),
            (
                {"endpoint": "text_to_video", "model": "gen4_turbo", "promptText": "x"},
                ["image_to_video", "not of text_to_video", "veo3.1"],
            ),
        ],
    )
    def test_model(self, root: Path, data: dict[str, Any], words: list[str]) -> None:
        """A missing model, a wrong type or another endpoint's model lists the endpoint's models."""
        err = refuse(write(root, "a.json", data), root)
        for word in words:
            assert word in problems(err)["model"]


# Requests with several things wrong at once, for the sweep below.
SWEEP: list[dict[str, Any]] = [
    {**I2V, "ratio": 3, "duration": 0, "seed": "x", "promptText": "", "contentModeration": {"x": 1}},
    {**I2V, "promptImage": [{"uri": "../a.jpg", "position": "first"}, {"uri": "b.jpg"}]},
    {"endpoint": "text_to_speech", "model": "eleven_multilingual_v2", "voice": {"presetId": "Nobody"}},
    {
        "endpoint": "speech_to_speech",
        "model": "eleven_multilingual_sts_v2",
        "media": {"type": "sound", "uri": 1},
        "voice": PRESET,
        "removeBackgroundNoise": "yes",
    },
    {
        "endpoint": "text_to_image",
        "model": "gen4_image_turbo",
        "promptText": "x",
        "ratio": "1:1",
        "referenceImages": [{"uri": "clip.mp4", "tag": "x"}, {"uri": "http://a/b.png", "tag": "_bad"}, "c.png"],
    },
    {
        "endpoint": "text_to_video",
        "model": "veo3.1",
        "promptText": "x",
        "ratio": "1280:720",
        "duration": 5,
        "prompt_text": "y",
        "runwatch": {"name": "a/b", "priority": [], "max_credits": 0, "colour": "red"},
    },
    {"endpoint": "image_to_video", "model": "nope", "promptImage": "missing.jpg"},
]


class TestEveryProblemNamesItsField:
    """No problem with a parsed request is anonymous."""

    @pytest.mark.parametrize("data", SWEEP)
    def test_paths(self, root: Path, data: dict[str, Any]) -> None:
        """Every problem's path starts at a key of the request (or ``runwatch``/``model``/``endpoint``)."""
        err = refuse(write(root, "a.json", data), root, unknown_models="reject")
        assert err.problems
        for p in err.problems:
            assert p.path, p
            head = p.path.split(".")[0].split("[")[0]
            assert head in data or head in ("model", "endpoint", "runwatch", "ratio", "promptText"), p
            assert p.message and p.message[0] != " "


class TestUnknownModels:
    """Models the catalogue does not know: passed through by default, refused on request."""

    BODY: ClassVar[dict[str, Any]] = {
        "endpoint": "image_to_video",
        "model": "gen99_future",
        "promptText": "x",
        "ratio": "anything",
        "promptImage": [{"uri": "still.jpg", "position": "middle"}],
        "referenceAudios": ["speech.mp3"],
        "videoUri": "clip.mp4",
        "newKnob": {"uri": "speech.wav"},
        "label": "still.jpg",
    }

    def test_pass(self, root: Path) -> None:
        """With ``pass`` the body goes through unvalidated; media are found by name and by ``uri``.

        ``videoUri`` is a media field of other endpoints only: a new model may well take it here.
        """
        req = load(write(root, "a.json", self.BODY), root)
        assert not req.known_model
        assert req.model == "gen99_future"
        assert req.body == {k: v for k, v in self.BODY.items() if k != "endpoint"}
        assert [(m.field, m.kind) for m in req.media] == [
            (("promptImage", 0, "uri"), "image"),
            (("referenceAudios", 0), "audio"),
            (("videoUri",), "video"),
            (("newKnob", "uri"), "audio"),
        ]

    def test_reject(self, root: Path) -> None:
        """With ``reject`` it is a problem on ``model`` listing the known models."""
        err = refuse(write(root, "a.json", self.BODY), root, unknown_models="reject")
        message = problems(err)["model"]
        assert '"gen99_future"' in message and "gen4_turbo" in message and "veo3.1" in message

    @pytest.mark.parametrize(
        ("data", "path", "words"),
        [
            ({"promptImage": "clip.mp4"}, "promptImage", ["a video", "an image"]),
            ({"media": {"type": "audio", "uri": "still.jpg"}}, "media.uri", ["an image", "an audio"]),
            ({"promptImage": "../../x.jpg"}, "promptImage", ["outside"]),
            ({"promptImage": "http://example.com/x.jpg"}, "promptImage", ["https"]),
        ],
    )
    def test_media_still_checked(self, root: Path, data: dict[str, Any], path: str, words: list[str]) -> None:
        """Local media of an unknown model get every containment and kind check."""
        base = {"endpoint": "speech_to_speech" if "media" in data else "image_to_video", "model": "future_x"}
        err = refuse(write(root, "a.json", {**base, **data}), root)
        for word in words:
            assert word in problems(err)[path]

    def test_bad_unknown_models_value(self, root: Path) -> None:
        """A caller passing a value other than pass/reject is a programming error."""
        with pytest.raises(ValueError, match="unknown_models"):
            load(write(root, "a.json", I2V), root, unknown_models="maybe")


def _fifo(root: Path) -> str:
    os.mkfifo(root / "pipe.jpg")
    return "pipe.jpg"


def _directory(root: Path) -> str:
    (root / "folder.jpg").mkdir()
    return "folder.jpg"


def _empty(root: Path) -> str:
    (root / "empty.jpg").write_bytes(b"")
    return "empty.jpg"


def _itself(root: Path) -> str:
    return "a.json"


def _wrong_kind(root: Path) -> str:
    return "clip.mp4"


def _audio_for_image(root: Path) -> str:
    return "speech.wav"


def _text_named_jpg(root: Path) -> str:
    (root / "notes.jpg").write_text("not an image at all\n" * 100)
    return "notes.jpg"


def _gif(root: Path) -> str:
    (root / "anim.jpg").write_bytes(b"GIF89a\x10\x00\x10\x00" + b"\x00" * 600)
    return "anim.jpg"


def _huge(root: Path) -> str:
    shutil.copy(SAMPLES / "still.jpg", root / "huge.jpg")
    with open(root / "huge.jpg", "r+b") as fh:
        fh.truncate((200 << 20) + 1)  # a real JPEG's head, then a sparse tail that costs no disk
    return "huge.jpg"


def _parent_escape(root: Path) -> str:
    shutil.copy(SAMPLES / "still.jpg", root.parent / "outside.jpg")
    return "../outside.jpg"


def _deep_escape(root: Path) -> str:
    return "sub/../../inbox/../outside.jpg"


def _absolute(root: Path) -> str:
    return str((root / "still.jpg").resolve())


def _symlink_out(root: Path) -> str:
    shutil.copy(SAMPLES / "still.jpg", root.parent / "outside.jpg")
    (root / "link.jpg").symlink_to(root.parent / "outside.jpg")
    return "link.jpg"


def _symlinked_dir_out(root: Path) -> str:
    (root.parent / "elsewhere").mkdir()
    shutil.copy(SAMPLES / "still.jpg", root.parent / "elsewhere" / "x.jpg")
    (root / "shared").symlink_to(root.parent / "elsewhere")
    return "shared/x.jpg"


def _symlink_to_device(root: Path) -> str:
    (root / "null.jpg").symlink_to("/dev/null")
    return "null.jpg"


def _symlink_loop(root: Path) -> str:
    (root / "loop1.jpg").symlink_to(root / "loop2.jpg")
    (root / "loop2.jpg").symlink_to(root / "loop1.jpg")
    return "loop1.jpg"


def _socket(root: Path) -> str:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    os.chdir(root)  # bind by a short relative name: socket paths are limited to about 100 bytes
    try:
        sock.bind("sock.jpg")
    finally:
        os.chdir(cwd)
        sock.close()
    return "sock.jpg"


def _device(root: Path) -> str:
    try:
        os.mknod(root / "dev.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        need(False, "making a device node needs CAP_MKNOD (run the tests as root)")
    return "dev.jpg"


# How a promptImage value goes wrong -> words the problem must contain, and whether it is incomplete.
CONTAINMENT: list[tuple[str, Callable[[Path], str], list[str], bool]] = [
    ("dotdot", _parent_escape, ["outside"], False),
    ("dotdot_deep", _deep_escape, ["outside"], False),
    ("absolute", _absolute, ["absolute"], False),
    ("symlink_out", _symlink_out, ["symlink", "outside"], False),
    ("symlinked_dir_out", _symlinked_dir_out, ["symlink", "outside"], False),
    ("symlink_to_device", _symlink_to_device, ["outside"], False),
    ("symlink_loop", _symlink_loop, ["symlink"], False),
    ("fifo", _fifo, ["FIFO"], False),
    ("socket", _socket, ["socket"], False),
    ("device", _device, ["device"], False),
    ("directory", _directory, ["directory"], False),
    ("empty", _empty, ["empty"], False),
    ("itself", _itself, ["request file itself"], False),
    ("wrong_kind", _wrong_kind, ["a video file (video/mp4)", "an image"], False),
    ("audio_for_image", _audio_for_image, ["an audio file (audio/wav)", "an image"], False),
    ("unrecognised", _text_named_jpg, ["not a recognised", "content"], False),
    ("gif", _gif, ["image/gif", "does not accept"], False),
    ("huge", _huge, ["200 MiB"], False),
    ("missing", lambda root: "not-yet.jpg", ["file not found", "not-yet.jpg"], True),
    ("missing_in_folder", lambda root: "later/shot.jpg", ["file not found"], True),
    ("nul", lambda root: "still.jpg\x00.png", ["NUL"], False),
    ("empty_string", lambda root: "", ["empty"], False),
    ("http", lambda root: "http://example.com/a.jpg", ["https://"], False),
    ("ftp", lambda root: "ftp://example.com/a.jpg", ['"ftp"'], False),
    ("file_uri", lambda root: "file:///etc/passwd", ['"file"'], False),
    ("s3", lambda root: "s3://bucket/a.jpg", ['"s3"'], False),
]


class TestContainment:
    """Local media must be regular, non-empty files of the right kind inside the inbox."""

    @pytest.mark.timeout(20)
    @pytest.mark.parametrize(("case", "make", "words", "incomplete"), CONTAINMENT, ids=[c[0] for c in CONTAINMENT])
    def test_refused(
        self, root: Path, case: str, make: Callable[[Path], str], words: list[str], incomplete: bool
    ) -> None:
        """Each rule is a problem on the field's path; only files not there yet make the request incomplete."""
        path = root / "a.json"
        value = make(root)
        write(root, "a.json", {**I2V, "promptImage": value})
        err = refuse(path, root)
        assert [p.path for p in err.problems] == ["promptImage"]
        for word in words:
            assert word in err.problems[0].message
        assert type_names_in(err.problems[0].message) == set()  # people's words, not runwatch's classes
        assert err.incomplete is incomplete

    @pytest.mark.parametrize("where", ["same", "subfolder"])
    def test_symlink_inside_ok(self, root: Path, where: str) -> None:
        """A symlink that stays inside the inbox is fine; ``file`` is the real file it leads to."""
        if where == "same":
            (root / "alias.jpg").symlink_to("still.jpg")
            value = "alias.jpg"
        else:
            (root / "takes").mkdir()
            (root / "takes" / "alias.jpg").symlink_to(root / "still.jpg")
            value = "takes/alias.jpg"
        req = load(write(root, "a.json", {**I2V, "promptImage": value}), root)
        assert req.media[0].rel == value
        assert req.media[0].file == (root / "still.jpg").resolve()

    def test_root_behind_symlink(self, root: Path, tmp_path: Path) -> None:
        """An inbox reached through a symlink (a mounted share's path) still contains its files."""
        (tmp_path / "mnt").symlink_to(root)
        path = write(tmp_path / "mnt", "a.json", I2V)
        req = load(path, tmp_path / "mnt")
        assert req.media[0].file == (root / "still.jpg").resolve()

    def test_missing_plus_other_is_not_incomplete(self, root: Path) -> None:
        """Waiting only helps when missing files are the only problems."""
        err = refuse(write(root, "a.json", {**I2V, "promptImage": "later.jpg", "ratio": "1:1"}), root)
        assert not err.incomplete
        assert set(problems(err)) == {"promptImage", "ratio"}

    def test_every_media_problem_at_once(self, root: Path) -> None:
        """Several bad references are all reported, each on its own path."""
        _fifo(root)
        err = refuse(
            write(
                root,
                "a.json",
                {
                    "endpoint": "text_to_image",
                    "model": "gen4_image_turbo",
                    "promptText": "x",
                    "ratio": "1024:1024",
                    "referenceImages": [{"uri": "../x.png"}, {"uri": "pipe.jpg"}, {"uri": "speech.mp3"}],
                },
            ),
            root,
        )
        assert sorted(problems(err)) == [f"referenceImages[{i}].uri" for i in range(3)]

    def test_field_kind_from_content_not_name(self, root: Path) -> None:
        """A JPEG named ``.png`` is an image and is reported as what it is."""
        shutil.copy(SAMPLES / "still.jpg", root / "renamed.png")
        req = load(write(root, "a.json", {**I2V, "promptImage": "renamed.png"}), root)
        assert req.media[0].content_type == "image/jpeg"
        shutil.copy(SAMPLES / "clip.mp4", root / "movie.jpg")
        err = refuse(write(root, "b.json", {**I2V, "promptImage": "movie.jpg"}), root)
        assert "video/mp4" in problems(err)["promptImage"]


class TestBareMedia:
    """A media file dropped alone into an inbox with ``accept_media``."""

    DEFAULTS: ClassVar[dict[str, Any]] = {"model": "gen4_turbo", "ratio": "1280:720", "duration": 5}

    def bare(self, path: Path, root: Path, **inbox: Any) -> Request:
        settings: dict[str, Any] = {
            "endpoint": "image_to_video",
            "defaults": self.DEFAULTS,
            "accept_media": True,
            **inbox,
        }
        return bare_media_request(path, root=root, inbox=Inbox(path=root, **settings))

    def test_bare_image(self, root: Path) -> None:
        """The defaults plus the file in the inbox's media field, named after the file."""
        req = self.bare(root / "still.jpg", root)
        assert req.name == "still"
        assert req.body == {**self.DEFAULTS, "promptImage": "still.jpg"}
        assert req.format == "json"
        assert [(m.field, m.kind, m.file) for m in req.media] == [(("promptImage",), "image", root / "still.jpg")]

    def test_bare_audio(self, root: Path) -> None:
        """Another endpoint and media field: voice isolation of a WAV file."""
        req = self.bare(
            root / "speech.wav",
            root,
            endpoint="voice_isolation",
            media_field="audioUri",
            defaults={"model": "eleven_voice_isolation"},
        )
        assert req.body == {"model": "eleven_voice_isolation", "audioUri": "speech.wav"}
        assert req.media[0].kind == "audio"

    def test_load_request_hands_media_over(self, root: Path) -> None:
        """``load_request`` on a media file builds the bare-media request."""
        req = load(root / "still.jpg", root, endpoint="image_to_video", defaults=self.DEFAULTS, accept_media=True)
        assert req.body["promptImage"] == "still.jpg"

    @pytest.mark.parametrize(
        ("inbox", "path", "words"),
        [
            ({"endpoint": None}, "endpoint", ["required"]),
            ({"defaults": {"model": "gen4_turbo"}}, "ratio", ["required"]),
            ({"media_field": "promptText"}, "promptText", ["media_field", "no media"]),
            ({"media_field": "promptText"}, "promptImage", ["required"]),
            (
                {
                    "endpoint": "voice_isolation",
                    "media_field": "audioUri",
                    "defaults": {"model": "eleven_voice_isolation"},
                },
                "audioUri",
                ["an image file (image/jpeg)", "an audio"],
            ),
        ],
    )
    def test_refused(self, root: Path, inbox: dict[str, Any], path: str, words: list[str]) -> None:
        """A bare file is validated like any request: endpoint, defaults, media field and kind."""
        with pytest.raises(RequestError) as info:
            self.bare(root / "still.jpg", root, **inbox)
        message = problems(info.value)[path]
        for word in words:
            assert word in message

    def test_undecodable_name(self, root: Path) -> None:
        """A file name that is not UTF-8 cannot go into a body: refused before validation."""
        odd = root / os.fsdecode(b"clip\xff.jpg")
        shutil.copy(SAMPLES / "still.jpg", odd)
        with pytest.raises(RequestError) as info:
            self.bare(odd, root)
        assert "UTF-8" in problems(info.value)["runwatch.name"]

    def test_unsafe_name(self, root: Path) -> None:
        """A bare file's name must be safe too."""
        shutil.copy(SAMPLES / "still.jpg", root / "evil\u202egpj.jpg")
        with pytest.raises(RequestError) as info:
            self.bare(root / "evil\u202egpj.jpg", root)
        assert "control" in problems(info.value)["runwatch.name"]


class TestWithUris:
    """Putting uploaded URIs into a copy of the body."""

    def test_replaced(self, root: Path) -> None:
        """Each local media field gets its URI; URIs that were already there and the body itself are untouched."""
        req = load(
            write(
                root,
                "a.json",
                {
                    "endpoint": "text_to_image",
                    "model": "gen4_image_turbo",
                    "promptText": "@a @b",
                    "ratio": "1024:1024",
                    "referenceImages": [
                        {"uri": "still.jpg", "tag": "aaa"},
                        {"uri": "https://example.com/b.png"},
                        {"uri": "still.jpg", "tag": "ccc"},
                    ],
                },
            ),
            root,
        )
        uris = {m.field: f"runway://{i}" for i, m in enumerate(req.media)}
        body = req.with_uris(uris)
        assert [r["uri"] for r in body["referenceImages"]] == ["runway://0", "https://example.com/b.png", "runway://1"]
        assert [r["uri"] for r in req.body["referenceImages"]] == [
            "still.jpg",
            "https://example.com/b.png",
            "still.jpg",
        ]

    def test_top_level_field(self, root: Path) -> None:
        """A top-level media field is replaced too."""
        req = load(write(root, "a.json", I2V), root)
        assert req.with_uris({("promptImage",): "https://bucket.example/x.jpg"})["promptImage"] == (
            "https://bucket.example/x.jpg"
        )

    def test_missing_uri(self, root: Path) -> None:
        """A local field without a URI is an error rather than a file path sent to Runway."""
        req = load(write(root, "a.json", I2V), root)
        with pytest.raises(KeyError, match="promptImage"):
            req.with_uris({})

    def test_local_media_shape(self, root: Path) -> None:
        """LocalMedia carries what a transport needs."""
        media = load(write(root, "a.json", I2V), root).media[0]
        st = (root / "still.jpg").stat()
        assert media == LocalMedia(
            ("promptImage",),
            "still.jpg",
            (root / "still.jpg").resolve(),
            "image",
            (SAMPLES / "still.jpg").stat().st_size,
            "image/jpeg",
            root.resolve(),
            st.st_dev,
            st.st_ino,
        )


class TestCatalogueArgument:
    """The catalogue can be passed in; the shipped one is the default."""

    def test_explicit_catalog(self, root: Path) -> None:
        """Passing the catalogue gives the same result as the default."""
        path = write(root, "a.json", I2V)
        inbox = Inbox(path=root)
        assert load_request(path, root=root, inbox=inbox, catalog=load_catalog()) == load_request(
            path, root=root, inbox=inbox
        )
