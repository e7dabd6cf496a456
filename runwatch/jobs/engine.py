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
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import structlog

from runwatch.api import Created as TaskCreated
from runwatch.api import RunwayClient
from runwatch.budget import Limits
from runwatch.catalog import Catalog
from runwatch.clock import Clock, SystemClock
from runwatch.config import Config, InboxConfig
from runwatch.errors import RequestError, RunwatchError
from runwatch.guard import MoneyGuard
from runwatch.jobs import commands, events, lifecycle, recovery
from runwatch.jobs.book import Book, quietly, removal
from runwatch.jobs.job import Job
from runwatch.jobs.lifecycle import Download, Finish, Hold, LookAgain, RetryLater, Wait
from runwatch.jobs.runner import Runner, Work
from runwatch.jobs.states import AT_RUNWAY, State
from runwatch.media import Placed, choose
from runwatch.outbox import DownloadError, OutputRecord, download_outputs
from runwatch.polls import PollTimers
from runwatch.pricing import Estimate
from runwatch.request import Request, load_request
from runwatch.scheduler import Candidate, Sample, eta, next_poll, pick, poll_slack
from runwatch.store import Store
from runwatch.workarea import Claimed, Control, Refused

__all__ = ["WAITING_FLUSH", "Engine"]

# What polls learn of tasks waiting at Runway reaches the journal (and `runwatch status`) this many seconds late
# at most, in one commit for all of them; the status files have it at once.
WAITING_FLUSH = 2.0
HEARTBEAT = 60.0  # seconds between the queue's heartbeat lines
PROGRESS_LOG = 30.0  # seconds between progress lines of one running task
ADOPT_EVERY = 10.0  # seconds between looks for `runwatch submit` jobs left for the daemon to follow


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
        self.store = store
        self.api = api
        self.transports = dict(transports)
        self.http = http
        self.catalog = catalog
        self.clock = clock or SystemClock()
        self.log = log or structlog.get_logger("runwatch")
        self.inboxes: dict[str, InboxConfig] = {i.name: i for i in config.inboxes}
        self.events: queue.Queue[events.Event] = queue.Queue()
        sched = config.scheduler
        self.runner = Runner(sched.max_uploads + sched.max_downloads + 8, self.events.put)
        self.stopping = threading.Event()
        self.hurry = threading.Event()  # a second stop signal: no more waiting for creates in flight
        self.downloads_stop = threading.Event()
        self.polls = PollTimers()
        self.paused_models: dict[str, float] = {}  # model -> monotonic time its daily-limit rest ends
        self.money = MoneyGuard(store, api, self.runner, self.events.put, self.stopping, clock=self.clock, log=self.log)
        self.book = Book(store, self.inboxes, self.money, self.transports, remove=self._remove, log=self.log)
        self.money.view = self.book
        self._last_commands = float("-inf")
        self._last_heartbeat = self._last_adopt = self.clock.monotonic()
        # Jobs whose waiting state or progress changed since the journal last heard of it (see _flush_waiting).
        self._waiting: dict[str, Job] = {}
        self._last_waiting = 0.0

    @property
    def jobs(self) -> dict[str, Job]:
        """The followed jobs by id (read-only for everyone but this engine's thread)."""
        return self.book.jobs

    # -- inputs -------------------------------------------------------------------------------------

    def deliver(self, item: Claimed | Refused | Control) -> None:
        """Called by inbox watchers from their own threads."""
        self.events.put(events.InboxItem(item))

    def load_limits(self) -> None:
        """Per-model concurrency from the organization, unless configured; best effort."""
        try:
            org = self.api.organization()
        except RunwatchError as exc:
            self.log.warning("api.organization_unavailable", error=str(exc))
            return
        self.money.take_org(org)

    def recover(self, claimed_dirs: list[tuple[InboxConfig, Path]]) -> None:
        """After a start: follow every job the journal knows, and take claims the journal never saw."""
        recovery.recover(self, claimed_dirs)

    # -- the loop -----------------------------------------------------------------------------------

    def step(self, timeout: float = 0.2) -> None:
        """One turn: take events, fire due polls, read commands, submit what may go."""
        now = self.clock.monotonic
        deadline = now() + timeout
        busy_until = now() + 0.05  # a burst of events must not keep due polls waiting
        while True:
            wait = max(0.0, min(deadline, self.polls.next_due(poll_slack(self._interval()))) - now())
            try:
                event = self.events.get(timeout=wait)
            except queue.Empty:
                break
            if isinstance(event, events.InboxItem) and isinstance(event.item, Claimed):
                following = self._take_claims(event.item)
                if following is not None:
                    self._handle(following)
            else:
                self._handle(event)
            if self.events.empty() or now() >= busy_until:
                break
        self._fire_timers()
        if now() - self._last_commands > 0.5:
            self._last_commands = now()
            commands.drain(self)
        if self._waiting and now() - self._last_waiting > WAITING_FLUSH:
            self._flush_waiting()
        if now() - self._last_heartbeat >= HEARTBEAT:
            self._heartbeat()
        if now() - self._last_adopt >= ADOPT_EVERY and not self.stopping.is_set():
            self._last_adopt = now()
            recovery.adopt_submitted(self)
        if self.money.recheck_due() and not self.stopping.is_set():
            self._recheck_held()
        if not self.stopping.is_set():
            self._dispatch()

    def idle(self) -> bool:
        """Nothing waiting to be submitted, nothing in flight: ``run --once`` may stop."""
        if any(job.state != State.HELD for job in self.book):
            return False
        return self.events.empty() and not self.runner.in_flight()

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
            self._flush_waiting()
        self.runner.shutdown()

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
        claims, following = [first], None
        while len(claims) < 500:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, events.InboxItem) and isinstance(event.item, Claimed):
                claims.append(event.item)
            else:
                following = event
                break
        self.money.touched()
        try:
            self.accept(claims)
        except Exception as exc:  # e.g. the journal's disk is full: keep running, log it
            self.log.exception("engine.error", kind="claims", error=repr(exc))
        return following

    def _handle(self, event: events.Event) -> None:
        job_id = event.job_id if not isinstance(event, events.OrgRead | events.InboxItem) else None
        # An answer about one job moves that job's spending; anything else may move anything's.
        self.money.touched(job_id if job_id in self.book else None)
        try:
            self._dispatch_event(event)
        except Exception as exc:
            self.log.exception("engine.error", event=type(event).__name__, error=repr(exc))
            job = self.book.job(job_id) if job_id is not None else None
            if job is not None:
                self._internal_error(job, exc)

    def _internal_error(self, job: Job, exc: Exception) -> None:
        state = State.NEEDS_ATTENTION if job.unconfirmed_create or job.state == State.UPLOADING else State.FAILED
        if job.task_id:
            state = State.FAILED
        try:
            self.book.move(job, state, error={"code": "internal_error", "message": f"runwatch failed: {exc!r}"})
        except Exception:  # noqa: BLE001 - already reporting a failure
            self.book.untrack(job)

    def _dispatch_event(self, event: events.Event) -> None:
        match event:
            case events.OrgRead(gen, org):
                self.money.after_org(gen, org)
            case events.InboxItem(Claimed() as claim):
                self.accept([claim])
            case events.InboxItem(Refused() as refused):
                self.reject(refused)
            case events.InboxItem(Control(inbox, kind, name)):
                commands.control(self, kind, name, inbox)
            case events.Placed() | events.Created() | events.Polled() | events.Downloaded() | events.Deleted():
                self._job_event(event)

    def _job_event(self, event: events.JobEvent) -> None:
        job = self.book.job(event.job_id)
        runtime = self.book.rt.get(event.job_id)
        if job is None or runtime is None:
            return
        runtime.busy = None
        match event:
            case events.Placed(_, placed):
                self._after_placed(job, placed)
            case events.Created(_, created, sent_at):
                self._after_created(job, created, sent_at)
            case events.Polled(_, task):
                self._after_polled(job, task)
            case events.Downloaded(_, records):
                self._after_downloaded(job, records)
            case events.Deleted(_, deleted):
                commands.after_deleted(self, job, deleted)
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

    def accept(self, claims: Sequence[Claimed]) -> None:
        """Take claimed requests: refuse the invalid, record the rest in one commit, then show them."""
        jobs: list[tuple[Job, Request]] = []
        guesses: dict[str, Estimate] = {}
        for claim in claims:
            inbox = self.inboxes[claim.inbox]
            try:
                # The watcher loaded it from the job dir already; a claim found at start-up is read here.
                req = claim.request or self._load(claim.request_file, claim.job_dir, inbox)
            except RequestError as exc:
                refused = Refused(
                    claim.job_id,
                    claim.inbox,
                    claim.job_dir,
                    claim.request_file,
                    claim.name,
                    claim.format,
                    tuple(exc.problems),
                )
                self.reject(refused, move=True)
                continue
            job = Job(
                id=claim.job_id,
                name=self.book.unique_name(inbox.name, req.options.name),
                inbox=inbox.name,
                format=req.format,
                endpoint=req.endpoint,
                model=req.model,
                priority=req.options.priority + inbox.priority,
                job_dir=str(claim.job_dir),
                request_path=str(claim.request_file),
                body=req.body,
            )
            guess = guesses[job.id] = self._estimate(job, req)  # shown in the status file from the start
            job.estimated_credits = None if guess.credits is None else float(guess.credits)
            verdict = self._hold_reason(job, req, guess)
            if verdict:
                job.state, job.error = State.HELD, {"code": verdict[0], "message": verdict[1]}
            self.book.reserve_name(job)
            jobs.append((job, req))
        try:
            self.store.add_many([job for job, _ in jobs])
        except RunwatchError:
            for job, _ in jobs:  # the claims stay in jobs/ and are taken again at the next start
                self.book.release_name(job)
            raise
        for job, req in jobs:
            self.book.track(job, req)
            self.book.rt[job.id].estimate = guesses[job.id]
            self.book.write(job)
            self.log.info("job.accepted", request=job.name, job=job.id, endpoint=job.endpoint, model=job.model)
            if job.state == State.HELD:
                self.log.info("job.held", request=job.name, job=job.id, reason=job.error["message"])

    def reject(self, ref: Refused, move: bool = False) -> None:
        """A request that cannot be used: a journal row, a status file with every problem, a failed record."""
        from runwatch.outbox import printable
        from runwatch.workarea import move_record

        job_dir, request_file = ref.job_dir, ref.request_file
        inbox = self.inboxes.get(ref.inbox)
        if move and inbox is not None:
            try:
                job_dir, request_file = move_record(inbox, job_dir, request_file, "failed")
            except RunwatchError as exc:
                self.log.error("work.move_failed", job_dir=str(job_dir), error=str(exc))
        issues = [{"path": p.path, "message": p.message} for p in ref.problems]
        job = Job(
            id=ref.job_id,
            # A file name that is not UTF-8 still gets a journal row and a status file, under a readable name.
            name=self.book.unique_name(ref.inbox, printable(ref.name)),
            inbox=ref.inbox,
            format=ref.format,
            state=State.REJECTED,
            endpoint=getattr(ref, "endpoint", None),
            model=getattr(ref, "model", None),
            job_dir=printable(str(job_dir)),
            request_path=printable(str(request_file)),
            error={
                "code": "invalid_request",
                "message": f"{len(issues)} problem(s) in the request file",
                "issues": issues,
            },
            finished_at=self._now_iso(),
        )
        self.store.add(job)
        self.book.write(job)
        self.log.warning(
            "job.rejected", request=job.name, job=job.id, problems=len(issues), first=issues[0] if issues else None
        )

    def _now_iso(self) -> str:
        from runwatch.clock import iso

        return iso(self.clock.now())

    def _load(self, request_file: Path, root: Path, inbox: InboxConfig) -> Request:
        return load_request(
            request_file, root=root, inbox=inbox, catalog=self.catalog, unknown_models=self.config.runway.unknown_models
        )

    def request_of(self, job: Job) -> Request | None:
        """The job's request as loaded at the claim; loaded again only after a restart."""
        runtime = self.book.rt[job.id]
        if runtime.request is None:
            inbox = self.inboxes.get(job.inbox)
            if inbox is None or job.job_dir is None or job.request_path is None:
                return None
            try:
                runtime.request = self._load(Path(job.request_path), Path(job.job_dir), inbox)
            except RequestError:
                return None
        return runtime.request

    # -- money --------------------------------------------------------------------------------------

    def _estimate(self, job: Job, req: Request) -> Estimate:
        """Our estimate from the price data and the request's own parameters (media probed for length)."""
        runtime = self.book.rt.get(job.id)
        if runtime is not None and runtime.estimate is not None:
            return runtime.estimate
        guess = _estimate(job, req)
        if runtime is not None:
            runtime.estimate = guess
        return guess

    def _hold_reason(self, job: Job, req: Request, guess: Estimate | None = None) -> tuple[str, str] | None:
        """(code, reason) when the job may not be sent now; None when it may. Checked right before sending."""
        guess = guess or self._estimate(job, req)
        inbox = self.inboxes[job.inbox]
        budget = self.config.budget
        limits = Limits(
            max_credits=req.options.max_credits,
            approve_above=inbox.approve_above,
            inbox_daily=inbox.budget_daily,
            daily=budget.daily,
            monthly=budget.monthly,
            unknown_price=budget.unknown_price,
        )
        return self.money.hold_reason(job, guess, limits)

    def _recheck_held(self) -> None:
        """Let held requests go when their budget, the balance or the daily limit has freed."""
        if not self.money.begin_recheck():  # nothing moved since the last look
            return
        for job in [j for j in self.book if j.state == State.HELD]:
            runtime = self.book.rt[job.id]
            if job.not_before and job.not_before > self.clock.time():
                self.money.wake_at(job.not_before)
                continue
            if runtime.busy or job.cancel_requested:
                continue
            req = self.request_of(job)
            verdict = self._hold_reason(job, req) if req is not None else None
            if verdict is None:
                self.book.move(job, State.ACCEPTED, error=None, not_before=None)
            elif job.error != {"code": verdict[0], "message": verdict[1]}:
                self.book.move(job, State.HELD, error={"code": verdict[0], "message": verdict[1]})

    # -- submission ---------------------------------------------------------------------------------

    def _interval(self) -> float:
        return self.config.runway.poll_interval

    def _model_cap(self, model: str | None) -> int | None:
        if self.config.scheduler.per_model is not None:
            return self.config.scheduler.per_model
        return self.money.model_caps.get(model or "")

    def _dispatch(self) -> None:
        book = self.book
        if not book.ready or book.in_flight >= self.config.scheduler.max_in_flight:
            return
        now = self.clock.time()
        waiting: dict[str, Candidate] = {}
        for job_id in list(book.ready):
            j = book.job(job_id)
            if j is None or j.state != State.ACCEPTED:
                book.ready.discard(job_id)
            elif not book.rt[job_id].busy:
                waiting[job_id] = Candidate(j.id, j.inbox, j.model, j.priority, j.seq, j.not_before)
        mono = self.clock.monotonic()
        paused = {m: now + (until - mono) for m, until in self.paused_models.items() if until > mono}
        while waiting:
            cand = pick(
                waiting.values(),
                now=now,
                in_flight=book.in_flight,
                max_in_flight=self.config.scheduler.max_in_flight,
                per_inbox=book.fly_inbox,
                per_model=book.fly_model,
                model_cap=self._model_cap,
                paused_models=paused,
            )
            if cand is None:
                return
            del waiting[cand.job_id]
            self._start(book.jobs[cand.job_id])

    def _start(self, job: Job) -> None:
        inbox = self.inboxes.get(job.inbox)
        if inbox is None or job.job_dir is None or job.request_path is None:
            gone = {"code": "inbox_gone", "message": "the job's inbox is no longer configured"}
            self.book.move(job, State.FAILED, error=gone)
            return
        req = self.request_of(job)
        if req is None:
            try:  # loaded again to say why
                req = self._load(Path(job.request_path), Path(job.job_dir), inbox)
            except RequestError as exc:
                issues = [{"path": p.path, "message": p.message} for p in exc.problems]
                error = {
                    "code": "invalid_request",
                    "message": str(exc).splitlines()[0],
                    "issues": issues,
                }
                self.book.move(job, State.FAILED, error=error)
                return
            self.book.rt[job.id].request = req
        # Checked here, before any upload, and not only at the claim: budgets and the balance change.
        verdict = self._hold_reason(job, req)
        if verdict:
            self.book.move(job, State.HELD, error={"code": verdict[0], "message": verdict[1]})
            return
        self.money.reserve(job, float(self._estimate(job, req).credits or 0))
        self.book.fly(job)
        self.money.touched(job.id)
        if not req.media:
            self._create(job, req.body)
            return
        self.book.move(job, State.UPLOADING)
        transport = self.transports[choose(inbox.transport, s3_configured="s3" in self.transports)]
        self.run(job, Work.PLACE, lambda: events.Placed(job.id, _place_all(transport, req, job.id)))

    def _after_placed(self, job: Job, result: Any) -> None:
        if isinstance(result, BaseException):
            self._outcome(job, lifecycle.after_place_failure(result, attempts=job.attempts + 1))
            return
        uris, placed = result
        self.store.update(job, placed=[_placed_record(p) for p in placed])
        if job.cancel_requested:
            self.book.move(job, State.CANCELLED)
            return
        req = self.request_of(job)
        if req is None:
            self.book.move(job, State.FAILED, error={"code": "invalid_request", "message": "the request is gone"})
            return
        self._create(job, req.with_uris(uris))

    def _create(self, job: Job, body: dict[str, Any]) -> None:
        if job.cancel_requested:
            self.book.move(job, State.CANCELLED)
            return
        store, api, clock, job_id, endpoint = self.store, self.api, self.clock, job.id, job.endpoint or ""
        sent_at: list[float] = []

        def before_send() -> None:  # on the worker, before each attempt leaves: a crash from here on is seen
            sent_at.append(clock.monotonic())
            store.record_intent(job_id, first=len(sent_at) == 1)

        def send() -> events.Created:
            created = api.create_task(endpoint, body, before_send, lambda: store.clear_intent(job_id))
            # Recorded here, the moment Runway answers: the window in which a crash leaves a create unconfirmed
            # is the round trip and one fsync, not also the engine's queue.
            store.record_task(job_id, created.id, created.estimated_credits)
            return events.Created(job_id, created, sent_at[-1] if sent_at else None)

        self.log.info("api.creating", request=job.name, job=job.id, endpoint=job.endpoint)
        self.run(job, Work.CREATE, send)

    def _after_created(self, job: Job, result: TaskCreated | BaseException, sent_at: float | None) -> None:
        # What the sending thread recorded by id, brought onto this thread's copy of the job.
        fresh = self.store.get(job.id)
        if fresh is not None:
            job.apply(create_started_at=fresh.create_started_at, attempts=fresh.attempts)
        if sent_at is not None:
            self.book.rt[job.id].not_running_at = sent_at  # a task made by this create cannot be running yet
        if not isinstance(result, BaseException):
            estimated = result.estimated_credits if result.estimated_credits is not None else job.estimated_credits
            job.apply(task_id=result.id, estimated_credits=estimated)
            self.money.answered(job.id, estimated)
            self.money.refresh_org(force=True)  # credits were spent: read the balance and usage again
            self.book.move(job, State.SUBMITTED)
            self.log.info("api.created", request=job.name, task_id=result.id, estimated_credits=estimated)
            if job.cancel_requested:
                commands.cancel_at_runway(self, job)
            else:
                self._schedule(job.id, self._interval())
            return
        outcome = lifecycle.after_create_failure(result, attempts=job.attempts, model=job.model)
        if not (isinstance(outcome, Finish) and not outcome.surely_not_created):
            self.store.update(job, create_started_at=None)
        self._outcome(job, outcome)

    def _outcome(self, job: Job, outcome: lifecycle.Outcome) -> None:
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
                self.book.move(job, State.HELD, not_before=self.clock.time() + wait, error=error, placed=[])
                self.money.refresh_org(force=True)
            case RetryLater(delay, attempts, message):
                self.book.remove_placed(job)
                not_before = self.clock.time() + delay
                self.book.move(job, State.ACCEPTED, not_before=not_before, attempts=attempts, placed=[])
                self.log.warning("job.retry_later", request=job.name, job=job.id, delay=delay, error=message)
            case Wait(state, progress):
                self._waited(job, runtime, state, progress)
            case Download(urls, credits):
                if job.state != State.DOWNLOADING:
                    self.book.move(job, State.DOWNLOADING, progress=1.0, credits=credits)
                self._download(job, list(urls))
            case LookAgain(delay, note):
                if note:
                    self.log.warning("api.look_again", request=job.name, task_id=job.task_id, note=note)
                self._schedule(job.id, self._interval() if delay is None else delay)

    # -- following tasks ----------------------------------------------------------------------------

    def _schedule(self, job_id: str, delay: float) -> None:
        self.polls.schedule(job_id, self.clock.monotonic() + delay)

    def _flush_waiting(self) -> None:
        self._last_waiting = self.clock.monotonic()
        # Only jobs still followed as these objects: one finished (or retried) since was committed on its own.
        jobs = [job for job in self._waiting.values() if self.book.job(job.id) is job]
        self._waiting = {}
        try:
            self.store.save_waiting(jobs)
        except RunwatchError as exc:
            self.log.warning("journal.waiting_failed", error=str(exc))

    def _fire_timers(self) -> None:
        """Send the due polls in runs (see :mod:`runwatch.polls`)."""
        slack = poll_slack(self._interval())
        due: list[Job] = []
        for job_id in self.polls.take_due(self.clock.monotonic(), slack):
            job = self.book.job(job_id)
            if job is None or self.book.rt[job_id].busy or self.stopping.is_set():
                continue
            if job.task_id and (job.state in AT_RUNWAY or job.state == State.DOWNLOADING):
                due.append(job)
        for run in self.polls.runs(due, slack):
            self._poll_run(run, budget=slack)

    def _poll_run(self, jobs: Sequence[Job], budget: float) -> None:
        tasks = [(job.id, str(job.task_id)) for job in jobs]
        for job in jobs:
            self.book.rt[job.id].busy = Work.POLL

        def work() -> list[events.JobEvent]:
            answers = self.polls.get_run(self.api.get_task, tasks, budget)
            return [events.Polled(job_id, result) for job_id, result in answers]

        self.runner.run(Work.POLL, [job.id for job in jobs], work)

    def _after_polled(self, job: Job, result: Any) -> None:
        runtime = self.book.rt[job.id]
        if result is events.NOT_POLLED:
            self._schedule(job.id, 0.0)
            return
        if isinstance(result, BaseException):
            runtime.poll_failures += 1
            outcome: lifecycle.Outcome = lifecycle.after_poll_failure(
                result, failures=runtime.poll_failures, interval=self._interval(), cancel_requested=job.cancel_requested
            )
            self._outcome(job, outcome)
            return
        runtime.poll_failures = 0
        outcome = lifecycle.after_poll(result, empty_successes=runtime.empty_successes)
        if isinstance(outcome, LookAgain) and outcome.empty_success:
            runtime.empty_successes += 1
        self._outcome(job, outcome)

    def _waited(self, job: Job, runtime: Any, state: State, progress: float | None) -> None:
        """A task waits or runs at Runway: the status file at once, the journal within seconds."""
        now = self.clock.monotonic()
        if progress is not None:
            runtime.samples.append(Sample(now, progress))
            del runtime.samples[:-20]
        elif state != State.RUNNING:
            runtime.not_running_at = now
        moved = progress if progress is not None else job.progress
        if state != job.state or moved != job.progress:
            # THROTTLED/PENDING/RUNNING and progress are for people: in the status file at once, in the journal
            # within seconds (lost to a power cut, the next start's first poll finds them again).
            if state != job.state:
                job.apply(state=state, updated_at=self._now_iso())
                self.log.info(f"job.{state}", request=job.name, job=job.id, task_id=job.task_id)
            job.progress = moved
            self._waiting[job.id] = job
            self.book.write(job)
        if state == State.RUNNING and progress is not None and now - runtime.last_progress_log >= PROGRESS_LOG:
            runtime.last_progress_log = now
            left = eta(runtime.samples)
            self.log.info(
                "job.progress",
                request=job.name,
                task_id=job.task_id,
                percent=round(progress * 100),
                eta_seconds=None if left is None else round(left),
            )
        status = {State.THROTTLED: "THROTTLED", State.PENDING: "PENDING", State.RUNNING: "RUNNING"}[state]
        self._schedule(
            job.id,
            next_poll(status, runtime.samples, now=now, interval=self._interval(), since=runtime.not_running_at),
        )

    def _download(self, job: Job, urls: list[str]) -> None:
        outbox = self.book.outbox_of(job)
        if outbox is None:
            self.book.move(job, State.FAILED, error={"code": "outbox_gone", "message": "no outbox for this job"})
            return
        done = [OutputRecord(o["file"], o["bytes"], o["sha256"], o["index"]) for o in job.outputs]
        api, http, stop, job_id, task_id, name = self.api, self.http, self.downloads_stop, job.id, job.task_id, job.name

        def refresh() -> list[str]:
            task = api.get_task(task_id or "")
            return [u for u in task.get("output", []) if isinstance(u, str)]

        def fetch() -> events.Downloaded:
            outbox.mkdir(parents=True, exist_ok=True)
            return events.Downloaded(
                job_id, download_outputs(http, urls, outbox, name, done=done, refresh=refresh, stop=stop)
            )

        self.run(job, Work.DOWNLOAD, fetch)

    def _after_downloaded(self, job: Job, result: Any) -> None:
        if isinstance(result, DownloadError) and result.records:
            # Outputs already complete are kept, so a later attempt does not fetch them twice.
            self.store.update(job, outputs=_records(result.records))
        if isinstance(result, BaseException):
            if self.stopping.is_set():
                return  # abandoned for the shutdown; the next start downloads again
            runtime = self.book.rt[job.id]
            runtime.download_failures += 1
            self.log.warning("outbox.download_failed", request=job.name, task_id=job.task_id, error=str(result))
            self._outcome(job, lifecycle.after_download_failure(result, failures=runtime.download_failures))
            return
        self.book.move(job, State.SUCCEEDED, outputs=_records(result))


