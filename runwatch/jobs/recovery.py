"""After a restart: follow every job the journal knows, take claims it never saw, and make status files true.

A job whose create was on its way when runwatch stopped (intent recorded, no task id) may exist at Runway:
it goes to ``needs_attention`` and is never sent again by itself. A job that was uploading goes back to
``accepted`` (its half-placed media are removed). Every task at Runway is looked at again at once; downloads
resume from the task. Jobs ``runwatch submit`` sent without ``--wait`` are followed too, once their submitting
process is gone.
"""

from __future__ import annotations

import contextlib
import json
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from runwatch.errors import OutboxError
from runwatch.jobs import intake
from runwatch.jobs.lifecycle import unconfirmed_error
from runwatch.jobs.states import AT_RUNWAY, State
from runwatch.outbox import clean_partials, status_path
from runwatch.request import MEDIA_SUFFIXES
from runwatch.workarea import Claimed, Format

if TYPE_CHECKING:
    from runwatch.config import InboxConfig
    from runwatch.jobs.engine import Engine
    from runwatch.jobs.job import Job

__all__ = ["adopt_submitted", "recover"]

SUBMIT_INBOX = "submit"  # the journal's inbox name for `runwatch submit` jobs


def recover(engine: Engine, claimed_dirs: list[tuple[InboxConfig, Path]]) -> None:
    known = engine.store.known_dirs()
    claims = []
    for inbox, job_dir in claimed_dirs:
        if str(job_dir) in known:
            continue
        files = sorted(p for p in job_dir.iterdir() if p.suffix in (".json", ".toml") and p.is_file())
        bare = not files
        if bare:  # a bare-media claim: the media file alone, at the top of the job dir
            files = sorted(p for p in job_dir.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
        if not files:
            continue
        engine.log.info("job.recovered_claim", job_dir=str(job_dir))
        fmt: Format = "toml" if files[0].suffix == ".toml" else "json"
        claims.append(Claimed(job_dir.name, inbox.name, job_dir, files[0], files[0].stem, fmt, bare))
    if claims:
        intake.accept(engine, claims)
    _reconcile_finished(engine)
    foreign = 0
    for job in engine.store.active():
        if job.inbox not in engine.inboxes:
            if job.inbox != SUBMIT_INBOX:  # an inbox removed from the config: not this daemon's to follow
                foreign += 1
            continue
        resume(engine, job)
    adopt_submitted(engine)
    if foreign:
        engine.log.info("job.not_followed", count=foreign, reason="their inbox is no longer configured")


def resume(engine: Engine, job: Job) -> None:
    """Follow one unfinished job again, as the journal left it."""
    engine.book.track(job)
    log = engine.log.bind(request=job.name, job=job.id, task_id=job.task_id)
    if job.unconfirmed_create:
        reason = "the create was on its way when runwatch stopped"
        engine.book.move(job, State.NEEDS_ATTENTION, error=unconfirmed_error(reason))
    elif job.state == State.UPLOADING:
        engine.book.remove_placed(job)
        engine.book.move(job, State.ACCEPTED, placed=[])
    elif job.state in AT_RUNWAY or job.state == State.DOWNLOADING:
        engine.polls.schedule(job.id, engine.clock.monotonic())  # look again at once; downloads resume from the task
        log.info("job.resumed", state=job.state)
        engine.book.write(job)  # status files of unfinished jobs are written without fsync: renew them
    else:
        engine.book.write(job)


def adopt_submitted(engine: Engine) -> int:
    """Follow `runwatch submit` jobs whose submitting process has gone (sent without --wait, or stopped):
    their tasks are followed to their outputs, written where that submit would have written them."""
    from runwatch.submit import abandoned

    taken = 0
    for job in abandoned(engine.store, engine.config.state.dir / "submit"):
        if job.id in engine.book or not job.task_id or not job.outbox:
            continue
        resume(engine, job)
        engine.log.info("job.adopted", request=job.name, job=job.id, task_id=job.task_id, outbox=job.outbox)
        taken += 1
    return taken


def _reconcile_finished(engine: Engine, look_back: int = 1000) -> None:
    """A kill between a job's final commit and its status file's rename leaves the file one state behind:
    bring the status files of the last finished jobs up to date, and drop temporary files left over."""
    for job in engine.store.recently_finished(look_back):
        outbox = engine.book.outbox_of(job)
        if outbox is None:
            continue
        try:
            path = status_path(outbox, job.name, "toml" if job.format == "toml" else "json")
            text = path.read_text(encoding="utf-8")
            shown = tomllib.loads(text) if job.format == "toml" else json.loads(text)
        except (OSError, ValueError, OutboxError):
            continue  # gone (taken away downstream: not ours to bring back) or not ours to judge
        if isinstance(shown, dict) and job.id in str(shown.get("request", "")) and shown.get("state") != job.state:
            engine.log.info("outbox.status_renewed", request=job.name, job=job.id, state=job.state)
            engine.book.write(job)
    for inbox in engine.inboxes.values():
        with contextlib.suppress(OutboxError):
            clean_partials(inbox.outbox)
