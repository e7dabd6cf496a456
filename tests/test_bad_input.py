"""Bad input, dropped into a running daemon's inbox: every case ends `rejected` with a status file naming the
file and the field, no call that could cost anything reaches Runway, the daemon keeps running and nothing of
the user's is deleted (it stays in the inbox or in the kept record under .runwatch/failed/).

One daemon serves the whole corpus (with ``unknown_models = "reject"`` so an unknown model is refused locally
instead of costing a free 400 at Runway). Each case's files carry the case id in their names, so cases never
see each other's files.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runwatch.simulator import SimConfig, Simulator

from .conftest import SAMPLES, need
from .rig import Rig

JPG = (SAMPLES / "still.jpg").read_bytes()
MP3 = (SAMPLES / "speech.mp3").read_bytes()
MP4 = (SAMPLES / "clip.mp4").read_bytes()


def _j(body: Any) -> bytes:
    return json.dumps(body).encode()


def i2v(**over: Any) -> dict[str, Any]:
    """A valid image_to_video body, with some keys replaced."""
    body: dict[str, Any] = {
        "endpoint": "image_to_video",
        "model": "gen4_turbo",
        "promptImage": "https://example.com/a.jpg",
        "ratio": "1280:720",
        "duration": 5,
        "promptText": "waves",
    }
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


def tts(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "endpoint": "text_to_speech",
        "model": "eleven_multilingual_v2",
        "promptText": "Hi.",
        "voice": {"type": "runway-preset", "presetId": "Maya"},
    }
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


# A file's content, or what to make in its place.
Spec = bytes | tuple[str, Any]


@dataclass
class Case:
    id: str
    request: str  # the request file's name in the inbox ({id} is replaced by the case id)
    content: Spec
    path: str | None  # the expected issue path ("" = the file itself); None: any issue
    media: dict[str, Spec] = field(default_factory=dict)
    status_name: str | None = None  # the status file's base name when it is not the request's stem
    says: str | None = None  # words one of the issues' messages must hold


CASES: list[Case] = [
    # -- malformed files -----------------------------------------------------------------------------------
    Case("truncated_json", "{id}.json", b'{"endpoint": "image_to_video", "model": ', ""),
    Case("trailing_comma", "{id}.json", b'{"endpoint": "text_to_speech",}', ""),
    Case("json_list", "{id}.json", b"[1, 2, 3]", ""),
    Case("json_string", "{id}.json", b'"image_to_video"', ""),
    Case("json_null", "{id}.json", b"null", ""),
    Case("empty_json", "{id}.json", b"", ""),
    Case("whitespace_json", "{id}.json", b"  \n\t ", ""),
    Case("nan", "{id}.json", b'{"endpoint": "image_to_video", "duration": NaN}', ""),
    Case("infinite", "{id}.json", b'{"endpoint": "image_to_video", "duration": 1e999}', ""),
    Case("raw_control_in_string", "{id}.json", b'{"endpoint": "text_to_speech", "promptText": "a\x01b"}', ""),
    Case("non_utf8_content", "{id}.json", b'{"endpoint": "text_to_speech", "promptText": "caf\xe9"}', ""),
    Case("utf16_content", "{id}.json", json.dumps(tts()).encode("utf-16"), ""),
    Case("duplicate_keys", "{id}.json", b'{"endpoint": "text_to_speech", "model": "a", "model": "b"}', "model"),
    Case(
        "deep_nesting",
        "{id}.json",
        b'{"endpoint": "text_to_speech", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        None,
    ),
    Case("moderate_nesting", "{id}.json", _j(tts(metadata=json.loads("[" * 40 + "]" * 40))), None),
    Case("huge_request", "{id}.json", ("sparse", 5 << 20), ""),
    Case("truncated_toml", "{id}.toml", b'endpoint = "text_to_speech"\nmodel = ', ""),
    Case("bad_toml_table", "{id}.toml", b'[voice\ntype = "x"\n', ""),
    Case("duplicate_toml_key", "{id}.toml", b'endpoint = "a"\nendpoint = "b"\n', ""),
    Case("empty_toml", "{id}.toml", b"", None),
    Case(
        "toml_runwatch_not_table",
        "{id}.toml",
        b'endpoint = "text_to_speech"\nmodel = "eleven_multilingual_v2"\npromptText = "x"\nrunwatch = "fast"\n'
        b'[voice]\ntype = "runway-preset"\npresetId = "Maya"\n',
        "runwatch",
    ),
    # -- wrong types -----------------------------------------------------------------------------------------
    Case("endpoint_number", "{id}.json", _j(tts(endpoint=7)), "endpoint"),
    Case("model_number", "{id}.json", _j(tts(model=3)), "model"),
    Case("duration_string", "{id}.json", _j(i2v(duration="five")), "duration"),
    Case("ratio_number", "{id}.json", _j(i2v(ratio=1280)), "ratio"),
    Case("prompt_object", "{id}.json", _j(i2v(promptText={"text": "x"})), "promptText"),
    Case("duration_bool", "{id}.json", _j(i2v(duration=True)), "duration"),
    Case("voice_string", "{id}.json", _j(tts(voice="Maya")), "voice"),
    Case(
        "reference_images_object",
        "{id}.json",
        _j(
            {
                "endpoint": "text_to_image",
                "model": "gen4_image_turbo",
                "promptText": "x",
                "ratio": "1920:1080",
                "referenceImages": {"uri": "https://example.com/a.jpg"},
            }
        ),
        "referenceImages",
    ),
    Case("runwatch_string", "{id}.json", _j(tts(runwatch="fast")), "runwatch"),
    Case("priority_string", "{id}.json", _j(tts(runwatch={"priority": "high"})), "runwatch.priority"),
    Case("max_credits_negative", "{id}.json", _j(tts(runwatch={"max_credits": -5})), "runwatch.max_credits"),
    Case("runwatch_unknown_key", "{id}.json", _j(tts(runwatch={"priorty": 1})), "runwatch.priorty"),
    Case("runwatch_name_slash", "{id}.json", _j(tts(runwatch={"name": "../escape"})), "runwatch.name"),
    # -- unknown endpoint, model, fields; missing fields --------------------------------------------------------
    Case("unknown_endpoint", "{id}.json", _j(tts(endpoint="text_to_hologram")), "endpoint"),
    Case("endpoint_with_v1", "{id}.json", _j(tts(endpoint="/v1/text_to_speech")), "endpoint"),
    Case("unknown_model", "{id}.json", _j(i2v(model="gen9_ultra")), "model"),
    Case("unknown_field", "{id}.json", _j(i2v(promptTxt="typo")), "promptTxt"),
    Case("missing_endpoint", "{id}.json", _j(tts(endpoint=None)), "endpoint"),
    Case("missing_model", "{id}.json", _j(i2v(model=None)), "model"),
    Case("missing_prompt_image", "{id}.json", _j(i2v(promptImage=None)), "promptImage"),
    Case("empty_object", "{id}.json", b"{}", "endpoint"),
    # -- out of range --------------------------------------------------------------------------------------------
    Case("duration_too_long", "{id}.json", _j(i2v(duration=99)), "duration"),
    Case("ratio_not_allowed", "{id}.json", _j(i2v(ratio="1:1")), "ratio"),
    Case("seed_negative", "{id}.json", _j(i2v(seed=-1)), "seed"),
    Case("seed_huge", "{id}.json", _j(i2v(seed=2**40)), "seed"),
    Case("prompt_too_long", "{id}.json", _j(i2v(promptText="x" * 5000)), "promptText"),
    Case(
        "preset_unknown", "{id}.json", _j(tts(voice={"type": "runway-preset", "presetId": "Nobody"})), "voice.presetId"
    ),
    # -- media: where they point ---------------------------------------------------------------------------------
    Case("missing_media", "{id}.json", _j(i2v(promptImage="{id}-nowhere.jpg")), "promptImage"),
    Case("dotdot_media", "{id}.json", _j(i2v(promptImage="../outside.jpg")), "promptImage"),
    Case("absolute_media", "{id}.json", _j(i2v(promptImage="/etc/passwd")), "promptImage"),
    Case("absolute_jpg", "{id}.json", _j(i2v(promptImage=str(SAMPLES / "still.jpg"))), "promptImage"),
    Case(
        "escaping_symlink",
        "{id}.json",
        _j(i2v(promptImage="{id}-link.jpg")),
        "promptImage",
        media={"{id}-link.jpg": ("symlink", str(SAMPLES / "still.jpg"))},
    ),
    Case(
        "relative_escaping_symlink",
        "{id}.json",
        _j(i2v(promptImage="{id}-rel.jpg")),
        "promptImage",
        media={"{id}-rel.jpg": ("symlink", "../../../../../../../../etc/hostname")},
    ),
    Case(
        "symlink_to_device",
        "{id}.json",
        _j(i2v(promptImage="{id}-zero.jpg")),
        "promptImage",
        media={"{id}-zero.jpg": ("symlink", "/dev/zero")},
    ),
    Case(
        "fifo_media",
        "{id}.json",
        _j(i2v(promptImage="{id}-pipe.jpg")),
        "promptImage",
        media={"{id}-pipe.jpg": ("fifo", None)},
    ),
    Case(
        "device_media",
        "{id}.json",
        _j(i2v(promptImage="{id}-dev.jpg")),
        "promptImage",
        media={"{id}-dev.jpg": ("device", None)},
    ),
    Case(
        "directory_media",
        "{id}.json",
        _j(i2v(promptImage="{id}-dir.jpg")),
        "promptImage",
        media={"{id}-dir.jpg": ("dir", None)},
    ),
    Case("inbox_itself_media", "{id}.json", _j(i2v(promptImage=".")), "promptImage"),
    Case("work_area_media", "{id}.json", _j(i2v(promptImage=".runwatch/journal")), "promptImage"),
    # -- media: what they are -------------------------------------------------------------------------------------
    Case(
        "empty_media", "{id}.json", _j(i2v(promptImage="{id}-empty.jpg")), "promptImage", media={"{id}-empty.jpg": b""}
    ),
    Case(
        "over_limit_media",
        "{id}.json",
        _j(i2v(promptImage="{id}-huge.jpg")),
        "promptImage",
        media={"{id}-huge.jpg": ("sparse", 300 << 20)},
    ),
    Case(
        "audio_as_image",
        "{id}.json",
        _j(i2v(promptImage="{id}-voice.mp3")),
        "promptImage",
        media={"{id}-voice.mp3": MP3},
    ),
    Case(
        "image_as_video",
        "{id}.json",
        _j({"endpoint": "video_upscale", "model": "magnific_video_upscaler_creative", "videoUri": "{id}-v.jpg"}),
        "videoUri",
        media={"{id}-v.jpg": JPG},
    ),
    Case(
        "text_named_jpg",
        "{id}.json",
        _j(i2v(promptImage="{id}-fake.jpg")),
        "promptImage",
        media={"{id}-fake.jpg": b"this is not a picture " * 100},
    ),
    Case(
        "video_as_audio",
        "{id}.json",
        _j(
            {
                "endpoint": "speech_to_speech",
                "model": "eleven_multilingual_sts_v2",
                "media": {"type": "audio", "uri": "{id}-a.mp4"},
                "voice": {"type": "runway-preset", "presetId": "Bernard"},
            }
        ),
        "media.uri",
        media={"{id}-a.mp4": MP4},
    ),
    Case("request_names_itself", "{id}.json", _j(i2v(promptImage="{id}.json")), "promptImage"),
    Case(
        "reference_dotdot",
        "{id}.json",
        _j(
            {
                "endpoint": "text_to_image",
                "model": "gen4_image_turbo",
                "promptText": "x",
                "ratio": "1920:1080",
                "referenceImages": [{"uri": "../x.jpg", "tag": "cat"}],
            }
        ),
        "referenceImages[0].uri",
    ),
    Case("http_media", "{id}.json", _j(i2v(promptImage="http://example.com/a.jpg")), "promptImage"),
    Case("ftp_media", "{id}.json", _j(i2v(promptImage="ftp://example.com/a.jpg")), "promptImage"),
    Case("bad_data_uri", "{id}.json", _j(i2v(promptImage="data:image/jpeg;base64,@@@")), "promptImage"),
    Case("empty_media_string", "{id}.json", _j(i2v(promptImage="")), "promptImage"),
    Case("media_name_control_chars", "{id}.json", _j(i2v(promptImage="{id}-\x07bell.jpg")), "promptImage"),
    Case("media_nul_byte", "{id}.json", _j(i2v(promptImage="{id}-\x00.jpg")), "promptImage"),
    # -- names -------------------------------------------------------------------------------------------------
    Case("shell_meta_name", "{id}-$(touch PWNED);`id`|&.json", _j(i2v(duration="x")), "duration"),
    Case("shell_meta_media", "{id}.json", _j(i2v(promptImage="{id}-$(touch PWNED);x.jpg")), "promptImage"),
    Case("control_char_name", "{id}-\x1b[31m.json", _j(tts()), "runwatch.name", status_name=None),
    Case("newline_name", "{id}-a\nb.json", _j(tts()), "runwatch.name", status_name=None),
    Case("bidi_name", "{id}-\u202egpj.json", _j(tts()), "runwatch.name", status_name=None),
    Case("too_long_name", "{id}-" + "x" * 220 + ".json", _j(tts()), "runwatch.name", status_name=None),
]


def _toml_keys(count: int, parts: int = 1) -> bytes:
    return b"".join(b"a." * (parts - 1) + b"k%d = 1\n" % i for i in range(count))


def _name(prefix: str, size: int, fill: str = "x", suffix: str = ".json") -> str:
    """A file name of ``size`` bytes: ``prefix``, then ``fill`` repeated, then ``suffix``."""
    room = size - len(prefix.encode()) - len(suffix.encode())
    count, rest = divmod(room, len(fill.encode()))
    return prefix + fill * count + "x" * rest + suffix


TOML_TTS = b'endpoint = "text_to_speech"\nmodel = "eleven_multilingual_v2"\npromptText = "Hi."\n'
KEYS = "10,000 keys and list items"

# Files shaped to cost a parser or a check time and memory, or to trip it: each must end rejected at once, with
# a message that names the problem, while the inbox goes on.
HOSTILE: list[Case] = [
    # -- TOML bombs: quadratic dotted keys and headers, and whatever tomllib reads without a bound --------------
    Case("toml_dotted_key_bomb", "{id}.toml", b"a" + b".a" * 20_000 + b" = 1\n", "", says="dotted key"),
    Case("toml_header_bomb", "{id}.toml", b"[a" + b".a" * 20_000 + b"]\nx = 1\n", "", says="dotted key"),
    Case("toml_array_table_bomb", "{id}.toml", b"[[a" + b".a" * 20_000 + b"]]\n", "", says="dotted key"),
    Case("toml_inline_dotted_bomb", "{id}.toml", b"x = {a" + b".a" * 20_000 + b" = 1}\n", "", says="dotted key"),
    Case("toml_quoted_dotted_bomb", "{id}.toml", b'"a"' + b'."a"' * 20_000 + b" = 1\n", "", says="dotted key"),
    Case("toml_dotted_key_bomb_200k", "{id}.toml", b"a" + b".a" * 100_000 + b" = 1\n", "", says="dotted key"),
    Case("toml_quoted_header_bomb", "{id}.toml", b'["a"' + b'."a"' * 20_000 + b"]\n", "", says="dotted key"),
    Case("toml_dotted_in_array", "{id}.toml", b"x = [{a" + b".a" * 20_000 + b" = 1}]\n", "", says="dotted key"),
    Case("toml_many_tables", "{id}.toml", b"".join(b"[t%d]\n" % i for i in range(10_001)), "", says=KEYS),
    Case("toml_many_array_tables", "{id}.toml", b"[[x]]\n" * 10_001, "", says=KEYS),
    Case("toml_long_underscored_integer", "{id}.toml", b"seed = 1" + b"_000" * 40 + b"\n", "", says="100 characters"),
    Case("toml_long_binary_integer", "{id}.toml", b"seed = 0b" + b"1" * 200 + b"\n", "", says="100 characters"),
    Case("toml_dotted_key_33_parts", "{id}.toml", TOML_TTS + b"x" + b".x" * 32 + b" = 1\n", "", says="33 parts"),
    Case("toml_many_keys", "{id}.toml", _toml_keys(20_001), "", says=KEYS),
    Case("toml_many_key_parts", "{id}.toml", _toml_keys(400, parts=30), "", says=KEYS),
    Case("toml_long_array", "{id}.toml", b"x = [" + b"1," * 20_001 + b"]\n", "", says=KEYS),
    Case("toml_huge_hex_integer", "{id}.toml", b"seed = 0x" + b"f" * 100_000 + b"\n", "", says="100 characters"),
    Case("toml_5000_digit_integer", "{id}.toml", b"seed = " + b"9" * 5000 + b"\n", "", says="100 characters"),
    Case("toml_float_1e400", "{id}.toml", TOML_TTS + b"speed = 1e400\n", "", says="finite"),
    Case("toml_nan", "{id}.toml", TOML_TTS + b"speed = nan\n", "", says="finite"),
    Case(
        "toml_deep_inline_tables", "{id}.toml", b"x = " + b"{a = " * 5000 + b"1" + b"}" * 5000 + b"\n", "", says="deep"
    ),
    Case("toml_deep_arrays", "{id}.toml", b"x = " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "", says="deep"),
    Case("toml_unterminated_escapes", "{id}.toml", b'promptText = "' + b'\\"' * 100_000, "", says="TOML"),
    Case("toml_surrogate_escape", "{id}.toml", TOML_TTS.replace(b"Hi.", b"\\ud800"), "", says="TOML"),
    Case("toml_nul_byte", "{id}.toml", TOML_TTS.replace(b"Hi.", b"a\x00b"), "", says="TOML"),
    # -- JSON: numbers that are not numbers, text that is not text, sizes ---------------------------------------
    Case(
        "json_5000_digit_integer",
        "{id}.json",
        _j(tts()).replace(b'"Hi."', b'"Hi.", "seed": ' + b"7" * 5000),
        "seed",
        says="5000 characters",
    ),
    Case(
        "json_101_digit_duration",
        "{id}.json",
        _j(i2v(duration=0)).replace(b'"duration": 0', b'"duration": ' + b"1" * 101),
        "duration",
        says="101 characters",
    ),
    Case(
        "json_long_float",
        "{id}.json",
        _j(i2v(duration=0)).replace(b'"duration": 0', b'"duration": 5.' + b"0" * 200),
        "duration",
        says="characters; at most 100",
    ),
    Case(
        "json_long_negative_integer",
        "{id}.json",
        _j(i2v(seed=0)).replace(b'"seed": 0', b'"seed": -' + b"9" * 200),
        "seed",
        says="201 characters",
    ),
    Case(
        "json_long_exponent",
        "{id}.json",
        _j(i2v(duration=0)).replace(b'"duration": 0', b'"duration": 1e' + b"0" * 199 + b"1"),
        "duration",
        says="characters; at most 100",
    ),
    Case("json_many_empty_lists", "{id}.json", _j(tts(x=[[]] * 30_000)), "", says=KEYS),
    Case(
        "json_float_1e400",
        "{id}.json",
        _j(i2v(duration=0)).replace(b'"duration": 0', b'"duration": -1e400'),
        "",
        says="finite",
    ),
    Case(
        "json_infinity",
        "{id}.json",
        _j(i2v(duration=0)).replace(b'"duration": 0', b'"duration": Infinity'),
        "",
        says="finite",
    ),
    Case(
        "json_negative_infinity",
        "{id}.json",
        _j(i2v(duration=0)).replace(b'"duration": 0', b'"duration": -Infinity'),
        "",
        says="finite",
    ),
    Case(
        "json_lone_surrogate", "{id}.json", _j(tts()).replace(b'"Hi."', b'"Hi \\ud800"'), "promptText", says="surrogate"
    ),
    Case(
        "json_lone_low_surrogate_key",
        "{id}.json",
        _j(tts()).replace(b'"model"', b'"\\udc00": 1, "model"', 1),
        "",
        says="surrogate",
    ),
    Case(
        "json_surrogate_media_path",
        "{id}.json",
        _j(i2v()).replace(b"https://example.com/a.jpg", b"\\ud83d.jpg"),
        "promptImage",
        says="surrogate",
    ),
    Case("json_overlong_utf8", "{id}.json", _j(tts()).replace(b"Hi.", b"\xc0\xaf"), "", says="UTF-8"),
    Case("json_utf32_bom", "{id}.json", json.dumps(tts()).encode("utf-32"), "", says="UTF-8"),
    Case("json_double_utf8_bom", "{id}.json", b"\xef\xbb\xbf\xef\xbb\xbf" + _j(tts()), "", says="JSON"),
    Case("json_nul_byte", "{id}.json", _j(tts()).replace(b"Hi.", b"a\x00b"), "", says="JSON"),
    Case("json_huge_string", "{id}.json", _j(tts(promptText="x" * 900_000)), "promptText", says="too long"),
    Case("json_many_keys", "{id}.json", _j({**tts(), **{f"k{i}": 1 for i in range(10_001)}}), "", says=KEYS),
    Case("json_long_array", "{id}.json", _j(tts(x=[1] * 20_001)), "", says=KEYS),
    Case("json_many_empty_objects", "{id}.json", _j(tts(x=[{}] * 30_000)), "", says=KEYS),
    Case("json_many_unknown_keys", "{id}.json", _j({**tts(), **{f"x{i}": 1 for i in range(5_000)}}), "x0", says="4,9"),
    # -- names -----------------------------------------------------------------------------------------------
    Case("long_name_250_bytes", _name("long_name_250_bytes-", 250), _j(tts()), "runwatch.name", says="too long"),
    Case(
        "long_name_255_bytes_toml",
        _name("long_name_255_bytes_toml-", 255, "é", ".toml"),
        TOML_TTS,
        "runwatch.name",
        says="too long",
    ),
    Case(
        "long_name_254_bytes_mixed",
        _name("long_name_254_bytes_mixed-", 254, "日x"),
        _j(tts()),
        "runwatch.name",
        says="too long",
    ),
    Case("tab_in_name", "{id}\tx.json", _j(tts()), "runwatch.name", says="control"),
    Case("del_in_name", "{id}\x7fx.json", _j(tts()), "runwatch.name", says="control"),
    Case("c1_control_in_name", "{id}\x85x.json", _j(tts()), "runwatch.name", says="control"),
    Case("line_separator_in_name", "{id}\u2028x.json", _j(tts()), "runwatch.name", says="control"),
    Case("fullwidth_slash_in_name", "{id}\uff0fx.json", _j(tts()), "runwatch.name", says="look-alike"),
]
CASES += HOSTILE


def _make(path: Path, spec: Spec) -> None:
    if isinstance(spec, bytes):
        path.write_bytes(spec)
        return
    kind, arg = spec
    if kind == "symlink":
        path.symlink_to(arg)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "sparse":  # a huge file that costs no disk
        with open(path, "wb") as fh:
            fh.truncate(arg)
    elif kind == "device":
        try:
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
        except PermissionError:
            need(False, "creating a device node needs CAP_MKNOD (run the tests as root)")
    else:
        raise AssertionError(kind)


def _sub(text: str, case: Case) -> str:
    return text.replace("{id}", case.id)


def _sub_bytes(data: Spec, case: Case) -> Spec:
    return data.replace(b"{id}", case.id.encode()) if isinstance(data, bytes) else data


class Corpus:
    def __init__(self, root: Path) -> None:
        self.sim = Simulator(SimConfig(time_scale=0.002, allow_http_loopback=True))
        self.sim.start()
        self.rig = Rig(root, self.sim, runway={"unknown_models": "reject"}).start()

    def billable(self) -> int:
        """Calls to Runway that could create, upload or cost anything."""
        return sum(1 for r in self.sim.requests("/v1/") if not r["path"].startswith("/v1/organization"))

    def close(self) -> None:
        self.rig.stop()
        self.sim.stop()


@pytest.fixture(scope="module")
def corpus() -> Iterator[Corpus]:
    with tempfile.TemporaryDirectory(prefix="runwatch-bad-") as tmp:
        env = Corpus(Path(tmp))
        try:
            yield env
        finally:
            env.close()


def _everything(root: Path | str) -> dict[str, list[Path]]:
    """Every entry under root by its base name (the user's files may have moved into the work area)."""
    found: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.setdefault(name, []).append(Path(dirpath) / name)
    return found


def _same(spec: Spec, path: Path) -> bool:
    if isinstance(spec, bytes):
        return path.is_file() and not path.is_symlink() and path.read_bytes() == spec
    kind, arg = spec
    st = path.lstat()
    if kind == "symlink":
        return stat.S_ISLNK(st.st_mode) and os.readlink(path) == arg
    if kind == "sparse":
        return stat.S_ISREG(st.st_mode) and st.st_size == arg
    tests = {"fifo": stat.S_ISFIFO, "dir": stat.S_ISDIR, "device": stat.S_ISCHR}
    return tests[kind](st.st_mode)


# Known gaps, each a bug to fix in the module named (the test stays here, strict, so the fix is noticed).
XFAIL: dict[str, str] = {}
PARAMS = [
    pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=XFAIL[c.id])] if c.id in XFAIL else [])
    for c in CASES
]


