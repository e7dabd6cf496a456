"""The money guard: what has been spent and whether a request may be sent now, kept up to date job by job.

The engine owns one and calls it from its own thread. The guard applies the rules of ``runwatch.budget`` to
the jobs, to the charges of jobs no longer followed (read from the journal once) and to the organization's
figures (read in the background). It reads followed jobs through a narrow view (:class:`JobsView`, the
engine's book) and is told of every change by a method call; it writes neither the journal nor a status file:
holding a request, and the status file that says so, stay the engine's. For a journal several nodes share it
also says what to check a create against there (:meth:`MoneyGuard.check_of`): the journal sums every node's
spending itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

from runwatch.api import RunwayClient
from runwatch.budget import (
    Charge,
    Limits,
    MoneyCheck,
    OrgFigures,
    Spent,
    balance_hold,
    charge_of,
    daily_limit_hold,
    spent,
    user_hold,
)
from runwatch.clock import Clock
from runwatch.jobs import events
from runwatch.jobs.job import Job
from runwatch.jobs.runner import Runner
from runwatch.jobs.states import FINAL
from runwatch.pricing import Estimate
from runwatch.proof import CountsProof, OrgLook
from runwatch.store import Store

__all__ = ["MoneyGuard"]

# A read whose sending moment is unknown (the first, at the start) counts as this much older: every create of any
# node since then is taken off its balance, which errs toward holding.
_UNKNOWN_SENT_MARGIN = 60.0


class _Cached(Protocol):
    """The engine's runtime record of a job, where its charge_of is remembered."""

    charge: tuple[tuple[Any, ...], Charge | None] | None


class JobsView(Protocol):
    """What the guard may see of the followed jobs."""

    def job(self, job_id: str) -> Job | None: ...

    def charge_memo(self, job_id: str) -> _Cached: ...

    def __contains__(self, job_id: object) -> bool: ...


@dataclass
class _Reserved:
    """A create let through since the organization's figures were last read: not yet in them."""

    model: str | None
    credits: float
    answered: int | None = None  # the organization fetch generation when Runway answered the create


