"""Redaction: the API key and signing secrets blanked in text, in values at any depth, in logs and status files.

The end-to-end check (every byte a busy run writes, searched for secrets) is in ``test_secrets.py``.
"""

from __future__ import annotations

import io
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
import structlog

from runwatch.errors import ApiConnectionError, ApiStatusError, CreateUnconfirmedError, OutboxError, UploadError
from runwatch.logs import configure_logging
from runwatch.outbox import write_status
from runwatch.redact import REDACTED, redact, redact_text

API_KEY = "key_" + "0123456789abcdef" * 8
SIG = "a" * 64


class TestText:
    def test_presigned_s3_url_keeps_everything_but_secrets(self) -> None:
        """X-Amz-Signature, -Credential and -Security-Token are blanked; the rest of the URL stays readable."""
        url = (
            "https://bucket.s3.amazonaws.com/runwatch/clip.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            f"&X-Amz-Credential=AKIAEXAMPLE%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20250101T000000Z"
            f"&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Security-Token=FQoGZXIvYXdzE&X-Amz-Signature={SIG}"
        )
        out = redact_text(url)
        assert SIG not in out and "AKIAEXAMPLE" not in out and "FQoGZXIvYXdzE" not in out
        assert "X-Amz-Signature=REDACTED" in out and "X-Amz-Credential=REDACTED" in out
        assert "X-Amz-Security-Token=REDACTED" in out
        assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in out and "X-Amz-Expires=3600" in out
        assert "X-Amz-SignedHeaders=host" in out
        assert out.startswith("https://bucket.s3.amazonaws.com/runwatch/clip.jpg?")

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("https://d.cloudfront.net/a.mp4?_jwt=eyJ.abc.def", "https://d.cloudfront.net/a.mp4?_jwt=REDACTED"),
            (
                "https://x/y?Signature=s1&Expires=9&Key-Pair-Id=K",
                "https://x/y?Signature=REDACTED&Expires=9&Key-Pair-Id=K",
            ),
            ("https://x/y?a=1&sig=zzz#frag", "https://x/y?a=1&sig=REDACTED#frag"),
            ("https://x/y?TOKEN=t0k&tokens=keep", "https://x/y?TOKEN=REDACTED&tokens=keep"),
            ("failed: https://x/y.png?token=abc, giving up", "failed: https://x/y.png?token=REDACTED, giving up"),
            (
                "two: http://a/1?sig=1 and 'https://b/2?_jwt=2'",
                "two: http://a/1?sig=REDACTED and 'https://b/2?_jwt=REDACTED'",
            ),
            ("https://x/path/token=1/sig=2", "https://x/path/token=1/sig=2"),  # path, not query
            ("no url here, token=abc", "no url here, token=abc"),
            (f"fetch /o/1.mp4?sig={SIG}: 403", "fetch /o/1.mp4?sig=REDACTED: 403"),  # no scheme, still a query
            ("https://x/y?_jwt=a.b.c).", "https://x/y?_jwt=REDACTED)."),
            ("runway://upload/abc", "runway://upload/abc"),
            ("https://x/y?a=1&amp;sig=zzz", "https://x/y?a=1&amp;sig=REDACTED"),  # HTML-escaped &
        ],
    )
    def test_url_query_secrets(self, text: str, expected: str) -> None:
        """Only the values of secret query parameters change; names, other parameters, paths and text stay."""
        assert redact_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"X-Amz-Signature={SIG}", "X-Amz-Signature=REDACTED"),  # a query string on its own
            (f"b'_jwt={SIG}'", "b'_jwt=REDACTED'"),
            (  # a SigV4 Authorization header
                f"AWS4-HMAC-SHA256 Credential=AKIA/x, SignedHeaders=host;x-amz-date, Signature={SIG}",
                "AWS4-HMAC-SHA256 Credential=AKIA/x, SignedHeaders=host;x-amz-date, Signature=REDACTED",
            ),
            (  # a presigned URL percent-encoded inside another URL's query
                f"https://a/r?next=https%3A%2F%2Fb%2Fo.mp4%3FX-Amz-Credential%3DAKIA%252Fx%26X-Amz-Signature%3D{SIG}"
                "%26X-Amz-Date%3D1&z=1",
                "https://a/r?next=https%3A%2F%2Fb%2Fo.mp4%3FX-Amz-Credential%3DREDACTED%26X-Amz-Signature%3DREDACTED"
                "%26X-Amz-Date%3D1&z=1",
            ),
            (
                "https://a/r?u=https%3A%2F%2Fb%2Fo%3Fsig%3Dzzz%26a%3D1",
                "https://a/r?u=https%3A%2F%2Fb%2Fo%3Fsig%3DREDACTED%26a%3D1",
            ),
            (f"{{'x-amz-signature': '{SIG}', 'policy': 'p'}}", "{'x-amz-signature': 'REDACTED', 'policy': 'p'}"),
            (
                f'{{"X-Amz-Credential": "AKIA/1", "_jwt" : "{SIG}"}}',
                '{"X-Amz-Credential": "REDACTED", "_jwt" : "REDACTED"}',
            ),
            (f'"body": "{{\\"token\\": \\"{SIG}\\"}}"', '"body": "{\\"token\\": \\"REDACTED\\"}"'),  # JSON in JSON
            (f'msg="https://h/o?_jwt={SIG}\\" next', 'msg="https://h/o?_jwt=REDACTED\\" next'),  # escape kept
        ],
    )
    def test_distinct_names_anywhere(self, text: str, expected: str) -> None:
        """Names that only ever carry a secret are blanked outside a query too: alone, in a header, encoded, quoted."""
        assert redact_text(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "design=foo mysig=1 my_jwt=2 Signatures=3 X-Amz-SignedHeaders=host X-Amz-Date=20250101T000000Z",
            "the token: abc, the sig: 2",
            "'sig' is a short name",
            "key_" + "0" * 127,
        ],
    )
    def test_look_alikes_stay(self, text: str) -> None:
        """A secret name inside a longer word, a short key, or a name without a value is not touched."""
        assert redact_text(text) == text

    def test_api_key_anywhere_in_a_string(self) -> None:
        """A Runway key (key_ + 128 hex digits) becomes key_REDACTED wherever it appears."""
        assert redact_text(f"Authorization: Bearer {API_KEY}") == "Authorization: Bearer key_REDACTED"
        assert redact_text(API_KEY) == "key_REDACTED"
        assert redact_text("key_abc is not a key") == "key_abc is not a key"

    def test_a_longer_key_is_blanked_whole(self) -> None:
        """No tail of hex digits is left behind when the key runs past 128 of them."""
        assert redact_text(f"{API_KEY}ffff.") == "key_REDACTED."

    @pytest.mark.parametrize("text", [f"https://x/y?X-Amz-Signature={SIG}&sig={SIG}", f"{API_KEY} _jwt={SIG}"])
    def test_idempotent(self, text: str) -> None:
        """Redacting twice changes nothing more (a status file may be rewritten from a redacted one)."""
        once = redact_text(text)
        assert REDACTED in once and redact_text(once) == once


