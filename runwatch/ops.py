"""One-shot commands beside the daemon: ``validate`` (and ``--price``), ``submit`` and ``credits``.

``validate`` never calls the API nor uploads anything: it reads request files with the inbox context they
would get (the inbox's endpoint and defaults when the file sits in a configured inbox, plain defaults
otherwise) and prices them with the shipped price data. ``submit`` sends one request file outside the
folders with the daemon's money rule: the intent is committed before the create and the task id right after,
so a create whose answer was lost is reported ``needs_attention`` and never sent again. Its jobs go in the
journal under the inbox name ``submit``, so ``runwatch status`` lists them; the daemon does not follow them.
``credits`` sets what the journal says was spent beside what Runway reports.

Each command writes to the ``out`` stream it is given and returns the exit code.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import sys
import time
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from runwatch.errors import ConfigError, Problem, RequestError

if TYPE_CHECKING:
    import httpx

    from runwatch.api import RunwayClient
    from runwatch.catalog import Catalog
    from runwatch.config import Config, InboxConfig
    from runwatch.errors import ApiError
    from runwatch.journal import Job, Journal
    from runwatch.media import Placed, Transport
    from runwatch.pricing import Estimate, MediaHint
    from runwatch.request import Request

__all__ = ["SUBMIT_INBOX", "Checked", "PlainInbox", "Validator", "credits_command", "load_optional_config",
           "submit_command", "validate_command"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
SUBMIT_INBOX: Final = "submit"  # the journal's inbox name for `runwatch submit` jobs
_STATUS_SUFFIXES = (".status.json", ".status.toml")
_STATE_OF = {"THROTTLED": "throttled", "PENDING": "pending", "RUNNING": "running"}


# -- shared helpers ---------------------------------------------------------------------------------------


def _amount(credits: float) -> str:
    """Credits as people read them: 1,234 or 12.5."""
    if float(credits).is_integer():
        return f"{int(credits):,}"
    return f"{credits:,.2f}".rstrip("0").rstrip(".")


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Columns padded to their widest cell; the last column is never padded."""
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] + "\n")


def load_optional_config(explicit: str | None, env: Mapping[str, str] = os.environ) -> Config | None:
    """The config for commands that also work without one: a file named by --config or $RUNWATCH_CONFIG
    must load; when none is named and none is found, None (plain defaults)."""
    from runwatch.config import find_config, load_config

    named = bool(explicit) or bool(env.get("RUNWATCH_CONFIG"))
    try:
        path = find_config(explicit, env)
    except ConfigError:
        if named:
            raise
        return None
    return load_config(path, env)


def _load_config(explicit: str | None, env: Mapping[str, str] = os.environ) -> Config:
    from runwatch.config import find_config, load_config

    return load_config(find_config(explicit, env), env)


# -- validate -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlainInbox:
    """The context of a request file outside every configured inbox: no endpoint, no defaults."""

    path: Path
    endpoint: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    media_field: str = "promptImage"
    accept_media: bool = False


@dataclass(frozen=True)
class Checked:
    """One request file, checked: its request when valid, else every problem; its estimate when priced."""

    file: Path
    inbox: str | None
    request: Request | None = None
    problems: tuple[Problem, ...] = ()
    estimate: Estimate | None = None
    notes: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return self.request is not None

    @property
    def name(self) -> str:
        from runwatch.request import request_name

        return self.request.name if self.request is not None else request_name(self.file)

    def to_json(self) -> dict[str, Any]:
        req, est = self.request, self.estimate
        return {
            "file": str(self.file), "valid": self.valid, "name": self.name, "inbox": self.inbox,
            "endpoint": req.endpoint if req else None, "model": req.model if req else None,
            "problems": [{"path": p.path, "message": p.message} for p in self.problems],
            "estimate": None if est is None else {"credits": est.credits, "basis": est.basis,
                                                  "assumptions": list(est.assumptions)},
            "notes": list(self.notes),
        }


