"""The simulated organisation: tasks, their clock-driven state machine, limits, credits and uploads.

Nothing here speaks HTTP. A task's state is a pure function of the simulated clock: each task gets a slot
(or waits THROTTLED, first come first served, while its model is at its concurrency limit), spends a
PENDING then a RUNNING phase whose lengths come from a per-endpoint table scaled by ``time_scale`` and
jittered by a seeded RNG, and ends SUCCEEDED or FAILED. ``advance()`` replays slot hand-overs in time
order, so throttled tasks start exactly when a slot frees even if nobody asked in between.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

__all__ = ["SimClock", "SimConfig", "Task", "Upload", "World", "iso_ms"]

DAY = 86400.0

# Typical queue and generation times in seconds, before `time_scale`: roughly what Runway's docs and
# captures show (a 5 s clip ~ tens of seconds; an upscale several minutes). Video generation grows with
# the requested duration.
_PHASES: dict[str, tuple[float, float, float]] = {
    # endpoint: (pending, running base, running per output second)
    "image_to_video": (3.0, 20.0, 6.0),
    "text_to_video": (3.0, 20.0, 6.0),
    "video_to_video": (3.0, 30.0, 6.0),
    "character_performance": (3.0, 30.0, 4.0),
    "text_to_image": (2.0, 12.0, 0.0),
    "video_upscale": (5.0, 120.0, 0.0),
    "image_upscale": (2.0, 20.0, 0.0),
    "video_to_hdr": (5.0, 90.0, 0.0),
    "video_to_audio": (2.0, 20.0, 0.0),
    "sound_effect": (1.0, 8.0, 0.0),
    "text_to_speech": (1.0, 5.0, 0.0),
    "speech_to_speech": (1.0, 10.0, 0.0),
    "voice_dubbing": (3.0, 40.0, 0.0),
    "voice_isolation": (2.0, 15.0, 0.0),
}

FAILURE_TEXTS: dict[str, str] = {
    "SAFETY.INPUT.TEXT": "The prompt text was flagged by our content moderation system.",
    "SAFETY.INPUT.IMAGE": "The input image was flagged by our content moderation system.",
    "SAFETY.INPUT.VIDEO": "The input video was flagged by our content moderation system.",
    "SAFETY.INPUT.AUDIO": "The input audio was flagged by our content moderation system.",
    "SAFETY.OUTPUT.VIDEO": "The output was flagged by our content moderation system.",
    "SAFETY.OUTPUT.IMAGE": "The output was flagged by our content moderation system.",
    "INTERNAL.BAD_OUTPUT.CODE01": "An unexpected error occurred.",
    "INPUT_PREPROCESSING.SAFETY.TEXT": "The prompt text was flagged during preprocessing.",
    "INPUT_PREPROCESSING.INTERNAL": "An error occurred while preprocessing the input.",
    "ASSET.INVALID": "An input asset could not be used.",
    "INTERNAL": "An unexpected error occurred.",
    "THIRD_PARTY.UNAVAILABLE": "The model provider is temporarily unavailable.",
}


def iso_ms(ts: float) -> str:
    """ISO-8601 UTC with milliseconds, as Runway writes ``createdAt``."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class SimClock:
    """Wall time plus an offset that tests and the admin interface can move forward."""

    def __init__(self, start: float | None = None) -> None:
        self._offset = 0.0 if start is None else start - time.time()
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


