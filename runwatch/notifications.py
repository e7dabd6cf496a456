"""Notifications ([[notify]]): a job's end, a hold, a budget nearly or fully spent, an inbox paused, told to a
webhook or through Apprise, without ever slowing the engine.

(Not to be confused with :mod:`runwatch.notify`, the systemd ``sd_notify`` client.)

The engine's book tells :meth:`Notifier.job_changed` of every state a job enters, on the engine's thread: it
builds the message (the event plus the job's status document, redacted) and puts it on each target's queue, and
returns. Each target has its own worker thread and bounded queue, so a slow or dead receiver delays only its own
messages; a full queue drops its oldest message, with a log line and a count. A send that fails on a 5xx, a 429,
a timeout or a connection error is tried again after 1, 2, 4 … seconds, a bounded number of times; every failure
is logged and counted per event (:meth:`Notifier.tallies`, which the metrics read at each scrape).

Webhooks are a JSON POST signed as :mod:`runwatch.webhook` says; Apprise URLs go through the ``apprise`` library
(the ``runwatch[notify]`` extra). Budgets are looked at when a job's spending may have moved; each threshold
(80 % and 100 % of the daily, monthly and each inbox's daily budget) is told once per UTC day or month, and
thresholds already passed when the daemon starts are not told again. Inboxes are looked at once a second for a
pause (a missing or unusable folder).
"""

from __future__ import annotations

import collections
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import httpx

from runwatch import __version__
from runwatch.clock import now_iso
from runwatch.config import WEBHOOK_CREDENTIAL_NAME, BudgetConfig, InboxConfig, NotifyConfig
from runwatch.errors import ConfigError, Problem, RunwatchError
from runwatch.jobs.job import Job
from runwatch.jobs.states import State
from runwatch.outbox import status_document
from runwatch.redact import REDACTED, redact
from runwatch.webhook import APPRISE_HTTP_SCHEMES, SIGNATURE_HEADER, ForbiddenAddress, Pinned, pinned, sign

if TYPE_CHECKING:
    from runwatch.budget import Spent
    from runwatch.jobs.engine import Engine

__all__ = ["OUTCOMES", "Notification", "Notifier", "Tally", "Target", "load_secret"]

QUEUE_SIZE: Final = 100  # messages waiting per target; more drops the oldest
ATTEMPTS: Final = 4  # sends of one message, the first included
BACKOFF: Final = 1.0  # seconds before the second attempt, doubled for each further one
TIMEOUT: Final = 10.0  # seconds one attempt may take
DRAIN: Final = 5.0  # seconds a stopping daemon waits for messages still queued
INBOX_LOOK: Final = 1.0  # seconds between looks for a paused inbox
THRESHOLDS: Final = (100, 80)  # percent of a budget, highest first
MIN_SECRET: Final = 16  # bytes of a webhook secret: a shorter one is guessable (and would be scrubbed from any text)
# What became of a message, each counted once per message; "retried" (an attempt that failed and is tried again)
# is counted besides, per attempt.
OUTCOMES: Final = ("sent", "failed", "refused", "dropped")

_JOB_EVENTS: Final = {
    State.SUCCEEDED: "succeeded",
    State.FAILED: "failed",
    State.CANCELLED: "cancelled",
    State.REJECTED: "rejected",
    State.NEEDS_ATTENTION: "needs_attention",
    State.HELD: "held",
}
# States entered when a job's spending may have moved: its estimate starts counting, or its cost is known.
_MONEY_STATES: Final = frozenset(
    {State.UPLOADING, State.SUBMITTED, State.DOWNLOADING, State.SUCCEEDED, State.FAILED, State.CANCELLED}
    | {State.NEEDS_ATTENTION}
)
_RETRY_STATUS: Final = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Notification:
    """One message, already redacted: a title and text for people, a JSON body for programs."""

    event: str
    title: str
    text: str
    body: bytes
    delivery: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class Tally:
    """One target's counts, as the metrics show them: named by its place and kind, never by its URL."""

    index: int  # its place among the [[notify]] sections
    kind: str  # webhook or apprise
    events: tuple[str, ...]  # the events it is told
    counts: Mapping[tuple[str, str], int]  # (event, outcome or "retried") -> how many


