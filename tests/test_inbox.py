"""Inbox watching: readiness, events and rescans, claims by atomic rename, refusals, pauses, races.

Real folders and real watchdog observers (inotify and polling); timing only through waits with deadlines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs
from watchdog.events import FileSystemEvent, FileSystemEventHandler

from runwatch.config import InboxConfig
from runwatch.inbox import (
    _INOTIFY_EVENTS,
    Claimed,
    Control,
    History,
    InboxWatcher,
    Refused,
    is_network_fs,
    is_ready,
    observe,
    recover,
)
from runwatch.inbox import _InotifyObserver as InotifyObserver

from .conftest import png_of

SAMPLES = Path(__file__).resolve().parent.parent / "runwatch" / "data" / "samples"
TEXT = {"endpoint": "text_to_image", "model": "gen4_image", "promptText": "a lighthouse", "ratio": "1920:1080"}
IMAGE = {
    "endpoint": "image_to_video",
    "model": "gen4_turbo",
    "promptImage": "still.jpg",
    "ratio": "1280:720",
    "duration": 5,
    "promptText": "waves",
}
JOB_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")
MODES = ["inotify", "polling"]

Item = Claimed | Refused | Control


class Sink:
    """Collects what a watcher delivers (from its thread) and waits for it."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self._cond = threading.Condition()

    def __call__(self, item: Item) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait(self, pred: Callable[[list[Item]], bool], timeout: float = 10.0) -> list[Item]:
        with self._cond:
            assert self._cond.wait_for(lambda: pred(self.items), timeout), f"gave up waiting; got {self.items}"
            return list(self.items)

    def claimed(self) -> list[Claimed]:
        return [i for i in self.items if isinstance(i, Claimed)]

    def refused(self) -> list[Refused]:
        return [i for i in self.items if isinstance(i, Refused)]


def count(kind: type, n: int = 1) -> Callable[[list[Item]], bool]:
    return lambda items: sum(isinstance(i, kind) for i in items) >= n