@dataclass
class SimConfig:
    """Everything that shapes the simulated API; each field has a command-line switch."""

    keys: frozenset[str] | None = None  # None: any well-formed key is accepted
    check_version: bool = True
    versions: frozenset[str] = frozenset({"2024-11-06"})
    fetch: bool = True  # fetch https:// media for real (False: check the URL's shape only)
    allow_http_loopback: bool = False  # let http:// URLs on loopback through (tests, local S3)
    time_scale: float = 1.0  # multiplies every task phase: 0.01 makes a minute 0.6 s
    seed: int = 0
    credit_balance: int = 100_000
    max_monthly_credit_spend: int = 200_000
    concurrency: int | None = 5  # per model; None = unlimited
    daily_limit: int | None = 1000  # per model, rolling 24 h; None = unlimited
    model_limits: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    output_ttl: float = 86400.0  # seconds an output URL stays valid
    upload_ttl: float = 86400.0  # seconds a runway:// upload stays usable
    upload_min: int = 512
    upload_max: int = 200 * 1024 * 1024
    data_uri_caps: dict[str, int] = field(
        default_factory=lambda: {"image": 5 * 1024 * 1024, "video": 16 * 1024 * 1024, "audio": 16 * 1024 * 1024}
    )
    url_caps: dict[str, int] = field(
        default_factory=lambda: {"image": 16 * 1024 * 1024, "video": 32 * 1024 * 1024, "audio": 32 * 1024 * 1024}
    )
    fetch_timeout: float = 10.0
    cancelled_visible: float = 0.0  # seconds a cancelled task answers CANCELLED before it is gone
    usage_lag: float = 0.0  # seconds before a create shows in the organization's dailyGenerations
    unknown_price_credits: float = 10.0  # simulator-only charge for models with no known price
    request_log_size: int = 200_000
    output_delay: float = 0.0  # extra latency on output downloads (for slow-download tests)


@dataclass
class Task:
    id: str
    seq: int
    endpoint: str
    model: str
    body: dict[str, Any]
    created: float
    estimate: float
    pending_s: float
    running_s: float
    outputs: list[str]  # output formats, one per output file
    failure_code: str | None = None
    failure: str | None = None  # the failure text, when not the usual one for the code
    slot_at: float | None = None  # when the task got a concurrency slot (None: THROTTLED)
    ended_at: float | None = None  # set when the end has been processed by advance()
    cancelled_at: float | None = None
    deleted: bool = False
    cost: int | None = None  # final charge once terminal

    @property
    def ends(self) -> float | None:
        return None if self.slot_at is None else self.slot_at + self.pending_s + self.running_s

    def status(self, now: float) -> str:
        if self.cancelled_at is not None:
            return "CANCELLED"
        if self.slot_at is None or now < self.slot_at:
            return "THROTTLED"
        if now < self.slot_at + self.pending_s:
            return "PENDING"
        ends = self.ends
        if ends is not None and now < ends:
            return "RUNNING"
        return "FAILED" if self.failure_code else "SUCCEEDED"

    def progress(self, now: float) -> float:
        if self.slot_at is None:
            return 0.0
        run = now - self.slot_at - self.pending_s
        return max(0.0, min(0.99, round(run / self.running_s, 2))) if self.running_s > 0 else 0.99


@dataclass
class Upload:
    id: str
    filename: str
    created: float
    secret: str
    path: str | None = None  # where the received bytes are stored
    size: int = 0
    content_type: str | None = None
    kind: str | None = None


