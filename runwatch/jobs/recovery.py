"""After a restart: follow every job the journal knows, take claims it never saw, and make status files true.

A job whose create was on its way when runwatch stopped (intent recorded, no task id) may exist at Runway:
it goes to ``needs_attention`` and is never sent again by itself. A job that was uploading goes back to
``accepted`` (its half-placed media are removed). Every task at Runway is looked at again at once; downloads
resume from the task. Jobs ``runwatch submit`` sent without ``--wait`` are followed too, once their submitting
process is gone.

On a journal several nodes share, a start follows only the jobs that are this node's, nobody's, or whose lease
ran out (``runwatch.nodes``), and takes a claim the journal never saw only when no live node holds it. A node
taking over another's jobs follows each through :func:`resume`, as a restart does.
"""

from __future__ import annotations

import contextlib
import json
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runwatch.errors import OutboxError
from runwatch.jobs import intake
from runwatch.jobs.lifecycle import unconfirmed_error
from runwatch.jobs.states import AT_RUNWAY, FINAL, State
from runwatch.outbox import clean_partials, status_path
from runwatch.workarea import Claimed, Format
from runwatch.workrecords import IntentMark, find_record, read_intent_mark, request_in, status_shown

if TYPE_CHECKING:
    from runwatch.config import InboxConfig
    from runwatch.jobs.engine import Engine
    from runwatch.jobs.job import Job

__all__ = ["adopt_submitted", "recover", "resume", "take_claims"]

SUBMIT_INBOX = "submit"  # the journal's inbox name for `runwatch submit` jobs
PARTIALS_LEFT_OVER = 3600.0  # seconds without a write after which a temporary file in a shared outbox is garbage


def recover(engine: Engine, claimed_dirs: list[tuple[InboxConfig, Path]]) -> None:
    take_claims(engine, claimed_dirs)
    _reconcile_finished(engine)
    if engine.node.shared:  # the jobs of this node's inboxes that are its own or that no live node follows
        for job in engine.node.take_own():
            if job.id not in engine.book:  # not a claim accepted just above
                resume(engine, job)
        adopt_submitted(engine)
        return
    foreign = 0
    for job in engine.store.active():
        if job.id in engine.book:  # a claim taken just above is followed already; a second resume polled it twice
            continue
        if job.inbox not in engine.inboxes:
            if job.inbox != SUBMIT_INBOX:  # an inbox removed from the config: not this daemon's to follow
                foreign += 1
            continue
        resume(engine, job)
    adopt_submitted(engine)
    if foreign:
        engine.log.info("job.not_followed", count=foreign, reason="their inbox is no longer configured")


def take_claims(engine: Engine, claimed_dirs: list[tuple[InboxConfig, Path]]) -> int:
    """Claims in job dirs the journal never saw (a stop between the rename and the record), accepted as new;
    one whose work area says a create left for it is never sent again. How many were taken."""
    known = engine.store.known_dirs()
    claims = []
    for inbox, job_dir in claimed_dirs:
        if str(job_dir) in known:
            continue
        # On a shared journal a claim another node is making, or made and will record, is not this node's.
        if engine.node.shared and not engine.store.adopt_claim(inbox.name, job_dir.name):
            continue
        found = request_in(job_dir)
        if found is None:
            continue
        request, bare = found
        engine.log.info("job.recovered_claim", job_dir=str(job_dir))
        fmt: Format = "toml" if request.suffix == ".toml" else "json"
        claims.append(Claimed(job_dir.name, inbox.name, job_dir, request, request.stem, fmt, bare))
    if claims:
        intake.accept(engine, claims)
        for claim in claims:  # a claim the journal never saw whose work area says a create left for it
            job = engine.book.job(claim.job_id)
            mark = read_intent_mark(claim.job_dir)
            if job is not None and mark is not None:
                _apply_mark(engine, job, mark, "the journal had no record of this request")
    return len(claims)


