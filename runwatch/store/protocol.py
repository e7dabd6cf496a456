"""What the engine, the money guard and the commands need of a journal, and nothing more.

SQLite (:class:`runwatch.store.sqlite.Journal`, the default) and PostgreSQL
(:class:`runwatch.store.postgres.PostgresJournal`, for a journal several machines share) implement it; the engine
does not know which one it has. The money rule lives in three of them:
:meth:`Store.record_intent` is committed before a create leaves, :meth:`Store.record_task` the moment Runway
names the task, :meth:`Store.clear_intent` only on an answer proving nothing was made. The sending thread calls
those three by job id; every other write comes from the engine's thread.

Several nodes share money only through a shared journal: given a :class:`~runwatch.budget.MoneyCheck`,
``record_intent`` of a journal several nodes share checks the create against every node's spending and records
the intent in one transaction (or raises :class:`~runwatch.errors.MoneyHeld` and records nothing). A journal one
node owns (SQLite) records it as before: that node's own guard has decided already.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from runwatch.budget import MoneyCheck
    from runwatch.jobs.job import Job

__all__ = ["Command", "Intents", "Listening", "Store"]


@dataclass(frozen=True)
class Command:
    """A command another process left for the daemon (``runwatch cancel NAME`` and friends)."""

    id: int
    kind: str
    name: str


class Intents(Protocol):
    """The small interface of the thread that sends a create: it records by job id, never through a Job."""

    def record_intent(self, job_id: str, *, first: bool, check: MoneyCheck | None = None) -> str:
        """Commit the intent (the attempt counted on the first try); with ``check``, a shared journal first
        checks the create against every node's spending in the same transaction and raises
        :class:`~runwatch.errors.MoneyHeld` (recording nothing) when it may not go."""
        ...

    def clear_intent(self, job_id: str) -> None: ...

    def record_task(self, job_id: str, task_id: str, estimated_credits: float | None) -> None: ...


class Listening(Protocol):
    """A connection of its own that hears of new commands the moment they are added; closed at the stop."""

    def close(self) -> None: ...


class Store(Intents, Protocol):
    """Claims, state changes, listings, spending sums and commands."""

    def add_many(self, jobs: Sequence[Job]) -> None:
        """Record newly claimed jobs in one commit."""
        ...

    def add(self, job: Job) -> Job: ...

    def update(self, job: Job, **changes: Any) -> Job:
        """Apply ``changes`` to ``job`` and commit them durably before returning."""
        ...

    def probe(self) -> None:
        """A small durable write that changes no job; raises when the journal refuses writes."""
        ...

    def save_waiting(self, jobs: Iterable[Job]) -> None:
        """What polls learned of tasks waiting at Runway, in one commit that need not be durable."""
        ...

    def get(self, job_id: str) -> Job | None: ...

    def find(self, name: str) -> Job | None: ...

    def active(self, inbox: str | None = None) -> list[Job]: ...

    def jobs(self, limit: int = 200, name: str | None = None) -> list[Job]: ...

    def listing(
        self,
        *,
        state: str | None = None,
        inbox: str | None = None,
        name: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs newest first (by ``seq``), filtered by exact state, inbox and name, only those with a ``seq``
        below ``before`` when given: a page of the HTTP API, one indexed query whatever the journal's size."""
        ...

    def recently_finished(self, limit: int) -> list[Job]: ...

    def known_dirs(self) -> set[str]: ...

    def counts(self) -> dict[str, int]: ...

    def add_command(self, kind: str, name: str) -> int: ...

    def pending_commands(self) -> list[Command]: ...

    def finish_command(self, command_id: int, result: str) -> None: ...

    def command_result(self, command_id: int) -> str | None: ...

    def money_hold(self, check: MoneyCheck) -> tuple[str, str] | None:
        """(code, reason) when every node's spending together holds the create back now; None when it may go
        (always None for a journal one node owns). Records nothing: ``record_intent`` checks again."""
        ...

    def listen_commands(self, wake: Callable[[], None], log: Any) -> Listening | None:
        """Call ``wake`` (from a thread of its own) whenever a command is added, from any process or node; None
        when the journal cannot tell (the daemon reads commands on its usual turn)."""
        ...

    def close(self) -> None: ...