class World:
    """All state of one simulated organisation. Every public method is thread-safe."""

    def __init__(self, config: SimConfig, clock: SimClock | None = None) -> None:
        self.config = config
        self.clock = clock or SimClock()
        self.lock = threading.RLock()
        self.tasks: dict[str, Task] = {}
        self.uploads: dict[str, Upload] = {}
        self.balance: float = config.credit_balance
        self.ledger: list[tuple[float, str, float]] = []  # (time, model, +charge / -refund)
        self.creates: dict[str, int] = {}  # per model: sim times of accepted creates are in _daily
        self._daily: dict[str, deque[float]] = {}
        self._throttled: dict[str, deque[Task]] = {}
        self._active: dict[str, list[Task]] = {}
        self._seq = 0
        self.requests: deque[dict[str, Any]] = deque(maxlen=config.request_log_size)
        self.request_count = 0
        self.create_bodies: dict[str, dict[str, Any]] = {}  # canonical body -> {body, endpoint, count, tasks}
        self.fetches: list[dict[str, Any]] = []

    # -- limits -----------------------------------------------------------------------------------

    def limits(self, model: str) -> tuple[int | None, int | None]:
        return self.config.model_limits.get(model, (self.config.concurrency, self.config.daily_limit))

    def daily_count(self, model: str, now: float) -> int:
        q = self._daily.get(model)
        if not q:
            return 0
        while q and q[0] <= now - DAY:
            q.popleft()
        lag = self.config.usage_lag
        return sum(1 for at in q if at <= now - lag) if lag > 0 else len(q)

    # -- the state machine ------------------------------------------------------------------------

    def advance(self) -> float:
        """Bring every task up to the simulated now; returns that now."""
        with self.lock:
            now = self.clock.now()
            for model in list(self._active):
                self._advance_model(model, now)
            return now

    def _advance_model(self, model: str, now: float) -> None:
        active = self._active.setdefault(model, [])
        waiting = self._throttled.setdefault(model, deque())
        concurrency = self.limits(model)[0]
        cursor: float | None = None
        while True:
            while waiting and (concurrency is None or len(active) < concurrency):
                task = waiting.popleft()
                # A freed slot is handed over at the moment it freed, not when someone looks.
                task.slot_at = max(task.created, cursor) if cursor is not None else now
                active.append(task)
            done = [t for t in active if (t.ends or math.inf) <= now]
            if not done:
                return
            first = min(done, key=lambda t: (t.ends or 0.0, t.seq))
            active.remove(first)
            self._finish(first)
            cursor = first.ends

    def _finish(self, task: Task) -> None:
        task.ended_at = task.ends
        if task.failure_code:
            self._refund(task, task.ended_at or self.clock.now())
            task.cost = 0
        else:
            task.cost = math.ceil(task.estimate)

    def _refund(self, task: Task, at: float) -> None:
        self.balance += task.estimate
        self.ledger.append((at, task.model, -task.estimate))

    def create(
        self,
        endpoint: str,
        model: str,
        body: dict[str, Any],
        estimate: float,
        outputs: list[str],
        failure_code: str | None,
        failure: str | None = None,
    ) -> Task:
        """Accept a task (limits and balance already checked by the caller under ``lock``)."""
        with self.lock:
            now = self.advance()
            self._seq += 1
            rng = random.Random(f"{self.config.seed}:{self._seq}")  # noqa: S311 - simulation, not crypto
            pending, base, per_second = _PHASES.get(endpoint, (2.0, 20.0, 0.0))
            seconds = body.get("duration") if isinstance(body.get("duration"), int | float) else 5
            running = base + per_second * float(seconds or 5)
            scale = self.config.time_scale
            task = Task(
                # Ids are random, as Runway's are: a restarted simulator must never hand out an id twice.
                id=str(uuid.uuid4()),
                seq=self._seq,
                endpoint=endpoint,
                model=model,
                body=body,
                created=now,
                estimate=estimate,
                pending_s=pending * scale * rng.uniform(0.75, 1.25),
                running_s=running * scale * rng.uniform(0.75, 1.25),
                outputs=outputs,
                failure_code=failure_code,
                failure=failure,
            )
            self.tasks[task.id] = task
            self.balance -= estimate
            self.ledger.append((now, model, estimate))
            self._daily.setdefault(model, deque()).append(now)
            concurrency = self.limits(model)[0]
            active = self._active.setdefault(model, [])
            waiting = self._throttled.setdefault(model, deque())
            if not waiting and (concurrency is None or len(active) < concurrency):
                task.slot_at = now
                active.append(task)
            else:
                waiting.append(task)
            key = canonical_body(endpoint, body)
            entry = self.create_bodies.setdefault(key, {"endpoint": endpoint, "body": body, "count": 0, "tasks": []})
            entry["count"] += 1
            entry["tasks"].append(task.id)
            return task

    def visible_task(self, task_id: str) -> Task | None:
        """The task as GET sees it, or None when it never existed or is gone."""
        with self.lock:
            now = self.advance()
            task = self.tasks.get(task_id)
            if task is None or task.deleted:
                return None
            if task.cancelled_at is not None and now >= task.cancelled_at + self.config.cancelled_visible:
                return None
            return task

    def delete(self, task_id: str) -> bool:
        """DELETE /v1/tasks/{id}: cancel a live task (refund if not yet running), delete a finished one."""
        with self.lock:
            now = self.advance()
            task = self.visible_task(task_id)
            if task is None:
                return False
            status = task.status(now)
            if status in ("THROTTLED", "PENDING", "RUNNING"):
                for queue in (self._throttled.get(task.model, deque()),):
                    if task in queue:
                        queue.remove(task)
                active = self._active.get(task.model, [])
                if task in active:
                    active.remove(task)
                if status == "RUNNING":
                    task.cost = math.ceil(task.estimate)  # cancelled while running: no refund
                else:
                    self._refund(task, now)
                    task.cost = 0
                task.cancelled_at = now
                if self.config.cancelled_visible <= 0:
                    task.deleted = True
                self._advance_model(task.model, now)  # a freed slot goes to the next in line
            else:
                task.deleted = True
            return True

    # -- views ------------------------------------------------------------------------------------

    def task_json(self, task: Task, output_urls: list[str]) -> dict[str, Any]:
        """The body of GET /v1/tasks/{id}: exactly the members of the task's status."""
        now = self.clock.now()
        status = task.status(now)
        out: dict[str, Any] = {"id": task.id, "createdAt": iso_ms(task.created), "status": status}
        if status in ("THROTTLED", "PENDING"):
            out["estimatedCost"] = {"credits": task.estimate}
        elif status == "RUNNING":
            out["progress"] = task.progress(now)
            out["estimatedCost"] = {"credits": task.estimate}
        elif status == "SUCCEEDED":
            out["output"] = output_urls
            out["cost"] = {"credits": task.cost if task.cost is not None else math.ceil(task.estimate)}
        elif status == "FAILED":
            code = task.failure_code or "INTERNAL"
            out["failure"] = task.failure or FAILURE_TEXTS.get(code, "An unexpected error occurred.")
            out["failureCode"] = code
            out["cost"] = {"credits": 0}
        elif status == "CANCELLED":
            out["cost"] = {"credits": task.cost or 0}
        return out

    def organization_json(self, models: list[str]) -> dict[str, Any]:
        with self.lock:
            now = self.advance()
            tier_models = {}
            for m in sorted(set(models) | set(self.config.model_limits)):
                conc, daily = self.limits(m)
                tier_models[m] = {"maxConcurrentGenerations": conc, "maxDailyGenerations": daily}
            usage = {m: {"dailyGenerations": self.daily_count(m, now)} for m in sorted(self._daily)}
            return {
                "creditBalance": math.floor(self.balance),
                "tier": {"maxMonthlyCreditSpend": self.config.max_monthly_credit_spend, "models": tier_models},
                "usage": {"models": usage},
            }

    def usage_json(self, start: date, before: date) -> dict[str, Any]:
        with self.lock:
            days: dict[str, dict[str, float]] = {}
            for at, model, amount in self.ledger:
                day = datetime.fromtimestamp(at, UTC).date()
                if start <= day < before:
                    per = days.setdefault(day.isoformat(), {})
                    per[model] = per.get(model, 0.0) + amount
            results = [
                {"date": d, "usedCredits": [{"model": m, "amount": round(a)} for m, a in sorted(per.items())]}
                for d, per in sorted(days.items())
            ]
            models = sorted({m for per in days.values() for m in per})
            return {"results": results, "models": models}

    def today(self) -> date:
        return datetime.fromtimestamp(self.clock.now(), UTC).date()

    def default_usage_window(self) -> tuple[date, date]:
        # Runway documents "30 days ago" to "30 days after start", exclusive; ending tomorrow keeps
        # today's spending in the default report, which is what a caller asking for usage wants.
        today = self.today()
        return today - timedelta(days=30), today + timedelta(days=1)

    def log_request(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.request_count += 1
            entry["seq"] = self.request_count
            self.requests.append(entry)

    def log_fetch(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.fetches.append(entry)

    def counts(self) -> Mapping[str, int]:
        with self.lock:
            now = self.advance()
            out: dict[str, int] = {}
            for t in self.tasks.values():
                if not t.deleted:
                    s = t.status(now)
                    out[s] = out.get(s, 0) + 1
            return out


def canonical_body(endpoint: str, body: Mapping[str, Any]) -> str:
    """A stable key for "the same request": endpoint plus the body with sorted keys."""
    text = json.dumps({"endpoint": endpoint, "body": body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