def _place_all(transport: Any, req: Request, job_id: str) -> tuple[dict[Any, str], list[Placed]]:
    """Place every local media file of a request once (a file named twice is placed once)."""
    uris: dict[Any, str] = {}
    placed: list[Placed] = []
    by_file: dict[Path, Placed] = {}
    try:
        for media in req.media:
            item = by_file.get(media.file) or transport.place(media, job_id)
            by_file[media.file] = item
            if item not in placed:
                placed.append(item)
            uris[media.field] = item.uri
    except BaseException:
        for item in placed:  # nothing half-placed stays behind
            quietly(removal(transport, item))
        raise
    return uris, placed


def _estimate(job: Job, req: Request) -> Estimate:
    from runwatch.catalog import format_path
    from runwatch.mediaprobe import probe_file
    from runwatch.pricing import MediaHint, estimate

    if not isinstance(job.model, str) or job.endpoint is None:  # passed through as written, e.g. a list
        return Estimate(None, "the request names no model")
    hints = {}
    for media in req.media:
        try:
            info = probe_file(media.file)
        except OSError:
            info = None
        if info is not None:
            hints[format_path(media.field)] = MediaHint(duration=info.duration, width=info.width, height=info.height)
    return estimate(job.endpoint, job.model, req.body, hints)


def _records(records: list[OutputRecord]) -> list[dict[str, Any]]:
    return [{"file": r.file, "bytes": r.bytes, "sha256": r.sha256, "index": r.index} for r in records]


def _placed_record(placed: Placed) -> dict[str, Any]:
    # Only the handle (an S3 key or a runway:// URI) is kept: never a presigned URL with its signature.
    return {"transport": placed.transport, "handle": placed.handle, "expires_at": placed.expires_at}
