"""The configuration's money and pace: ``[budget]`` (daily and monthly credits, unknown prices) and
``[scheduler]`` (how many tasks, uploads and downloads at once, per-model limits, rescans).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast, get_args

from runwatch.configtable import _Table

UnknownPrice = Literal["hold", "allow"]


@dataclass(frozen=True)
class BudgetConfig:
    daily: float | None = None
    monthly: float | None = None
    unknown_price: UnknownPrice = "hold"


@dataclass(frozen=True)
class SchedulerConfig:
    max_in_flight: int = 100  # tasks submitted and not finished, all inboxes together
    max_uploads: int = 4
    max_downloads: int = 4
    per_model: int | None = None  # None: the organization's maxConcurrentGenerations
    rescan: float = 30.0  # seconds between full rescans of each inbox


def _budget(t: _Table) -> BudgetConfig:
    return BudgetConfig(
        daily=t.number("daily", None, zero_ok=True, unit=" (credits)"),
        monthly=t.number("monthly", None, zero_ok=True, unit=" (credits)"),
        unknown_price=cast(UnknownPrice, t.string("unknown_price", "hold", choices=get_args(UnknownPrice))),
    )


def _scheduler(t: _Table) -> SchedulerConfig:
    d = SchedulerConfig()
    return SchedulerConfig(
        max_in_flight=t.integer("max_in_flight", d.max_in_flight, minimum=1),
        max_uploads=t.integer("max_uploads", d.max_uploads, minimum=1),
        max_downloads=t.integer("max_downloads", d.max_downloads, minimum=1),
        per_model=t.integer("per_model", None, minimum=1),
        rescan=t.number("rescan", d.rescan, unit=" (seconds)"),
    )
