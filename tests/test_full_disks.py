"""Disk-full rehearsals: the outbox and the state directory on small tmpfs mounts, filled while the real daemon
works with the simulator, then freed. Every status file ends true, with no restart, and nothing is paid twice."""

from __future__ import annotations

import errno
import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runwatch.simulator import Fault, SimConfig, Simulator

from .conftest import need
from .rig import SEED_REQUESTS, Rig

SPEECH = SEED_REQUESTS["text_to_speech"][0]
PAGE = 4096  # tmpfs counts its size in pages


class Disk:
    """A small tmpfs mounted on a folder, and a file that fills it."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                capture_output=True,
                text=True,
                check=False,
            )
            mounted = done.returncode == 0
            why = done.stderr.strip()
        except OSError as exc:
            mounted, why = False, str(exc)
        need(mounted, f"cannot mount a tmpfs on {path} ({why}): these tests run as root with mount(8)")
        self.filler = path / "filler"

    def fill(self, leave_pages: int = 0) -> None:
        """Take every free page but ``leave_pages``.

        The daemon writes to the same disk meanwhile, so the filler is written until the disk refuses it (a
        count of free pages read beforehand can be stale by the time it is written), then gives back
        ``leave_pages`` whole pages: tmpfs writes and truncates page by page."""
        chunk = b"\0" * (64 * PAGE)
        with self.filler.open("ab", buffering=0) as f:
            while True:
                try:
                    f.write(chunk)  # unbuffered: a short write near the end, then ENOSPC
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
            os.ftruncate(f.fileno(), max(0, f.tell() - leave_pages * PAGE))
        assert os.statvfs(self.path).f_bavail == leave_pages
        if not leave_pages:  # full: even one more byte is refused
            with pytest.raises(OSError) as refused, (self.path / "probe").open("wb") as probe:
                probe.write(b"x" * PAGE)
                probe.flush()
                os.fsync(probe.fileno())
            assert refused.value.errno == errno.ENOSPC
            (self.path / "probe").unlink(missing_ok=True)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if subprocess.run(["umount", str(self.path)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[Callable[[str, str], Disk]]:
    mounted: list[Disk] = []

    def mount(name: str, size: str) -> Disk:
        disk = Disk(tmp_path / name, size)
        mounted.append(disk)
        return disk

    yield mount
    for disk in reversed(mounted):
        disk.unmount()


class Ext4:
    """An ext4 image on a loop device, mounted with ``errors=remount-ro``: what a state disk is in production,
    where a disk error makes the kernel turn it read-only under the running daemon.

    ``mount -o remount,ro`` cannot stage that: the kernel refuses it (EBUSY) while any process holds a file of
    the filesystem open for writing, as the daemon does its journal. A filesystem error does it regardless.
    """

    def __init__(self, path: Path, image: Path) -> None:
        self.path, self.image = path, image
        path.mkdir(parents=True, exist_ok=True)
        tools = all(shutil.which(t) for t in ("mkfs.ext4", "e2fsck", "losetup"))
        need(tools, "mkfs.ext4, e2fsck and losetup are needed: install e2fsprogs and mount")
        with image.open("wb") as f:
            f.truncate(32 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
        self.mounted = False
        self.mount()

    def mount(self) -> None:
        done = subprocess.run(
            ["mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.path)],
            capture_output=True,
            text=True,
            check=False,
        )
        need(done.returncode == 0, f"cannot mount an ext4 image on a loop device ({done.stderr.strip()})")
        self.mounted = True

    def break_down(self) -> None:
        """A filesystem error, as a failing disk raises: the kernel remounts it read-only at once."""
        device = next(
            line.split()[0]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1] == str(self.path)
        )
        trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
        need(trigger.exists(), f"{trigger} is missing: the kernel cannot stage an ext4 error")
        trigger.write_text("rehearsal\n")
        options = next(
            line.split()[3]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1] == str(self.path)
        )
        with pytest.raises(OSError) as refused:
            (self.path / "probe").write_bytes(b"x")
        assert refused.value.errno == errno.EROFS, options

    def repair(self) -> None:
        """What an operator does: unmount, check, mount again. The unmount waits (up to 10 s) for files the
        stopped daemon's threads are still closing; a lazy unmount would leave the old, read-only mount busy
        and e2fsck would refuse the image."""
        deadline = time.monotonic() + 10.0
        while subprocess.run(["umount", str(self.path)], capture_output=True, check=False).returncode:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.path} stays busy; open here: {_open_beneath(self.path)}")
            time.sleep(0.1)
        self.mounted = False
        checked = subprocess.run(["e2fsck", "-fy", str(self.image)], capture_output=True, text=True, check=False)
        assert checked.returncode in (0, 1), checked.stdout + checked.stderr  # clean, or errors corrected
        self.mount()
        (self.path / "probe").write_bytes(b"x")  # writable again
        (self.path / "probe").unlink()

    def unmount(self) -> None:
        if self.mounted:
            if subprocess.run(["umount", str(self.path)], capture_output=True, check=False).returncode:
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)
            self.mounted = False


def _open_beneath(path: Path) -> list[str]:
    """Files beneath ``path`` this process holds open."""
    held = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(f"{path}/") or target == str(path):
            held.append(target)
    return held


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[Callable[[str], Ext4]]:
    made: list[Ext4] = []

    def make(name: str) -> Ext4:
        disk = Ext4(tmp_path / name, tmp_path / f"{name}.img")
        made.append(disk)
        return disk

    yield make
    for disk in made:
        disk.unmount()


def _until(what: Callable[[], Any], timeout: float = 30.0, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(message or f"not true within {timeout} s")


def _health(rig: Rig) -> list[str]:
    assert rig.daemon is not None
    return rig.daemon.engine.health()


def _row(rig: Rig, name: str) -> Any:
    journal = rig.journal()
    try:
        return journal.find(name)
    finally:
        journal.close()


def _state_disk_fails_under_a_task(rig: Rig, sim: Simulator, fail: Callable[[], None]) -> dict[str, Any]:
    """The state disk fails (``fail``) while a task runs and a second request comes: the task is followed to its
    outputs from memory, the second is claimed but not sent, the daemon says the journal cannot be written.
    The first request's status."""
    rig.drop("first", SPEECH)
    rig.wait("first", {"submitted", "pending", "running"}, timeout=30)
    fail()
    rig.drop("second", dict(SPEECH, promptText="second"))
    first = rig.wait("first", timeout=60)
    assert first["state"] == "succeeded", first
    rig.check_outputs(first)
    trouble = _until(lambda: _health(rig))
    assert "journal cannot be written" in trouble[0], trouble
    _until(lambda: list((rig.inbox / ".runwatch" / "jobs").iterdir()), message="the claim is not in jobs/")
    assert rig.status("second") is None and sim.create_count() == 1
    return first


