"""``runwatch submit``: one request file sent outside the folders, with the daemon's money rule.

The intent is committed before the create and the task id right after, so a create whose answer was lost is
reported ``needs_attention`` and never sent again. What each answer means is decided by the same functions the
daemon uses (``runwatch.jobs.lifecycle``). Its jobs go in the journal under the inbox name ``submit``, with the
folder its outputs go to, so ``runwatch status`` lists them. With ``--wait`` it follows the task itself,
downloads the outputs and writes the status file; without it (or when it is stopped), the daemon, or the next
``runwatch run --once``, follows the task to its outputs in that folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from runwatch.ops import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, load_required_config, make_s3_client, readable
from runwatch.validate import Validator

if TYPE_CHECKING:
    import httpx

    from runwatch.api import RunwayClient
    from runwatch.budget import MoneyCheck
    from runwatch.config import Config
    from runwatch.jobs.job import Job
    from runwatch.media import Placed, Transport
    from runwatch.pricing import Estimate
    from runwatch.request import Request
    from runwatch.store import Store

__all__ = ["SUBMIT_INBOX", "abandoned", "submit_command", "sweep_abandoned"]

SUBMIT_INBOX: Final = "submit"  # the journal's inbox name for `runwatch submit` jobs


class _Progress:
    """One line rewritten in place on a terminal; a plain line per change otherwise (logs, pipes)."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out, self.tty = out, tty
        self.last = ""

    def show(self, text: str) -> None:
        if text == self.last:
            return
        self.last = text
        self.out.write(f"\r\x1b[K{text}" if self.tty else text + "\n")
        self.out.flush()

    def end(self) -> None:
        if self.tty and self.last:
            self.out.write("\n")
            self.out.flush()
        self.last = ""


class _SubmitLock:
    """A lock file held while one `runwatch submit` lives, so a later one can tell a dead one's jobs."""

    def __init__(self, folder: Path, job_id: str) -> None:
        self.path = folder / f"{job_id}.lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # before the unlock: a sweeper that wins the lock then sees no file
            os.close(self.fd)
            self.fd = None


def _lock_free(folder: Path, job_id: str) -> tuple[bool, int | None]:
    """Whether the submit that made the job is gone; when its lock file is there, it is held (fd) on return."""
    lock = folder / f"{job_id}.lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True, None
    except OSError:
        return False, None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False, None  # its process is alive
    return True, fd


def _unlock(folder: Path, job_id: str, fd: int | None) -> None:
    if fd is not None:
        (folder / f"{job_id}.lock").unlink(missing_ok=True)
        os.close(fd)


def abandoned(journal: Store, folder: Path) -> list[Job]:
    """Submit jobs with a task at Runway whose submitting process is gone: for the daemon to follow."""
    found = []
    for job in journal.active(SUBMIT_INBOX):
        if not job.task_id:
            continue
        free, fd = _lock_free(folder, job.id)
        _unlock(folder, job.id, fd)
        if free:
            found.append(job)
    return found


def sweep_abandoned(journal: Store, folder: Path) -> list[Job]:
    """Submit jobs whose process died before Runway named the task: an intent without a task id becomes
    needs_attention (the create may have happened), a job that never reached the create becomes failed."""
    from runwatch.clock import now_iso
    from runwatch.jobs.states import ACTIVE, State

    swept = []
    for job in journal.active(SUBMIT_INBOX):
        if job.task_id:
            continue
        free, fd = _lock_free(folder, job.id)
        if not free:
            continue
        try:
            fresh = journal.get(job.id)  # re-read under the lock: it may have ended meanwhile
            if fresh is None or fresh.state not in ACTIVE or fresh.task_id:
                continue
            if fresh.unconfirmed_create:
                detail = "the `runwatch submit` that sent it stopped before Runway's answer was recorded"
                error = _unconfirmed(detail)
                journal.update(fresh, state=State.NEEDS_ATTENTION, finished_at=now_iso(), error=error)
            else:
                error = {
                    "code": "interrupted",
                    "message": "`runwatch submit` stopped before the create; nothing was sent",
                }
                journal.update(fresh, state=State.FAILED, finished_at=now_iso(), error=error)
            swept.append(fresh)
        finally:
            _unlock(folder, job.id, fd)
    return swept


