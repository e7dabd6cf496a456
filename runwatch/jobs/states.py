"""A job's states and the one table of the moves between them.

``Book.move`` checks every change of state against :data:`TRANSITIONS`; a move the table does not list is a bug
and raises :class:`IllegalTransition` instead of writing a status file that lies. A move to the same state is
always allowed: it records new fields (progress, a later ``not_before``) without a change of state.
"""

from __future__ import annotations

from enum import StrEnum

from runwatch.errors import RunwatchError

__all__ = [
    "ACTIVE",
    "AT_RUNWAY",
    "FINAL",
    "INITIAL",
    "IN_FLIGHT",
    "RETRYABLE",
    "TRANSITIONS",
    "IllegalTransition",
    "State",
    "check_move",
]


class State(StrEnum):
    """Where a request is. The values are the names status files, the journal and the commands show."""

    def __new__(cls, value: str, doc: str = "") -> State:
        member = str.__new__(cls, value)
        member._value_ = value
        member.__doc__ = doc  # each state documents itself: `help(State.HELD)`, and the README's table
        return member

    ACCEPTED = ("accepted", "Claimed and valid; waiting for its turn (or for a back-off to pass).")
    HELD = (
        "held",
        "Not sent: a budget, the balance, a daily limit or an approval stands in the way (the reason in ``error``).",
    )
    UPLOADING = ("uploading", "Its local media are being put where Runway can fetch them.")
    SUBMITTED = ("submitted", "Runway answered the create with a task id; nothing more is known yet.")
    THROTTLED = ("throttled", "Runway queued the task behind the organization's concurrency limit.")
    PENDING = ("pending", "Runway accepted the task and has not started it.")
    RUNNING = ("running", "Runway is working on the task (``progress`` from 0 to 1).")
    DOWNLOADING = ("downloading", "The task succeeded; its outputs are being fetched into the outbox.")
    SUCCEEDED = ("succeeded", "Every output is in the outbox.")
    REJECTED = (
        "rejected",
        "Refused before anything was spent: the request file or the API's validation found problems.",
    )
    FAILED = (
        "failed",
        "Ended without outputs: the task failed at Runway, an upload or download gave up, or it cannot be sent.",
    )
    CANCELLED = ("cancelled", "Cancelled on request, at Runway too when a task existed.")
    NEEDS_ATTENTION = (
        "needs_attention",
        "A create may have reached Runway without its answer being recorded: never sent again by itself.",
    )


S = State
FINAL = frozenset({S.SUCCEEDED, S.REJECTED, S.FAILED, S.CANCELLED, S.NEEDS_ATTENTION})
ACTIVE = frozenset(State) - FINAL
AT_RUNWAY = frozenset({S.SUBMITTED, S.THROTTLED, S.PENDING, S.RUNNING})
"""A task exists at Runway and has not ended."""
IN_FLIGHT = AT_RUNWAY | {S.UPLOADING}
INITIAL = frozenset({S.ACCEPTED, S.HELD, S.REJECTED})
"""The states a job can be recorded in when it is claimed."""
RETRYABLE = frozenset({S.NEEDS_ATTENTION, S.FAILED, S.CANCELLED})
"""The states ``runwatch retry`` resubmits from, on purpose."""

# Before a task exists: a create's answer can hold it again (daily limit, credits), put it back for a back-off,
# refuse it (4xx), fail it, or leave it unknown (needs_attention). A create with no media leaves from accepted.
_BEFORE_TASK = frozenset({S.ACCEPTED, S.HELD, S.UPLOADING, S.SUBMITTED, S.REJECTED, S.FAILED, S.CANCELLED})
_WAITING = AT_RUNWAY | {S.DOWNLOADING, S.FAILED, S.CANCELLED}

TRANSITIONS: dict[State, frozenset[State]] = {
    S.ACCEPTED: _BEFORE_TASK | {S.NEEDS_ATTENTION},
    # held → needs_attention: a create whose answer never came waits held while Runway's counts are read, and
    # goes to a person when they do not prove it made nothing.
    S.HELD: frozenset({S.ACCEPTED, S.HELD, S.CANCELLED, S.FAILED, S.NEEDS_ATTENTION}),
    S.UPLOADING: _BEFORE_TASK | {S.NEEDS_ATTENTION},
    S.SUBMITTED: _WAITING,
    S.THROTTLED: _WAITING,
    S.PENDING: _WAITING,
    S.RUNNING: _WAITING,
    S.DOWNLOADING: frozenset({S.DOWNLOADING, S.SUCCEEDED, S.FAILED}),
    S.SUCCEEDED: frozenset(),
    S.REJECTED: frozenset(),
    S.FAILED: frozenset({S.ACCEPTED}),
    S.CANCELLED: frozenset({S.ACCEPTED}),
    S.NEEDS_ATTENTION: frozenset({S.ACCEPTED}),
}


class IllegalTransition(RunwatchError):
    """A move the table does not allow: a bug in runwatch, never a user's mistake."""

    def __init__(self, job: str, old: State, new: State) -> None:
        super().__init__(f"job {job}: {old} cannot become {new}")
        self.old, self.new = old, new


def check_move(job: str, old: State, new: State) -> None:
    """Raise :class:`IllegalTransition` unless ``old`` may become ``new``."""
    if new != old and new not in TRANSITIONS[old]:
        raise IllegalTransition(job, old, new)
