"""The watchdog side of watching one inbox: the observer, its watches, and the folder coming and going.

Events only bring the watcher's next look forward (the rescans are the source of truth), so everything here
is about getting cheap, early hints and surviving what a folder does: an inotify observer that asks only for
the events that matter (or a polling one on network shares, or when inotify runs out), one non-recursive
watch per visible subfolder (a recursive one would also watch the work area, whose records grow for months),
a pause while the folder is missing (an unmounted share) and a fresh observer when it comes back or is
replaced. Kept apart from the worker so that what the worker decides can be read without watchdog's details.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

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

from runwatch.errors import InboxError
from runwatch.mounts import is_network_fs
from runwatch.requestfile import is_ignored

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from runwatch.config import InboxConfig
    from runwatch.workarea import WorkArea

__all__ = ["INOTIFY_EVENTS", "FolderWatch", "Handler", "InotifyObserver", "Mode"]

Mode = Literal["inotify", "polling"]

_POLL_INTERVAL = 1.0  # the polling observer's period: it brings looks forward, the settle clock is ours
_MAX_DIR_WATCHES = 1_000  # subfolders beyond this are judged by settle time alone
_MAX_DEPTH = 32
INOTIFY_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileMovedEvent,
    FileClosedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
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


class InotifyObserver(BaseObserver):
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


class Handler(FileSystemEventHandler):
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


class FolderWatch:
    """One inbox folder: is it there and usable, which observer watches it (``mode``) and which subfolders.

    Used from the watcher's worker thread only (``paused`` may be read from anywhere). ``polling``: None
    decides from the config flag and the filesystem type (network shares are polled).
    """

    def __init__(
        self, inbox: InboxConfig, area: WorkArea, handler: Handler, *, polling: bool | None, log: FilteringBoundLogger
    ) -> None:
        self._inbox = inbox
        self._area = area
        self._root = area.root
        self._handler = handler
        self._polling = polling
        self._log = log
        self.mode: Mode = self._decide_mode()
        self.observer: BaseObserver | None = None
        self.paused = False
        self._root_id: tuple[int, int] | None = None
        self._dirs: dict[Path, tuple[ObservedWatch, tuple[int, int]]] = {}
        self._dirs_warned = False
        self._trouble: str | None = None  # the last work-area problem logged, so it is logged once

    def start(self) -> None:
        """Prepares the work area and starts the observer, or pauses when the folder is missing."""
        if self._root.is_dir():
            self._area.prepare()
            self._start_observer()
        else:
            self._pause()

    def stop(self) -> None:
        observer, self.observer = self.observer, None
        self._dirs.clear()
        if observer is not None:
            with contextlib.suppress(Exception):
                observer.stop()
                observer.join(2.0)

    def check(self) -> bool:
        """Is the folder there? Pauses, resumes or re-watches (a folder replaced under us) as needed."""
        try:
            st = os.stat(self._root)
        except OSError:
            st = None
        if st is None or not stat.S_ISDIR(st.st_mode):
            if not self.paused:
                self._pause()
            return False
        try:
            self._area.prepare()
            if self.paused:
                if self._polling is None:
                    self.mode = self._decide_mode()
                self._start_observer()
                self.paused = False
                self._log.info("inbox.resumed", path=str(self._root))
            elif (st.st_dev, st.st_ino) != self._root_id:
                self.stop()
                self._start_observer()
        except InboxError as exc:
            if str(exc) != self._trouble:
                self._trouble = str(exc)
                self._log.error("inbox.unusable", path=str(self._root), error=str(exc))
            if not self.paused:
                self.paused = True
                self.stop()
            return False
        self._trouble = None
        return True

    def collect(
        self,
        entries: Iterable[os.DirEntry[str]],
        dirs: dict[Path, tuple[int, int]],
        files: dict[Path, os.stat_result],
        depth: int,
    ) -> None:
        """Visible subfolders (to watch) and files (to remember) among ``entries``, recursively."""
        for entry in entries:
            path = Path(entry.path)
            if is_ignored(entry.name) or self._area.contains(path):
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
                self.collect(inner, dirs, files, depth + 1)

    # -- subfolder watches (inotify only) ----------------------------------------------------------------

    def sync(self, wanted: dict[Path, tuple[int, int]]) -> None:
        """After a full scan: watch exactly the subfolders found (by (st_dev, st_ino))."""
        if self.mode != "inotify" or self.observer is None:
            return
        for folder, (watch, ident) in list(self._dirs.items()):
            if wanted.get(folder) != ident:  # gone, or replaced: its emitter has stopped
                self._unwatch(folder, watch)
        for folder, ident in wanted.items():
            if folder not in self._dirs:
                self._watch(folder, ident)

    def add(self, found: dict[Path, tuple[int, int]]) -> None:
        """Subfolders that appeared: watch them, re-watching any replaced under a known path."""
        for path, ident in found.items():
            known = self._dirs.get(path)
            if known is not None and known[1] != ident:
                self._unwatch(path, known[0])
            if path not in self._dirs:
                self._watch(path, ident)

    def _watch(self, folder: Path, ident: tuple[int, int]) -> None:
        if self.observer is None or len(self._dirs) >= _MAX_DIR_WATCHES:
            return
        try:
            self._dirs[folder] = (self._schedule(self.observer, folder), ident)
        except OSError as exc:
            if not self._dirs_warned:  # most likely fs.inotify.max_user_watches; settle time still works
                self._dirs_warned = True
                self._log.warning("inbox.watch_failed", path=str(folder), error=str(exc))

    def _unwatch(self, folder: Path, watch: ObservedWatch) -> None:
        self._dirs.pop(folder, None)
        if self.observer is not None:
            with contextlib.suppress(KeyError, OSError, RuntimeError):
                self.observer.unschedule(watch)

    # -- the observer ------------------------------------------------------------------------------------

    def _decide_mode(self) -> Mode:
        if self._polling is not None:
            return "polling" if self._polling else "inotify"
        return "polling" if self._inbox.polling or is_network_fs(self._root) else "inotify"

    def _new_observer(self) -> BaseObserver:
        return PollingObserver(timeout=_POLL_INTERVAL) if self.mode == "polling" else InotifyObserver()

    def _schedule(self, observer: BaseObserver, folder: Path) -> ObservedWatch:
        events = INOTIFY_EVENTS if self.mode == "inotify" else None
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
                if self.mode == "polling":
                    raise InboxError(f"{self._root}: cannot be watched: {exc}") from exc
                # Out of inotify instances or watches: polling still works, only slower.
                self._log.warning("inbox.inotify_unavailable", error=str(exc))
                self.mode = "polling"
                continue
            self.observer = observer
            st = os.stat(self._root)
            self._root_id = (st.st_dev, st.st_ino)
            self._log.info("inbox.watching", mode=self.mode, path=str(self._root))
            return

    def _pause(self) -> None:
        self.paused = True
        self.stop()
        self._log.error(
            "inbox.paused",
            path=str(self._root),
            reason="the inbox folder is missing (an unmounted share?); waiting for it to come back",
        )