@pytest.mark.parametrize("case", PARAMS)
def test_bad_input(corpus: Corpus, case: Case) -> None:
    rig = corpus.rig
    before = corpus.billable()
    media = {_sub(name, case): _sub_bytes(spec, case) for name, spec in case.media.items()}
    request = _sub(case.request, case)
    content = _sub_bytes(case.content, case)
    if isinstance(content, bytes):
        content = content.replace(b"{id}", case.id.encode())
    for name, spec in media.items():
        _make(rig.inbox / name, spec)
    # Written under a temporary name and renamed in, as a producer should: the daemon never sees half a file.
    tmp = rig.inbox / f".{case.id}.tmp"
    _make(tmp, content)
    os.rename(tmp, rig.inbox / request)

    stem = request.rsplit(".", 1)[0]
    fmt = request.rsplit(".", 1)[1]
    status = rig.wait(case.status_name or stem, fmt=fmt, timeout=20) if case.status_name != "" else None
    assert status is not None
    assert status["state"] == "rejected", status
    issues = status["error"]["issues"]
    assert issues, status
    if case.path is not None:
        assert case.path in {i["path"] for i in issues}, issues
    if case.says is not None:
        assert any(case.says in i["message"] for i in issues), issues
    assert all(i["message"] for i in issues)
    assert status["request"] and status["request"].endswith(request), status["request"]  # names the file
    assert corpus.billable() == before, "a rejected request reached Runway"
    assert rig.thread is not None and rig.thread.is_alive(), "the daemon stopped"
    # Nothing of the user's deleted: each file is still in the inbox or in the kept record.
    found = _everything(rig.inbox)
    for name, spec in {**media, request: content}.items():
        assert any(_same(spec, p) for p in found.get(name, [])), f"{name!r} is gone"
    assert not (rig.inbox / "PWNED").exists() and not Path("PWNED").exists()


