"""Watching inboxes: events, readiness, rescans, and the claim by atomic rename.

Three parts, after watchfiles:

* ``_Handler``, a thin watchdog handler: it only puts paths on a queue (watchdog calls it on its own thread);
* :func:`observe` and :func:`is_ready`, the pure readiness rule over what has been seen of one file;
* the worker thread of :class:`InboxWatcher`: it drains the queue, rescans the inbox at start, every ``rescan``
  seconds and when the folder comes back, and takes what is ready. Events only bring a look forward; the
  rescans are the source of truth, so a lost event costs latency, never a request.

A claim is ``mkdir WORK/jobs/JOB_ID`` then ``os.rename`` of the request into it. When two watchers (two runwatch
processes) race for one file the rename decides, and the loser drops it without a word. The media a request
names follow it to their inbox-relative paths; a request that cannot be used goes whole to
``WORK/failed/JOB_ID``. Nothing here deletes or overwrites a user's file, runs a shell, opens anything before
``lstat`` says what it is, or follows a path out of the inbox.

Only top-level files are candidates. With inotify, the root and its visible subfolders get one non-recursive
watch each: a recursive one would also watch the work area, whose records grow for months.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import re
import secrets
import stat
import threading
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
    FileSystemMovedEvent,
)
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.inotify import InotifyFullEmitter
from watchdog.observers.inotify_c import InotifyConstants, InotifyFD, Mask
from watchdog.observers.polling import PollingObserver

from runwatch.catalog import format_path
from runwatch.errors import InboxError, Problem, RequestError
from runwatch.request import Request, bare_media_request, classify, is_ignored, load_request, request_name

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from runwatch.catalog import Catalog
    from runwatch.config import InboxConfig

__all__ = [
    "Claimed",
    "Control",
    "History",
    "InboxWatcher",
    "Refused",
    "is_network_fs",
    "is_ready",
    "observe",
    "recover",
]

Sig = tuple[int, int]  # (size, mtime_ns): what "unchanged" means
Mode = Literal["inotify", "polling"]
Format = Literal["json", "toml"]

_POLL_INTERVAL = 1.0  # the polling observer's period: it brings looks forward, the settle clock is ours
_PAUSED_CHECK = 2.0  # at most this long between looks for a vanished inbox
_RETRY = 2.0  # after a claim failed for a reason other than losing a race
_BATCH = 10_000  # events taken at once before timers are looked at again
_MAX_DIR_WATCHES = 1_000  # subfolders beyond this are judged by settle time alone
_MAX_DEPTH = 32
_NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "afs", "davfs", "fuse",
    "lustre", "gpfs", "beegfs", "ocfs2", "gfs2", "vboxsf", "virtiofs",
})
_LINKED = Problem("", "is a symbolic link; put the file itself in the inbox (media it names may be links)")
_INOTIFY_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileMovedEvent, FileClosedEvent, FileDeletedEvent,
    DirCreatedEvent, DirMovedEvent, DirDeletedEvent,
]


class _Emitter(InotifyFullEmitter):
    """inotify for an inbox: creations, renames in, closes after writing, deletions; nothing else.

    No IN_MOVED_FROM: watchdog holds each one half a second hoping to pair it with an IN_MOVED_TO, and every
    event behind it waits too, so each claim (a rename out to the unwatched work area) would stall the next
    request. Without it, any rename into the folder (from elsewhere or from ``x.json.tmp``) arrives as a
    move with no source. Opens and modifications are left out too: our own reads and every write() of a
    big copy would flood the queue, and the close, a rename or the next rescan tells what matters.
    """

    def get_event_mask_from_filter(self) -> Mask:
        c = InotifyConstants
        return Mask(c.IN_CREATE | c.IN_MOVED_TO | c.IN_CLOSE_WRITE | c.IN_DELETE | c.IN_DELETE_SELF)


class _InotifyObserver(BaseObserver):
    """An inotify observer using :class:`_Emitter`, with an inotify instance of its own."""

    def __init__(self) -> None:
        self._fd = InotifyFD()
        self._fd.start()
        super().__init__(_Emitter, inotify_fd=self._fd)

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self._fd.stop()
        self._fd.join()



class _QuietStop(logging.Filter):
    """watchdog 7 logs an error whenever an inotify emitter is stopped while it waits: noise, not a fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_QuietStop())


