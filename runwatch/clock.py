"""One injected clock: monotonic time for waiting, epoch and UTC time for what people read and budgets count.

Every back-off, timer and lease waits on :meth:`Clock.monotonic`, which a wall-clock step (NTP, a VM resumed, a
person with ``date -s``) cannot move. Wall time is only written down (status files, the journal) or used where a
calendar matters (the UTC day of a budget). Tests pass a :class:`ManualClock` and move it by hand.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "iso", "now_iso", "parse_iso"]


class Clock(Protocol):
    """What runwatch asks of time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never steps: for every wait and deadline."""
        ...

    def time(self) -> float:
        """Seconds since the epoch: for records a person or another process reads."""
        ...

    def now(self) -> datetime:
        """The current UTC time, timezone-aware."""
        ...


class SystemClock:
    """The machine's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told: both kinds of time move together unless the wall is stepped."""

    def __init__(self, start: datetime | None = None) -> None:
        self._mono = 1000.0
        self._wall = (start or datetime(2026, 1, 1, tzinfo=UTC)).timestamp()

    def monotonic(self) -> float:
        return self._mono

    def time(self) -> float:
        return self._wall

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._wall, UTC)

    def advance(self, seconds: float) -> None:
        self._mono += seconds
        self._wall += seconds

    def step_wall(self, seconds: float) -> None:
        """The wall clock jumps (NTP, a resumed VM); the monotonic clock does not."""
        self._wall += seconds


def iso(moment: datetime) -> str:
    """ISO 8601 UTC at seconds precision, the form status files and the journal show."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_iso() -> str:
    """Now as ISO 8601 UTC, seconds precision: what status files and the journal show."""
    return iso(datetime.now(UTC))


def parse_iso(stamp: str | None) -> datetime | None:
    """A time as the journal, status files and markers write it (a naive one taken as UTC); None if unreadable."""
    if not stamp:
        return None
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