def test_non_utf8_file_name(corpus: Corpus) -> None:
    """A request whose name is not UTF-8 cannot name a status file as it is: it is still refused visibly, with a
    status file under a safe spelling of the name, and the file kept under .runwatch/failed/."""
    rig = corpus.rig
    before = corpus.billable()
    raw = os.fsencode(rig.inbox) + b"/latin1-caf\xe9.json"
    with open(raw, "wb") as fh:
        fh.write(_j(tts()))
    deadline = time.monotonic() + 6
    statuses: list[str] = []
    while time.monotonic() < deadline and not statuses:
        statuses = [n for n in os.listdir(rig.outbox) if n.startswith("latin1-caf") and ".status." in n]
        time.sleep(0.05)
    assert statuses, os.listdir(rig.outbox)
    status = json.loads((rig.outbox / statuses[0]).read_text())
    assert status["state"] == "rejected" and status["error"]["issues"], status
    assert corpus.billable() == before and rig.thread is not None and rig.thread.is_alive()
    kept = [p for p in _everything(os.fsdecode(os.fsencode(rig.inbox))).get(os.fsdecode(b"latin1-caf\xe9.json"), [])]
    assert kept and kept[0].read_bytes() == _j(tts())


def test_model_of_wrong_type_does_not_block_the_inbox(tmp_path: Path) -> None:
    """`"model": [...]` is rejected naming `model`, and a good request dropped after it still goes through."""
    with Simulator(SimConfig(time_scale=0.002)) as sim:
        rig = Rig(tmp_path, sim).start()
        try:
            rig.drop("listmodel", tts(model=["eleven_multilingual_v2"]))
            rig.drop("fine", tts())
            assert rig.wait("fine", timeout=8)["state"] == "succeeded"
            status = rig.wait("listmodel", timeout=2)
            assert status["state"] == "rejected" and "model" in {i["path"] for i in status["error"]["issues"]}
        finally:
            rig.stop()


