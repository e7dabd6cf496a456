"""Real media files: what ``make_output`` produces, what ``probe`` reads, and the shipped samples.

The structural checks here need nothing but the standard library; ``TestWithFfmpeg`` adds an
independent decoder's opinion where ffmpeg is installed.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import wave
import zipfile
import zlib
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest

from runwatch.mediafiles import (
    OUTPUT_FORMATS,
    MediaInfo,
    content_type,
    make_output,
    probe,
    probe_file,
    sample_bytes,
)

from .conftest import need_tool

SAMPLES = Path(__file__).resolve().parent.parent / "runwatch" / "data" / "samples"
TOKEN = b"0b6e3c1a-9f4d-4e2b-8c7a-5d1e2f3a4b5c:0"

# fmt -> (kind, content type, width, height, shortest, longest duration)
OUTPUTS: dict[str, tuple[str, str, int | None, int | None, float | None, float | None]] = {
    "mp4": ("video", "video/mp4", 320, 180, 0.9, 1.2),
    "mov": ("video", "video/quicktime", 320, 180, 0.9, 1.2),
    "png": ("image", "image/png", 320, 180, None, None),
    "jpeg": ("image", "image/jpeg", 320, 180, None, None),
    "webp": ("image", "image/webp", 320, 180, None, None),
    "wav": ("audio", "audio/wav", None, None, 0.9, 1.2),
    "mp3": ("audio", "audio/mpeg", None, None, 0.9, 1.2),
    "flac": ("audio", "audio/flac", None, None, 0.9, 1.2),
    "ogg": ("audio", "audio/ogg", None, None, 0.9, 1.2),
}

# sample file -> (kind, format, width, height, shortest, longest duration)
SAMPLE_FILES: dict[str, tuple[str, str, int | None, int | None, float | None, float | None]] = {
    "still.png": ("image", "png", 640, 360, None, None),
    "still.jpg": ("image", "jpeg", 640, 360, None, None),
    "portrait.jpg": ("image", "jpeg", 360, 640, None, None),
    "clip.mp4": ("video", "mp4", 640, 360, 2.9, 3.1),
    "speech.wav": ("audio", "wav", None, None, 4.7, 8.0),  # voice isolation refuses <= 4.6 s
    "speech.mp3": ("audio", "mp3", None, None, 4.7, 8.0),
    "music.mp3": ("audio", "mp3", None, None, 5.0, 8.0),
    "base.mp4": ("video", "mp4", 320, 180, 0.9, 1.1),
    "base.jpg": ("image", "jpeg", 320, 180, None, None),
    "base.webp": ("image", "webp", 320, 180, None, None),
    "base.mp3": ("audio", "mp3", None, None, 0.9, 1.2),
    "base.flac": ("audio", "flac", None, None, 0.9, 1.1),
    "base.ogg": ("audio", "ogg", None, None, 0.9, 1.1),
}


def _check(
    info: MediaInfo | None,
    kind: str,
    width: int | None,
    height: int | None,
    shortest: float | None,
    longest: float | None,
) -> MediaInfo:
    assert info is not None
    assert (info.kind, info.width, info.height) == (kind, width, height)
    if shortest is None:
        assert info.duration is None
    else:
        assert info.duration is not None and shortest <= info.duration <= (longest or shortest)
    return info


def _all_files() -> Iterator[tuple[str, bytes]]:
    for fmt in OUTPUTS:
        yield f"output.{fmt}", make_output(fmt, TOKEN)
    for name in SAMPLE_FILES:
        yield name, (SAMPLES / name).read_bytes()


def _isobmff_boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int, int]]:
    pos = start
    while pos < end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        assert size >= 8, f"box {kind!r} at {pos} has size {size}"
        yield kind, pos, pos + 8, pos + size
        pos += size
    assert pos == end, "boxes overrun their container"


def _chunk_offsets(data: bytes) -> list[int]:
    found: list[int] = []

    def walk(start: int, end: int) -> None:
        for kind, _, body, stop in _isobmff_boxes(data, start, end):
            if kind in (b"moov", b"trak", b"mdia", b"minf", b"stbl"):
                walk(body, stop)
            elif kind == b"stco":
                (count,) = struct.unpack(">I", data[body + 4 : body + 8])
                found.extend(struct.unpack(f">{count}I", data[body + 8 : body + 8 + 4 * count]))

    walk(0, len(data))
    return found


def _ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32 (poly 0x04C11DB7, MSB first), bit by bit: independent of the module's table."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def _ogg_pages(data: bytes) -> list[bytes]:
    pages, pos = [], 0
    while pos < len(data):
        assert data[pos : pos + 4] == b"OggS"
        nsegs = data[pos + 26]
        end = pos + 27 + nsegs + sum(data[pos + 27 : pos + 27 + nsegs])
        pages.append(data[pos:end])
        pos = end
    return pages


class TestContentType:
    def test_every_output_format_has_its_specific_type(self) -> None:
        """Each output format maps to the MIME type Runway serves it with."""
        expected = {fmt: spec[1] for fmt, spec in OUTPUTS.items()} | {"zip": "application/zip"}
        assert {fmt: content_type(fmt) for fmt in OUTPUT_FORMATS} == expected

    def test_aliases_and_case(self) -> None:
        """File-extension spellings resolve to the same type."""
        assert content_type("JPG") == content_type(".jpeg") == "image/jpeg"
        assert content_type("opus") == "audio/ogg"

    def test_unknown_format_is_refused(self) -> None:
        """An unknown format is a ValueError, for content_type and make_output alike."""
        with pytest.raises(ValueError, match="no output format"):
            content_type("bmp")
        with pytest.raises(ValueError, match="no output format"):
            make_output("gif", TOKEN)


class TestOutputs:
    @pytest.mark.parametrize("fmt", list(OUTPUTS))
    def test_round_trips_through_probe(self, fmt: str) -> None:
        """Every media output probes as its own format, kind and type, with a plausible size/duration."""
        kind, ctype, width, height, shortest, longest = OUTPUTS[fmt]
        info = _check(probe(make_output(fmt, TOKEN)), kind, width, height, shortest, longest)
        assert (info.format, info.content_type) == (fmt, ctype)

    def test_zip_holds_png_frames(self) -> None:
        """The image-sequence output is a sound zip of PNG frames that each probe as 160x90 PNG."""
        data = make_output("zip", TOKEN)
        assert probe(data) is None  # an archive is not itself media
        with zipfile.ZipFile(BytesIO(data)) as zf:
            assert zf.testzip() is None
            names = zf.namelist()
            assert names == [f"frame_{i:04d}.png" for i in range(1, 5)]
            frames = [zf.read(name) for name in names]
        for frame in frames:
            info = probe(frame)
            assert info is not None and (info.format, info.width, info.height) == ("png", 160, 90)
        assert len(set(frames)) == len(frames), "the frames should show motion"

    @pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
    def test_same_token_same_bytes(self, fmt: str) -> None:
        """Outputs are a pure function of the token: the simulator can recreate them at will."""
        assert make_output(fmt, TOKEN) == make_output(fmt, bytes(TOKEN))

    @pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
    def test_different_tokens_different_bytes(self, fmt: str) -> None:
        """Two tasks, or two outputs of one task, never share bytes."""
        outputs = {make_output(fmt, token) for token in (b"task-a:0", b"task-a:1", b"task-b:0", TOKEN)}
        assert len(outputs) == 4

    @pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
    def test_token_is_readable_in_the_file(self, fmt: str) -> None:
        """A short printable token is stored as itself, so a file says which task made it."""
        data = make_output(fmt, TOKEN)
        assert TOKEN in data and b"runwatch_token" in data.lower()

    @pytest.mark.parametrize("fmt", list(OUTPUTS))
    def test_binary_or_long_tokens_are_hashed(self, fmt: str) -> None:
        """Tokens that are not short ASCII are stored as a SHA-256 and the file stays valid."""
        for token in (bytes(range(256)) * 4, "tâche:0".encode(), b""):
            data = make_output(fmt, token)
            assert probe(data) == probe(make_output(fmt, TOKEN))
        assert b"sha256:" in make_output(fmt, bytes(range(256)))


class TestOutputStructure:
    def test_png_chunks_and_pixels(self) -> None:
        """PNG: every chunk CRC holds, IHDR first, IEND last, IDAT inflates to the right size."""
        data = make_output("png", TOKEN)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        pos, kinds, idat = 8, [], b""
        while pos < len(data):
            (length,) = struct.unpack(">I", data[pos : pos + 4])
            kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
            (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
            assert crc == zlib.crc32(kind + body), kind
            kinds.append(kind)
            idat += body if kind == b"IDAT" else b""
            pos += 12 + length
        assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and pos == len(data)
        assert len(zlib.decompress(idat)) == 180 * (1 + 320 * 3)

    def test_wav_reads_back(self) -> None:
        """WAV: the wave module reads 1 s of 16 kHz mono; the RIFF size covers the trailing LIST chunk."""
        data = make_output("wav", TOKEN)
        with wave.open(BytesIO(data)) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (
                1,
                2,
                16000,
                16000,
            )
        assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
        assert b"LIST" in data and b"INFO" in data

    @pytest.mark.parametrize("fmt, brand", [("mp4", b"isom"), ("mov", b"qt  ")])
    def test_isobmff_offsets_follow_the_moved_media(self, fmt: str, brand: bytes) -> None:
        """MP4/MOV: boxes tile the file, a free box carries the token and every chunk offset
        still points at the same sample bytes as in the base file."""
        data, base = make_output(fmt, TOKEN), sample_bytes("base.mp4")
        boxes = list(_isobmff_boxes(data, 0, len(data)))
        assert [b[0] for b in boxes[:2]] == [b"ftyp", b"free"]
        assert data[8:12] == brand
        new, old = _chunk_offsets(data), _chunk_offsets(base)
        assert len(new) == len(old) > 0
        for a, b in zip(new, old, strict=True):
            assert data[a : a + 64] == base[b : b + 64]

    def test_jpeg_comment_after_app_segments(self) -> None:
        """JPEG: JFIF APP0 stays first, a COM segment follows it, the scan and EOI are intact."""
        data, base = make_output("jpeg", TOKEN), sample_bytes("base.jpg")
        assert data[:4] == b"\xff\xd8\xff\xe0" and data[6:11] == b"JFIF\0"
        com = 4 + struct.unpack(">H", data[4:6])[0]
        assert data[com : com + 2] == b"\xff\xfe"
        length = struct.unpack(">H", data[com + 2 : com + 4])[0]
        assert data[com + 4 : com + 2 + length] == b"runwatch_token=" + TOKEN
        assert data[:com] + data[com + 2 + length :] == base
        assert data.endswith(b"\xff\xd9")

    def test_webp_extended_layout(self) -> None:
        """WebP: RIFF size exact; VP8X (XMP flag, 320x180 canvas), the base's VP8 chunk, then XMP."""
        data, base = make_output("webp", TOKEN), sample_bytes("base.webp")
        assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
        assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
        pos, chunks = 12, []
        while pos < len(data):
            size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
            chunks.append((data[pos : pos + 4], data[pos + 8 : pos + 8 + size]))
            pos += 8 + size + (size & 1)
        assert pos == len(data)
        assert [c[0] for c in chunks] == [b"VP8X", b"VP8 ", b"XMP "]
        vp8x = chunks[0][1]
        assert vp8x[0] == 0x04
        assert int.from_bytes(vp8x[4:7], "little") + 1 == 320
        assert int.from_bytes(vp8x[7:10], "little") + 1 == 180
        assert chunks[1][1] == base[20:]
        assert b"runwatch_token=" + TOKEN in chunks[2][1]

    def test_flac_metadata_blocks(self) -> None:
        """FLAC: STREAMINFO first, a VORBIS_COMMENT last (and only it flagged last), audio untouched."""
        data, base = make_output("flac", TOKEN), sample_bytes("base.flac")
        assert data[:4] == b"fLaC"
        pos, blocks = 4, []
        while True:
            last, kind = data[pos] & 0x80, data[pos] & 0x7F
            length = int.from_bytes(data[pos + 1 : pos + 4], "big")
            blocks.append(kind)
            pos += 4 + length
            if last:
                break
        assert blocks == [0, 4]
        audio = base[4 + 4 + 34 :]  # the base keeps only STREAMINFO
        assert data[pos:] == audio and audio[:2] == b"\xff\xf8"

    def test_mp3_id3_tag_then_frames(self) -> None:
        """MP3: an ID3v2.3 tag whose syncsafe size lands exactly on the base's first frame."""
        data, base = make_output("mp3", TOKEN), sample_bytes("base.mp3")
        assert data[:4] == b"ID3\x03" and not any(b & 0x80 for b in data[6:10])
        size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
        assert data[10:14] == b"TXXX"
        assert data[10 + size :] == base and base[0] == 0xFF

    def test_ogg_pages_and_crcs(self) -> None:
        """Ogg: every page's CRC holds, sequence numbers run on, only the OpusTags page changed."""
        data, base = make_output("ogg", TOKEN), sample_bytes("base.ogg")
        pages, base_pages = _ogg_pages(data), _ogg_pages(base)
        assert len(pages) == len(base_pages)
        for seq, page in enumerate(pages):
            assert struct.unpack("<I", page[18:22])[0] == seq
            zeroed = page[:22] + b"\0\0\0\0" + page[26:]
            assert struct.unpack("<I", page[22:26])[0] == _ogg_crc(zeroed)
        body = pages[1][27 + pages[1][26] :]
        assert body.startswith(b"OpusTags") and b"RUNWATCH_TOKEN=" + TOKEN in body
        assert pages[:1] + pages[2:] == base_pages[:1] + base_pages[2:]