class TestValues:
    def test_nested_values_are_redacted(self) -> None:
        """Strings inside lists and dicts at any depth, and dict keys, are redacted; other values pass."""
        value = {
            "error": {"message": f"bad key {API_KEY}", "issues": [{"path": "promptImage", "message": f"x?sig={SIG}"}]},
            "request": {"promptImage": [{"uri": f"https://h/i.png?X-Amz-Signature={SIG}", "position": "first"}]},
            f"https://h/k?sig={SIG}": 1,
            "n": [1, 2.5, True, None],
        }
        out = redact(value)
        assert SIG not in json.dumps(out) and "0123456789abcdef" not in json.dumps(out)
        uri = {"uri": "https://h/i.png?X-Amz-Signature=REDACTED", "position": "first"}
        assert out["request"]["promptImage"][0] == uri
        assert out["error"]["message"] == "bad key key_REDACTED"
        assert out["n"] == [1, 2.5, True, None]
        assert "https://h/k?sig=REDACTED" in out

    def test_input_is_not_modified(self) -> None:
        """Redaction works on a copy: the daemon's own mapping keeps its real URLs."""
        status = {"outputs": [{"url": f"https://h/o?sig={SIG}"}]}
        redact(status)
        assert status["outputs"][0]["url"].endswith(SIG)

    def test_a_key_naming_a_secret_blanks_its_value(self) -> None:
        """The fields of a presigned POST, a parsed query: the value under a secret name is blanked whole."""
        value = {"fields": {"key": "k/1.png", "x-amz-signature": SIG, "Policy": "eyJ"}, "query": {"_jwt": [SIG, None]}}
        assert redact(value) == {
            "fields": {"key": "k/1.png", "x-amz-signature": REDACTED, "Policy": "eyJ"},
            "query": {"_jwt": [REDACTED, None]},
        }

    def test_plain_copies(self) -> None:
        """Tuples become lists, paths strings; drop_none leaves None out of tables and arrays (TOML has no null)."""
        value = {"p": Path(f"/o/x?sig={SIG}"), "t": (1, None, "a"), "none": None}
        assert redact(value) == {"p": "/o/x?sig=REDACTED", "t": [1, None, "a"], "none": None}
        assert redact(value, drop_none=True) == {"p": "/o/x?sig=REDACTED", "t": [1, "a"]}

    def test_other_objects(self) -> None:
        """Other objects are kept as they are, or, with ``other``, turned into text and redacted."""
        error = RuntimeError(f"GET https://h/o?_jwt={SIG} failed")
        assert redact({"e": error})["e"] is error
        assert redact({"e": error, "b": f"?sig={SIG}".encode(), "n": 3}, other=repr) == {
            "e": "RuntimeError('GET https://h/o?_jwt=REDACTED failed')",
            "b": "b'?sig=REDACTED'",
            "n": 3,
        }