class TestSharedNames:
    def test_one_media_file_for_two_requests(self, tmp_path: Path) -> None:
        """Two requests naming one image: both are sent with it, each once, and the image is kept (in both job
        records)."""
        with Simulator(SimConfig(time_scale=0.002)) as sim:
            rig = Rig(tmp_path, sim).start()
            try:
                (rig.inbox / "shared.jpg").write_bytes(JPG)
                rig.drop("first", i2v(promptImage="shared.jpg", promptText="one"))
                rig.drop("second", i2v(promptImage="shared.jpg", promptText="two"))
                statuses = {n: rig.wait(n, timeout=20) for n in ("first", "second")}
                assert sorted(s["state"] for s in statuses.values()) == ["succeeded", "succeeded"], statuses
                assert sim.create_count() == 2 and sim.duplicate_creates() == []
                kept = _everything(rig.inbox).get("shared.jpg", [])
                assert len([p for p in kept if _same(JPG, p)]) >= 2, kept
            finally:
                rig.stop()

    def test_output_name_collision(self, tmp_path: Path) -> None:
        """A user's file already holds the output's name: it is kept, and the output gets a unique suffix that the
        status file names."""
        with Simulator(SimConfig(time_scale=0.002)) as sim:
            rig = Rig(tmp_path, sim).start()
            try:
                rig.outbox.mkdir(exist_ok=True)
                mine = b"the user's own file"
                for ext in ("mp3", "wav", "flac", "ogg"):
                    (rig.outbox / f"voice.{ext}").write_bytes(mine)
                rig.drop("voice", tts())
                status = rig.wait("voice", timeout=20)
                assert status["state"] == "succeeded", status
                assert status["outputs"][0]["file"] not in {f"voice.{e}" for e in ("mp3", "wav", "flac", "ogg")}
                rig.check_outputs(status)
                for ext in ("mp3", "wav", "flac", "ogg"):
                    assert (rig.outbox / f"voice.{ext}").read_bytes() == mine
            finally:
                rig.stop()


