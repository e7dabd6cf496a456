"""Prometheus metrics: a registry of runwatch's own (never the process-wide default one).

Two kinds of figures. Counters and histograms are noted as things happen: the job lifecycle tells
:meth:`Metrics.job_entered` on the engine's thread (``Book.listeners``) and the Runway client tells
:meth:`Metrics.api_call` after each request (``RunwayClient.observer``); both only note and return. Gauges are
read when scraped (:class:`_Looks`): jobs by state from the journal, held requests by reason from the jobs the
engine follows (in memory: a queue of thousands held costs a scrape little), the balance from the money guard's
last look at the organization, paused inboxes from the watchers, and the notifications' counts from the notifier
(its workers count; a scrape copies). A notification target is named by its place in the config and its kind,
never by its URL: webhook URLs and Apprise URLs carry tokens.

Counters start from zero at each start of the daemon, as Prometheus expects (``rate()`` handles the reset).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runwatch.api import ApiCall
from runwatch.jobs.states import FINAL, State
from runwatch.notifications import OUTCOMES, Tally

if TYPE_CHECKING:
    from runwatch.jobs.book import Book
    from runwatch.jobs.job import Job
    from runwatch.store import Store

__all__ = ["Metrics", "RunwayContact", "Sources"]

_LATENCY = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_DROP_TO_CREATE = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
_TASK = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def _outcome(call: ApiCall) -> str:
    """What a create attempt came to, as the money rule sees it (runwatch.api)."""
    if not call.sent:
        return "not_sent"
    if 200 <= call.status < 300:
        return "created"
    if call.status == 429:
        return "throttled"
    if 400 <= call.status < 500:
        return "refused"
    return "unconfirmed"  # a 5xx, or no answer after the request went out: the task may exist


def _epoch(stamp: str | None) -> float | None:
    try:
        return datetime.fromisoformat(stamp).timestamp() if stamp else None
    except ValueError:
        return None


class RunwayContact:
    """Whether Runway answers: the time of its last answer and, since then, of the first call that got none.

    Any HTTP answer below 500 counts (a 4xx is Runway refusing a request, not Runway gone). A daemon with nothing
    to do makes no calls, so silence is not a failure: only calls without an answer for ``grace`` seconds are.
    """

    def __init__(self, grace: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace, self._clock = grace, clock
        self.answered_at: float | None = None
        self.failing_since: float | None = None
        self.last_failure = ""

    def note(self, call: ApiCall) -> None:
        if 0 < call.status < 500:
            self.answered_at, self.failing_since = self._clock(), None
        else:
            self.failing_since = self.failing_since or self._clock()
            self.last_failure = f"{call.method} {call.route}: " + (
                f"HTTP {call.status}" if call.status else "no answer"
            )

    def problem(self) -> str | None:
        """Why Runway does not count as answering, or None."""
        since = self.failing_since
        if since is None or self._clock() - since < self.grace:
            return None
        return f"Runway has not answered for {self._clock() - since:.0f} s (last: {self.last_failure})"


@dataclass
class Sources:
    """What the scrape-time gauges read; each is called on the server's thread."""

    store: Store
    paused: Callable[[], dict[str, bool]]  # inbox name -> paused
    balance: Callable[[], float | None]
    followed: Callable[[], list[Job]]  # the jobs the engine follows (held ones among them), a copy
    notifications: Callable[[], list[Tally]] = field(default=list)  # each [[notify]] target's counts


def held_reasons(jobs: list[Job]) -> dict[str, int]:
    """Held requests by the code of their reason (``held``, ``balance``, ``daily_limit``)."""
    reasons: dict[str, int] = {}
    for job in jobs:
        if job.state == State.HELD:
            code = job.error.get("code") if isinstance(job.error, dict) else None
            reasons[str(code or "unknown")] = reasons.get(str(code or "unknown"), 0) + 1
    return reasons