class TestWhereItIsApplied:
    def test_log_values_and_tracebacks(self) -> None:
        """The log processor blanks keys and signatures in any value at any depth, tracebacks included."""
        stream = io.StringIO()
        stream.isatty = lambda: False  # type: ignore[method-assign]
        configure_logging("debug", stream=stream)
        try:
            log = structlog.get_logger("t").bind(source=f"https://s/x?X-Amz-Credential=AKIA{SIG}")
            secret = "key_" + "a" * 128
            try:
                raise RuntimeError(f"boom https://b.example.com/x?X-Amz-Signature={'ab' * 32}&y=1 {secret}")
            except RuntimeError as exc:
                log.exception(
                    "test.failed",
                    url="https://x.example.com/o?_jwt=abcdefghijklmnopqrstuvwxyz",
                    problems=[f"promptImage: https://h/i?sig={'cd' * 32}"],
                    error=exc,
                    fields={"x-amz-signature": "ef" * 32},
                )
        finally:
            structlog.reset_defaults()
        text = stream.getvalue()
        for leak in (secret, "ab" * 32, "abcdefghijklmnopqrstuvwxyz", SIG, "cd" * 32, "ef" * 32):
            assert leak not in text
        event = json.loads(text)
        assert event["event"] == "test.failed" and "RuntimeError: boom" in event["exception"]
        assert event["problems"] == ["promptImage: https://h/i?sig=REDACTED"]
        assert event["fields"] == {"x-amz-signature": "REDACTED"}
        assert event["error"].startswith("RuntimeError('boom https://b.example.com/x?X-Amz-Signature=REDACTED&y=1")

    @pytest.mark.parametrize("fmt", ["json", "toml"])
    def test_status_files_never_hold_secrets(self, tmp_path: Path, fmt: Literal["json", "toml"]) -> None:
        """Whatever the daemon hands over, the file on disk has no key and no signature."""
        status: dict[str, Any] = {
            "name": "clip",
            "state": "failed",
            "task_id": None,
            "error": {
                "code": 400,
                "message": f"Bearer {API_KEY}",
                "issues": [{"path": "promptImage", "message": f"https://h/i?_jwt={SIG}"}],
            },
            "outputs": [{"file": "x", "url": f"https://h/o.mp4?X-Amz-Signature={SIG}&X-Amz-Credential=AKIA"}],
        }
        path = write_status(tmp_path, "clip", fmt, status)
        text = path.read_text()
        assert SIG not in text and API_KEY not in text and "AKIA" not in text
        assert "REDACTED" in text
        parsed = json.loads(text) if fmt == "json" else tomllib.loads(text)
        assert parsed["outputs"][0]["url"] == "https://h/o.mp4?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED"


class TestAtTheDoor:
    """Errors redact what they carry as they are made, so whatever stores or prints them never sees a secret."""

    KEY_ID = "AKIA" + "Q7" * 8
    URL = f"https://b.s3.amazonaws.com/x.jpg?AWSAccessKeyId={KEY_ID}&Expires=9&Signature=s1G%2B"

    def test_access_key_ids(self) -> None:
        """S3's older AWSAccessKeyId parameter, and an access key id anywhere, are blanked; look-alikes stay."""
        assert redact_text(self.URL) == (
            "https://b.s3.amazonaws.com/x.jpg?AWSAccessKeyId=REDACTED&Expires=9&Signature=REDACTED"
        )
        assert redact_text(f"key {self.KEY_ID}, temporary ASIA{'X1' * 8}.") == "key REDACTED, temporary REDACTED."
        for kept in ("AKIA/x", "AKIASHORT1", f"x{self.KEY_ID}", f"{self.KEY_ID}99", "ASIAN FOOD"):
            assert redact_text(kept) == kept

    def test_api_status_error_body_and_message(self) -> None:
        """Runway's error body quoting a presigned URL is redacted in the error's body (its issues too) and
        in its message."""
        body = {"error": f"Cannot fetch {self.URL}", "issues": [{"path": ["promptImage"], "message": self.URL}]}
        error = ApiStatusError(400, body)
        assert self.KEY_ID not in json.dumps(error.body) and "s1G" not in json.dumps(error.body)
        assert self.KEY_ID not in str(error) and "AWSAccessKeyId=REDACTED" in str(error)
        assert body["error"].endswith("s1G%2B")  # the caller's value itself is not changed

    @pytest.mark.parametrize(
        "make",
        [
            lambda text: UploadError(text, retryable=False),
            lambda text: OutboxError(text),
            lambda text: CreateUnconfirmedError(text),
            lambda text: ApiConnectionError(text, sent=True),
        ],
    )
    def test_messages(self, make: Callable[[str], Exception]) -> None:
        """Every error's message (boto3's, httpx's, Runway's words inside) is redacted as the error is made."""
        error = make(f"S3 upload failed: {self.URL} with key {API_KEY}")
        assert self.KEY_ID not in str(error) and API_KEY not in str(error) and "Signature=REDACTED" in str(error)