class _Retry(RunwatchError):
    """A failed attempt worth another one (5xx, timeout, no connection)."""


def load_secret(
    config: NotifyConfig, where: str, env: Mapping[str, str] = os.environ, source: str = "runwatch"
) -> bytes | None:
    """A webhook's HMAC secret: its secret_file, else the systemd credential; None for an unsigned webhook.

    A problem is a ConfigError for ``source`` (the config file) at ``where.secret_file``."""
    file: Path | None = config.secret_file
    key = f"{where}.secret_file"
    if file is None and env.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(env["CREDENTIALS_DIRECTORY"]) / WEBHOOK_CREDENTIAL_NAME
        file, key = (
            (candidate, f"$CREDENTIALS_DIRECTORY/{WEBHOOK_CREDENTIAL_NAME}") if candidate.is_file() else (None, key)
        )
    if file is None or not config.webhook:
        return None
    try:
        secret = file.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(source, [Problem(key, f"{file}: cannot read: {exc.strerror or exc}")]) from exc
    if len(secret) < MIN_SECRET:
        raise ConfigError(
            source,
            [Problem(key, f"{file}: a secret of at least {MIN_SECRET} characters is needed (openssl rand -hex 32)")],
        )
    return secret


_HOST_FIRST: Final = frozenset(
    {"http", "https", "json", "jsons", "form", "forms", "xml", "xmls", "ntfy", "ntfys", "gotify", "gotifys"}
    | {"mailto", "mailtos"}
)


