"""The journal as the daemon's engine writes it: a change that cannot be recorded is kept, not lost.

A journal on a disk that is full, read-only or failing refuses writes. The engine must not lose what it knows
then (a task in flight, an answer from Runway), nor act on what it could not record. :class:`Ledger` wraps the
store and keeps that rule in one place:

- A change to a job that cannot be committed is applied to the job in memory all the same and kept, in order,
  as owed; owed changes are written again (:meth:`Ledger.flush`, from the engine's loop) until they are all in,
  then the journal is healthy again. A newer change to a job waits behind its owed ones, so the journal ends
  as if nothing had failed.
- A rejected request's row that cannot be added is owed the same way (its status file is written at once).
- The task id Runway named is owed, never dropped: a task that exists is followed from memory.
- A create's intent is the one write that is never owed. When it cannot be committed (or the job still has
  owed changes) :meth:`record_intent` raises :class:`IntentNotRecorded` and the create is not sent: nothing is
  paid for that the journal does not know of.
- New claims (:meth:`add_many`) raise as before: the engine keeps the claims waiting in their job dirs.

Only :class:`~runwatch.errors.JournalUnwritable` (the disk refused, or the PostgreSQL server could not be
reached: a restart, a network cut) is kept for later; a write refused for good (a constraint) raises as it
always did. An intent refused because the node no longer holds the job's lease
(:class:`~runwatch.errors.LeaseLost`) is not sent either, but leaves the journal healthy.

Reads go straight to the store. The sending thread calls the three intent methods by job id; everything else
comes from the engine's thread. One lock orders the owed changes of both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runwatch.clock import now_iso
from runwatch.errors import IntentNotRecorded, JournalError, JournalUnwritable, LeaseLost
from runwatch.jobs.job import FIELDS, Job

if TYPE_CHECKING:
    from runwatch.budget import MoneyCheck
    from runwatch.store import Store
    from runwatch.store.protocol import ClaimRow, Command, Listening, NodeRow, TakenOver

__all__ = ["Ledger"]

_MUTABLE = frozenset(FIELDS) - {"id", "seq"}


@dataclass
class _Change:
    """Fields of one job's row, by id (a stand-in job carries the id: the followed one is never touched)."""

    fields: dict[str, Any]


@dataclass
class _Task:
    task_id: str
    estimated_credits: float | None


@dataclass
class _Clear:
    pass


@dataclass
class _Add:
    job: Job


_Owed = _Change | _Task | _Clear | _Add


