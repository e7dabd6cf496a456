"""The record of one request's life, as the journal keeps it and the status file shows it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from runwatch.jobs.states import FINAL, State

__all__ = ["FIELDS", "Job"]


@dataclass
class Job:
    """One request's life. Only the engine's thread changes a followed job (see ``runwatch.jobs.engine``)."""

    id: str
    name: str
    inbox: str
    format: str
    state: State = State.ACCEPTED
    seq: int = 0
    endpoint: str | None = None
    model: str | None = None
    priority: int = 0
    job_dir: str | None = None
    request_path: str | None = None
    body: Any = None
    task_id: str | None = None
    estimated_credits: float | None = None
    credits: float | None = None
    progress: float | None = None
    error: Any = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    placed: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    create_started_at: str | None = None
    attempts: int = 0
    not_before: float | None = None
    cancel_requested: bool = False
    approved: bool = False
    created_at: str = ""
    updated_at: str = ""
    finished_at: str | None = None
    outbox: str | None = None
    """Where outputs and the status file go when that is not an inbox's outbox (``runwatch submit``)."""
    credits_estimated: bool = False
    """``credits`` is runwatch's estimate: the task existed but its final cost could not be read."""

    def __post_init__(self) -> None:
        self.state = State(self.state)

    @property
    def final(self) -> bool:
        return self.state in FINAL

    @property
    def unconfirmed_create(self) -> bool:
        """The create may have reached Runway, but no task id was recorded."""
        return self.create_started_at is not None and self.task_id is None

    def apply(self, **changes: Any) -> None:
        """Set fields already recorded elsewhere (by the sending thread, keyed by id) on this copy."""
        for key, value in changes.items():
            if key not in FIELDS or key in ("id", "seq"):
                raise KeyError(f"{key!r} is not a job field that may change")
            setattr(self, key, State(value) if key == "state" else value)


FIELDS = tuple(f.name for f in fields(Job))
