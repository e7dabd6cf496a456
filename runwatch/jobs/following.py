"""Following tasks: polls sent in runs, what they learn shown at once, outputs downloaded.

What a poll learns of a task waiting at Runway reaches the status file at once and the journal in one batch
within ``WAITING_FLUSH`` seconds; every end of a task goes through ``Engine.apply`` and the book.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from runwatch.errors import RunwatchError
from runwatch.jobs import events, lifecycle
from runwatch.jobs.job import Job
from runwatch.jobs.lifecycle import LookAgain
from runwatch.jobs.runner import Work
from runwatch.jobs.states import AT_RUNWAY, State
from runwatch.outbox import DownloadError, OutputRecord, download_outputs
from runwatch.scheduler import Sample, eta, next_poll, poll_slack

if TYPE_CHECKING:
    from runwatch.jobs.engine import Engine

__all__ = ["WAITING_FLUSH", "after_downloaded", "after_polled", "download", "fire_timers", "flush_waiting", "waited"]

# What polls learn of tasks waiting at Runway reaches the journal (and `runwatch status`) this many seconds late
# at most, in one commit for all of them; the status files have it at once.
WAITING_FLUSH = 2.0
PROGRESS_LOG = 30.0  # seconds between progress lines of one running task


def flush_waiting(engine: Engine) -> None:
    engine._last_waiting = engine.clock.monotonic()
    # Only jobs still followed as these objects: one finished (or retried) since was committed on its own.
    jobs = [job for job in engine._waiting.values() if engine.book.job(job.id) is job]
    engine._waiting = {}
    try:
        engine.store.save_waiting(jobs)
    except RunwatchError:  # the ledger said why; kept for the next batch, or written with a later change
        for job in jobs:
            engine._waiting.setdefault(job.id, job)


def fire_timers(engine: Engine) -> None:
    """Send the due polls in runs (see :mod:`runwatch.polls`)."""
    slack = poll_slack(engine.interval())
    due: list[Job] = []
    for job_id in engine.polls.take_due(engine.clock.monotonic(), slack):
        job = engine.book.job(job_id)
        if job is None or engine.book.rt[job_id].busy or engine.stopping.is_set():
            continue
        if job.task_id and (job.state in AT_RUNWAY or job.state == State.DOWNLOADING):
            due.append(job)
    for run in engine.polls.runs(due, slack):
        poll_run(engine, run, budget=slack)


def poll_run(engine: Engine, jobs: Sequence[Job], budget: float) -> None:
    tasks = [(job.id, str(job.task_id)) for job in jobs]
    for job in jobs:
        engine.book.rt[job.id].busy = Work.POLL

    def work() -> list[events.JobEvent]:
        answers = engine.polls.get_run(engine.api.get_task, tasks, budget)
        return [events.Polled(job_id, result) for job_id, result in answers]

    engine.runner.run(Work.POLL, [job.id for job in jobs], work)


def after_polled(engine: Engine, job: Job, result: Any) -> None:
    runtime = engine.book.rt[job.id]
    if result is events.NOT_POLLED:
        engine.schedule(job.id, 0.0)
        return
    if isinstance(result, BaseException):
        runtime.poll_failures += 1
        outcome: lifecycle.Outcome = lifecycle.after_poll_failure(
            result, failures=runtime.poll_failures, interval=engine.interval(), cancel_requested=job.cancel_requested
        )
        engine.apply(job, outcome)
        return
    runtime.poll_failures = 0
    outcome = lifecycle.after_poll(result, empty_successes=runtime.empty_successes)
    if isinstance(outcome, LookAgain) and outcome.empty_success:
        runtime.empty_successes += 1
    engine.apply(job, outcome)


def waited(engine: Engine, job: Job, runtime: Any, state: State, progress: float | None) -> None:
    """A task waits or runs at Runway: the status file at once, the journal within seconds."""
    now = engine.clock.monotonic()
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
            stamp = engine.now_iso()
            # In memory until the next durable move writes the history with it (a page's timeline only).
            job.apply(state=state, updated_at=stamp, history=[*job.history, {"state": state.value, "at": stamp}])
            engine.log.info(f"job.{state}", request=job.name, job=job.id, task_id=job.task_id)
            engine.book.tell(job)
        job.progress = moved
        engine._waiting[job.id] = job
        engine.book.write(job)
    if state == State.RUNNING and progress is not None and now - runtime.last_progress_log >= PROGRESS_LOG:
        runtime.last_progress_log = now
        left = eta(runtime.samples)
        engine.log.info(
            "job.progress",
            request=job.name,
            task_id=job.task_id,
            percent=round(progress * 100),
            eta_seconds=None if left is None else round(left),
        )
    status = {State.THROTTLED: "THROTTLED", State.PENDING: "PENDING", State.RUNNING: "RUNNING"}[state]
    engine.schedule(
        job.id,
        next_poll(status, runtime.samples, now=now, interval=engine.interval(), since=runtime.not_running_at),
    )


def download(engine: Engine, job: Job, urls: list[str]) -> None:
    outbox = engine.book.outbox_of(job)
    if outbox is None:
        engine.book.move(job, State.FAILED, error={"code": "outbox_gone", "message": "no outbox for this job"})
        return
    done = [OutputRecord(o["file"], o["bytes"], o["sha256"], o["index"]) for o in job.outputs]
    api, http, stop, job_id, task_id, name = (
        engine.api,
        engine.http,
        engine.downloads_stop,
        job.id,
        job.task_id,
        job.name,
    )

    def refresh() -> list[str]:
        task = api.get_task(task_id or "")
        return [u for u in task.get("output", []) if isinstance(u, str)]

    def fetch() -> events.Downloaded:
        outbox.mkdir(parents=True, exist_ok=True)
        return events.Downloaded(
            job_id, download_outputs(http, urls, outbox, name, done=done, refresh=refresh, stop=stop)
        )

    engine.run(job, Work.DOWNLOAD, fetch)


def after_downloaded(engine: Engine, job: Job, result: Any) -> None:
    if isinstance(result, DownloadError) and result.records:
        # Outputs already complete are kept, so a later attempt does not fetch them twice.
        engine.store.update(job, outputs=_records(result.records))
    if isinstance(result, BaseException):
        if engine.stopping.is_set():
            return  # abandoned for the shutdown; the next start downloads again
        runtime = engine.book.rt[job.id]
        runtime.download_failures += 1
        engine.log.warning("outbox.download_failed", request=job.name, task_id=job.task_id, error=str(result))
        engine.apply(job, lifecycle.after_download_failure(result, failures=runtime.download_failures))
        return
    engine.book.move(job, State.SUCCEEDED, outputs=_records(result))


def _records(records: list[OutputRecord]) -> list[dict[str, Any]]:
    return [{"file": r.file, "bytes": r.bytes, "sha256": r.sha256, "index": r.index} for r in records]
