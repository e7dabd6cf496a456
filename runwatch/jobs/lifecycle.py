"""The lifecycle's decisions as pure functions: an answer goes in, an outcome comes out.

No threads, no clock, no I/O: the daemon's engine and ``runwatch submit`` both ask these, so a job's way
cannot differ between them. Each outcome says what to do; the caller does it (the engine through its book,
``submit`` in its own loop).

| what happened | outcomes |
| --- | --- |
| a create failed (:func:`after_create_failure`) | back-off, hold, refuse, fail; ``needs_attention`` if it may exist |
| media could not be placed (:func:`after_place_failure`) | back-off or fail |
| a task GET answered (:func:`after_poll`) | wait, download, end with Runway's cost, or look again |
| a task GET failed (:func:`after_poll_failure`) | look again later, or end when the task is gone |
| a download failed (:func:`after_download_failure`) | look again later, or fail |
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runwatch.api import create_may_be_retried
from runwatch.catalog import format_path
from runwatch.errors import ApiError, ApiStatusError, IntentNotRecorded, RateLimitedError, UploadError
from runwatch.jobs.states import State

__all__ = [
    "MAX_ATTEMPTS",
    "Download",
    "Finish",
    "Hold",
    "LookAgain",
    "Outcome",
    "RetryLater",
    "Wait",
    "after_create_failure",
    "after_download_failure",
    "after_place_failure",
    "after_poll",
    "after_poll_failure",
    "backoff",
    "issue_path",
    "unconfirmed_error",
]

MAX_ATTEMPTS = 8  # uploads or refused-before-sending creates, before the request fails
DAILY_LIMIT_WAIT = 1800.0  # seconds a model rests after Runway's daily-limit 429
CREDITS_WAIT = 300.0  # seconds before a create refused for credits is tried again
DOWNLOAD_TRIES = 8  # failed downloads of one task's outputs before it fails
EMPTY_SUCCESS_TRIES = 3  # SUCCEEDED answers without a usable output before the task counts as failed
_WAITING = {"THROTTLED": State.THROTTLED, "PENDING": State.PENDING, "RUNNING": State.RUNNING}


@dataclass(frozen=True)
class Finish:
    """End the job in ``state``. ``credits`` is Runway's final cost when it reported one."""

    state: State
    error: dict[str, Any] | None = None
    credits: float | None = None
    surely_not_created: bool = True  # False only for needs_attention: the intent stays recorded


@dataclass(frozen=True)
class Hold:
    """Not sent now: hold the request with this reason and look again after ``wait`` seconds."""

    code: str
    message: str
    wait: float
    pause_model: bool = False  # Runway's daily limit: the model rests, other models go on


@dataclass(frozen=True)
class RetryLater:
    """Nothing reached Runway: back to ``accepted`` after ``delay`` seconds (the ``attempts`` so far)."""

    delay: float
    attempts: int
    message: str


@dataclass(frozen=True)
class Wait:
    """The task waits or runs at Runway: show ``state`` and ``progress`` (0 to 1, or None)."""

    state: State
    progress: float | None


@dataclass(frozen=True)
class Download:
    """The task succeeded: fetch ``urls``. ``credits`` is Runway's final cost."""

    urls: tuple[str, ...]
    credits: float | None


@dataclass(frozen=True)
class LookAgain:
    """Ask Runway again in ``delay`` seconds (``None``: at the usual interval)."""

    delay: float | None = None
    note: str = ""
    empty_success: bool = False  # Runway said SUCCEEDED but named no output: counted toward giving up


Outcome = Finish | Hold | RetryLater | Wait | Download | LookAgain


def backoff(attempts: int) -> float:
    """Seconds before attempt ``attempts + 1`` of something that surely did nothing (2, 4, 8 … 300)."""
    return min(300.0, 2.0**attempts)


def unconfirmed_error(detail: str = "", *, resend: str = "`runwatch retry NAME`") -> dict[str, Any]:
    """The error of a create that may have made a task whose id was never recorded."""
    message = (
        "the create may have made a task at Runway (the task may exist), but no task id was recorded; it was not "
        f"sent again so no credit is spent twice. Check the task list at Runway, then {resend} to submit it on "
        "purpose."
    )
    return {"code": "create_unconfirmed", "message": f"{message} ({detail})" if detail else message}


def issue_path(path: Any) -> str:
    """Runway's issue path (a list of keys and indexes) as a dotted path."""
    if not isinstance(path, list):
        return ""
    return format_path([p if isinstance(p, int) else str(p) for p in path])


