"""What comes back to the engine's thread: typed events, one per kind of work, dispatched with ``match``.

Workers and callbacks (the pool, the inbox watchers, the organization read) never change a job: they post one
of these on the engine's queue and the engine decides. ``result`` is what the work returned, or the exception it
raised (every failure goes back to be decided, none is lost on a worker).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runwatch.api import Created as TaskCreated
    from runwatch.media import Placed as PlacedMedia
    from runwatch.outbox import OutputRecord
    from runwatch.workarea import Claimed, Control, Refused

__all__ = [
    "CommandsAdded",
    "Created",
    "Deleted",
    "Downloaded",
    "Event",
    "InboxItem",
    "JobEvent",
    "NodesChanged",
    "OrgRead",
    "Placed",
    "Polled",
]


@dataclass(frozen=True)
class Placed:
    """A job's local media were put where Runway can fetch them (URIs by field, what to remove later)."""

    job_id: str
    result: tuple[dict[Any, str], list[PlacedMedia]] | BaseException


@dataclass(frozen=True)
class Created:
    """Runway answered a create (its task id is recorded already), or the create failed."""

    job_id: str
    result: TaskCreated | BaseException
    sent_at: float | None = None  # monotonic time the last attempt left: a task made then cannot be running yet


class _NotPolled:
    """A poll run handed a task back unpolled (Runway got slow): look again at once."""

    def __repr__(self) -> str:
        return "NOT_POLLED"


@dataclass(frozen=True)
class Polled:
    """A task GET: its JSON body, a failure, or :data:`NOT_POLLED`."""

    job_id: str
    result: dict[str, Any] | BaseException | _NotPolled


@dataclass(frozen=True)
class Downloaded:
    """A task's outputs are in the outbox (their records), or the download failed."""

    job_id: str
    result: list[OutputRecord] | BaseException


@dataclass(frozen=True)
class Deleted:
    """Runway answered ``DELETE /v1/tasks/{id}``."""

    job_id: str
    result: BaseException | None


@dataclass(frozen=True)
class OrgRead:
    """The organization's figures were read (generation ``gen`` of the reads), or the read failed."""

    gen: int
    result: dict[str, Any] | BaseException


@dataclass(frozen=True)
class InboxItem:
    """A watcher claimed a request, refused one, or took a control file."""

    item: Claimed | Refused | Control


@dataclass(frozen=True)
class CommandsAdded:
    """A command was added to the journal, by any process on any node (the journal's notification)."""


@dataclass(frozen=True)
class NodesChanged:
    """A node stopped cleanly and handed its jobs over (the journal's notification): sweep for them now."""


NOT_POLLED = _NotPolled()
JobEvent = Placed | Created | Polled | Downloaded | Deleted
Event = JobEvent | OrgRead | InboxItem | CommandsAdded | NodesChanged