class MoneyGuard:
    """Spending, holds and the organization's figures, for the engine that owns it."""

    def __init__(
        self,
        journal: Store,
        api: RunwayClient,
        runner: Runner,
        post: Callable[[events.Event], None],
        stopping: threading.Event,
        *,
        clock: Clock,
        log: Any,
    ) -> None:
        self.journal = journal  # read only
        self.api = api
        self.runner = runner
        self.post = post  # the organization's figures come back to the engine as an OrgRead event
        self.stopping = stopping
        self.view: JobsView | None = None  # the engine's book, set once it exists
        self.clock = clock
        self.log = log
        self.org_ttl = 30.0  # seconds the organization's balance and usage are trusted
        self.recheck_every = 2.0  # seconds between looks at held requests
        # The jobs that may have cost something until they are final (downloads too), whose spending is summed.
        self._charged: set[str] = set()
        self.model_caps: dict[str, int | None] = {}
        self._last_recheck = 0.0
        self._org: dict[str, Any] | None = None
        self._org_at = float("-inf")
        self._org_read_sent = float("-inf")  # monotonic time the read behind _org was sent
        self._org_busy = False
        self._org_gen = 0
        self._org_sent: dict[int, float] = {}  # generation -> monotonic time its read was sent
        self.org_sent_at = float("-inf")  # the newest read's
        self.proof = CountsProof()  # what Runway's counts prove of creates whose answer never came
        self.reserved: dict[str, _Reserved] = {}
        self._ledger: dict[str, Charge] | None = None  # charges of jobs no longer followed; loaded once
        self._ledger_days: dict[tuple[date, str], float] = {}  # the same, summed per UTC day and inbox
        # Bumped by everything that can change what is spent or may be sent: the spending of live jobs is
        # summed once per generation, and held requests are looked at again only when it moved.
        self._money_gen = 0
        # Spending of live jobs per UTC day and inbox, kept up to date job by job: an event marks its job.
        self._live_parts: dict[str, tuple[tuple[date, str], float]] = {}
        self._live_days: dict[tuple[date, str], float] = {}
        self._live_dirty: set[str] = set()
        self._live_rebuild = True
        self._rechecked: tuple[int, int, date] | None = None
        self._held_wake = float("inf")  # the earliest end of a hold, monotonic

    # -- marks: what may have moved ---------------------------------------------------------------

    def touched(self, job_id: str | None = None) -> None:
        """Spending may have moved: one job's (an answer about it), or anything's (None)."""
        self._money_gen += 1
        if job_id is None:
            self._live_rebuild = True
        else:
            self._live_dirty.add(job_id)

    def followed(self, job: Job) -> None:
        """A job is followed (claimed, or again after a start or a retry)."""
        if self._ledger is not None and job.id in self._ledger:
            self._ledger_pop(job.id)  # followed again (a retry): counted from the live job
            self._money_gen += 1
        elif job.state not in ("accepted", "held"):  # followed again after a start: it may have cost
            self._money_gen += 1
        if job.state not in ("accepted", "held") and job.state not in FINAL:
            self._live_dirty.add(job.id)

    def flying(self, job_id: str) -> None:
        """The job may cost something from now until it is final (its create is on its way)."""
        self._charged.add(job_id)

    def landed(self, job_id: str) -> None:
        """The job costs nothing more in flight (back to waiting, or final)."""
        self._charged.discard(job_id)

    def unreserve(self, job_id: str) -> None:
        """The job was not sent, or surely created nothing: no reservation stands for it."""
        self.reserved.pop(job_id, None)

    def spent_today(self) -> float:
        """Credits spent today, all inboxes together (for the heartbeat)."""
        return self.spent("", self.clock.now()).today

    def finished(self, job: Job) -> None:
        """A job reached its final state: its charge moves from the live jobs to the ledger."""
        self._live_dirty.add(job.id)
        self._money_gen += 1
        if self._ledger is not None:
            charge = charge_of(job, self.clock.now())
            if charge is not None:
                self._ledger_put(job.id, charge)

    def reserve(self, job: Job, credits: float) -> None:
        """A create is let through: count it until the organization's figures include it."""
        self.reserved[job.id] = _Reserved(job.model, credits)

    def answered(self, job_id: str, estimated: float | None) -> None:
        """Runway answered the create: Runway's estimate, and the figures read from now on include it."""
        reserved = self.reserved.get(job_id)
        if reserved is not None:
            reserved.credits = float(estimated or reserved.credits)
            reserved.answered = self._org_gen

    # -- holds ------------------------------------------------------------------------------------

    def hold_reason(self, job: Job, guess: Estimate, limits: Limits) -> tuple[str, str] | None:
        """(code, reason) when the job may not be sent now; None when it may."""
        now = self.clock.now()
        reason = user_hold(
            job.name, job.model, guess.credits, guess.basis, limits, self.spent(job.inbox, now), approved=job.approved
        )
        if reason:
            return "held", reason
        # Approval never passes these two: Runway would refuse the create anyway.
        self.refresh_org()
        reason = balance_hold(guess.credits, self._balance())
        if reason:
            return "balance", reason
        used, cap = self._daily_use(job.model)
        reason = daily_limit_hold(job.model, used, cap)
        if reason:
            return "daily_limit", reason
        return None

    def check_of(self, job: Job, guess: Estimate, limits: Limits, model_cap: int | None) -> MoneyCheck:
        """What a journal shared by several nodes needs to check this create against every node's spending:
        the request and its limits, and what this node last read of the organization (raw: the creates let
        through since are the journal's to take off, whichever node sent them)."""
        org = None
        if self._org is not None:
            usage = self._org.get("usage")
            models = usage.get("models") if isinstance(usage, dict) else None
            daily = {
                model: counted["dailyGenerations"]
                for model, counted in (models.items() if isinstance(models, dict) else ())
                if isinstance(counted, dict) and isinstance(counted.get("dailyGenerations"), int)
            }
            org = OrgFigures(self.balance(), daily, self.clock.monotonic() - self._org_read_sent)
        return MoneyCheck.for_job(
            job,
            guess.credits,
            guess.basis,
            limits,
            approved=job.approved,
            model_cap=model_cap,
            daily_cap=self._daily_cap(job.model),
            org=org,
        )

    def recheck_due(self) -> bool:
        return self.clock.monotonic() - self._last_recheck > self.recheck_every

    def begin_recheck(self) -> bool:
        """Whether held requests are worth a look now; if so, the look starts (see :meth:`wake_at`)."""
        key = (self._money_gen, self._org_gen, self.clock.now().date())
        # Nothing moved since the last look: skip it, but look at least every org_ttl (which refreshes the
        # balance: a top-up releases requests held for it) and when a held request's wait is over.
        if (
            key == self._rechecked
            and self.clock.monotonic() < self._held_wake
            and self.clock.monotonic() - self._last_recheck < self.org_ttl
        ):
            return False
        self._last_recheck = self.clock.monotonic()
        self._rechecked, self._held_wake = key, float("inf")
        return True

    def wake_at(self, moment: float) -> None:
        """A held request waits until ``moment`` (monotonic): look again then even if nothing moved."""
        self._held_wake = min(self._held_wake, moment)

    # -- spending ---------------------------------------------------------------------------------

    def spent(self, inbox: str, now: datetime) -> Spent:
        if self._ledger is None:
            self._ledger = {}
            for done in self.journal.jobs(limit=2**62):
                charge = charge_of(done, now) if self.view is None or done.id not in self.view else None
                if charge is not None:
                    self._ledger_put(done.id, charge)
        if self._live_rebuild:
            self._live_rebuild = False
            self._live_parts.clear()
            self._live_days.clear()
            self._live_dirty = set(self._charged)
        for job_id in self._live_dirty:
            self._live_refresh(job_id, now)
        self._live_dirty = set()
        days = [
            Charge(box, credits, datetime(day.year, day.month, day.day, tzinfo=UTC))
            for buckets in (self._ledger_days, self._live_days)
            for (day, box), credits in buckets.items()
        ]
        return spent(days, inbox, now)

    def _live_refresh(self, job_id: str, now: datetime) -> None:
        """One job's part in the spending of live jobs, taken out and put back as it is now."""
        old = self._live_parts.pop(job_id, None)
        if old is not None:
            self._live_days[old[0]] -= old[1]
        job = self.view.job(job_id) if self.view is not None else None
        if job is None or job_id not in self._charged:
            return
        charge = self._charge(job, now)
        reserved = self.reserved.get(job_id)
        if charge is None and reserved is not None:  # let through, create not answered yet
            charge = Charge(job.inbox, reserved.credits, now)
        if charge is not None:
            bucket = (charge.at.astimezone(UTC).date(), charge.inbox)
            self._live_parts[job_id] = (bucket, charge.credits)
            self._live_days[bucket] = self._live_days.get(bucket, 0.0) + charge.credits

    def _charge(self, job: Job, now: datetime) -> Charge | None:
        """charge_of, remembered while the fields it reads stay the same (it parses timestamps)."""
        assert self.view is not None  # a followed job is read through the view
        runtime = self.view.charge_memo(job.id)
        key = (job.state, job.credits, job.estimated_credits, job.create_started_at, job.updated_at)
        if runtime.charge is None or runtime.charge[0] != key:
            runtime.charge = (key, charge_of(job, now))
        return runtime.charge[1]

    def _ledger_put(self, job_id: str, charge: Charge) -> None:
        assert self._ledger is not None
        self._ledger_pop(job_id)
        self._ledger[job_id] = charge
        day = (charge.at.astimezone(UTC).date(), charge.inbox)
        self._ledger_days[day] = self._ledger_days.get(day, 0.0) + charge.credits

    def _ledger_pop(self, job_id: str) -> None:
        old = self._ledger.pop(job_id, None) if self._ledger is not None else None
        if old is not None:
            day = (old.at.astimezone(UTC).date(), old.inbox)
            self._ledger_days[day] = self._ledger_days.get(day, 0.0) - old.credits

    # -- the organization's figures ---------------------------------------------------------------

    def organization(self) -> dict[str, Any] | None:
        """The organization's figures (balance, tier, usage) at the last look, for the dashboard; None before."""
        return self._org

    def balance(self) -> float | None:
        """The organization's credit balance at its last look (for metrics); None before a look."""
        org = self._org  # one read: another thread may be taking a new look
        balance = org.get("creditBalance") if org else None
        return float(balance) if isinstance(balance, int | float) else None

    def _balance(self) -> float | None:
        balance = self._org.get("creditBalance") if self._org else None
        if not isinstance(balance, int | float):
            return None
        return float(balance) - sum(r.credits for r in self.reserved.values())

    def _daily_cap(self, model: str | None) -> int | None:
        """Runway's daily task limit for the model, from the last read; None when unknown."""
        tier = self._org.get("tier") if self._org is not None else None
        limits = tier.get("models", {}).get(model) if isinstance(tier, dict) and isinstance(model, str) else None
        cap = limits.get("maxDailyGenerations") if isinstance(limits, dict) else None
        return cap if isinstance(cap, int) else None

    def _daily_use(self, model: str | None) -> tuple[int, int | None]:
        """Creates of the model in Runway's rolling day (plus ours not yet counted there), and the cap."""
        if self._org is None or not isinstance(model, str):
            return 0, None
        usage = self._org.get("usage")
        counted = usage.get("models", {}).get(model) if isinstance(usage, dict) else None
        used = counted.get("dailyGenerations") if isinstance(counted, dict) else None
        used = used if isinstance(used, int) else 0
        used += sum(1 for r in self.reserved.values() if r.model == model)
        return used, self._daily_cap(model)

    def take_org(self, org: dict[str, Any], gen: int | None = None, sent: float | None = None) -> None:
        """The organization's figures, read by a request sent at ``sent`` (monotonic) when known."""
        self._org, self._org_at = org, self.clock.monotonic()
        self._org_read_sent = sent if sent is not None else self._org_at - _UNKNOWN_SENT_MARGIN
        models = org.get("tier", {}).get("models", {}) if isinstance(org.get("tier"), dict) else {}
        for model, limits in models.items():  # a tier upgrade raises these while the daemon runs
            if isinstance(limits, dict):
                cap = limits.get("maxConcurrentGenerations")
                self.model_caps[model] = cap if isinstance(cap, int) and cap > 0 else None
        # Creates Runway had answered before this read began are in its figures now.
        self.reserved = {
            k: r for k, r in self.reserved.items() if r.answered is None or (gen is not None and r.answered >= gen)
        }

    def refresh_org(self, force: bool = False) -> None:
        """Read the organization again in the background when its figures are old (or after spending)."""
        if (
            self._org_busy
            or self.stopping.is_set()
            or (not force and self.clock.monotonic() - self._org_at < self.org_ttl)
        ):
            return
        self._org_busy = True
        self._org_gen += 1
        gen = self._org_gen
        self.org_sent_at = self._org_sent[gen] = self.clock.monotonic()
        future = self.runner.background(self.api.organization)

        def done(f: Future[Any]) -> None:
            try:
                result: Any = f.result()
            except BaseException as exc:  # noqa: BLE001 - reported by the engine
                result = exc
            self.post(events.OrgRead(gen, result))

        future.add_done_callback(done)

    def after_org(self, gen: int, result: Any) -> None:
        self._org_busy = False
        sent = self._org_sent.pop(gen, None)
        if isinstance(result, dict) and sent is not None:
            self.proof.looked(OrgLook.of(sent, self.clock.monotonic(), result))
        if isinstance(result, BaseException):
            self._org_at = self.clock.monotonic()  # try again after the usual interval; Runway's own checks stay
            self.log.warning("api.organization_unavailable", error=str(result))
            return
        if isinstance(result, dict):
            self.take_org(result, gen, sent)