class Validator:
    """Checks request files against one config; the catalogue, prices and media probes are loaded once."""

    def __init__(self, config: Config | None, catalog: Catalog | None = None) -> None:
        from runwatch.catalog import load_catalog
        from runwatch.pricing import load_prices

        self.config = config
        self.catalog = catalog or load_catalog()
        self.prices = load_prices()
        self.unknown_models = config.runway.unknown_models if config else "pass"
        self._roots = [(os.path.realpath(i.path), i) for i in config.inboxes] if config else []
        self._hints: dict[Path, MediaHint | None] = {}

    def inbox_of(self, path: Path, *, folder: bool = False) -> InboxConfig | None:
        """The configured inbox the file sits in (at any depth), or None; with ``folder``, the inbox the
        folder is or is inside."""
        real = os.path.realpath(path)
        for root, inbox in self._roots:
            if real.startswith(root.rstrip(os.sep) + os.sep) or (folder and real == root):
                return inbox
        return None

    def watched_by(self, path: Path) -> InboxConfig | None:
        """The inbox whose daemon would take this file itself (it sits at the inbox's top level)."""
        parent = os.path.realpath(path.parent)
        return next((inbox for root, inbox in self._roots if root == parent), None)

    def check(self, path: Path) -> Checked:
        from runwatch.pricing import Estimate
        from runwatch.request import MEDIA_SUFFIXES, REQUEST_SUFFIXES, load_request

        inbox = self.inbox_of(path)
        context = inbox or PlainInbox(path.parent)
        label = inbox.name if inbox else None
        suffix = path.suffix.lower()
        if suffix not in REQUEST_SUFFIXES and not (suffix in MEDIA_SUFFIXES and context.accept_media):
            why = "is not a request file: expected NAME.json or NAME.toml"
            if suffix in MEDIA_SUFFIXES:
                why += " (a bare media file is a request only in an inbox with accept_media = true)"
            return Checked(path, label, problems=(Problem("", why),))
        try:
            req = load_request(path, root=inbox.path if inbox else path.parent, inbox=context, catalog=self.catalog,
                               unknown_models=self.unknown_models)
        except RequestError as exc:
            return Checked(path, label, problems=tuple(exc.problems))
        if req.model is None:
            guess = Estimate(None, "the request names no model")
        else:
            guess = self.prices.estimate(req.endpoint, req.model, req.body, self._media_hints(req))
        return Checked(path, label, request=req, estimate=guess, notes=self._notes(req, guess, inbox))

    def _media_hints(self, req: Request) -> dict[str, MediaHint]:
        from runwatch.catalog import format_path
        from runwatch.mediaprobe import probe_file
        from runwatch.pricing import MediaHint

        hints: dict[str, MediaHint] = {}
        for media in req.media:
            if media.file not in self._hints:  # many requests share one picture: probe it once
                try:
                    info = probe_file(media.file)
                except OSError:
                    info = None
                self._hints[media.file] = None if info is None else MediaHint(
                    duration=info.duration, width=info.width, height=info.height)
            hint = self._hints[media.file]
            if hint is not None:
                hints[format_path(media.field)] = hint
        return hints

    def _notes(self, req: Request, guess: Estimate, inbox: InboxConfig | None) -> tuple[str, ...]:
        notes = []
        if not req.known_model:
            notes.append(f"model {req.model!r} is not in runwatch's catalogue: it is sent as written and Runway "
                         "checks it (a refused create costs nothing)")
        limits = [(f"its max_credits of {_amount(v)}", v) for v in (req.options.max_credits,) if v is not None]
        if inbox is not None and inbox.approve_above is not None:
            limits.append((f"the inbox's approve_above of {_amount(inbox.approve_above)}", inbox.approve_above))
        for label, value in limits:
            if guess.credits is not None and guess.credits > value:
                notes.append(f"the estimate is above {label}: the daemon holds it until `runwatch approve`")
        return tuple(notes)