def _label(index: int, url: str) -> str:
    """How a target is named in logs and metrics: its place, its scheme and, where the URL starts with one, its
    host; never a path or a user (where Slack, Telegram and the like keep their tokens)."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1] if scheme.lower() in _HOST_FIRST else ""
    return f"notify[{index}] {scheme}://{host}" if host else f"notify[{index}] {scheme}"


class Target:
    """One [[notify]] URL: its queue, its worker thread, its counts."""

    def __init__(
        self,
        config: NotifyConfig,
        secret: bytes | None,
        *,
        log: Any,
        index: int = 0,
        queue_size: int | None = None,
        attempts: int | None = None,
        backoff: float | None = None,
        timeout: float | None = None,
    ) -> None:
        self.config, self.secret, self.label, self.index = config, secret, _label(index, config.url), index
        self.kind = "webhook" if config.webhook else "apprise"
        self.log = log.bind(notify=self.label)
        self.attempts = ATTEMPTS if attempts is None else attempts
        self.backoff = BACKOFF if backoff is None else backoff
        timeout = TIMEOUT if timeout is None else timeout
        self._tally: collections.Counter[tuple[str, str]] = collections.Counter()  # (event, outcome) -> n
        self._tally_lock = threading.Lock()  # the worker and put() count; a scrape reads
        self._queue: collections.deque[Notification] = collections.deque()
        self._size = QUEUE_SIZE if queue_size is None else queue_size
        self._cond = threading.Condition()
        self._busy = False
        self._closing = False
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"runwatch-notify-{index}", daemon=True)
        self._http: httpx.Client | None = None
        self._apprise: Any = None
        if config.webhook:
            self._http = httpx.Client(
                timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)), follow_redirects=False, trust_env=False
            )
        else:
            import apprise  # checked when the config was read

            self._apprise = apprise.Apprise()
            self._apprise.add(config.url)

    def wants(self, event: str) -> bool:
        return event in self.config.events

    def _count(self, event: str, outcome: str, n: int = 1) -> None:
        with self._tally_lock:
            self._tally[event, outcome] += n

    @property
    def counts(self) -> collections.Counter[str]:
        """Messages by outcome, every event together."""
        totals: collections.Counter[str] = collections.Counter()
        for (_, outcome), n in self.tally().items():
            totals[outcome] += n
        return totals

    def tally(self) -> dict[tuple[str, str], int]:
        """A copy of the counts by (event, outcome); any thread."""
        with self._tally_lock:
            return dict(self._tally)

    def start(self) -> None:
        self._thread.start()

    def put(self, message: Notification) -> None:
        """Queue ``message``, dropping the oldest one when the queue is full; never blocks."""
        with self._cond:
            if self._closing:
                return
            if len(self._queue) >= self._size:
                old = self._queue.popleft()
                self._count(old.event, "dropped")
                self.log.warning("notify.dropped", kind=old.event, reason="the queue is full", queued=self._size)
            self._queue.append(message)
            self._cond.notify()

    def close(self, timeout: float) -> None:
        """Send what is queued for up to ``timeout`` seconds, then give up on the rest."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)
            abandoned = list(self._queue)
            self._queue.clear()
        self._abandon.set()
        left = len(abandoned)
        for message in abandoned:
            self._count(message.event, "dropped")
        if left:
            self.log.warning("notify.dropped", messages=left, reason="runwatch is stopping")
        if self._thread.ident is not None:  # started
            self._thread.join(0.5)
        if self._http is not None and not self._thread.is_alive():
            self._http.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue) or self._closing)
                if not self._queue:
                    return
                message = self._queue.popleft()
                self._busy = True
            try:
                self._deliver(message)
            except Exception as exc:  # a bug in one send must not end the worker
                self._count(message.event, "failed")
                self.log.exception("notify.failed", kind=message.event, error=repr(exc))
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _deliver(self, message: Notification) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                self._send(message)
            except ForbiddenAddress as exc:
                self._count(message.event, "refused")
                self.log.error("notify.refused", kind=message.event, error=str(exc))
                return
            except _Retry as exc:
                if attempt == self.attempts or self._abandon.is_set():
                    self._count(message.event, "failed")
                    self.log.error("notify.failed", kind=message.event, attempts=attempt, error=str(exc))
                    return
                self._count(message.event, "retried")
                delay = self.backoff * 2 ** (attempt - 1)
                self.log.warning("notify.retrying", kind=message.event, attempt=attempt, delay=delay, error=str(exc))
                if self._abandon.wait(delay):
                    self._count(message.event, "failed")
                    self.log.error("notify.failed", kind=message.event, attempts=attempt, error="runwatch stopped")
                    return
            except RunwatchError as exc:
                self._count(message.event, "failed")
                self.log.error("notify.failed", kind=message.event, attempts=attempt, error=str(exc))
                return
            else:
                self._count(message.event, "sent")
                self.log.info("notify.sent", kind=message.event, attempts=attempt)
                return

    def _send(self, message: Notification) -> None:
        if self._apprise is not None:
            if self.config.url.split("://", 1)[0].lower() in APPRISE_HTTP_SCHEMES:
                _checked(self.config.url)  # the same refusal as a webhook's (Apprise connects by itself)
            if not self._apprise.notify(title=message.title, body=message.text):
                raise _Retry("Apprise could not deliver the message (see its log lines)")
            return
        assert self._http is not None
        pin = _checked(self.config.url)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"runwatch/{__version__}",
            "Host": pin.host_header,
            "X-Runwatch-Event": message.event,
            "X-Runwatch-Delivery": message.delivery,
        }
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, message.body)  # a fresh timestamp for each attempt
        extensions = {"sni_hostname": pin.sni_hostname} if pin.sni_hostname else None
        try:
            response = self._http.post(pin.url, content=message.body, headers=headers, extensions=extensions)
        except httpx.HTTPError as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code in _RETRY_STATUS:
            raise _Retry(f"the receiver answered {response.status_code}")
        if not 200 <= response.status_code < 300:
            raise RunwatchError(f"the receiver answered {response.status_code}")


def _checked(url: str) -> Pinned:
    """The URL aimed at a checked address; a refused address raises ForbiddenAddress, a failed look-up _Retry."""
    try:
        return pinned(url)
    except ForbiddenAddress:
        raise
    except RunwatchError as exc:  # a name that does not resolve now may later
        raise _Retry(str(exc)) from exc


