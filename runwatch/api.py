"""The Runway API client, on an ``httpx.Client`` handed in by the caller (the one test seam).

Money rule, in one place: a failed create is *possibly made* unless the answer proves otherwise
(:func:`create_possibly_made`). Proof that no task was made is only: the connection could not be made (nothing
was sent), or Runway answered 4xx (it refused the request, a 429 included). Everything else may have made a
task: a 500/502/503/504 (a gateway answers those after Runway made the task too), a success whose body holds
no readable task id (an HTML page from a proxy), a timeout or a dropped connection after the request went out.
Those raise :class:`CreateUnconfirmedError`, whose message says the task may exist, and the caller parks the
request in ``needs_attention`` instead of paying twice. :func:`create_may_be_retried` picks, among the proofs,
what is worth sending again at once: a connection that could not be made, a 429 that is not the daily limit.
Reads (GET, DELETE) are retried freely, 5xx included.

httpx exceptions never leave this module; they become the ``ApiError`` tree of ``runwatch.errors``.
"""

from __future__ import annotations

import contextlib
import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from runwatch import __version__
from runwatch.errors import ApiConnectionError, ApiError, ApiStatusError, CreateUnconfirmedError, RateLimitedError
from runwatch.redact import redact_text

__all__ = [
    "ApiCall",
    "Created",
    "RunwayClient",
    "UploadTarget",
    "backoff_delay",
    "create_may_be_retried",
    "create_possibly_made",
    "parse_retry_after",
]

DAILY_LIMIT_TEXT = "daily task limit"
MAY_EXIST = "the task may exist at Runway"
# Exceptions raised before a single byte of the request left: safe to send again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


@dataclass(frozen=True)
class Created:
    id: str
    estimated_credits: float | None


@dataclass(frozen=True)
class ApiCall:
    """One request to Runway as an observer hears of it (for metrics): no URL, header or body."""

    method: str
    route: str  # the path with ids replaced: "/v1/tasks/{id}"
    status: int  # 0: no HTTP answer (the connection failed, or no answer came in time)
    seconds: float
    sent: bool  # False: the request surely did not leave (the connection could not be made)
    model: str | None = None  # for a create: the model asked for


@dataclass(frozen=True)
class UploadTarget:
    upload_url: str
    fields: Mapping[str, str]
    runway_uri: str


