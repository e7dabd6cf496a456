"""The engine: every job's way from a claimed request file to a final state.

One thread (the caller of :meth:`Engine.step`) owns all decisions and every write to the journal and
the status files; blocking work (uploads, API calls, downloads) runs on a thread pool and comes back as
an event on the engine's queue. So there is one writer, no lock ordering to get wrong, and the order of
records in the journal is the order things happened.

A job's path: accepted → uploading → (intent committed) create → submitted → throttled/pending/running →
downloading → succeeded; or rejected, failed, cancelled, needs_attention. See ``runwatch.api`` for the one
rule that decides whether a create may be sent again.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import structlog

from runwatch.api import Created, RunwayClient, create_may_be_retried
from runwatch.budget import Charge, Limits
from runwatch.catalog import Catalog, format_path
from runwatch.config import Config, InboxConfig
from runwatch.errors import (
    ApiError,
    ApiStatusError,
    OutboxError,
    RateLimitedError,
    RequestError,
    RunwatchError,
    UploadError,
)
from runwatch.guard import MoneyGuard
from runwatch.inbox import Claimed, Control, Refused
from runwatch.journal import AT_RUNWAY, FINAL_STATES, Job, Journal, now_iso
from runwatch.media import Placed
from runwatch.outbox import (
    DownloadError,
    OutputRecord,
    StatusFormat,
    clean_partials,
    download_outputs,
    printable,
    status_document,
    status_path,
    write_status,
)
from runwatch.polls import NOT_POLLED, PollTimers
from runwatch.pricing import Estimate
from runwatch.request import MEDIA_SUFFIXES, Request, load_request
from runwatch.scheduler import Candidate, Sample, next_poll, pick, poll_slack

__all__ = ["Engine"]

_STATE_OF = {"THROTTLED": "throttled", "PENDING": "pending", "RUNNING": "running"}
IN_FLIGHT = frozenset({"uploading", "submitted", "throttled", "pending", "running"})
# What polls learn of tasks waiting at Runway reaches the journal (and `runwatch status`) this many seconds late
# at most, in one commit for all of them; the status files have it at once.
WAITING_FLUSH = 2.0


@dataclass
class _Runtime:
    """What the engine knows of a job beyond its journal row; rebuilt after a restart."""

    busy: str | None = None  # the kind of worker call in flight, if any
    samples: list[Sample] = field(default_factory=list)
    poll_failures: int = 0
    not_running_at: float | None = None  # latest moment the task was surely not running yet (for next_poll)
    charge: tuple[tuple[Any, ...], Charge | None] | None = None  # charge_of and the fields it was read from
    request: Request | None = None  # as loaded from the job dir (local paths), for the money checks
    estimate: Estimate | None = None


class Engine:
    """Owns the jobs. Feed it inbox items with :meth:`deliver`; call :meth:`step` in a loop."""

    def __init__(
        self,
        config: Config,
        journal: Journal,
        api: RunwayClient,
        transports: Mapping[str, Any],
        http: httpx.Client,
        catalog: Catalog,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] | None = None,
        log: Any = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.api = api
        self.transports = dict(transports)
        self.http = http
        self.catalog = catalog
        self.log = log or structlog.get_logger("runwatch")
        self.inboxes: dict[str, InboxConfig] = {i.name: i for i in config.inboxes}
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        sched = config.scheduler
        self.pool = ThreadPoolExecutor(
            max_workers=sched.max_uploads + sched.max_downloads + 8, thread_name_prefix="runwatch-io"
        )
        self.jobs: dict[str, Job] = {}
        self._names: dict[tuple[str, str], str] = {}  # (inbox, name) of every followed job -> its id
        # Jobs sent or on their way (a create in flight counts: its task may exist) until their task ends,
        # counted as they go, so the caps cost no pass over thousands of waiting jobs.
        self._flying: dict[str, tuple[str, str]] = {}  # job id -> (inbox, model)
        self._fly_inbox: Counter[str] = Counter()
        self._fly_model: Counter[str] = Counter()
        # Jobs that may be accepted (a superset, pruned as dispatch meets them): a turn of the loop looks at
        # these, not at every followed job. A job becomes accepted only through _track or _set.
        self._ready: set[str] = set()
        self.rt: dict[str, _Runtime] = {}
        self.polls = PollTimers()
        self._paused_models: dict[str, float] = {}
        self._futures: dict[Future[Any], tuple[str, str]] = {}
        self._last_commands = 0.0
        # Jobs whose waiting state or progress changed since the journal last heard of it (see _flush_waiting).
        self._waiting: dict[str, Job] = {}
        self._last_waiting = 0.0
        self.stopping = threading.Event()
        self.downloads_stop = threading.Event()
        # Spending, holds and the organization's figures; it computes, the engine writes.
        self.money = MoneyGuard(
            journal,
            api,
            self.pool,
            self.events,
            self.stopping,
            self.jobs,
            self.rt,
            clock=clock,
            wall=wall or _utcnow,
            log=self.log,
        )

    @property
    def clock(self) -> Callable[[], float]:
        """The engine's clock, which is its money guard's (one clock for both; tests may replace it there)."""
        return self.money.clock

    # -- inputs -----------------------------------------------------------------------------------

    def deliver(self, item: Claimed | Refused | Control) -> None:
        """Called by inbox watchers from their own threads."""
        self.events.put(("inbox", item))

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
        known = self.journal.known_dirs()
        for inbox, job_dir in claimed_dirs:
            if str(job_dir) in known:
                continue
            files = sorted(p for p in job_dir.iterdir() if p.suffix in (".json", ".toml") and p.is_file())
            bare = not files
            if bare:  # a bare-media claim: the media file alone, at the top of the job dir
                files = sorted(p for p in job_dir.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
            if not files:
                continue
            self.log.info("job.recovered_claim", job_dir=str(job_dir))
            self._on_claimed(
                Claimed(
                    job_dir.name,
                    inbox.name,
                    job_dir,
                    files[0],
                    files[0].stem,
                    "toml" if files[0].suffix == ".toml" else "json",
                    bare,
                )
            )
        self._reconcile_finished()
        foreign = 0
        for job in self.journal.active():
            if job.inbox not in self.inboxes:
                # `runwatch submit` jobs, or an inbox removed from the config: not this daemon's to follow.
                foreign += 1
                continue
            self._track(job)
            log = self.log.bind(request=job.name, job=job.id, task_id=job.task_id)
            if job.unconfirmed_create:
                self._finish(job, "needs_attention", error=_unconfirmed_error())
                log.error("job.needs_attention", reason="create unconfirmed at restart")
            elif job.state == "uploading":
                self._cleanup_placed(job)
                self._set(job, "accepted", placed=[])
            elif job.state in AT_RUNWAY or job.state == "downloading":
                self._schedule(job.id, 0.0)  # look again at once; downloads resume from the task
                log.info("job.resumed", state=job.state)
                self._write(job)  # status files of unfinished jobs are written without fsync: renew them
            else:
                self._write(job)
        if foreign:
            self.log.info("job.not_followed", count=foreign, reason="submitted outside the configured inboxes")

    def _reconcile_finished(self, look_back: int = 1000) -> None:
        """A kill between a job's final commit and its status file's rename leaves the file one state behind:
        bring the status files of the last finished jobs up to date, and drop temporary files left over."""
        for job in self.journal.recently_finished(look_back):
            inbox = self.inboxes.get(job.inbox)
            if inbox is None:
                continue
            try:
                path = status_path(inbox.outbox, job.name, "toml" if job.format == "toml" else "json")
                text = path.read_text(encoding="utf-8")
                shown = tomllib.loads(text) if job.format == "toml" else json.loads(text)
            except (OSError, ValueError, OutboxError):
                continue  # gone (taken away downstream: not ours to bring back) or not ours to judge
            if isinstance(shown, dict) and job.id in str(shown.get("request", "")) and shown.get("state") != job.state:
                self.log.info("outbox.status_renewed", request=job.name, job=job.id, state=job.state)
                self._write(job)
        for inbox in self.inboxes.values():
            with contextlib.suppress(OutboxError):
                clean_partials(inbox.outbox)

    # -- the loop ---------------------------------------------------------------------------------

    def step(self, timeout: float = 0.2) -> None:
        """One turn: take events, fire due polls, read commands, submit what may go."""
        deadline = self.clock() + timeout
        busy_until = self.clock() + 0.05  # a burst of events must not keep due polls waiting
        while True:
            wait = max(0.0, min(deadline, self._next_timer()) - self.clock())
            try:
                kind, payload = self.events.get(timeout=wait)
            except queue.Empty:
                break
            if kind == "inbox" and isinstance(payload, Claimed):
                following = self._take_claims(payload)
                if following is not None:
                    self._handle(*following)
            else:
                self._handle(kind, payload)
            if self.events.empty() or self.clock() >= busy_until:
                break
        self._fire_timers()
        if self.clock() - self._last_commands > 0.5:
            self._last_commands = self.clock()
            self._commands()
        if self._waiting and self.clock() - self._last_waiting > WAITING_FLUSH:
            self._flush_waiting()
        if self.money.recheck_due() and not self.stopping.is_set():
            self._recheck_held()
        if not self.stopping.is_set():
            self._dispatch()

    def idle(self) -> bool:
        """Nothing waiting to be submitted, nothing in flight: ``run --once`` may stop."""
        for job in self.jobs.values():
            if job.state == "held":
                continue
            return False
        return self.events.empty() and not self._futures

    def shutdown(self, wait_creates: float = 20.0) -> None:
        """Stop taking work; wait for creates in flight so their task ids are recorded; abandon the rest."""
        self.stopping.set()
        self.downloads_stop.set()
        deadline = self.clock() + wait_creates
        while any(kind == "create" for kind, _ in self._futures.values()) and self.clock() < deadline:
            self.step(0.1)
        while not self.events.empty():
            self.step(0.0)
        if self._waiting:
            self._flush_waiting()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _next_timer(self) -> float:
        return self.polls.next_due(poll_slack(self._interval()))

    # -- events -----------------------------------------------------------------------------------

    def _take_claims(self, first: Claimed) -> tuple[str, Any] | None:
        """Take a burst of claims together (one journal commit); returns the event that ended the burst."""
        claims, following = [first], None
        while len(claims) < 500:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            if event[0] == "inbox" and isinstance(event[1], Claimed):
                claims.append(event[1])
            else:
                following = event
                break
        try:
            self._on_claims(claims)
        except Exception as exc:  # e.g. the journal's disk is full: keep running, log it
            self.log.exception("engine.error", kind="claims", error=repr(exc))
        return following

    def _handle(self, kind: str, payload: Any) -> None:
        # An answer from Runway about one job, or the organization's figures, a control file...: spending
        # may have moved, that job's or anything's.
        if isinstance(payload, tuple) and payload and isinstance(payload[0], str) and payload[0] in self.jobs:
            self.money.touched(payload[0])
        else:
            self.money.touched()
        try:
            self._handle_one(kind, payload)
        except Exception as exc:
            self.log.exception("engine.error", kind=kind, error=repr(exc))
            job_id = payload[0] if isinstance(payload, tuple) else None
            job = self.jobs.get(job_id) if isinstance(job_id, str) else None
            if job is not None:
                try:
                    self._finish(
                        job,
                        "needs_attention" if job.unconfirmed_create else "failed",
                        error={"code": "internal_error", "message": f"runwatch failed: {exc!r}"},
                    )
                except Exception:  # noqa: BLE001 - already reporting a failure
                    self._untrack(job)

    def _handle_one(self, kind: str, payload: Any) -> None:
        if kind == "org":
            self.money.after_org(*payload)
            return
        if kind == "inbox":
            if isinstance(payload, Claimed):
                self._on_claimed(payload)
            elif isinstance(payload, Refused):
                self._on_refused(payload)
            elif isinstance(payload, Control):
                self._control(payload.kind, payload.name, payload.inbox)
            return
        job_id, result = payload
        job = self.jobs.get(job_id)
        runtime = self.rt.get(job_id)
        if runtime is not None:
            runtime.busy = None
        if job is None:
            return
        handler = getattr(self, f"_after_{kind}")
        handler(job, result)
        # A cancel that arrived while a call was in flight is carried out as soon as the job is free.
        if (
            job.id in self.jobs
            and job.cancel_requested
            and job.task_id
            and job.state in AT_RUNWAY
            and runtime is not None
            and runtime.busy is None
        ):
            self._cancel_at_runway(job)

    def _run(self, job: Job, kind: str, fn: Callable[..., Any], *args: Any) -> None:
        """Run blocking work for a job on the pool; its result comes back as an event."""
        self._run_for([job], kind, lambda: [(job.id, fn(*args))])

    def _run_for(self, jobs: Sequence[Job], kind: str, work: Callable[[], list[tuple[str, Any]]]) -> None:
        """Run blocking work for several jobs on one pool thread; each job's result comes back as an event
        of its own (an exception the work raises is every job's result)."""
        for job in jobs:
            self.rt[job.id].busy = kind
        future = self.pool.submit(work)
        self._futures[future] = (kind, jobs[0].id)

        def done(f: Future[list[tuple[str, Any]]]) -> None:
            try:
                results = f.result()
            except BaseException as exc:  # noqa: BLE001 - every failure goes back to the engine to decide
                results = [(job.id, exc) for job in jobs]
            for job_id, result in results:
                self.events.put((kind, (job_id, result)))
            self._futures.pop(f, None)

        future.add_done_callback(done)

    # -- claims -----------------------------------------------------------------------------------

    def _track(self, job: Job) -> None:
        self.jobs[job.id] = job
        self._names[(job.inbox, job.name)] = job.id
        self.rt.setdefault(job.id, _Runtime())
        self.money.followed(job)
        if job.state == "accepted":
            self._ready.add(job.id)
        if job.state not in ("accepted", "held") and job.state not in FINAL_STATES:
            self._fly(job)
            if job.state == "downloading":
                self._land(job.id)

    def _untrack(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        self._land(job.id)
        self.money.charged.discard(job.id)
        if self._names.get((job.inbox, job.name)) == job.id:
            del self._names[(job.inbox, job.name)]

    def _unique_name(self, inbox: str, name: str) -> str:
        if (inbox, name) not in self._names:
            return name
        n = 2
        while (inbox, f"{name}.{n}") in self._names:
            n += 1
        return f"{name}.{n}"

    def _on_claimed(self, claim: Claimed) -> None:
        self._on_claims([claim])

    def _on_claims(self, claims: list[Claimed]) -> None:
        """Take claimed requests: refuse the invalid, record the rest in one commit, then show them."""
        jobs: list[Job] = []
        for claim in claims:
            inbox = self.inboxes[claim.inbox]
            try:
                # The watcher loaded it from the job dir already; a claim found at start-up is read here.
                req = claim.request or self._load(claim.request_file, claim.job_dir, inbox)
            except RequestError as exc:
                self._on_refused(
                    Refused(
                        claim.job_id,
                        claim.inbox,
                        claim.job_dir,
                        claim.request_file,
                        claim.name,
                        claim.format,
                        tuple(exc.problems),
                    ),
                    move=True,
                )
                continue
            job = Job(
                id=claim.job_id,
                name=self._unique_name(inbox.name, req.options.name),
                inbox=inbox.name,
                format=req.format,
                endpoint=req.endpoint,
                model=req.model,
                priority=req.options.priority + inbox.priority,
                job_dir=str(claim.job_dir),
                request_path=str(claim.request_file),
                body=req.body,
            )
            self.rt[job.id] = _Runtime(request=req)
            guess = self._estimate(job, req, record=False)  # shown in the status file from the start
            job.estimated_credits = None if guess.credits is None else float(guess.credits)
            verdict = self._hold_reason(job, req)
            if verdict:
                job.state, job.error = "held", {"code": verdict[0], "message": verdict[1]}
            self._names[(job.inbox, job.name)] = job.id  # reserved: the next claim of this name is NAME.2
            jobs.append(job)
        try:
            self.journal.add_many(jobs)
        except RunwatchError:
            for job in jobs:  # the claims stay in jobs/ and are taken again at the next start
                self.rt.pop(job.id, None)
                self._names.pop((job.inbox, job.name), None)
            raise
        for job in jobs:
            self._track(job)
            self._write(job)
            self.log.info("job.accepted", request=job.name, job=job.id, endpoint=job.endpoint, model=job.model)
            if job.state == "held":
                self.log.info("job.held", request=job.name, job=job.id, reason=job.error["message"])

    # -- money ----------------------------------------------------------------------------------

    def _estimate(self, job: Job, req: Request, record: bool = True) -> Estimate:
        """Our estimate from the price data and the request's own parameters (media probed for length)."""
        runtime = self.rt[job.id]
        if runtime.estimate is not None:
            return runtime.estimate
        if not isinstance(job.model, str) or job.endpoint is None:  # passed through as written, e.g. a list
            guess = Estimate(None, "the request names no model")
        else:
            from runwatch.mediaprobe import probe_file
            from runwatch.pricing import MediaHint, estimate

            hints = {}
            for media in req.media:
                try:
                    info = probe_file(media.file)
                except OSError:
                    info = None
                if info is not None:
                    hints[format_path(media.field)] = MediaHint(
                        duration=info.duration, width=info.width, height=info.height
                    )
            guess = estimate(job.endpoint, job.model, req.body, hints)
        runtime.estimate = guess
        credits = None if guess.credits is None else float(guess.credits)
        # Runway's estimatedCost, once known, is what the status file shows.
        if record and job.task_id is None and job.estimated_credits != credits:
            self.journal.update(job, estimated_credits=credits)
        return guess

    def _hold_reason(self, job: Job, req: Request) -> tuple[str, str] | None:
        """(code, reason) when the job may not be sent now; None when it may. Checked right before sending."""
        guess = self._estimate(job, req)
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
        for job in [j for j in self.jobs.values() if j.state == "held"]:
            runtime = self.rt[job.id]
            if job.not_before and job.not_before > time.time():
                self.money.wake_at(job.not_before)
                continue
            if runtime.busy or job.cancel_requested:
                continue
            req = self._request(job)
            verdict = self._hold_reason(job, req) if req is not None else None
            if verdict is None:
                self._set(job, "accepted", error=None, not_before=None)
            elif job.error != {"code": verdict[0], "message": verdict[1]}:
                self._set(job, "held", error={"code": verdict[0], "message": verdict[1]})

    def _request(self, job: Job) -> Request | None:
        runtime = self.rt[job.id]
        if runtime.request is None:
            inbox = self.inboxes.get(job.inbox)
            if inbox is None or job.job_dir is None or job.request_path is None:
                return None
            try:
                runtime.request = self._load(Path(job.request_path), Path(job.job_dir), inbox)
            except RequestError:
                return None
        return runtime.request

    def _on_refused(self, ref: Refused, move: bool = False) -> None:
        # A file name that is not UTF-8 still gets a journal row and a status file, under a readable name.
        ref = Refused(
            ref.job_id, ref.inbox, ref.job_dir, ref.request_file, printable(ref.name), ref.format, ref.problems
        )
        job_dir, request_file = ref.job_dir, ref.request_file
        if move:
            job_dir, request_file = self._move_record(ref.inbox, job_dir, request_file, "failed")
        issues = [{"path": p.path, "message": p.message} for p in ref.problems]
        job = Job(
            id=ref.job_id,
            name=self._unique_name(ref.inbox, ref.name),
            inbox=ref.inbox,
            format=ref.format,
            state="rejected",
            job_dir=printable(str(job_dir)),
            request_path=printable(str(request_file)),
            error={
                "code": "invalid_request",
                "message": f"{len(issues)} problem(s) in the request file",
                "issues": issues,
            },
            finished_at=now_iso(),
        )
        self.journal.add(job)
        self._write(job)
        self.log.warning("job.rejected", request=job.name, job=job.id, problems=len(issues))

    def _load(self, request_file: Path, root: Path, inbox: InboxConfig) -> Request:
        return load_request(
            request_file, root=root, inbox=inbox, catalog=self.catalog, unknown_models=self.config.runway.unknown_models
        )

    # -- submission -------------------------------------------------------------------------------

    def _fly(self, job: Job) -> None:
        self.money.charged.add(job.id)
        if job.id not in self._flying:
            self._flying[job.id] = (job.inbox, job.model or "")
            self._fly_inbox[job.inbox] += 1
            self._fly_model[job.model or ""] += 1

    def _land(self, job_id: str) -> None:
        entry = self._flying.pop(job_id, None)
        if entry is not None:
            self._fly_inbox[entry[0]] -= 1
            self._fly_model[entry[1]] -= 1

    def _model_cap(self, model: str | None) -> int | None:
        if self.config.scheduler.per_model is not None:
            return self.config.scheduler.per_model
        return self.money.model_caps.get(model or "")

    def _dispatch(self) -> None:
        if not self._ready or len(self._flying) >= self.config.scheduler.max_in_flight:
            return
        now = time.time()
        waiting: dict[str, Candidate] = {}
        for job_id in list(self._ready):
            j = self.jobs.get(job_id)
            if j is None or j.state != "accepted":
                self._ready.discard(job_id)
            elif not self.rt[job_id].busy:
                waiting[job_id] = Candidate(j.id, j.inbox, j.model, j.priority, j.seq, j.not_before)
        while waiting:
            cand = pick(
                waiting.values(),
                now=now,
                in_flight=len(self._flying),
                max_in_flight=self.config.scheduler.max_in_flight,
                per_inbox=self._fly_inbox,
                per_model=self._fly_model,
                model_cap=self._model_cap,
                paused_models=self._paused_models,
            )
            if cand is None:
                return
            del waiting[cand.job_id]
            self._start(self.jobs[cand.job_id])

    def _start(self, job: Job) -> None:
        inbox = self.inboxes.get(job.inbox)
        if inbox is None or job.job_dir is None or job.request_path is None:
            self._finish(
                job, "failed", error={"code": "inbox_gone", "message": "the job's inbox is no longer configured"}
            )
            return
        req = self.rt[job.id].request  # as read at the claim; read again after a restart
        if req is None:
            try:
                req = self._load(Path(job.request_path), Path(job.job_dir), inbox)
            except RequestError as exc:
                self._finish(
                    job,
                    "failed",
                    error={
                        "code": "invalid_request",
                        "message": str(exc).splitlines()[0],
                        "issues": [{"path": p.path, "message": p.message} for p in exc.problems],
                    },
                )
                return
            self.rt[job.id].request = req
        # Checked here, before any upload, and not only at the claim: budgets and the balance change.
        verdict = self._hold_reason(job, req)
        if verdict:
            self._set(job, "held", error={"code": verdict[0], "message": verdict[1]})
            self.log.info("job.held", request=job.name, job=job.id, reason=verdict[1])
            return
        guess = self._estimate(job, req)
        self.money.reserve(job, float(guess.credits or 0))
        self._fly(job)
        self.money.touched(job.id)
        if not req.media:
            self._create(job, req.body)
            return
        self._set(job, "uploading")
        self._run(job, "placed", self._place_all, job, req, inbox)

    def _place_all(self, job: Job, req: Request, inbox: InboxConfig) -> tuple[dict[Any, str], list[Placed]]:
        from runwatch.media import choose

        transport = self.transports[choose(inbox.transport, s3_configured="s3" in self.transports)]
        uris: dict[Any, str] = {}
        placed: list[Placed] = []
        by_file: dict[Path, Placed] = {}
        try:
            for media in req.media:
                item = by_file.get(media.file) or transport.place(media, job.id)
                by_file[media.file] = item
                if item not in placed:
                    placed.append(item)
                uris[media.field] = item.uri
        except BaseException:
            for item in placed:  # nothing half-placed stays behind
                with contextlib.suppress(RunwatchError):
                    transport.remove(item)
            raise
        return uris, placed

    def _after_placed(self, job: Job, result: Any) -> None:
        if isinstance(result, BaseException):
            retryable = (isinstance(result, UploadError) and result.retryable) or isinstance(result, ApiError)
            self._retry_later(job, result, "upload_failed", retryable)
            return
        uris, placed = result
        self.journal.update(job, placed=[_placed_record(p) for p in placed])
        if job.cancel_requested:
            self._finish(job, "cancelled")
            return
        req = self._load(Path(job.request_path or ""), Path(job.job_dir or ""), self.inboxes[job.inbox])
        self._create(job, req.with_uris(uris))

    def _create(self, job: Job, body: dict[str, Any]) -> None:
        if job.cancel_requested:
            self._finish(job, "cancelled")
            return
        first = [True]
        runtime = self.rt[job.id]

        def before_send() -> None:
            # The intent is committed (fsync'd) before each attempt leaves: a crash from here on is seen.
            # (Runs on the worker; the engine leaves a job alone while its call is in flight.)
            runtime.not_running_at = self.clock()  # a task made by this attempt cannot be running yet
            if first[0]:
                first[0] = False
                self.journal.update(job, create_started_at=now_iso(), attempts=job.attempts + 1)
            else:
                self.journal.update(job, create_started_at=now_iso())

        def not_sent() -> None:
            self.journal.update(job, create_started_at=None)

        def send() -> Created:
            created = self.api.create_task(job.endpoint or "", body, before_send, not_sent)
            # Recorded here, on the worker, the moment Runway answers: the window in which a crash leaves a
            # create unconfirmed is the round trip and one fsync, not also the engine's queue.
            estimated = created.estimated_credits if created.estimated_credits is not None else job.estimated_credits
            self.journal.update(job, task_id=created.id, estimated_credits=estimated, state="submitted")
            return created

        self.log.info("api.creating", request=job.name, job=job.id, endpoint=job.endpoint)
        self._run(job, "created", send)

    def _after_created(self, job: Job, result: Any) -> None:
        log = self.log.bind(request=job.name, job=job.id)
        if not isinstance(result, BaseException):
            estimated = job.estimated_credits  # recorded with the task id by the worker that sent the create
            self.money.answered(job.id, estimated)
            self.money.refresh_org(force=True)  # credits were spent: read the balance and usage again
            self._set(job, "submitted")
            log.info("api.created", task_id=result.id, estimated_credits=result.estimated_credits)
            if job.cancel_requested:
                self._cancel_at_runway(job)
            else:
                self._schedule(job.id, self._interval())
            return
        if isinstance(result, ApiError) and create_may_be_retried(result):
            self.journal.update(job, create_started_at=None)  # surely not created
            self._retry_later(job, result, "create_failed", True)
            return
        if isinstance(result, RateLimitedError) and result.daily:
            # Our count missed creates made elsewhere (another key, the web app): trust Runway, look later.
            self.journal.update(job, create_started_at=None)
            until = time.time() + 1800
            if job.model:
                self._paused_models[job.model] = until
            self._set(
                job,
                "held",
                not_before=until,
                error={
                    "code": "429",
                    "message": f"Runway's daily task limit for {job.model} is reached; "
                    "trying again in 30 minutes (other models go on)",
                },
            )
            self.money.refresh_org(force=True)
            log.warning("api.daily_limit", model=job.model)
            return
        if isinstance(result, ApiStatusError) and result.status < 500:
            self.journal.update(job, create_started_at=None)  # a 4xx answer: Runway created nothing
            message = result.body.get("error") if isinstance(result.body, dict) else str(result.body)
            issues = [{"path": _issue_path(i.get("path")), "message": str(i.get("message"))} for i in result.issues]
            state = "rejected" if result.status == 400 and issues else "failed"
            if result.status == 400 and "enough credits" in str(message):
                self._set(
                    job,
                    "held",
                    not_before=time.time() + 300,
                    error={"code": "400", "message": f"{message} Trying again in 5 minutes."},
                )
                self.money.refresh_org(force=True)
                return
            self._finish(job, state, error={"code": str(result.status), "message": str(message), "issues": issues})
            log.warning("api.refused", status=result.status)
            return
        # A timeout, a dropped connection after sending, a 500, a crash of ours: the task may exist.
        self._finish(job, "needs_attention", error=_unconfirmed_error(str(result)))
        log.error("job.needs_attention", reason=str(result))

    def _retry_later(self, job: Job, error: BaseException, code: str, retryable: bool) -> None:
        attempts = job.attempts + (0 if code == "create_failed" else 1)
        if not retryable or attempts >= 8:
            self._cleanup_placed(job)
            self._finish(job, "failed", error={"code": code, "message": str(error)})
            return
        delay = min(300.0, 2.0**attempts)
        self._cleanup_placed(job)
        self._set(job, "accepted", not_before=time.time() + delay, attempts=attempts, placed=[])
        self.log.warning("job.retry_later", request=job.name, job=job.id, delay=delay, error=str(error))

    # -- following tasks --------------------------------------------------------------------------

    def _interval(self) -> float:
        return self.config.runway.poll_interval

    def _schedule(self, job_id: str, delay: float) -> None:
        self.polls.schedule(job_id, self.clock() + delay)

    def _flush_waiting(self) -> None:
        self._last_waiting = self.clock()
        # Only jobs still followed as these objects: one finished (or retried) since was committed on its own.
        jobs = [job for job in self._waiting.values() if self.jobs.get(job.id) is job]
        self._waiting = {}
        try:
            self.journal.save_waiting(jobs)
        except RunwatchError as exc:
            self.log.warning("journal.waiting_failed", error=str(exc))

    def _fire_timers(self) -> None:
        """Send the due polls in runs (see :mod:`runwatch.polls`)."""
        slack = poll_slack(self._interval())
        due: list[Job] = []
        for job_id in self.polls.take_due(self.clock(), slack):
            job = self.jobs.get(job_id)
            if job is None or self.rt[job_id].busy or self.stopping.is_set():
                continue
            if job.task_id and (job.state in AT_RUNWAY or job.state == "downloading"):
                due.append(job)
        for run in self.polls.runs(due, slack):
            self._poll_run(run, budget=slack)

    def _poll_run(self, jobs: Sequence[Job], budget: float) -> None:
        tasks = [(job.id, str(job.task_id)) for job in jobs]
        self._run_for(jobs, "polled", lambda: self.polls.get_run(self.api.get_task, tasks, budget))

    def _after_polled(self, job: Job, result: Any) -> None:
        runtime = self.rt[job.id]
        if result is NOT_POLLED:
            self._schedule(job.id, 0.0)
            return
        if isinstance(result, ApiStatusError) and result.status == 404:
            if job.cancel_requested:
                self._finish(job, "cancelled")
            else:
                self._finish(job, "failed", error={"code": "404", "message": "the task no longer exists at Runway"})
            return
        if isinstance(result, BaseException):
            runtime.poll_failures += 1
            delay = min(300.0, self._interval() * 2 ** min(runtime.poll_failures, 6))
            self.log.warning(
                "api.poll_failed", request=job.name, task_id=job.task_id, error=str(result), retry_in=delay
            )
            self._schedule(job.id, delay)
            return
        runtime.poll_failures = 0
        status = str(result.get("status"))
        if status in _STATE_OF:
            progress = result.get("progress") if status == "RUNNING" else None
            now = self.clock()
            if isinstance(progress, int | float):
                runtime.samples.append(Sample(now, float(progress)))
                del runtime.samples[:-20]
            elif status != "RUNNING":
                runtime.not_running_at = now
            state = _STATE_OF[status]
            moved = float(progress) if isinstance(progress, int | float) else job.progress
            if state != job.state or moved != job.progress:
                # THROTTLED/PENDING/RUNNING and progress are for people: in the status file at once, in the
                # journal within seconds (lost to a power cut, the next start's first poll finds them again).
                if state != job.state:
                    job.state, job.updated_at = state, now_iso()
                job.progress = moved
                self._waiting[job.id] = job
                self._write(job)
            self._schedule(
                job.id,
                next_poll(status, runtime.samples, now=now, interval=self._interval(), since=runtime.not_running_at),
            )
        elif status == "SUCCEEDED":
            cost = result.get("cost", {})
            credits = cost.get("credits") if isinstance(cost, dict) else None
            if job.state != "downloading":
                self._set(job, "downloading", progress=1.0, credits=credits)
            urls = [u for u in result.get("output", []) if isinstance(u, str)]
            self._run(job, "downloaded", self._download, job, urls)
        elif status == "FAILED":
            cost = result.get("cost", {})
            self._finish(
                job,
                "failed",
                credits=cost.get("credits") if isinstance(cost, dict) else None,
                error={
                    "code": str(result.get("failureCode") or "FAILED"),
                    "message": str(result.get("failure") or "the task failed at Runway"),
                },
            )
        elif status == "CANCELLED":
            self._finish(job, "cancelled")
        else:
            self._schedule(job.id, self._interval())

    def _download(self, job: Job, urls: list[str]) -> list[OutputRecord]:
        inbox = self.inboxes[job.inbox]
        inbox.outbox.mkdir(parents=True, exist_ok=True)
        done = [OutputRecord(o["file"], o["bytes"], o["sha256"], o["index"]) for o in job.outputs]
        task_id = job.task_id or ""

        def refresh() -> list[str]:
            task = self.api.get_task(task_id)
            return [u for u in task.get("output", []) if isinstance(u, str)]

        return download_outputs(
            self.http, urls, inbox.outbox, job.name, done=done, refresh=refresh, stop=self.downloads_stop
        )

    def _after_downloaded(self, job: Job, result: Any) -> None:
        if isinstance(result, DownloadError) and result.records:
            # Outputs already complete are kept, so a later attempt does not fetch them twice.
            self.journal.update(job, outputs=_records(result.records))
        if isinstance(result, BaseException):
            if self.stopping.is_set():
                return  # abandoned for the shutdown; the next start downloads again
            self.log.warning("outbox.download_failed", request=job.name, task_id=job.task_id, error=str(result))
            runtime = self.rt[job.id]
            runtime.poll_failures += 1
            if runtime.poll_failures > 8:
                self._finish(job, "failed", error={"code": "download_failed", "message": str(result)})
            else:
                self._schedule(job.id, min(300.0, 2.0**runtime.poll_failures))
            return
        self._finish(job, "succeeded", outputs=_records(result))

    # -- cancel, retry, approve -------------------------------------------------------------------

    def _commands(self) -> None:
        for command in self.journal.pending_commands():
            result = self._control(command.kind, command.name, None)
            self.journal.finish_command(command.id, result)

    def _control(self, kind: str, name: str, inbox: str | None) -> str:
        self.money.touched()  # an approval or a retry changes what may be sent
        if kind == "cancel":
            return self._cancel(name, inbox)
        if kind == "retry":
            return self._retry(name)
        if kind == "approve":
            job = self._active_named(name, inbox)
            if job is None or job.state != "held":
                return f"no held request named {name}"
            self._set(job, "accepted", approved=True, error=None, not_before=None)
            return "approved"
        return f"unknown command {kind}"

    def _active_named(self, name: str, inbox: str | None) -> Job | None:
        found = [j for j in self.jobs.values() if j.name == name and (inbox is None or j.inbox == inbox)]
        return max(found, key=lambda j: j.seq) if found else None

    def _cancel(self, name: str, inbox: str | None) -> str:
        job = self._active_named(name, inbox)
        if job is None:
            return f"no active request named {name}"
        self.journal.update(job, cancel_requested=True)
        self.log.info("job.cancel_requested", request=name, job=job.id, state=job.state)
        busy = self.rt[job.id].busy
        if job.state in ("accepted", "held") and not busy:
            self._finish(job, "cancelled")
            return "cancelled"
        if job.state in AT_RUNWAY and job.task_id and busy is None:
            self._cancel_at_runway(job)
        return "cancelling"

    def _cancel_at_runway(self, job: Job) -> None:
        self._run(job, "deleted", self.api.delete_task, job.task_id or "")

    def _after_deleted(self, job: Job, result: Any) -> None:
        if (isinstance(result, ApiStatusError) and result.status == 404) or not isinstance(result, BaseException):
            self._finish(job, "cancelled")
            return
        runtime = self.rt[job.id]
        runtime.poll_failures += 1
        self.log.warning("api.cancel_failed", request=job.name, task_id=job.task_id, error=str(result))
        if runtime.poll_failures <= 5:
            self._run(job, "deleted", self.api.delete_task, job.task_id or "")
        else:
            self._schedule(job.id, self._interval())  # keep following it; a later cancel may work

    def _retry(self, name: str) -> str:
        job = self.journal.find(name)
        if job is None:
            return f"no request named {name}"
        if job.inbox not in self.inboxes:
            return (
                f"{name} was sent by `runwatch submit` or from an inbox no longer configured ({job.inbox!r}); "
                "submit the file again to resend it on purpose"
            )
        if job.state not in ("needs_attention", "failed", "cancelled"):
            return f"{name} is {job.state}; only needs_attention, failed or cancelled requests are retried"
        history = [
            *job.history,
            {"task_id": job.task_id, "state": job.state, "error": job.error, "finished_at": job.finished_at},
        ]
        job_dir, request_file = Path(job.job_dir or ""), Path(job.request_path or "")
        if job_dir.exists() and job_dir.parent.name in ("failed", "done"):
            job_dir, request_file = self._move_record(job.inbox, job_dir, request_file, "jobs")
        self.journal.update(
            job,
            state="accepted",
            task_id=None,
            create_started_at=None,
            error=None,
            finished_at=None,
            progress=None,
            credits=None,
            estimated_credits=None,
            outputs=[],
            placed=[],
            history=history,
            cancel_requested=False,
            not_before=None,
            attempts=0,
            job_dir=str(job_dir),
            request_path=str(request_file),
        )
        self.rt.pop(job.id, None)  # estimated again from the request as it is now
        self._track(job)
        self._write(job)
        self.log.info("job.retry", request=name, job=job.id)
        return "resubmitting"

    # -- state changes ----------------------------------------------------------------------------

    def _set(self, job: Job, state: str, **changes: Any) -> None:
        self.journal.update(job, state=state, **changes)
        if state == "accepted":
            self._ready.add(job.id)
        if state in ("accepted", "held") or state in FINAL_STATES or state == "downloading":
            self._land(job.id)  # no longer holding a slot at Runway
        if state in ("accepted", "held") or state in FINAL_STATES:
            self.money.charged.discard(job.id)
        if state in ("accepted", "held") or (state in FINAL_STATES and job.task_id is None):
            self.money.reserved.pop(job.id, None)  # not sent (or surely not created): nothing to reserve
        self._write(job)
        self.log.info(f"job.{state}", request=job.name, job=job.id, task_id=job.task_id)

    def _finish(self, job: Job, state: str, **changes: Any) -> None:
        if job.job_dir and Path(job.job_dir).parent.name == "jobs":
            record = "done" if state in ("succeeded", "cancelled") else "failed"
            job_dir, request_file = self._move_record(
                job.inbox, Path(job.job_dir), Path(job.request_path or ""), record
            )
            changes.update(job_dir=str(job_dir), request_path=str(request_file))
        if state != "needs_attention":
            self._cleanup_placed(job)
        self._set(job, state, finished_at=now_iso(), **changes)
        self._untrack(job)
        self.money.finished(job)

    def _move_record(self, inbox: str, job_dir: Path, request_file: Path, where: str) -> tuple[Path, Path]:
        """Keep a taken request as a done/failed record (or bring it back for a retry)."""
        config = self.inboxes.get(inbox)
        if config is None or not job_dir.exists():
            return job_dir, request_file
        target = config.work / where / job_dir.name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(job_dir, target)
        except OSError as exc:
            self.log.error("work.move_failed", job_dir=str(job_dir), target=str(target), error=str(exc))
            return job_dir, request_file
        try:
            return target, target / request_file.relative_to(job_dir)
        except ValueError:
            return target, request_file

    def _cleanup_placed(self, job: Job) -> None:
        if not job.placed:
            return
        for record in job.placed:
            transport = self.transports.get(str(record.get("transport")))
            if transport is None or not record.get("handle"):
                continue
            if getattr(getattr(transport, "config", None), "keep", False):
                continue
            placed = Placed("", str(record["transport"]), str(record["handle"]), record.get("expires_at"))
            self.pool.submit(_quietly, transport.remove, placed)
        self.journal.update(job, placed=[])

    def _write(self, job: Job) -> None:
        inbox = self.inboxes.get(job.inbox)
        if inbox is None:
            return
        fmt: StatusFormat = "toml" if job.format == "toml" else "json"
        document, durable = status_document(job), job.state in FINAL_STATES
        try:
            try:
                write_status(inbox.outbox, job.name, fmt, document, durable=durable)
            except OutboxError:
                if inbox.outbox.is_dir():
                    raise
                inbox.outbox.mkdir(parents=True, exist_ok=True)  # taken away while we run: made again
                write_status(inbox.outbox, job.name, fmt, document, durable=durable)
        except (OutboxError, OSError) as exc:
            self.log.error("outbox.status_failed", request=job.name, error=str(exc))


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _unconfirmed_error(detail: str = "") -> dict[str, Any]:
    message = (
        "the create request may have reached Runway but no answer was recorded; it was not sent again "
        "so no credit is spent twice. Check the task list at Runway, then `runwatch retry NAME` to "
        "submit it on purpose."
    )
    if detail:
        message = f"{message} ({detail})"
    return {"code": "create_unconfirmed", "message": message}


def _issue_path(path: Any) -> str:
    """Runway's issue path (a list of keys and indexes) as a dotted path."""
    if not isinstance(path, list):
        return ""
    return format_path([p if isinstance(p, int) else str(p) for p in path])


def _records(records: list[OutputRecord]) -> list[dict[str, Any]]:
    return [{"file": r.file, "bytes": r.bytes, "sha256": r.sha256, "index": r.index} for r in records]


def _placed_record(placed: Placed) -> dict[str, Any]:
    # Only the handle (an S3 key or a runway:// URI) is kept: never a presigned URL with its signature.
    return {"transport": placed.transport, "handle": placed.handle, "expires_at": placed.expires_at}


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    with contextlib.suppress(RunwatchError):
        fn(*args)
