"""One media file for several requests: three prompts on one still.

A claim hard-links the media it names into its job dir and leaves the file in the inbox while other requests
waiting there name it, and for the settle time after; then the file leaves the inbox. A request dropped after
that is refused with who took the file and when. Real folders, real watchdog observers (inotify and polling),
and the daemon against the simulator; a kill in the middle of a claim is the files it leaves behind, made with
the claim's own steps.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runwatch import taken
from runwatch.config import InboxConfig
from runwatch.inbox import Claimed, InboxWatcher
from runwatch.simulator import Simulator
from runwatch.taken import Plan, Record

from .conftest import SAMPLES
from .rig import SEED_REQUESTS, Rig
from .test_inbox import IMAGE, MODES, Item, Sink, config, count, drop, sample

STILL = SAMPLES / "still.jpg"
IMAGE_TO_VIDEO = SEED_REQUESTS["image_to_video"][0]


def _prompts(names: list[str]) -> dict[str, dict[str, Any]]:
    return {name: {**IMAGE, "promptText": f"prompt {name}"} for name in names}


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """Every watcher behaviour with the inotify observer and with the polling one."""
    return str(request.param)


@pytest.fixture
def start() -> Iterator[Callable[..., InboxWatcher]]:
    """Starts watchers and stops them all at the end of the test."""
    started: list[InboxWatcher] = []

    def make(cfg: InboxConfig, sink: Callable[[Item], None], mode: str = "inotify") -> InboxWatcher:
        watcher = InboxWatcher(cfg, deliver=sink, polling=mode == "polling")
        watcher.start()
        started.append(watcher)
        return watcher

    yield make
    for watcher in started:
        watcher.stop()


class TestWatcher:
    """What the inbox watcher takes, and what it leaves in the inbox."""

    def test_three_requests_share_one_still(self, tmp_path: Path, mode: str, start: Any) -> None:
        """Three requests naming one picture are each claimed with it (one file, a link in each job dir),
        none is refused, and the picture leaves the inbox once the last is taken."""
        cfg = config(tmp_path)
        sample(cfg, "still.jpg")
        sink = Sink()
        watcher = start(cfg, sink, mode)
        for name, body in _prompts(["a", "b", "c"]).items():
            drop(cfg, f"{name}.json", body)
        sink.wait(count(Claimed, 3))
        assert watcher.wait_idle(5)
        claims = sorted(sink.claimed(), key=lambda c: c.name)
        assert [c.name for c in claims] == ["a", "b", "c"] and not sink.refused()
        copies = [c.job_dir / "still.jpg" for c in claims]
        assert all(p.read_bytes() == STILL.read_bytes() for p in copies)
        assert len({p.stat().st_ino for p in copies}) == 1 and copies[0].stat().st_nlink == 3
        assert sorted(p.name for p in cfg.path.iterdir()) == [".runwatch"]

    def test_a_request_within_the_settle_time_shares(self, tmp_path: Path, mode: str, start: Any) -> None:
        """A request dropped just after another took the picture (a copy of several files that the watcher sees
        one by one) still finds it: it stays in the inbox for the settle time after a claim."""
        cfg = config(tmp_path, settle=2.0)
        sample(cfg, "still.jpg")
        sink = Sink()
        watcher = start(cfg, sink, mode)
        drop(cfg, "first.json", IMAGE)
        sink.wait(count(Claimed))
        assert (cfg.path / "still.jpg").is_file()
        drop(cfg, "second.json", {**IMAGE, "promptText": "again"})
        sink.wait(count(Claimed, 2))
        assert watcher.wait_idle(10) and not sink.refused()
        assert not (cfg.path / "still.jpg").exists()

    def test_a_waiting_request_keeps_the_file_in_the_inbox(self, tmp_path: Path, start: Any) -> None:
        """While a request naming the picture waits (its clip is still being copied), the picture stays in the
        inbox past the settle time, and that request takes it once the clip is complete."""
        cfg = config(tmp_path, settle=0.5)
        sample(cfg, "still.jpg")
        sink = Sink()
        watcher = start(cfg, sink)
        both = {
            "endpoint": "character_performance",
            "model": "act_two",
            "character": {"type": "image", "uri": "still.jpg"},
            "reference": {"type": "video", "uri": "clip.mp4"},
        }
        clip = (SAMPLES / "clip.mp4").read_bytes()
        step = -(-len(clip) // 20)

        def copy_slowly() -> None:  # the clip in 20 writes 0.1 s apart, through one open file
            with open(cfg.path / "clip.mp4", "wb") as fh:
                for offset in range(0, len(clip), step):
                    fh.write(clip[offset : offset + step])
                    fh.flush()
                    time.sleep(0.1)

        writer = threading.Thread(target=copy_slowly)
        writer.start()
        drop(cfg, "later.json", both)
        drop(cfg, "now.json", IMAGE)
        sink.wait(count(Claimed))
        while writer.is_alive():
            assert (cfg.path / "still.jpg").is_file() and [c.name for c in sink.claimed()] == ["now"]
            time.sleep(0.02)
        writer.join()
        sink.wait(count(Claimed, 2))
        assert watcher.wait_idle(5) and not sink.refused()
        later = next(c for c in sink.claimed() if c.name == "later")
        assert (later.job_dir / "still.jpg").stat().st_nlink == 2 and (later.job_dir / "clip.mp4").read_bytes() == clip
        assert sorted(p.name for p in cfg.path.iterdir()) == [".runwatch"]

    def test_without_hard_links_the_file_is_copied(
        self, tmp_path: Path, start: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On a filesystem that makes no hard links (link(2) answers EPERM, as on exFAT), each job dir gets a
        copy and the picture itself is kept in WORK/shared once it leaves the inbox: nothing is lost."""

        def no_links(src: Any, dst: Any, *, follow_symlinks: bool = True) -> None:
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(taken.os, "link", no_links)  # the filesystem's answer, not runwatch's code
        cfg = config(tmp_path)
        sample(cfg, "still.jpg")
        sink = Sink()
        watcher = start(cfg, sink)
        for name, body in _prompts(["a", "b"]).items():
            drop(cfg, f"{name}.json", body)
        sink.wait(count(Claimed, 2))
        assert watcher.wait_idle(5) and not sink.refused()
        for claim in sink.claimed():
            copy = claim.job_dir / "still.jpg"
            assert copy.read_bytes() == STILL.read_bytes() and copy.stat().st_nlink == 1
        [kept] = list((cfg.work / "shared").glob("*/still.jpg"))
        assert kept.read_bytes() == STILL.read_bytes() and not (cfg.path / "still.jpg").exists()


