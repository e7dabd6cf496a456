"""An inbox's work area, and the moves that claim, refuse and file away what is dropped in the inbox.

::

    WORK/jobs/JOB_ID/       a claimed request and its media (hard links), at their inbox-relative paths
    WORK/failed/JOB_ID/     a request that cannot be used, whole, with whatever came with it
    WORK/control/           claimed NAME.cancel / NAME.approve files
    WORK/taken/             which request took each media file last, and when (see runwatch.taken)
    WORK/shared/JOB_ID/     an inbox's media file taken out of the inbox where the job dir holds only a copy

A claim is ``mkdir WORK/jobs/JOB_ID``, hard links of the media it names into it, then ``os.rename`` of the
request into it; the work area is on the inbox's filesystem, so the rename is atomic and, when two watchers (two
runwatch processes) race for one file, it decides: the loser undoes its links and drops the file without a
word. When several nodes share the inbox (a PostgreSQL journal) the journal decides first: the node whose claim
row for the file (its path and identity) goes in takes it, the others leave it, and a rename NFS reports as
failed although it happened counts as done. Media files stay in the inbox for other requests naming them;
:meth:`WorkArea.sweep` takes them out later. Every step here is a mkdir, a rename or a hard link, and the only
names removed are a claim's own links (or another link of a file that stays in a job dir); nothing deletes or
overwrites a user's file, and no path is followed out of the inbox. The watcher decides *what* to take; this
module is *how*, with the log lines and the items delivered, so everything done to the files in an inbox can be
reviewed in one place.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import structlog

from runwatch import taken
from runwatch.catalog import format_path
from runwatch.errors import InboxError, Problem, RunwatchError
from runwatch.localmedia import inside
from runwatch.mounts import same_filesystem
from runwatch.requestfile import request_name
from runwatch.taken import Ident, Plan, Record

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from runwatch.config import InboxConfig
    from runwatch.request import Request

__all__ = [
    "RETRY",
    "ClaimGate",
    "Claimed",
    "Control",
    "Format",
    "Refused",
    "Taken",
    "WorkArea",
    "recover",
]

Format = Literal["json", "toml"]

RETRY = 2.0  # after a claim failed for a reason other than losing a race


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
    request: Request | None = field(default=None, compare=False)  # as loaded from the job dir, if it was


@dataclass(frozen=True)
class Refused:
    """A request that cannot be used, already moved to WORK/failed/JOB_ID with whatever came with it.

    ``endpoint`` and ``model``: what the request named, when they could be read, for its status file.
    """

    job_id: str
    inbox: str
    job_dir: Path
    request_file: Path
    name: str
    format: Format
    problems: tuple[Problem, ...]
    endpoint: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class Control:
    """``NAME.cancel`` or ``NAME.approve`` dropped into the inbox (moved to WORK/control; content ignored)."""

    inbox: str
    kind: Literal["cancel", "approve"]
    name: str


Item = Claimed | Refused | Control


@dataclass(frozen=True)
class Taken:
    """A claim made: the request is ``request_file`` in ``job_dir``; ``links`` are the inbox files (as events
    spell them) now also in the job dir, with their identity; ``problems`` the media that could not be taken."""

    job_id: str
    job_dir: Path
    request_file: Path
    problems: tuple[Problem, ...] = ()
    links: tuple[tuple[Path, Ident], ...] = ()


class ClaimGate(Protocol):
    """The journal shared by several nodes, which decides who claims a request file (see runwatch.nodes)."""

    def claim(self, inbox: str, path: str, identity: str, job_id: str) -> bool: ...

    def unclaim(self, inbox: str, path: str, identity: str, job_id: str) -> None: ...


class Due(Protocol):
    """The watcher's record of a file waiting to be taken: when to look at it again."""

    due: float


# -- the moves --------------------------------------------------------------------------------------------