def resume(engine: Engine, job: Job) -> None:
    """Follow one unfinished job again, as the journal left it (or as its work area proves it went on)."""
    engine.book.track(job)
    log = engine.log.bind(request=job.name, job=job.id, task_id=job.task_id)
    if job.unconfirmed_create:
        mark = read_intent_mark(Path(job.job_dir)) if job.job_dir else None
        if mark is not None and mark.task_id and mark.job_id == job.id:
            # Runway named the task, and the work area kept its id; the journal's copy was lost (a stop while
            # the journal refused writes): the task is followed, not handed to a person.
            _apply_mark(engine, job, mark, "the journal missed the task id Runway named")
            return
        reason = "the create was on its way when runwatch stopped"
        engine.book.move(job, State.NEEDS_ATTENTION, error=unconfirmed_error(reason))
        return
    if job.task_id is None and _behind_the_work_area(engine, job):
        return
    if job.state == State.UPLOADING:
        engine.book.remove_placed(job)
        engine.book.move(job, State.ACCEPTED, placed=[])
    elif job.state in AT_RUNWAY or job.state == State.DOWNLOADING:
        engine.polls.schedule(job.id, engine.clock.monotonic())  # look again at once; downloads resume from the task
        log.info("job.resumed", state=job.state)
        engine.book.write(job)  # status files of unfinished jobs are written without fsync: renew them
    else:
        engine.book.write(job)


def _behind_the_work_area(engine: Engine, job: Job) -> bool:
    """A journal restored from an older copy: the job's dir may show a create the journal never recorded, or
    may have been filed away as ended. Either way it is not sent again; True when it was dealt with here."""
    inbox = engine.inboxes.get(job.inbox)
    if inbox is None:
        return False
    found = find_record(inbox, job.id)
    if found is None:
        return False
    if job.job_dir != str(found) and job.job_dir and job.request_path:  # filed away after the journal's copy
        with contextlib.suppress(ValueError):
            request = found / Path(job.request_path).relative_to(job.job_dir)
            engine.store.update(job, job_dir=str(found), request_path=str(request))
    if found.parent.name != "jobs":  # it ended after the journal's copy: its status file says how
        shown = status_shown(inbox.outbox, job.id, job.name, job.format)
        if shown is not None and shown.get("state") in FINAL:
            _adopt_end(engine, job, shown)
            return True
    mark = read_intent_mark(found)
    if mark is not None:
        _apply_mark(engine, job, mark, "the journal is older than the work area")
        return True
    if found.parent.name != "jobs":  # it ended after the journal's copy, with nothing sent: not sent again now
        if job.state == State.HELD:
            engine.book.move(job, State.ACCEPTED)
        error = {
            "code": "journal_behind",
            "message": "the journal is older than the work area, which shows this request had already ended "
            "without a create; it was not sent again. `runwatch retry NAME` sends it on purpose.",
        }
        engine.book.move(job, State.FAILED, error=error)
        return True
    return False


def _adopt_end(engine: Engine, job: Job, shown: dict[str, Any]) -> None:
    """The journal's copy is older than the job's end, which its status file records: the journal takes it."""
    state = State(shown["state"])
    fields = {k: shown[k] for k in ("task_id", "credits", "estimated_credits", "error", "finished_at") if k in shown}
    outputs = [dict(o, index=i) for i, o in enumerate(shown.get("outputs") or []) if isinstance(o, dict)]
    engine.log.warning("job.end_from_status_file", request=job.name, job=job.id, state=state)
    engine.book.learn_end(job, state, outputs=outputs, credits_estimated=bool(shown.get("credits_estimated")), **fields)


def _apply_mark(engine: Engine, job: Job, mark: IntentMark, why: str) -> None:
    """The work area proves a create left for this job: follow its task, or park it for a person."""
    log = engine.log.bind(request=job.name, job=job.id)
    if job.state == State.HELD:  # held in the journal's copy, sent since: first back to where a send starts
        engine.book.move(job, State.ACCEPTED)
    sent = mark.sent_at or job.create_started_at or engine.now_iso()
    if mark.task_id:
        engine.book.move(job, State.SUBMITTED, task_id=mark.task_id, create_started_at=sent)
        engine.book.fly(job)
        engine.polls.schedule(job.id, engine.clock.monotonic())
        log.warning("job.task_from_work_area", task_id=mark.task_id, reason=why)
        return
    detail = f"{why}, but its work area shows a create left for it"
    engine.book.move(job, State.NEEDS_ATTENTION, create_started_at=sent, error=unconfirmed_error(detail))


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
    # On a shared outbox another node may be writing its temporary files right now: only old ones are left over.
    min_age = PARTIALS_LEFT_OVER if engine.node.shared else 0.0
    for inbox in engine.inboxes.values():
        with contextlib.suppress(OutboxError):
            clean_partials(inbox.outbox, min_age=min_age)
