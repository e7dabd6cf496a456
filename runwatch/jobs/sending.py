"""Sending: which accepted requests go next, their media placed, the create sent and its answer taken.

The money rule lives here. The create runs on a worker that commits the intent before each attempt and the
task id the moment Runway answers (by job id, through the store's ``Intents``); the answer comes back as a
``Created`` event and ``runwatch.jobs.lifecycle`` decides what a failure means.

With a journal several nodes share, the intent's commit is also the money check over every node's spending
(``Store.record_intent`` given a ``MoneyCheck``): refused, nothing is recorded or sent and the request is held
with the reason the node's own guard would give (``MoneyHeld``). The same check is looked at before uploading.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runwatch.api import Created as TaskCreated
from runwatch.budget import MoneyCheck
from runwatch.clock import iso
from runwatch.errors import (
    CreateUnconfirmedError,
    InboxError,
    IntentNotRecorded,
    MoneyHeld,
    RequestError,
    RunwatchError,
    TaskNamedAlready,
)
from runwatch.jobs import commands, events, intake, lifecycle, proving
from runwatch.jobs.book import quietly, removal
from runwatch.jobs.job import Job
from runwatch.jobs.lifecycle import Finish, Hold, RetryLater
from runwatch.jobs.runner import Work
from runwatch.jobs.states import State
from runwatch.media import Placed
from runwatch.request import Request
from runwatch.scheduler import Candidate, pick
from runwatch.workrecords import IntentMark, clear_intent_mark, mark_intent

if TYPE_CHECKING:
    from runwatch.jobs.engine import Engine

__all__ = ["after_created", "after_placed", "dispatch", "money_check", "shared_outcome"]

SHARED_HOLD_WAIT = 60.0  # seconds a request held by every node's spending waits before it is looked at again
CONCURRENCY_WAIT = 2.0  # seconds a create waits when every node's tasks of its model fill Runway's concurrency


def dispatch(engine: Engine) -> None:
    book = engine.book
    if not book.ready or book.in_flight >= engine.config.scheduler.max_in_flight:
        return
    now = engine.clock.monotonic()  # back-offs and rests on the clock a wall-clock step cannot move
    waiting: dict[str, Candidate] = {}
    for job_id in list(book.ready):
        j = book.job(job_id)
        if j is None or j.state != State.ACCEPTED:
            book.ready.discard(job_id)
        elif not book.rt[job_id].busy:
            waiting[job_id] = Candidate(j.id, j.inbox, j.model, j.priority, j.seq, engine.waits_until(j))
    paused = {m: until for m, until in engine.paused_models.items() if until > now}
    while waiting:
        cand = pick(
            waiting.values(),
            now=now,
            in_flight=book.in_flight,
            max_in_flight=engine.config.scheduler.max_in_flight,
            per_inbox=book.fly_inbox,
            per_model=book.fly_model,
            model_cap=lambda model: model_cap(engine, model),
            paused_models=paused,
        )
        if cand is None:
            return
        del waiting[cand.job_id]
        start(engine, book.jobs[cand.job_id])


def money_check(engine: Engine, job: Job, req: Request) -> MoneyCheck:
    """What a journal several nodes share checks this create against (see ``Store.record_intent``)."""
    guess = intake.estimate(engine, job, req)
    return engine.money.check_of(job, guess, intake.limits_of(engine, job, req), model_cap(engine, job.model))


def shared_outcome(job: Job, code: str, reason: str) -> Hold | RetryLater:
    """What every node's spending together decided for a create that may not go now: held with the reason the
    node's own guard would give, looked at again after a while (another node's spending is not seen here as it
    moves); Runway's concurrency only waits a moment, as at one node."""
    if code == "concurrency":
        return RetryLater(CONCURRENCY_WAIT, job.attempts, reason)
    return Hold(code, reason, SHARED_HOLD_WAIT)


def model_cap(engine: Engine, model: str | None) -> int | None:
    if engine.config.scheduler.per_model is not None:
        return engine.config.scheduler.per_model
    return engine.money.model_caps.get(model or "")


