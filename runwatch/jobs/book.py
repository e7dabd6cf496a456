"""The jobs followed, and the one way a job changes state.

:meth:`Book.move` is the only place a followed job's state changes. It checks the move against the state table,
then does what entering the state means, in this order: a final state files the request away as a done or failed
record and removes placed media (kept for ``needs_attention``: the task may still read them); the journal commits
the change; the caps and the money guard hear of it; the status file is rewritten; one log line says so, at the
level a person needs (warnings and errors for requests that did not succeed).

Nothing here is lost to a full or read-only disk: the journal is the engine's :class:`~runwatch.jobs.ledger.Ledger`
(a change it cannot record is kept and recorded later), and a status file that cannot be written is owed and
written again (:meth:`Book.write_owed`) until the file shows the truth.

Only the engine's thread calls a book.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runwatch.clock import now_iso
from runwatch.config import InboxConfig
from runwatch.errors import InboxError, OutboxError, RunwatchError
from runwatch.jobs.job import Job
from runwatch.jobs.states import FINAL, State, check_move
from runwatch.media import Placed
from runwatch.outbox import StatusFormat, outbox_of, status_document, status_path, write_status
from runwatch.workrecords import RecordPlace, move_record

if TYPE_CHECKING:
    from runwatch.budget import Charge
    from runwatch.guard import MoneyGuard
    from runwatch.jobs.lifecycle import Finish
    from runwatch.pricing import Estimate
    from runwatch.request import Request
    from runwatch.store import Store

__all__ = ["Book", "Runtime"]

_WARN = frozenset({State.REJECTED, State.FAILED})
_NOT_HOLDING = frozenset({State.ACCEPTED, State.HELD}) | FINAL  # no slot at Runway, nothing spent in flight


@dataclass
class Runtime:
    """What the engine knows of a job beyond its journal row; rebuilt after a restart."""

    busy: str | None = None  # the kind of work in flight for it, if any
    samples: list[Any] = field(default_factory=list)  # progress samples for the poll schedule
    poll_failures: int = 0
    download_failures: int = 0
    empty_successes: int = 0
    not_running_at: float | None = None  # latest moment the task was surely not running yet (for next_poll)
    charge: tuple[tuple[Any, ...], Charge | None] | None = None  # charge_of and the fields it was read from
    request: Request | None = None  # loaded once at the claim (local paths), carried through
    estimate: Estimate | None = None
    last_progress_log: float = float("-inf")
    cancel_sent: bool = False  # Runway took the DELETE: what is left is reading the task's end
    wake: float | None = None  # monotonic end of a back-off or hold ...
    wake_for: float | None = None  # ... and the journal's epoch ``not_before`` it stands for
    proving: tuple[float, Finish] | None = None  # a create with no answer: when it left, and its end without proof


class Book:
    """The followed jobs by id and by name, their runtime records, and the counts the caps need."""

    def __init__(
        self,
        store: Store,
        inboxes: Mapping[str, InboxConfig],
        money: MoneyGuard,
        transports: Mapping[str, Any],
        *,
        remove: Callable[[Callable[[], None]], None],
        log: Any,
    ) -> None:
        self.store = store
        self.inboxes = inboxes  # the engine's map: changes with a reload
        self.money = money
        self.transports = transports
        self._remove = remove  # runs a removal of placed media off the engine's thread
        self.log = log
        self.jobs: dict[str, Job] = {}
        self.rt: dict[str, Runtime] = {}
        self._names: dict[tuple[str, str], str] = {}  # (inbox, name) of every followed job -> its id
        # Jobs sent or on their way (a create in flight counts: its task may exist) until their task ends,
        # counted as they go, so the caps cost no pass over thousands of waiting jobs.
        self._flying: dict[str, tuple[str, str]] = {}  # job id -> (inbox, model)
        self.fly_inbox: Counter[str] = Counter()
        self.fly_model: Counter[str] = Counter()
        # Jobs that may be accepted (a superset, pruned by dispatch): a turn of the loop looks at these only.
        self.ready: set[str] = set()
        # Called on the engine's thread after a job entered a new state (metrics, notifications): each must
        # only note or queue what it needs and return at once; one that raises is logged and skipped.
        self.listeners: list[Callable[[Job], None]] = []
        # Status files that could not be written, by path -> the job (followed or not) they must show.
        self.owed_status: dict[Path, Job] = {}
        self.status_error: str | None = None

    # -- the narrow view the money guard reads ------------------------------------------------------

    def job(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def charge_memo(self, job_id: str) -> Runtime:
        return self.rt[job_id]

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.jobs

    def __iter__(self) -> Iterator[Job]:
        return iter(list(self.jobs.values()))

    def __len__(self) -> int:
        return len(self.jobs)

    @property
    def in_flight(self) -> int:
        return len(self._flying)

    # -- following ----------------------------------------------------------------------------------

    def track(self, job: Job, request: Request | None = None) -> None:
        self.jobs[job.id] = job
        self._names[(job.inbox, job.name)] = job.id
        runtime = self.rt.setdefault(job.id, Runtime())
        if request is not None:
            runtime.request = request
        self.money.followed(job)
        if job.state == State.ACCEPTED:
            self.ready.add(job.id)
        if job.state not in _NOT_HOLDING:
            self.fly(job)
            if job.state == State.DOWNLOADING:
                self._land(job.id)

    def untrack(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        self.rt.pop(job.id, None)
        self._land(job.id)
        self.money.landed(job.id)
        if self._names.get((job.inbox, job.name)) == job.id:
            del self._names[(job.inbox, job.name)]

    def unique_name(self, inbox: str, name: str) -> str:
        """``name``, or ``name.2``, ``name.3`` … while a followed job of the inbox has it."""
        if (inbox, name) not in self._names:
            return name
        n = 2
        while (inbox, f"{name}.{n}") in self._names:
            n += 1
        return f"{name}.{n}"

    def reserve_name(self, job: Job) -> None:
        """The next claim of this name is ``NAME.2`` even before this job is recorded."""
        self._names[(job.inbox, job.name)] = job.id

    def release_name(self, job: Job) -> None:
        self._names.pop((job.inbox, job.name), None)

    def named(self, name: str, inbox: str | None) -> Job | None:
        """The newest followed job called ``name`` (in ``inbox``, when given)."""
        found = [j for j in self.jobs.values() if j.name == name and (inbox is None or j.inbox == inbox)]
        return max(found, key=lambda j: j.seq) if found else None

    def fly(self, job: Job) -> None:
        """The job takes a slot at Runway (its create is on its way, or its task exists)."""
        self.money.flying(job.id)
        if job.id not in self._flying:
            self._flying[job.id] = (job.inbox, job.model or "")
            self.fly_inbox[job.inbox] += 1
            self.fly_model[job.model or ""] += 1

    def _land(self, job_id: str) -> None:
        entry = self._flying.pop(job_id, None)
        if entry is not None:
            self.fly_inbox[entry[0]] -= 1
            self.fly_model[entry[1]] -= 1

    # -- the one way a job changes state -------------------------------------------------------------

    def move(self, job: Job, state: State, **changes: Any) -> None:
        """``job`` enters ``state`` (or stays in it with new fields); see the module docstring."""
        check_move(job.id, job.state, state)
        final = state in FINAL
        if final:
            changes.setdefault("finished_at", now_iso())
            changes.update(self._file_away(job, state))
            if state != State.NEEDS_ATTENTION and job.placed:
                self.remove_placed(job)
                changes["placed"] = []
        entered = state != job.state
        if entered:  # the timeline a job's page shows: every state entered, with its time
            changes["history"] = [*job.history, {"state": state.value, "at": now_iso()}]
        self.store.update(job, state=state, **changes)
        if state == State.ACCEPTED:
            self.ready.add(job.id)
        if state in _NOT_HOLDING or state == State.DOWNLOADING:
            self._land(job.id)  # no longer holding a slot at Runway
        if state in _NOT_HOLDING:
            self.money.landed(job.id)
        if state in (State.ACCEPTED, State.HELD) or (final and job.task_id is None):
            self.money.unreserve(job.id)  # not sent (or surely not created): nothing to reserve
        self.write(job)
        if entered:
            self._log_entered(job)
            self.tell(job)
        if final:
            self.untrack(job)
            self.money.finished(job)

    def learn_end(self, job: Job, state: State, **changes: Any) -> None:
        """Not a move: the journal learns an end that already happened, shown by the work area and the status
        file (a journal restored from an older copy). Recorded as it was, and the job is no longer followed."""
        if state not in FINAL:
            raise ValueError(f"{state} is not an end")
        self.store.update(job, state=state, **changes)
        self._land(job.id)
        self.money.landed(job.id)
        self.money.unreserve(job.id)
        self.untrack(job)
        self.money.finished(job)

    def tell(self, job: Job) -> None:
        """Tell the listeners that ``job`` entered its present state."""
        for listener in self.listeners:
            try:
                listener(job)
            except Exception as exc:  # noqa: BLE001 - a listener's bug must not stop a state change
                self.log.warning("book.listener_failed", listener=repr(listener), error=repr(exc))

    def _log_entered(self, job: Job) -> None:
        log = self.log.bind(request=job.name, job=job.id, task_id=job.task_id, inbox=job.inbox)
        error = job.error if isinstance(job.error, dict) else {}
        if job.state == State.NEEDS_ATTENTION:
            log.error("job.needs_attention", code=error.get("code"), message=error.get("message"))
        elif job.state in _WARN:
            log.warning(f"job.{job.state}", code=error.get("code"), message=error.get("message"))
        elif job.state == State.HELD:
            log.info("job.held", code=error.get("code"), reason=error.get("message"))
        elif job.state == State.SUCCEEDED:
            log.info("job.succeeded", outputs=[o["file"] for o in job.outputs], credits=job.credits)
        else:
            log.info(f"job.{job.state}")

    def _file_away(self, job: Job, state: State) -> dict[str, Any]:
        """A final job's request becomes a done or failed record in its inbox's work area."""
        inbox = self.inboxes.get(job.inbox)
        if inbox is None or not job.job_dir or Path(job.job_dir).parent.name != "jobs":
            return {}
        where: RecordPlace = "done" if state in (State.SUCCEEDED, State.CANCELLED) else "failed"
        try:
            job_dir, request = move_record(inbox, Path(job.job_dir), Path(job.request_path or ""), where)
        except InboxError as exc:
            self.log.error("work.move_failed", request=job.name, job=job.id, error=str(exc))
            return {}
        return {"job_dir": str(job_dir), "request_path": str(request)}

    def remove_placed(self, job: Job) -> None:
        """Media placed for the job are removed off the engine's thread (unless the transport keeps them)."""
        for record in job.placed:
            transport = self.transports.get(str(record.get("transport")))
            if transport is None or not record.get("handle"):
                continue
            if getattr(getattr(transport, "config", None), "keep", False):
                continue
            placed = Placed("", str(record["transport"]), str(record["handle"]), record.get("expires_at"))
            self._remove(removal(transport, placed))

    # -- the status file -----------------------------------------------------------------------------

    def outbox_of(self, job: Job) -> Path | None:
        """Where the job's outputs and status file go: its inbox's outbox, or the folder it was submitted for."""
        return outbox_of(job, self.inboxes.get(job.inbox))

    def write(self, job: Job) -> bool:
        """Rewrite the job's status file; True when it is written.

        A failure (a full or read-only outbox) is logged once and never raised: the status file is owed, and
        :meth:`write_owed` writes it again, from the job as it is then, until it is written. Owed files are
        kept by path, so a later request of the same name that writes the file first is never overwritten.
        """
        outbox = self.outbox_of(job)
        if outbox is None:
            return True
        fmt: StatusFormat = "toml" if job.format == "toml" else "json"
        try:
            path = status_path(outbox, job.name, fmt)
        except OutboxError as exc:  # a name that can never be a file name: nothing to retry
            self.log.error("outbox.status_failed", request=job.name, error=str(exc))
            return False
        document, durable = status_document(job), job.state in FINAL
        try:
            try:
                write_status(outbox, job.name, fmt, document, durable=durable)
            except OutboxError:
                if outbox.is_dir():
                    raise
                outbox.mkdir(parents=True, exist_ok=True)  # taken away while we run: made again
                write_status(outbox, job.name, fmt, document, durable=durable)
        except (OutboxError, OSError) as exc:
            if path not in self.owed_status:
                self.log.error("outbox.status_failed", request=job.name, error=str(exc), retried=True)
            self.owed_status[path] = job
            self.status_error = str(exc)
            return False
        if self.owed_status.pop(path, None) is not None:
            self.log.info("outbox.status_written", request=job.name, job=job.id, state=job.state, late=True)
        if not self.owed_status:
            self.status_error = None
        return True

    def write_owed(self) -> bool:
        """Write the owed status files again; True when none is left."""
        for job in list(self.owed_status.values()):
            self.write(job)
        return not self.owed_status


def removal(transport: Any, placed: Placed) -> Callable[[], None]:
    return lambda: transport.remove(placed)


def quietly(fn: Callable[[], None]) -> None:
    """Run a clean-up whose failure changes nothing for the job (a placed object left to expire)."""
    with contextlib.suppress(RunwatchError):
        fn()
