"""Identify a media file by its bytes: kind, format, MIME type, size and duration.

Pure standard library, header parsing only (nothing is decoded). Formats are recognised
by magic bytes, never by file name, so a ``.png`` that is really a JPEG is reported as
JPEG. ``probe`` works on a whole file or on a prefix of one (what an upload check or an
HTTP range request has at hand) and answers ``None`` for anything it cannot make sense
of; it never raises on malformed input. ``probe_file`` reads the head of a file and seeks
for the few structures that formats keep elsewhere (an MP4 ``moov`` after the media
data, the last Ogg page), so a multi-gigabyte video costs a few kilobytes of reads.

What a prefix cannot show is left as ``None``, with two exceptions that estimate from
the bytes given: an MP3 without a Xing/Info/VBRI header (duration from its bitrate and
the byte count) and a WAV whose data size field says "unknown".
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

__all__ = ["CONTENT_TYPES", "DEFAULT_LIMIT", "MediaInfo", "probe", "probe_file", "probe_open"]

Kind = Literal["image", "video", "audio"]

#: MIME type of every format name ``probe`` reports, plus ``zip`` for image sequences.
CONTENT_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "avif": "image/avif",
    "heic": "image/heic",
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "mkv": "video/x-matroska",
    "m4a": "audio/mp4",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "zip": "application/zip",
}

#: Default cap on the bytes ``probe_file`` reads from one file, head and seeks together.
DEFAULT_LIMIT = 1 << 20
_HEAD = 64 << 10  # what probe_file reads up front; enough for every header but a late moov
_TAIL = 64 << 10  # how far from the end of an Ogg stream to look for its last page


@dataclass(frozen=True)
class MediaInfo:
    """What a media file is; ``None`` for a fact the bytes at hand do not show."""

    kind: Kind
    format: str
    content_type: str
    width: int | None = None
    height: int | None = None
    duration: float | None = None


def _info(
    kind: Kind, fmt: str, width: int | None = None, height: int | None = None, duration: float | None = None
) -> MediaInfo:
    ctype = CONTENT_TYPES[fmt]
    if fmt in ("webm", "mkv", "ogg") and kind != "image":  # one container, audio or video
        ctype = f"{kind}/{ctype.split('/', 1)[1]}"
    return MediaInfo(kind, fmt, ctype, width, height, duration)


class _Source:
    """Random access to the probed bytes: a buffer, or a buffered head plus file reads."""

    def __init__(self, head: bytes, size: int, fetch: Callable[[int, int], bytes] | None = None) -> None:
        self.head = head
        self.size = size
        self._fetch = fetch

    def read(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``offset``; fewer (or none) past what is available."""
        if offset < 0 or n <= 0:
            return b""
        if offset + n <= len(self.head) or self._fetch is None:
            return self.head[offset : offset + n]
        return self._fetch(offset, n)


def probe(data: bytes) -> MediaInfo | None:
    """Identify the media in ``data`` (a whole file or a prefix); ``None`` if unrecognised."""
    return _probe(_Source(bytes(data), len(data)))


def probe_file(path: str | os.PathLike[str], limit: int = DEFAULT_LIMIT) -> MediaInfo | None:
    """Identify the media file at ``path``, reading at most ``limit`` bytes of it.

    Raises ``OSError`` if the file cannot be opened or read; malformed content gives ``None``.
    """
    with open(path, "rb") as fh:
        return probe_open(fh, limit)


def probe_open(fh: BinaryIO, limit: int = DEFAULT_LIMIT) -> MediaInfo | None:
    """Identify the media file open as ``fh`` (from its start, whatever its position; left where the probe
    stopped), reading at most ``limit`` bytes of it. Raises ``OSError`` as :func:`probe_file` does."""
    size = os.fstat(fh.fileno()).st_size
    fh.seek(0)
    head = fh.read(min(limit, _HEAD))
    budget = limit - len(head)

    def fetch(offset: int, n: int) -> bytes:
        nonlocal budget
        n = min(n, budget, size - offset)
        if n <= 0:
            return b""
        fh.seek(offset)
        chunk = fh.read(n)
        budget -= len(chunk)
        return chunk

    return _probe(_Source(head, size, fetch))


