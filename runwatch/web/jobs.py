"""The jobs as the HTTP API shows them, and the commands it hands to the engine.

A job is its status document (the status file's keys, :func:`runwatch.outbox.status_document`) plus ``job_id``
and ``inbox``, redacted once more on the way out. A command takes the road ``runwatch approve`` takes
(:mod:`runwatch.control`): a row in the journal's ``commands`` table, then the engine's answer read back.
Commands name a request by its name, and the engine acts on the job that name means now (the newest active one,
else the newest): a command for an older job of the same name is refused rather than sent to another job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runwatch.control import carried_out
from runwatch.jobs.states import State
from runwatch.outbox import status_document
from runwatch.redact import redact

if TYPE_CHECKING:
    from runwatch.jobs.job import Job
    from runwatch.store import Store

__all__ = ["ANSWER_WAIT", "Answer", "BadQuery", "Page", "command", "document", "page"]

ANSWER_WAIT = 5.0  # seconds a command waits for the engine's answer (it reads commands twice a second)
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_FILTERS = ("state", "inbox", "name")
_STATES = frozenset(state.value for state in State)


class BadQuery(ValueError):
    """A query parameter the API cannot use; the message names it."""


@dataclass(frozen=True)
class Page:
    jobs: list[dict[str, Any]]
    next_cursor: str | None  # pass as ?cursor= for the next (older) page; None on the last page


@dataclass(frozen=True)
class Answer:
    status: int  # the HTTP status: 200 carried out, 202 recorded without an answer yet, 404, 409 refused
    body: dict[str, Any]


def document(job: Job) -> dict[str, Any]:
    """One job as the API shows it."""
    shown: dict[str, Any] = redact({"job_id": job.id, "inbox": job.inbox, **status_document(job)})
    return shown


def page(store: Store, query: Mapping[str, str]) -> Page:
    """A page of jobs, newest first, from the query parameters ``state``, ``inbox``, ``name``, ``limit``, ``cursor``."""
    unknown = sorted(set(query) - {*_FILTERS, "limit", "cursor"})
    if unknown:
        raise BadQuery(f"unknown query parameter {unknown[0]!r}; allowed: {', '.join((*_FILTERS, 'limit', 'cursor'))}")
    state = query.get("state") or None
    if state is not None and state not in _STATES:
        raise BadQuery(f"state {state!r} is not a state; one of: {', '.join(sorted(_STATES))}")
    limit = _integer(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT) or DEFAULT_LIMIT
    before = _integer(query, "cursor", None, 1, None)
    jobs = store.listing(
        state=state, inbox=query.get("inbox") or None, name=query.get("name") or None, before=before, limit=limit + 1
    )
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return Page([document(j) for j in jobs], str(jobs[-1].seq) if more and jobs else None)


def _integer(query: Mapping[str, str], name: str, default: int | None, low: int, high: int | None) -> int | None:
    text = query.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit() or not low <= int(text) <= (high if high is not None else int(text)):
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        raise BadQuery(f"{name} must be an integer {span}, not {text!r}")
    return int(text)


def command(
    store: Store,
    kind: str,
    job_id: str,
    *,
    wait: float = ANSWER_WAIT,
    sleep: Callable[[float], None] = time.sleep,
) -> Answer:
    """Hand ``kind`` (approve, cancel, retry) for ``job_id`` to the engine and wait a little for its answer."""
    job = store.get(job_id)
    if job is None:
        return Answer(404, {"error": f"no job with id {job_id!r}"})
    current = store.find(job.name)
    if current is None or current.id != job.id:
        return Answer(
            409,
            {
                "error": f"the name {job.name!r} now means another request ({current.id if current else 'none'}); "
                f"a {kind} acts on that one, so it is not sent for this older one",
                "job_id": job.id,
            },
        )
    command_id = store.add_command(kind, job.name)
    deadline = time.monotonic() + wait
    while True:
        answer = store.command_result(command_id)
        if answer is not None:
            break
        if time.monotonic() >= deadline:
            return Answer(
                202,
                {
                    "job_id": job.id,
                    "name": job.name,
                    "answer": None,
                    "message": f"the daemon did not answer in {wait:.0f} s; the {kind} stays recorded for it",
                },
            )
        sleep(0.05)
    if carried_out(answer):
        return Answer(200, {"job_id": job.id, "name": job.name, "answer": answer})
    return Answer(409, {"job_id": job.id, "name": job.name, "error": answer})