class TestSamples:
    @pytest.mark.parametrize("name", list(SAMPLE_FILES))
    def test_sample_probes_as_expected(self, name: str) -> None:
        """Every shipped sample is what its name says, with the advertised size and duration."""
        kind, fmt, width, height, shortest, longest = SAMPLE_FILES[name]
        info = _check(probe_file(SAMPLES / name), kind, width, height, shortest, longest)
        assert info.format == fmt
        assert sample_bytes(name) == (SAMPLES / name).read_bytes()

    def test_folder_is_small_and_fully_described(self) -> None:
        """Each sample is >= 512 bytes (Runway's upload minimum), the folder < 1 MB, the clip < 300 KB."""
        files = sorted(p for p in SAMPLES.iterdir() if p.is_file())
        assert {p.name for p in files} == set(SAMPLE_FILES), "add new samples to SAMPLE_FILES"
        assert all(p.stat().st_size >= 512 for p in files)
        assert sum(p.stat().st_size for p in files) < 1_000_000
        assert (SAMPLES / "clip.mp4").stat().st_size < 300_000


class TestProbe:
    @pytest.mark.parametrize(
        "name, prefix",
        [
            ("clip.mp4", 16384),
            ("speech.wav", 1024),
            ("speech.mp3", 4096),
            ("base.flac", 64),
            ("still.jpg", 2048),
        ],
    )
    def test_a_prefix_is_enough(self, name: str, prefix: int) -> None:
        """Headers near the start give the full answer from a prefix (faststart MP4, WAV, Xing MP3, FLAC)."""
        data = (SAMPLES / name).read_bytes()
        assert probe(data[:prefix]) == probe(data)

    def test_ogg_prefix_does_not_guess_duration(self) -> None:
        """An Ogg prefix has no end-of-stream page, so its duration is unknown rather than understated."""
        data = sample_bytes("base.ogg")
        assert probe(data[: len(data) // 2]) == MediaInfo("audio", "ogg", "audio/ogg")

    def test_probe_file_matches_probe(self, tmp_path: Path) -> None:
        """probe_file and probe agree on every output and sample."""
        for name, data in _all_files():
            path = tmp_path / name
            path.write_bytes(data)
            assert probe_file(path) == probe(data), name

    def test_probe_file_seeks_to_a_late_moov(self, tmp_path: Path) -> None:
        """A moov far from the start is found by seeking; a buffer prefix and a tiny limit cannot see it."""
        base = sample_bytes("base.mp4")
        data = base[:32] + struct.pack(">I4s", 8 + 500_000, b"free") + bytes(500_000) + base[32:]
        path = tmp_path / "late.mp4"
        path.write_bytes(data)
        assert probe_file(path) == probe(base)
        assert probe(data[:65536]) == MediaInfo("video", "mp4", "video/mp4")
        assert probe_file(path, limit=4096) == MediaInfo("video", "mp4", "video/mp4")

    def test_detects_by_content_not_name(self, tmp_path: Path) -> None:
        """A JPEG saved as .png is still a JPEG."""
        path = tmp_path / "liar.png"
        path.write_bytes(sample_bytes("base.jpg"))
        info = probe_file(path)
        assert info is not None and info.format == "jpeg"

    def test_gif_is_recognised_so_callers_can_refuse_it(self) -> None:
        """GIF reports as image/gif with its logical screen size."""
        gif = b"GIF89a\x03\x00\x02\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
        gif += b",\x00\x00\x00\x00\x03\x00\x02\x00\x00\x02\x02D\x01\x00;"
        assert probe(gif) == MediaInfo("image", "gif", "image/gif", 3, 2)

    def test_webp_lossless_header(self) -> None:
        """A VP8L (lossless) WebP reports its 14-bit width and height."""
        bits = (100 - 1) | ((50 - 1) << 14)
        body = b"\x2f" + bits.to_bytes(4, "little") + bytes(8)
        data = b"RIFF" + struct.pack("<I", 4 + 8 + len(body)) + b"WEBPVP8L" + struct.pack("<I", len(body)) + body
        assert probe(data) == MediaInfo("image", "webp", "image/webp", 100, 50)

    def test_webm_duration_and_size(self) -> None:
        """WebM: EBML DocType, Info/Duration scaled by TimecodeScale, first video track's pixel size."""

        def el(ident: int, payload: bytes) -> bytes:
            return ident.to_bytes((ident.bit_length() + 7) // 8, "big") + bytes([0x80 | len(payload)]) + payload

        header = el(0x1A45DFA3, el(0x4282, b"webm"))
        info = el(0x1549A966, el(0x2AD7B1, (1_000_000).to_bytes(3, "big")) + el(0x4489, struct.pack(">d", 2500.0)))
        video = el(0xE0, el(0xB0, (640).to_bytes(2, "big")) + el(0xBA, (360).to_bytes(2, "big")))
        tracks = el(0x1654AE6B, el(0xAE, el(0x83, b"\x01") + video))
        segment = b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff" + info + tracks  # unknown size
        assert probe(header + segment) == MediaInfo("video", "webm", "video/webm", 640, 360, 2.5)
        audio_only = el(0x1654AE6B, el(0xAE, el(0x83, b"\x02")))
        got = probe(header + b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff" + info + audio_only)
        assert got == MediaInfo("audio", "webm", "audio/webm", None, None, 2.5)

    def test_ogg_vorbis_duration_from_last_granule(self) -> None:
        """Ogg Vorbis: the rate from the id header, the duration from the end-of-stream page."""

        def page(seq: int, granule: int, flags: int, packet: bytes) -> bytes:
            return (
                b"OggS\0"
                + bytes([flags])
                + struct.pack("<qII", granule, 7, seq)
                + b"\0\0\0\0"
                + bytes([1, len(packet)])
                + packet
            )

        ident = b"\x01vorbis" + struct.pack("<IBI", 0, 1, 44100) + bytes(13)
        data = page(0, 0, 0x02, ident) + page(1, 44100, 0, b"x" * 10) + page(2, 88200, 0x04, b"y" * 10)
        assert probe(data) == MediaInfo("audio", "ogg", "audio/ogg", duration=2.0)

    def test_isobmff_variants(self) -> None:
        """No ftyp means QuickTime; an audio-only MP4 is M4A; an AVIF brand is an image."""
        base = sample_bytes("base.mp4")
        assert probe(base[32:]) == MediaInfo("video", "mov", "video/quicktime", 320, 180, 1.0)
        at = base.index(b"hdlr") + 12  # handler type: after version/flags and pre_defined
        assert base[at : at + 4] == b"vide"
        audio_only = base[:at] + b"soun" + base[at + 4 :]
        assert probe(audio_only) == MediaInfo("audio", "m4a", "audio/mp4", None, None, 1.0)
        avif = struct.pack(">I4s4sI4s", 20, b"ftyp", b"avif", 0, b"mif1")
        assert probe(avif) == MediaInfo("image", "avif", "image/avif")

    def test_garbage_is_none(self) -> None:
        """Empty, constant and random bytes are not media."""
        rng = random.Random(1234)
        blobs = [b"", b"\0", bytes(4096), b"\xff" * 4096, b"hello world" * 50]
        blobs += [rng.randbytes(rng.randrange(1, 5000)) for _ in range(300)]
        for blob in blobs:
            assert probe(blob) is None

    def test_magic_followed_by_garbage_never_raises(self) -> None:
        """Each recognised signature followed by junk gives None or an answer, never an exception."""
        rng = random.Random(99)
        magics = [
            b"\x89PNG\r\n\x1a\n",
            b"\xff\xd8\xff",
            b"GIF89a",
            b"RIFF\0\0\0\0WEBP",
            b"RIFF\xff\xff\xff\xffWAVE",
            b"\0\0\0\x20ftypisom",
            b"\0\0\0\x01moov",
            b"\x1a\x45\xdf\xa3",
            b"OggS\0",
            b"fLaC",
            b"ID3\x03\0\0",
            b"\xff\xfb",
            b"\xff\xf3",
            b"RIFF\0\0\0\0WEBPVP8X",
            b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0",
        ]
        for magic in magics:
            for _ in range(200):
                result = probe(magic + rng.randbytes(rng.randrange(0, 300)))
                assert result is None or isinstance(result, MediaInfo)

    def test_short_prefixes_are_none(self) -> None:
        """Twelve bytes or fewer of any file are not enough to call it media."""
        for name, data in _all_files():
            for n in range(13):
                assert probe(data[:n]) is None, (name, n)

    def test_truncation_never_misidentifies(self) -> None:
        """A file cut anywhere gives None or the same kind and format as the whole file."""
        for name, data in _all_files():
            whole = probe(data)
            assert whole is not None
            step = max(1, len(data) // 300)
            for n in [*range(64), *range(64, len(data), step)]:
                part = probe(data[:n])
                assert part is None or (part.kind, part.format) == (whole.kind, whole.format), (name, n)

    def test_corrupted_bytes_never_raise(self, tmp_path: Path) -> None:
        """Random byte damage anywhere in a real file never makes probe or probe_file raise."""
        rng = random.Random(7)
        for name, data in _all_files():
            for _ in range(150):
                damaged = bytearray(data[: rng.randrange(1, len(data) + 1)])
                for _ in range(rng.randrange(1, 6)):
                    at = rng.randrange(min(len(damaged), 400))
                    damaged[at] = rng.randrange(256)
                result = probe(bytes(damaged))
                assert result is None or isinstance(result, MediaInfo), name
        path = tmp_path / "junk.bin"
        path.write_bytes(b"\0\0\0\x08ftyp" + b"\xff" * 100)
        assert probe_file(path) is None or isinstance(probe_file(path), MediaInfo)


class TestWithFfmpeg:
    @pytest.fixture(autouse=True)
    def _ffmpeg(self) -> None:
        """The cross-check needs ffmpeg's programs (skipped without them, except under CI)."""
        need_tool("ffprobe", "ffmpeg", package="ffmpeg")

    def _ffprobe(self, path: Path) -> dict[str, object]:
        run = subprocess.run(
            ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0 and not run.stderr.strip(), run.stderr
        decode = subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert decode.returncode == 0 and not decode.stderr.strip(), decode.stderr
        result: dict[str, object] = json.loads(run.stdout)
        return result

    def _agrees(self, path: Path, info: MediaInfo | None) -> None:
        assert info is not None
        report = self._ffprobe(path)
        streams = report["streams"]
        assert isinstance(streams, list) and streams
        if info.width is not None:
            assert (streams[0]["width"], streams[0]["height"]) == (info.width, info.height)
        fmt = report["format"]
        assert isinstance(fmt, dict)
        if info.duration is not None:
            assert abs(float(fmt["duration"]) - info.duration) < 0.1

    @pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
    def test_output_decodes_cleanly(self, fmt: str, tmp_path: Path) -> None:
        """ffprobe reads every output (each zip frame for zip) and ffmpeg decodes it without a complaint."""
        data = make_output(fmt, TOKEN)
        members = {f"output.{fmt}": data}
        if fmt == "zip":
            with zipfile.ZipFile(BytesIO(data)) as zf:
                members = {name: zf.read(name) for name in zf.namelist()}
        for name, blob in members.items():
            path = tmp_path / name
            path.write_bytes(blob)
            self._agrees(path, probe(blob))

    @pytest.mark.parametrize("name", list(SAMPLE_FILES))
    def test_sample_decodes_cleanly(self, name: str) -> None:
        """ffprobe agrees with probe on every shipped sample, and ffmpeg decodes it cleanly."""
        self._agrees(SAMPLES / name, probe_file(SAMPLES / name))