def start(engine: Engine, job: Job) -> None:
    inbox = engine.inboxes.get(job.inbox)
    if inbox is None or job.job_dir is None or job.request_path is None:
        gone = {"code": "inbox_gone", "message": "the job's inbox is no longer configured"}
        engine.book.move(job, State.FAILED, error=gone)
        return
    req = intake.request_of(engine, job)
    if req is None:
        try:  # loaded again to say why
            req = intake.load(engine, Path(job.request_path), Path(job.job_dir), inbox)
        except RequestError as exc:
            issues = [{"path": p.path, "message": p.message} for p in exc.problems]
            error = {
                "code": "invalid_request",
                "message": str(exc).splitlines()[0],
                "issues": issues,
            }
            engine.book.move(job, State.FAILED, error=error)
            return
        engine.book.rt[job.id].request = req
    # Checked here, before any upload, and not only at the claim: budgets and the balance change.
    verdict = intake.hold_reason(engine, job, req)
    if verdict:
        engine.book.move(job, State.HELD, error={"code": verdict[0], "message": verdict[1]})
        return
    # A journal other nodes share has their spending too: a look before uploading (the intent decides).
    shared = engine.store.money_hold(money_check(engine, job, req))
    if shared:
        engine.apply(job, shared_outcome(job, *shared))
        return
    engine.money.reserve(job, float(intake.estimate(engine, job, req).credits or 0))
    engine.book.fly(job)
    engine.money.touched(job.id)
    if not req.media:
        create(engine, job, req.body)
        return
    engine.book.move(job, State.UPLOADING)
    transport = engine.transports[inbox.media_transport]  # the transport its media sizes were checked for
    engine.run(job, Work.PLACE, lambda: events.Placed(job.id, _place_all(transport, req, job.id)))


def after_placed(engine: Engine, job: Job, result: Any) -> None:
    if isinstance(result, BaseException):
        engine.apply(job, lifecycle.after_place_failure(result, attempts=job.attempts + 1))
        return
    uris, placed = result
    engine.store.update(job, placed=[_placed_record(p) for p in placed])
    if job.cancel_requested:
        engine.book.move(job, State.CANCELLED)
        return
    req = intake.request_of(engine, job)
    if req is None:
        engine.book.move(job, State.FAILED, error={"code": "invalid_request", "message": "the request is gone"})
        return
    create(engine, job, req.with_uris(uris))


def create(engine: Engine, job: Job, body: dict[str, Any]) -> None:
    if job.cancel_requested:
        engine.book.move(job, State.CANCELLED)
        return
    store, api, clock, job_id, endpoint = engine.store, engine.api, engine.clock, job.id, job.endpoint or ""
    req = intake.request_of(engine, job)
    check = money_check(engine, job, req) if req is not None else None
    job_dir = Path(job.job_dir) if job.job_dir else None  # `runwatch submit` jobs adopted have none
    sent_at: list[float] = []

    def before_send() -> None:  # on the worker, before each attempt leaves: a crash from here on is seen
        # The journal's intent first, then the work area's marker (which outlives a lost journal); the create
        # leaves only once both stand. In this order a marker always has a recorded intent behind it, so a node
        # taking the job over from one still waiting for its commit never takes the marker for a create sent.
        try:
            store.record_intent(job_id, first=not sent_at, check=check)  # with every node's spending
        except IntentNotRecorded:
            raise
        except RunwatchError as exc:
            raise IntentNotRecorded(f"the intent of the create cannot be recorded, so it was not sent: {exc}") from exc
        if job_dir is not None:
            try:
                mark_intent(job_dir, IntentMark(job_id, iso(clock.now())))
            except InboxError as exc:
                with contextlib.suppress(RunwatchError):  # nothing left: no intent stands (owed if refused)
                    store.clear_intent(job_id)
                raise IntentNotRecorded(f"the create was not sent: {exc}") from exc
        sent_at.append(clock.monotonic())

    def not_sent() -> None:  # an answer proving nothing was made: neither record stands
        store.clear_intent(job_id)
        if job_dir is not None:
            clear_intent_mark(job_dir)

    def send() -> events.Created:
        try:
            created = api.create_task(endpoint, body, before_send, not_sent)
        except RunwatchError as exc:  # with the moment the last attempt left, for the proof from Runway's counts
            return events.Created(job_id, exc, sent_at[-1] if sent_at else None)
        # Recorded here, the moment Runway answers: the window in which a crash leaves a create unconfirmed
        # is the round trip and one fsync, not also the engine's queue.
        store.record_task(job_id, created.id, created.estimated_credits)
        if job_dir is not None:
            with contextlib.suppress(InboxError):  # the journal has it; the marker still says "may exist"
                mark_intent(job_dir, IntentMark(job_id, iso(clock.now()), created.id))
        return events.Created(job_id, created, sent_at[-1] if sent_at else None)

    engine.log.info("api.creating", request=job.name, job=job.id, endpoint=job.endpoint)
    engine.run(job, Work.CREATE, send)