class WorkArea:
    """The work area of one inbox and every move into it.

    ``root`` and ``work`` are absolute, as configured. The watcher's bookkeeping comes in as callables:
    ``forget`` a path it no longer needs to follow, ``root_gone`` (is the inbox folder missing, in which case
    nothing is forgotten), and ``deliver`` for what was taken. ``clock`` dates the retries. ``claims``: the
    journal several nodes share, whose claim row decides before the rename (None: the rename alone decides).
    """

    def __init__(
        self,
        inbox: str,
        root: Path,
        work: Path,
        *,
        deliver: Callable[[Item], None],
        forget: Callable[[Path], None],
        root_gone: Callable[[], bool],
        clock: Callable[[], float],
        log: FilteringBoundLogger,
        claims: ClaimGate | None = None,
    ) -> None:
        self.inbox = inbox
        self._claims = claims
        self.root = root
        self.work = work
        self._deliver = deliver
        self._forget = forget
        self._root_gone = root_gone
        self._clock = clock
        self._log = log

    def prepare(self) -> None:
        """The work area, on the inbox's filesystem so that claims are atomic renames."""
        work = self.work
        try:
            for sub in ("jobs", "failed", "control"):
                (work / sub).mkdir(parents=True, exist_ok=True)
            same = same_filesystem(work, self.root)
        except OSError as exc:
            raise InboxError(f"{work}: the work area cannot be made: {exc.strerror}") from exc
        if not same:
            raise InboxError(f"{work}: the work area must be on the same filesystem as the inbox {self.root}")

    def contains(self, path: Path) -> bool:
        """Is ``path`` (spelled under the inbox path) the work area or inside it?"""
        return path == self.work or self.work in path.parents

    def lex(self, real: Path | str) -> Path:
        """A resolved path inside the inbox, spelled under the inbox path as configured (as events spell it)."""
        return self.root / os.path.relpath(real, os.path.realpath(self.root))

    def take(self, path: Path, cand: Due | None, req: Request | None = None) -> Taken | None:
        """The claim: a new job dir, the media ``req`` names linked into it, the file renamed into it.

        None if someone else was first (the links are undone), or it failed (then ``cand`` is due again after a
        pause).
        """
        job_id = _new_job_id()
        claim: str | None = None
        if self._claims is not None:  # several nodes share the inbox: the journal decides who takes the file
            claim = self._journal_claim(path, cand, job_id)
            if claim is None:
                return None
        made = self._job_dir(cand, job_id, fixed=claim is not None)
        if made is None:
            self._unclaim(path, claim, job_id)
            return None
        job_id, job_dir = made
        dest = job_dir / path.name
        plan, where, problems = self._plan(req) if req is not None else ([], {}, [])
        links: list[tuple[Plan, Ident]] = []
        taken_at = _now_iso()
        try:
            if plan:
                taken.write_plan(job_dir, path.name, req.name if req else "", taken_at, plan)
                links = self._link(plan, where, job_dir, problems)
                if len(links) < len(plan) and not problems:  # a file went since the request was read
                    self._undo(job_dir)
                    if cand is not None:
                        cand.due = self._clock()  # read again: it waits for the file, or says where it went
                    return None
            _rename(path, dest, claim)
        except OSError as exc:
            self._undo(job_dir)
            self._unclaim(path, claim, job_id)
            if isinstance(exc, FileNotFoundError) and not os.path.lexists(path):
                if not self._root_gone():
                    self._forget(path)  # another watcher took it; the rescan finds it should it come back
            else:
                self._log.error("inbox.claim_failed", file=path.name, error=str(exc))
                if cand is not None:
                    cand.due = self._clock() + RETRY
            return None
        self._forget(path)
        if plan:
            for item, ident in links:
                with contextlib.suppress(OSError):  # a record only explains; the claim stands without it
                    taken.remember(self.work, Record(item.source, req.name if req else "", job_id, taken_at, ident))
            with contextlib.suppress(OSError):
                (job_dir / taken.MANIFEST).unlink()
        kept = tuple((self.root / item.source, ident) for item, ident in links)
        return Taken(job_id, job_dir, dest, tuple(problems), kept)

    def _journal_claim(self, path: Path, cand: Due | None, job_id: str) -> str | None:
        """The claim row for the file as it is now: its identity when this node won, else None (another node
        has it, or the journal cannot be reached: then the file is due again after a pause)."""
        assert self._claims is not None
        try:
            ident = claim_identity(os.lstat(path))
        except FileNotFoundError:
            if not self._root_gone():
                self._forget(path)
            return None
        except OSError as exc:
            self._log.error("inbox.claim_failed", file=path.name, error=str(exc))
            if cand is not None:
                cand.due = self._clock() + RETRY
            return None
        try:
            won = self._claims.claim(self.inbox, self._rel(path), ident, job_id)
        except RunwatchError as exc:
            self._log.warning("inbox.claim_failed", file=path.name, error=str(exc))
            if cand is not None:
                cand.due = self._clock() + RETRY
            return None
        if not won:
            self._forget(path)  # another node took it; the rescan finds it should it come back
            return None
        return ident

    def _unclaim(self, path: Path, ident: str | None, job_id: str) -> None:
        """A claim row whose rename did not happen: the file may be claimed again."""
        if self._claims is None or ident is None:
            return
        try:
            self._claims.unclaim(self.inbox, self._rel(path), ident, job_id)
        except RunwatchError as exc:  # left to a later start: a claim of a node gone is taken again
            self._log.warning("inbox.unclaim_failed", file=path.name, error=str(exc))

    def _undo(self, job_dir: Path) -> None:
        """A claim that did not happen: its links and plan removed, and the job dir if nothing else is in it."""
        try:
            done = taken.settle(self.root, self.work, job_dir)
        except OSError as exc:  # left for recover() at the next start
            self._log.error("inbox.undo_failed", job_dir=str(job_dir), error=str(exc))
            return
        if any(not d.startswith("claim ") for d in done):
            self._log.warning("inbox.claim_undone", job_dir=str(job_dir), steps=done)
        _remove_empty(job_dir)

    def _job_dir(self, cand: Due | None, job_id: str, *, fixed: bool) -> tuple[str, Path] | None:
        """A new job dir, ``job_id`` or (unless ``fixed``: the journal's claim names it) another fresh id."""
        jobs = self.work / "jobs"
        for attempt in range(5):
            if attempt:
                if fixed:
                    break
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
            cand.due = self._clock() + RETRY
        return None

    def _plan(self, req: Request) -> tuple[list[Plan], dict[str, str], list[Problem]]:
        """The links a claim of ``req`` makes: each media file at its inbox-relative path, and a symlink that
        named one kept itself under ``.links/``; problems for what is not a file waiting in the inbox."""
        problems: list[Problem] = []
        plan: list[Plan] = []
        where_of: dict[str, str] = {}  # a link's place in the job dir -> the request field that named it
        root = os.path.realpath(self.root)
        made: dict[str, str] = {}
        for media in req.media:
            where = format_path(media.field)
            rel = os.path.normpath(media.rel)
            target = media.file
            if (
                os.path.isabs(rel)
                or rel.split(os.sep)[0] == ".."
                or not inside(str(target), root)
                or self.contains(self.lex(target))
            ):
                problems.append(Problem(where, f"{media.rel} is not a file waiting in the inbox"))
                continue
            source = os.path.relpath(target, root)
            if made.get(rel, source) != source or (rel == taken.MANIFEST):
                problems.append(Problem(where, f"{media.rel} clashes with another file of this request"))
                continue
            if rel in made:
                continue  # the same file named twice
            made[rel] = source
            plan.append(Plan(rel, source))
            where_of[rel] = where
            if os.path.islink(self.root / rel):  # keep the link itself too, out of the way of the request's paths
                plan.append(Plan(os.path.join(".links", rel), rel))
                where_of[plan[-1].dest] = where
        return plan, where_of, problems

    def _link(
        self, plan: list[Plan], where_of: dict[str, str], job_dir: Path, problems: list[Problem]
    ) -> list[tuple[Plan, Ident]]:
        """Makes the plan's links (the inbox is not touched); those made, with the identity of the inbox file."""
        linked: list[tuple[Plan, Ident]] = []
        copies = 0
        for item in plan:
            source, dest, where = self.root / item.source, job_dir / item.dest, where_of.get(item.dest, "")
            try:
                st = os.lstat(source)
                if not (stat.S_ISREG(st.st_mode) or (stat.S_ISLNK(st.st_mode) and item.dest != item.source)):
                    problems.append(Problem(where, f"{item.source} is not a regular file"))
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                if os.path.lexists(dest):
                    problems.append(Problem(where, f"{item.dest} clashes with another file of this request"))
                    continue
                copies += not taken.link(source, dest)
            except FileNotFoundError:
                continue  # not taken now: the request is read again
            except OSError as exc:
                problems.append(Problem(where, f"{item.source} could not be taken: {exc.strerror or exc}"))
                continue
            linked.append((item, taken.identity(st)))
        if copies:
            self._log.info("inbox.copied", job_dir=str(job_dir), files=copies, why="no hard links here")
        return linked

    def sweep(self, path: Path, ident: Ident, job_id: str) -> str:
        """Takes a media file out of the inbox once no request waits for it (see :func:`runwatch.taken.sweep`)."""
        outcome = taken.sweep(self.root, self.work, self._rel(path), ident, job_id)
        self._log.info("inbox.swept", file=self._rel(path), outcome=outcome, job_id=job_id)
        return outcome

    def taken_by(self, rel: str) -> Record | None:
        """Which request took the inbox file at ``rel`` (relative to the inbox) last, and when."""
        return taken.lookup(self.work, rel)

    def _rel(self, path: Path) -> str:
        return os.path.relpath(path, self.root)

    def claimed(
        self,
        job_id: str,
        job_dir: Path,
        request_file: Path,
        name: str,
        fmt: Format,
        bare: bool,
        request: Request | None = None,
    ) -> None:
        self._log.info("inbox.claimed", name=name, job_id=job_id, bare=bare)
        self._emit(Claimed(job_id, self.inbox, job_dir, request_file, name, fmt, bare, request))

    def fail(
        self,
        job_id: str,
        job_dir: Path,
        request_file: Path,
        name: str,
        fmt: Format,
        problems: tuple[Problem, ...],
        *,
        endpoint: str | None = None,
        model: str | None = None,
    ) -> None:
        """A taken request that cannot be used: to WORK/failed/JOB_ID, then delivered as refused."""
        failed = self.work / "failed" / job_id
        try:
            failed.parent.mkdir(parents=True, exist_ok=True)
            os.rename(job_dir, failed)
            job_dir, request_file = failed, failed / request_file.name
        except OSError as exc:  # left in jobs/: recover() finds it at the next start
            self._log.error("inbox.move_failed", job_dir=str(job_dir), error=str(exc))
        self._log.warning("inbox.refused", name=name, job_id=job_id, problems=[str(p) for p in problems])
        self._emit(Refused(job_id, self.inbox, job_dir, request_file, name, fmt, problems, endpoint, model))

    def take_control(self, path: Path, cand: Due) -> None:
        kind: Literal["cancel", "approve"] = "cancel" if path.suffix.lower() == ".cancel" else "approve"
        name = request_name(path)
        folder = self.work / "control"
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
            cand.due = self._clock() + RETRY
            return
        self._forget(path)
        self._log.info("inbox.control", kind=kind, name=name)
        self._emit(Control(self.inbox, kind, name))

    def _emit(self, item: Item) -> None:
        try:
            self._deliver(item)
        except Exception as exc:  # noqa: BLE001 - the claim stands (recover() finds it); keep watching
            self._log.exception("inbox.deliver_failed", error=str(exc))