def after_create_failure(error: BaseException, *, attempts: int, model: str | None) -> Finish | Hold | RetryLater:
    """A create gave no task id (the API client has retried already). ``attempts``: creates tried so far."""
    if isinstance(error, IntentNotRecorded):  # nothing left: back off until the journal can be written again
        return RetryLater(backoff(min(attempts, 6)), attempts, str(error))
    if isinstance(error, ApiError) and create_may_be_retried(error):
        if attempts >= MAX_ATTEMPTS:
            return Finish(State.FAILED, {"code": "create_failed", "message": f"Runway did not take it: {error}"})
        return RetryLater(backoff(attempts), attempts, str(error))
    if isinstance(error, RateLimitedError) and error.daily:
        # Our count missed creates made elsewhere (another key, the web app): trust Runway, look later.
        message = (
            f"Runway's daily task limit for {model} is reached; trying again in "
            f"{DAILY_LIMIT_WAIT / 60:.0f} minutes (other models go on)"
        )
        return Hold("429", message, DAILY_LIMIT_WAIT, pause_model=True)
    if isinstance(error, ApiStatusError) and error.status < 500:
        message = str(error.body.get("error") if isinstance(error.body, dict) else error.body)
        if error.status == 400 and "enough credits" in message:
            return Hold("400", f"{message} Trying again in {CREDITS_WAIT / 60:.0f} minutes.", CREDITS_WAIT)
        issues = [{"path": issue_path(i.get("path")), "message": str(i.get("message"))} for i in error.issues]
        state = State.REJECTED if error.status == 400 and issues else State.FAILED
        return Finish(state, {"code": str(error.status), "message": message, "issues": issues})
    # A timeout, a dropped connection after sending, a 5xx, a crash of ours: the task may exist.
    return Finish(State.NEEDS_ATTENTION, unconfirmed_error(str(error)), surely_not_created=False)


def after_place_failure(error: BaseException, *, attempts: int) -> Finish | RetryLater:
    """Media could not be placed; ``attempts`` counts this one. Nothing reached Runway's task endpoints."""
    retryable = (isinstance(error, UploadError) and error.retryable) or isinstance(error, ApiError)
    if not retryable or attempts >= MAX_ATTEMPTS:
        code = error.code if isinstance(error, UploadError) else "upload_failed"  # e.g. media_changed
        return Finish(State.FAILED, {"code": code, "message": str(error)})
    return RetryLater(backoff(attempts), attempts, str(error))


def _credits(task: Mapping[str, Any]) -> float | None:
    cost = task.get("cost")
    credits = cost.get("credits") if isinstance(cost, dict) else None
    if isinstance(credits, bool) or not isinstance(credits, int | float) or not math.isfinite(credits):
        return None
    return float(credits)


def _progress(value: Any) -> float | None:
    """Runway's progress, clamped to 0–1; anything that is not a finite number is no progress at all."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return min(1.0, max(0.0, float(value)))


def after_poll(task: Mapping[str, Any], *, empty_successes: int = 0) -> Outcome:
    """What a task GET's answer means. ``empty_successes``: SUCCEEDED answers without outputs seen before."""
    status = str(task.get("status"))
    if status in _WAITING:
        return Wait(_WAITING[status], _progress(task.get("progress")) if status == "RUNNING" else None)
    if status == "SUCCEEDED":
        output = task.get("output")
        urls = tuple(u for u in output if isinstance(u, str) and u) if isinstance(output, list) else ()
        if urls:
            return Download(urls, _credits(task))
        if empty_successes + 1 >= EMPTY_SUCCESS_TRIES:
            return Finish(
                State.FAILED,
                {"code": "no_outputs", "message": "Runway reported the task succeeded but named no output"},
                credits=_credits(task),
            )
        return LookAgain(note="the task succeeded without outputs; asking again", empty_success=True)
    if status == "FAILED":
        error = {
            "code": str(task.get("failureCode") or "FAILED"),
            "message": str(task.get("failure") or "the task failed at Runway"),
        }
        return Finish(State.FAILED, error, credits=_credits(task))
    if status == "CANCELLED":
        return Finish(State.CANCELLED, credits=_credits(task))
    return LookAgain(note=f"unknown status {status!r}")


def after_poll_failure(
    error: BaseException, *, failures: int, interval: float, cancel_requested: bool
) -> Finish | LookAgain:
    """A task GET failed (after the client's own retries); ``failures`` counts this one."""
    if isinstance(error, ApiStatusError) and error.status == 404:
        if cancel_requested:
            return Finish(State.CANCELLED)
        return Finish(State.FAILED, {"code": "404", "message": "the task no longer exists at Runway"})
    return LookAgain(min(300.0, interval * 2 ** min(failures, 6)), note=str(error))


def after_download_failure(error: BaseException, *, failures: int) -> Finish | LookAgain:
    """Outputs could not all be fetched; ``failures`` counts this one, across polls."""
    if failures > DOWNLOAD_TRIES:
        return Finish(State.FAILED, {"code": "download_failed", "message": str(error)})
    return LookAgain(min(300.0, 2.0**failures), note=str(error))