def backoff_delay(attempt: int, retry_after: float | None, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): Retry-After when given (capped at
    5 minutes), else exponential from 0.5 s, capped at 30 s, with up to 50 % jitter as Runway advises."""
    if retry_after is not None and retry_after >= 0:
        return float(min(retry_after, 300.0))
    base = min(0.5 * 2.0 ** (attempt - 1), 30.0)
    return base * (1 - 0.5 * rng())


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date) as seconds; None when absent."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


def create_possibly_made(error: ApiError) -> bool:
    """Whether a failed create may have made a task at Runway: yes, unless the answer proves it did not."""
    if isinstance(error, ApiConnectionError):
        return error.sent
    if isinstance(error, ApiStatusError):
        return not 400 <= error.status < 500  # Runway refused the request itself (a 429 too): no task
    return True


def create_may_be_retried(error: ApiError) -> bool:
    """Whether a failed create is sent again at once: nothing can have reached Runway as a task, and another
    attempt may get through (not so for the daily limit, nor for a 4xx that would only be refused again)."""
    if create_possibly_made(error):
        return False
    if isinstance(error, RateLimitedError):
        return not error.daily  # the daily limit will not clear in a retry loop
    return isinstance(error, ApiConnectionError)


def _read_may_be_retried(error: ApiError) -> bool:
    if isinstance(error, ApiConnectionError):
        return True
    if isinstance(error, RateLimitedError):
        return not error.daily
    return isinstance(error, ApiStatusError) and error.status >= 500


class RunwayClient:
    """Typed calls to the Runway API. Thread-safe as long as the ``httpx.Client`` is (it is)."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        base_url: str,
        api_key: str,
        version: str = "2024-11-06",
        max_attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "X-Runway-Version": version,
            "Accept": "application/json",
            "User-Agent": f"runwatch/{__version__}",
        }
        self.max_attempts = max(1, max_attempts)
        # Told of every request once it has ended, on the calling thread; it must only note and return.
        self.observer: Callable[[ApiCall], None] | None = None
        self._sleep = sleep
        self._rng = rng

    # -- one request, translated ------------------------------------------------------------------

    def _once(self, method: str, path: str, body: Any = None) -> httpx.Response:
        url = self._base + path
        started = time.monotonic()
        try:
            if body is None:
                response = self._http.request(method, url, headers=self._headers)
            else:
                response = self._http.request(method, url, headers=self._headers, json=body)
        except _NOT_SENT as exc:
            self._observe(method, path, body, 0, started, sent=False)
            raise ApiConnectionError(f"{method} {path}: cannot connect: {exc}", sent=False) from exc
        except httpx.TimeoutException as exc:
            self._observe(method, path, body, 0, started)
            raise ApiConnectionError(f"{method} {path}: no answer in time ({type(exc).__name__})", sent=True) from exc
        except httpx.HTTPError as exc:
            self._observe(method, path, body, 0, started)
            raise ApiConnectionError(f"{method} {path}: connection failed: {type(exc).__name__}", sent=True) from exc
        self._observe(method, path, body, response.status_code, started)
        if response.status_code >= 400:
            raise _status_error(response)
        return response

    def _observe(self, method: str, path: str, body: Any, status: int, started: float, sent: bool = True) -> None:
        if self.observer is None:
            return
        route = "/v1/tasks/{id}" if path.startswith("/v1/tasks/") else path
        model = body.get("model") if isinstance(body, dict) and method == "POST" else None
        model = model if isinstance(model, str) else None
        call = ApiCall(method, route, status, time.monotonic() - started, sent, model)
        with contextlib.suppress(Exception):  # an observer's bug must never change what a call did
            self.observer(call)

    def _retrying(
        self,
        method: str,
        path: str,
        body: Any,
        may_retry: Callable[[ApiError], bool],
        before_send: Callable[[], None] | None = None,
        not_sent: Callable[[], None] | None = None,
    ) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            if before_send is not None:
                before_send()
            try:
                return self._once(method, path, body)
            except ApiError as exc:
                if not may_retry(exc):
                    raise
                if not_sent is not None:
                    not_sent()  # proven not created: a crash while we wait must not look like a lost create
                if attempt >= self.max_attempts:
                    raise
                retry_after = exc.retry_after if isinstance(exc, RateLimitedError) else None
                self._sleep(backoff_delay(attempt, retry_after, self._rng))

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise ApiStatusError(
                response.status_code, response.text, "Runway answered with a body that is not JSON"
            ) from exc

    # -- the calls --------------------------------------------------------------------------------

    def create_task(
        self,
        endpoint: str,
        body: Mapping[str, Any],
        before_send: Callable[[], None] | None = None,
        not_sent: Callable[[], None] | None = None,
    ) -> Created:
        """POST /v1/{endpoint}. Retried only while no task can have been made (see module doc); any failure
        that may have made one raises :class:`CreateUnconfirmedError`.

        ``before_send`` runs before every attempt (the caller records its intent durably there) and
        ``not_sent`` after every answer that proves no task was created (the caller clears the intent), so a
        crash during a backoff is never mistaken for a create whose answer was lost.
        """
        path = f"/v1/{endpoint}"
        try:
            response = self._retrying("POST", path, dict(body), create_may_be_retried, before_send, not_sent)
        except ApiError as exc:
            if not create_possibly_made(exc):
                raise
            detail = str(exc).removeprefix(f"POST {path}: ")
            raise CreateUnconfirmedError(f"POST {path}: {detail}; {MAY_EXIST}") from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        task_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not task_id:
            # A success without a task we can name: Runway, or a proxy before it, may have made one.
            raise CreateUnconfirmedError(
                f"POST {path}: HTTP {response.status_code} without a task id ({_excerpt(response)}); {MAY_EXIST}"
            )
        cost = data.get("estimatedCost") if isinstance(data, dict) else None
        credits = cost.get("credits") if isinstance(cost, dict) else None
        return Created(task_id, float(credits) if isinstance(credits, int | float) else None)

    def get_task(self, task_id: str) -> dict[str, Any]:
        data = self._json(self._retrying("GET", f"/v1/tasks/{task_id}", None, _read_may_be_retried))
        if not isinstance(data, dict) or "status" not in data:
            raise ApiStatusError(200, data, f"task {task_id}: answer without a status")
        if isinstance(data.get("failure"), str):  # Runway's words, stored and shown: may quote a signed URL
            data["failure"] = redact_text(data["failure"])
        return data

    def delete_task(self, task_id: str) -> None:
        self._retrying("DELETE", f"/v1/tasks/{task_id}", None, _read_may_be_retried)

    def organization(self) -> dict[str, Any]:
        data = self._json(self._retrying("GET", "/v1/organization", None, _read_may_be_retried))
        return data if isinstance(data, dict) else {}

    def usage(self, start: str | None = None, before: str | None = None) -> dict[str, Any]:
        body = {k: v for k, v in (("startDate", start), ("beforeDate", before)) if v}
        data = self._json(self._retrying("POST", "/v1/organization/usage", body, _read_may_be_retried))
        return data if isinstance(data, dict) else {}

    def create_upload(self, filename: str) -> UploadTarget:
        """POST /v1/uploads: where to send the file. Creating an upload slot costs nothing, so it is retried."""
        response = self._retrying(
            "POST", "/v1/uploads", {"filename": filename, "type": "ephemeral"}, _read_may_be_retried
        )
        data = self._json(response)
        try:
            return UploadTarget(
                str(data["uploadUrl"]), {str(k): str(v) for k, v in data["fields"].items()}, str(data["runwayUri"])
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ApiStatusError(200, data, "POST /v1/uploads: answer without uploadUrl/fields/runwayUri") from exc


def _excerpt(response: httpx.Response, limit: int = 120) -> str:
    """What an unexpected answer was, for a person: its type and the start of its text, on one line."""
    kind = response.headers.get("content-type", "no content type").split(";", 1)[0].strip()
    text = " ".join(response.text[: limit * 4].split())
    shown = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"{kind}: {shown!r}" if shown else f"{kind}, empty"


def _status_error(response: httpx.Response) -> ApiStatusError:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:2000]
    if response.status_code == 429:
        text = body.get("error", "") if isinstance(body, dict) else str(body)
        return RateLimitedError(
            429, body, daily=DAILY_LIMIT_TEXT in str(text).lower(), retry_after=parse_retry_after(response.headers)
        )
    return ApiStatusError(response.status_code, body)