class TestLaterDrops:
    """A request dropped after its file was taken is refused, saying by whom and when."""

    def test_refused_with_who_took_it(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """The later request is rejected with a status file whose issue names the file, the request that took
        it and when, and what to do; nothing is uploaded or created for it."""
        rig = rig_factory(sim).start()
        rig.drop("waves", IMAGE_TO_VIDEO, media=("still.jpg",))
        assert rig.wait("waves")["state"] == "succeeded"
        assert rig.daemon is not None and rig.daemon.watchers[0].wait_idle(5)
        assert not (rig.inbox / "still.jpg").exists()
        rig.drop("again", dict(IMAGE_TO_VIDEO, promptText="again"))
        status = rig.wait("again")
        assert status["state"] == "rejected", status
        [issue] = status["error"]["issues"]
        assert issue["path"] == "promptImage"
        assert issue["message"].startswith('"still.jpg" is not in the inbox: request "waves" took it at 20')
        assert "drop it again together with this request, or give each request its own copy" in issue["message"]
        assert sim.create_count() == 1 and len(sim.requests("/v1/uploads")) == 1


class TestDaemon:
    """The daemon end to end: every request naming the still succeeds."""

    @pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
    def test_three_prompts_on_one_still(self, rig_factory: Callable[..., Rig], sim: Simulator, polling: bool) -> None:
        """Three requests dropped with one still all succeed, each with its own upload of it (one upload per
        request: a job never depends on another's), and the still leaves the inbox."""
        rig = rig_factory(sim, inbox={"polling": polling}).start()
        shutil.copy(STILL, rig.inbox / "still.jpg")
        names = ["a", "b", "c"]
        for name in names:
            rig.drop(name, dict(IMAGE_TO_VIDEO, promptText=f"prompt {name}"))
        statuses = [rig.wait(name) for name in names]
        assert [s["state"] for s in statuses] == ["succeeded"] * 3, statuses
        for status in statuses:
            rig.check_outputs(status)
        images = {sim.world.tasks[s["task_id"]].body["promptImage"] for s in statuses}
        assert len(images) == 3 and all(i.startswith("runway://") for i in images)
        assert len(sim.requests("/v1/uploads")) == 3 and sim.create_count() == 3
        uploads = list(sim.world.uploads.values())
        assert all(u.size == STILL.stat().st_size for u in uploads)
        assert rig.daemon is not None and rig.daemon.watchers[0].wait_idle(10)
        assert sorted(p.name for p in rig.inbox.iterdir()) == [".runwatch"]


def _claimed_whole(rig: Rig, job_id: str, name: str) -> Path:
    """The files a finished claim leaves: the request and a link of the still in its job dir, and its record."""
    job_dir = rig.inbox / ".runwatch" / "jobs" / job_id
    job_dir.mkdir(parents=True)
    taken.link(rig.inbox / "still.jpg", job_dir / "still.jpg")
    os.rename(rig.inbox / f"{name}.json", job_dir / f"{name}.json")
    st = os.lstat(rig.inbox / "still.jpg")
    record = Record("still.jpg", name, job_id, "2026-12-07T00:00:00Z", taken.identity(st))
    taken.remember(rig.inbox / ".runwatch", record)
    return job_dir


class TestKilledMidClaim:
    """A kill between the steps of a claim: the next start ends with every request succeeded."""

    @pytest.mark.parametrize("cut", ["before the rename", "after the rename"])
    def test_restart_finishes_every_request(self, rig_factory: Callable[..., Rig], sim: Simulator, cut: str) -> None:
        """Request a was taken whole and b's claim was cut short (its plan and link made, its request not moved
        yet, or moved but its record not written), c still waits: after a start, all three succeed with the
        still, no claim is left half-made, and the still leaves the inbox."""
        rig = rig_factory(sim)
        shutil.copy(STILL, rig.inbox / "still.jpg")
        for name in ("a", "b", "c"):
            rig.drop(name, dict(IMAGE_TO_VIDEO, promptText=f"prompt {name}"))
        _claimed_whole(rig, "20261207T000000Z-0000000a", "a")
        job_b = rig.inbox / ".runwatch" / "jobs" / "20261207T000001Z-0000000b"
        job_b.mkdir()
        taken.write_plan(job_b, "b.json", "b", "2026-12-07T00:00:01Z", [Plan("still.jpg", "still.jpg")])
        taken.link(rig.inbox / "still.jpg", job_b / "still.jpg")
        if cut == "after the rename":
            os.rename(rig.inbox / "b.json", job_b / "b.json")
        rig.journal().close()  # the journal of the run that was cut short, which never recorded b
        rig.start()
        statuses = [rig.wait(name) for name in ("a", "b", "c")]
        assert [s["state"] for s in statuses] == ["succeeded"] * 3, statuses
        assert len(sim.requests("/v1/uploads")) == 3 and sim.create_count() == 3 and sim.duplicate_creates() == []
        assert rig.daemon is not None and rig.daemon.watchers[0].wait_idle(10)
        assert sorted(p.name for p in rig.inbox.iterdir()) == [".runwatch"]
        work = rig.inbox / ".runwatch"
        assert not list(work.rglob(taken.MANIFEST))
        if cut == "before the rename":  # undone: b was claimed again whole, into a job dir of its own
            assert not (work / "jobs" / job_b.name).exists() and not (work / "done" / job_b.name).exists()
        record = taken.lookup(work, "still.jpg")
        assert record is not None and record.request in {"b", "c"}

    def test_a_taken_copy_is_never_sent_alone(self, tmp_path: Path, mode: str, start: Any) -> None:
        """After a restart, a picture still in an inbox that takes bare media, but taken already by a request
        (it has a second link and its record matches), is not sent alone: it leaves the inbox."""
        cfg = config(
            tmp_path,
            accept_media=True,
            endpoint="image_to_video",
            defaults={"model": "gen4_turbo", "ratio": "1280:720", "duration": 5},
        )
        sample(cfg, "still.jpg")
        job_dir = cfg.work / "jobs" / "20261207T000000Z-0000000a"
        job_dir.mkdir(parents=True)
        taken.link(cfg.path / "still.jpg", job_dir / "still.jpg")
        (job_dir / "a.json").write_text(json.dumps(IMAGE))
        st = os.lstat(cfg.path / "still.jpg")
        taken.remember(cfg.work, Record("still.jpg", "a", job_dir.name, "2026-12-07T00:00:00Z", taken.identity(st)))
        sink = Sink()
        watcher = start(cfg, sink, mode)
        sample(cfg, "still.jpg", "holiday.jpg")  # a picture dropped alone is still sent alone
        sink.wait(count(Claimed))
        assert watcher.wait_idle(5)
        assert [c.name for c in sink.claimed()] == ["holiday"] and not sink.refused()
        assert not (cfg.path / "still.jpg").exists() and (job_dir / "still.jpg").stat().st_nlink == 1


class TestSweep:
    """Taking a file out of the inbox never loses one."""

    def _taken_file(self, tmp_path: Path) -> tuple[Path, Path, Path, taken.Ident]:
        root, work = tmp_path / "inbox", tmp_path / "inbox" / ".runwatch"
        job = work / "jobs" / "J"
        job.mkdir(parents=True)
        shutil.copy(STILL, root / "still.jpg")
        taken.link(root / "still.jpg", job / "still.jpg")
        return root, work, job, taken.identity(os.lstat(root / "still.jpg"))

    def test_another_link_of_a_job_file_is_dropped(self, tmp_path: Path) -> None:
        """The inbox's name of a file a job dir holds goes; the job's file stays whole."""
        root, work, job, ident = self._taken_file(tmp_path)
        assert taken.sweep(root, work, "still.jpg", ident, "J") == "swept"
        assert not (root / "still.jpg").exists() and (job / "still.jpg").read_bytes() == STILL.read_bytes()
        assert [p.name for p in (work / "shared").iterdir()] == []

    def test_a_new_file_of_the_owner_stays(self, tmp_path: Path) -> None:
        """A file its owner put in the taken file's place (a new one) is not touched."""
        root, work, _, ident = self._taken_file(tmp_path)
        (root / "fresh.jpg").write_bytes(STILL.read_bytes()[::-1])
        os.rename(root / "fresh.jpg", root / "still.jpg")
        assert taken.sweep(root, work, "still.jpg", ident, "J") == "changed"
        assert (root / "still.jpg").read_bytes() == STILL.read_bytes()[::-1]

    def test_a_last_copy_is_kept(self, tmp_path: Path) -> None:
        """A taken file with no other link (the job holds a copy, or its record was pruned) is kept in
        WORK/shared/JOB_ID, never deleted."""
        root, work, job, ident = self._taken_file(tmp_path)
        (job / "still.jpg").unlink()
        assert taken.sweep(root, work, "still.jpg", ident, "J") == "kept"
        assert (work / "shared" / "J" / "still.jpg").read_bytes() == STILL.read_bytes()

    def test_an_undone_claim_never_loses_the_last_copy(self, tmp_path: Path) -> None:
        """A claim cut short before its request moved is undone at the next start; a link whose inbox file was
        removed meanwhile is the last copy, and goes back into the inbox instead of away."""
        root, work, job, _ = self._taken_file(tmp_path)
        taken.write_plan(job, "a.json", "a", "2026-12-07T00:00:00Z", [Plan("still.jpg", "still.jpg")])
        (root / "still.jpg").unlink()
        assert taken.settle(root, work, job) == ["still.jpg put back into the inbox", "claim undone"]
        assert (root / "still.jpg").read_bytes() == STILL.read_bytes() and not (job / taken.MANIFEST).exists()
