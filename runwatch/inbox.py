"""Watching inboxes: the worker that sees files come, waits until they are complete, and takes them.

After watchfiles, in parts:

* a thin watchdog handler only puts paths on a queue (:mod:`runwatch.folderwatch`, with the observer, its
  per-folder watches and the pause while the folder is missing);
* :func:`observe` and :func:`is_ready`, the pure readiness rule over what has been seen of one file
  (:mod:`runwatch.readiness`);
* the worker thread of :class:`InboxWatcher`, here: it drains the queue, rescans the inbox at start, every
  ``rescan`` seconds and when the folder comes back, and takes what is ready. Events only bring a look
  forward; the rescans are the source of truth, so a lost event costs latency, never a request;
* the claim, the refusal and the control file as moves into the work area (:mod:`runwatch.workarea`).

A claim is ``mkdir WORK/jobs/JOB_ID`` then ``os.rename`` of the request into it. When two watchers (two runwatch
processes) race for one file the rename decides, and the loser drops it without a word; nodes of one PostgreSQL
journal let the journal's claim row decide before the rename. The media a request
names are hard-linked to their inbox-relative paths in the job dir and stay in the inbox, *kept*, while other
requests waiting there name them (or might: not read yet) and for the settle time after the last claim that
took them, so that several requests can share one file; then they are swept out of the inbox
(:mod:`runwatch.taken`). A request that cannot be used goes whole to ``WORK/failed/JOB_ID``. Nothing here
deletes or overwrites a user's file, runs a shell, opens anything before ``lstat`` says what it is, or follows
a path out of the inbox. The watcher's part of that sharing (kept files, recognised, swept; media parked until
requests say what they name) is :class:`runwatch.kept.SharedMedia`, a part of the watcher.

Only top-level files are candidates; files in subfolders are remembered, as media a request may name.
"""

from __future__ import annotations

import math
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from runwatch.errors import InboxError, Problem, RequestError
from runwatch.folderwatch import INOTIFY_EVENTS, FolderWatch, Handler, InotifyObserver, Mode
from runwatch.kept import SharedMedia, _Cand, _Kept
from runwatch.localmedia import mentioned_files
from runwatch.mounts import fs_type, is_network_fs
from runwatch.readiness import History, Sig, is_ready, observe
from runwatch.request import Request, bare_media_request, classify, is_ignored, load_request, request_name
from runwatch.wanted import Wanted
from runwatch.workarea import RETRY, Claimed, ClaimGate, Control, Format, Refused, WorkArea, recover

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger
    from watchdog.observers.api import BaseObserver

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

_PAUSED_CHECK = 2.0  # at most this long between looks for a vanished inbox
_BATCH = 10_000  # events taken at once before timers are looked at again
_LINKED = Problem("", "is a symbolic link; put the file itself in the inbox (media it names may be links)")

# Names from before the split into modules, which ``runwatch doctor`` and the tests still import from here.
_fs_type = fs_type
_INOTIFY_EVENTS = INOTIFY_EVENTS
_InotifyObserver = InotifyObserver


