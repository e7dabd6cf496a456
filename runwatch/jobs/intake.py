"""Taking requests in: claims accepted or refused, their estimates, and why a request is held.

A claimed request is loaded once (by the watcher, from the job dir) and carried through on the job's runtime
record; it is read again only after a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from runwatch.budget import Limits
from runwatch.config import InboxConfig
from runwatch.errors import JournalError, RequestError, RunwatchError
from runwatch.jobs.job import Job
from runwatch.jobs.states import State
from runwatch.pricing import Estimate
from runwatch.request import Request, load_request
from runwatch.workarea import Claimed, Refused

if TYPE_CHECKING:
    from runwatch.jobs.engine import Engine

__all__ = ["accept", "estimate", "hold_reason", "limits_of", "load", "recheck_held", "reject", "request_of"]


def accept(engine: Engine, claims: Sequence[Claimed]) -> None:
    """Take claimed requests: refuse the invalid, record the rest in one commit, then show them."""
    jobs: list[tuple[Job, Request]] = []
    guesses: dict[str, Estimate] = {}
    for claim in claims:
        inbox = engine.inboxes[claim.inbox]
        try:
            # The watcher loaded it from the job dir already; a claim found at start-up is read here.
            req = claim.request or load(engine, claim.request_file, claim.job_dir, inbox)
        except RequestError as exc:
            refused = Refused(
                claim.job_id,
                claim.inbox,
                claim.job_dir,
                claim.request_file,
                claim.name,
                claim.format,
                tuple(exc.problems),
                endpoint=exc.endpoint,
                model=exc.model,
            )
            reject(engine, refused, move=True)
            continue
        job = Job(
            id=claim.job_id,
            name=engine.book.unique_name(inbox.name, req.options.name),
            inbox=inbox.name,
            format=req.format,
            endpoint=req.endpoint,
            model=req.model,
            priority=req.options.priority + inbox.priority,
            job_dir=str(claim.job_dir),
            request_path=str(claim.request_file),
            body=req.body,
        )
        guess = guesses[job.id] = estimate(engine, job, req)  # shown in the status file from the start
        job.estimated_credits = None if guess.credits is None else float(guess.credits)
        verdict = hold_reason(engine, job, req, guess)
        if verdict:
            job.state, job.error = State.HELD, {"code": verdict[0], "message": verdict[1]}
        engine.book.reserve_name(job)
        jobs.append((job, req))
    try:
        recorded = engine.store.add_many([job for job, _ in jobs])
    except RunwatchError:
        for job, _ in jobs:  # the claims stay in jobs/ and are taken again at the next start
            engine.book.release_name(job)
        raise
    for job, req in jobs:
        if job.id not in recorded:  # another node recorded it first (it took the claim over): it follows it
            engine.book.release_name(job)
            engine.log.warning(
                "claim.taken_over", request=job.name, job=job.id, reason="another node recorded it first"
            )
            continue
        engine.book.track(job, req)
        engine.book.rt[job.id].estimate = guesses[job.id]
        engine.book.write(job)
        engine.log.info("job.accepted", request=job.name, job=job.id, endpoint=job.endpoint, model=job.model)
        if job.state == State.HELD:
            engine.log.info("job.held", request=job.name, job=job.id, reason=job.error["message"])
        engine.book.tell(job)


def reject(engine: Engine, ref: Refused, move: bool = False) -> None:
    """A request that cannot be used: a journal row, a status file with every problem, a failed record."""
    from runwatch.outbox import printable
    from runwatch.workrecords import move_record

    job_dir, request_file = ref.job_dir, ref.request_file
    inbox = engine.inboxes.get(ref.inbox)
    if move and inbox is not None:
        try:
            job_dir, request_file = move_record(inbox, job_dir, request_file, "failed")
        except RunwatchError as exc:
            engine.log.error("work.move_failed", job_dir=str(job_dir), error=str(exc))
    issues = [{"path": p.path, "message": p.message} for p in ref.problems]
    job = Job(
        id=ref.job_id,
        # A file name that is not UTF-8 still gets a journal row and a status file, under a readable name.
        name=engine.book.unique_name(ref.inbox, printable(ref.name)),
        inbox=ref.inbox,
        format=ref.format,
        state=State.REJECTED,
        endpoint=ref.endpoint,
        model=ref.model,
        job_dir=printable(str(job_dir)),
        request_path=printable(str(request_file)),
        error={
            "code": "invalid_request",
            "message": f"{len(issues)} problem(s) in the request file",
            "issues": issues,
        },
        finished_at=engine.now_iso(),
    )
    engine.store.add(job)
    engine.book.write(job)
    engine.book.tell(job)
    engine.log.warning(
        "job.rejected", request=job.name, job=job.id, problems=len(issues), first=issues[0] if issues else None
    )


def load(engine: Engine, request_file: Path, root: Path, inbox: InboxConfig) -> Request:
    return load_request(
        request_file, root=root, inbox=inbox, catalog=engine.catalog, unknown_models=engine.config.runway.unknown_models
    )


def request_of(engine: Engine, job: Job) -> Request | None:
    """The job's request as loaded at the claim; loaded again only after a restart."""
    runtime = engine.book.rt[job.id]
    if runtime.request is None:
        inbox = engine.inboxes.get(job.inbox)
        if inbox is None or job.job_dir is None or job.request_path is None:
            return None
        try:
            runtime.request = load(engine, Path(job.request_path), Path(job.job_dir), inbox)
        except RequestError:
            return None
    return runtime.request