# -- what the watcher delivers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A request taken into the work area: ``request_file`` is inside ``job_dir`` (WORK/jobs/JOB_ID)."""

    job_id: str
    inbox: str
    job_dir: Path
    request_file: Path
    name: str
    format: Format
    bare: bool


@dataclass(frozen=True)
class Refused:
    """A request that cannot be used, already moved to WORK/failed/JOB_ID with whatever came with it."""

    job_id: str
    inbox: str
    job_dir: Path
    request_file: Path
    name: str
    format: Format
    problems: tuple[Problem, ...]


@dataclass(frozen=True)
class Control:
    """``NAME.cancel`` or ``NAME.approve`` dropped into the inbox (moved to WORK/control; content ignored)."""

    inbox: str
    kind: Literal["cancel", "approve"]
    name: str


# -- readiness, as pure functions -------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    """What has been seen of one file: when first, its last (size, mtime_ns), when that last changed, and
    whether a close-after-write or a rename-in arrived after that change."""

    first_seen: float
    sig: Sig
    changed: float
    signalled: bool = False


def observe(prev: History | None, sig: Sig, now: float, *, signal: bool = False) -> History:
    """The history after one more look at a file (``signal``: a close-after-write or rename-in came)."""
    if prev is None:
        return History(now, sig, now, signal)
    if sig != prev.sig:
        # A stat taken after the close shows the closed content, so a signal with a change still counts.
        return History(prev.first_seen, sig, now, signal)
    return replace(prev, signalled=True) if signal and not prev.signalled else prev


def is_ready(history: History, now: float, *, settle: float, events: bool) -> bool:
    """Complete: signalled (when events can be trusted: local inotify), or unchanged for ``settle`` seconds."""
    return (events and history.signalled) or now - history.changed >= settle


# -- the watcher ------------------------------------------------------------------------------------------


class _Handler(FileSystemEventHandler):
    """Only puts (path, signal) on the worker's queue: watchdog calls it on its own thread."""

    def __init__(self, put: Callable[[tuple[str, bool] | None], None]) -> None:
        self._put = put

    def dispatch(self, event: FileSystemEvent) -> None:
        if isinstance(event, DirModifiedEvent) or event.event_type in ("opened", "closed_no_write"):
            return
        src = os.fsdecode(event.src_path)
        if isinstance(event, FileSystemMovedEvent):
            if src:
                self._put((src, False))
            if event.dest_path:  # a rename into place: the producer is done with it
                self._put((os.fsdecode(event.dest_path), True))
        elif src:
            self._put((src, isinstance(event, FileClosedEvent)))


@dataclass(slots=True)
class _Cand:
    kind: Literal["request", "control", "media"]
    due: float
    names: frozenset[Path] | None = None  # the files a request names, once it has loaded
    missing: bool = False  # it names files not there yet: any new file may be one


