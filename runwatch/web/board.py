"""What the dashboard's overview reads of the daemon, and the figures it shows.

:class:`Board` holds callables the server's threads may call: the inboxes with their watchers' health, the budget
configured now, the organization's figures at the money guard's last look. :func:`overview` gathers one page's
worth. Spending today and this month is counted from the journal (the money guard's own ledger belongs to the
engine's thread) with the same rule the guard uses (:func:`runwatch.budget.charge_of`), and kept for
:data:`SPENT_TTL` seconds: a journal of 10,000 jobs is read at most that often, however many people look.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from runwatch.budget import charge_of, spent
from runwatch.jobs.states import State

if TYPE_CHECKING:
    from runwatch.config import BudgetConfig, InboxConfig
    from runwatch.store import Store
    from runwatch.web.metrics import RunwayContact

__all__ = ["SPENT_TTL", "Board", "InboxHealth", "overview"]

SPENT_TTL = 10.0


@dataclass(frozen=True)
class InboxHealth:
    """One inbox as the overview shows it."""

    config: InboxConfig
    health: str  # watching, polling, paused or unmounted
    detail: str


@dataclass
class Board:
    inboxes: Callable[[], list[InboxHealth]]
    budget: Callable[[], BudgetConfig]
    organization: Callable[[], Mapping[str, Any] | None]
    contact: RunwayContact
    _cache: tuple[float, dict[str, Any]] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def inbox(self, name: str) -> InboxConfig | None:
        return next((i.config for i in self.inboxes() if i.config.name == name), None)

    def spending(self, store: Store) -> dict[str, Any]:
        """Credits spent today and this month (UTC), all inboxes and each one; cached for SPENT_TTL seconds."""
        with self._lock:
            if self._cache is not None and time.monotonic() - self._cache[0] < SPENT_TTL:
                return self._cache[1]
            now = datetime.now(UTC)
            charges = [c for c in (charge_of(job, now) for job in store.jobs(limit=2**62)) if c is not None]
            everything = spent(charges, "", now)
            per_inbox = {c.inbox for c in charges}
            figures = {
                "today": everything.today,
                "month": everything.month,
                "inbox_today": {name: spent(charges, name, now).inbox_today for name in per_inbox},
            }
            self._cache = (time.monotonic(), figures)
            return figures


def health_of(config: InboxConfig, paused: bool, mode: str) -> InboxHealth:
    """An inbox's health from its watcher: paused (folder there but unusable) or unmounted (folder missing)."""
    if paused:
        if not config.path.is_dir():
            return InboxHealth(config, "unmounted", f"{config.path} is missing (an unmounted share?)")
        return InboxHealth(config, "paused", f"{config.path} cannot be used")
    if mode == "polling":
        return InboxHealth(config, "polling", "looked at every few seconds (no change notices on this file system)")
    return InboxHealth(config, "watching", "change notices from the kernel")


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "not yet"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _share(spent_now: float, limit: float | None) -> dict[str, Any]:
    """A figure against its budget: the percent bar shows it (capped at 100)."""
    percent = None if not limit else min(100, round(spent_now * 100 / limit))
    return {"spent": round(spent_now, 2), "limit": limit, "percent": percent}


def overview(board: Board, store: Store) -> dict[str, Any]:
    """Everything the overview page shows."""
    counts = store.counts()
    states = [(state.value, counts.get(state.value, 0)) for state in State]
    money = board.spending(store)
    budget = board.budget()
    inboxes = [
        {
            "name": i.config.name,
            "path": str(i.config.path),
            "outbox": str(i.config.outbox),
            "health": i.health,
            "detail": i.detail,
            "today": _share(money["inbox_today"].get(i.config.name, 0.0), i.config.budget_daily),
            "approve_above": i.config.approve_above,
        }
        for i in board.inboxes()
    ]
    org = board.organization() or {}
    tier_raw, usage_raw = org.get("tier"), org.get("usage")
    tier: Mapping[str, Any] = tier_raw if isinstance(tier_raw, dict) else {}
    usage: Mapping[str, Any] = usage_raw if isinstance(usage_raw, dict) else {}
    used: Mapping[str, Any] = usage["models"] if isinstance(usage.get("models"), dict) else {}
    models = []
    for model, limits in sorted((tier.get("models") or {}).items()):
        if not isinstance(limits, dict):
            continue
        daily = limits.get("maxDailyGenerations")
        count = used.get(model, {}).get("dailyGenerations", 0) if isinstance(used.get(model), dict) else 0
        models.append(
            {
                "model": model,
                "daily_used": count,
                "daily_max": daily,
                "concurrent": limits.get("maxConcurrentGenerations"),
                "percent": min(100, round(count * 100 / daily)) if isinstance(daily, int) and daily > 0 else None,
            }
        )
    contact = board.contact
    answered = None if contact.answered_at is None else time.monotonic() - contact.answered_at
    return {
        "states": states,
        "total": sum(counts.values()),
        "inboxes": inboxes,
        "today": _share(money["today"], budget.daily),
        "month": _share(money["month"], budget.monthly),
        "balance": org.get("creditBalance"),
        "monthly_cap": tier.get("maxMonthlyCreditSpend"),
        "models": models,
        "runway_answered": _ago(answered),
        "runway_problem": contact.problem(),
        "org_known": bool(org),
    }
