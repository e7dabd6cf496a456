"""Money rules: what has been spent, and whether a request may be sent now. Pure functions over plain data.

Nothing here reads a clock, the journal or the network: the engine passes ``now`` (UTC), the jobs and the
organization's figures in, and gets back None (may go) or the reason a request is held, worded for the
person reading its status file. Days and months are UTC, as Runway's usage reports are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from runwatch.clock import parse_iso

if TYPE_CHECKING:
    from runwatch.jobs.job import Job

__all__ = [
    "Charge",
    "Limits",
    "MoneyCheck",
    "OrgFigures",
    "Spent",
    "balance_hold",
    "charge_of",
    "concurrency_hold",
    "daily_limit_hold",
    "money_hold",
    "next_day",
    "next_month",
    "spent",
    "spent_since",
    "user_hold",
]

# A job counts its estimate while Runway may be charging it and no final cost is known yet.
_PROVISIONAL = frozenset({"uploading", "submitted", "throttled", "pending", "running", "downloading"})


@dataclass(frozen=True)
class Charge:
    """What one job costs (or is expected to), for which inbox, and when it was spent."""

    inbox: str
    credits: float
    at: datetime


@dataclass(frozen=True)
class Spent:
    inbox_today: float
    today: float
    month: float


@dataclass(frozen=True)
class Limits:
    """Every limit that applies to one request; None where not configured."""

    max_credits: float | None = None
    approve_above: float | None = None
    inbox_daily: float | None = None
    daily: float | None = None
    monthly: float | None = None
    unknown_price: Literal["hold", "allow"] = "hold"


@dataclass(frozen=True)
class OrgFigures:
    """What one node last read of the organization: its balance and the model's daily count, and how long ago
    (seconds) that read was sent. Creates recorded since then are not in these figures yet."""

    balance: float | None
    daily_used: dict[str, int]
    age: float


@dataclass(frozen=True)
class MoneyCheck:
    """Everything a journal shared by several nodes needs to decide, with its own sums over every node's jobs,
    whether one create may be sent: the request, its estimate, its limits, and what this node knows of Runway."""

    job_id: str
    name: str
    inbox: str
    model: str | None
    credits: float | None
    basis: str
    limits: Limits
    approved: bool = False
    model_cap: int | None = None
    """Runway's (or the config's) concurrency limit for the model."""
    daily_cap: int | None = None
    """Runway's daily task limit for the model."""
    org: OrgFigures | None = None

    @classmethod
    def for_job(
        cls,
        job: Job,
        credits: float | None,
        basis: str,
        limits: Limits,
        *,
        approved: bool = False,
        model_cap: int | None = None,
        daily_cap: int | None = None,
        org: OrgFigures | None = None,
    ) -> MoneyCheck:
        """The check of `job`'s create: its id, name, inbox and model, with the estimate and limits given."""
        return cls(
            job_id=job.id,
            name=job.name,
            inbox=job.inbox,
            model=job.model,
            credits=credits,
            basis=basis,
            limits=limits,
            approved=approved,
            model_cap=model_cap,
            daily_cap=daily_cap,
            org=org,
        )


def charge_of(job: Any, now: datetime) -> Charge | None:
    """A job's charge: its final ``credits`` when known, else its estimate while in flight, else none.

    A create whose answer was lost (``needs_attention`` with the intent recorded) may have been charged, so
    its estimate counts too. It is spent when the create was sent (``now`` for one about to be sent).
    """
    credits: float | None = job.credits
    if credits is None:
        # A create whose answer was lost may have been charged: it counts while it is proven, and after.
        maybe_charged = job.state in _PROVISIONAL or (job.create_started_at and not job.task_id)
        credits = job.estimated_credits if maybe_charged else None
    if not credits:
        return None
    at = parse_iso(job.create_started_at) or parse_iso(job.updated_at) or now
    return Charge(job.inbox, float(credits), at)


def spent(charges: Iterable[Charge], inbox: str, now: datetime) -> Spent:
    """Credits spent today (this inbox, and all together) and this month, in UTC."""
    now = now.astimezone(UTC)
    inbox_today = today = month = 0.0
    for charge in charges:
        at = charge.at.astimezone(UTC)
        if (at.year, at.month) != (now.year, now.month):
            continue
        month += charge.credits
        if at.date() == now.date():
            today += charge.credits
            if charge.inbox == inbox:
                inbox_today += charge.credits
    return Spent(inbox_today, today, month)


