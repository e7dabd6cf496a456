"""The timers of the tasks being followed, and the runs their polls go out in.

A heap of (due, order, job id). A due poll waits up to the slack (:func:`runwatch.scheduler.poll_slack`) for
others due about then; then every poll due by now goes, split into runs as long as fit in the slack at the
latency seen (:func:`runwatch.scheduler.run_length`), and one pool thread makes a run's GETs in a row
(:meth:`PollTimers.get_run`). When Runway answers slower than it did, a run stops at its budget and hands
the rest back (:data:`NOT_POLLED`) to go out again at once, in shorter runs.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from runwatch.jobs.events import NOT_POLLED
from runwatch.scheduler import run_length

__all__ = ["NOT_POLLED", "PollTimers"]


T = TypeVar("T")


class PollTimers:
    """When each followed job is next looked at (one timer per job); the latency of task GETs, which sizes the
    runs."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        # Each job's one timer. A second timer would start a second chain of polls, as each answer sets the
        # next: a job set twice keeps the earlier time, and the heap's other entry is skipped when it comes up.
        self._due: dict[str, float] = {}
        self._order = itertools.count()
        self.latency: float | None = None  # seconds per task GET, a moving average; None until one is made

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, job_id: str, at: float) -> None:
        """Look at the job at ``at``, or at its timer's time if that is earlier."""
        if self._due.get(job_id, float("inf")) <= at:
            return
        self._due[job_id] = at
        heapq.heappush(self._heap, (at, next(self._order), job_id))

    def next_due(self, slack: float) -> float:
        """When the loop should wake for polls: the first due time plus the slack it may wait."""
        self._drop_stale()
        return self._heap[0][0] + slack if self._heap else float("inf")

    def take_due(self, now: float, slack: float) -> list[str]:
        """Once the oldest due poll has waited the slack, every job due by ``now`` (once each); else nothing."""
        self._drop_stale()
        if not self._heap or self._heap[0][0] + slack > now:
            return []
        due = []
        while self._heap and self._heap[0][0] <= now:
            at, _, job_id = heapq.heappop(self._heap)
            if self._due.get(job_id) == at:
                del self._due[job_id]
                due.append(job_id)
        return due

    def _drop_stale(self) -> None:
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)

    def runs(self, items: Sequence[T], slack: float) -> list[Sequence[T]]:
        size = run_length(slack, self.latency)
        return [items[start : start + size] for start in range(0, len(items), size)]

    def get_run(
        self,
        get: Callable[[str], Any],
        tasks: Sequence[tuple[str, str]],
        budget: float,
    ) -> list[tuple[str, Any]]:
        """``get`` each (job id, task id) in a row, on a pool thread: [(job id, answer or exception)].

        Past ``budget`` seconds the rest come back as :data:`NOT_POLLED` (at least one GET is always made).
        """
        results: list[tuple[str, Any]] = []
        start = time.monotonic()
        for job_id, task_id in tasks:
            if results and time.monotonic() - start > budget:
                results.append((job_id, NOT_POLLED))
                continue
            began = time.monotonic()
            try:
                result = get(task_id)
            except Exception as exc:  # noqa: BLE001 - the engine decides what a failed poll means
                result = exc
            took, seen = time.monotonic() - began, self.latency
            self.latency = took if seen is None else seen + 0.2 * (took - seen)  # races lose a sample, no more
            results.append((job_id, result))
        return results
