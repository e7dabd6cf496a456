"""The journal as the engine writes it, on a real SQLite journal on a small tmpfs that is filled and freed:
a change the disk refuses is kept in memory and written later; a create's intent is never kept for later."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from runwatch.errors import JournalError, JournalUnwritable
from runwatch.jobs.job import Job
from runwatch.jobs.ledger import IntentNotRecorded, Ledger
from runwatch.jobs.states import State
from runwatch.simulator import Simulator
from runwatch.store import Journal, Store
from runwatch.workrecords import INTENT_MARK

from .rig import SEED_REQUESTS, Rig
from .test_full_disks import Disk, disks

__all__ = ["disks"]


@pytest.fixture
def full(disks: Callable[[str, str], Disk]) -> Iterator[tuple[Disk, Journal, Ledger, Job]]:
    disk = disks("state", "2m")
    journal = Journal(disk.path / "journal.sqlite3")
    job = Job(id="20261201T000000Z-00000001", name="clip", inbox="in", format="json")
    journal.add(job)
    ledger = Ledger(journal, structlog.get_logger("test"))
    disk.fill()
    yield disk, journal, ledger, job
    journal.close()


class TestRefusedWrites:
    def test_a_refused_update_leaves_the_job_as_it_was(self, full: tuple[Disk, Journal, Ledger, Job]) -> None:
        """The journal's own update commits first and changes the job only then: a refused one changes nothing."""
        _, journal, _, job = full
        with pytest.raises(JournalUnwritable, match="full"):
            journal.update(job, state=State.HELD, error={"code": "x"})
        assert job.state == State.ACCEPTED and job.error is None

    def test_a_refused_change_is_kept_and_written_later(self, full: tuple[Disk, Journal, Ledger, Job]) -> None:
        """Through the ledger the change is applied in memory and owed; once the disk has room, flush() writes
        the owed changes in order and the journal ends as if nothing had failed."""
        disk, journal, ledger, job = full
        ledger.update(job, state=State.HELD, error={"code": "budget"})
        ledger.update(job, state=State.ACCEPTED, error=None, not_before=5.0)
        assert (job.state, job.error, job.not_before) == (State.ACCEPTED, None, 5.0)
        assert not ledger.healthy and ledger.owed == 1 and "full" in (ledger.error or "")
        assert not ledger.flush()
        disk.free()
        assert ledger.flush() and ledger.healthy
        row = journal.get(job.id)
        assert row is not None and (row.state, row.error, row.not_before) == (State.ACCEPTED, None, 5.0)

    def test_the_task_id_is_kept_and_the_intent_is_never_owed(self, full: tuple[Disk, Journal, Ledger, Job]) -> None:
        """A create's intent that cannot be committed raises (the create must not go); a task id Runway named
        is kept and written later, never lost."""
        disk, journal, ledger, job = full
        with pytest.raises(IntentNotRecorded):
            ledger.record_intent(job.id, first=True)
        ledger.record_task(job.id, "6f6f6f6f-0000-4000-8000-000000000000", 2.0)
        assert ledger.owes(job.id)
        with pytest.raises(IntentNotRecorded, match="last changes"):  # still behind: no create for this job
            ledger.record_intent(job.id, first=False)
        disk.free()
        assert ledger.flush()
        row = journal.get(job.id)
        assert row is not None and row.task_id == "6f6f6f6f-0000-4000-8000-000000000000" and row.state == "submitted"

    def test_a_write_refused_for_good_is_not_kept(self, full: tuple[Disk, Journal, Ledger, Job]) -> None:
        """A constraint the journal refuses (not the disk) raises as it always did, and blocks nothing."""
        disk, journal, ledger, job = full
        disk.free()
        other = Job(id="20261201T000000Z-00000002", name="other", inbox="in", format="json")
        journal.add(other)
        ledger.update(job, task_id="6f6f6f6f-0000-4000-8000-000000000001")
        with pytest.raises(JournalError) as refused:
            ledger.update(other, task_id="6f6f6f6f-0000-4000-8000-000000000001")
        assert not isinstance(refused.value, JournalUnwritable) and ledger.healthy and other.task_id is None


class _ReadsFailAfterAnswers:
    """The daemon's journal, whose reads fail for ``seconds`` from the moment a create's task id is recorded:
    a database that restarts between Runway's answer and the engine's look at the job."""

    def __init__(self, store: Store, seconds: float) -> None:
        self.store, self.seconds = store, seconds
        self.until = 0.0
        self.refused = threading.Event()

    def record_task(self, job_id: str, task_id: str, estimated_credits: float | None) -> None:
        self.store.record_task(job_id, task_id, estimated_credits)
        self.until = time.monotonic() + self.seconds

    def get(self, job_id: str) -> Job | None:
        if time.monotonic() < self.until:
            self.refused.set()
            raise JournalUnwritable("journal: the server restarts")
        return self.store.get(job_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class TestUnreadableAfterAnAnswer:
    def test_an_answer_handled_later_is_not_sent_again(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Runway answered a create, but the journal could not be read when the engine took the answer: the
        answer is handled again once it can, and meanwhile the request, still accepted, is not sent again."""
        rig = rig_factory(sim).start()
        assert rig.daemon is not None
        ledger = rig.daemon.engine.ledger
        journal = _ReadsFailAfterAnswers(ledger.store, seconds=1.5)
        ledger.store = journal  # type: ignore[assignment]
        with capture_logs() as logs:
            rig.drop("speech", SEED_REQUESTS["text_to_speech"][0])
            status = rig.wait("speech", timeout=30)
        assert journal.refused.is_set()
        assert any(e["event"] == "engine.journal_unreadable" and e["answer"] == "Created" for e in logs)
        assert sim.create_count() == 1 and sim.duplicate_creates() == []
        assert status["state"] == "succeeded" and status["task_id"]
        rig.check_outputs(status)


class _LooksForMarkers:
    """The daemon's journal, refusing the first intent as a database cut off would, and noting for every intent
    whether the work area's marker stood already."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.marked: list[bool] = []

    def record_intent(self, job_id: str, *, first: bool, check: Any = None) -> str:
        job = self.store.get(job_id)
        assert job is not None and job.job_dir is not None
        self.marked.append((Path(job.job_dir) / INTENT_MARK).exists())
        if len(self.marked) == 1:
            raise JournalUnwritable("journal: the server restarts")
        return self.store.record_intent(job_id, first=first, check=check)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class TestIntentBeforeMarker:
    def test_no_marker_without_a_recorded_intent(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """The journal's intent is recorded before the work area's marker is written: an intent the journal
        refuses leaves no marker (which a node taking the job over would take for a create sent), and the
        create goes once the journal takes it."""
        rig = rig_factory(sim).start()
        assert rig.daemon is not None
        ledger = rig.daemon.engine.ledger
        journal = _LooksForMarkers(ledger.store)
        ledger.store = journal  # type: ignore[assignment]
        rig.drop("speech", SEED_REQUESTS["text_to_speech"][0])
        status = rig.wait("speech", timeout=30)
        assert journal.marked == [False, False]
        assert status["state"] == "succeeded" and sim.create_count() == 1