def spent_since(now: datetime, limits: Limits) -> datetime | None:
    """The earliest moment whose spending the budgets in ``limits`` count (the UTC month or day), or None when
    no budget is set: charges before it need not be read."""
    now = now.astimezone(UTC)
    if limits.monthly is not None:
        return datetime(now.year, now.month, 1, tzinfo=UTC)
    if limits.daily is not None or limits.inbox_daily is not None:
        return datetime(now.year, now.month, now.day, tzinfo=UTC)
    return None


def next_day(now: datetime) -> datetime:
    """The next UTC midnight: when daily budgets free."""
    day = now.astimezone(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def next_month(now: datetime) -> datetime:
    """The first moment of the next UTC month: when the monthly budget frees."""
    now = now.astimezone(UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def _n(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.0f}"


def user_hold(
    name: str, model: str | None, credits: float | None, basis: str, limits: Limits, used: Spent, *, approved: bool
) -> str | None:
    """Why the user's own limits hold a request (max_credits, approve_above, budgets), or None.

    An approved request passes all of these: approving is a person saying "spend it anyway".
    """
    if approved:
        return None
    approve = f"`runwatch approve {name}` sends it"
    gates = [(f"its max_credits of {_n(v)}", v) for v in (limits.max_credits,) if v is not None]
    gates += [(f"the inbox's approve_above of {_n(v)}", v) for v in (limits.approve_above,) if v is not None]
    budgets = (
        [
            (f"the inbox's daily budget of {_n(v)}", v, used.inbox_today, "spent today, UTC", "the next day")
            for v in (limits.inbox_daily,)
            if v is not None
        ]
        + [
            (f"the daily budget of {_n(v)}", v, used.today, "spent today by all inboxes, UTC", "the next day")
            for v in (limits.daily,)
            if v is not None
        ]
        + [
            (f"the monthly budget of {_n(v)}", v, used.month, "spent this month, UTC", "the next month")
            for v in (limits.monthly,)
            if v is not None
        ]
    )
    if credits is None:
        labels = [label for label, _ in gates] + [b[0] for b in budgets]
        if not labels or limits.unknown_price == "allow":
            return None
        return f"no price is known for {model} ({basis}), so it cannot be checked against {labels[0]}; {approve}"
    for label, value in gates:
        if credits > value:
            return f"estimated {_n(credits)} credits ({basis}) is above {label}; {approve}"
    for label, value, so_far, when, frees in budgets:
        if so_far + credits > value:
            return (
                f"estimated {_n(credits)} credits would exceed {label} ({_n(so_far)} {when}); "
                f"waits for {frees} or `runwatch approve {name}`"
            )
    return None


def balance_hold(credits: float | None, balance: float | None) -> str | None:
    """Why the organization's balance holds a request, or None. Approval does not pass this: Runway
    would refuse the create anyway."""
    if credits is None or balance is None or credits <= balance:
        return None
    return (
        f"estimated {_n(credits)} credits is more than the organization's balance of {_n(max(balance, 0))} "
        "credits; waits until the balance rises (approving does not override this)"
    )


def daily_limit_hold(model: str | None, used: int, cap: int | None) -> str | None:
    """Why Runway's per-model daily task limit holds a request, or None: a create past it is certain to be
    refused with a 429, so it is not sent."""
    if cap is None or used < cap:
        return None
    return (
        f"Runway's daily task limit for {model} is reached ({used} of {cap} in the past 24 h); "
        "waits until it frees (other models go on)"
    )


def concurrency_hold(model: str | None, at_runway: int, cap: int | None) -> str | None:
    """Why Runway's per-model concurrency holds a create back for a moment, or None: every node's tasks of the
    model at Runway (and creates on their way) count."""
    if cap is None or at_runway < cap:
        return None
    return f"Runway's concurrency limit for {model} is reached ({at_runway} of {cap} at Runway, all nodes together)"


def money_hold(
    check: MoneyCheck, used: Spent, *, balance: float | None, daily_used: int, at_runway: int, approved: bool
) -> tuple[str, str] | None:
    """(code, reason) when the create may not be sent now, over every node's spending; None when it may.

    The same rules, in the same order and with the same codes, as the one node's guard
    (``runwatch.guard.MoneyGuard.hold_reason``); then Runway's concurrency (code ``concurrency``: a short wait,
    not a hold a person must look at).
    """
    reason = user_hold(check.name, check.model, check.credits, check.basis, check.limits, used, approved=approved)
    if reason:
        return "held", reason
    reason = balance_hold(check.credits, balance)
    if reason:
        return "balance", reason
    reason = daily_limit_hold(check.model, daily_used, check.daily_cap)
    if reason:
        return "daily_limit", reason
    reason = concurrency_hold(check.model, at_runway, check.model_cap)
    if reason:
        return "concurrency", reason
    return None
