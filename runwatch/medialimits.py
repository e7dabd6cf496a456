"""What Runway takes of a media file, per transport and media kind: the one size rule.

A local media file reaches Runway by one of three transports, each with its own limits (Runway's API reference,
"Input media rules and the upload flow"):

=========  ======================================================  ===============================================
transport  how Runway gets the file                                what it takes
=========  ======================================================  ===============================================
``runway`` Runway's ephemeral upload (``POST /v1/uploads``)          512 bytes to 200 MiB, any kind
``s3``     a presigned HTTPS URL Runway fetches                     images up to 16 MiB, video and audio up to 32 MiB
``data``   the file inline as a base64 ``data:`` URI                 URIs of at most 5 MiB (images), 16 MiB (video,
                                                                   audio) characters: about three quarters of that
                                                                   in file bytes
=========  ======================================================  ===============================================

:func:`size_problem` is that table as a check. Request validation (``runwatch validate`` and the inbox's claim)
asks it with the transport the inbox would choose (:func:`choose`), and the transports ask it again with the
size of the very file they are about to send, so the two can never disagree. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from runwatch.errors import UploadError

__all__ = [
    "DATA_URI_CAPS",
    "MAX_URL_LENGTH",
    "TRANSPORTS",
    "UPLOAD_MAX",
    "UPLOAD_MIN",
    "URL_CAPS",
    "choose",
    "data_uri_length",
    "size_problem",
    "size_text",
]

MIB = 1024 * 1024
TRANSPORTS = ("s3", "runway", "data")
MAX_URL_LENGTH = 2048  # Runway refuses longer media URLs
UPLOAD_MIN = 512  # bytes, Runway's ephemeral upload limits
UPLOAD_MAX = 200 * MIB
#: Caps on a data URI's length (characters), per media kind, as Runway documents them.
DATA_URI_CAPS: Mapping[str, int] = {"image": 5 * MIB, "video": 16 * MIB, "audio": 16 * MIB}
#: Largest files Runway fetches from an HTTPS URL, per media kind (bytes).
URL_CAPS: Mapping[str, int] = {"image": 16 * MIB, "video": 32 * MIB, "audio": 32 * MIB}


def choose(setting: str, *, s3_configured: bool) -> str:
    """The transport for an inbox's ``transport`` setting: ``auto`` is ``s3`` when a bucket is configured."""
    if setting == "auto":
        return "s3" if s3_configured else "runway"
    if setting not in TRANSPORTS:
        raise UploadError(f"unknown transport {setting!r}: use auto, {', '.join(TRANSPORTS)}", retryable=False)
    if setting == "s3" and not s3_configured:
        raise UploadError('transport "s3" needs an [s3] section with a bucket in the configuration', retryable=False)
    return setting


def data_uri_length(content_type: str, size: int) -> int:
    """Length of ``data:<type>;base64,<...>`` for ``size`` bytes, without encoding them."""
    return len(f"data:{content_type};base64,") + 4 * math.ceil(size / 3)


def size_text(n: int) -> str:
    """A byte count for people: exact below a MiB, in MiB (and exact) above."""
    if n < MIB:
        return f"{n:,} byte" + ("" if n == 1 else "s")
    whole = f"{n // MIB:,}" if n % MIB == 0 else f"{n / MIB:,.1f}"
    return f"{whole} MiB ({n:,} bytes)"


def _characters(n: int) -> str:
    whole = f" ({n // MIB:,} MiB)" if n >= MIB and n % MIB == 0 else ""
    return f"{n:,} characters{whole}"


def size_problem(
    transport: str,
    kind: str,
    content_type: str,
    size: int,
    *,
    url_caps: Mapping[str, int] | None = None,
    data_caps: Mapping[str, int] | None = None,
) -> str | None:
    """Why a file of ``size`` bytes cannot go by ``transport``, or None when it can.

    The text starts with the size and says the range the transport takes, so a caller puts the file's name
    before it: ``f"{name} is {problem}"``. ``url_caps`` and ``data_caps`` replace the documented caps (the
    transports take them as settings).
    """
    if transport == "runway":
        if UPLOAD_MIN <= size <= UPLOAD_MAX:
            return None
        hint = '; transport "s3" or "data" takes smaller files' if size < UPLOAD_MIN else ""
        return (
            f'{size_text(size)}; transport "runway" (Runway\'s uploads) takes {size_text(UPLOAD_MIN)} '
            f"to {size_text(UPLOAD_MAX)}{hint}"
        )
    if transport == "s3":
        cap = (URL_CAPS if url_caps is None else url_caps).get(kind)
        if size >= 1 and (cap is None or size <= cap):
            return None
        top = f"to {size_text(cap)}" if cap is not None else "and up"
        hint = f'; transport "runway" takes up to {size_text(UPLOAD_MAX)}' if cap is not None and size > cap else ""
        return (
            f'{size_text(size)}; transport "s3" hands Runway a URL, and Runway fetches {kind} files of 1 byte '
            f"{top}{hint}"
        )
    if transport == "data":
        cap = (DATA_URI_CAPS if data_caps is None else data_caps).get(kind)
        if cap is None:
            return f'{size_text(size)}; transport "data" knows no cap on {kind} data URIs: use "s3" or "runway"'
        length = data_uri_length(content_type, size)
        if size >= 1 and length <= cap:
            return None
        largest = max(0, (cap - data_uri_length(content_type, 0)) // 4 * 3)
        return (
            f'{size_text(size)} ({length:,} characters as a data URI); transport "data" takes {kind} files of '
            f"1 byte to {size_text(largest)} (data URIs of at most {_characters(cap)})"
            + ('; use transport "s3" or "runway"' if size else "")
        )
    return f'{size_text(size)}; no transport is called "{transport}" (use auto, s3, runway or data)'