class _Watched(Protocol):
    """What the notifier reads of an inbox watcher (``paused`` may be read from any thread)."""

    inbox: InboxConfig

    @property
    def paused(self) -> bool: ...


class Notifier:
    """Every [[notify]] target, and what tells them: the book's listener, the budgets and the inboxes."""

    def __init__(
        self,
        configs: Iterable[NotifyConfig],
        *,
        log: Any,
        env: Mapping[str, str] = os.environ,
        secrets: Iterable[str] = (),
        source: str = "runwatch",
        **target_options: Any,
    ) -> None:
        self.log = log
        self.targets = [
            Target(c, load_secret(c, f"notify[{i}]", env, source), log=log, index=i, **target_options)
            for i, c in enumerate(configs)
        ]
        # Exact secrets scrubbed from every message, besides what redact() finds by its shape.
        self._secrets = [
            s
            for s in (*secrets, *(t.secret.decode("utf-8", "replace") for t in self.targets if t.secret))
            if len(s) >= MIN_SECRET
        ]
        self._wanted = frozenset(e for t in self.targets for e in t.config.events)
        self._budgets: _Budgets | None = None
        self._inboxes: Callable[[], Iterable[_Watched]] | None = None
        self._paused: set[str] = set()
        self._stop = threading.Event()
        self._looker: threading.Thread | None = None

    # -- wiring -----------------------------------------------------------------------------------

    def start(self, engine: Engine, watchers: Callable[[], Iterable[_Watched]]) -> None:
        """Listen to the engine's book, take the budgets' present level as already told, start the workers.

        Called on the engine's thread, before the engine's first step (the restart's moves are told too).
        """
        if "budget" in self._wanted:
            self._budgets = _Budgets(engine.money.spent, lambda: engine.config.budget, engine.inboxes, engine.clock.now)
            self._budgets.seed()
        engine.book.listeners.append(self.job_changed)
        for target in self.targets:
            target.start()
        if "inbox_paused" in self._wanted:
            self._inboxes = watchers
            self._looker = threading.Thread(target=self._look_at_inboxes, name="runwatch-notify-inboxes", daemon=True)
            self._looker.start()

    def close(self, timeout: float | None = None) -> None:
        """Stop looking, and give the targets up to ``timeout`` seconds (DRAIN) to send what is queued."""
        timeout = DRAIN if timeout is None else timeout
        self._stop.set()
        if self._looker is not None:
            self._looker.join(INBOX_LOOK * 2)
        for target in self.targets:
            target.close(timeout)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per target (by its label: place, scheme and host): messages sent, failed, retried, refused and dropped."""
        return {t.label: dict(t.counts) for t in self.targets}

    def tallies(self) -> list[Tally]:
        """Per target, its counts by event and outcome (any thread: what /metrics reads)."""
        return [Tally(t.index, t.kind, t.config.events, t.tally()) for t in self.targets]

    # -- events -----------------------------------------------------------------------------------

    def job_changed(self, job: Job) -> None:
        """The book's listener (engine thread): queue a message for the state the job entered, and return."""
        event = _JOB_EVENTS.get(job.state)
        if event is not None and event in self._wanted:
            error = job.error if isinstance(job.error, dict) else {}
            where = f"{job.name} (inbox {job.inbox})"
            if job.state == State.HELD:
                text = f"{where} is held: {error.get('message')}"
            elif job.state == State.SUCCEEDED:
                text = f"{where} succeeded: {len(job.outputs)} output(s), {job.credits} credits"
            elif error:
                text = f"{where} {event.replace('_', ' ')}: {error.get('code')}: {error.get('message')}"
            else:
                text = f"{where}: {event.replace('_', ' ')}"
            document = {**status_document(job), "job_id": job.id, "inbox": job.inbox}
            self.post(event, f"runwatch: {job.name} {event.replace('_', ' ')}", text, {"job": document})
        if self._budgets is not None and job.state in _MONEY_STATES:
            for level in self._budgets.check(job.inbox):
                self.post("budget", level.title, level.text, {"budget": level.payload()})

    def post(self, event: str, title: str, text: str, extra: Mapping[str, Any]) -> None:
        """Build one message (redacted, secrets scrubbed) and queue it for every target that wants ``event``."""
        targets = [t for t in self.targets if t.wants(event)]
        if not targets:
            return
        payload = redact({"event": event, "at": now_iso(), "message": text, **extra})
        body, title, text = json.dumps(payload, ensure_ascii=False), redact(title), redact(text)
        for secret in self._secrets:
            title, text = title.replace(secret, REDACTED), text.replace(secret, REDACTED)
            body = body.replace(secret, REDACTED).replace(json.dumps(secret, ensure_ascii=False)[1:-1], REDACTED)
        message = Notification(event, title, text, body.encode())
        for target in targets:
            target.put(message)

    def _look_at_inboxes(self) -> None:
        assert self._inboxes is not None
        while not self._stop.wait(INBOX_LOOK):
            for watcher in list(self._inboxes()):
                name = watcher.inbox.name
                if not watcher.paused:
                    self._paused.discard(name)
                    continue
                if name in self._paused:
                    continue
                self._paused.add(name)
                path = watcher.inbox.path
                reason = "the folder is missing (an unmounted share?)" if not path.is_dir() else "it cannot be used"
                self.post(
                    "inbox_paused",
                    f"runwatch: inbox {name} paused",
                    f"inbox {name} ({path}) is paused: {reason}; nothing is taken from it until it is back",
                    {"inbox": {"name": name, "path": str(path), "reason": reason}},
                )


