"""The engine: the loop that takes events and dispatches work, and nothing else.

The threading rule. One thread, the caller of :meth:`Engine.step`, owns every followed :class:`Job`: it alone
changes one, and through :meth:`Book.move` alone its state. Blocking work (uploads, API calls, downloads) runs
on the runner's pool; a worker never changes a job. It returns typed events (``runwatch.jobs.events``) that the
engine's queue hands back to this thread, and so do the inbox watchers and the organization read (callbacks only
post). The one write from a worker is the money rule's: the thread that sends a create records the intent before
each attempt and the task id the moment Runway answers, through the store's small :class:`Intents` interface
keyed by job id, so a crash can lose no more than one round trip. Time comes from one injected clock.

What each answer means is decided in ``runwatch.jobs.lifecycle`` (pure, shared with ``runwatch submit``);
commands are in ``runwatch.jobs.commands``, the restart in ``runwatch.jobs.recovery``.

A full or read-only disk stops nothing that is known. The journal is written through a
:class:`~runwatch.jobs.ledger.Ledger`: while it refuses writes, no new claim is accepted (they wait in their job
dirs), no create is sent, tasks in flight are followed from memory, and what could not be recorded is written
again from this loop, with a back-off, until it is in; status files that could not be written likewise. Then work
goes on by itself. :meth:`Engine.health` says why the daemon is not healthy meanwhile.

On a journal several daemons share, the engine is one node (:class:`runwatch.nodes.Node`, ticked from this loop):
it follows only the jobs it owns, takes over those whose lease ran out, and while it is cut off from the
database it takes no claim and sends no create.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import structlog

from runwatch.api import RunwayClient
from runwatch.catalog import Catalog
from runwatch.clock import Clock, SystemClock
from runwatch.config import Config, InboxConfig
from runwatch.errors import JournalError, JournalUnwritable, RunwatchError
from runwatch.guard import MoneyGuard
from runwatch.jobs import commands, events, following, intake, lifecycle, proving, recovery, sending
from runwatch.jobs.book import Book, quietly
from runwatch.jobs.job import Job
from runwatch.jobs.ledger import Ledger
from runwatch.jobs.lifecycle import Download, Finish, Hold, LookAgain, RetryLater, Wait
from runwatch.jobs.runner import Runner, Work
from runwatch.jobs.states import AT_RUNWAY, State
from runwatch.nodes import Node
from runwatch.polls import PollTimers
from runwatch.proof import OrgLook
from runwatch.scheduler import poll_slack
from runwatch.store import Store
from runwatch.workarea import Claimed, Control, Refused

__all__ = ["Engine"]

HEARTBEAT = 60.0  # seconds between the queue's heartbeat lines
ADOPT_EVERY = 10.0  # seconds between looks for `runwatch submit` jobs left for the daemon to follow
REPAIR_FIRST = 0.5  # seconds before what a disk refused is written again; doubled on each failure...
REPAIR_MAX = 5.0  # ...up to this: a failed write costs nothing, and a fixed disk is noticed within seconds


class Engine:
    """Owns the jobs. Feed it inbox items with :meth:`deliver`; call :meth:`step` in a loop."""

    def __init__(
        self,
        config: Config,
        store: Store,
        api: RunwayClient,
        transports: Mapping[str, Any],
        http: httpx.Client,
        catalog: Catalog,
        *,
        clock: Clock | None = None,
        log: Any = None,
    ) -> None:
        self.config = config
        self.log = log or structlog.get_logger("runwatch")
        # Every journal write of the engine goes through the ledger: nothing known is lost to a refused write.
        self.ledger = Ledger(store, self.log)
        self.store: Store = self.ledger
        self.api = api
        self.transports = dict(transports)
        self.http = http
        self.catalog = catalog
        self.clock = clock or SystemClock()
        self.inboxes: dict[str, InboxConfig] = {i.name: i for i in config.inboxes}
        self.events: queue.Queue[events.Event] = queue.Queue()
        sched = config.scheduler
        self.runner = Runner(sched.max_uploads + sched.max_downloads + 8, self.events.put)
        self.stopping = threading.Event()
        self.hurry = threading.Event()  # a second stop signal: no more waiting for creates in flight
        self.downloads_stop = threading.Event()
        self.polls = PollTimers()
        self.proving: set[str] = set()  # jobs held while Runway's counts are read (see runwatch.jobs.proving)
        self.paused_models: dict[str, float] = {}  # model -> monotonic time its daily-limit rest ends
        self.money = MoneyGuard(
            self.store, api, self.runner, self.events.put, self.stopping, clock=self.clock, log=self.log
        )
        self.book = Book(self.store, self.inboxes, self.money, self.transports, remove=self._remove, log=self.log)
        self.money.view = self.book
        # This daemon among the nodes of a shared journal (runwatch.nodes); with SQLite it owns everything.
        self.node = Node(self, config.node, shared=config.state.database is not None)
        self._last_commands = float("-inf")
        self.command_every = 0.5  # seconds between reads of the commands table; a notification reads it at once
        self._last_heartbeat = self._last_adopt = self.clock.monotonic()
        # Jobs whose waiting state or progress changed since the journal last heard of it (see _flush_waiting).
        self._waiting: dict[str, Job] = {}
        self._last_waiting = 0.0
        # Claims taken while the journal refused writes: accepted once it takes them (they wait in jobs/).
        self._claims_waiting: list[Claimed] = []
        # Events whose handling met a journal that could not be read: handled again after the back-off.
        self._later: list[events.Event] = []
        self._repair_at = 0.0
        self._repair_delay = REPAIR_FIRST

    @property
    def jobs(self) -> dict[str, Job]:
        """The followed jobs by id (read-only for everyone but this engine's thread)."""
        return self.book.jobs

    # -- inputs -------------------------------------------------------------------------------------

    def wake_commands(self) -> None:
        """A command was added to the journal (from the journal's listener, on its own thread)."""
        self.events.put(events.CommandsAdded())

    def wake_nodes(self) -> None:
        """A node stopped and handed its jobs over (from the journal's listener, on its own thread)."""
        self.events.put(events.NodesChanged())

    def deliver(self, item: Claimed | Refused | Control) -> None:
        """Called by inbox watchers from their own threads."""
        self.events.put(events.InboxItem(item))

    def load_limits(self) -> None:
        """Per-model concurrency from the organization, unless configured; best effort."""
        sent = self.clock.monotonic()
        try:
            org = self.api.organization()
        except RunwatchError as exc:
            self.log.warning("api.organization_unavailable", error=str(exc))
            return
        self.money.take_org(org)
        self.money.proof.looked(OrgLook.of(sent, self.clock.monotonic(), org))

    def recover(self, claimed_dirs: list[tuple[InboxConfig, Path]]) -> None:
        """After a start: follow every job the journal knows, and take claims the journal never saw."""
        recovery.recover(self, claimed_dirs)

    # -- the loop -----------------------------------------------------------------------------------

    def step(self, timeout: float = 0.2) -> None:
        """One turn: take events, fire due polls, read commands, submit what may go.

        No part of a turn may end the loop: a failure is logged and the next turn tries again.
        """
        now = self.clock.monotonic
        # First: a node that lost its leases (a loop held up longer than a lease) acts on no answer as owner.
        self._guarded("node", self.node.tick)
        deadline = now() + timeout
        busy_until = now() + 0.05  # a burst of events must not keep due polls waiting
        while True:
            wait = max(0.0, min(deadline, self.polls.next_due(poll_slack(self.interval()))) - now())
            try:
                event = self.events.get(timeout=wait)
            except queue.Empty:
                break
            if isinstance(event, events.InboxItem) and isinstance(event.item, Claimed):
                after = self._take_claims(event.item)
                if after is not None:
                    self._handle(after)
            else:
                self._handle(event)
            if self.events.empty() or now() >= busy_until:
                break
        self._guarded("timers", lambda: following.fire_timers(self))
        if self._troubled() and now() >= self._repair_at:
            self._guarded("repair", self._repair)
        healthy = self.ledger.healthy
        if healthy and now() - self._last_commands > self.command_every:  # a command's answer is a journal write
            self._last_commands = now()
            self._guarded("commands", lambda: commands.drain(self))
        if self._waiting and now() - self._last_waiting > following.WAITING_FLUSH:
            self._guarded("waiting", lambda: following.flush_waiting(self))
        if now() - self._last_heartbeat >= HEARTBEAT:
            self._guarded("heartbeat", self._heartbeat)  # its spending figure may read the journal
        if now() - self._last_adopt >= ADOPT_EVERY and not self.stopping.is_set():
            self._last_adopt = now()
            self._guarded("adopt", lambda: recovery.adopt_submitted(self))
        if self.proving:
            self._guarded("proving", lambda: proving.check(self))
        if self.money.proof.wants_look(now(), self.money.org_sent_at):
            self.money.refresh_org(force=True)
        if self.money.recheck_due() and not self.stopping.is_set():
            self._guarded("held", lambda: intake.recheck_held(self))
        # No create leaves while the journal cannot record its intent, nor from a node cut off from it.
        if healthy and not self.node.cut_off and not self.stopping.is_set():
            self._guarded("dispatch", lambda: sending.dispatch(self))

    def _guarded(self, kind: str, part: Any) -> None:
        try:
            part()
        except Exception as exc:  # a bug or a broken disk in one part must not stop the loop
            self.log.exception("engine.error", kind=kind, error=repr(exc))

    def idle(self) -> bool:
        """Nothing waiting to be submitted, nothing in flight: ``run --once`` may stop."""
        if any(job.state != State.HELD for job in self.book) or self._troubled():
            return False
        return self.events.empty() and not self.runner.in_flight()

    # -- health -------------------------------------------------------------------------------------

    def health(self) -> list[str]:
        """Why the daemon is not healthy, one line each; empty when it is."""
        reasons = []
        if not self.ledger.healthy or self._claims_waiting:
            reasons.append(
                f"the journal cannot be written ({self.ledger.error or 'retrying'}): "
                f"{self.ledger.owed} request(s) with changes kept in memory, "
                f"{len(self._claims_waiting)} new request(s) waiting; nothing is sent until it can"
            )
        if self.node.cut_off:
            reasons.append(
                f"node {self.node.name} is cut off from the journal database: its jobs are left to the other "
                "nodes; no new request is taken and nothing is sent until it is back"
            )
        if self.book.owed_status:
            reasons.append(
                f"{len(self.book.owed_status)} status file(s) cannot be written ({self.book.status_error}); "
                "written as soon as they can be"
            )
        return reasons

    def _troubled(self) -> bool:
        return bool(
            self.node.cut_off or not self.ledger.healthy or self._claims_waiting or self.book.owed_status or self._later
        )

    def _repair(self) -> None:
        """Write again what the disks refused: the journal's owed changes, then the waiting claims (a claim is
        newer than every change owed), then the status files; events that met an unreadable journal again."""
        ok = self.ledger.flush()
        if ok and self._claims_waiting:
            claims, self._claims_waiting = self._claims_waiting, []
            for first in range(0, len(claims), 500):
                self._accept(claims[first : first + 500])
            ok = not self._claims_waiting
        ok = self.book.write_owed() and ok
        later, self._later = self._later, []
        for event in later:
            self._handle(event)
        ok = ok and self.ledger.healthy and not self._later
        self._repair_delay = REPAIR_FIRST if ok else min(REPAIR_MAX, self._repair_delay * 2)
        self._repair_at = self.clock.monotonic() + self._repair_delay

    def shutdown(self, wait_creates: float = 20.0) -> None:
        """Stop taking work; wait up to ``wait_creates`` s for creates in flight so their task ids are recorded,
        then abandon uploads and downloads (they resume at the next start)."""
        self.stopping.set()
        self.downloads_stop.set()
        deadline = self.clock.monotonic() + wait_creates
        waiting = self.runner.in_flight(Work.CREATE)
        if waiting:
            self.log.info("daemon.waiting_for_creates", creates=waiting, up_to=wait_creates)
        while self.runner.in_flight(Work.CREATE) and self.clock.monotonic() < deadline and not self.hurry.is_set():
            self.step(0.1)
        while not self.events.empty():
            self.step(0.0)
        if self._waiting:
            self._guarded("waiting", lambda: following.flush_waiting(self))
        if self._troubled():  # a last try; what is still refused is found again by the next start
            self._guarded("repair", self._repair)
            if self.ledger.owed or self.book.owed_status:
                self.log.error(
                    "daemon.stopped_with_unwritten",
                    journal_changes=self.ledger.owed,
                    status_files=len(self.book.owed_status),
                    hint="the next start looks at every unfinished task again and rewrites their status files",
                )
        self.node.leave()  # last: what it owed is written, and the other nodes take its jobs at once
        self.runner.shutdown()

    def forget_waiting(self, job_id: str) -> None:
        """A job no longer followed here: what polls learned of it is not this node's to record."""
        self._waiting.pop(job_id, None)

    def _heartbeat(self) -> None:
        self._last_heartbeat = self.clock.monotonic()
        counts: dict[str, int] = {}
        for job in self.book:
            counts[job.state] = counts.get(job.state, 0) + 1
        spent = self.money.spent_today()
        self.log.info("queue.heartbeat", followed=len(self.book), states=counts, credits_today=spent)

    # -- events -------------------------------------------------------------------------------------

    def _take_claims(self, first: Claimed) -> events.Event | None:
        """Take a burst of claims together (one journal commit); returns the event that ended the burst."""
        claims, after = [first], None
        while len(claims) < 500:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, events.InboxItem) and isinstance(event.item, Claimed):
                claims.append(event.item)
            else:
                after = event
                break
        self._accept(claims)
        return after

    def _accept(self, claims: list[Claimed]) -> None:
        """Accept claims, or keep them waiting while the journal cannot record them."""
        if self._claims_waiting or not self.ledger.healthy or self.node.cut_off:
            self._claims_waiting.extend(claims)  # in their job dirs; a restart finds them there too
            return
        self.money.touched()
        try:
            intake.accept(self, claims)
        except JournalUnwritable:
            # Those refused before the commit have their row (or owe it) and left jobs/: not taken twice.
            self._claims_waiting.extend(c for c in claims if self._unseen(c))
        except Exception as exc:  # a bug must not stop the loop; the claims stay in jobs/
            self.log.exception("engine.error", kind="claims", error=repr(exc))

    def _unseen(self, claim: Claimed) -> bool:
        if claim.job_id in self.book or self.ledger.owes(claim.job_id) or not claim.job_dir.exists():
            return False
        try:
            return self.store.get(claim.job_id) is None
        except JournalError:
            return True

    def _handle(self, event: events.Event) -> None:
        job_id = (
            event.job_id
            if not isinstance(event, events.OrgRead | events.InboxItem | events.CommandsAdded | events.NodesChanged)
            else None
        )
        # An answer about one job moves that job's spending; anything else may move anything's.
        self.money.touched(job_id if job_id in self.book else None)
        try:
            self._dispatch_event(event)
        except JournalUnwritable as exc:
            # The journal could not be read (writes never raise here: the ledger keeps them). Nothing about the
            # job was decided yet: the same answer is handled again after the back-off, the job kept as it is.
            self.log.warning("engine.journal_unreadable", answer=type(event).__name__, error=str(exc))
            self._later.append(event)
        except Exception as exc:
            self.log.exception("engine.error", answer=type(event).__name__, error=repr(exc))
            job = self.book.job(job_id) if job_id is not None else None
            if job is not None:
                self._internal_error(job, exc)

    def _internal_error(self, job: Job, exc: Exception) -> None:
        state = State.NEEDS_ATTENTION if job.unconfirmed_create or job.state == State.UPLOADING else State.FAILED
        if job.task_id:
            state = State.FAILED
        try:
            self.book.move(
                job, state, error={"code": "internal_error", "message": f"runwatch failed: {exc}; see the log"}
            )
        except Exception as again:  # already reporting a failure
            # Still followed as it is: forgetting a job whose task may exist would lose it until a restart.
            self.log.exception("engine.error", kind="internal_error", job=job.id, error=repr(again))

    def _dispatch_event(self, event: events.Event) -> None:
        match event:
            case events.OrgRead(gen, org):
                self.money.after_org(gen, org)
            case events.InboxItem(Claimed() as claim):
                self._accept([claim])
            case events.InboxItem(Refused() as refused):
                intake.reject(self, refused)
            case events.InboxItem(Control(inbox, kind, name)):
                commands.dropped(self, kind, name, inbox)
            case events.CommandsAdded():
                self._last_commands = float("-inf")  # read at the end of this turn, not at the next poll
            case events.NodesChanged():
                self.node.handed_over()
            case events.Placed() | events.Created() | events.Polled() | events.Downloaded() | events.Deleted():
                self._job_event(event)

    def _job_event(self, event: events.JobEvent) -> None:
        job = self.book.job(event.job_id)
        runtime = self.book.rt.get(event.job_id)
        if job is None or runtime is None:
            return
        busy, runtime.busy = runtime.busy, None
        try:
            match event:
                case events.Placed(_, placed):
                    sending.after_placed(self, job, placed)
                case events.Created(_, created, sent_at):
                    sending.after_created(self, job, created, sent_at)
                case events.Polled(_, task):
                    following.after_polled(self, job, task)
                case events.Downloaded(_, records):
                    following.after_downloaded(self, job, records)
                case events.Deleted(_, deleted):
                    commands.after_deleted(self, job, deleted)
        except JournalUnwritable:
            # The answer waits to be handled again (see _handle): until then the job is still busy with it, so
            # nothing starts it again meanwhile (an accepted job whose create was answered would be sent twice).
            runtime.busy = busy
            raise
        # A cancel that arrived while a call was in flight is carried out as soon as the job is free.
        waiting_cancel = job.cancel_requested and job.task_id and job.state in AT_RUNWAY and not runtime.cancel_sent
        if job.id in self.book and waiting_cancel and runtime.busy is None:
            commands.cancel_at_runway(self, job)

    def run(self, job: Job, kind: Work, work: Any) -> None:
        """Run blocking work for one job on the pool; ``work`` returns its one event."""
        self.book.rt[job.id].busy = kind
        self.runner.run(kind, [job.id], lambda: [work()])

    def _remove(self, fn: Any) -> None:
        self.runner.background(lambda: quietly(fn))

    # -- claims -------------------------------------------------------------------------------------

    def now_iso(self) -> str:
        from runwatch.clock import iso

        return iso(self.clock.now())

    # -- money --------------------------------------------------------------------------------------

    # -- submission ---------------------------------------------------------------------------------

    def interval(self) -> float:
        return self.config.runway.poll_interval

    def apply(self, job: Job, outcome: lifecycle.Outcome) -> None:
        """Do what a lifecycle decision says for a job."""
        runtime = self.book.rt[job.id]
        match outcome:
            case Finish(state, error, credits):
                changes: dict[str, Any] = {"error": error} if error is not None else {}
                if credits is not None:
                    changes["credits"] = credits
                elif job.task_id and job.credits is None and state != State.SUCCEEDED:
                    # The task existed and its cost cannot be read: its estimate keeps counting, marked so.
                    changes.update(credits=job.estimated_credits, credits_estimated=job.estimated_credits is not None)
                self.book.move(job, state, **changes)
            case Hold(code, message, wait, pause_model):
                if pause_model and job.model:
                    self.paused_models[job.model] = self.clock.monotonic() + wait
                self.book.remove_placed(job)
                error = {"code": code, "message": message}
                self.book.move(job, State.HELD, not_before=self._wait(job, wait), error=error, placed=[])
                self.money.refresh_org(force=True)
            case RetryLater(delay, attempts, message):
                self.book.remove_placed(job)
                not_before = self._wait(job, delay)
                self.book.move(job, State.ACCEPTED, not_before=not_before, attempts=attempts, placed=[])
                self.log.warning("job.retry_later", request=job.name, job=job.id, delay=delay, error=message)
            case Wait(state, progress):
                following.waited(self, job, runtime, state, progress)
            case Download(urls, credits):
                if job.state != State.DOWNLOADING:
                    self.book.move(job, State.DOWNLOADING, progress=1.0, credits=credits)
                following.download(self, job, list(urls))
            case LookAgain(delay, note):
                if note:
                    self.log.warning("api.look_again", request=job.name, task_id=job.task_id, note=note)
                self.schedule(job.id, self.interval() if delay is None else delay)

    # -- following tasks ----------------------------------------------------------------------------

    def hold_for(self, job: Job, seconds: float) -> float:
        """A held request is looked at again in ``seconds``; the epoch moment, for its ``not_before``."""
        return self._wait(job, seconds)

    def _wait(self, job: Job, seconds: float) -> float:
        """A back-off or hold of ``seconds``: kept on the monotonic clock, recorded as epoch for a restart."""
        runtime = self.book.rt[job.id]
        runtime.wake, runtime.wake_for = self.clock.monotonic() + seconds, self.clock.time() + seconds
        return runtime.wake_for

    def waits_until(self, job: Job) -> float | None:
        """The monotonic moment the job's back-off or hold ends. A ``not_before`` read from the journal (after
        a restart) is turned into one once; a wall-clock step after that moves nothing."""
        runtime = self.book.rt[job.id]
        if job.not_before is None:
            return None
        if runtime.wake is None or runtime.wake_for != job.not_before:
            runtime.wake = self.clock.monotonic() + (job.not_before - self.clock.time())
            runtime.wake_for = job.not_before
        return runtime.wake

    def schedule(self, job_id: str, delay: float) -> None:
        self.polls.schedule(job_id, self.clock.monotonic() + delay)