def _expand(paths: Sequence[str], validator: Validator) -> tuple[list[Path], list[str]]:
    """Files to check (a folder stands for the request files at its top) and usage errors."""
    from runwatch.request import classify

    files: list[Path] = []
    errors: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inbox = validator.inbox_of(path, folder=True)
            accept = inbox.accept_media if inbox is not None else False
            try:
                names = sorted(os.listdir(path))
            except OSError as exc:
                errors.append(f"{raw}: cannot list the folder: {exc.strerror}")
                continue
            for name in names:
                # Status files are runwatch's own answers (submit writes them beside requests), never requests.
                if classify(name, accept) in ("request", "media") and not name.endswith(_STATUS_SUFFIXES) \
                        and (path / name).is_file():
                    files.append(path / name)
        elif path.exists() or path.is_symlink():
            files.append(path)
        else:
            errors.append(f"{raw}: no such file or folder")
    return files, errors


def _estimate_text(guess: Estimate | None) -> str:
    if guess is None or guess.credits is None:
        return f"unknown: {guess.basis if guess else 'not priced'}"
    total = f"{_amount(guess.credits)} {'credit' if guess.credits == 1 else 'credits'}"
    return f"{guess.basis} = {total}"


def validate_command(paths: Sequence[str], *, config_file: str | None = None, price: bool = False,
                     as_json: bool = False, out: TextIO | None = None, err: TextIO | None = None,
                     env: Mapping[str, str] = os.environ) -> int:
    """``runwatch validate``: 0 when every file is valid, 1 when any is not, 2 for a path that is not there."""
    out = out or sys.stdout
    err = err or sys.stderr
    config = load_optional_config(config_file, env)  # ConfigError: the caller exits 78
    validator = Validator(config)
    files, errors = _expand(paths, validator)
    if errors:
        for line in errors:
            err.write(f"runwatch validate: {line}\n")
        return EXIT_USAGE
    results = [validator.check(f) for f in files]
    if price:
        _price_report(results, out, as_json, config)
    elif as_json:
        out.write(json.dumps({"config": str(config.path) if config and config.path else None,
                              "files": [r.to_json() for r in results],
                              "valid": sum(r.valid for r in results),
                              "invalid": sum(not r.valid for r in results)}, indent=2) + "\n")
    else:
        _validate_report(results, out, config)
    if not files:
        err.write(f"runwatch validate: no request files in {', '.join(paths)}\n")
    return EXIT_OK if all(r.valid for r in results) else EXIT_FAILURE


def _validate_report(results: Sequence[Checked], out: TextIO, config: Config | None) -> None:
    lines: list[str] = []
    for r in results:
        if r.request is None:
            lines += [f"{r.file}: {p}" for p in r.problems]
            continue
        what = " ".join(x for x in (r.request.endpoint, r.request.model) if x)
        lines.append(f"{r.file}: OK {what}, {_estimate_text(r.estimate)}")
        if r.estimate is not None:
            lines += [f"{r.file}:   assumes {a}" for a in r.estimate.assumptions]
        lines += [f"{r.file}:   note: {n}" for n in r.notes]
    valid = sum(r.valid for r in results)
    source = f"config {config.path}" if config and config.path else "no config file: plain defaults"
    lines.append(f"{_plural(len(results), 'file')}: {valid:,} valid, {len(results) - valid:,} invalid ({source})")
    out.write("\n".join(lines) + "\n")


