"""A create whose answer never came: held while Runway's counts are read, then resent or handed to a person.

``runwatch.proof`` decides from the organization's per-model daily count and balance; this module keeps the
job ``held`` meanwhile (its intent stays recorded: a crash now still ends in ``needs_attention``), asks for the
reads the proof waits for, and carries out the verdict: not made, the intent is cleared and the request goes
again; made or no proof, ``needs_attention`` with the reason said plainly.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from runwatch.errors import InboxError
from runwatch.jobs.lifecycle import Finish
from runwatch.jobs.states import State
from runwatch.proof import Verdicts
from runwatch.workrecords import clear_intent_mark

if TYPE_CHECKING:
    from runwatch.jobs.engine import Engine
    from runwatch.jobs.job import Job

__all__ = ["begin", "check"]


def begin(engine: Engine, job: Job, sent_at: float, fallback: Finish) -> None:
    """Hold the job while the counts are read; ``fallback`` is its end when they prove nothing."""
    engine.book.rt[job.id].proving = (sent_at, fallback)
    engine.proving.add(job.id)
    message = (
        f"the create got no answer that names a task; runwatch is reading Runway's count of {job.model} "
        "generations to learn whether a task was made before it decides (a minute or two). Nothing is resent "
        "unless the count proves nothing was made."
    )
    engine.book.move(job, State.HELD, error={"code": "create_unconfirmed", "message": message})
    engine.log.warning("job.proving_create", request=job.name, job=job.id, model=job.model)
    engine.money.refresh_org(force=True)


def check(engine: Engine) -> None:
    """Carry out the verdicts that are in; ask for the organization reads the others wait for."""
    now = engine.clock.monotonic()
    for job_id in list(engine.proving):
        job, runtime = engine.book.job(job_id), engine.book.rt.get(job_id)
        if job is None or runtime is None or runtime.proving is None:
            engine.proving.discard(job_id)
            continue
        sent_at, fallback = runtime.proving
        verdict = engine.money.proof.verdict(job.model, sent_at, now)
        log = engine.log.bind(request=job.name, job=job.id, model=job.model, reason=verdict.reason)
        if verdict.kind == Verdicts.WAIT:
            until = verdict.until or now
            if now >= until and engine.money.org_sent_at < until:
                engine.money.refresh_org(force=True)
            continue
        runtime.proving = None
        engine.proving.discard(job_id)
        if verdict.kind == Verdicts.NOT_MADE:
            engine.store.update(job, create_started_at=None)
            if job.job_dir:
                with contextlib.suppress(InboxError):
                    clear_intent_mark(Path(job.job_dir))
            log.warning("job.create_proven_not_made")
            if job.cancel_requested:
                engine.book.move(job, State.CANCELLED)
            else:
                engine.book.move(job, State.ACCEPTED, error=None, not_before=None)
            continue
        error = dict(fallback.error or {})
        if verdict.kind == Verdicts.MADE:
            error["message"] = (
                f"the create made a task at Runway ({verdict.reason}), but Runway never named it; it was not "
                "sent again. Find it in Runway's task list; `runwatch retry NAME` submits the request again on "
                "purpose."
            )
        else:
            error["message"] = f"{error.get('message', '')} (no proof either way: {verdict.reason})"
        engine.book.move(job, State.NEEDS_ATTENTION, error=error)
