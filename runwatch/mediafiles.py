"""Small, real media files: task outputs for the simulator, and their MIME types.

``make_output(fmt, token)`` returns a well-formed file of the requested format whose
bytes depend on ``token`` (say, a task id and an output index), so that every simulated
task yields a distinct file that any player or decoder accepts. The standard library can
write PNG (zlib), WAV (``wave``) and ZIP itself; the lossy codecs come from tiny encoded
files shipped in ``runwatch/data/samples/base.*`` (made by ``tools/make_samples.sh``),
which are stamped with the token in a metadata slot their format provides:

====  ====================================================================
mp4   a top-level ``free`` box after ``ftyp``; chunk offsets moved to match
mov   the same, with a QuickTime ``ftyp`` (brand ``qt  ``)
jpeg  a COM segment after the leading APPn segments (JFIF wants APP0 first)
webp  extended format (VP8X) with an XMP chunk after the image data
mp3   an ID3v2.3 tag with a TXXX frame, before the first audio frame
flac  a VORBIS_COMMENT block in place of the base's own metadata
ogg   the Opus comment header (OpusTags) page rewritten, CRC recomputed
png   rendered here: colours and sun position from the token, plus tEXt
wav   rendered here: tone pitch from the token, plus a LIST/INFO comment
zip   four PNG frames of a moving scene, as for an image-sequence output
====  ====================================================================

Identification lives in ``runwatch.mediaprobe`` and is re-exported here.
"""

from __future__ import annotations

import array
import hashlib
import io
import math
import struct
import sys
import wave
import zipfile
import zlib
from collections.abc import Callable, Iterator
from functools import cache
from importlib import resources
from xml.sax.saxutils import escape as xml_escape

from runwatch.mediaprobe import CONTENT_TYPES, MediaInfo, probe, probe_file

__all__ = [
    "OUTPUT_FORMATS",
    "MediaInfo",
    "content_type",
    "make_output",
    "probe",
    "probe_file",
    "sample_bytes",
]

#: Every format ``make_output`` can produce.
OUTPUT_FORMATS = ("mp4", "mov", "png", "jpeg", "webp", "wav", "mp3", "flac", "ogg", "zip")
_ALIASES = {"jpg": "jpeg", "qt": "mov", "wave": "wav", "opus": "ogg"}
_KEY = "runwatch_token"  # the metadata key the token is stored under, in every format


def _normal(fmt: str) -> str:
    name = fmt.lower().lstrip(".")
    name = _ALIASES.get(name, name)
    if name not in OUTPUT_FORMATS:
        raise ValueError(f"no output format {fmt!r}; known: {', '.join(OUTPUT_FORMATS)}")
    return name


def content_type(fmt: str) -> str:
    """The MIME type of an output format (``"jpg"`` and friends accepted); ValueError if unknown."""
    return CONTENT_TYPES[_normal(fmt)]


def make_output(fmt: str, token: bytes) -> bytes:
    """A small, valid file of format ``fmt`` whose bytes are a pure function of ``token``."""
    return _MAKERS[_normal(fmt)](token)


@cache
def sample_bytes(name: str) -> bytes:
    """The bytes of a file shipped in ``runwatch/data/samples`` (e.g. ``"still.jpg"``)."""
    return (resources.files("runwatch") / "data" / "samples" / name).read_bytes()


def _label(token: bytes) -> str:
    """The token as metadata text: itself if short printable ASCII, else its SHA-256."""
    if len(token) <= 128 and all(0x20 <= b < 0x7F for b in token):
        return token.decode("ascii")
    return "sha256:" + hashlib.sha256(token).hexdigest()


# --- rendered formats --------------------------------------------------------------------


def _png(width: int, height: int, rows: list[bytes], comment: str) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + row for row in rows)  # filter type 0 on every row
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),  # 8-bit RGB
            chunk(b"tEXt", f"{_KEY}\0{comment}".encode("latin-1")),
            chunk(b"IDAT", zlib.compress(raw, 9)),
            chunk(b"IEND", b""),
        )
    )


