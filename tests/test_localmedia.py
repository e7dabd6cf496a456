"""Containment after the check: a media file is sent only if it is the very file the request check saw.

Between the check and the upload (while a job is held, or waits its turn) someone may put a symbolic link to a
file outside the inbox, or a hard link to one, in the checked file's place. Real folders; SeaweedFS for S3 and
the simulator for Runway's uploads; nothing outside the inbox may reach either.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from runwatch.api import RunwayClient
from runwatch.errors import MediaChangedError
from runwatch.localmedia import LocalMedia, open_beneath, open_media
from runwatch.media import DataTransport, RunwayTransport, S3Transport, Transport
from runwatch.request import load_request
from runwatch.simulator import Simulator

from .conftest import SAMPLES
from .rig import Rig
from .s3server import S3Server

I2V = {"endpoint": "image_to_video", "model": "gen4_turbo", "ratio": "1280:720", "duration": 5, "promptText": "sea"}
MIB = 1024 * 1024


@dataclass(frozen=True)
class Inbox:
    """What a request reads of its inbox."""

    path: Path
    media_transport: str = "runway"
    endpoint: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    media_field: str = "promptImage"
    accept_media: bool = False


@dataclass(frozen=True)
class S3Cfg:
    """The shape of ``runwatch.config.S3Config``."""

    bucket: str
    endpoint_url: str | None
    prefix: str = "containment/"
    region: str = "us-east-1"
    presign_expiry: int = 600
    keep: bool = False
    multipart_threshold: int = 64 * MIB
    multipart_chunksize: int = 16 * MIB
    addressing_style: str = "path"


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    (folder / "shots").mkdir(parents=True)
    shutil.copy(SAMPLES / "still.jpg", folder / "shots" / "still.jpg")
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A secret picture outside the inbox, at the same relative path as the checked one in its own folder."""
    folder = tmp_path / "private"
    (folder / "shots").mkdir(parents=True)
    shutil.copy(SAMPLES / "portrait.jpg", folder / "shots" / "still.jpg")
    return folder / "shots" / "still.jpg"


def checked(inbox: Path, transport: str = "runway") -> LocalMedia:
    """The request check, as the claim does it: the media it found, with the file's identity."""
    path = inbox / "req.json"
    path.write_text(json.dumps({**I2V, "promptImage": "shots/still.jpg"}))
    [media] = load_request(path, root=inbox, inbox=Inbox(inbox, transport)).media
    return media


def _symlink(inbox: Path, outside: Path) -> None:
    target = inbox / "shots" / "still.jpg"
    target.unlink()
    os.symlink(outside, target)


def _folder_symlink(inbox: Path, outside: Path) -> None:
    os.rename(inbox / "shots", inbox / "shots.old")
    os.symlink(outside.parent, inbox / "shots")


def _hard_link(inbox: Path, outside: Path) -> None:
    os.link(outside, inbox / "shots" / "new")
    os.replace(inbox / "shots" / "new", inbox / "shots" / "still.jpg")


def _other_file(inbox: Path, outside: Path) -> None:
    shutil.copy(outside, inbox / "shots" / "new")
    os.replace(inbox / "shots" / "new", inbox / "shots" / "still.jpg")


SWAPS: dict[str, Callable[[Path, Path], None]] = {
    "symlink": _symlink,
    "folder_symlink": _folder_symlink,
    "hard_link": _hard_link,
    "other_file": _other_file,
}


class TestOpenBeneath:
    """open_beneath walks from the root one component at a time and follows no link."""

    def test_opens_the_file(self, inbox: Path) -> None:
        """A plain file inside the root opens: the descriptor is that file."""
        fd = open_beneath(inbox, inbox / "shots" / "still.jpg")
        try:
            assert os.path.samestat(os.fstat(fd), os.stat(inbox / "shots" / "still.jpg"))
        finally:
            os.close(fd)

    @pytest.mark.parametrize("swap", ["symlink", "folder_symlink"])
    def test_links_are_not_followed(self, inbox: Path, outside: Path, swap: str) -> None:
        """A link as the file or as a folder on the way fails to open, instead of leading out."""
        SWAPS[swap](inbox, outside)
        with pytest.raises(OSError) as info:
            open_beneath(inbox, inbox / "shots" / "still.jpg")
        assert info.value.errno in (errno.ELOOP, errno.ENOTDIR)

    def test_a_path_outside_the_root_is_refused(self, inbox: Path, outside: Path) -> None:
        """Only paths inside the root are opened at all."""
        with pytest.raises(OSError) as info:
            open_beneath(inbox, outside)
        assert info.value.errno == errno.EXDEV

    def test_a_fifo_in_the_files_place_neither_hangs_nor_passes(self, inbox: Path) -> None:
        """A FIFO put where the checked file was is opened without blocking, then refused by its type."""
        media = checked(inbox)
        os.unlink(media.file)
        os.mkfifo(media.file)
        with pytest.raises(MediaChangedError, match="FIFO"):
            open_media(media)


