"""Outputs checked before they are taken: a container that parses for the announced media type and ends where
its own structure says, for every format the simulator serves and the samples shipped."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from runwatch.mediacheck import check_output, expected_format
from runwatch.mediafiles import OUTPUT_FORMATS, make_output

from .conftest import SAMPLES

# Formats whose end the check can see (FLAC's frames are not walked: a cut FLAC passes as its header parses).
ENDS_CHECKED = [fmt for fmt in OUTPUT_FORMATS if fmt != "flac"]


def _file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "out"
    path.write_bytes(data)
    return path


class TestWhole:
    @pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
    def test_outputs_the_simulator_makes_pass(self, tmp_path: Path, fmt: str) -> None:
        """Every output format the simulator serves passes as itself."""
        assert check_output(_file(tmp_path, make_output(fmt, b"whole")), fmt) is None

    @pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.iterdir()))
    def test_shipped_samples_pass(self, tmp_path: Path, sample: str) -> None:
        """The real media files shipped as samples pass, announced by their extension."""
        fmt = expected_format(None, Path(sample).suffix)
        assert fmt is not None
        assert check_output(_file(tmp_path, (SAMPLES / sample).read_bytes()), fmt) is None


class TestBroken:
    @pytest.mark.parametrize("fmt", ENDS_CHECKED)
    @pytest.mark.parametrize("keep", [0.5, 0.9])
    def test_a_cut_output_is_named(self, tmp_path: Path, fmt: str, keep: float) -> None:
        """An output cut short (as a cache that kept part of it serves it) is not valid, and says so."""
        data = make_output(fmt, b"cut")
        problem = check_output(_file(tmp_path, data[: int(len(data) * keep)]), fmt)
        assert problem is not None and problem.startswith("is not a valid "), problem

    @pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
    def test_garbage_is_named(self, tmp_path: Path, fmt: str) -> None:
        """Random bytes announced as a media type are not that media type."""
        data = random.Random(fmt).randbytes(len(make_output(fmt, b"x")))
        problem = check_output(_file(tmp_path, data), fmt)
        assert problem is not None and problem.startswith("is not a valid "), problem

    def test_the_message_says_what_is_wrong(self, tmp_path: Path) -> None:
        """An MP4 cut inside its media data names the box and how much of it arrived."""
        data = make_output("mp4", b"cut")
        problem = check_output(_file(tmp_path, data[:-100]), "mp4")
        assert problem is not None and "ends inside its 'mdat' box" in problem and "bytes" in problem

    def test_another_format_than_announced(self, tmp_path: Path) -> None:
        """A PNG served as video/mp4 is refused, naming both."""
        problem = check_output(_file(tmp_path, make_output("png", b"x")), "mp4")
        assert problem == "is announced as MP4 but is PNG"

    def test_a_family_member_is_the_same_container(self, tmp_path: Path) -> None:
        """A QuickTime file announced as MP4 (one container family) passes."""
        assert check_output(_file(tmp_path, make_output("mov", b"x")), "mp4") is None

    def test_stray_bytes_after_an_mp4(self, tmp_path: Path) -> None:
        """Bytes after an MP4's last box are not part of any box: refused."""
        problem = check_output(_file(tmp_path, make_output("mp4", b"x") + os.urandom(5)), "mp4")
        assert problem is not None and "stray bytes" in problem


class TestAnnounced:
    @pytest.mark.parametrize(
        ("content_type", "extension", "expected"),
        [
            ("video/mp4", None, "mp4"),
            ("image/png; charset=binary", ".jpg", "png"),
            ("audio/mpeg", None, "mp3"),
            ("audio/x-wav", None, "wav"),
            ("application/octet-stream", ".webp", "webp"),
            (None, "JPG", "jpeg"),
            ("application/octet-stream", ".dat", None),
            (None, None, None),
        ],
    )
    def test_expected_format(self, content_type: str | None, extension: str | None, expected: str | None) -> None:
        """The Content-Type decides, then the URL's extension; nothing known means nothing to check against."""
        assert expected_format(content_type, extension) == expected

    def test_nothing_announced_is_not_checked(self, tmp_path: Path) -> None:
        """An output of no known type is taken as it is (its size is still checked against Content-Length)."""
        assert check_output(_file(tmp_path, b"anything"), None) is None