def _price_report(results: Sequence[Checked], out: TextIO, as_json: bool, config: Config | None) -> None:
    valid = [r for r in results if r.request is not None]
    priced = [r for r in valid if r.estimate is not None and r.estimate.credits is not None]
    unknown = [r for r in valid if r.estimate is None or r.estimate.credits is None]
    invalid = [r for r in results if r.request is None]
    total = sum(r.estimate.credits or 0 for r in priced if r.estimate is not None)
    if as_json:
        out.write(json.dumps({
            "config": str(config.path) if config and config.path else None,
            "requests": [r.to_json() for r in valid], "total": total, "priced": len(priced),
            "unknown": [r.name for r in unknown], "invalid": [r.to_json() for r in invalid],
        }, indent=2) + "\n")
        return
    rows = [["NAME", "ENDPOINT", "MODEL", "ESTIMATE", "BASIS"]]
    for r in valid:
        assert r.request is not None and r.estimate is not None
        credits = r.estimate.credits
        basis = r.estimate.basis + "".join(f"; assumes {a}" for a in r.estimate.assumptions)
        rows.append([r.name, r.request.endpoint, r.request.model or "", "unknown" if credits is None
                     else _amount(credits), basis])
    _table(rows, out)
    for r in invalid:
        out.write("".join(f"{r.file}: {p}\n" for p in r.problems))
    line = f"total: {_amount(total)} credits for {_plural(len(priced), 'request')}"
    if unknown:
        line += f"; {_plural(len(unknown), 'request')} with unknown price: {_names(unknown)}"
    if invalid:
        line += f"; {_plural(len(invalid), 'invalid request')} not priced: {_names(invalid)}"
    out.write(line + "\n")


def _names(results: Sequence[Checked], most: int = 20) -> str:
    """The requests' names for a summary line; a long list is cut (the table above has them all)."""
    names = [r.name for r in results]
    more = f" and {len(names) - most:,} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


# -- submit ---------------------------------------------------------------------------------------------


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
                journal.update(fresh, state="needs_attention", finished_at=now_iso(), error=_unconfirmed_error(
                    "the `runwatch submit` that sent it stopped before Runway's answer was recorded"))
            else:
                journal.update(fresh, state="failed", finished_at=now_iso(), error={
                    "code": "interrupted", "message": "`runwatch submit` stopped before the create; nothing was sent"})
            swept.append(fresh)
        finally:
            if fd is not None:
                lock.unlink(missing_ok=True)
                os.close(fd)
    return swept


def _unconfirmed_error(detail: str) -> dict[str, Any]:
    return {"code": "create_unconfirmed", "message": (
        "the create request may have reached Runway but no answer was recorded; it was not sent again so no "
        "credit is spent twice. Check the task list at Runway, then submit the file again on purpose if it is "
        f"not there ({detail})")}


def _new_job_id() -> str:
    # The daemon's job id shape, so S3 keys and listings look alike.
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def make_s3_client(config: Config) -> Any:
    """A boto3 S3 client for the configured store (credentials from boto3's usual chain)."""
    import boto3
    from botocore.config import Config as BotoConfig

    assert config.s3 is not None
    return boto3.client(
        "s3", region_name=config.s3.region, endpoint_url=config.s3.endpoint_url,
        config=BotoConfig(signature_version="s3v4", s3={"addressing_style": config.s3.addressing_style},
                          retries={"max_attempts": 5, "mode": "standard"}),
    )


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


