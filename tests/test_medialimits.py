"""The one size rule for local media: what each transport takes, checked by the request check (so by
`runwatch validate` and by the inbox's claim) with the transport the inbox would choose, in the same words as the
transports' own last check."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from runwatch.config import load_config
from runwatch.errors import RequestError
from runwatch.medialimits import (
    DATA_URI_CAPS,
    UPLOAD_MAX,
    UPLOAD_MIN,
    URL_CAPS,
    data_uri_length,
    size_problem,
    size_text,
)
from runwatch.request import Request, load_request
from runwatch.simulator import Simulator
from runwatch.validate import Validator, validate_command

from .conftest import SAMPLES, png_of
from .rig import Rig

MIB = 1024 * 1024
I2V = {"endpoint": "image_to_video", "model": "gen4_turbo", "ratio": "1280:720", "duration": 5, "promptText": "sea"}
V2V = {"endpoint": "video_to_video", "model": "aleph2", "promptText": "snow"}


@dataclass(frozen=True)
class Inbox:
    """What a request reads of its inbox, with the transport its media would go by."""

    path: Path
    media_transport: str = "runway"
    endpoint: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    media_field: str = "promptImage"
    accept_media: bool = False


def _largest_data(kind: str, ctype: str) -> int:
    """The largest file whose data URI fits the kind's cap."""
    return (DATA_URI_CAPS[kind] - data_uri_length(ctype, 0)) // 4 * 3


def sparse(path: Path, size: int, head: str = "still.jpg") -> Path:
    """A sample's real head, then a sparse tail up to ``size`` bytes: big files that cost no disk."""
    shutil.copy(SAMPLES / head, path)
    with open(path, "r+b") as fh:
        fh.truncate(size)
    return path


def check(folder: Path, body: dict[str, Any], transport: str = "runway", **defaults: Any) -> Request:
    path = folder / "req.json"
    path.write_text(json.dumps(body))
    return load_request(path, root=folder, inbox=Inbox(folder, transport, defaults=defaults))


def refusal(folder: Path, body: dict[str, Any], transport: str = "runway", **defaults: Any) -> dict[str, str]:
    with pytest.raises(RequestError) as info:
        check(folder, body, transport, **defaults)
    assert info.value.path == str(folder / "req.json")  # the error names the file
    return {p.path: p.message for p in info.value.problems}


class TestSizeRule:
    """size_problem, as a table: None when the transport takes the file, else why not."""

    @pytest.mark.parametrize(
        ("transport", "kind", "ctype", "size", "ok"),
        [
            ("runway", "image", "image/png", 230, False),
            ("runway", "image", "image/png", UPLOAD_MIN - 1, False),
            ("runway", "image", "image/png", UPLOAD_MIN, True),
            ("runway", "video", "video/mp4", UPLOAD_MAX, True),
            ("runway", "video", "video/mp4", UPLOAD_MAX + 1, False),
            ("s3", "image", "image/png", 230, True),
            ("s3", "image", "image/png", 0, False),
            ("s3", "image", "image/jpeg", URL_CAPS["image"], True),
            ("s3", "image", "image/jpeg", URL_CAPS["image"] + 1, False),
            ("s3", "video", "video/mp4", URL_CAPS["video"], True),
            ("s3", "audio", "audio/mpeg", URL_CAPS["audio"] + 1, False),
            ("data", "image", "image/png", 230, True),
            ("data", "image", "image/png", 0, False),
            ("data", "image", "image/png", _largest_data("image", "image/png"), True),
            ("data", "image", "image/png", _largest_data("image", "image/png") + 1, False),
            ("data", "video", "video/mp4", _largest_data("video", "video/mp4"), True),
            ("data", "video", "video/mp4", _largest_data("video", "video/mp4") + 1, False),
            ("ftp", "image", "image/png", 230, False),
        ],
    )
    def test_table(self, transport: str, kind: str, ctype: str, size: int, ok: bool) -> None:
        """Runway's documented limits: uploads 512 bytes to 200 MiB, URL fetches 16/32 MiB, data URI lengths."""
        assert (size_problem(transport, kind, ctype, size) is None) is ok

    @pytest.mark.parametrize(
        ("transport", "kind", "size", "words"),
        [
            ("runway", "image", 230, ["230 bytes", "takes 512 bytes to 200 MiB (209,715,200 bytes)", '"s3" or "data"']),
            ("s3", "image", 16 * MIB + 1, ["image files of 1 byte to 16 MiB", '"runway" takes up to 200 MiB']),
            ("data", "image", 4 * MIB, ["image files of 1 byte to 3.7 MiB", "5,242,880 characters (5 MiB)"]),
        ],
    )
    def test_words_say_the_range(self, transport: str, kind: str, size: int, words: list[str]) -> None:
        """The text starts with the size and says what range the transport takes (and what else would do)."""
        text = size_problem(transport, kind, "image/png", size)
        assert text is not None and text.startswith(size_text(size))
        for word in words:
            assert word in text, text