class TestOutboxFull:
    def test_a_rejection_while_the_outbox_is_full_gets_its_status_file(
        self, rig_factory: Callable[..., Rig], sim: Simulator, disks: Callable[[str, str], Disk]
    ) -> None:
        """A request rejected while the outbox is full gets its status file once space returns, without a
        restart; meanwhile the daemon says it is unhealthy and why."""
        outbox = disks("outbox", "1m")
        rig = rig_factory(sim).start()
        outbox.fill()
        rig.drop("bad", {"endpoint": "text_to_speech", "model": "eleven_multilingual_v2", "promptText": 5})
        _until(lambda: _row(rig, "bad"), message="the rejection was not recorded")
        assert rig.status("bad") is None
        trouble = _until(lambda: _health(rig))
        assert "status file(s) cannot be written" in trouble[0] and "No space left" in trouble[0], trouble
        outbox.free()
        status = rig.wait("bad", timeout=15)
        assert status["state"] == "rejected" and status["error"]["code"] == "invalid_request", status
        _until(lambda: not _health(rig), message="still unhealthy after the outbox has room again")

    def test_the_final_status_written_when_space_returns(
        self,
        rig_factory: Callable[..., Rig],
        disks: Callable[[str, str], Disk],
    ) -> None:
        """The outbox fills up between the output and the status file: the output is complete, the journal
        says succeeded, and the status file says so too once space returns, without a restart."""
        outbox = disks("outbox", "2m")
        with Simulator(SimConfig(time_scale=0.002, allow_http_loopback=True, output_delay=1.5)) as sim:
            rig = rig_factory(sim).start()
            rig.drop("late", SPEECH)
            downloading = rig.wait("late", {"downloading"}, timeout=30)
            size = len(sim.output_bytes(downloading["task_id"], 0))
            outbox.fill(leave_pages=math.ceil(size / PAGE))  # room for the output, none for its status file
            _until(lambda: (r := _row(rig, "late")) is not None and r.state == "succeeded", timeout=30)
            assert rig.status("late")["state"] == "downloading"  # type: ignore[index]
            assert _health(rig), "the daemon said it was healthy with a status file it could not write"
            outbox.free()
            status = rig.wait("late", {"succeeded"}, timeout=15)
            rig.check_outputs(status)
            assert sim.create_count() == 1