class InboxWatcher(SharedMedia):
    """Watches one inbox and delivers :class:`Claimed`, :class:`Refused` and :class:`Control` items.

    ``deliver`` is called on the watcher's own thread. ``polling``: None decides from the config flag and the
    filesystem type (network shares are polled). ``clock`` is for readiness arithmetic only. ``claims``: the
    journal several nodes share, which decides each claim before its rename.
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
        claims: ClaimGate | None = None,
    ) -> None:
        self.inbox = inbox
        self._catalog = catalog
        self._unknown = unknown_models
        self._every = rescan
        self._clock = clock
        self._log: FilteringBoundLogger = (log or structlog.get_logger()).bind(inbox=inbox.name)
        self._root = Path(os.path.abspath(inbox.path))
        self._area = WorkArea(
            inbox.name,
            self._root,
            Path(os.path.abspath(inbox.work)),
            deliver=deliver,
            forget=self._forget,
            root_gone=self._root_gone,
            clock=clock,
            log=self._log,
            claims=claims,
        )
        self._queue: queue.SimpleQueue[tuple[str, bool] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._scans = 0
        self._pending = 0
        self._scan_wanted = True
        self._folder = FolderWatch(inbox, self._area, Handler(self._queue.put), polling=polling, log=self._log)
        self._hist: dict[Path, History] = {}
        self._cands: dict[Path, _Cand] = {}
        # Indexes into _cands, so one event or one claim costs no pass over thousands of waiting files:
        self._parked: set[Path] = set()  # bare media and kept files: they wait on what requests name
        self._dependent: set[Path] = set()  # requests that name files, or miss some: a file event may wake them
        self._wanted = Wanted()  # which files the waiting requests name
        self._held: dict[Path, Sig] = {}  # media a refused request named: never sent alone while unchanged
        self._kept: dict[Path, _Kept] = {}  # media taken and left in the inbox for other requests
        self._sweeping = 0
        self._thread: threading.Thread | None = None

    # -- public surface ----------------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._folder.mode

    @property
    def paused(self) -> bool:
        """The inbox folder is missing (an unmounted share): nothing is taken, forgotten or refused."""
        return self._folder.paused

    @property
    def _observer(self) -> BaseObserver | None:
        """The observer now running; tests stop it to lose events on purpose."""
        return self._folder.observer

    def start(self) -> None:
        """Starts the observer (if the folder exists) and the worker; the first full scan runs at once."""
        if self._thread is not None:
            raise InboxError(f"{self._root}: the watcher was already started")
        self._folder.start()
        self._thread = threading.Thread(target=self._run, name=f"runwatch-inbox-{self.inbox.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        self._folder.stop()

    def scan(self) -> None:
        """Asks for a full rescan now (thread-safe)."""
        self._scan_wanted = True
        self._queue.put(None)

    def pending(self) -> int:
        """Candidates seen but not yet taken or refused."""
        with self._cond:
            return self._pending

    def wait_idle(self, timeout: float) -> bool:
        """Blocks until a full scan has happened, nothing is pending and no media file taken is left in the
        inbox but for requests that name it; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._scans > 0 and self._pending == self._sweeping == 0, timeout)

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
                    every = min(self._every, _PAUSED_CHECK) if self._folder.paused else self._every
                    next_scan = self._clock() + every
                if not self._folder.paused:
                    for path, signal in events.items():
                        self._look(Path(path), signal)
                    self._process()
            except Exception as exc:  # noqa: BLE001 - one odd file or a flaky share must not end the watching
                self._log.exception("inbox.error", error=str(exc))
                self._stop.wait(RETRY)
            with self._cond:  # media parked at due=inf wait on a request, which is what counts
                due = [c.kind for c in self._cands.values() if c.due < math.inf]
                self._sweeping = due.count("kept")
                self._pending = len(due) - self._sweeping
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

    # -- looking at files --------------------------------------------------------------------------------

    def _root_gone(self) -> bool:
        """Is the folder missing? Then nothing is forgotten and a rescan (that pauses) is asked for."""
        if self._root.is_dir():
            return False
        self._scan_wanted = True
        return True

    def _rescan(self) -> bool:
        """The source of truth: every top-level file, every watched subfolder. False when paused."""
        if not self._folder.check():
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
        self._folder.collect(top, dirs, files, 0)
        # Every visible file gets a history, so media already waiting have settled when a request names them.
        for path, st in files.items():
            self._seen(path, st, False)
            if path.parent == self._root:
                self._consider(path)
        present = set(files)
        for path in [p for p in self._cands if p not in present]:
            self._forget(path)  # taken by another process or removed by its owner
        for path in [p for p in (*self._hist, *self._held, *self._kept) if p not in present and not os.path.lexists(p)]:
            self._hist.pop(path, None)
            self._held.pop(path, None)
            self._kept.pop(path, None)
        for cand in self._cands.values():
            cand.due = now
        self._folder.sync(dirs)
        return True

    def _look(self, path: Path, signal: bool) -> None:
        """An event's early look at one path."""
        try:
            rel = path.relative_to(self._root)
        except ValueError:
            return
        if not rel.parts or self._area.contains(path):
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
            if self._folder.mode == "inotify" and not any(is_ignored(part) for part in rel.parts):
                self._watch_tree(path)
            return
        self._seen(path, st, signal)
        if len(rel.parts) == 1:
            self._consider(path)
        now = self._clock()
        for waiting in self._dependent:
            cand = self._cands[waiting]
            if cand.missing or (cand.names is not None and path in cand.names):
                cand.due = now

    def _seen(self, path: Path, st: os.stat_result, signal: bool) -> History:
        if path not in self._hist and st.st_nlink > 1 and path not in self._kept:
            self._recognise(path, st)
        history = observe(
            self._hist.get(path),
            (st.st_size, st.st_mtime_ns),
            self._clock(),
            signal=signal and self._folder.mode == "inotify",
        )
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
            if kind == "media":
                self._parked.add(path)
            elif kind == "request":
                self._wanted.arrived(path)
        else:
            cand.due = self._clock()

    def _forget(self, path: Path) -> None:
        self._hist.pop(path, None)
        self._kept.pop(path, None)
        cand = self._drop_cand(path)
        if cand is not None and cand.kind == "request":
            self._wake_media()

    def _drop_cand(self, path: Path) -> _Cand | None:
        self._parked.discard(path)
        self._dependent.discard(path)
        cand = self._cands.pop(path, None)
        if cand is not None and cand.kind == "request":
            self._wanted.gone(path, cand.names)
        return cand

    def _watch_tree(self, folder: Path) -> None:
        """A folder that appeared: watch it and what it holds (files in it so far are seen, not signalled)."""
        found: dict[Path, tuple[int, int]] = {}
        files: dict[Path, os.stat_result] = {}
        try:
            with os.scandir(folder.parent) as entries:
                self._folder.collect([e for e in entries if e.name == folder.name], found, files, 0)
        except OSError:
            return
        for path, st in files.items():
            self._seen(path, st, False)
        self._folder.add(found)

    # -- deciding ----------------------------------------------------------------------------------------

    def _process(self) -> None:
        now = self._clock()

        def order(item: tuple[Path, _Cand]) -> tuple[bool, float, str]:
            history = self._hist.get(item[0])
            return item[1].kind in ("media", "kept"), history.first_seen if history else now, item[0].name

        for path, cand in sorted(self._cands.items(), key=order):
            if self._stop.is_set() or self._folder.paused:
                return
            if self._cands.get(path) is not cand or cand.due > now:
                continue
            try:
                if cand.kind == "control":
                    self._area.take_control(path, cand)
                elif cand.kind == "request":
                    self._examine(path, cand, now)
                elif cand.kind == "kept":
                    self._examine_kept(path, cand, now)
                else:
                    self._examine_bare(path, cand, now)
            except Exception as exc:  # noqa: BLE001 - one odd file must not hold up the rest of the inbox
                self._log.exception("inbox.error", path=str(path), error=repr(exc))
                cand.due = now + max(self._every, 5.0)  # look again later, not in a tight loop

    def _load(self, path: Path, root: Path, *, bare: bool = False) -> Request:
        if bare:
            return bare_media_request(
                path, root=root, inbox=self.inbox, catalog=self._catalog, unknown_models=self._unknown
            )
        return load_request(
            path,
            root=root,
            inbox=self.inbox,
            catalog=self._catalog,
            unknown_models=self._unknown,
            taken=self._taken if root == self._root else None,
        )

    def _settled(self, path: Path, cand: _Cand, now: float, *, bare: bool = False) -> History | None:
        """The file's history when it may be read now; None when it is gone, refused, or not complete yet."""
        history = self._refresh(path)
        if history is None:
            return None
        if os.path.islink(path):  # taken, it would point elsewhere than the job dir
            self._refuse(path, _LINKED, bare=bare)
            return None
        if not is_ready(history, now, settle=self.inbox.settle, events=self._folder.mode == "inotify"):
            cand.due = history.changed + self.inbox.settle
            return None
        return history

    def _examine(self, path: Path, cand: _Cand, now: float) -> None:
        history = self._settled(path, cand, now)
        if history is None:
            return
        settle = self.inbox.settle
        try:
            req = self._load(path, self._root)
        except RequestError as exc:
            cand.missing = exc.incomplete
            if exc.incomplete:
                self._dependent.add(path)
            if exc.incomplete and now - history.changed < settle:
                cand.due = history.changed + settle  # maybe still being written: not yet, not rejected
                return
            mentioned = self._mentioned(path)
            # Media still being copied can fail checks (a preallocated file is all zeros): judge it complete.
            due = None if exc.incomplete else self._unready(mentioned, now)
            if due is not None:
                cand.due = due
                return
            self._refuse(path, exc, held=mentioned)
            return
        cand.missing = False
        files = [self._area.lex(m.file) for m in req.media]
        names = frozenset([*files, *(Path(os.path.normpath(self._root / m.rel)) for m in req.media)])
        if names:
            self._dependent.add(path)
        else:
            self._dependent.discard(path)
        self._set_names(path, cand, names)
        due = self._unready(files, now)
        if due is not None:
            cand.due = due
            return
        self._claim(path, req, cand)

    def _examine_bare(self, path: Path, cand: _Cand, now: float) -> None:
        # Until every waiting request has said what it names, any of them may want this file.
        if self._wanted(path):
            cand.due = math.inf
            return
        history = self._settled(path, cand, now, bare=True)
        if history is None:
            return
        try:
            st = os.lstat(path)
        except OSError:
            return
        if self._recognise(path, st):  # taken by a request already (a copy left by a crash): never sent alone
            return
        settle = self.inbox.settle
        try:
            req = self._load(path, self._root, bare=True)
        except RequestError as exc:
            if exc.incomplete and now - history.changed < settle:
                cand.due = history.changed + settle
                return
            self._refuse(path, exc, bare=True)
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
            if not is_ready(history, now, settle=settle, events=self._folder.mode == "inotify"):
                due = min(due or math.inf, history.changed + settle)
        return due

    def _mentioned(self, path: Path) -> list[Path]:
        """Files a request that failed to load seems to name, spelled as events spell them."""
        found: list[Path] = []
        for real in mentioned_files(path, self._root):
            lexical = self._area.lex(real)
            if not self._area.contains(lexical):
                found.append(lexical)
        return found

    # -- taking ------------------------------------------------------------------------------------------

    def _claim(self, path: Path, req: Request, cand: _Cand, *, bare: bool = False) -> None:
        taken = self._area.take(path, cand, None if bare else req)
        if taken is None:
            return
        for file, ident in taken.links:
            self._keep(file, ident, taken.job_id)
        job_id, job_dir, dest = taken.job_id, taken.job_dir, taken.request_file
        fmt: Format = "json" if bare else req.format
        problems = list(taken.problems)
        if not problems:
            try:
                final = self._load(dest, job_dir, bare=bare)  # the moved request must still resolve
            except RequestError as exc:
                problems = list(exc.problems)
            else:
                self._area.claimed(job_id, job_dir, dest, final.name, fmt, bare, final)
                return
        self._area.fail(job_id, job_dir, dest, req.name, fmt, tuple(problems), endpoint=req.endpoint, model=req.model)

    def _refuse(
        self, path: Path, why: RequestError | Problem, *, bare: bool = False, held: Iterable[Path] = ()
    ) -> None:
        """A request that cannot be used: claimed like any other (the rename decides), then failed.

        ``why`` is the error of its loading (with the endpoint and model it named, when they could be read),
        or the one problem that kept it from being read at all.
        """
        taken = self._area.take(path, self._cands.get(path))
        if taken is None:
            return
        job_id, job_dir, dest = taken.job_id, taken.job_dir, taken.request_file
        for file in held:  # the user meant these for that request, not to be sent alone as bare media
            history = self._hist.get(file)
            if self.inbox.accept_media and history is not None and file.parent == self._root and file not in self._kept:
                self._held[file] = history.sig
                self._drop_cand(file)
        fmt: Format = "toml" if path.suffix.lower() == ".toml" and not bare else "json"
        if isinstance(why, Problem):
            self._area.fail(job_id, job_dir, dest, request_name(path), fmt, (why,))
            return
        self._area.fail(
            job_id,
            job_dir,
            dest,
            request_name(path),
            fmt,
            tuple(why.problems),
            endpoint=why.endpoint,
            model=why.model,
        )