class TestRequestCheck:
    """load_request fits local media to the inbox's transport, and names the file, the field and the range."""

    def test_tiny_image_refused_for_runway_uploads(self, tmp_path: Path) -> None:
        """A 230-byte PNG cannot go through Runway's uploads: the request is refused, not sent to fail later."""
        (tmp_path / "tiny.png").write_bytes(png_of(230))
        problems = refusal(tmp_path, {**I2V, "promptImage": "tiny.png"})
        assert list(problems) == ["promptImage"]
        message = problems["promptImage"]
        assert message.startswith('"tiny.png" is 230 bytes;')
        assert "512 bytes to 200 MiB" in message

    def test_the_transport_decides(self, tmp_path: Path) -> None:
        """The same tiny file is refused for Runway's uploads and fine where it goes as a URL or inline."""
        (tmp_path / "tiny.png").write_bytes(png_of(230))
        body = {**I2V, "promptImage": "tiny.png"}
        assert "promptImage" in refusal(tmp_path, body, "runway")
        for transport in ("s3", "data"):
            assert [m.size for m in check(tmp_path, body, transport).media] == [230]

    def test_big_enough_file_accepted(self, tmp_path: Path) -> None:
        """From 512 bytes on an image goes through Runway's uploads; 511 bytes is one too few."""
        (tmp_path / "short.png").write_bytes(png_of(UPLOAD_MIN - 1))
        assert "511 bytes" in refusal(tmp_path, {**I2V, "promptImage": "short.png"})["promptImage"]
        for size in (UPLOAD_MIN, 4096):
            (tmp_path / "ok.png").write_bytes(png_of(size))
            assert check(tmp_path, {**I2V, "promptImage": "ok.png"}).media[0].size == size

    def test_url_cap_under_s3(self, tmp_path: Path) -> None:
        """Through S3 Runway fetches the file: an image over 16 MiB is refused there, fine for uploads."""
        sparse(tmp_path / "big.jpg", 16 * MIB + 1)
        body = {**I2V, "promptImage": "big.jpg"}
        message = refusal(tmp_path, body, "s3")["promptImage"]
        assert message.startswith('"big.jpg" is 16.0 MiB') and "1 byte to 16 MiB" in message
        assert check(tmp_path, body, "runway").media[0].size == 16 * MIB + 1

    def test_data_cap_on_a_local_file(self, tmp_path: Path) -> None:
        """Inline, a 4 MiB image makes a data URI over 5 MiB: refused, with the largest file that fits."""
        sparse(tmp_path / "four.jpg", 4 * MIB)
        message = refusal(tmp_path, {**I2V, "promptImage": "four.jpg"}, "data")["promptImage"]
        assert "characters as a data URI" in message and "1 byte to 3.7 MiB" in message

    def test_video_cap_under_s3(self, tmp_path: Path) -> None:
        """Video has its own cap: 32 MiB through a URL."""
        sparse(tmp_path / "long.mp4", 32 * MIB + 1, head="clip.mp4")
        message = refusal(tmp_path, {**V2V, "videoUri": "long.mp4"}, "s3")["videoUri"]
        assert "video files of 1 byte to 32 MiB" in message


