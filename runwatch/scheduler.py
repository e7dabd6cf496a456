"""What to submit next and when to look at a task again, as pure functions (tested with tables).

Submission: the highest ``priority`` first; among equals, the inbox with the fewest jobs in flight (so one
busy inbox cannot starve another), then the oldest. Capacity is bounded globally (``max_in_flight``) and
per model (the configured cap, else the organization's ``maxConcurrentGenerations``): a task Runway would
only hold ``THROTTLED`` is better kept here, where it can still be cancelled for free.

Polling: Runway updates a task about every 5 s, so a task is polled every ``interval`` (with jitter, so
a thousand tasks do not poll in lockstep) unless its RUNNING progress says when it will end. Progress is
read as a rate: from two RUNNING samples, or from one sample and the last moment the task was known not
to be running yet (which makes the rate a lower bound, so the end is never predicted too early). With an
end in sight (within two intervals) the poll is aimed just after it; with the end further off the wait is
half the remaining time (at least ``interval``, at most ``6 * interval``), so a long task costs a few
GETs instead of one every interval. A task that outlives its prediction goes back to the plain interval.

Polls go out in runs: a due poll waits up to a twentieth of the interval (the slack) for others due about
then, and one thread GETs as many of them in a row as fit in the slack at the latency seen. A thousand tasks
created together come due together; waking a thread for each GET then costs more CPU than the GETs. Against
a distant Runway a run is one GET, so slow answers never delay other polls.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Candidate", "Sample", "eta", "next_poll", "pick", "poll_slack", "run_length"]


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
    waiting: Iterable[Candidate],
    *,
    now: float,
    in_flight: int,
    max_in_flight: int,
    per_inbox: Mapping[str, int],
    per_model: Mapping[str, int],
    model_cap: Callable[[str | None], int | None],
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
    status: str,
    samples: Sequence[Sample],
    *,
    now: float,
    interval: float,
    since: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds until the next GET of a task in ``status`` (THROTTLED, PENDING, RUNNING, ...).

    ``samples`` are the task's RUNNING observations, oldest first; ``since`` is the latest moment the task
    was known not to be running yet (its create, or a poll that saw it PENDING), if known.
    """
    jittered = interval * (0.9 + 0.2 * rng())
    if status != "RUNNING" or not samples:
        return jittered
    first, last = _rising_span(samples)
    if first is None and since is not None and samples[-1].at > since and samples[-1].progress > 0:
        first, last = Sample(since, 0.0), samples[-1]
    if first is None or last is None:
        return jittered
    rate = (last.progress - first.progress) / (last.at - first.at)
    remaining = (1.0 - last.progress) / rate - (now - last.at)
    if remaining <= 0:
        return jittered  # the prediction failed; nothing says the end is near
    if remaining <= 2 * interval:
        # Aim a little after the expected end; Runway's progress is coarse, so leave a margin.
        return max(interval / 5, remaining + 0.1 * interval)
    return min(6 * interval, max(jittered, remaining / 2))


def eta(samples: Sequence[Sample]) -> float | None:
    """Seconds from the last sample until the task is expected to end, from its progress so far; None when
    the samples give no rate (fewer than two, or flat)."""
    if not samples:
        return None
    first, last = _rising_span(samples)
    if first is None or last is None:
        return None
    rate = (last.progress - first.progress) / (last.at - first.at)
    return max(0.0, (1.0 - last.progress) / rate)


def _rising_span(samples: Sequence[Sample]) -> tuple[Sample | None, Sample | None]:
    """The earliest sample below the last one, and the last: the average rate of the whole run so far,
    steadier than the latest step when progress is coarse (flat repeats give no rate)."""
    last = samples[-1]
    first = None
    for s in samples[:-1]:
        if s.progress < last.progress and last.at > s.at:
            first = s
            break
    return first, (last if first else None)


def poll_slack(interval: float) -> float:
    """How long a due poll may wait for others due about then, to go out in one run."""
    return interval / 20


def run_length(slack: float, latency: float | None, most: int = 64) -> int:
    """How many GETs one thread makes in a row: as many as fit in the slack at ``latency`` each, 1 to ``most``
    (1 while the latency is not known yet)."""
    if latency is None:
        return 1
    if latency <= 0:
        return most
    return max(1, min(most, int(slack / latency)))