def submit_command(path: str, *, config_file: str | None = None, wait: bool = False, out_dir: str | None = None,
                   out: TextIO | None = None, err: TextIO | None = None, tty: bool | None = None,
                   env: Mapping[str, str] = os.environ, s3_client: Any = None,
                   sleep: Callable[[float], None] = time.sleep) -> int:
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
    config = _load_config(config_file, env)
    api_key = load_api_key(config, env)
    validator = Validator(config)
    inbox = validator.watched_by(file)
    if inbox is not None:
        err.write(f"runwatch submit: {path} is in the inbox {inbox.name!r}, which the daemon takes requests "
                  "from: submitting it too would send it twice. Copy it elsewhere, or let the daemon take it.\n")
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
        job = journal.add(Job(
            id=job_id, name=req.name, inbox=SUBMIT_INBOX, format=req.format, endpoint=req.endpoint,
            model=req.model, priority=req.options.priority, request_path=str(file.absolute()), body=req.body,
            estimated_credits=guess))
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
            _finish(run, "failed", error={"code": "interrupted", "message": "interrupted while uploading; "
                                          "nothing was sent to Runway"})
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
        err.write(f"\n{job.name}: interrupted while the create was in flight; it may exist at Runway and is not "
                  "sent again (needs_attention)\n")
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
    journal.update(job, task_id=created.id, state="submitted",
                   estimated_credits=created.estimated_credits if created.estimated_credits is not None
                   else job.estimated_credits)
    cost = f", estimated {_amount(job.estimated_credits)} credits" if job.estimated_credits is not None else ""
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
    run.journal.update(run.job, placed=[{"transport": p.transport, "handle": p.handle, "expires_at": p.expires_at}
                                        for p in run.placed])
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
                    return _ended(run, target, "failed", err, error={
                        "code": "404", "message": "the task no longer exists at Runway"})
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
                journal.update(job, state=_STATE_OF[status], progress=fraction if fraction is not None
                               else job.progress)
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
                return _ended(run, target, "failed", err,
                              credits=cost.get("credits") if isinstance(cost, dict) else None,
                              error={"code": str(task.get("failureCode") or "FAILED"),
                                     "message": str(task.get("failure") or "the task failed at Runway")})
            elif status == "CANCELLED":
                progress.end()
                return _ended(run, target, "cancelled", err)
            else:
                sleep(interval)
    except KeyboardInterrupt:
        progress.end()
        if job.state == "downloading":
            err.write(f"\n{job.name}: interrupted while downloading; task {job.task_id} has succeeded at Runway and "
                      "its outputs stay downloadable there for 24 to 48 hours\n")
        else:
            err.write(f"\n{job.name}: stopped following; task {job.task_id} keeps running at Runway (it was not "
                      f"cancelled); `runwatch status {job.name}` shows what was last seen\n")
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
            time.sleep(2.0 ** attempt)
    return [_record(r) for r in records]


def _record(r: Any) -> dict[str, Any]:
    return {"file": r.file, "bytes": r.bytes, "sha256": r.sha256, "index": r.index}


def _ended(run: _Submission, target: Path, state: str, err: TextIO, **changes: Any) -> int:
    from runwatch.engine import status_document
    from runwatch.errors import OutboxError
    from runwatch.outbox import write_status

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
        credits = f" ({_amount(job.credits)} credits)" if job.credits is not None else ""
        run.out.write(f"{job.name}: succeeded{credits}: {names}; status in {where}\n")
        return EXIT_OK
    message = (job.error or {}).get("message", "") if isinstance(job.error, dict) else ""
    err.write(f"{job.name}: {state}" + (f": {message}" if message else "") + f"; status in {where}\n")
    return EXIT_FAILURE


# -- credits --------------------------------------------------------------------------------------------


@dataclass
class _Spent:
    total: float = 0.0
    by_inbox: dict[str, float] = field(default_factory=dict)
    by_model: dict[str, float] = field(default_factory=dict)

    def add(self, amount: float, inbox: str | None, model: str | None) -> None:
        self.total += amount
        if inbox is not None:
            self.by_inbox[inbox] = self.by_inbox.get(inbox, 0.0) + amount
        key = model or "(none)"
        self.by_model[key] = self.by_model.get(key, 0.0) + amount

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"total": self.total, "by_model": dict(sorted(self.by_model.items()))}
        if self.by_inbox:
            out["by_inbox"] = dict(sorted(self.by_inbox.items()))
        return out


def journal_spending(jobs: Iterable[Job], today: date) -> tuple[_Spent, _Spent]:
    """Today's and this month's spending from the journal: final credits, else the estimate of a job in
    flight (it may still charge); by the UTC day the job was created."""
    from runwatch.journal import ACTIVE_STATES

    day, month = _Spent(), _Spent()
    start = today.replace(day=1).isoformat()
    for job in jobs:
        created = job.created_at[:10]
        if created < start or created > today.isoformat():
            continue
        if job.credits is not None:
            amount = float(job.credits)
        elif job.state in ACTIVE_STATES and job.estimated_credits is not None:
            amount = float(job.estimated_credits)
        else:
            continue
        month.add(amount, job.inbox, job.model)
        if created == today.isoformat():
            day.add(amount, job.inbox, job.model)
    return day, month