def _data_uri(ctype: str, most: int) -> str:
    """The longest well-formed base64 data URI of at most ``most`` characters."""
    head = f"data:{ctype};base64,"
    return head + base64.b64encode(b"\0" * ((most - len(head)) // 4 * 3)).decode()


class TestInlineDataUris:
    """A data: URI given as it is is held to Runway's caps on its length, per media kind. A request file
    holds at most 1 MiB, so such a URI comes from the inbox's defaults."""

    @pytest.mark.parametrize(
        ("body", "where", "ctype"),
        [({**I2V}, "promptImage", "image/png"), ({**V2V}, "videoUri", "video/mp4")],
    )
    def test_caps(self, tmp_path: Path, body: dict[str, Any], where: str, ctype: str) -> None:
        """Up to the cap it passes; over it the problem says the length and the cap."""
        cap = DATA_URI_CAPS[ctype.split("/")[0]]
        fits = _data_uri(ctype, cap)
        assert check(tmp_path, body, **{where: fits}).media == ()
        too_long = _data_uri(ctype, cap + 4)
        assert len(too_long) > cap
        message = refusal(tmp_path, body, **{where: too_long})[where]
        assert f"{len(too_long):,} characters" in message and f"at most {cap:,} characters" in message

    def test_long_urls(self, tmp_path: Path) -> None:
        """https:// URLs longer than 2048 characters and runway:// URIs longer than 5000 are refused."""
        url = "https://example.com/" + "a" * (2048 - len("https://example.com/"))
        assert check(tmp_path, {**I2V, "promptImage": url}).media == ()
        assert "at most 2,048" in refusal(tmp_path, {**I2V, "promptImage": url + "a"})["promptImage"]
        uri = "runway://uploads/" + "b" * 5000
        assert "at most 5,000" in refusal(tmp_path, {**I2V, "promptImage": uri})["promptImage"]


def _config(tmp_path: Path, inbox: dict[str, Any], *, bucket: bool = False) -> Path:
    data: dict[str, Any] = {
        "runway": {"base_url": "http://127.0.0.1:9"},
        "state": {"dir": str(tmp_path / "state")},
        "inbox": [{"name": "main", "path": str(tmp_path / "inbox"), "outbox": str(tmp_path / "outbox"), **inbox}],
    }
    if bucket:
        data["s3"] = {"bucket": "media", "endpoint_url": "http://127.0.0.1:9", "region": "us-east-1"}
    (tmp_path / "inbox").mkdir(exist_ok=True)
    path = tmp_path / "runwatch.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def _validate(config: Path, *paths: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = validate_command([str(p) for p in paths], config_file=str(config), out=out, err=err, env={})
    return code, out.getvalue()


class TestValidateCommand:
    """`runwatch validate` fits media to the transport the daemon would send them by."""

    def test_tiny_image_fails_validate(self, tmp_path: Path) -> None:
        """In an inbox that sends by Runway's uploads, a 230-byte PNG is invalid: FILE: field: the range. The
        same file is valid in an inbox that sends inline, or by S3 (``auto`` with a bucket)."""
        (tmp_path / "inbox").mkdir()
        (tmp_path / "inbox" / "tiny.png").write_bytes(png_of(230))
        request = tmp_path / "inbox" / "tiny.json"
        request.write_text(json.dumps({**I2V, "promptImage": "tiny.png"}))
        code, out = _validate(_config(tmp_path, {}), request)
        assert code == 1
        assert f'{request}: promptImage: "tiny.png" is 230 bytes; transport "runway"' in out
        assert "512 bytes to 200 MiB" in out
        for inbox, bucket in (({"transport": "data"}, False), ({}, True)):
            code, out = _validate(_config(tmp_path, inbox, bucket=bucket), request)
            assert code == 0, out

    def test_checked_names_the_transport(self, tmp_path: Path) -> None:
        """A checked file says which transport its media were fitted to, so `runwatch submit` sends by it."""
        config = load_config(_config(tmp_path, {"transport": "data"}, bucket=True))
        (tmp_path / "inbox" / "tiny.png").write_bytes(png_of(230))
        inside = tmp_path / "inbox" / "tiny.json"
        inside.write_text(json.dumps({**I2V, "promptImage": "tiny.png"}))
        elsewhere = tmp_path / "text.json"
        elsewhere.write_text(json.dumps({**I2V, "promptImage": "https://example.com/a.jpg"}))
        validator = Validator(config)
        assert validator.check(inside).transport == "data"
        assert validator.check(elsewhere).transport == "s3"

    def test_outside_an_inbox_auto_decides(self, tmp_path: Path) -> None:
        """A file outside every inbox (as `runwatch submit` sends it) is checked against auto: S3 with a bucket."""
        config = _config(tmp_path, {}, bucket=True)
        folder = tmp_path / "requests"
        folder.mkdir()
        sparse(folder / "big.jpg", 16 * MIB + 1)
        request = folder / "big.json"
        request.write_text(json.dumps({**I2V, "promptImage": "big.jpg"}))
        code, out = _validate(config, request)
        assert code == 1 and 'transport "s3"' in out and "1 byte to 16 MiB" in out


class TestDaemonAgrees:
    """What validate refuses, the daemon refuses at the claim: a rejection with a status file, nothing uploaded."""

    def test_tiny_image_is_rejected_at_claim(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A 230-byte PNG is rejected as an invalid request naming the field and the range, not a failed upload;
        a 512-byte one beside it goes through Runway's uploads and succeeds."""
        rig = rig_factory(sim).start()
        (rig.inbox / "tiny.png").write_bytes(png_of(230))
        rig.drop("tiny", {**I2V, "promptImage": "tiny.png"})
        status = rig.wait("tiny")
        assert status["state"] == "rejected", status
        assert status["error"]["code"] == "invalid_request"
        [issue] = status["error"]["issues"]
        assert issue["path"] == "promptImage" and "512 bytes to 200 MiB" in issue["message"]
        assert sim.requests("/v1/uploads") == [] and sim.create_count() == 0
        assert "/failed/" in status["request"]
        (rig.inbox / "small.png").write_bytes(png_of(UPLOAD_MIN))
        rig.drop("small", {**I2V, "promptImage": "small.png"})
        assert rig.wait("small")["state"] == "succeeded"
        assert len(sim.requests("/v1/uploads")) == 1
