"""Cancel, retry and approve: from ``runwatch`` commands (through the journal) and control files.

Each answers a line for the person who asked. :class:`Answer` says whether it did what was asked, so every
caller (the command line, control files, the dashboard) exits or reports the same way. On a journal several
nodes share, a node answers only the commands for requests it owns (the journal hands it those), and a control
file it took for another node's request is passed on as a command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runwatch.errors import ApiStatusError, InboxError
from runwatch.jobs import events
from runwatch.jobs.runner import Work
from runwatch.jobs.states import AT_RUNWAY, RETRYABLE, State
from runwatch.workrecords import clear_intent_mark, move_record

if TYPE_CHECKING:
    from runwatch.jobs.engine import Engine
    from runwatch.jobs.job import Job

__all__ = ["Answer", "after_deleted", "cancel_at_runway", "control", "drain", "dropped"]


@dataclass(frozen=True)
class Answer:
    """What a command did: ``ok`` when it was carried out (or is under way), and a line saying so."""

    ok: bool
    text: str

    def __str__(self) -> str:
        return self.text


def drain(engine: Engine) -> None:
    """Carry out the commands other processes left in the journal."""
    for command in engine.store.pending_commands():
        answer = control(engine, command.kind, command.name, None)
        engine.store.finish_command(command.id, answer.text)


def dropped(engine: Engine, kind: str, name: str, inbox: str) -> None:
    """A ``NAME.cancel`` or ``NAME.approve`` file this node took from an inbox. On a journal nodes share, the
    request may be another node's: then the file becomes a command in the journal, which its owner answers
    (or whoever takes the request over)."""
    if engine.node.shared and engine.book.named(name, inbox) is None:
        command = engine.store.add_command(kind, name)
        passed = "passed on to the node that owns it"
        engine.log.info(f"command.{kind}", request=name, inbox=inbox, result=passed, command=command)
        return
    control(engine, kind, name, inbox)


def control(engine: Engine, kind: str, name: str, inbox: str | None) -> Answer:
    engine.money.touched()  # an approval or a retry changes what may be sent
    if kind == "cancel":
        answer = _cancel(engine, name, inbox)
    elif kind == "retry":
        answer = _retry(engine, name)
    elif kind == "approve":
        answer = _approve(engine, name, inbox)
    else:
        answer = Answer(False, f"unknown command {kind}")
    log = engine.log.warning if not answer.ok else engine.log.info
    log(f"command.{kind}", request=name, inbox=inbox, result=answer.text)
    return answer


def _approve(engine: Engine, name: str, inbox: str | None) -> Answer:
    job = engine.book.named(name, inbox)
    if job is None or job.state != State.HELD:
        return Answer(False, f"no held request named {name}")
    if engine.book.rt[job.id].proving:  # releasing it could pay twice: the proof decides
        return Answer(False, f"{name} waits for Runway's counts to show whether its create made a task")
    engine.book.move(job, State.ACCEPTED, approved=True, error=None, not_before=None)
    return Answer(True, "approved")


def _cancel(engine: Engine, name: str, inbox: str | None) -> Answer:
    job = engine.book.named(name, inbox)
    if job is None:
        return Answer(False, f"no active request named {name}")
    engine.store.update(job, cancel_requested=True)
    runtime = engine.book.rt[job.id]
    busy = runtime.busy or (Work.CREATE if runtime.proving else None)  # a create being proven is still in flight
    if job.state in (State.ACCEPTED, State.HELD) and not busy:
        engine.book.move(job, State.CANCELLED)
        return Answer(True, "cancelled")
    if job.state in AT_RUNWAY and job.task_id and busy is None:
        cancel_at_runway(engine, job)
    return Answer(True, "cancelling")


def cancel_at_runway(engine: Engine, job: Job) -> None:
    api, task_id, job_id = engine.api, job.task_id or "", job.id

    def delete() -> events.Deleted:
        api.delete_task(task_id)
        return events.Deleted(job_id, None)

    engine.run(job, Work.DELETE, delete)


def after_deleted(engine: Engine, job: Job, result: Any) -> None:
    """Runway answered the DELETE: the task is cancelled (its cost read once more if it can be)."""
    gone = isinstance(result, ApiStatusError) and result.status == 404
    if gone or not isinstance(result, BaseException):
        # A cancelled task may answer CANCELLED with its cost for a moment; usually it is gone (404) at once.
        engine.book.rt[job.id].cancel_sent = True
        engine.polls.schedule(job.id, engine.clock.monotonic())
        return
    runtime = engine.book.rt[job.id]
    runtime.poll_failures += 1
    engine.log.warning("api.cancel_failed", request=job.name, task_id=job.task_id, error=str(result))
    if runtime.poll_failures <= 5:
        cancel_at_runway(engine, job)
    else:
        engine.polls.schedule(job.id, engine.clock.monotonic() + engine.config.runway.poll_interval)


def _retry(engine: Engine, name: str) -> Answer:
    job = engine.store.find(name)
    if job is None:
        return Answer(False, f"no request named {name}")
    inbox = engine.inboxes.get(job.inbox)
    if inbox is None:
        return Answer(
            False,
            f"{name} was sent by `runwatch submit` or from an inbox no longer configured ({job.inbox!r}); "
            "submit the file again to resend it on purpose",
        )
    if job.state not in RETRYABLE:
        return Answer(False, f"{name} is {job.state}; only needs_attention, failed or cancelled requests are retried")
    if engine.node.shared and not engine.store.own(job.id):  # the node that ended it may have been another
        return Answer(False, f"{name} is being followed by another node")
    history = [
        *job.history,
        {"task_id": job.task_id, "state": job.state, "error": job.error, "finished_at": job.finished_at},
    ]
    job_dir, request_file = Path(job.job_dir or ""), Path(job.request_path or "")
    if job_dir.exists() and job_dir.parent.name in ("failed", "done"):
        try:
            job_dir, request_file = move_record(inbox, job_dir, request_file, "jobs")
            clear_intent_mark(job_dir)  # resent on purpose: the old create is the person's to have checked
        except InboxError as exc:
            return Answer(False, f"{name} cannot be brought back: {exc}")
    engine.store.update(
        job,
        task_id=None,
        create_started_at=None,
        error=None,
        finished_at=None,
        progress=None,
        credits=None,
        credits_estimated=False,
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
    engine.book.move(job, State.ACCEPTED)
    engine.book.track(job)
    return Answer(True, "resubmitting")