def eventually(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def config(tmp_path: Path, **kw: Any) -> InboxConfig:
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    kw.setdefault("settle", 0.3)
    return InboxConfig(name="main", path=inbox, outbox=tmp_path / "outbox", work=inbox / ".runwatch", **kw)


def drop(cfg: InboxConfig, name: str, body: dict[str, Any] | str) -> Path:
    """Writes the file in a folder beside the inbox, then moves it in (``mv`` from another folder)."""
    stage = cfg.path.parent / "stage"
    stage.mkdir(exist_ok=True)
    (stage / name).write_text(body if isinstance(body, str) else json.dumps(body))
    os.rename(stage / name, cfg.path / name)
    return cfg.path / name


def sample(cfg: InboxConfig, name: str, as_: str | None = None) -> Path:
    """A sample media file, copied beside the inbox then moved in: ``shutil.copy`` alone would chmod after
    the close, by which time the watcher may rightly have taken the file."""
    target = cfg.path / (as_ or name)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = cfg.path.parent / "stage"
    stage.mkdir(exist_ok=True)
    shutil.copy(SAMPLES / name, stage / target.name)
    os.rename(stage / target.name, target)
    return target


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """Every behaviour with the inotify observer and with the polling one."""
    return str(request.param)


@pytest.fixture
def start() -> Iterator[Callable[..., InboxWatcher]]:
    """Starts watchers and stops them all at the end of the test."""
    started: list[InboxWatcher] = []

    def make(cfg: InboxConfig, sink: Callable[[Item], None], mode: str = "inotify", **kw: Any) -> InboxWatcher:
        watcher = InboxWatcher(cfg, deliver=sink, polling=mode == "polling", **kw)
        watcher.start()
        started.append(watcher)
        return watcher

    yield make
    for watcher in started:
        watcher.stop()


# -- the pure part --------------------------------------------------------------------------------------------


class TestReadiness:
    """The readiness rule, without threads or files."""

    @pytest.mark.parametrize(
        ("prev", "sig", "signal", "expected"),
        [
            (None, (10, 1), False, History(5.0, (10, 1), 5.0, False)),
            (None, (10, 1), True, History(5.0, (10, 1), 5.0, True)),
            (History(1.0, (10, 1), 2.0), (10, 1), False, History(1.0, (10, 1), 2.0)),
            (History(1.0, (10, 1), 2.0), (10, 1), True, History(1.0, (10, 1), 2.0, True)),
            (History(1.0, (10, 1), 2.0, True), (10, 1), False, History(1.0, (10, 1), 2.0, True)),
            (History(1.0, (10, 1), 2.0, True), (20, 1), False, History(1.0, (20, 1), 5.0, False)),
            (History(1.0, (10, 1), 2.0, True), (10, 9), False, History(1.0, (10, 9), 5.0, False)),
            (History(1.0, (10, 1), 2.0), (20, 2), True, History(1.0, (20, 2), 5.0, True)),
        ],
    )
    def test_observe(self, prev: History | None, sig: tuple[int, int], signal: bool, expected: History) -> None:
        """A change of size or mtime restarts the settle clock and clears an earlier signal; a signal sticks
        until the next change; the first look starts the history."""
        assert observe(prev, sig, 5.0, signal=signal) == expected

    @pytest.mark.parametrize(
        ("history", "now", "events", "expected"),
        [
            (History(0.0, (1, 1), 0.0), 0.1, True, False),  # just seen, no close yet
            (History(0.0, (1, 1), 0.0, True), 0.1, True, True),  # closed after writing / renamed in: at once
            (History(0.0, (1, 1), 0.0, True), 0.1, False, False),  # polling: signals are not trusted
            (History(0.0, (1, 1), 0.0), 2.0, False, True),  # unchanged for the settle time
            (History(0.0, (1, 1), 0.0), 2.0, True, True),  # found by a scan on a local disk: settle too
            (History(0.0, (1, 1), 1.5), 2.0, False, False),  # changed half a second ago
            (History(0.0, (1, 1), 1.5), 3.5, False, True),
        ],
    )
    def test_is_ready(self, history: History, now: float, events: bool, expected: bool) -> None:
        """Ready: a trusted signal after the last change, or size and mtime unchanged for ``settle`` seconds."""
        assert is_ready(history, now, settle=2.0, events=events) is expected

    def test_a_slow_writer_is_never_ready(self) -> None:
        """A file that grows every half second never settles while it grows, and does two seconds after."""
        history = None
        for step in range(10):
            now = step * 0.5
            history = observe(history, (step * 100, step), now)
            assert not is_ready(history, now, settle=2.0, events=False)
        assert history is not None
        assert not is_ready(history, 4.5 + 1.9, settle=2.0, events=False)
        assert is_ready(history, 4.5 + 2.0, settle=2.0, events=False)


class TestNetworkFs:
    """Which filesystems are polled."""

    MOUNTINFO = "\n".join(
        [
            r"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
            r"30 22 0:40 / /mnt/nas rw,relatime shared:5 - nfs4 nas:/export rw,vers=4.2",
            r"31 22 0:41 / /mnt/smb rw,relatime - cifs //srv/share rw",
            r"32 22 0:42 / /mnt/ssh rw,nosuid - fuse.sshfs me@host:/ rw",
            r"33 22 8:17 / /mnt/usb rw - fuseblk /dev/sdb1 rw",
            r"34 22 0:43 / /mnt/two\040words rw - nfs srv:/x rw",
            r"35 30 8:2 / /mnt/nas/local rw - xfs /dev/sdc1 rw",
            r"36 22 0:44 / /srv rw - ext4 /dev/sdd1 rw",
            r"37 22 0:45 / /srv rw - ceph 10.0.0.1:/ rw",
            r"38 22 0:46 / /mnt/p9 rw - 9p hostshare rw",
        ]
    )

    @pytest.mark.parametrize(
        ("path", "expected"),
        [
            ("/home/me/inbox", False),
            ("/mnt/nas", True),
            ("/mnt/nas/inbox/deeper", True),
            ("/mnt/nasty/inbox", False),  # a prefix of the name is not the mount
            ("/mnt/smb/inbox", True),
            ("/mnt/ssh/inbox", True),
            ("/mnt/usb/inbox", False),  # fuseblk is a local disk (ntfs-3g, exfat)
            ("/mnt/two words/inbox", True),  # mountinfo escapes the space
            ("/mnt/nas/local/inbox", False),  # the deepest mount decides
            ("/srv/inbox", True),  # stacked on the same point: the later mount is on top
            ("/mnt/p9/inbox", True),
        ],
    )
    def test_mountinfo(self, tmp_path: Path, path: str, expected: bool) -> None:
        """Network and FUSE filesystems are told apart from local ones by /proc/self/mountinfo."""
        mounts = tmp_path / "mountinfo"
        mounts.write_text(self.MOUNTINFO)
        assert is_network_fs(Path(path), mounts=mounts) is expected

    def test_proc_mounts_format(self, tmp_path: Path) -> None:
        """The older /proc/mounts format is read as well."""
        mounts = tmp_path / "mounts"
        mounts.write_text("/dev/sda1 / ext4 rw 0 0\n//srv/x /mnt/smb cifs rw 0 0\n")
        assert is_network_fs(Path("/mnt/smb/inbox"), mounts=mounts)
        assert not is_network_fs(Path("/home/inbox"), mounts=mounts)

    def test_this_machine(self, tmp_path: Path) -> None:
        """The real mount table can be read; a missing path is judged by the folder it would be in."""
        assert isinstance(is_network_fs(tmp_path), bool)
        assert is_network_fs(tmp_path / "not" / "yet") == is_network_fs(tmp_path)


# -- events, scans and claims ---------------------------------------------------------------------------------


class TestObserver:
    """What the inotify observer reports."""

    def test_renames_in_and_out(self, tmp_path: Path) -> None:
        """A rename in (from another folder or from a temporary name) is a move with no source; a rename out
        (what a claim does) is not reported at all, so watchdog never holds the queue waiting for its pair."""
        inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
        inbox.mkdir()
        elsewhere.mkdir()
        got: list[tuple[str, str, str]] = []

        class Record(FileSystemEventHandler):
            def dispatch(self, event: FileSystemEvent) -> None:
                if not event.is_directory:
                    got.append((event.event_type, os.fsdecode(event.src_path), os.fsdecode(event.dest_path)))

        observer = InotifyObserver()
        observer.schedule(Record(), str(inbox), event_filter=_INOTIFY_EVENTS)
        observer.start()
        try:
            (elsewhere / "a.json").write_text("{}")
            os.rename(elsewhere / "a.json", inbox / "a.json")
            (elsewhere / "b.json.tmp").write_bytes(b"")
            os.rename(elsewhere / "b.json.tmp", inbox / "b.json.tmp")
            os.rename(inbox / "b.json.tmp", inbox / "b.json")
            os.rename(inbox / "a.json", elsewhere / "a.json")
            with open(inbox / "c.json", "w") as fh:
                fh.write("{}")
            eventually(lambda: ("closed", str(inbox / "c.json"), "") in got)
        finally:
            observer.stop()
            observer.join()
        assert got == [
            ("moved", "", str(inbox / "a.json")),
            ("moved", "", str(inbox / "b.json.tmp")),
            ("moved", "", str(inbox / "b.json")),
            ("created", str(inbox / "c.json"), ""),
            ("closed", str(inbox / "c.json"), ""),
        ]


class TestClaims:
    """Requests are taken by rename into WORK/jobs/JOB_ID, with their media, once complete."""

    def test_renamed_in_from_another_folder(self, tmp_path: Path, mode: str, start: Any) -> None:
        """``mv`` of a finished request into the inbox: claimed with its media; the inbox is left empty (the
        media file once no other request can want it any more)."""
        cfg = config(tmp_path)
        sample(cfg, "still.jpg")
        sink = Sink()
        watcher = start(cfg, sink, mode)
        assert watcher.mode == mode
        drop(cfg, "clip.json", IMAGE)
        [claim] = sink.wait(count(Claimed))
        assert isinstance(claim, Claimed)
        assert JOB_ID.match(claim.job_id) and claim.inbox == "main" and claim.name == "clip"
        assert claim.job_dir == cfg.work / "jobs" / claim.job_id
        assert claim.request_file == claim.job_dir / "clip.json" and claim.format == "json" and not claim.bare
        assert (claim.job_dir / "still.jpg").read_bytes() == (SAMPLES / "still.jpg").read_bytes()
        assert watcher.wait_idle(5) and watcher.pending() == 0
        assert sorted(p.name for p in cfg.path.iterdir()) == [".runwatch"]
        assert (claim.job_dir / "still.jpg").stat().st_nlink == 1  # the inbox's name for it is gone

    def test_renamed_within_the_inbox(self, tmp_path: Path, mode: str, start: Any) -> None:
        """``x.json.tmp`` written in the inbox then renamed to ``x.json``: the temporary name is never taken."""
        cfg = config(tmp_path)
        sink = Sink()
        start(cfg, sink, mode)
        tmp = cfg.path / "x.json.tmp"
        tmp.write_text(json.dumps(TEXT))
        time.sleep(0.5)  # long enough for a mistake (settle is 0.3 s)
        assert sink.items == []
        os.rename(tmp, cfg.path / "x.json")
        [claim] = sink.wait(count(Claimed))
        assert isinstance(claim, Claimed) and claim.request_file.name == "x.json"

    def test_written_in_place(self, tmp_path: Path, mode: str, start: Any) -> None:
        """Opened, written and closed in the inbox itself: claimed."""
        cfg = config(tmp_path)
        sink = Sink()
        start(cfg, sink, mode)
        with open(cfg.path / "here.toml", "w") as fh:
            fh.write('endpoint = "text_to_image"\nmodel = "gen4_image"\npromptText = "a"\nratio = "1920:1080"\n')
        [claim] = sink.wait(count(Claimed))
        assert isinstance(claim, Claimed) and claim.format == "toml" and claim.name == "here"

    def test_present_at_start(self, tmp_path: Path, mode: str, start: Any) -> None:
        """Files dropped while runwatch was down are found by the first scan."""
        cfg = config(tmp_path)
        sample(cfg, "still.jpg")
        drop(cfg, "a.json", TEXT)
        drop(cfg, "b.json", IMAGE)
        sink = Sink()
        watcher = start(cfg, sink, mode)
        sink.wait(count(Claimed, 2))
        assert sorted(c.name for c in sink.claimed()) == ["a", "b"]
        assert watcher.wait_idle(5)

    def test_half_written_then_completed(self, tmp_path: Path, mode: str, start: Any) -> None:
        """A JSON file closed half-way and finished soon after is claimed, not rejected."""
        cfg = config(tmp_path, settle=2.0)
        sink = Sink()
        start(cfg, sink, mode)
        text = json.dumps(TEXT)
        path = cfg.path / "half.json"
        with open(path, "w") as fh:
            fh.write(text[:20])
        time.sleep(0.2)
        with open(path, "a") as fh:
            fh.write(text[20:])
        [claim] = sink.wait(count(Claimed))
        assert isinstance(claim, Claimed) and claim.request_file.read_text() == text

    def test_slow_writer_under_polling(self, tmp_path: Path, start: Any) -> None:
        """A request appended to every 0.3 s on a polled share is taken only once complete and settled."""
        cfg = config(tmp_path, settle=1.0)
        sink = Sink()
        done = threading.Event()
        seen_done: list[bool] = []

        def deliver(item: Item) -> None:
            seen_done.append(done.is_set())
            sink(item)

        start(cfg, deliver, "polling")
        text = json.dumps({**TEXT, "promptText": "a lighthouse " * 20})
        chunks = [text[i : i + 40] for i in range(0, len(text), 40)][:8]
        chunks[-1] += text[40 * 8 :]

        def writer() -> None:
            for chunk in chunks:
                with open(cfg.path / "slow.json", "a") as fh:
                    fh.write(chunk)
                time.sleep(0.3)
            done.set()

        thread = threading.Thread(target=writer)
        thread.start()
        [claim] = sink.wait(count(Claimed), timeout=15)
        thread.join()
        assert seen_done == [True]
        assert isinstance(claim, Claimed) and claim.request_file.read_text() == text

    def test_media_arriving_later(self, tmp_path: Path, mode: str, start: Any) -> None:
        """A request that names a picture not there yet waits for it, then goes with it once it is complete."""
        cfg = config(tmp_path, settle=2.0)
        sink = Sink()
        start(cfg, sink, mode)
        drop(cfg, "later.json", IMAGE)
        time.sleep(0.3)
        shutil.copy(SAMPLES / "still.jpg", tmp_path / "still.jpg")
        os.rename(tmp_path / "still.jpg", cfg.path / "still.jpg")
        [claim] = sink.wait(count(Claimed))
        assert isinstance(claim, Claimed) and (claim.job_dir / "still.jpg").is_file()

    def test_media_in_a_subfolder(self, tmp_path: Path, mode: str, start: Any) -> None:
        """Media may sit in subfolders: they move to the same relative path in the job dir."""
        cfg = config(tmp_path)
        sink = Sink()
        watcher = start(cfg, sink, mode)
        sample(cfg, "still.jpg", "shots/day 1/still.jpg")
        drop(cfg, "sub.json", {**IMAGE, "promptImage": "shots/day 1/still.jpg"})
        [claim] = sink.wait(count(Claimed))
        assert isinstance(claim, Claimed) and (claim.job_dir / "shots" / "day 1" / "still.jpg").is_file()
        assert watcher.wait_idle(5)
        assert not (cfg.path / "shots" / "day 1" / "still.jpg").exists()

    def test_ignored_names(self, tmp_path: Path, mode: str, start: Any) -> None:
        """Dotfiles, ``~`` files and partial downloads are never taken; the work area is never scanned."""
        cfg = config(tmp_path)
        names = [
            ".x.json",
            "~x.json",
            "x.json.tmp",
            "x.json.part",
            "x.json.partial",
            "x.json.crdownload",
            "x.json.download",
            "notes.txt",
        ]
        for name in names:
            (cfg.path / name).write_text(json.dumps(TEXT))
        (cfg.work / "jobs").mkdir(parents=True)
        (cfg.work / "stray.json").write_text(json.dumps(TEXT))
        sink = Sink()
        watcher = start(cfg, sink, mode)
        drop(cfg, "real.json", TEXT)
        sink.wait(count(Claimed))
        assert watcher.wait_idle(5) and watcher.pending() == 0
        assert [c.name for c in sink.claimed()] == ["real"] and not sink.refused()
        assert all((cfg.path / name).exists() for name in names) and (cfg.work / "stray.json").exists()

    def test_lost_event_found_by_rescan(self, tmp_path: Path, start: Any) -> None:
        """With the observer dead (as if its events were lost), the periodic rescan still finds requests."""
        cfg = config(tmp_path)
        sink = Sink()
        watcher = start(cfg, sink, "inotify", rescan=0.5)
        assert watcher.wait_idle(5)
        observer = watcher._observer  # the one way to lose events on purpose
        assert observer is not None
        observer.stop()
        observer.join()
        drop(cfg, "missed.json", TEXT)
        [claim] = sink.wait(count(Claimed))
        assert isinstance(claim, Claimed) and claim.name == "missed"

    def test_wait_idle_while_settling(self, tmp_path: Path, start: Any) -> None:
        """A request still settling is pending; once taken, the watcher is idle."""
        cfg = config(tmp_path, settle=1.0)
        drop(cfg, "wait.json", TEXT)
        sink = Sink()
        watcher = start(cfg, sink, "polling")
        assert not watcher.wait_idle(0.2)
        assert watcher.pending() == 1
        assert watcher.wait_idle(10)
        assert [c.name for c in sink.claimed()] == ["wait"]


class TestRefusals:
    """What cannot be used goes to WORK/failed/JOB_ID, whole, with every problem."""

    def test_malformed_request(self, tmp_path: Path, mode: str, start: Any) -> None:
        """A request that stays broken past the settle time is refused and kept in the failed records."""
        cfg = config(tmp_path)
        sink = Sink()
        start(cfg, sink, mode)
        drop(cfg, "bad.json", '{"endpoint": "text_to_image", "model": ')
        drop(cfg, "wrong.json", {**TEXT, "ratio": "1:1"})
        sink.wait(count(Refused, 2))
        assert not sink.claimed()
        for ref in sink.refused():
            assert JOB_ID.match(ref.job_id) and ref.job_dir == cfg.work / "failed" / ref.job_id
            assert ref.request_file == ref.job_dir / f"{ref.name}.json" and ref.request_file.is_file()
            assert ref.problems and ref.format == "json"
        assert sorted(p.name for p in cfg.path.iterdir()) == [".runwatch"]
        assert list((cfg.work / "jobs").iterdir()) == []

    def test_media_taken_later_is_refused_with_who_took_it(self, tmp_path: Path, mode: str, start: Any) -> None:
        """A request dropped after the picture it names was taken (and has left the inbox) is refused with a
        problem that names the file, the request that took it and when, and what to do."""
        cfg = config(tmp_path)
        sample(cfg, "still.jpg")
        sink = Sink()
        watcher = start(cfg, sink, mode)
        before = datetime.now(UTC).replace(microsecond=0)
        drop(cfg, "one.json", IMAGE)
        sink.wait(count(Claimed))
        after = datetime.now(UTC)
        assert watcher.wait_idle(5) and not (cfg.path / "still.jpg").exists()
        drop(cfg, "two.json", IMAGE)
        sink.wait(count(Refused))
        [ref] = sink.refused()
        assert ref.name == "two" and [c.name for c in sink.claimed()] == ["one"]
        [problem] = ref.problems
        stamp = re.search(r"took it at (\S+);", problem.message)
        assert problem.path == "promptImage" and stamp is not None, problem
        assert problem.message.startswith('"still.jpg" is not in the inbox: request "one" took it at ')
        assert problem.message.endswith("drop it again together with this request, or give each request its own copy")
        assert before <= datetime.strptime(stamp.group(1), "%Y-%m-%dT%H:%M:%S%z") <= after

    def test_refusal_names_the_endpoint_and_model(self, tmp_path: Path, start: Any) -> None:
        """A refused request carries the endpoint and model it named, for its status file: both when it was
        read (a picture too small for Runway's uploads), the model alone when the endpoint is not one runwatch
        knows, neither when the file cannot be parsed. (Two requests naming one still are both claimed.)"""
        cfg = config(tmp_path)
        stage = tmp_path / "stage"
        stage.mkdir()
        (stage / "tiny.png").write_bytes(png_of(230))
        os.rename(stage / "tiny.png", cfg.path / "tiny.png")
        sample(cfg, "still.jpg")
        drop(cfg, "tiny.json", {**IMAGE, "promptImage": "tiny.png"})
        drop(cfg, "typo.json", {**IMAGE, "endpoint": "imagetovideo"})
        drop(cfg, "broken.json", '{"endpoint": "image_to_video", "model": ')
        drop(cfg, "one.json", IMAGE)
        drop(cfg, "two.json", IMAGE)
        sink = Sink()
        start(cfg, sink)
        sink.wait(count(Refused, 3))
        sink.wait(count(Claimed, 2))
        named = {r.name: (r.endpoint, r.model) for r in sink.refused()}
        assert named == {
            "tiny": ("image_to_video", "gen4_turbo"),
            "typo": (None, "gen4_turbo"),
            "broken": (None, None),
        }
        assert "512 bytes to 200 MiB" in next(r for r in sink.refused() if r.name == "tiny").problems[0].message

    def test_fifo_is_never_opened(self, tmp_path: Path, start: Any) -> None:
        """A FIFO named like a request, or named as media, is refused without being opened (nothing hangs)."""
        cfg = config(tmp_path)
        os.mkfifo(cfg.path / "pipe.json")
        os.mkfifo(cfg.path / "pipe.jpg")
        drop(cfg, "named.json", {**IMAGE, "promptImage": "pipe.jpg"})
        sink = Sink()
        start(cfg, sink)
        sink.wait(count(Refused, 2))
        assert sorted(r.name for r in sink.refused()) == ["named", "pipe"]


class TestSymlinks:
    """Links are followed only inside the inbox."""

    def test_link_inside_the_inbox(self, tmp_path: Path, start: Any) -> None:
        """The target moves to the link's place in the job dir; the link itself is kept under .links/."""
        cfg = config(tmp_path)
        sample(cfg, "still.jpg", "library/real.jpg")
        os.symlink("library/real.jpg", cfg.path / "link.jpg")
        drop(cfg, "linked.json", {**IMAGE, "promptImage": "link.jpg"})
        sink = Sink()
        watcher = start(cfg, sink)
        [claim] = sink.wait(count(Claimed))
        assert isinstance(claim, Claimed)
        moved = claim.job_dir / "link.jpg"
        assert not moved.is_symlink() and moved.read_bytes() == (SAMPLES / "still.jpg").read_bytes()
        assert (claim.job_dir / ".links" / "link.jpg").is_symlink()
        assert watcher.wait_idle(5)
        assert not os.path.lexists(cfg.path / "link.jpg") and not (cfg.path / "library" / "real.jpg").exists()

    def test_link_outside_the_inbox(self, tmp_path: Path, start: Any) -> None:
        """A link that leads out of the inbox is refused; what it points to is left alone."""
        cfg = config(tmp_path)
        outside = tmp_path / "elsewhere" / "secret.jpg"
        outside.parent.mkdir()
        shutil.copy(SAMPLES / "still.jpg", outside)
        os.symlink(outside, cfg.path / "out.jpg")
        drop(cfg, "escape.json", {**IMAGE, "promptImage": "out.jpg"})
        sink = Sink()
        start(cfg, sink)
        [ref] = sink.wait(count(Refused))
        assert isinstance(ref, Refused) and any("outside" in p.message for p in ref.problems)
        assert outside.read_bytes() == (SAMPLES / "still.jpg").read_bytes()
        assert os.path.islink(cfg.path / "out.jpg")

    def test_linked_request(self, tmp_path: Path, start: Any) -> None:
        """A request file that is itself a link is refused with that reason; the file it points to stays."""
        cfg = config(tmp_path)
        target = cfg.path / "drafts" / "req.json"
        target.parent.mkdir()
        target.write_text(json.dumps(TEXT))
        os.symlink("drafts/req.json", cfg.path / "req.json")
        sink = Sink()
        start(cfg, sink)
        [ref] = sink.wait(count(Refused))
        assert isinstance(ref, Refused) and "symbolic link" in ref.problems[0].message
        assert ref.request_file.is_symlink() and target.read_text() == json.dumps(TEXT)


class TestControlAndBareMedia:
    """NAME.cancel / NAME.approve, and pictures dropped alone."""

    def test_control_files(self, tmp_path: Path, mode: str, start: Any) -> None:
        """Control files are moved to WORK/control (never over an earlier one) and delivered."""
        cfg = config(tmp_path)
        sink = Sink()
        start(cfg, sink, mode)
        (cfg.path / "long.cancel").write_text("whatever")
        drop(cfg, "big.approve", "")
        sink.wait(lambda items: len(items) == 2)
        assert sorted((c.kind, c.name) for c in sink.items if isinstance(c, Control)) == [
            ("approve", "big"),
            ("cancel", "long"),
        ]
        drop(cfg, "long.cancel", "again")
        sink.wait(lambda items: len(items) == 3)
        kept = sorted(p.read_text() for p in (cfg.work / "control").iterdir())
        assert kept == ["", "again", "whatever"]

    def test_bare_media(self, tmp_path: Path, mode: str, start: Any) -> None:
        """With accept_media a picture alone becomes a request; one named by a request goes with that one."""
        cfg = config(
            tmp_path,
            accept_media=True,
            endpoint="image_to_video",
            defaults={"model": "gen4_turbo", "ratio": "1280:720", "duration": 5},
        )
        sample(cfg, "still.jpg", "photo.jpg")
        drop(cfg, "story.json", {**IMAGE, "promptImage": "photo.jpg"})
        sink = Sink()
        watcher = start(cfg, sink, mode)
        sink.wait(count(Claimed))
        sample(cfg, "still.jpg", "holiday.jpg")
        sink.wait(count(Claimed, 2))
        holiday, story = sorted(sink.claimed(), key=lambda c: c.name)
        assert story.name == "story" and not story.bare and (story.job_dir / "photo.jpg").is_file()
        assert holiday.name == "holiday" and holiday.bare and holiday.format == "json"
        assert holiday.request_file == holiday.job_dir / "holiday.jpg"
        assert watcher.wait_idle(5) and not sink.refused()

    def test_media_of_a_refused_request_are_not_sent_alone(self, tmp_path: Path, start: Any) -> None:
        """A picture meant for a request that was refused stays in the inbox instead of being sent bare."""
        cfg = config(
            tmp_path,
            accept_media=True,
            endpoint="image_to_video",
            defaults={"model": "gen4_turbo", "ratio": "1280:720", "duration": 5},
        )
        sample(cfg, "still.jpg", "photo.jpg")
        drop(cfg, "typo.json", {**IMAGE, "promptImage": "photo.jpg", "ratio": "nope"})
        sink = Sink()
        watcher = start(cfg, sink)
        sink.wait(count(Refused))
        assert watcher.wait_idle(5)
        assert not sink.claimed() and (cfg.path / "photo.jpg").is_file()


class TestTogether:
    """Pauses, races and restarts."""

    def test_inbox_vanishes_and_comes_back(self, tmp_path: Path, mode: str) -> None:
        """An unmounted inbox pauses (said loudly, once) and resumes; nothing is lost, refused or taken twice."""
        cfg = config(tmp_path)
        offline = tmp_path / "offline"
        sink = Sink()
        with capture_logs() as logs:
            watcher = InboxWatcher(cfg, deliver=sink, polling=mode == "polling", rescan=0.5, log=structlog.get_logger())
            watcher.start()
            try:
                drop(cfg, "first.json", TEXT)
                [first] = sink.wait(count(Claimed))
                os.rename(cfg.path, offline)
                eventually(lambda: watcher.paused)
                (offline / "second.json").write_text(json.dumps(TEXT))
                time.sleep(1.0)
                assert len(sink.items) == 1 and watcher.paused
                os.rename(offline, cfg.path)
                [_, second] = sink.wait(count(Claimed, 2))
                assert not watcher.paused and isinstance(first, Claimed) and isinstance(second, Claimed)
                assert second.name == "second" and first.job_dir.is_dir() and not sink.refused()
            finally:
                watcher.stop()
        paused = [e for e in logs if e["event"] == "inbox.paused"]
        assert len(paused) == 1 and paused[0]["log_level"] == "error" and paused[0]["path"] == str(cfg.path)
        assert [e["event"] for e in logs if e["event"] in ("inbox.paused", "inbox.resumed")] == [
            "inbox.paused",
            "inbox.resumed",
        ]
        assert {e["event"] for e in logs} >= {"inbox.watching", "inbox.claimed"}

    def test_missing_at_start(self, tmp_path: Path, start: Any) -> None:
        """An inbox missing at start is paused, not created (it may be an unmounted share), until it appears."""
        cfg = config(tmp_path)
        cfg.path.rmdir()
        sink = Sink()
        watcher = start(cfg, sink, rescan=0.5)
        assert watcher.paused and not cfg.path.exists()
        cfg.path.mkdir()
        drop(cfg, "late.json", TEXT)
        sink.wait(count(Claimed))
        assert not watcher.paused

    def test_two_watchers_race(self, tmp_path: Path, mode: str, start: Any) -> None:
        """Two runwatch processes on one inbox: each of 200 requests is claimed exactly once, never refused."""
        cfg = config(tmp_path)
        for i in range(100):
            (cfg.path / f"r{i:03}.json").write_text(json.dumps(TEXT))
        sinks = [Sink(), Sink()]
        watchers = [start(cfg, sink, mode) for sink in sinks]
        for i in range(100, 200):
            (cfg.path / f"r{i:03}.json").write_text(json.dumps(TEXT))

        def total() -> int:
            return sum(len(s.items) for s in sinks)

        eventually(lambda: total() >= 200, timeout=30)
        assert all(w.wait_idle(10) for w in watchers)
        claims = [c for s in sinks for c in s.claimed()]
        assert sorted(c.name for c in claims) == [f"r{i:03}" for i in range(200)]
        assert total() == 200 and not any(s.refused() for s in sinks)
        assert len(list((cfg.work / "jobs").iterdir())) == 200  # the loser of a race leaves no empty dir

    def test_recover(self, tmp_path: Path) -> None:
        """recover() lists claimed job dirs, oldest first, and removes empty half-made ones."""
        cfg = config(tmp_path)
        assert recover(cfg) == []
        jobs = cfg.work / "jobs"
        for job_id, files in [
            ("20250102T000000Z-00000002", ["b.json"]),
            ("20250101T000000Z-00000001", ["a.json"]),
            ("20250103T000000Z-00000003", []),
        ]:
            (jobs / job_id).mkdir(parents=True)
            for name in files:
                (jobs / job_id / name).write_text("{}")
        assert recover(cfg) == [jobs / "20250101T000000Z-00000001", jobs / "20250102T000000Z-00000002"]
        assert not (jobs / "20250103T000000Z-00000003").exists()