class TestHostileFilesTogether:
    def test_bombs_do_not_hold_up_a_good_request(self, tmp_path: Path) -> None:
        """Bombs of every kind dropped at once with a good request: the good one succeeds, and each bomb ends
        rejected with a status file that names the problem; nothing of the bombs reaches Runway."""
        bombs = {
            "dotted.toml": b"a" + b".a" * 100_000 + b" = 1\n",
            "digits.json": _j(tts()).replace(b'"Hi."', b'"Hi.", "seed": ' + b"7" * 5000),
            "surrogate.json": _j(i2v(promptImage="x")).replace(b'"x"', b'"\\ud800.jpg"'),
            "hexint.toml": b"seed = 0x" + b"f" * 500_000 + b"\n",
            _name("long-", 250): _j(tts()),
        }
        with Simulator(SimConfig(time_scale=0.002)) as sim:
            rig = Rig(tmp_path, sim).start()
            try:
                for name, data in bombs.items():
                    (rig.inbox / f".{name}.tmp").write_bytes(data)
                    os.rename(rig.inbox / f".{name}.tmp", rig.inbox / name)
                rig.drop("good", tts())  # after the bombs: it waits behind them, if anything does
                assert rig.wait("good", timeout=30)["state"] == "succeeded"
                for name in bombs:
                    stem, fmt = name.rsplit(".", 1)
                    status = rig.wait(stem, fmt=fmt, timeout=30)
                    assert status["state"] == "rejected" and status["request"].endswith(name), status
                    assert all(i["message"] for i in status["error"]["issues"])
                assert sim.create_count() == 1
            finally:
                rig.stop()