@dataclass(frozen=True)
class _Level:
    """One budget at or past a threshold."""

    scope: str  # daily, monthly or inbox_daily
    inbox: str | None
    limit: float
    spent: float
    percent: int
    period: str  # the UTC day or month it is counted for

    @property
    def title(self) -> str:
        return f"runwatch: {self._name} {self.percent} % spent"

    @property
    def _name(self) -> str:
        return f"inbox {self.inbox}'s daily budget" if self.inbox else f"the {self.scope} budget"

    @property
    def text(self) -> str:
        return f"{self.spent:g} of {self._name} of {self.limit:g} credits spent ({self.period}, UTC)"

    def payload(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "inbox": self.inbox,
            "limit": self.limit,
            "spent": self.spent,
            "threshold": self.percent,
            "period": self.period,
        }


class _Budgets:
    """Which budget thresholds have been told, per UTC day or month (engine thread only)."""

    def __init__(
        self,
        spent: Callable[[str, datetime], Spent],
        budget: Callable[[], BudgetConfig],
        inboxes: Mapping[str, InboxConfig],
        now: Callable[[], datetime],
    ) -> None:
        self._spent, self._budget, self._inboxes, self._now = spent, budget, inboxes, now
        self._told: set[tuple[str, str | None, str, int]] = set()

    def _levels(self, inbox: str) -> list[_Level]:
        now = self._now()
        used = self._spent(inbox, now)
        day, month = now.date().isoformat(), now.strftime("%Y-%m")
        config, budget = self._inboxes.get(inbox), self._budget()
        found: list[_Level] = []
        for scope, name, limit, spent, period in (
            ("daily", None, budget.daily, used.today, day),
            ("monthly", None, budget.monthly, used.month, month),
            ("inbox_daily", inbox, config.budget_daily if config else None, used.inbox_today, day),
        ):
            if not limit or limit <= 0:
                continue
            for percent in THRESHOLDS:
                if spent >= limit * percent / 100:
                    found.append(_Level(scope, name, limit, round(spent, 2), percent, period))
                    break
        return found

    def _mark(self, level: _Level) -> bool:
        """Mark the level and every threshold below it as told; True when its own was not told before."""
        new = (level.scope, level.inbox, level.period, level.percent) not in self._told
        for percent in THRESHOLDS:
            if percent <= level.percent:
                self._told.add((level.scope, level.inbox, level.period, percent))
        return new

    def seed(self) -> None:
        for inbox in list(self._inboxes) or [""]:
            for level in self._levels(inbox):
                self._mark(level)

    def check(self, inbox: str) -> list[_Level]:
        return [level for level in self._levels(inbox) if self._mark(level)]