class TestOpenMedia:
    """open_media hands out the checked file or raises MediaChangedError."""

    def test_unchanged_file(self, inbox: Path) -> None:
        """The checked file, untouched, opens blocking, with the checked bytes."""
        media = checked(inbox)
        with os.fdopen(open_media(media), "rb") as fh:
            assert os.get_blocking(fh.fileno())
            assert fh.read() == (SAMPLES / "still.jpg").read_bytes()

    @pytest.mark.parametrize("swap", sorted(SWAPS))
    def test_any_replacement_is_refused(self, inbox: Path, outside: Path, swap: str) -> None:
        """A link (symbolic or hard) or another file in its place: refused, naming the file, code media_changed."""
        media = checked(inbox)
        SWAPS[swap](inbox, outside)
        with pytest.raises(MediaChangedError) as info:
            open_media(media)
        assert str(info.value).startswith("shots/still.jpg: is no longer the file that was checked")
        assert info.value.code == "media_changed" and not info.value.retryable

    def test_hard_link_made_before_the_check_is_the_file(self, inbox: Path, outside: Path) -> None:
        """A hard link that was there when the request was checked is the file that was checked: it is sent
        (linking needs the right to read the file, so it shows nothing its maker could not read)."""
        os.unlink(inbox / "shots" / "still.jpg")
        os.link(outside, inbox / "shots" / "still.jpg")
        media = checked(inbox)
        with os.fdopen(open_media(media), "rb") as fh:
            assert fh.read() == outside.read_bytes()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0) as client:
        yield client


class TestNothingOutsideIsSent:
    """Each transport, with the checked file swapped before the upload: it raises, and sends nothing."""

    @pytest.mark.parametrize("swap", sorted(SWAPS))
    def test_s3(self, inbox: Path, outside: Path, s3: S3Server, swap: str) -> None:
        """No object is written under the job's key."""
        client = s3.client()
        transport = S3Transport(S3Cfg(s3.bucket, s3.endpoint_url), client)
        job_id = f"20260101T000000Z-{uuid.uuid4().hex[:8]}"
        media = checked(inbox, "s3")
        SWAPS[swap](inbox, outside)
        with pytest.raises(MediaChangedError):
            transport.place(media, job_id)
        listing = client.list_objects_v2(Bucket=s3.bucket, Prefix=f"containment/{job_id}/")
        assert listing.get("KeyCount", 0) == 0

    @pytest.mark.parametrize("swap", sorted(SWAPS))
    def test_runway(self, inbox: Path, outside: Path, sim: Simulator, http: httpx.Client, swap: str) -> None:
        """Runway's upload endpoint is not even asked for an upload."""
        transport = RunwayTransport(RunwayClient(http, base_url=sim.url, api_key=sim.key), http)
        media = checked(inbox)
        SWAPS[swap](inbox, outside)
        with pytest.raises(MediaChangedError):
            transport.place(media, "20260101T000000Z-00000000")
        assert sim.requests("/v1/uploads") == [] and sim.world.uploads == {}

    @pytest.mark.parametrize("swap", sorted(SWAPS))
    def test_data(self, inbox: Path, outside: Path, swap: str) -> None:
        """No data URI is made."""
        transport: Transport = DataTransport()
        media = checked(inbox, "data")
        SWAPS[swap](inbox, outside)
        with pytest.raises(MediaChangedError):
            transport.place(media, "20260101T000000Z-00000000")


class TestDaemon:
    """A job held for approval whose media file is swapped for a link out fails; nothing outside is uploaded."""

    def _swap_while_held(self, rig: Rig, outside: Path) -> dict[str, Any]:
        shutil.copy(SAMPLES / "still.jpg", rig.inbox / "still.jpg")
        rig.drop("waves", {**I2V, "promptImage": "still.jpg"})
        held = rig.wait("waves", {"held"})
        job_dir = Path(held["request"]).parent
        assert "/jobs/" in str(job_dir)
        os.unlink(job_dir / "still.jpg")
        os.symlink(outside, job_dir / "still.jpg")
        (rig.inbox / "waves.approve").write_text("")
        status = rig.wait("waves")
        assert status["state"] == "failed", status
        assert status["error"]["code"] == "media_changed"
        assert "still.jpg: is no longer the file that was checked" in status["error"]["message"]
        assert outside.read_bytes() == (SAMPLES / "portrait.jpg").read_bytes()
        return status

    def test_runway_uploads(self, rig_factory: Callable[..., Rig], sim: Simulator, outside: Path) -> None:
        """Through Runway's uploads: no upload asked for, no create sent."""
        rig = rig_factory(sim, inbox={"approve_above": 1}).start()
        self._swap_while_held(rig, outside)
        assert sim.requests("/v1/uploads") == [] and sim.create_count() == 0

    def test_s3(self, rig_factory: Callable[..., Rig], sim: Simulator, s3: S3Server, outside: Path) -> None:
        """Through S3: no object of the job is written, nothing is fetched, no create sent."""
        rig = rig_factory(sim, s3=s3, inbox={"approve_above": 1}).start()
        status = self._swap_while_held(rig, outside)
        job_id = Path(status["request"]).parent.name
        keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket).get("Contents", [])]
        assert not any(job_id in key for key in keys)
        assert sim.world.fetches == [] and sim.create_count() == 0
