"""``runwatch journal rebuild``: a journal made again from the work areas, after it was lost or emptied.

Every job dir of every configured inbox becomes a job again, its state taken from what the work area and the
outbox prove, never from a guess that could spend twice:

| where the job dir is | what it shows | rebuilt as |
| --- | --- | --- |
| ``jobs/`` | an intent marker with a task id | ``submitted``: that task is followed at the next start |
| ``jobs/`` | an intent marker without a task id | ``needs_attention``: the create may have made a task |
| ``jobs/`` | no marker | ``accepted``: nothing was sent, it is sent at the next start |
| ``done/``, ``failed/`` | its final status file in the outbox | that status file's state, task, credits and outputs |
| ``done/``, ``failed/`` | no final status file; a marker with a task id, sent < 48 h ago | ``submitted`` (below) |
| ``done/``, ``failed/`` | no final status file; a marker without a task id | ``needs_attention`` (as in ``jobs/``) |
| ``done/``, ``failed/`` | no final status file, otherwise | ``failed``, code ``rebuilt`` (a marker's task kept) |

A record filed away without its final status file is a job that ended as the journal was lost: a kill between
filing the record and writing its status file, or a status file removed since. Runway's task still says how it
ended while its outputs live (24 to 48 h): the task is followed again, so its end and outputs are recorded
(outputs already in the outbox are found, not copied). After that, looking again could only fail a download.

Spending recorded in status files counts again against the budgets. A journal that still holds jobs is never
overwritten: move it aside first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from runwatch.clock import now_iso, parse_iso
from runwatch.config import Config, InboxConfig
from runwatch.errors import RequestError, StartupError
from runwatch.jobs.job import Job
from runwatch.jobs.lifecycle import unconfirmed_error
from runwatch.jobs.states import FINAL, State
from runwatch.requestfile import parse, read
from runwatch.store import open_store
from runwatch.store.opening import sqlite_path
from runwatch.workrecords import read_intent_mark, request_in, status_shown

__all__ = ["Rebuilt", "rebuild_journal"]

OUTPUTS_LIVE = timedelta(hours=48)  # Runway keeps a task's outputs 24 to 48 h


@dataclass
class Rebuilt:
    """What a rebuild found, by state."""

    path: Path | str
    states: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.states.values())


def rebuild_journal(config: Config) -> Rebuilt:
    """Make the journal of ``config`` again from its inboxes' work areas (see the module docstring)."""
    journal = open_store(config)
    path = config.state.database or sqlite_path(config)
    try:
        held = journal.counts()
        if held:
            raise StartupError(
                f"the journal {path} still holds {sum(held.values())} jobs; a rebuild never overwrites one: move "
                "it aside (with its -wal and -shm files) if it is really to be replaced"
            )
        report = Rebuilt(path)
        jobs: list[Job] = []
        for inbox in config.inboxes:
            for where in ("jobs", "done", "failed"):
                folder = inbox.work / where
                if not folder.is_dir():
                    continue
                for job_dir in sorted(folder.iterdir()):
                    if job_dir.is_dir() and not job_dir.is_symlink():
                        job = _job_of(inbox, job_dir, where)
                        if job is not None:
                            jobs.append(job)
                            report.states[job.state] += 1
        journal.add_many(jobs)
        return report
    finally:
        journal.close()


def _job_of(inbox: InboxConfig, job_dir: Path, where: str) -> Job | None:
    found = request_in(job_dir)
    if found is None:
        return None
    request = found[0]
    fmt = "toml" if request.suffix == ".toml" else "json"
    body = _body(request)
    name = _name(body, request)
    job = Job(
        id=job_dir.name,
        name=name,
        inbox=inbox.name,
        format=fmt,
        endpoint=_text(body.get("endpoint")) or inbox.endpoint,
        model=_text(body.get("model")) or _text(inbox.defaults.get("model")),
        job_dir=str(job_dir),
        request_path=str(request),
        body={k: v for k, v in body.items() if k not in ("endpoint", "runwatch")} or None,
    )
    mark = read_intent_mark(job_dir)
    shown = status_shown(inbox.outbox, job.id, job.name, fmt)
    ended = shown is not None and shown.get("state") in FINAL
    # Filed away but its end never recorded: as in jobs/, the marker says what was sent.
    unrecorded_end = not ended and mark is not None and (not mark.task_id or _recent(mark.sent_at))
    if where == "jobs" or unrecorded_end:
        task = (mark.task_id if mark else None) or (shown or {}).get("task_id")
        if task:
            job.state, job.task_id = State.SUBMITTED, str(task)
            job.create_started_at = (mark.sent_at if mark else None) or now_iso()
        elif mark is not None:
            job.state, job.create_started_at = State.NEEDS_ATTENTION, mark.sent_at or now_iso()
            job.error = unconfirmed_error("the journal was rebuilt, and this request's work area shows a create left")
            job.finished_at = now_iso()
        if shown and shown.get("estimated_credits") is not None:
            job.estimated_credits = float(shown["estimated_credits"])
        return job
    if shown is not None and ended:
        job.state = State(shown["state"])
        for key in ("task_id", "estimated_credits", "credits", "error", "finished_at"):
            if shown.get(key) is not None:
                setattr(job, key, shown[key])
        job.outputs = [dict(o, index=i) for i, o in enumerate(shown.get("outputs") or []) if isinstance(o, dict)]
        job.credits_estimated = bool(shown.get("credits_estimated"))
        return job
    job.state, job.finished_at = State.FAILED, now_iso()
    job.task_id = mark.task_id if mark else None
    job.error = {"code": "rebuilt", "message": "rebuilt from the work area; how it ended is not known"}
    return job


def _recent(sent_at: str) -> bool:
    """Whether a create sent at ``sent_at`` may still have its outputs at Runway (an unreadable time: yes)."""
    sent = parse_iso(sent_at)
    return sent is None or datetime.now(UTC) - sent < OUTPUTS_LIVE


def _body(request: Path) -> dict[str, Any]:
    if request.suffix not in (".json", ".toml"):
        return {}
    try:
        data = parse(request, read(request), "toml" if request.suffix == ".toml" else "json")
    except RequestError:
        return {}
    return data if isinstance(data, dict) else {}


def _name(body: dict[str, Any], request: Path) -> str:
    options = body.get("runwatch")
    named = options.get("name") if isinstance(options, dict) else None
    return named if isinstance(named, str) and named else request.stem


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
