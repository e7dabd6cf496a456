"""Media shared by several requests, as the inbox watcher keeps them: its half of the shared-media bookkeeping.

A media file a claim took stays in the inbox, *kept*, while waiting requests name it (or might: not read yet,
see :mod:`runwatch.wanted`) and for the settle time after the last claim that took it; then it is swept out
(:mod:`runwatch.taken`). After a restart a kept file is recognised by its second link and its taken record.
Bare media and kept files are *parked*: they wait on what requests name, and are looked at again when a request
loads or goes.

:class:`SharedMedia` is a part of :class:`runwatch.inbox.InboxWatcher` (a mixin run on the watcher's thread): the
watcher sets the attributes listed on the class and provides the two methods it calls back. The watcher's
candidate record, :class:`_Cand`, lives here too, since a kept file is a candidate of its own kind.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from runwatch.readiness import History
from runwatch.request import classify
from runwatch.taken import Ident, identity
from runwatch.wanted import Wanted
from runwatch.workarea import RETRY, WorkArea

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from runwatch.config import InboxConfig


@dataclass(slots=True)
class _Cand:
    kind: Literal["request", "control", "media", "kept"]
    due: float
    names: frozenset[Path] | None = None  # the files a request names, once it has loaded
    missing: bool = False  # it names files not there yet: any new file may be one


@dataclass(slots=True)
class _Kept:
    """A media file a claim took and left in the inbox for others: what it was, which job took it last, and
    until when it stays for requests still on their way."""

    ident: Ident
    job_id: str
    until: float


class SharedMedia:
    """Kept files: taken, recognised, swept out once no request waits; parked media woken when requests change."""

    # Set by the watcher (see ``InboxWatcher.__init__``).
    inbox: InboxConfig
    _clock: Callable[[], float]
    _log: FilteringBoundLogger
    _root: Path
    _area: WorkArea
    _hist: dict[Path, History]
    _cands: dict[Path, _Cand]
    _parked: set[Path]
    _wanted: Wanted
    _kept: dict[Path, _Kept]

    def _consider(self, path: Path) -> None:
        raise NotImplementedError  # the watcher's: a top-level file as a candidate

    def _drop_cand(self, path: Path) -> _Cand | None:
        raise NotImplementedError  # the watcher's: a candidate and its indexes forgotten

    def _recognise(self, path: Path, st: os.stat_result) -> bool:
        """A file with a second link, seen for the first time (after a restart): kept, if it is one taken."""
        record = self._area.taken_by(os.path.relpath(path, self._root))
        if record is None or record.ident != identity(st):
            return False
        self._keep(path, record.ident, record.job_id)
        return True

    def _set_names(self, path: Path, cand: _Cand, names: frozenset[Path]) -> None:
        """A request has loaded: what it names, indexed; media waiting on requests are looked at again."""
        self._wanted.read(path, cand.names, names)
        if names != cand.names:
            cand.names = names
            self._wake_media()

    def _wake_media(self) -> None:
        now = self._clock()
        for path in self._parked:
            self._cands[path].due = now

    def _keep(self, path: Path, ident: Ident, job_id: str) -> None:
        """A media file taken and left in the inbox: it stays while wanted, and for the settle time."""
        until = self._clock() + self.inbox.settle
        self._kept[path] = _Kept(ident, job_id, until)
        cand = self._cands.get(path)
        if cand is None:
            self._cands[path] = cand = _Cand("kept", until)
        cand.kind, cand.due = "kept", until
        self._parked.add(path)

    def _taken(self, rel: str) -> tuple[str, str] | None:
        """Who took the inbox file at ``rel`` last, and when: to say so to a request that names it later."""
        record = self._area.taken_by(rel)
        return None if record is None else (record.request, record.taken_at)

    def _examine_kept(self, path: Path, cand: _Cand, now: float) -> None:
        """A media file taken and left in the inbox: swept out once no request waits for it."""
        kept = self._kept.get(path)
        if kept is None:
            self._drop_cand(path)
            return
        if self._wanted(path):
            cand.due = math.inf
            return
        if now < kept.until:
            cand.due = kept.until
            return
        if self._unseen_requests(path.parent):  # a request the observer has not reported yet may name it
            cand.due = now + max(RETRY, self.inbox.settle)
            return
        try:
            outcome = self._area.sweep(path, kept.ident, kept.job_id)
        except OSError as exc:
            self._log.error("inbox.sweep_failed", file=str(path), error=str(exc))
            cand.due = now + max(RETRY, self.inbox.settle)
            return
        self._kept.pop(path, None)
        self._hist.pop(path, None)
        self._drop_cand(path)
        if outcome == "changed" and path.parent == self._root:  # its owner put a new file there
            self._consider(path)

    def _unseen_requests(self, folder: Path) -> bool:
        """Request files in ``folder`` that no event or scan has brought yet (a polling observer reports them a
        cycle late): taken in now, as waiting and unread, so a shared file stays until they are read."""
        found = False
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    path = Path(entry.path)
                    if path not in self._cands and classify(entry.name, self.inbox.accept_media) == "request":
                        self._consider(path)
                        found = True
        except OSError:
            return False  # the folder is not there to list: the rest of the watcher deals with that
        return found