class InboxWatcher:
    """Watches one inbox and delivers :class:`Claimed`, :class:`Refused` and :class:`Control` items.

    ``deliver`` is called on the watcher's own thread. ``polling``: None decides from the config flag and the
    filesystem type (network shares are polled). ``clock`` is for readiness arithmetic only.
    """

    def __init__(
        self,
        inbox: InboxConfig,
        *,
        deliver: Callable[[Claimed | Refused | Control], None],
        catalog: Catalog | None = None,
        unknown_models: str = "pass",
        rescan: float = 30.0,
        polling: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        log: FilteringBoundLogger | None = None,
    ) -> None:
        self.inbox = inbox
        self._deliver = deliver
        self._catalog = catalog
        self._unknown = unknown_models
        self._every = rescan
        self._polling = polling
        self._clock = clock
        self._log: FilteringBoundLogger = (log or structlog.get_logger()).bind(inbox=inbox.name)
        self._root = Path(os.path.abspath(inbox.path))
        self._work = Path(os.path.abspath(inbox.work))
        self._queue: queue.SimpleQueue[tuple[str, bool] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._scans = 0
        self._pending = 0
        self._scan_wanted = True
        self._paused = False
        self._mode: Mode = self._decide_mode()
        self._handler = _Handler(self._queue.put)
        self._observer: BaseObserver | None = None
        self._root_id: tuple[int, int] | None = None
        self._dirs: dict[Path, tuple[ObservedWatch, tuple[int, int]]] = {}
        self._dirs_warned = False
        self._hist: dict[Path, History] = {}
        self._cands: dict[Path, _Cand] = {}
        self._held: dict[Path, Sig] = {}  # media a refused request named: never sent alone while unchanged
        self._trouble: str | None = None  # the last work-area problem logged, so it is logged once
        self._thread: threading.Thread | None = None

    # -- public surface ----------------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def paused(self) -> bool:
        """The inbox folder is missing (an unmounted share): nothing is taken, forgotten or refused."""
        return self._paused

    def start(self) -> None:
        """Starts the observer (if the folder exists) and the worker; the first full scan runs at once."""
        if self._thread is not None:
            raise InboxError(f"{self._root}: the watcher was already started")
        if self._root.is_dir():
            self._prepare()
            self._start_observer()
        else:
            self._pause()
        self._thread = threading.Thread(target=self._run, name=f"runwatch-inbox-{self.inbox.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        self._stop_observer()

    def scan(self) -> None:
        """Asks for a full rescan now (thread-safe)."""
        self._scan_wanted = True
        self._queue.put(None)

    def pending(self) -> int:
        """Candidates seen but not yet taken or refused."""
        with self._cond:
            return self._pending

    def wait_idle(self, timeout: float) -> bool:
        """Blocks until a full scan has happened and nothing is pending; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._scans > 0 and self._pending == 0, timeout)

    # -- the worker loop ---------------------------------------------------------------------------------

    def _run(self) -> None:
        next_scan = self._clock()
        while not self._stop.is_set():
            wake = min([next_scan, *(c.due for c in self._cands.values())])
            events = self._drain(max(0.0, wake - self._clock()))
            if self._stop.is_set():
                break
            scanned = False
            try:
                if str(self._root) in events:  # the folder itself was deleted or moved
                    del events[str(self._root)]
                    self._scan_wanted = True
                if self._scan_wanted or self._clock() >= next_scan:
                    self._scan_wanted = False
                    scanned = self._rescan()
                    every = min(self._every, _PAUSED_CHECK) if self._paused else self._every
                    next_scan = self._clock() + every
                if not self._paused:
                    for path, signal in events.items():
                        self._look(Path(path), signal)
                    self._process()
            except Exception as exc:  # noqa: BLE001 - one odd file or a flaky share must not end the watching
                self._log.exception("inbox.error", error=str(exc))
                self._stop.wait(_RETRY)
            with self._cond:  # media parked at due=inf wait on a request, which is what counts
                self._pending = sum(1 for c in self._cands.values() if c.due < math.inf)
                self._scans += scanned
                self._cond.notify_all()

    def _drain(self, timeout: float) -> dict[str, bool]:
        """Paths from the queue, each once, with signals OR-ed; waits up to ``timeout`` for the first."""
        out: dict[str, bool] = {}
        try:
            item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            while True:
                if item is not None:
                    out[item[0]] = out.get(item[0], False) or item[1]
                if len(out) >= _BATCH:
                    break
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        return out

    # -- folder, observer, pause -------------------------------------------------------------------------

    def _decide_mode(self) -> Mode:
        if self._polling is not None:
            return "polling" if self._polling else "inotify"
        return "polling" if self.inbox.polling or is_network_fs(self._root) else "inotify"

    def _prepare(self) -> None:
        """The work area, on the inbox's filesystem so that claims are atomic renames."""
        work = self._work
        try:
            for sub in ("jobs", "failed", "control"):
                (work / sub).mkdir(parents=True, exist_ok=True)
            same = os.stat(work).st_dev == os.stat(self._root).st_dev
        except OSError as exc:
            raise InboxError(f"{work}: the work area cannot be made: {exc.strerror}") from exc
        if not same:
            raise InboxError(f"{work}: the work area must be on the same filesystem as the inbox {self._root}")

    def _new_observer(self) -> BaseObserver:
        return PollingObserver(timeout=_POLL_INTERVAL) if self._mode == "polling" else _InotifyObserver()

    def _schedule(self, observer: BaseObserver, folder: Path) -> ObservedWatch:
        events = _INOTIFY_EVENTS if self._mode == "inotify" else None
        return observer.schedule(self._handler, str(folder), recursive=False, event_filter=events)

    def _start_observer(self) -> None:
        for _ in range(2):
            observer: BaseObserver | None = None
            try:
                observer = self._new_observer()
                self._schedule(observer, self._root)
                observer.daemon = True
                observer.start()
            except OSError as exc:
                if observer is not None:
                    with contextlib.suppress(Exception):
                        observer.stop()
                if self._mode == "polling":
                    raise InboxError(f"{self._root}: cannot be watched: {exc}") from exc
                # Out of inotify instances or watches: polling still works, only slower.
                self._log.warning("inbox.inotify_unavailable", error=str(exc))
                self._mode = "polling"
                continue
            self._observer = observer
            st = os.stat(self._root)
            self._root_id = (st.st_dev, st.st_ino)
            self._log.info("inbox.watching", mode=self._mode, path=str(self._root))
            return

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        self._dirs.clear()
        if observer is not None:
            with contextlib.suppress(Exception):
                observer.stop()
                observer.join(2.0)

    def _pause(self) -> None:
        self._paused = True
        self._stop_observer()
        self._log.error("inbox.paused", path=str(self._root),
                        reason="the inbox folder is missing (an unmounted share?); waiting for it to come back")

    def _root_ok(self) -> bool:
        """Is the folder there? Pauses, resumes or re-watches (a folder replaced under us) as needed."""
        try:
            st = os.stat(self._root)
        except OSError:
            st = None
        if st is None or not stat.S_ISDIR(st.st_mode):
            if not self._paused:
                self._pause()
            return False
        try:
            self._prepare()
            if self._paused:
                if self._polling is None:
                    self._mode = self._decide_mode()
                self._start_observer()
                self._paused = False
                self._log.info("inbox.resumed", path=str(self._root))
            elif (st.st_dev, st.st_ino) != self._root_id:
                self._stop_observer()
                self._start_observer()
        except InboxError as exc:
            if str(exc) != self._trouble:
                self._trouble = str(exc)
                self._log.error("inbox.unusable", path=str(self._root), error=str(exc))
            if not self._paused:
                self._paused = True
                self._stop_observer()
            return False
        self._trouble = None
        return True

    def _root_gone(self) -> bool:
        """Is the folder missing? Then nothing is forgotten and a rescan (that pauses) is asked for."""
        if self._root.is_dir():
            return False
        self._scan_wanted = True
        return True

    # -- looking at files --------------------------------------------------------------------------------

    def _rescan(self) -> bool:
        """The source of truth: every top-level file, every watched subfolder. False when paused."""
        if not self._root_ok():
            return False
        now = self._clock()
        dirs: dict[Path, tuple[int, int]] = {}
        files: dict[Path, os.stat_result] = {}
        try:  # unlike a subfolder's, a failure here must not read as "everything is gone"
            with os.scandir(self._root) as entries:
                top = list(entries)
        except OSError as exc:
            if not self._root_gone():
                self._log.warning("inbox.scan_failed", path=str(self._root), error=str(exc))
            return False
        self._collect(top, dirs, files, 0)
        # Every visible file gets a history, so media already waiting have settled when a request names them.
        for path, st in files.items():
            self._seen(path, st, False)
            if path.parent == self._root:
                self._consider(path)
        present = set(files)
        for path in [p for p in self._cands if p not in present]:
            self._forget(path)  # taken by another process or removed by its owner
        for path in [p for p in (*self._hist, *self._held) if p not in present and not os.path.lexists(p)]:
            self._hist.pop(path, None)
            self._held.pop(path, None)
        for cand in self._cands.values():
            cand.due = now
        if self._mode == "inotify" and self._observer is not None:
            self._sync_watches(dirs)
        return True

    def _collect(self, entries: Iterable[os.DirEntry[str]], dirs: dict[Path, tuple[int, int]],
                 files: dict[Path, os.stat_result], depth: int) -> None:
        """Visible subfolders (to watch) and files (to remember) among ``entries``, recursively."""
        for entry in entries:
            path = Path(entry.path)
            if is_ignored(entry.name) or self._in_work(path):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                files[path] = st
            elif depth < _MAX_DEPTH and len(dirs) < _MAX_DIR_WATCHES:
                dirs[path] = (st.st_dev, st.st_ino)
                try:
                    with os.scandir(path) as sub:
                        inner = list(sub)
                except OSError:
                    continue
                self._collect(inner, dirs, files, depth + 1)

    def _look(self, path: Path, signal: bool) -> None:
        """An event's early look at one path."""
        try:
            rel = path.relative_to(self._root)
        except ValueError:
            return
        if not rel.parts or self._in_work(path):
            return
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if not self._root_gone():
                self._forget(path)
            return
        except OSError:
            return
        if stat.S_ISDIR(st.st_mode):
            if self._mode == "inotify" and not any(is_ignored(part) for part in rel.parts):
                self._watch_tree(path)
            return
        self._seen(path, st, signal)
        if len(rel.parts) == 1:
            self._consider(path)
        now = self._clock()
        for cand in self._cands.values():
            if cand.missing or (cand.names is not None and path in cand.names):
                cand.due = now

    def _seen(self, path: Path, st: os.stat_result, signal: bool) -> History:
        history = observe(self._hist.get(path), (st.st_size, st.st_mtime_ns), self._clock(),
                          signal=signal and self._mode == "inotify")
        self._hist[path] = history
        return history

    def _refresh(self, path: Path) -> History | None:
        """A fresh look (the settle clock needs one); None when the file is gone."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if not self._root_gone():
                self._forget(path)
            return None
        return self._seen(path, st, False)

    def _consider(self, path: Path) -> None:
        kind = classify(path.name, self.inbox.accept_media)
        if kind not in ("request", "control", "media"):
            return
        history = self._hist.get(path)
        if kind == "media" and path in self._held:
            if history is not None and self._held[path] == history.sig:
                return
            del self._held[path]  # changed since: a new file, fair to send alone
        cand = self._cands.get(path)
        if cand is None:
            self._cands[path] = _Cand(kind, self._clock())
        else:
            cand.due = self._clock()

    def _forget(self, path: Path) -> None:
        self._hist.pop(path, None)
        cand = self._cands.pop(path, None)
        if cand is not None and cand.kind == "request":
            self._wake_media()

    def _wake_media(self) -> None:
        now = self._clock()
        for cand in self._cands.values():
            if cand.kind == "media":
                cand.due = now

    def _in_work(self, path: Path) -> bool:
        return path == self._work or self._work in path.parents

    def _lex(self, real: Path | str) -> Path:
        """A resolved path inside the inbox, spelled under the inbox path as configured (as events spell it)."""
        return self._root / os.path.relpath(real, os.path.realpath(self._root))

    # -- subfolder watches (inotify only) ----------------------------------------------------------------

    def _sync_watches(self, wanted: dict[Path, tuple[int, int]]) -> None:
        for folder, (watch, ident) in list(self._dirs.items()):
            if wanted.get(folder) != ident:  # gone, or replaced: its emitter has stopped
                self._unwatch(folder, watch)
        for folder, ident in wanted.items():
            if folder not in self._dirs:
                self._watch(folder, ident)

    def _watch_tree(self, folder: Path) -> None:
        """A folder that appeared: watch it and what it holds (files in it so far are seen, not signalled)."""
        found: dict[Path, tuple[int, int]] = {}
        files: dict[Path, os.stat_result] = {}
        try:
            with os.scandir(folder.parent) as entries:
                self._collect([e for e in entries if e.name == folder.name], found, files, 0)
        except OSError:
            return
        for path, st in files.items():
            self._seen(path, st, False)
        for path, ident in found.items():
            known = self._dirs.get(path)
            if known is not None and known[1] != ident:
                self._unwatch(path, known[0])
            if path not in self._dirs:
                self._watch(path, ident)

    def _watch(self, folder: Path, ident: tuple[int, int]) -> None:
        if self._observer is None or len(self._dirs) >= _MAX_DIR_WATCHES:
            return
        try:
            self._dirs[folder] = (self._schedule(self._observer, folder), ident)
        except OSError as exc:
            if not self._dirs_warned:  # most likely fs.inotify.max_user_watches; settle time still works
                self._dirs_warned = True
                self._log.warning("inbox.watch_failed", path=str(folder), error=str(exc))

    def _unwatch(self, folder: Path, watch: ObservedWatch) -> None:
        self._dirs.pop(folder, None)
        if self._observer is not None:
            with contextlib.suppress(KeyError, OSError, RuntimeError):
                self._observer.unschedule(watch)

    # -- deciding ----------------------------------------------------------------------------------------

    def _process(self) -> None:
        now = self._clock()

        def order(item: tuple[Path, _Cand]) -> tuple[bool, float, str]:
            history = self._hist.get(item[0])
            return item[1].kind == "media", history.first_seen if history else now, item[0].name

        for path, cand in sorted(self._cands.items(), key=order):
            if self._stop.is_set() or self._paused:
                return
            if self._cands.get(path) is not cand or cand.due > now:
                continue
            if cand.kind == "control":
                self._take_control(path, cand)
            elif cand.kind == "request":
                self._examine(path, cand, now)
            else:
                self._examine_bare(path, cand, now)

    def _load(self, path: Path, root: Path, *, bare: bool = False) -> Request:
        loader = bare_media_request if bare else load_request
        return loader(path, root=root, inbox=self.inbox, catalog=self._catalog, unknown_models=self._unknown)

    def _examine(self, path: Path, cand: _Cand, now: float) -> None:
        history = self._refresh(path)
        if history is None:
            return
        if os.path.islink(path):  # taken, it would point elsewhere than the job dir
            self._refuse(path, (_LINKED,))
            return
        settle = self.inbox.settle
        if not is_ready(history, now, settle=settle, events=self._mode == "inotify"):
            cand.due = history.changed + settle
            return
        try:
            req = self._load(path, self._root)
        except RequestError as exc:
            cand.missing = exc.incomplete
            if exc.incomplete and now - history.changed < settle:
                cand.due = history.changed + settle  # maybe still being written: not yet, not rejected
                return
            mentioned = self._mentioned(path)
            # Media still being copied can fail checks (a preallocated file is all zeros): judge it complete.
            due = None if exc.incomplete else self._unready(mentioned, now)
            if due is not None:
                cand.due = due
                return
            self._refuse(path, tuple(exc.problems), held=mentioned)
            return
        cand.missing = False
        files = [self._lex(m.file) for m in req.media]
        names = frozenset([*files, *(Path(os.path.normpath(self._root / m.rel)) for m in req.media)])
        if names != cand.names:
            cand.names = names
            self._wake_media()
        due = self._unready(files, now)
        if due is not None:
            cand.due = due
            return
        self._claim(path, req, cand)

    def _examine_bare(self, path: Path, cand: _Cand, now: float) -> None:
        requests = [c for c in self._cands.values() if c.kind == "request"]
        # Until every waiting request has said what it names, any of them may want this file.
        if any(c.names is None or path in c.names for c in requests):
            cand.due = math.inf
            return
        history = self._refresh(path)
        if history is None:
            return
        if os.path.islink(path):
            self._refuse(path, (_LINKED,), bare=True)
            return
        settle = self.inbox.settle
        if not is_ready(history, now, settle=settle, events=self._mode == "inotify"):
            cand.due = history.changed + settle
            return
        try:
            req = self._load(path, self._root, bare=True)
        except RequestError as exc:
            if exc.incomplete and now - history.changed < settle:
                cand.due = history.changed + settle
                return
            self._refuse(path, tuple(exc.problems), bare=True)
            return
        self._claim(path, req, cand, bare=True)

    def _unready(self, paths: Iterable[Path], now: float) -> float | None:
        """When to look again if any of these files is not complete yet; None when all are."""
        settle = self.inbox.settle
        due: float | None = None
        for path in paths:
            history = self._refresh(path)
            if history is None:
                return now + settle
            if not is_ready(history, now, settle=settle, events=self._mode == "inotify"):
                due = min(due or math.inf, history.changed + settle)
        return due

    def _mentioned(self, path: Path) -> list[Path]:
        """Files a request that failed to load seems to name: its string values that are files in the inbox."""
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size > 1 << 20:
                return []
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as fh:
                text = fh.read(1 << 20).decode("utf-8-sig")
            data: Any = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        except (OSError, ValueError, RecursionError):
            return []
        root = os.path.realpath(self._root)
        found: list[Path] = []
        stack = [data]
        while stack:
            value = stack.pop()
            if isinstance(value, dict):
                stack.extend(value.values())
            elif isinstance(value, list):
                stack.extend(value)
            elif (isinstance(value, str) and 0 < len(value) < 4096 and "\0" not in value and ":" not in value
                  and not os.path.isabs(value)):
                real = os.path.realpath(os.path.join(self._root, value))
                if _inside(real, root) and os.path.isfile(real):
                    lexical = self._lex(real)
                    if not self._in_work(lexical):
                        found.append(lexical)
        return found

    # -- taking ------------------------------------------------------------------------------------------

    def _job_dir(self, cand: _Cand | None) -> tuple[str, Path] | None:
        jobs = self._work / "jobs"
        for _ in range(5):
            job_id = _new_job_id()
            try:
                (jobs / job_id).mkdir()
                return job_id, jobs / job_id
            except FileExistsError:
                continue
            except OSError as exc:
                if not self._root_gone():
                    self._log.error("inbox.claim_failed", path=str(jobs), error=str(exc))
                break
        if cand is not None:
            cand.due = self._clock() + _RETRY
        return None

    def _take(self, path: Path, job_dir: Path, cand: _Cand | None) -> Path | None:
        """The claim itself: rename into the job dir. None if someone else was first (or it failed)."""
        dest = job_dir / path.name
        try:
            os.rename(path, dest)
        except OSError as exc:
            with contextlib.suppress(OSError):
                job_dir.rmdir()
            if isinstance(exc, FileNotFoundError):
                if not self._root_gone():
                    self._forget(path)  # another watcher took it; the rescan finds it should it come back
            else:
                self._log.error("inbox.claim_failed", file=path.name, error=str(exc))
                if cand is not None:
                    cand.due = self._clock() + _RETRY
            return None
        self._forget(path)
        return dest

    def _claim(self, path: Path, req: Request, cand: _Cand, *, bare: bool = False) -> None:
        made = self._job_dir(cand)
        if made is None:
            return
        job_id, job_dir = made
        dest = self._take(path, job_dir, cand)
        if dest is None:
            return
        fmt: Format = "json" if bare else req.format
        problems = [] if bare else self._bring_media(req, job_dir)
        if not problems:
            try:
                final = self._load(dest, job_dir, bare=bare)  # the moved request must still resolve
            except RequestError as exc:
                problems = list(exc.problems)
            else:
                self._log.info("inbox.claimed", name=final.name, job_id=job_id, bare=bare)
                self._emit(Claimed(job_id, self.inbox.name, job_dir, dest, final.name, fmt, bare))
                return
        self._fail(job_id, job_dir, dest, req.name, fmt, tuple(problems))

    def _bring_media(self, req: Request, job_dir: Path) -> list[Problem]:
        """Moves the request's media into the job dir at their inbox-relative paths; problems if any is gone."""
        problems: list[Problem] = []
        root = os.path.realpath(self._root)
        moved: dict[Path, Path] = {}
        for media in req.media:
            where = format_path(media.field)
            rel = os.path.normpath(media.rel)
            target = media.file
            if os.path.isabs(rel) or rel.split(os.sep)[0] == ".." or not _inside(str(target), root) \
                    or self._in_work(self._lex(target)):
                problems.append(Problem(where, f"{media.rel} is not a file waiting in the inbox"))
                continue
            src, dest = self._root / rel, job_dir / rel
            if dest.exists() and moved.get(target) == dest:
                continue  # the same file named twice
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                if os.path.lexists(dest):
                    problems.append(Problem(where, f"{media.rel} clashes with another file of this request"))
                    continue
                if target in moved:  # a symlink and its target both named: one file, two names
                    os.link(moved[target], dest)
                else:
                    if not stat.S_ISREG(os.lstat(target).st_mode):
                        problems.append(Problem(where, f"{media.rel} is not a regular file"))
                        continue
                    os.rename(target, dest)
                    moved[target] = dest
                if os.path.islink(src):  # keep the link itself too, out of the way of the request's paths
                    link = job_dir / ".links" / rel
                    link.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(src, link)
            except FileNotFoundError:
                problems.append(Problem(where, f"{media.rel} is gone from the inbox (taken with another request?)"))
            except OSError as exc:
                problems.append(Problem(where, f"{media.rel} could not be moved: {exc.strerror or exc}"))
            self._forget(self._lex(target))
            self._forget(src)
        return problems

    def _refuse(self, path: Path, problems: tuple[Problem, ...], *, bare: bool = False,
                held: Iterable[Path] = ()) -> None:
        """A request that cannot be used: claimed like any other (the rename decides), then failed."""
        cand = self._cands.get(path)
        made = self._job_dir(cand)
        if made is None:
            return
        job_id, job_dir = made
        dest = self._take(path, job_dir, cand)
        if dest is None:
            return
        for file in held:  # the user meant these for that request, not to be sent alone as bare media
            history = self._hist.get(file)
            if self.inbox.accept_media and history is not None and file.parent == self._root:
                self._held[file] = history.sig
                self._cands.pop(file, None)
        fmt: Format = "toml" if path.suffix.lower() == ".toml" and not bare else "json"
        self._fail(job_id, job_dir, dest, request_name(path), fmt, problems)

    def _fail(self, job_id: str, job_dir: Path, request_file: Path, name: str, fmt: Format,
              problems: tuple[Problem, ...]) -> None:
        failed = self._work / "failed" / job_id
        try:
            failed.parent.mkdir(parents=True, exist_ok=True)
            os.rename(job_dir, failed)
            job_dir, request_file = failed, failed / request_file.name
        except OSError as exc:  # left in jobs/: recover() finds it at the next start
            self._log.error("inbox.move_failed", job_dir=str(job_dir), error=str(exc))
        self._log.warning("inbox.refused", name=name, job_id=job_id, problems=[str(p) for p in problems])
        self._emit(Refused(job_id, self.inbox.name, job_dir, request_file, name, fmt, problems))

    def _take_control(self, path: Path, cand: _Cand) -> None:
        kind: Literal["cancel", "approve"] = "cancel" if path.suffix.lower() == ".cancel" else "approve"
        name = request_name(path)
        folder = self._work / "control"
        dest = folder / path.name
        if os.path.lexists(dest):
            dest = folder / f"{path.stem}.{_new_job_id()}{path.suffix}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            os.rename(path, dest)
        except FileNotFoundError:
            if not self._root_gone():
                self._forget(path)
            return
        except OSError as exc:
            self._log.error("inbox.claim_failed", file=path.name, error=str(exc))
            cand.due = self._clock() + _RETRY
            return
        self._forget(path)
        self._log.info("inbox.control", kind=kind, name=name)
        self._emit(Control(self.inbox.name, kind, name))

    def _emit(self, item: Claimed | Refused | Control) -> None:
        try:
            self._deliver(item)
        except Exception as exc:  # noqa: BLE001 - the claim stands (recover() finds it); keep watching
            self._log.exception("inbox.deliver_failed", error=str(exc))


# -- helpers ----------------------------------------------------------------------------------------------


def _new_job_id() -> str:
    """``YYYYMMDDTHHMMSSZ-xxxxxxxx``: the claim's UTC time and 8 random hex digits."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def recover(inbox: InboxConfig) -> list[Path]:
    """Job dirs left in WORK/jobs (claimed before a crash), oldest first; empty half-made ones are removed."""
    jobs = inbox.work / "jobs"
    try:
        entries = sorted(jobs.iterdir())
    except OSError:
        return []
    found: list[Path] = []
    for entry in entries:
        if entry.is_symlink() or not entry.is_dir():
            continue
        try:
            entry.rmdir()  # only succeeds when empty: a crash between mkdir and the rename
        except OSError:
            found.append(entry)
    return found


_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _fs_type(path: Path, mounts: Path | None) -> str | None:
    """The type of the filesystem ``path`` is on, from mountinfo (or /proc/mounts); None if unknown."""
    sources = [mounts] if mounts is not None else [Path("/proc/self/mountinfo"), Path("/proc/mounts")]
    target = os.path.realpath(path)
    for source in sources:
        try:
            lines = source.read_text("utf-8", "replace").splitlines()
        except OSError:
            continue
        best: tuple[int, str] | None = None
        for line in lines:
            if " - " in line:  # mountinfo: id parent dev root MOUNTPOINT opts [optional...] - TYPE src opts
                left, _, right = line.partition(" - ")
                fields, rest = left.split(), right.split()
                if len(fields) < 5 or not rest:
                    continue
                point, kind = _unescape(fields[4]), rest[0]
            else:  # /proc/mounts: SOURCE MOUNTPOINT TYPE opts 0 0
                fields = line.split()
                if len(fields) < 3:
                    continue
                point, kind = _unescape(fields[1]), fields[2]
            # The deepest mount wins; of equals the later, which is stacked on top.
            if (_inside(target, point) or point == "/") and (best is None or len(point) >= best[0]):
                best = (len(point), kind)
        if best is not None:
            return best[1]
    return None


def is_network_fs(path: Path, *, mounts: Path | None = None) -> bool:
    """Is ``path`` on a network or FUSE filesystem, where inotify misses other machines' changes?

    ``mounts`` reads another mountinfo-format file than ``/proc/self/mountinfo`` (for tests).
    """
    kind = _fs_type(path, mounts)
    return kind is not None and (kind in _NETWORK_FS or kind.startswith("fuse."))