def _unconfirmed(detail: str) -> dict[str, Any]:
    from runwatch.jobs.lifecycle import unconfirmed_error

    return unconfirmed_error(detail, resend="submit the file again if it is not there")


def _new_job_id() -> str:
    # The daemon's job id shape, so S3 keys and listings look alike.
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


@dataclass
class _Submission:
    """What one submit holds while it runs."""

    config: Config
    journal: Store
    api: RunwayClient
    http: httpx.Client
    job: Job
    out: TextIO
    err: TextIO
    wait: bool
    sleep: Callable[[float], None]
    transport_name: str  # the transport its media were checked for (validate's choice), which sends them
    transport: Transport | None = None
    placed: list[Placed] = field(default_factory=list)
    estimate: Estimate | None = None  # validate's, with its basis: what every node's budgets are checked with


def submit_command(
    path: str,
    *,
    config_file: str | None = None,
    wait: bool = False,
    out_dir: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    tty: bool | None = None,
    env: Mapping[str, str] = os.environ,
    s3_client: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """``runwatch submit``: 0 when submitted (with --wait: succeeded), 1 on failure, 2 for a usage error."""
    import httpx

    from runwatch.api import RunwayClient
    from runwatch.config import load_api_key
    from runwatch.jobs.job import Job
    from runwatch.store import open_store

    out = out or sys.stdout
    err = err or sys.stderr
    file = Path(path)
    if not file.is_file():
        err.write(f"runwatch submit: {path}: {'not a file' if file.exists() else 'no such file'}\n")
        return EXIT_USAGE
    config = load_required_config(config_file, env)
    api_key = load_api_key(config, env)
    validator = Validator(config)
    inbox = validator.watched_by(file)
    if inbox is not None:
        err.write(
            f"runwatch submit: {path} is in the inbox {inbox.name!r}, which the daemon takes requests "
            "from: submitting it too would send it twice. Copy it elsewhere, or let the daemon take it.\n"
        )
        return EXIT_USAGE
    checked = validator.check(file)
    if checked.request is None:
        for p in checked.problems:
            err.write(f"{file}: {p}\n")
        return EXIT_FAILURE
    req = checked.request
    target = (Path(out_dir) if out_dir else file.parent).absolute()
    journal = open_store(config, env)
    http = httpx.Client(timeout=httpx.Timeout(config.runway.timeout, connect=10.0), follow_redirects=False)
    job_id = _new_job_id()
    lock = _SubmitLock(config.state.dir / "submit", job_id)
    try:
        sweep_abandoned(journal, lock.path.parent)
        lock.acquire()  # before the job exists, so no sweeper ever takes a live job for a dead one
        guess = checked.estimate.credits if checked.estimate else None
        job = journal.add(
            Job(
                id=job_id,
                name=req.name,
                inbox=SUBMIT_INBOX,
                format=req.format,
                endpoint=req.endpoint,
                model=req.model,
                priority=req.options.priority,
                request_path=str(file.absolute()),
                body=req.body,
                estimated_credits=guess,
                outbox=str(target),
            )
        )
        api = RunwayClient(http, base_url=config.runway.base_url, api_key=api_key, version=config.runway.api_version)
        fitted = checked.transport or "runway"
        run = _Submission(config, journal, api, http, job, out, err, wait, sleep, fitted, estimate=checked.estimate)
        try:
            code = _send(run, req, s3_client)
        except KeyboardInterrupt:
            return EXIT_FAILURE  # what happened is recorded and said already
        if code != EXIT_OK or not wait:
            if code == EXIT_OK:
                out.write(
                    f"{job.name}: outputs and status go to {target} once the task ends: a running daemon, or "
                    "`runwatch run --once`, follows it there\n"
                )
            return code
        return _follow(run, target, tty if tty is not None else out.isatty())
    finally:
        lock.release()
        http.close()
        journal.close()


def _send(run: _Submission, req: Request, s3_client: Any) -> int:
    """Place the media, then create the task, as the lifecycle decides after each answer."""
    from runwatch.errors import MoneyHeld, RunwatchError
    from runwatch.jobs.lifecycle import Finish, Hold, RetryLater, after_create_failure, after_place_failure
    from runwatch.jobs.sending import shared_outcome
    from runwatch.jobs.states import State

    job, journal, err = run.job, run.journal, run.err
    uris: dict[Any, str] = {}
    if req.media:
        journal.update(job, state=State.UPLOADING)
        attempts = 0
        while True:
            try:
                uris = _place_all(run, req, s3_client)
                break
            except KeyboardInterrupt:
                error = {"code": "interrupted", "message": "interrupted while uploading; nothing was sent to Runway"}
                _finish(run, State.FAILED, error=error)
                err.write(f"\n{job.name}: {error['message']}\n")
                raise
            except RunwatchError as exc:
                attempts += 1
                placing = after_place_failure(exc, attempts=attempts)
                if isinstance(placing, Finish):
                    return _report(run, placing)
                err.write(f"{job.name}: upload failed ({exc}); trying again in {placing.delay:.0f} s\n")
                run.sleep(placing.delay)
    body = req.with_uris(uris)
    sent: list[int] = []  # attempts that left in this try: the first of each try counts one more attempt

    check = _money_check(run, req)

    def before_send() -> None:  # the intent is committed (fsync'd) before each attempt leaves
        sent.append(1)
        # On a journal nodes share, checked against every node's spending in the intent's own transaction.
        journal.record_intent(job.id, first=len(sent) == 1, check=check)

    while True:
        sent.clear()
        try:
            created = run.api.create_task(
                job.endpoint or "",
                body,
                before_send,
                lambda: journal.clear_intent(job.id),
            )
        except KeyboardInterrupt:
            _finish(run, State.NEEDS_ATTENTION, error=_unconfirmed("interrupted while the create was in flight"))
            err.write(
                f"\n{job.name}: interrupted while the create was in flight; it may exist at Runway and is not "
                "sent again (needs_attention)\n"
            )
            raise
        except RunwatchError as exc:
            fresh = journal.get(job.id)
            if fresh is not None:
                job.apply(create_started_at=fresh.create_started_at, attempts=fresh.attempts)
            if isinstance(exc, MoneyHeld):  # every node's spending together: nothing recorded, nothing sent
                outcome: Finish | Hold | RetryLater = shared_outcome(job, exc.code, exc.reason)
            else:
                outcome = after_create_failure(exc, attempts=job.attempts, model=job.model)
            if not (isinstance(outcome, Finish) and not outcome.surely_not_created):
                journal.update(job, create_started_at=None)  # Runway surely created nothing
            if isinstance(outcome, Finish):
                return _report(run, outcome)
            if isinstance(outcome, Hold) and not run.wait:
                error = {"code": outcome.code, "message": f"not sent: {outcome.message}"}
                return _report(run, Finish(State.FAILED, error))
            delay = outcome.delay if isinstance(outcome, RetryLater) else outcome.wait
            reason = outcome.message
            err.write(f"{job.name}: not sent ({reason}); trying again in {delay:.0f} s\n")
            run.sleep(delay)
            continue
        break
    journal.record_task(job.id, created.id, created.estimated_credits)
    fresh = journal.get(job.id)
    if fresh is not None:
        job.apply(**{k: getattr(fresh, k) for k in ("task_id", "estimated_credits", "state", "create_started_at")})
    cost = f", estimated {readable(job.estimated_credits)} credits" if job.estimated_credits is not None else ""
    run.out.write(f"{job.name}: submitted as task {created.id}{cost}\n")
    run.out.flush()
    return EXIT_OK


def _money_check(run: _Submission, req: Request) -> MoneyCheck:
    """What a journal several nodes share checks this create against, as it does a daemon's: the config's
    budgets and the request's own limit over every node's spending, the balance and Runway's daily count as the
    nodes last read them. A SQLite journal's one node decides alone (a submit there checks no budget)."""
    from runwatch.budget import Limits, MoneyCheck
    from runwatch.pricing import Estimate

    job, budget = run.job, run.config.budget
    guess = run.estimate or Estimate(None, "the request names no model")
    limits = Limits(
        max_credits=req.options.max_credits,
        daily=budget.daily,
        monthly=budget.monthly,
        unknown_price=budget.unknown_price,
    )
    return MoneyCheck.for_job(job, guess.credits, guess.basis, limits, model_cap=run.config.scheduler.per_model)


def _report(run: _Submission, outcome: Any) -> int:
    """A create or upload that ends the job: recorded, and said on stderr with every issue."""
    job = run.job
    _finish(run, outcome.state, error=outcome.error)
    error = outcome.error or {}
    run.err.write(f"{job.name}: {outcome.state}: {error.get('message', '')}\n")
    for issue in error.get("issues", []):
        run.err.write(f"{job.name}:   {issue['path']}: {issue['message']}\n")
    return EXIT_FAILURE


def _place_all(run: _Submission, req: Request, s3_client: Any) -> dict[Any, str]:
    from runwatch.errors import RunwatchError
    from runwatch.media import DataTransport, RunwayTransport, S3Transport

    config = run.config
    if run.transport_name == "s3" and config.s3 is not None:
        run.transport = S3Transport(config.s3, s3_client or make_s3_client(config))
    elif run.transport_name == "data":
        run.transport = DataTransport()
    else:
        run.transport = RunwayTransport(run.api, run.http)
    uris: dict[Any, str] = {}
    by_file: dict[Path, Placed] = {}
    try:
        for media in req.media:
            item = by_file.get(media.file) or run.transport.place(media, run.job.id)
            by_file[media.file] = item
            if item not in run.placed:
                run.placed.append(item)
            uris[media.field] = item.uri
    except BaseException:
        for item in run.placed:  # nothing half-placed stays behind
            with contextlib.suppress(RunwatchError):
                run.transport.remove(item)
        run.placed.clear()
        raise
    # Only handles are kept (an S3 key, a runway:// URI): never a presigned URL with its signature.
    placed = [{"transport": p.transport, "handle": p.handle, "expires_at": p.expires_at} for p in run.placed]
    run.journal.update(run.job, placed=placed)
    return uris


def _finish(run: _Submission, state: str, **changes: Any) -> None:
    from runwatch.clock import now_iso
    from runwatch.errors import RunwatchError
    from runwatch.jobs.states import State, check_move

    check_move(run.job.id, run.job.state, State(state))
    if state != State.NEEDS_ATTENTION and run.transport is not None and run.placed:
        # The media are no longer needed once the task has ended (kept for a task that may still run).
        for item in run.placed:
            with contextlib.suppress(RunwatchError):
                run.transport.remove(item)
        changes["placed"] = []
    run.journal.update(run.job, state=state, finished_at=now_iso(), **changes)


def _follow(run: _Submission, target: Path, tty: bool) -> int:
    """--wait: poll the task, show progress, download the outputs and write the status file."""
    from runwatch.errors import ApiError, ApiStatusError, OutboxError
    from runwatch.jobs.lifecycle import (
        Download,
        Finish,
        LookAgain,
        Wait,
        after_download_failure,
        after_poll,
        after_poll_failure,
    )
    from runwatch.jobs.states import State
    from runwatch.scheduler import Sample, next_poll

    job, journal, interval, err = run.job, run.journal, run.config.runway.poll_interval, run.err
    progress = _Progress(run.out, tty)
    samples: list[Sample] = []
    failures = empty = downloads = 0
    try:
        while True:
            try:
                task = run.api.get_task(job.task_id or "")
            except ApiError as exc:
                code = exc.status if isinstance(exc, ApiStatusError) else None
                if code is not None and code < 500 and code not in (404, 429):  # a refused key: waiting won't help
                    progress.end()
                    err.write(f"{job.name}: cannot follow task {job.task_id}: {exc}; it keeps running at Runway\n")
                    return EXIT_FAILURE
                failures += 1
                failed = after_poll_failure(exc, failures=failures, interval=interval, cancel_requested=False)
                if isinstance(failed, Finish):
                    progress.end()
                    return _ended(run, target, failed.state, error=failed.error)
                delay = failed.delay or interval
                progress.show(f"{job.name}: cannot reach Runway ({exc}); trying again in {delay:.0f} s")
                run.sleep(delay)
                continue
            failures = 0
            outcome = after_poll(task, empty_successes=empty)
            if isinstance(outcome, Wait):
                if outcome.progress is not None:
                    samples.append(Sample(time.monotonic(), outcome.progress))
                    del samples[:-20]
                shown_progress = outcome.progress if outcome.progress is not None else job.progress
                journal.update(job, state=outcome.state, progress=shown_progress)
                shown = f" {outcome.progress * 100:.0f}%" if outcome.progress is not None else ""
                progress.show(f"{job.name}: {outcome.state}{shown}")
                status = str(task.get("status"))
                run.sleep(next_poll(status, samples, now=time.monotonic(), interval=interval))
            elif isinstance(outcome, Download):
                if job.state != State.DOWNLOADING:
                    journal.update(job, state=State.DOWNLOADING, progress=1.0, credits=outcome.credits)
                progress.show(f"{job.name}: downloading")
                try:
                    records = _download(run, list(outcome.urls), target)
                except OutboxError as exc:
                    downloads += 1
                    retry = after_download_failure(exc, failures=downloads)
                    if isinstance(retry, Finish):
                        progress.end()
                        return _ended(run, target, retry.state, error=retry.error)
                    run.sleep(retry.delay or interval)
                    continue
                progress.end()
                return _ended(run, target, State.SUCCEEDED, outputs=records)
            elif isinstance(outcome, Finish):
                progress.end()
                changes: dict[str, Any] = {"error": outcome.error} if outcome.error else {}
                if outcome.credits is not None:
                    changes["credits"] = outcome.credits
                return _ended(run, target, outcome.state, **changes)
            elif isinstance(outcome, LookAgain):
                empty += int(outcome.empty_success)
                run.sleep(outcome.delay or interval)
    except KeyboardInterrupt:
        progress.end()
        if job.state == State.DOWNLOADING:
            err.write(
                f"\n{job.name}: interrupted while downloading; task {job.task_id} has succeeded at Runway; a "
                "running daemon or `runwatch run --once` downloads its outputs\n"
            )
        else:
            err.write(
                f"\n{job.name}: stopped following; task {job.task_id} keeps running at Runway (it was not "
                f"cancelled); a running daemon or `runwatch run --once` follows it to its outputs in {target}\n"
            )
        return EXIT_FAILURE


def _download(run: _Submission, urls: list[str], target: Path) -> list[dict[str, Any]]:
    from runwatch.outbox import DownloadError, OutputRecord, download_outputs

    job = run.job
    target.mkdir(parents=True, exist_ok=True)

    def refresh() -> list[str]:
        task = run.api.get_task(job.task_id or "")
        return [u for u in task.get("output", []) if isinstance(u, str)]

    done = [OutputRecord(o["file"], o["bytes"], o["sha256"], o["index"]) for o in job.outputs]
    try:
        records = download_outputs(run.http, urls, target, job.name, done=done, refresh=refresh)
    except DownloadError as exc:
        # Kept, so a second attempt does not fetch them into a suffixed copy.
        run.journal.update(job, outputs=[_record(r) for r in exc.records])
        raise
    return [_record(r) for r in records]


def _record(r: Any) -> dict[str, Any]:
    return {"file": r.file, "bytes": r.bytes, "sha256": r.sha256, "index": r.index}


def _ended(run: _Submission, target: Path, state: str, **changes: Any) -> int:
    from runwatch.errors import OutboxError
    from runwatch.outbox import status_document, write_status

    job, err = run.job, run.err
    _finish(run, state, **changes)
    try:
        target.mkdir(parents=True, exist_ok=True)
        where = write_status(target, job.name, "toml" if job.format == "toml" else "json", status_document(job))
    except (OutboxError, OSError) as exc:
        err.write(f"{job.name}: cannot write the status file in {target}: {exc}\n")
        return EXIT_FAILURE
    if state == "succeeded":
        names = ", ".join(str(target / o["file"]) for o in job.outputs)
        credits = f" ({readable(job.credits)} credits)" if job.credits is not None else ""
        run.out.write(f"{job.name}: succeeded{credits}: {names}; status in {where}\n")
        return EXIT_OK
    message = (job.error or {}).get("message", "") if isinstance(job.error, dict) else ""
    err.write(f"{job.name}: {state}" + (f": {message}" if message else "") + f"; status in {where}\n")
    return EXIT_FAILURE