def estimate(engine: Engine, job: Job, req: Request) -> Estimate:
    """Our estimate from the price data and the request's own parameters (media probed for length)."""
    runtime = engine.book.rt.get(job.id)
    if runtime is not None and runtime.estimate is not None:
        return runtime.estimate
    guess = _estimate_of(job, req)
    if runtime is not None:
        runtime.estimate = guess
    return guess


def hold_reason(engine: Engine, job: Job, req: Request, guess: Estimate | None = None) -> tuple[str, str] | None:
    """(code, reason) when the job may not be sent now; None when it may. Checked right before sending."""
    guess = guess or estimate(engine, job, req)
    return engine.money.hold_reason(job, guess, limits_of(engine, job, req))


def limits_of(engine: Engine, job: Job, req: Request) -> Limits:
    """Every limit of the user's that applies to the job: its own, its inbox's and the config's budgets."""
    inbox = engine.inboxes[job.inbox]
    budget = engine.config.budget
    return Limits(
        max_credits=req.options.max_credits,
        approve_above=inbox.approve_above,
        inbox_daily=inbox.budget_daily,
        daily=budget.daily,
        monthly=budget.monthly,
        unknown_price=budget.unknown_price,
    )


def recheck_held(engine: Engine) -> None:
    """Let held requests go when their budget, the balance or the daily limit has freed."""
    if not engine.money.begin_recheck():  # nothing moved since the last look
        return
    for job in [j for j in engine.book if j.state == State.HELD]:
        runtime = engine.book.rt[job.id]
        wake = engine.waits_until(job)
        if wake is not None and wake > engine.clock.monotonic():
            engine.money.wake_at(wake)
            continue
        if runtime.busy or job.cancel_requested or runtime.proving:
            continue
        req = request_of(engine, job)
        verdict = hold_reason(engine, job, req) if req is not None else None
        if verdict is None and req is not None and _still_held_by_all_nodes(engine, job, req):
            continue
        if verdict is None:
            engine.book.move(job, State.ACCEPTED, error=None, not_before=None)
        elif job.error != {"code": verdict[0], "message": verdict[1]}:
            engine.book.move(job, State.HELD, error={"code": verdict[0], "message": verdict[1]})


def _still_held_by_all_nodes(engine: Engine, job: Job, req: Request) -> bool:
    """On a journal other nodes share, a request this node's guard would let go may still be held by every
    node's spending together. Then it stays held as it is, looked at again after a while: no move back and forth
    through ``accepted``, no log line and no read of the organization each time (one line when it goes)."""
    from runwatch.jobs import sending

    try:
        shared = engine.store.money_hold(sending.money_check(engine, job, req))
    except JournalError:  # every node's spending unknown for now: still held, looked at again later
        return True
    if shared is None or shared[0] == "concurrency":  # Runway's concurrency only waits a moment, in accepted
        return False
    error = {"code": shared[0], "message": shared[1]}
    if job.error != error:  # the reason moved (another node's spending): the status file says so, quietly
        engine.book.move(job, State.HELD, error=error, not_before=engine.hold_for(job, sending.SHARED_HOLD_WAIT))
    else:
        engine.store.update(job, not_before=engine.hold_for(job, sending.SHARED_HOLD_WAIT))
    engine.money.wake_at(engine.clock.monotonic() + sending.SHARED_HOLD_WAIT)
    return True


def _estimate_of(job: Job, req: Request) -> Estimate:
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