class Ledger:
    """A :class:`~runwatch.store.Store` whose job writes never lose a change (see the module docstring)."""

    def __init__(self, store: Store, log: Any) -> None:
        self.store = store
        self.log = log
        self._lock = threading.RLock()
        self._owed: dict[str, list[_Owed]] = {}  # job id -> its changes not yet recorded, oldest first
        self.error: str | None = None  # why the journal last refused a write; None once it takes them again

    # -- health -------------------------------------------------------------------------------------

    @property
    def owed(self) -> int:
        """How many jobs have changes waiting to be recorded."""
        with self._lock:
            return len(self._owed)

    def owes(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._owed

    @property
    def healthy(self) -> bool:
        """The journal took the last write and nothing is owed."""
        with self._lock:
            return self.error is None and not self._owed

    def _refused(self, exc: JournalError) -> None:
        if self.error is None:
            self.log.error(
                "journal.unwritable",
                error=str(exc),
                meanwhile="no new requests are taken and no create is sent; tasks are followed from memory",
            )
        self.error = str(exc)

    def _took(self) -> None:
        if self.error is not None and not self._owed:
            self.error = None
            self.log.warning("journal.writable", note="every change kept in memory is recorded; work goes on")

    def flush(self) -> bool:
        """Write every owed change, oldest first per job; True when none is left. With nothing owed after a
        refused write, one small write tells whether the journal takes writes again."""
        with self._lock:
            for job_id in list(self._owed):
                if not self._flush_one(job_id):
                    return False
            if self.error is not None:  # nothing owed, but the last write was refused: try one
                try:
                    self.store.probe()
                except JournalUnwritable as exc:
                    self._refused(exc)
                    return True
            self._took()
            return True

    def _flush_one(self, job_id: str) -> bool:
        owed = self._owed.get(job_id, [])
        while owed:
            try:
                self._write(job_id, owed[0])
            except JournalUnwritable as exc:
                self._refused(exc)
                return False
            except JournalError as exc:  # refused for good (a constraint): retrying would block everything
                self.log.error("journal.change_dropped", job=job_id, change=repr(owed[0]), error=str(exc))
            owed.pop(0)
        self._owed.pop(job_id, None)
        return True

    def _write(self, job_id: str, item: _Owed) -> None:
        match item:
            case _Change(fields):
                self.store.update(Job(id=job_id, name="", inbox="", format="json"), **fields)
            case _Task(task_id, credits):
                self.store.record_task(job_id, task_id, credits)
            case _Clear():
                self.store.clear_intent(job_id)
            case _Add(job):
                self.store.add(job)

    def _owe(self, job_id: str, item: _Owed) -> None:
        owed = self._owed.setdefault(job_id, [])
        if isinstance(item, _Change) and owed and isinstance(owed[-1], _Change):
            owed[-1].fields.update(item.fields)  # two changes in a row are one
        else:
            owed.append(item)

    # -- job writes (the engine's thread) -----------------------------------------------------------

    def update(self, job: Job, **changes: Any) -> Job:
        """Commit ``changes`` and apply them to ``job``; when the journal refuses, apply them and owe them."""
        bad = set(changes) - _MUTABLE
        if bad:
            raise KeyError(f"{sorted(bad)} are not job fields that may change")
        with self._lock:
            behind = job.id in self._owed
            if not behind:
                try:
                    self.store.update(job, **changes)
                except JournalUnwritable as exc:
                    self._refused(exc)
                else:
                    self._took()
                    return job
            self._owe(job.id, _Change(dict(changes)))
            job.apply(**changes, updated_at=now_iso())
            if behind and self._flush_one(job.id):  # queued behind older changes: written with them if it can be
                self._took()
            return job

    def add(self, job: Job) -> Job:
        """A rejected request's row; owed when the journal refuses it."""
        with self._lock:
            try:
                self.store.add(job)
            except JournalUnwritable as exc:
                self._refused(exc)
                self._owe(job.id, _Add(job))
            else:
                self._took()
            return job

    def add_many(self, jobs: Sequence[Job]) -> set[str]:
        """New claims, in one commit; raises when the journal refuses them (the caller keeps the claims)."""
        with self._lock:
            try:
                recorded = self.store.add_many(jobs)
            except JournalUnwritable as exc:
                self._refused(exc)
                raise
            self._took()
            return recorded

    def save_waiting(self, jobs: Iterable[Job]) -> None:
        """What polls learned, in one commit; raises when refused (the caller keeps the jobs for the next one)."""
        with self._lock:
            # A job with owed changes gets its row right when they are written; this batch would run ahead.
            try:
                self.store.save_waiting([job for job in jobs if job.id not in self._owed])
            except JournalUnwritable as exc:
                self._refused(exc)
                raise
            self._took()

    def probe(self) -> None:
        self.store.probe()

    # -- the sending thread's writes, by job id ------------------------------------------------------

    def record_intent(self, job_id: str, *, first: bool, check: MoneyCheck | None = None) -> str:
        """Commit the intent, or raise :class:`IntentNotRecorded`: then the create must not be sent."""
        with self._lock:
            if job_id in self._owed and not self._flush_one(job_id):
                raise IntentNotRecorded(f"the journal does not have this request's last changes: {self.error}")
            try:
                stamp = self.store.record_intent(job_id, first=first, check=check)  # MoneyHeld passes through
            except LeaseLost as exc:  # the journal is fine; the job is another node's now
                raise IntentNotRecorded(str(exc)) from exc
            except JournalError as exc:
                self._refused(exc)
                raise IntentNotRecorded(str(exc)) from exc
            self._took()
            return stamp

    def clear_intent(self, job_id: str) -> None:
        """Owed when refused: until it is written, a restart counts the create as possibly made (the safe way)."""
        self._by_id(job_id, _Clear())

    def record_task(self, job_id: str, task_id: str, estimated_credits: float | None) -> None:
        """Owed when refused: the engine follows the task from memory meanwhile."""
        self._by_id(job_id, _Task(task_id, estimated_credits))

    def _by_id(self, job_id: str, item: _Task | _Clear) -> None:
        with self._lock:
            behind = job_id in self._owed
            if not behind:
                try:
                    self._write(job_id, item)
                except JournalUnwritable as exc:
                    self._refused(exc)
                else:
                    self._took()
                    return
            self._owe(job_id, item)
            if behind and self._flush_one(job_id):
                self._took()

    # -- reads and commands: straight to the store ---------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        return self.store.get(job_id)

    def find(self, name: str) -> Job | None:
        return self.store.find(name)

    def active(self, inbox: str | None = None) -> list[Job]:
        return self.store.active(inbox)

    def jobs(self, limit: int = 200, name: str | None = None) -> list[Job]:
        return self.store.jobs(limit, name)

    def listing(
        self,
        *,
        state: str | None = None,
        inbox: str | None = None,
        name: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[Job]:
        return self.store.listing(state=state, inbox=inbox, name=name, before=before, limit=limit)

    def recently_finished(self, limit: int) -> list[Job]:
        return self.store.recently_finished(limit)

    def known_dirs(self) -> set[str]:
        return self.store.known_dirs()

    def counts(self) -> dict[str, int]:
        return self.store.counts()

    def add_command(self, kind: str, name: str) -> int:
        return self.store.add_command(kind, name)

    def pending_commands(self) -> list[Command]:
        return self.store.pending_commands()

    def finish_command(self, command_id: int, result: str) -> None:
        self.store.finish_command(command_id, result)

    def command_result(self, command_id: int) -> str | None:
        return self.store.command_result(command_id)

    # -- nodes: the node's own writes, straight to the store (runwatch.nodes handles their failures) --------

    def join(self, name: str, lease: float, *, host: str, pid: int, version: str, node_time: float) -> None:
        self.store.join(name, lease, host=host, pid=pid, version=version, node_time=node_time)

    def beat(self, node_time: float) -> set[str]:
        return self.store.beat(node_time)

    def take_over(self, inboxes: Sequence[str], limit: int, *, mine_too: bool = False) -> list[TakenOver]:
        return self.store.take_over(inboxes, limit, mine_too=mine_too)

    def own(self, job_id: str) -> bool:
        return self.store.own(job_id)

    def leave(self) -> int:
        return self.store.leave()

    def nodes(self) -> list[NodeRow]:
        return self.store.nodes()

    def claim(self, inbox: str, path: str, identity: str, job_id: str) -> bool:
        return self.store.claim(inbox, path, identity, job_id)

    def unclaim(self, inbox: str, path: str, identity: str, job_id: str) -> None:
        self.store.unclaim(inbox, path, identity, job_id)

    def claims_elsewhere(self, inbox: str) -> set[str]:
        return self.store.claims_elsewhere(inbox)

    def adopt_claim(self, inbox: str, job_id: str) -> bool:
        return self.store.adopt_claim(inbox, job_id)

    def orphan_claims(self, inboxes: Sequence[str]) -> list[ClaimRow]:
        return self.store.orphan_claims(inboxes)

    def money_hold(self, check: MoneyCheck) -> tuple[str, str] | None:
        return self.store.money_hold(check)

    def listen_commands(
        self, wake: Callable[[], None], log: Any, nodes: Callable[[], None] | None = None
    ) -> Listening | None:
        return self.store.listen_commands(wake, log, nodes)

    def close(self) -> None:
        self.store.close()