class _Looks(Collector):
    """The gauges read at each scrape."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        store = self.sources.store
        jobs = GaugeMetricFamily("runwatch_jobs", "Requests in the journal, by state", labels=["state"])
        counts = store.counts()
        for state in State:
            jobs.add_metric([state.value], counts.get(state.value, 0))
        yield jobs
        held = GaugeMetricFamily("runwatch_held_requests", "Held requests, by the reason's code", labels=["reason"])
        for reason, n in sorted(held_reasons(self.sources.followed()).items()):
            held.add_metric([reason], n)
        yield held
        paused = self.sources.paused()
        inboxes = GaugeMetricFamily(
            "runwatch_inbox_paused", "1 while an inbox is paused (its folder is missing)", labels=["inbox"]
        )
        for name, is_paused in sorted(paused.items()):
            inboxes.add_metric([name], 1.0 if is_paused else 0.0)
        yield inboxes
        yield GaugeMetricFamily(
            "runwatch_inboxes_paused", "Inboxes paused (their folder is missing)", value=sum(paused.values())
        )
        balance = self.sources.balance()
        if balance is not None:
            yield GaugeMetricFamily(
                "runwatch_credit_balance", "The organization's credit balance at runwatch's last look", value=balance
            )
        yield from _notification_families(self.sources.notifications())


def _notification_families(tallies: list[Tally]) -> Iterator[Metric]:
    """Notifications by target (``notify[N]``), kind, event and outcome; every event a target is told starts at
    0, so a rate() sees its first failure."""
    labels = ["target", "kind", "event"]
    messages = CounterMetricFamily(
        "runwatch_notifications",
        "Notification messages by what became of them: sent, failed (after its retries), refused (a link-local "
        "or metadata address), dropped (a full queue, or runwatch stopping)",
        labels=[*labels, "outcome"],
    )
    retries = CounterMetricFamily(
        "runwatch_notification_retries", "Notification attempts that failed and were tried again", labels=labels
    )
    for tally in tallies:
        target = f"notify[{tally.index}]"
        events = dict.fromkeys((*tally.events, *(event for event, _ in tally.counts)))
        for event in events:
            for outcome in OUTCOMES:
                messages.add_metric([target, tally.kind, event, outcome], tally.counts.get((event, outcome), 0))
            retries.add_metric([target, tally.kind, event], tally.counts.get((event, "retried"), 0))
    yield messages
    yield retries


class Metrics:
    """runwatch's registry and the hooks that feed it."""

    def __init__(self, sources: Sources, *, book: Book | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.book = book
        self.contact = RunwayContact()
        r = self.registry
        self.creates = Counter(
            "runwatch_creates", "Create calls to Runway, by outcome", ["endpoint", "model", "outcome"], registry=r
        )
        self.spent = Counter(
            "runwatch_credits_spent", "Credits spent by finished requests", ["inbox", "model"], registry=r
        )
        self.api_calls = Counter(
            "runwatch_api_requests", "Requests to Runway", ["method", "route", "status"], registry=r
        )
        self.api_seconds = Histogram(
            "runwatch_api_request_seconds",
            "Time of requests to Runway",
            ["method", "route"],
            buckets=_LATENCY,
            registry=r,
        )
        self.drop_to_create = Histogram(
            "runwatch_drop_to_create_seconds",
            "From a request's claim to Runway naming its task",
            ["model"],
            buckets=_DROP_TO_CREATE,
            registry=r,
        )
        self.task_seconds = Histogram(
            "runwatch_task_seconds", "From a task's create to its end", ["model"], buckets=_TASK, registry=r
        )
        self.upload_bytes = Counter(
            "runwatch_upload_bytes", "Bytes of local media sent to be fetched by Runway", registry=r
        )
        self.download_bytes = Counter("runwatch_download_bytes", "Bytes of outputs downloaded", registry=r)
        self.entered = Counter("runwatch_job_transitions", "Requests entering a state", ["state"], registry=r)
        self._submitted: dict[str, float] = {}  # job id -> monotonic moment Runway named its task
        self._lock = threading.Lock()
        r.register(_Looks(sources))

    def text(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)

    # -- hooks ---------------------------------------------------------------------------------------

    def api_call(self, call: ApiCall) -> None:
        """``RunwayClient.observer``: any thread."""
        self.contact.note(call)
        self.api_calls.labels(call.method, call.route, str(call.status)).inc()
        self.api_seconds.labels(call.method, call.route).observe(call.seconds)
        if (
            call.method == "POST"
            and call.model is not None
            and call.route.startswith("/v1/")
            and call.route.count("/") == 2
        ):
            self.creates.labels(call.route.removeprefix("/v1/"), call.model, _outcome(call)).inc()

    def job_entered(self, job: Job) -> None:
        """``Book.listeners``: the engine's thread, after ``job`` entered its present state."""
        model = job.model or "unknown"
        self.entered.labels(job.state.value).inc()
        if job.state == State.UPLOADING:
            self.upload_bytes.inc(self._media_bytes(job))
        elif job.state == State.SUBMITTED:
            with self._lock:
                self._submitted[job.id] = time.monotonic()
            claimed = _epoch(job.created_at)
            if claimed is not None:
                self.drop_to_create.labels(model).observe(max(0.0, time.time() - claimed))
        elif job.state in FINAL:
            with self._lock:
                sent = self._submitted.pop(job.id, None)
            if sent is not None and job.task_id:
                self.task_seconds.labels(model).observe(time.monotonic() - sent)
            if job.credits:
                self.spent.labels(job.inbox, model).inc(job.credits)
            if job.state == State.SUCCEEDED:
                self.download_bytes.inc(sum(int(o.get("bytes") or 0) for o in job.outputs))

    def _media_bytes(self, job: Job) -> int:
        runtime = self.book.rt.get(job.id) if self.book is not None else None
        request: Any = runtime.request if runtime is not None else None
        return sum(m.size for m in request.media) if request is not None else 0