def after_created(engine: Engine, job: Job, result: TaskCreated | BaseException, sent_at: float | None) -> None:
    # What the sending thread recorded by id, brought onto this thread's copy of the job.
    fresh = engine.store.get(job.id)
    if fresh is not None:
        job.apply(create_started_at=fresh.create_started_at, attempts=fresh.attempts)
    if isinstance(result, TaskNamedAlready):
        # The journal names a task for this job that this thread never took in, and refused a second create
        # (nothing was sent): that task is followed, as if Runway had just named it.
        engine.log.error("engine.task_found", request=job.name, job=job.id, task_id=result.task_id)
        engine.money.answered(job.id, job.estimated_credits)
        engine.book.move(job, State.SUBMITTED, task_id=result.task_id)
        engine.schedule(job.id, engine.interval())
        return
    if sent_at is not None:
        engine.book.rt[job.id].not_running_at = sent_at  # a task made by this create cannot be running yet
    if not isinstance(result, BaseException):
        estimated = result.estimated_credits if result.estimated_credits is not None else job.estimated_credits
        job.apply(task_id=result.id, estimated_credits=estimated)
        engine.money.answered(job.id, estimated)
        if job.model:  # what Runway's counts must be seen to follow before they can prove anything
            sent = sent_at if sent_at is not None else engine.clock.monotonic()
            engine.money.proof.confirmed(job.model, sent, engine.clock.monotonic(), float(estimated or 0))
        engine.money.refresh_org(force=True)  # credits were spent: read the balance and usage again
        engine.book.move(job, State.SUBMITTED)
        engine.log.info("api.created", request=job.name, task_id=result.id, estimated_credits=estimated)
        if job.cancel_requested:
            commands.cancel_at_runway(engine, job)
        else:
            engine.schedule(job.id, engine.interval())
        return
    if isinstance(result, MoneyHeld):  # every node's spending together: nothing was recorded or sent
        engine.money.unreserve(job.id)
        outcome: Finish | Hold | RetryLater = shared_outcome(job, result.code, result.reason)
    else:
        outcome = lifecycle.after_create_failure(result, attempts=job.attempts, model=job.model)
    if (
        isinstance(outcome, Finish)
        and not outcome.surely_not_created
        and isinstance(result, CreateUnconfirmedError)
        and sent_at is not None
    ):  # sent, fate unknown: Runway's own counts may prove it either way
        proving.begin(engine, job, sent_at, outcome)
        return
    if not (isinstance(outcome, Finish) and not outcome.surely_not_created):
        engine.store.update(job, create_started_at=None)
        if job.job_dir:
            with contextlib.suppress(InboxError):  # a marker left behind only ever errs toward asking a person
                clear_intent_mark(Path(job.job_dir))
    engine.apply(job, outcome)


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


def _placed_record(placed: Placed) -> dict[str, Any]:
    # Only the handle (an S3 key or a runway:// URI) is kept: never a presigned URL with its signature.
    return {"transport": placed.transport, "handle": placed.handle, "expires_at": placed.expires_at}