def _scene(token: bytes, width: int, height: int, phase: float = 0.0) -> list[bytes]:
    """RGB rows of a sky, a sun and a hill; the token picks the palette and the sun's place."""
    d = hashlib.sha256(token).digest()
    top, bottom, sun, hill = (d[0:3], d[3:6], bytes(128 + c // 2 for c in d[6:9]), d[9:12])
    cx = width * (0.15 + 0.7 * ((d[12] / 255 + phase) % 1.0))
    cy, radius = height * (0.2 + 0.25 * d[13] / 255), height / 7
    # The hill's top edge, per column: a gentle wave along the bottom third.
    ridge = [height * (0.72 + 0.08 * math.sin(2 * math.pi * x / width + d[14] / 40)) for x in range(width)]
    rows = []
    for y in range(height):
        t = y / (height - 1)
        row = bytearray(bytes(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)) * width)
        if abs(y - cy) < radius:  # the sun's span on this row
            half = math.sqrt(radius * radius - (y - cy) ** 2)
            x0, x1 = max(0, round(cx - half)), min(width, round(cx + half))
            row[3 * x0 : 3 * x1] = sun * (x1 - x0)
        for x in range(width):
            if y > ridge[x]:
                row[3 * x : 3 * x + 3] = hill
        rows.append(bytes(row))
    return rows


def _make_png(token: bytes) -> bytes:
    return _png(320, 180, _scene(token, 320, 180), _label(token))


def _make_zip(token: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(4):
            frame = _png(160, 90, _scene(token, 160, 90, phase=i / 8), f"{_label(token)} frame {i + 1}")
            # A fixed date keeps the archive a pure function of the token; PNG is already deflated.
            info = zipfile.ZipInfo(f"frame_{i + 1:04d}.png", date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, frame, compress_type=zipfile.ZIP_STORED)
        zf.comment = f"{_KEY}={_label(token)}".encode("latin-1")
    return buf.getvalue()


def _make_wav(token: bytes) -> bytes:
    rate, seconds = 16000, 1.0
    freq = 220 + int.from_bytes(hashlib.sha256(token).digest()[:2]) % 660
    count = int(rate * seconds)
    fade = rate // 50  # 20 ms ramps, so the tone starts and stops without a click
    samples = array.array(
        "h",
        (
            round(12000 * min(1.0, i / fade, (count - i) / fade) * math.sin(2 * math.pi * freq * i / rate))
            for i in range(count)
        ),
    )
    if sys.byteorder == "big":
        samples.byteswap()  # WAV is little-endian
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    # Pitch alone may collide between tokens; a LIST/INFO comment after the data never does.
    text = f"{_KEY}={_label(token)}".encode("latin-1") + b"\0"
    icmt = b"ICMT" + struct.pack("<I", len(text)) + text + b"\0" * (len(text) & 1)
    data = buf.getvalue() + b"LIST" + struct.pack("<I", 4 + len(icmt)) + b"INFO" + icmt
    return data[:4] + struct.pack("<I", len(data) - 8) + data[8:]


# --- stamped formats ---------------------------------------------------------------------


def _boxes(data: bytes | bytearray, start: int, end: int) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, box start, payload start, box end) of the ISO-BMFF boxes in [start, end)."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = pos + 8
        if size == 1:
            size, body = struct.unpack(">Q", data[pos + 8 : pos + 16])[0], pos + 16
        elif size == 0:
            size = end - pos
        if size < body - pos:
            raise ValueError("corrupt ISO-BMFF box")
        yield kind, pos, body, pos + size
        pos += size


def _shift_chunk_offsets(data: bytearray, start: int, end: int, delta: int) -> None:
    """Add ``delta`` to every stco/co64 entry under [start, end): the media moved by that much."""
    for kind, _, body, stop in _boxes(data, start, end):
        if kind in (b"moov", b"trak", b"mdia", b"minf", b"stbl"):
            _shift_chunk_offsets(data, body, stop, delta)
        elif kind in (b"stco", b"co64"):
            width = 8 if kind == b"co64" else 4
            (count,) = struct.unpack(">I", data[body + 4 : body + 8])
            for at in range(body + 8, body + 8 + count * width, width):
                value = int.from_bytes(data[at : at + width]) + delta
                data[at : at + width] = value.to_bytes(width)


def _stamp_isobmff(token: bytes, quicktime: bool) -> bytes:
    base = sample_bytes("base.mp4")
    ftyp_kind, _, _, ftyp_end = next(_boxes(base, 0, len(base)))
    if ftyp_kind != b"ftyp":
        raise ValueError("base.mp4 does not start with ftyp")
    ftyp = base[:ftyp_end]
    if quicktime:  # major brand 'qt  ', minor version, compatible brands: just 'qt  '
        ftyp = struct.pack(">I4s4sI4s", 20, b"ftyp", b"qt  ", 0x200, b"qt  ")
    note = f"{_KEY}={_label(token)}".encode("latin-1")
    free = struct.pack(">I4s", 8 + len(note), b"free") + note
    rest = bytearray(base[ftyp_end:])
    # Everything after ftyp moves, and moov addresses the samples by absolute file offset.
    _shift_chunk_offsets(rest, 0, len(rest), len(ftyp) + len(free) - ftyp_end)
    return ftyp + free + bytes(rest)


def _make_jpeg(token: bytes) -> bytes:
    base = sample_bytes("base.jpg")
    pos = 2
    while base[pos] == 0xFF and 0xE0 <= base[pos + 1] <= 0xEF:  # APP0 (JFIF) must stay first
        pos += 2 + struct.unpack(">H", base[pos + 2 : pos + 4])[0]
    text = f"{_KEY}={_label(token)}".encode("latin-1")
    return base[:pos] + b"\xff\xfe" + struct.pack(">H", 2 + len(text)) + text + base[pos:]


def _riff_chunk(fourcc: bytes, body: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(body)) + body + b"\0" * (len(body) & 1)


def _make_webp(token: bytes) -> bytes:
    base = sample_bytes("base.webp")
    info = probe(base)
    if base[12:16] != b"VP8 " or info is None or info.width is None or info.height is None:
        raise ValueError("base.webp is not a simple lossy WebP")
    # Metadata needs the extended format: VP8X (flag 0x04: XMP present), image, then XMP.
    # A private chunk would do too, but validators warn about unknown chunks; XMP is defined.
    canvas = struct.pack("<I", info.width - 1)[:3] + struct.pack("<I", info.height - 1)[:3]
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<dc:identifier>{_KEY}={xml_escape(_label(token))}</dc:identifier>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    chunks = _riff_chunk(b"VP8X", b"\x04\0\0\0" + canvas) + base[12:] + _riff_chunk(b"XMP ", xmp.encode())
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def _vorbis_comment(token: bytes) -> bytes:
    vendor, text = b"runwatch", f"{_KEY.upper()}={_label(token)}".encode()
    return struct.pack("<I", len(vendor)) + vendor + struct.pack("<II", 1, len(text)) + text


def _make_flac(token: bytes) -> bytes:
    base = sample_bytes("base.flac")
    blocks, pos, last = [], 4, False
    while not last:
        last, kind = bool(base[pos] & 0x80), base[pos] & 0x7F
        end = pos + 4 + int.from_bytes(base[pos + 1 : pos + 4])
        if kind not in (1, 4):  # drop PADDING and any old VORBIS_COMMENT
            blocks.append((kind, base[pos + 4 : end]))
        pos = end
    blocks.insert(1, (4, _vorbis_comment(token)))  # STREAMINFO must stay first
    out = bytearray(b"fLaC")
    for i, (kind, body) in enumerate(blocks):
        out += bytes([kind | (0x80 if i == len(blocks) - 1 else 0)]) + len(body).to_bytes(3) + body
    return bytes(out) + base[pos:]


def _make_mp3(token: bytes) -> bytes:
    base = sample_bytes("base.mp3")
    if base.startswith(b"ID3"):  # replace, never nest, a tag the base might carry
        base = base[10 + sum(b << (21 - 7 * i) for i, b in enumerate(base[6:10])) :]
    body = b"\x00" + _KEY.encode() + b"\x00" + _label(token).encode("latin-1")  # Latin-1 text
    frame = b"TXXX" + struct.pack(">I", len(body)) + b"\0\0" + body  # v2.3: plain 32-bit size
    n = len(frame)
    size = bytes((n >> shift) & 0x7F for shift in (21, 14, 7, 0))  # the tag size is syncsafe
    return b"ID3\x03\x00\x00" + size + frame + base


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):  # CRC-32 polynomial 0x04C11DB7, MSB first, no reflection
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def _ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[(crc >> 24) ^ byte]
    return crc