def runway_spending(usage: Mapping[str, Any], today: date) -> tuple[_Spent, _Spent]:
    """Today's and this month's figures of ``POST /v1/organization/usage`` (net of refunds)."""
    day, month = _Spent(), _Spent()
    start = today.replace(day=1).isoformat()
    for row in usage.get("results", []) if isinstance(usage.get("results"), list) else []:
        when = row.get("date") if isinstance(row, dict) else None
        if not isinstance(when, str) or not start <= when <= today.isoformat():
            continue
        for used in row.get("usedCredits", []) or []:
            amount = used.get("amount") if isinstance(used, dict) else None
            if not isinstance(amount, int | float):
                continue
            model = str(used.get("model"))
            month.add(float(amount), None, model)
            if when == today.isoformat():
                day.add(float(amount), None, model)
    return day, month


def credits_command(*, config_file: str | None = None, as_json: bool = False, out: TextIO | None = None,
                    err: TextIO | None = None, env: Mapping[str, str] = os.environ,
                    now: datetime | None = None) -> int:
    """``runwatch credits``: 0 when Runway answered, 1 when it did not."""
    import httpx

    from runwatch.api import RunwayClient
    from runwatch.config import load_api_key
    from runwatch.errors import ApiError, ApiStatusError
    from runwatch.journal import Journal

    out = out or sys.stdout
    err = err or sys.stderr
    config = _load_config(config_file, env)
    api_key = load_api_key(config, env)
    today = (now or datetime.now(UTC)).date()
    with httpx.Client(timeout=httpx.Timeout(config.runway.timeout, connect=10.0)) as http:
        api = RunwayClient(http, base_url=config.runway.base_url, api_key=api_key, version=config.runway.api_version,
                           max_attempts=3)
        try:
            org = api.organization()
        except ApiError as exc:
            refused = isinstance(exc, ApiStatusError) and exc.status == 401
            err.write(f"runwatch credits: {'the API key was refused' if refused else 'Runway did not answer'}: "
                      f"{exc}\n")
            return EXIT_FAILURE
        usage_error = None
        try:
            usage = api.usage(start=today.replace(day=1).isoformat(), before=(today + timedelta(days=1)).isoformat())
        except ApiError as exc:  # the balance is still worth showing
            usage, usage_error = {}, str(exc)
    path = config.state.dir / "journal.sqlite3"
    jobs: list[Job] = []
    if path.exists():  # a read-only look: no state folder is made for it
        journal = Journal(path)
        try:
            jobs = journal.jobs(limit=1_000_000)
        finally:
            journal.close()
    ours = journal_spending(jobs, today)
    theirs = runway_spending(usage, today)
    models = _model_limits(org)
    report = {
        "date": today.isoformat(), "balance": org.get("creditBalance"),
        "tier": {"maxMonthlyCreditSpend": _dict(org.get("tier")).get("maxMonthlyCreditSpend")},
        "models": models,
        "spending": {"journal": {"today": ours[0].to_json(), "month": ours[1].to_json()},
                     "runway": None if usage_error else {"today": theirs[0].to_json(), "month": theirs[1].to_json()}},
        "usage_error": usage_error,
    }
    if as_json:
        out.write(json.dumps(report, indent=2) + "\n")
    else:
        _credits_report(report, ours, None if usage_error else theirs, usage_error, out)
    return EXIT_OK