class TestStateFull:
    def test_full_journal_disk_keeps_tasks_and_claims(
        self,
        rig_factory: Callable[..., Rig],
        disks: Callable[[str, str], Disk],
    ) -> None:
        """The state disk fills while a task runs: the task is followed to its outputs from memory, a new request
        waits (claimed, not sent), the daemon says it is unhealthy; once space returns everything the journal
        missed is recorded and the waiting request is sent, with no restart and one create each."""
        state = disks("state", "4m")
        with Simulator(SimConfig(time_scale=0.02, allow_http_loopback=True)) as sim:
            rig = rig_factory(sim).start()
            first = _state_disk_fails_under_a_task(rig, sim, state.fill)
            state.free()
            second = rig.wait("second", timeout=60)
            assert second["state"] == "succeeded", second
            rig.check_outputs(second)
            _until(lambda: not _health(rig), message="still unhealthy after the state disk has room again")
            row = _row(rig, "first")
            assert row.state == "succeeded" and row.outputs and row.task_id == first["task_id"], row
            assert sim.create_count() == 2 and sim.duplicate_creates() == []
            assert rig.status("first") == first  # the journal caught up; the status file never went back

    def test_create_not_sent_while_its_intent_cannot_be_recorded(
        self,
        rig_factory: Callable[..., Rig],
        sim: Simulator,
        disks: Callable[[str, str], Disk],
    ) -> None:
        """A request waiting out a back-off when the state disk fills is not sent while the journal cannot
        record its intent; it is sent, once, when space returns, and succeeds."""
        state = disks("state", "4m")
        sim.faults.add(Fault("rate_limit", count=5, retry_after=0.05, endpoint="text_to_speech"))
        rig = rig_factory(sim).start()
        rig.drop("patient", SPEECH)
        _until(lambda: len(sim.requests("/v1/text_to_speech")) == 5)  # refused five times: a 2 s back-off
        state.fill()
        _until(lambda: _health(rig), timeout=15)
        time.sleep(3)  # past the back-off: a create would have left by now
        assert len(sim.requests("/v1/text_to_speech")) == 5 and sim.create_count() == 0
        state.free()
        status = rig.wait("patient", timeout=60)
        assert status["state"] == "succeeded", status
        rig.check_outputs(status)
        assert len(sim.requests("/v1/text_to_speech")) == 6 and sim.create_count() == 1


class TestStateReadOnly:
    def test_state_disk_turned_read_only(
        self,
        rig_factory: Callable[..., Rig],
        ext4: Callable[[str], Ext4],
    ) -> None:
        """The state disk turns read-only under the daemon while a task runs: the task is followed to its outputs
        and its status file ends true, a new request waits unsent, the daemon says it is unhealthy and stops
        cleanly. After the disk is repaired, the next start sends the waiting request once and the first one
        keeps its one task and its status."""
        state = ext4("state")
        with Simulator(SimConfig(time_scale=0.02, allow_http_loopback=True)) as sim:
            rig = rig_factory(sim).start()
            first = _state_disk_fails_under_a_task(rig, sim, state.break_down)
            rig.stop()
            state.repair()
            rig.start()
            second = rig.wait("second", timeout=60)
            assert second["state"] == "succeeded", second
            rig.check_outputs(second)
            assert rig.wait("first", timeout=30)["outputs"] == first["outputs"]
            _until(lambda: not _health(rig), message="unhealthy on a repaired disk")
            assert sim.create_count() == 2 and sim.duplicate_creates() == []
