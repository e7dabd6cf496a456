"""The one exception tree of runwatch.

Foreign exceptions (httpx, botocore, tomllib, json, OSError) are translated into
these at the edge where they happen, with ``raise ... from exc``; every message (and an API error's body)
is redacted as the error is made::

    RunwatchError
    ├── ConfigError(path, problems)        configuration file or options; ``summary`` heads the problems
    ├── CatalogError                       the model catalogue / price data files
    ├── RequestError(path, problems)       a request file that cannot be used (incomplete: maybe still being written)
    ├── ApiError                           talking to Runway
    │   ├── ApiConnectionError(sent)       no answer; ``sent`` says whether the request may have reached Runway
    │   ├── ApiStatusError(status, body)   Runway answered with an error status
    │   │   └── RateLimitedError           429; ``daily`` for the daily task limit, ``retry_after`` when hinted
    │   └── CreateUnconfirmedError         a create that may have made a task: never sent again by itself
    ├── UploadError(retryable)             putting media where Runway can fetch it (S3, Runway uploads, data URIs)
    │   └── MediaChangedError              a local media file is no longer the one checked (replaced, or now a link)
    ├── OutboxError                        writing outputs or status files
    ├── JournalError                       the state database
    │   ├── JournalUnwritable              a write refused by the disk (full, read-only, failing) or a lost
    │   │                                  database connection: worth retrying
    │   └── LeaseLost                      a job's lease ran out or passed to another node: not this node's to send
    ├── IntentNotRecorded                  a create's intent could not be recorded, so it was not sent
    │   └── MoneyHeld(code, reason)        ...because every node's spending together does not allow it now
    ├── StartupError                       the daemon cannot start (state dir, lock, journal): one line, exit 78
    ├── IllegalTransition                  a job moved where the state table does not allow (a bug)
    ├── InboxError                         an inbox folder that cannot be watched or claimed from
    ├── SimulatorError                     the local Runway API simulator
    └── UsageError                         a command line that makes no sense
"""

from __future__ import annotations

from dataclasses import dataclass

from runwatch.redact import redact, redact_text


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input, located by a dotted/indexed path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@dataclass(frozen=True)
class MissingKey(Problem):
    """A required key that is not there; ``path`` names the table it belongs in, as the file writes it."""


class RunwatchError(Exception):
    """Root of every error runwatch raises on purpose.

    Its message is redacted as it is made: messages quote text from outside (Runway's error bodies, boto3's
    and httpx's messages) that may hold a presigned URL's signature or an access key id, and nothing that
    stores or prints an error (the journal, ``runwatch status``) should have to remember to redact it.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact_text(arg) if isinstance(arg, str) else arg for arg in args))


class ConfigError(RunwatchError):
    """The configuration is unusable; names the file and every problem."""

    def __init__(self, path: str, problems: list[Problem], summary: str = "invalid configuration") -> None:
        self.path = path
        self.problems = problems
        self.summary = summary
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: {summary}\n{lines}")


class CatalogError(RunwatchError):
    """The shipped model catalogue or price data is missing or malformed."""


class RequestError(RunwatchError):
    """A request file cannot be used; names the file and every problem.

    ``incomplete`` marks a file that could not even be parsed: on a share it may still be being written,
    so the inbox waits for it to settle before rejecting it. ``endpoint`` and ``model`` are what the request
    named, when they could be read (the endpoint only when it is one runwatch knows), for its status file.
    """

    def __init__(
        self,
        path: str,
        problems: list[Problem],
        *,
        incomplete: bool = False,
        endpoint: str | None = None,
        model: str | None = None,
    ) -> None:
        self.path = path
        self.problems = problems
        self.incomplete = incomplete
        self.endpoint = endpoint
        self.model = model
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: invalid request\n{lines}")


class ApiError(RunwatchError):
    """Talking to the Runway API failed."""


class ApiConnectionError(ApiError):
    """No answer came. ``sent`` is False only when the request surely never reached Runway
    (the connection could not be made), which is the one case a create may be sent again."""

    def __init__(self, message: str, *, sent: bool) -> None:
        self.sent = sent
        super().__init__(message)


class ApiStatusError(ApiError):
    """Runway answered with an error status; ``body`` is its parsed JSON (or text)."""

    def __init__(self, status: int, body: object, message: str | None = None) -> None:
        self.status = status
        body = redact(body)  # Runway's error text may quote a presigned URL: redacted before anyone reads it
        self.body = body
        text = body.get("error") if isinstance(body, dict) else None
        super().__init__(message or f"HTTP {status}: {text or body!r}")

    @property
    def issues(self) -> list[dict[str, object]]:
        issues = self.body.get("issues") if isinstance(self.body, dict) else None
        return [i for i in issues if isinstance(i, dict)] if isinstance(issues, list) else []


class RateLimitedError(ApiStatusError):
    """429. ``daily`` when Runway says the daily task limit is reached (it will not clear soon)."""

    def __init__(self, status: int, body: object, *, daily: bool, retry_after: float | None) -> None:
        self.daily = daily
        self.retry_after = retry_after
        super().__init__(status, body)


class CreateUnconfirmedError(ApiError):
    """A create whose task may exist at Runway: a 5xx or gateway answer, a success without a readable task id
    (an HTML page from a proxy), or no answer after the request went out. Nothing proves Runway made no task,
    so it is never sent again by itself; the message says so."""


class UploadError(RunwatchError):
    """Media could not be put where Runway can fetch it. ``retryable`` for passing trouble; ``code`` is the
    error code a job that fails this way shows in its status file."""

    code = "upload_failed"

    def __init__(self, message: str, *, retryable: bool) -> None:
        self.retryable = retryable
        super().__init__(message)


class MediaChangedError(UploadError):
    """A local media file is not the file that was checked: replaced, moved, or made a symbolic link since.

    Nothing of it was sent, and trying again will not help: the request is checked once, at its claim.
    """

    code = "media_changed"

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class OutboxError(RunwatchError):
    """Outputs or a status file could not be written."""


class JournalError(RunwatchError):
    """The journal (the state database) cannot be opened or used."""


class JournalUnwritable(JournalError):
    """The journal could not be read or written for a reason outside it: a full, read-only or failing disk, or a
    lock held too long. The same write may succeed later."""


class LeaseLost(JournalError):
    """This node no longer holds the job's lease (it ran out, or another node took the job over): the node must
    not send a create for it."""


class InboxError(RunwatchError):
    """An inbox cannot be watched, scanned or claimed from."""


class SimulatorError(RunwatchError):
    """The simulator could not start or was misconfigured."""


class UsageError(RunwatchError):
    """A command line that cannot be carried out as given."""


class IntentNotRecorded(RunwatchError):
    """The intent of a create could not be recorded (journal or work area unwritable): it was not sent."""


class MoneyHeld(IntentNotRecorded):
    """A journal shared by several nodes refused the intent: with every node's spending, a budget, the balance
    or one of Runway's limits does not allow this create now. ``code`` and ``reason`` are the hold's, as the
    node's own guard words them."""

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(reason)


class TaskNamedAlready(IntentNotRecorded):
    """The journal names a task for this job already: a second create for it is never sent. The engine then
    follows ``task_id``, as a restart would."""

    def __init__(self, job_id: str, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"the journal names task {task_id} for job {job_id} already: no second create is sent")


class StartupError(RunwatchError):
    """The daemon cannot start: names the path and the fix; the command line exits 78 with this one line."""