def _model_limits(org: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per model: limits and the rolling day's count, for models with a limit or some use."""
    limits = _dict(_dict(org.get("tier")).get("models"))
    used = _dict(_dict(org.get("usage")).get("models"))
    rows = []
    for model in sorted(set(limits) | set(used)):
        lim = _dict(limits.get(model))
        concurrency, daily = lim.get("maxConcurrentGenerations"), lim.get("maxDailyGenerations")
        count = _dict(used.get(model)).get("dailyGenerations")
        count = count if isinstance(count, int) else 0
        if concurrency is None and daily is None and not count:
            continue
        remaining = max(0, daily - count) if isinstance(daily, int) else None
        rows.append({"model": model, "maxConcurrentGenerations": concurrency, "maxDailyGenerations": daily,
                     "dailyGenerations": count, "remaining": remaining})
    return rows


def _dict(value: Any) -> dict[str, Any]:
    """A JSON object from Runway, or an empty one for anything else (an odd answer never crashes a report)."""
    return value if isinstance(value, dict) else {}


def _credits_report(report: Mapping[str, Any], ours: tuple[_Spent, _Spent], theirs: tuple[_Spent, _Spent] | None,
                    usage_error: str | None, out: TextIO) -> None:
    balance, cap = report["balance"], report["tier"]["maxMonthlyCreditSpend"]
    out.write(f"balance: {_amount(balance) if isinstance(balance, int | float) else 'unknown'} credits\n")
    if isinstance(cap, int | float):
        out.write(f"tier: up to {_amount(cap)} credits a month (maxMonthlyCreditSpend)\n")

    def limit(value: Any) -> str:
        return _amount(value) if isinstance(value, int | float) else "no limit"

    out.write("\n")
    rows = [["MODEL", "CONCURRENT", "DAILY LIMIT", "USED (24 H)", "LEFT"]]
    # Unused models sharing the same limits (the usual tier) take one row, so the used ones stand out.
    idle: dict[tuple[Any, Any], list[str]] = {}
    for m in report["models"]:
        if not m["dailyGenerations"]:
            idle.setdefault((m["maxConcurrentGenerations"], m["maxDailyGenerations"]), []).append(m["model"])
    for m in report["models"]:
        group = idle.get((m["maxConcurrentGenerations"], m["maxDailyGenerations"]), [])
        if not m["dailyGenerations"] and len(group) > 3:
            continue
        rows.append([m["model"], limit(m["maxConcurrentGenerations"]), limit(m["maxDailyGenerations"]),
                     _amount(m["dailyGenerations"]), "" if m["remaining"] is None else _amount(m["remaining"])])
    for (concurrency, daily), names in idle.items():
        if len(names) > 3:
            rows.append([f"({len(names)} other models)", limit(concurrency), limit(daily), "0",
                         "" if daily is None else _amount(daily)])
    _table(rows, out)

    def cell(spent: _Spent | None, model: str | None) -> str:
        if spent is None:
            return "-"
        value = spent.total if model is None else spent.by_model.get(model)
        return "" if value is None else _amount(round(value, 2))

    out.write(f"\nspent on {report['date']} (UTC) and since the 1st: runwatch's journal beside Runway's usage\n")
    names = sorted(set(ours[1].by_model) | (set(theirs[1].by_model) if theirs else set()))
    rows = [["MODEL", "TODAY", "TODAY (RUNWAY)", "MONTH", "MONTH (RUNWAY)"]]
    for model in [None, *names]:
        rows.append([model or "total", cell(ours[0], model), cell(theirs[0] if theirs else None, model),
                     cell(ours[1], model), cell(theirs[1] if theirs else None, model)])
    _table(rows, out)
    if usage_error:
        out.write(f"Runway's usage report is unavailable: {usage_error}\n")
    inboxes = sorted(ours[1].by_inbox)
    if inboxes:
        out.write("\n")
        rows = [["INBOX", "TODAY", "MONTH"]]
        rows += [[name, _amount(round(ours[0].by_inbox.get(name, 0.0), 2)),
                  _amount(round(ours[1].by_inbox[name], 2))] for name in inboxes]
        _table(rows, out)
