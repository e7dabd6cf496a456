"""Whether a downloaded output is whole: its container parses for its media type and ends where it says.

Runway's answers are not trusted blindly: an output cut short by a cache or a proxy, or an error page served
with a media Content-Type, must not become a ``succeeded`` request. :func:`check_output` reads the file's
structure (never decodes it) and says what is wrong, in a person's words, or None:

- the bytes must be a format ``runwatch.mediaprobe`` recognises, and the one announced (by Content-Type, else
  by the URL's extension) or one of its family (an MP4 announced as QuickTime is the same container);
- the container must end where its own structure says: ISO BMFF boxes (MP4, MOV, M4A) tile the file and a
  ``moov`` is there; a PNG ends with ``IEND``; a JPEG with its end marker; a RIFF file (WAV, WebP) is as long as
  its header says; MP3 frames and Ogg pages run to the end of the file; a Matroska/WebM segment of known size
  ends at the end of the file; a ZIP has its end-of-directory record.

An output whose type nothing announces is checked for its size only (see ``runwatch.outbox``).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from runwatch.mediaprobe import CONTENT_TYPES, _id3_end, _mpeg_frame, probe_open

__all__ = ["check_output", "expected_format"]

_BY_TYPE = {ctype: fmt for fmt, ctype in CONTENT_TYPES.items()} | {
    "image/jpg": "jpeg",
    "audio/mp3": "mp3",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/mp4": "m4a",
    "video/webm": "webm",
    "audio/webm": "webm",
    "audio/x-flac": "flac",
    "video/ogg": "ogg",
    "application/x-zip-compressed": "zip",
}
_BY_EXTENSION = {fmt: fmt for fmt in CONTENT_TYPES} | {"jpg": "jpeg", "qt": "mov", "wave": "wav", "opus": "ogg"}
_FAMILIES = ({"mp4", "mov", "m4a", "avif", "heic"}, {"webm", "mkv"})
_NAMES = {"jpeg": "JPEG", "webp": "WebP", "mov": "QuickTime (MOV)", "webm": "WebM", "mkv": "Matroska"}
_TAIL = 1 << 16  # how far from the end a ZIP's end-of-directory record may be (its comment is at most 64 KiB)


def expected_format(content_type: str | None, extension: str | None) -> str | None:
    """The format an output is announced as: by its Content-Type, else by its URL's extension; None if unknown."""
    if content_type:
        fmt = _BY_TYPE.get(content_type.split(";", 1)[0].strip().lower())
        if fmt is not None:
            return fmt
    return _BY_EXTENSION.get((extension or "").lower().lstrip("."))


def _name(fmt: str) -> str:
    return _NAMES.get(fmt, fmt.upper())


def check_output(path: Path, expected: str | None) -> str | None:
    """What is wrong with the output at ``path`` announced as ``expected`` (a mediaprobe format), or None.

    The answer completes "output N ...", e.g. "is not a valid MP4 (it ends inside its 'mdat' box)".
    """
    if expected is None:
        return None
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if expected == "zip":  # an image sequence: an archive, not a media format mediaprobe reads
            if _read(fh, 0, 4) != b"PK\x03\x04":
                return f"is not a valid ZIP ({size} bytes without a ZIP header)"
            problem = _ENDS["zip"](fh, size)
            return None if problem is None else f"is not a valid ZIP ({problem})"
        info = probe_open(fh)
        if info is None:
            return f"is not a valid {_name(expected)} ({size} bytes that no media format reads)"
        if info.format != expected and not any({info.format, expected} <= family for family in _FAMILIES):
            return f"is announced as {_name(expected)} but is {_name(info.format)}"
        check = _ENDS.get(info.format)
        problem = check(fh, size) if check is not None else None
    return None if problem is None else f"is not a valid {_name(expected)} ({problem})"


def _read(fh: BinaryIO, offset: int, n: int) -> bytes:
    fh.seek(offset)
    return fh.read(n)


def _isobmff(fh: BinaryIO, size: int) -> str | None:
    pos, kinds = 0, set()
    while pos < size:
        head = _read(fh, pos, 16)
        if len(head) < 8:
            return f"{size - pos} stray bytes after its last box"
        length, kind = struct.unpack(">I4s", head[:8])
        if length == 1:
            if len(head) < 16:
                return "it ends inside a box header"
            length = struct.unpack(">Q", head[8:16])[0]
        elif length == 0:
            length = size - pos
        name = kind.decode("latin-1")
        if length < 8:
            return f"a {name!r} box of {length} bytes"
        if pos + length > size:
            return f"it ends inside its {name!r} box: {size - pos} of {length} bytes"
        kinds.add(kind)
        pos += length
    return None if b"moov" in kinds else "no 'moov' box: the file has no index of its media"


