"""``runwatch submit``: one request file sent outside the folders, with the daemon's money rule.

The intent is committed before the create and the task id right after, so a create whose answer was lost is
reported ``needs_attention`` and never sent again. Its jobs go in the journal under the inbox name ``submit``,
so ``runwatch status`` lists them; the daemon does not follow them. With ``--wait`` it follows the task itself,
downloads the outputs and writes the status file.
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
    from runwatch.config import Config
    from runwatch.errors import ApiError
    from runwatch.journal import Job, Journal
    from runwatch.media import Placed, Transport
    from runwatch.request import Request

__all__ = ["SUBMIT_INBOX", "submit_command", "sweep_abandoned"]

SUBMIT_INBOX: Final = "submit"  # the journal's inbox name for `runwatch submit` jobs
_STATE_OF = {"THROTTLED": "throttled", "PENDING": "pending", "RUNNING": "running"}


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


def sweep_abandoned(journal: Journal, folder: Path) -> list[Job]:
    """Submit jobs whose process died before Runway named the task: an intent without a task id becomes
    needs_attention (the create may have happened), a job that never reached the create becomes failed."""
    from runwatch.journal import ACTIVE_STATES, now_iso

    swept = []
    for job in journal.active():
        if job.inbox != SUBMIT_INBOX or job.task_id:
            continue
        lock = folder / f"{job.id}.lock"
        try:
            fd: int | None = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = None
        except OSError:
            continue
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its process is alive
            fresh = journal.get(job.id)  # re-read under the lock: it may have ended meanwhile
            if fresh is None or fresh.state not in ACTIVE_STATES or fresh.task_id:
                continue
            if fresh.unconfirmed_create:
                journal.update(
                    fresh,
                    state="needs_attention",
                    finished_at=now_iso(),
                    error=_unconfirmed_error(
                        "the `runwatch submit` that sent it stopped before Runway's answer was recorded"
                    ),
                )
            else:
                journal.update(
                    fresh,
                    state="failed",
                    finished_at=now_iso(),
                    error={
                        "code": "interrupted",
                        "message": "`runwatch submit` stopped before the create; nothing was sent",
                    },
                )
            swept.append(fresh)
        finally:
            if fd is not None:
                lock.unlink(missing_ok=True)
                os.close(fd)
    return swept


def _unconfirmed_error(detail: str) -> dict[str, Any]:
    return {
        "code": "create_unconfirmed",
        "message": (
            "the create request may have reached Runway but no answer was recorded; it was not sent again so no "
            "credit is spent twice. Check the task list at Runway, then submit the file again on purpose if it is "
            f"not there ({detail})"
        ),
    }


def _new_job_id() -> str:
    # The daemon's job id shape, so S3 keys and listings look alike.
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


@dataclass
class _Submission:
    """What one submit holds while it runs."""

    config: Config
    journal: Journal
    api: RunwayClient
    http: httpx.Client
    job: Job
    out: TextIO
    transport: Transport | None = None
    placed: list[Placed] = field(default_factory=list)


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
    from runwatch.journal import Job, Journal

    out = out or sys.stdout
    err = err or sys.stderr
    file = Path(path)
    if out_dir and not wait:
        err.write("runwatch submit: --out needs --wait (without it nothing is downloaded)\n")
        return EXIT_USAGE
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
    target = Path(out_dir) if out_dir else file.parent
    journal = Journal(config.state.dir / "journal.sqlite3")
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
            )
        )
        api = RunwayClient(http, base_url=config.runway.base_url, api_key=api_key, version=config.runway.api_version)
        run = _Submission(config, journal, api, http, job, out)
        try:
            code = _send(run, req, s3_client, err)
        except KeyboardInterrupt:
            return EXIT_FAILURE  # what happened is recorded and said already
        if code != EXIT_OK or not wait:
            return code
        return _follow(run, target, err, tty if tty is not None else out.isatty(), sleep)
    finally:
        lock.release()
        http.close()
        journal.close()


def _send(run: _Submission, req: Request, s3_client: Any, err: TextIO) -> int:
    """Place the media, commit the intent, create the task, record its id."""
    from runwatch.errors import ApiError, RunwatchError
    from runwatch.journal import now_iso

    job, journal = run.job, run.journal
    uris: dict[Any, str] = {}
    if req.media:
        journal.update(job, state="uploading")
        try:
            uris = _place_all(run, req, s3_client)
        except KeyboardInterrupt:
            _finish(
                run,
                "failed",
                error={"code": "interrupted", "message": "interrupted while uploading; nothing was sent to Runway"},
            )
            err.write(f"\n{job.name}: interrupted while uploading; nothing was sent to Runway\n")
            raise
        except RunwatchError as exc:
            _finish(run, "failed", error={"code": "upload_failed", "message": str(exc)})
            err.write(f"{job.name}: failed: {exc}\n")
            return EXIT_FAILURE
    body = req.with_uris(uris)
    # The intent is committed (fsync'd) before the request leaves: a crash from here on is seen.
    journal.update(job, create_started_at=now_iso(), attempts=job.attempts + 1)
    try:
        created = run.api.create_task(job.endpoint or "", body)
    except KeyboardInterrupt:
        _finish(run, "needs_attention", error=_unconfirmed_error("interrupted while the create was in flight"))
        err.write(
            f"\n{job.name}: interrupted while the create was in flight; it may exist at Runway and is not "
            "sent again (needs_attention)\n"
        )
        raise
    except ApiError as exc:
        state, error = _create_failure(exc)
        if state != "needs_attention":
            journal.update(job, create_started_at=None)  # Runway surely created nothing
        _finish(run, state, error=error)
        err.write(f"{job.name}: {state}: {error['message']}\n")
        for issue in error.get("issues", []):
            err.write(f"{job.name}:   {issue['path']}: {issue['message']}\n")
        return EXIT_FAILURE
    journal.update(
        job,
        task_id=created.id,
        state="submitted",
        estimated_credits=created.estimated_credits if created.estimated_credits is not None else job.estimated_credits,
    )
    cost = f", estimated {readable(job.estimated_credits)} credits" if job.estimated_credits is not None else ""
    run.out.write(f"{job.name}: submitted as task {created.id}{cost}\n")
    run.out.flush()
    return EXIT_OK


def _create_failure(exc: ApiError) -> tuple[str, dict[str, Any]]:
    """The final state and error of a create that gave no task id (the API client has retried already)."""
    from runwatch.api import create_may_be_retried
    from runwatch.errors import ApiStatusError, RateLimitedError

    if create_may_be_retried(exc):
        return "failed", {"code": "create_failed", "message": f"Runway did not take the request: {exc}"}
    if isinstance(exc, RateLimitedError) and exc.daily:
        return "failed", {"code": "429", "message": f"Runway's daily task limit is reached: {exc}"}
    if isinstance(exc, ApiStatusError) and exc.status < 500:
        message = exc.body.get("error") if isinstance(exc.body, dict) else str(exc.body)
        issues = [{"path": _issue_path(i.get("path")), "message": str(i.get("message"))} for i in exc.issues]
        state = "rejected" if exc.status == 400 and issues else "failed"
        return state, {"code": str(exc.status), "message": str(message), "issues": issues}
    return "needs_attention", _unconfirmed_error(str(exc))


def _issue_path(path: Any) -> str:
    from runwatch.catalog import format_path

    if not isinstance(path, list):
        return ""
    return format_path([p if isinstance(p, int) else str(p) for p in path])


def _place_all(run: _Submission, req: Request, s3_client: Any) -> dict[Any, str]:
    from runwatch.errors import RunwatchError
    from runwatch.media import RunwayTransport, S3Transport, choose

    config = run.config
    if choose("auto", s3_configured=config.s3 is not None) == "s3" and config.s3 is not None:
        run.transport = S3Transport(config.s3, s3_client or make_s3_client(config))
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
    run.journal.update(
        run.job, placed=[{"transport": p.transport, "handle": p.handle, "expires_at": p.expires_at} for p in run.placed]
    )
    return uris


def _finish(run: _Submission, state: str, **changes: Any) -> None:
    from runwatch.errors import RunwatchError
    from runwatch.journal import now_iso

    if state != "needs_attention" and run.transport is not None and run.placed:
        # The media are no longer needed once the task has ended (kept for a task that may still run).
        for item in run.placed:
            with contextlib.suppress(RunwatchError):
                run.transport.remove(item)
        changes["placed"] = []
    run.journal.update(run.job, state=state, finished_at=now_iso(), **changes)


def _follow(run: _Submission, target: Path, err: TextIO, tty: bool, sleep: Callable[[float], None]) -> int:
    """--wait: poll the task, show progress, download the outputs and write the status file."""
    from runwatch.errors import ApiError, ApiStatusError, OutboxError
    from runwatch.scheduler import Sample, next_poll

    job, journal, interval = run.job, run.journal, run.config.runway.poll_interval
    progress = _Progress(run.out, tty)
    samples: list[Sample] = []
    failures = 0
    try:
        while True:
            try:
                task = run.api.get_task(job.task_id or "")
            except ApiError as exc:
                code = exc.status if isinstance(exc, ApiStatusError) else None
                if code == 404:
                    progress.end()
                    return _ended(
                        run,
                        target,
                        "failed",
                        err,
                        error={"code": "404", "message": "the task no longer exists at Runway"},
                    )
                if code is not None and code < 500 and code != 429:  # a refused key: waiting will not help
                    progress.end()
                    err.write(f"{job.name}: cannot follow task {job.task_id}: {exc}; it keeps running at Runway\n")
                    return EXIT_FAILURE
                failures += 1
                delay = min(300.0, interval * 2 ** min(failures, 6))
                progress.show(f"{job.name}: cannot reach Runway ({exc}); trying again in {delay:.0f} s")
                sleep(delay)
                continue
            failures = 0
            status = str(task.get("status"))
            if status in _STATE_OF:
                value = task.get("progress") if status == "RUNNING" else None
                fraction = float(value) if isinstance(value, int | float) else None
                if fraction is not None:
                    samples.append(Sample(time.monotonic(), fraction))
                    del samples[:-20]
                journal.update(
                    job, state=_STATE_OF[status], progress=fraction if fraction is not None else job.progress
                )
                shown = f" {fraction * 100:.0f}%" if fraction is not None else ""
                progress.show(f"{job.name}: {_STATE_OF[status]}{shown}")
                sleep(next_poll(status, samples, now=time.monotonic(), interval=interval))
            elif status == "SUCCEEDED":
                cost = task.get("cost")
                credits = cost.get("credits") if isinstance(cost, dict) else None
                journal.update(job, state="downloading", progress=1.0, credits=credits)
                progress.show(f"{job.name}: downloading")
                progress.end()
                urls = [u for u in task.get("output", []) if isinstance(u, str)]
                try:
                    records = _download(run, urls, target)
                except OutboxError as exc:
                    return _ended(run, target, "failed", err, error={"code": "download_failed", "message": str(exc)})
                return _ended(run, target, "succeeded", err, outputs=records)
            elif status == "FAILED":
                progress.end()
                cost = task.get("cost")
                return _ended(
                    run,
                    target,
                    "failed",
                    err,
                    credits=cost.get("credits") if isinstance(cost, dict) else None,
                    error={
                        "code": str(task.get("failureCode") or "FAILED"),
                        "message": str(task.get("failure") or "the task failed at Runway"),
                    },
                )
            elif status == "CANCELLED":
                progress.end()
                return _ended(run, target, "cancelled", err)
            else:
                sleep(interval)
    except KeyboardInterrupt:
        progress.end()
        if job.state == "downloading":
            err.write(
                f"\n{job.name}: interrupted while downloading; task {job.task_id} has succeeded at Runway and "
                "its outputs stay downloadable there for 24 to 48 hours\n"
            )
        else:
            err.write(
                f"\n{job.name}: stopped following; task {job.task_id} keeps running at Runway (it was not "
                f"cancelled); `runwatch status {job.name}` shows what was last seen\n"
            )
        return EXIT_FAILURE


def _download(run: _Submission, urls: list[str], target: Path) -> list[dict[str, Any]]:
    from runwatch.outbox import DownloadError, OutputRecord, download_outputs

    job = run.job
    target.mkdir(parents=True, exist_ok=True)

    def refresh() -> list[str]:
        task = run.api.get_task(job.task_id or "")
        return [u for u in task.get("output", []) if isinstance(u, str)]

    done: list[OutputRecord] = []
    for attempt in range(3):
        try:
            records = download_outputs(run.http, urls, target, job.name, done=done, refresh=refresh)
            break
        except DownloadError as exc:
            done = list(exc.records)  # kept, so a second attempt does not fetch them into a suffixed copy
            run.journal.update(job, outputs=[_record(r) for r in done])
            if attempt == 2:
                raise
            time.sleep(2.0**attempt)
    return [_record(r) for r in records]


def _record(r: Any) -> dict[str, Any]:
    return {"file": r.file, "bytes": r.bytes, "sha256": r.sha256, "index": r.index}


def _ended(run: _Submission, target: Path, state: str, err: TextIO, **changes: Any) -> int:
    from runwatch.errors import OutboxError
    from runwatch.outbox import status_document, write_status

    job = run.job
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