def _make_ogg(token: bytes) -> bytes:
    base = sample_bytes("base.ogg")
    # Page 0 holds OpusHead; page 1 holds the whole OpusTags packet (as ffmpeg writes it).
    first_end = 27 + base[26] + sum(base[27 : 27 + base[26]])
    nsegs = base[first_end + 26]
    lacing = base[first_end + 27 : first_end + 27 + nsegs]
    tags_end = first_end + 27 + nsegs + sum(lacing)
    body = base[first_end + 27 + nsegs : tags_end]
    if not body.startswith(b"OpusTags") or lacing[-1] == 255 or base[tags_end + 5] & 1:
        raise ValueError("base.ogg does not keep OpusTags alone on its second page")
    packet = b"OpusTags" + _vorbis_comment(token)
    segments = bytes([255] * (len(packet) // 255) + [len(packet) % 255])
    header = bytearray(base[first_end : first_end + 26]) + bytes([len(segments)]) + segments
    header[22:26] = b"\0\0\0\0"  # the CRC covers the page with its own field zeroed
    page = header + packet
    page[22:26] = struct.pack("<I", _ogg_crc(bytes(page)))
    return base[:first_end] + bytes(page) + base[tags_end:]


_MAKERS: dict[str, Callable[[bytes], bytes]] = {
    "mp4": lambda token: _stamp_isobmff(token, quicktime=False),
    "mov": lambda token: _stamp_isobmff(token, quicktime=True),
    "png": _make_png,
    "jpeg": _make_jpeg,
    "webp": _make_webp,
    "wav": _make_wav,
    "mp3": _make_mp3,
    "flac": _make_flac,
    "ogg": _make_ogg,
    "zip": _make_zip,
}
