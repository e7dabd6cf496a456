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

__all__ = ["ClaimRow", "Command", "Intents", "Listening", "NodeRow", "Store", "TakenOver"]


@dataclass(frozen=True)
class Command:
    """A command another process left for the daemon (``runwatch cancel NAME`` and friends)."""

    id: int
    kind: str
    name: str


@dataclass(frozen=True)
class NodeRow:
    """A node as ``runwatch nodes`` shows it; ages and offsets in seconds, by the journal's clock."""

    name: str
    host: str
    pid: int
    version: str
    started_at: str
    heartbeat_age: float
    clock_offset: float | None  # the node's clock minus the journal's
    stopped: bool
    jobs: int  # unfinished jobs it owns


@dataclass(frozen=True)
class ClaimRow:
    """A request file's claim: the file (inbox-relative path, identity as the claiming node saw it) and its job."""

    inbox: str
    path: str
    identity: str
    job_id: str


@dataclass(frozen=True)
class TakenOver:
    """A job a node took over, and the node that had it (None: nobody did)."""

    job: Job
    from_node: str | None


class Intents(Protocol):
    """The small interface of the thread that sends a create: it records by job id, never through a Job."""

    def record_intent(self, job_id: str, *, first: bool, check: MoneyCheck | None = None) -> str:
        """Commit the intent (the attempt counted on the first try); with ``check``, a shared journal first
        checks the create against every node's spending in the same transaction and raises
        :class:`~runwatch.errors.MoneyHeld` (recording nothing) when it may not go. A job that has a task id
        raises :class:`~runwatch.errors.TaskNamedAlready`: it never sends a second create."""
        ...

    def clear_intent(self, job_id: str) -> None: ...

    def record_task(self, job_id: str, task_id: str, estimated_credits: float | None) -> None: ...


class Listening(Protocol):
    """A connection of its own that hears of new commands the moment they are added; closed at the stop."""

    def close(self) -> None: ...


class Store(Intents, Protocol):
    """Claims, state changes, listings, spending sums and commands."""

    def add_many(self, jobs: Sequence[Job]) -> set[str]:
        """Record newly claimed jobs in one commit; the ids recorded. On a journal several nodes share, a job
        another node recorded first (it took the claim over while this node could not reach the journal) is
        left out: that node follows it."""
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

    # -- nodes (one journal shared by several daemons; a local journal has one node that owns everything) --

    def join(self, name: str, lease: float, *, host: str, pid: int, version: str, node_time: float) -> None:
        """Register this daemon as node ``name``; raises JournalError while another live node has the name.
        From then on the jobs it records are its own, under a lease of ``lease`` seconds."""
        ...

    def beat(self, node_time: float) -> set[str]:
        """The heartbeat, and the leases of every unfinished job this node owns renewed; their ids."""
        ...

    def take_over(self, inboxes: Sequence[str], limit: int, *, mine_too: bool = False) -> list[TakenOver]:
        """Unfinished jobs of ``inboxes`` whose lease ran out, made this node's (``mine_too``: and those its
        name already owns)."""
        ...

    def own(self, job_id: str) -> bool:
        """An ended job brought back on purpose (a retry) becomes this node's; False when it has not ended."""
        ...

    def leave(self) -> int:
        """A clean stop: this node's jobs handed over at once; how many."""
        ...

    def nodes(self) -> list[NodeRow]: ...

    def claim(self, inbox: str, path: str, identity: str, job_id: str) -> bool:
        """Whether this node may rename the request file ``path`` (as ``identity`` says it is) into job dir
        ``job_id``: the journal decides among the nodes."""
        ...

    def unclaim(self, inbox: str, path: str, identity: str, job_id: str) -> None:
        """The rename of a won claim truly failed: the file may be claimed again."""
        ...

    def claims_elsewhere(self, inbox: str) -> set[str]:
        """Job ids of claims other live nodes hold: their job dirs are not this node's to settle or take."""
        ...

    def adopt_claim(self, inbox: str, job_id: str) -> bool:
        """A job dir with no job in the journal: True when this node is the one to take it."""
        ...

    def orphan_claims(self, inboxes: Sequence[str]) -> list[ClaimRow]:
        """Claims by nodes no longer live that the journal has no job for."""
        ...

    def money_hold(self, check: MoneyCheck) -> tuple[str, str] | None:
        """(code, reason) when every node's spending together holds the create back now; None when it may go
        (always None for a journal one node owns). Records nothing: ``record_intent`` checks again."""
        ...

    def listen_commands(
        self, wake: Callable[[], None], log: Any, nodes: Callable[[], None] | None = None
    ) -> Listening | None:
        """Call ``wake`` (from a thread of its own) whenever a command is added, from any process or node, and
        ``nodes`` whenever a node stops cleanly; None when the journal cannot tell (the daemon reads commands on
        its usual turn)."""
        ...

    def close(self) -> None: ...