def _png(fh: BinaryIO, size: int) -> str | None:
    return None if _read(fh, size - 12, 12) == b"\0\0\0\0IEND\xaeB`\x82" else "it does not end with an IEND chunk"


def _jpeg(fh: BinaryIO, size: int) -> str | None:
    tail = _read(fh, max(0, size - 64), 64).rstrip(b"\0")  # some encoders pad after the end marker
    return None if tail.endswith(b"\xff\xd9") else "it does not end with an end-of-image marker"


def _riff(fh: BinaryIO, size: int) -> str | None:
    declared = struct.unpack("<I", _read(fh, 4, 4))[0] + 8
    if size < declared:
        return f"{size} of the {declared} bytes its header announces"
    if size > declared + 1:  # one pad byte may follow an odd-sized chunk
        return f"{size - declared} stray bytes after the {declared} its header announces"
    return None


def _mp3(fh: BinaryIO, size: int) -> str | None:
    data = _read(fh, 0, size)
    end = size - 128 if size >= 128 and data[size - 128 : size - 125] == b"TAG" else size  # an ID3v1 tag
    pos = _id3_end(data[:10])
    while pos < end and data[pos] != 0xFF:  # a tagger's padding before the first frame
        pos += 1
    frames = 0
    while pos < end:
        frame = _mpeg_frame(data[pos : pos + 4])
        if frame is None or frame.length <= 4:
            return f"no MPEG audio frame at byte {pos} after {frames} frames"
        if pos + frame.length > end:
            return f"its last frame is cut short: {end - pos} of {frame.length} bytes"
        pos += frame.length
        frames += 1
    return None if frames else "no MPEG audio frame"


def _ogg(fh: BinaryIO, size: int) -> str | None:
    pos = 0
    while pos < size:
        head = _read(fh, pos, 27)
        if len(head) < 27 or not head.startswith(b"OggS"):
            return f"no Ogg page at byte {pos}"
        lacing = _read(fh, pos + 27, head[26])
        if len(lacing) < head[26]:
            return "it ends inside a page header"
        length = 27 + head[26] + sum(lacing)
        if pos + length > size:
            return f"its last page is cut short: {size - pos} of {length} bytes"
        pos += length
    return None


def _matroska(fh: BinaryIO, size: int) -> str | None:
    pos = 0
    while pos < size:
        ident, width = _vint(fh, pos, keep_marker=True)
        length, length_width = _vint(fh, pos + width, keep_marker=False)
        if length is None:  # "unknown size": a live stream's segment runs to the end
            return None
        start = pos + width + length_width
        if start + length > size:
            name = "Segment" if ident == 0x18538067 else "EBML header" if ident == 0x1A45DFA3 else "element"
            return f"it ends inside its {name}: {size - start} of {length} bytes"
        pos = start + length
    return None


def _vint(fh: BinaryIO, pos: int, *, keep_marker: bool) -> tuple[int | None, int]:
    first = _read(fh, pos, 1)
    if not first or first[0] == 0:
        raise ValueError("no EBML element")
    width = 8 - first[0].bit_length() + 1
    raw = _read(fh, pos, width)
    if len(raw) < width:
        raise ValueError("it ends inside an element header")
    value = int.from_bytes(raw)
    if keep_marker:
        return value, width
    value &= (1 << (7 * width)) - 1
    return (None if value == (1 << (7 * width)) - 1 else value), width


def _zip(fh: BinaryIO, size: int) -> str | None:
    tail = _read(fh, max(0, size - _TAIL - 22), _TAIL + 22)
    return None if b"PK\x05\x06" in tail else "no end-of-directory record: the archive is cut short"


def _guarded(check: Callable[[BinaryIO, int], str | None]) -> Callable[[BinaryIO, int], str | None]:
    def run(fh: BinaryIO, size: int) -> str | None:
        try:
            return check(fh, size)
        except (ValueError, struct.error, IndexError, OverflowError) as exc:
            return str(exc)

    return run


_ENDS: dict[str, Callable[[BinaryIO, int], str | None]] = {
    fmt: _guarded(check)
    for fmt, check in {
        "mp4": _isobmff,
        "mov": _isobmff,
        "m4a": _isobmff,
        "png": _png,
        "jpeg": _jpeg,
        "webp": _riff,
        "wav": _riff,
        "mp3": _mp3,
        "ogg": _ogg,
        "webm": _matroska,
        "mkv": _matroska,
        "zip": _zip,
    }.items()
}
