"""Redaction: the API key and the secrets of signed URLs blanked out of everything runwatch writes.

One rule for log values and tracebacks (:mod:`runwatch.logs`), status files (:mod:`runwatch.outbox`) and the
messages built from URLs: a Runway key (``key_`` and 128 or more hex digits) becomes ``key_REDACTED``, and the
value of a signing parameter becomes ``REDACTED`` while its name and the rest of the URL stay readable, so a
person can still tell which file a message is about.

Names that only ever carry a secret (S3's ``X-Amz-Signature``, ``X-Amz-Credential`` and ``X-Amz-Security-Token``,
S3's older ``AWSAccessKeyId``, CloudFront's ``Signature``, the ``_jwt`` of Runway's output URLs) are blanked
wherever they stand as a whole name:
in a query, after a space (a SigV4 ``Authorization`` header) and percent-encoded inside another URL. The short,
common ``sig`` and ``token`` count only as query parameters (after ``?``, ``&`` or ``;``), so ``token=abc`` in
prose or ``/sig=2`` in a path stays as written. Any of these names as a key blanks its value whole: a mapping's
key (the ``fields`` of a presigned POST, a parsed query) or a quoted key in text (``'x-amz-signature': '…'`` in a
dict's repr, ``"_jwt": "…"`` in JSON). An AWS access key id (``AKIA`` or ``ASIA`` and 16 more capitals and digits)
is blanked wherever it stands.

Text from outside (Runway's error bodies, boto3's and httpx's messages) is redacted where it enters: every
:class:`~runwatch.errors.RunwatchError` redacts its message, and an API error its body, so what the journal
stores and ``runwatch status`` prints is already clean.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["REDACTED", "SECRET_NAMES", "redact", "redact_text"]

REDACTED = "REDACTED"

_ANYWHERE = ("X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "AWSAccessKeyId", "Signature", "_jwt")
_QUERY_ONLY = ("sig", "token")
#: Every parameter name whose value is a secret, as spelt in the wild (matched without regard to case).
SECRET_NAMES = _ANYWHERE + _QUERY_ONLY
_SECRET_KEYS = frozenset(name.lower() for name in SECRET_NAMES)


def _either(names: tuple[str, ...]) -> str:
    return "(?:" + "|".join(map(re.escape, names)) + ")"


_API_KEY = re.compile(r"key_[0-9a-fA-F]{128,}")
# name=value. A whole name: not the tail of a longer one ("X-Amz-SignedHeaders", "my_jwt"), unless what precedes
# it is a percent-encoded ? or &. The value ends where a URL's query value would; trailing sentence punctuation
# is kept for readability. The leading lookahead (any match's first character) makes most positions fail fast.
_PARAM = re.compile(
    r"(?=[xs_?&;%])((?:(?:(?<![\w-])|(?<=%3F)|(?<=%26))"
    + _either(_ANYWHERE)
    + r"|(?:[?&;]|%3F|%26)"
    + _either(_QUERY_ONLY)
    + r")(?:=|%3D))"
    r"(?:(?!%26)[^&#;\s\"'<>\\])*?"
    r"(?=[,.:!?)\]}]*(?:[&#;\s\"'<>\\]|%26|$))",
    re.IGNORECASE,
)
# 'name': 'value' and "name": "value" (also with the quotes escaped, JSON inside a string).
_QUOTED = re.compile(r"([\"']" + _either(SECRET_NAMES) + r"\\?[\"']\s*:\s*\\?[\"'])[^\"'\\\s]*", re.IGNORECASE)
# Every secret name holds one of these: text with none of them (most text) skips both scans.
_HINTS = ("sig", "token", "_jwt", "x-amz", "accesskeyid")
_ACCESS_KEY_ID = re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])")


def redact_text(text: str) -> str:
    """``text`` with every API key and signing secret blanked; anything else stays as written."""
    lowered = text.lower()
    if any(hint in lowered for hint in _HINTS):
        text = _PARAM.sub(rf"\g<1>{REDACTED}", text)
        text = _QUOTED.sub(rf"\g<1>{REDACTED}", text)
    if "AKIA" in text or "ASIA" in text:
        text = _ACCESS_KEY_ID.sub(REDACTED, text)
    return _API_KEY.sub("key_" + REDACTED, text) if "key_" in text else text


def redact(value: Any, *, drop_none: bool = False, other: Callable[[Any], str] | None = None) -> Any:
    """A plain JSON/TOML-ready copy of ``value`` with every string redacted, at any depth.

    Mapping keys are redacted too, and under a key that names a secret (``X-Amz-Signature``, ``token``…) every
    string is blanked whole. Mappings become dicts (order kept), tuples lists, paths strings; ``drop_none``
    leaves out None values (TOML has no null). Numbers, booleans and None pass; any other value is kept as it
    is, or turned into text by ``other`` and redacted (logs pass ``repr``, which is what their renderers print).
    """
    return _walk(value, drop_none, other, blank=False)


def _walk(value: Any, drop_none: bool, other: Callable[[Any], str] | None, *, blank: bool) -> Any:
    if isinstance(value, str):
        return REDACTED if blank else redact_text(value)
    if isinstance(value, os.PathLike):
        return _walk(os.fspath(value), drop_none, other, blank=blank)
    if isinstance(value, Mapping):
        return {
            redact_text(str(k)): _walk(v, drop_none, other, blank=blank or str(k).lower() in _SECRET_KEYS)
            for k, v in value.items()
            if not (drop_none and v is None)
        }
    if isinstance(value, list | tuple):
        return [_walk(v, drop_none, other, blank=blank) for v in value if not (drop_none and v is None)]
    if other is None or value is None or isinstance(value, int | float):
        return value
    return _walk(other(value), drop_none, other, blank=blank)
