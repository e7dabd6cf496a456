"""What to submit next and when to look at a task again, as pure functions (tested with tables).

Submission: the highest ``priority`` first; among equals, the inbox with the fewest jobs in flight (so one
busy inbox cannot starve another), then the oldest. Capacity is bounded globally (``max_in_flight``) and
per model (the configured cap, else the organization's ``maxConcurrentGenerations``): a task Runway would
only hold ``THROTTLED`` is better kept here, where it can still be cancelled for free.

Polling: Runway updates a task about every 5 s, so a task is polled every ``interval`` (with jitter, so
a thousand tasks do not poll in lockstep) — except when its RUNNING progress says it will end sooner:
then the poll is aimed just after the expected end, never sooner than ``interval / 5``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Candidate", "Sample", "next_poll", "pick"]


@dataclass(frozen=True)
class Candidate:
    """A job waiting to be submitted, as the scheduler sees it."""

    job_id: str
    inbox: str
    model: str | None
    priority: int
    seq: int
    not_before: float | None = None


@dataclass(frozen=True)
class Sample:
    """One observation of a running task: when, and the progress Runway reported."""

    at: float
    progress: float


def pick(
    waiting: Iterable[Candidate], *, now: float, in_flight: int, max_in_flight: int,
    per_inbox: Mapping[str, int], per_model: Mapping[str, int], model_cap: Callable[[str | None], int | None],
    paused_models: Mapping[str, float] | None = None,
) -> Candidate | None:
    """The next job to submit, or None when nothing may go now."""
    if in_flight >= max_in_flight:
        return None
    paused = paused_models or {}
    best: tuple[tuple[int, int, int], Candidate] | None = None
    for cand in waiting:
        if cand.not_before is not None and cand.not_before > now:
            continue
        if cand.model is not None and paused.get(cand.model, 0.0) > now:
            continue
        cap = model_cap(cand.model)
        if cap is not None and per_model.get(cand.model or "", 0) >= cap:
            continue
        key = (-cand.priority, per_inbox.get(cand.inbox, 0), cand.seq)
        if best is None or key < best[0]:
            best = (key, cand)
    return best[1] if best else None


def next_poll(
    status: str, samples: Sequence[Sample], *, now: float, interval: float,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds until the next GET of a task in ``status`` (THROTTLED, PENDING, RUNNING, ...)."""
    jittered = interval * (0.9 + 0.2 * rng())
    floor = interval / 5
    if status != "RUNNING" or len(samples) < 2:
        return jittered
    first, last = _rising_span(samples)
    if first is None or last is None:
        return jittered
    rate = (last.progress - first.progress) / (last.at - first.at)
    remaining = (1.0 - last.progress) / rate - (now - last.at)
    if remaining >= jittered:
        return jittered
    # Aim a little after the expected end; Runway's progress is coarse, so leave a margin.
    return max(floor, remaining + 0.1 * interval)


def _rising_span(samples: Sequence[Sample]) -> tuple[Sample | None, Sample | None]:
    """The first and last samples of the latest stretch where progress rose (ignoring flat repeats)."""
    last = samples[-1]
    first = None
    for s in samples[:-1]:
        if s.progress < last.progress and last.at > s.at:
            first = s
            break
    return first, (last if first else None)