def claim_identity(st: os.stat_result) -> str:
    """A request file as a claim row names it: inode, size and modification time. Not the device: an NFS
    client numbers its mounts itself, so two machines see one file on different devices."""
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _rename(path: Path, dest: Path, ident: str | None) -> None:
    """``os.rename``, except that a rename NFS reports as failed although it happened (the reply to a
    retransmitted request) counts as done: the source is gone and the destination is the same file."""
    try:
        os.rename(path, dest)
    except OSError:
        if ident is None or os.path.lexists(path):
            raise
        try:
            same = claim_identity(os.lstat(dest)) == ident
        except OSError:
            same = False
        if not same:
            raise


def _now_iso() -> str:
    return f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"


def _remove_empty(folder: Path) -> None:
    """Removes ``folder`` and the empty folders in it; what holds a file stays."""
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()


def _new_job_id() -> str:
    """``YYYYMMDDTHHMMSSZ-xxxxxxxx``: the claim's UTC time and 8 random hex digits."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def recover(inbox: InboxConfig, skip: Collection[str] = (), only: Collection[str] | None = None) -> list[Path]:
    """Job dirs left in WORK/jobs (claimed before a crash), oldest first; those named in ``skip`` (claims other
    live nodes are making on a shared inbox) are left alone, and only those in ``only`` looked at when given.

    A claim cut short is settled first (:func:`runwatch.taken.settle`): finished when its request got into the
    job dir, undone when it did not, so the request, still in the inbox, is claimed again whole. Empty
    half-made job dirs are removed.
    """
    jobs = inbox.work / "jobs"
    try:
        entries = sorted(jobs.iterdir())
    except OSError:
        return []
    log = structlog.get_logger()
    found: list[Path] = []
    for entry in entries:
        if (
            entry.is_symlink()
            or not entry.is_dir()
            or entry.name in skip
            or (only is not None and entry.name not in only)
        ):
            continue
        try:
            done = taken.settle(Path(os.path.abspath(inbox.path)), Path(os.path.abspath(inbox.work)), entry)
        except OSError as exc:
            log.error("inbox.settle_failed", job_dir=str(entry), error=str(exc))
            continue  # not handed on half-made; the next start tries again
        if done:
            log.info("inbox.claim_settled", job_dir=str(entry), steps=done)
        if "claim undone" in done:
            _remove_empty(entry)
        try:
            entry.rmdir()  # only succeeds when empty: a crash between mkdir and the rename
        except OSError:
            if entry.exists():
                found.append(entry)
    return found