def _probe(src: _Source) -> MediaInfo | None:
    head = src.read(0, 16)
    try:
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(src)
        if head.startswith(b"\xff\xd8\xff"):
            return _jpeg(src)
        if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
            width, height = struct.unpack("<HH", head[6:10])
            return _info("image", "gif", width, height) if width and height else None
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return _webp(src)
        if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
            return _wav(src)
        if head[4:8] == b"ftyp" or head[4:8] in (b"moov", b"mdat", b"wide"):
            return _isobmff(src)
        if head.startswith(b"\x1a\x45\xdf\xa3"):
            return _matroska(src)
        if head.startswith(b"OggS"):
            return _ogg(src)
        start = _id3_end(head)
        if src.read(start, 4) == b"fLaC":
            return _flac(src, start)
        return _mp3(src, start)
    except (struct.error, ValueError, IndexError, OverflowError, ZeroDivisionError):
        # The parsers check lengths as they go; this is the net under a header that lies.
        return None


# --- images ----------------------------------------------------------------------------


def _png(src: _Source) -> MediaInfo | None:
    ihdr = src.read(8, 16)
    if len(ihdr) < 16 or ihdr[4:8] != b"IHDR":
        return None
    width, height = struct.unpack(">II", ihdr[8:16])
    return _info("image", "png", width, height) if width and height else None


# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg(src: _Source) -> MediaInfo | None:
    pos = 2
    for _ in range(1024):  # a real file reaches its SOF within a handful of segments
        seg = src.read(pos, 9)
        if len(seg) < 4 or seg[0] != 0xFF:
            return None
        marker = seg[1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or entropy-coded data: no SOF came
            return None
        if marker in _SOF:
            if len(seg) < 9:
                return None
            height, width = struct.unpack(">HH", seg[5:9])
            return _info("image", "jpeg", width, height) if width and height else None
        pos += 2 + struct.unpack(">H", seg[2:4])[0]
    return None


def _webp(src: _Source) -> MediaInfo | None:
    chunk = src.read(12, 18)
    if len(chunk) < 18:
        return None
    fourcc, body = chunk[:4], chunk[8:]
    if fourcc == b"VP8 " and body[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", body[6:10])
        width, height = width & 0x3FFF, height & 0x3FFF
    elif fourcc == b"VP8L" and body[0] == 0x2F:
        bits = int.from_bytes(body[1:5], "little")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif fourcc == b"VP8X":
        width = int.from_bytes(body[4:7], "little") + 1
        height = int.from_bytes(body[7:10], "little") + 1
    else:
        return None
    return _info("image", "webp", width, height) if width and height else None


# --- ISO base media (MP4, MOV, M4A, AVIF/HEIC) -----------------------------------------

_IMAGE_BRANDS = {b"avif": "avif", b"avis": "avif", b"heic": "heic", b"heix": "heic", b"mif1": "heic"}
_AUDIO_BRANDS = (b"M4A ", b"M4B ", b"M4P ", b"F4A ")


def _boxes(src: _Source, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of each box in [start, end), reading headers only."""
    pos = start
    while pos + 8 <= end:
        hdr = src.read(pos, 16)
        if len(hdr) < 8:
            return
        size, kind = struct.unpack(">I4s", hdr[:8])
        body = pos + 8
        if size == 1:  # 64-bit size follows the type
            if len(hdr) < 16:
                return
            size = struct.unpack(">Q", hdr[8:16])[0]
            body += 8
        elif size == 0:  # box runs to the end of its container
            size = end - pos
        if size < body - pos:
            return
        yield kind, body, min(pos + size, end)
        pos += size


def _child(src: _Source, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    return next(((b, e) for k, b, e in _boxes(src, start, end) if k == kind), None)


def _isobmff(src: _Source) -> MediaInfo | None:
    head = src.read(0, 12)
    kind: Kind = "video"
    fmt = "mov"  # QuickTime files may start with moov/mdat/wide and have no ftyp
    if head[4:8] == b"ftyp":
        size = int.from_bytes(head[:4])
        if size < 16 or len(src.read(0, size)) < size:  # want the whole ftyp box
            return None
        brand = head[8:12]
        if brand in _IMAGE_BRANDS:
            return _info("image", _IMAGE_BRANDS[brand])
        if brand in _AUDIO_BRANDS:
            kind, fmt = "audio", "m4a"
        elif brand != b"qt  ":
            fmt = "mp4"
    moov = _child(src, 0, src.size, b"moov")
    if moov is None:  # a prefix that stops before moov, or moov after mdat in a buffer
        return _info(kind, fmt)
    timescale = movie_span = fragments_span = 0
    width = height = None
    handlers: list[bytes] = []
    for box, body, end in _boxes(src, *moov):
        if box == b"mvhd":  # version 1 has 64-bit times and duration
            mvhd = src.read(body, 32)
            wide = mvhd[:1] == b"\x01"
            timescale = int.from_bytes(mvhd[20:24] if wide else mvhd[12:16])
            movie_span = int.from_bytes(mvhd[24:32] if wide else mvhd[16:20])
        elif box == b"mvex" and (mehd := _child(src, body, end, b"mehd")):
            # Fragmented files leave mvhd's duration at 0 and put the total here.
            raw = src.read(mehd[0], 12)
            fragments_span = int.from_bytes(raw[4:12] if raw[:1] == b"\x01" else raw[4:8])
        elif box == b"trak":
            mdia = _child(src, body, end, b"mdia")
            hdlr = _child(src, *mdia, b"hdlr") if mdia else None
            handler = src.read(hdlr[0] + 8, 4) if hdlr else b""
            handlers.append(handler)
            tkhd = _child(src, body, end, b"tkhd")
            if handler == b"vide" and width is None and tkhd:
                width, height = _tkhd_size(src.read(tkhd[0], 92))
    if b"vide" not in handlers and b"soun" in handlers:
        kind, fmt = "audio", ("m4a" if fmt == "mp4" else fmt)
    span = movie_span or fragments_span
    known = timescale and span and span not in (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF)  # all ones: unknown
    return _info(kind, fmt, width, height, span / timescale if known else None)


def _tkhd_size(body: bytes) -> tuple[int | None, int | None]:
    at = 88 if body[:1] == b"\x01" else 76  # 16.16 fixed width/height after the matrix
    if len(body) < at + 8:
        return None, None
    width, height = struct.unpack(">II", body[at : at + 8])
    return (width >> 16 or None), (height >> 16 or None)


# --- Matroska / WebM -------------------------------------------------------------------

_EBML_UNKNOWN = -1


def _vint(data: bytes, pos: int, keep_marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer at ``pos``: (value, length); value -1 = unknown size."""
    first = data[pos]
    length = 9 - first.bit_length() if first else 0
    if not 1 <= length <= 8 or pos + length > len(data):
        raise ValueError("bad EBML varint")
    value = int.from_bytes(data[pos : pos + length])
    if keep_marker:
        return value, length
    value &= (1 << (7 * length)) - 1
    return (_EBML_UNKNOWN if value == (1 << (7 * length)) - 1 else value), length


def _elements(src: _Source, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(id, payload start, payload end) of each EBML element in [start, end)."""
    pos = start
    while pos < end:
        hdr = src.read(pos, 12)
        if len(hdr) < 2:
            return
        ident, n = _vint(hdr, 0, keep_marker=True)
        size, m = _vint(hdr, n, keep_marker=False)
        body = pos + n + m
        stop = end if size == _EBML_UNKNOWN else min(body + size, end)
        yield ident, body, stop
        if size == _EBML_UNKNOWN:
            return  # only the last element of a live stream has no size; nothing follows
        pos = stop


def _matroska(src: _Source) -> MediaInfo | None:
    fmt = "mkv"
    segment: tuple[int, int] | None = None
    for ident, body, end in _elements(src, 0, src.size):
        if ident == 0x1A45DFA3:
            doctype = next((src.read(b, e - b) for i, b, e in _elements(src, body, end) if i == 0x4282), b"")
            fmt = "webm" if doctype.rstrip(b"\0") == b"webm" else "mkv"
        elif ident == 0x18538067:
            segment = (body, end)
            break
    if segment is None:
        return None
    duration: float | None = None
    width = height = None
    kinds: set[int] = set()
    for ident, body, end in _elements(src, *segment):
        if ident == 0x1549A966:  # Info: Duration is a float in TimecodeScale units (ns)
            scale, raw = 1_000_000, b""
            for i, b, e in _elements(src, body, end):
                if i == 0x2AD7B1:
                    scale = int.from_bytes(src.read(b, e - b)) or scale
                elif i == 0x4489:
                    raw = src.read(b, e - b)
            if len(raw) in (4, 8):
                duration = struct.unpack(">f" if len(raw) == 4 else ">d", raw)[0] * scale / 1e9
        elif ident == 0x1654AE6B:  # Tracks
            for entry, b, e in _elements(src, body, end):
                if entry != 0xAE:
                    continue
                for i, bb, ee in _elements(src, b, e):
                    if i == 0x83:
                        kinds.add(int.from_bytes(src.read(bb, ee - bb)))
                    elif i == 0xE0 and width is None:
                        dims = {j: int.from_bytes(src.read(x, y - x)) for j, x, y in _elements(src, bb, ee)}
                        width, height = dims.get(0xB0), dims.get(0xBA)
        elif ident == 0x1F43B675:  # first Cluster: the headers are behind us
            break
    kind: Kind = "audio" if kinds and 1 not in kinds else "video"
    return _info(kind, fmt, width, height, duration if duration and duration > 0 else None)


# --- audio -----------------------------------------------------------------------------


def _wav(src: _Source) -> MediaInfo | None:
    byte_rate = 0
    for kind, body, size in _riff_chunks(src, 12):
        if kind == b"fmt ":
            fmt = src.read(body, 16)
            if len(fmt) < 12:
                return None
            byte_rate = struct.unpack("<I", fmt[8:12])[0]
        elif kind == b"data":
            if not byte_rate:
                return None
            if size in (0, 0xFFFFFFFF):  # written while streaming: the data runs to the end
                size = max(0, src.size - body)
            return _info("audio", "wav", duration=size / byte_rate)
    return _info("audio", "wav") if byte_rate else None


def _riff_chunks(src: _Source, pos: int) -> Iterator[tuple[bytes, int, int]]:
    """(id, payload start, declared size) of each RIFF chunk from ``pos`` on."""
    for _ in range(4096):
        hdr = src.read(pos, 8)
        if len(hdr) < 8:
            return
        size = struct.unpack("<I", hdr[4:])[0]
        yield hdr[:4], pos + 8, size
        pos += 8 + size + (size & 1)  # chunks are padded to even length


def _id3_end(head: bytes) -> int:
    """Offset just past a leading ID3v2 tag (MP3, sometimes FLAC), or 0."""
    if not head.startswith(b"ID3") or len(head) < 10 or any(b & 0x80 for b in head[6:10]):
        return 0
    size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
    return 10 + size + (10 if head[5] & 0x10 else 0)  # flag 0x10: a footer repeats the header


def _flac(src: _Source, start: int) -> MediaInfo | None:
    block = src.read(start + 4, 38)
    if len(block) < 38 or block[0] & 0x7F != 0 or int.from_bytes(block[1:4]) != 34:
        return None  # STREAMINFO must come first and is always 34 bytes
    bits = int.from_bytes(block[14:22])
    rate, samples = bits >> 44, bits & 0xFFFFFFFFF
    if not rate:
        return None
    return _info("audio", "flac", duration=samples / rate if samples else None)


_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_KBPS = {  # (MPEG-1?, layer) -> bitrate by index; MPEG-2 and 2.5 share tables
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}


@dataclass(frozen=True)
class _Frame:
    bitrate: int  # bits per second
    rate: int
    length: int  # bytes, header included
    samples: int
    side_info: int  # bytes between the header and a Xing/Info tag


def _mpeg_frame(hdr: bytes) -> _Frame | None:
    if len(hdr) < 4 or hdr[0] != 0xFF or hdr[1] & 0xE0 != 0xE0:
        return None
    version, layer = (hdr[1] >> 3) & 3, 4 - ((hdr[1] >> 1) & 3)
    rate_index, bitrate_index = (hdr[2] >> 2) & 3, hdr[2] >> 4
    if version == 1 or layer == 4 or rate_index == 3 or bitrate_index in (0, 15):
        return None
    mpeg1 = version == 3
    kbps = _KBPS[(mpeg1, layer if mpeg1 or layer == 1 else 2)][bitrate_index]
    rate, padding, mono = _MPEG_RATES[version][rate_index], (hdr[2] >> 1) & 1, hdr[3] >> 6 == 3
    if layer == 1:
        length, samples = (12 * kbps * 1000 // rate + padding) * 4, 384
    else:
        per = 144 if mpeg1 or layer == 2 else 72
        length, samples = per * kbps * 1000 // rate + padding, 1152 if per == 144 else 576
    side = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    return _Frame(kbps * 1000, rate, length, samples, side)


def _mp3(src: _Source, start: int) -> MediaInfo | None:
    if start:  # some taggers pad past the declared tag size; look a little further
        window = src.read(start, 4096)
        offsets = (start + i for i in range(len(window) - 3) if window[i] == 0xFF)
        start = next((o for o in offsets if _mpeg_frame(src.read(o, 4))), start)
    frame = _mpeg_frame(src.read(start, 4))
    if frame is None:
        return None
    if _mpeg_frame(src.read(start + frame.length, 4)) is None:
        return None  # one plausible header may be chance: insist on a second one after it
    tag = src.read(start + 4 + frame.side_info, 12)
    frames = 0
    if tag[:4] in (b"Xing", b"Info") and len(tag) == 12 and tag[7] & 1:
        frames = struct.unpack(">I", tag[8:12])[0]
    elif (vbri := src.read(start + 36, 18))[:4] == b"VBRI" and len(vbri) == 18:
        frames = struct.unpack(">I", vbri[14:18])[0]
    # Without a frame count, assume a constant bitrate over the bytes at hand.
    duration = frames * frame.samples / frame.rate if frames else (src.size - start) * 8 / frame.bitrate
    return _info("audio", "mp3", duration=duration or None)


def _ogg(src: _Source) -> MediaInfo | None:
    page = src.read(0, 27 + 255)
    if len(page) < 28 or page[4] != 0:
        return None
    serial, nsegs = page[14:18], page[26]
    packet = src.read(27 + nsegs, 64)
    kind: Kind = "audio"
    rate = skip = 0
    width = height = None
    if packet.startswith(b"OpusHead") and len(packet) >= 12:
        rate, skip = 48000, struct.unpack("<H", packet[10:12])[0]  # Opus granules are 48 kHz
    elif packet.startswith(b"\x01vorbis") and len(packet) >= 16:
        rate = struct.unpack("<I", packet[12:16])[0]
    elif packet.startswith(b"\x7fFLAC") and len(packet) >= 30:
        rate = int.from_bytes(packet[27:30]) >> 4
    elif packet.startswith(b"\x80theora") and len(packet) >= 20:
        kind, width, height = "video", int.from_bytes(packet[14:17]), int.from_bytes(packet[17:20])
    elif not packet:
        return None
    granule = _ogg_last_granule(src, serial) if rate else None
    duration = (granule - skip) / rate if granule is not None and granule > skip else None
    return _info(kind, "ogg", width, height, duration)


def _ogg_last_granule(src: _Source, serial: bytes) -> int | None:
    """Granule position of the stream's end-of-stream page, if the tail holds it.

    Only an end-of-stream page counts: on a prefix the last page found is somewhere in
    the middle and its granule would understate the duration.
    """
    start = max(0, src.size - _TAIL)
    tail = src.read(start, src.size - start)
    pos = tail.rfind(b"OggS")
    while pos >= 0:
        page = tail[pos : pos + 27]
        if len(page) == 27 and page[4] == 0 and page[14:18] == serial:
            granule = struct.unpack("<q", page[6:14])[0]
            return granule if page[5] & 0x04 and granule >= 0 else None
        pos = tail.rfind(b"OggS", 0, pos)
    return None
