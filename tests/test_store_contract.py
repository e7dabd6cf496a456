"""The journal's contract: every Store method, run against both backends (SQLite and a real PostgreSQL server)
with the same assertions. What one backend does, the other does; the engine cannot tell them apart."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runwatch.errors import JournalError, TaskNamedAlready
from runwatch.jobs.job import Job
from runwatch.jobs.states import State
from runwatch.store import Journal, Store

Opener = Callable[[], Store]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the same journal again and again, as separate processes would: a second instance sees only what
    the first committed."""
    if request.param == "sqlite":
        path = tmp_path / "journal.sqlite3"

        def make() -> Store:
            return Journal(path)
    else:
        from runwatch.store.postgres import PostgresJournal

        url: str = request.getfixturevalue("pg_url")

        def make() -> Store:
            return PostgresJournal(url)

    opened: list[Store] = []

    def opener() -> Store:
        journal = make()
        opened.append(journal)
        return journal

    yield opener
    for journal in opened:
        journal.close()


def _job(job_id: str, name: str = "clip", inbox: str = "main", **fields: object) -> Job:
    return Job(id=job_id, name=name, inbox=inbox, format="json", endpoint="text_to_video", model="veo3.1", **fields)  # type: ignore[arg-type]


def _full_job() -> Job:
    """A job with every field away from its default, JSON fields nested and keys in no sorted order."""
    return Job(
        id="20261128T101500Z-0a1b2c3d",
        name="forest walk",
        inbox="main",
        format="toml",
        state=State.RUNNING,
        endpoint="image_to_video",
        model="gen4_turbo",
        priority=-3,
        job_dir="/srv/inbox/.runwatch/jobs/20261128T101500Z-0a1b2c3d",
        request_path="/srv/inbox/.runwatch/jobs/20261128T101500Z-0a1b2c3d/forest walk.toml",
        body={"promptText": "a forest, é ✓", "ratio": "1280:720", "duration": 5, "seed": 4294967295, "x": [1.5, None]},
        task_id="a1b2c3d4-0000-4000-8000-000000000001",
        estimated_credits=25.0,
        credits=24.5,
        progress=0.125,
        error={"code": "rate_limited", "message": "later", "retry": {"after": 2.5}},
        outputs=[{"file": "forest walk.mp4", "bytes": 3, "sha256": "ab", "index": 0}],
        placed=[{"transport": "s3", "key": "runwatch/x.jpg"}],
        history=[{"state": "accepted", "at": "2026-11-28T10:15:00.000Z"}],
        create_started_at="2026-11-28T10:15:01.000Z",
        attempts=2,
        not_before=1795860000.25,
        cancel_requested=True,
        approved=True,
        created_at="2026-11-28T10:15:00.000Z",
        finished_at="2026-11-28T10:20:00.000Z",
        outbox="/srv/out",
        credits_estimated=True,
    )


class TestJobs:
    def test_every_field_comes_back_as_written(self, open_journal: Opener) -> None:
        """A job read by another instance equals the one added: every field, JSON key order included."""
        journal = open_journal()
        job = journal.add(_full_job())
        again = open_journal().get(job.id)
        assert again == job
        assert again is not None and list(again.body) == list(job.body) and again.seq == 1
        assert isinstance(again.state, State) and again.updated_at.endswith("Z")

    def test_add_many_numbers_new_jobs_in_order(self, open_journal: Opener) -> None:
        """Jobs added together get the next numbers in the order given, and a created_at unless they had one."""
        journal = open_journal()
        journal.add_many([_job("a"), _job("b", created_at="2026-01-01T00:00:00.000Z"), _job("c")])
        journal.add(_job("d"))
        other = open_journal()
        seen = {job.id: job for job in other.jobs()}
        assert [seen[i].seq for i in "abcd"] == [1, 2, 3, 4]
        assert seen["b"].created_at == "2026-01-01T00:00:00.000Z" and seen["a"].created_at.endswith("Z")

    def test_an_update_is_committed_before_it_returns(self, open_journal: Opener) -> None:
        """An update changes the caller's job and is read back by another instance, JSON and flags included."""
        journal = open_journal()
        job = journal.add(_job("1"))
        before = job.updated_at
        journal.update(job, state=State.DOWNLOADING, progress=1.0, outputs=[{"file": "a.mp4"}], approved=True)
        assert job.state == State.DOWNLOADING and job.updated_at >= before
        again = open_journal().get("1")
        assert again is not None
        assert (again.state, again.progress, again.outputs, again.approved) == (
            "downloading",
            1.0,
            [{"file": "a.mp4"}],
            True,
        )
        journal.update(job, error=None, body=None, not_before=None)
        again = open_journal().get("1")
        assert again is not None and (again.error, again.body, again.not_before) == (None, None, None)

    @pytest.mark.parametrize("field", ["stat", "id", "seq"])
    def test_an_update_of_a_field_that_may_not_change_is_refused(self, open_journal: Opener, field: str) -> None:
        """A typo, or a change of the job's identity, is an error rather than a silent no-op."""
        journal = open_journal()
        job = journal.add(_job("1"))
        with pytest.raises(JournalError, match=field):
            journal.update(job, **{field: "x"})
        assert open_journal().get("1") == job

    def test_two_jobs_never_hold_one_task(self, open_journal: Opener) -> None:
        """A task id belongs to one job: a second one is refused with a JournalError."""
        journal = open_journal()
        a, b = journal.add(_job("1")), journal.add(_job("2"))
        journal.update(a, task_id="t")
        with pytest.raises(JournalError):
            journal.update(b, task_id="t")
        again = open_journal().get("2")
        assert again is not None and again.task_id is None

    def test_a_job_id_is_added_once(self, open_journal: Opener) -> None:
        """Adding a job whose id is known is refused, and nothing of that batch is kept."""
        journal = open_journal()
        journal.add(_job("1"))
        with pytest.raises(JournalError):
            journal.add_many([_job("2"), _job("1", name="other")])
        assert [job.id for job in open_journal().jobs()] == ["1"]

    def test_an_unknown_id_is_none(self, open_journal: Opener) -> None:
        """get() of an id never added answers None."""
        journal = open_journal()
        assert journal.get("nope") is None and journal.find("nope") is None

    def test_a_closed_journal_raises_journal_errors(self, open_journal: Opener) -> None:
        """Driver errors never leave the journal as they are: a closed one answers with a JournalError."""
        journal = open_journal()
        journal.close()
        with pytest.raises(JournalError):
            journal.get("1")


class TestListings:
    def _some(self, journal: Store) -> list[Job]:
        jobs = [
            _job("1", name="clip", inbox="a"),
            _job("2", name="clip", inbox="b"),
            _job("3", name="other", inbox="a"),
            _job("4", name="clip", inbox="a"),
        ]
        journal.add_many(jobs)
        journal.update(jobs[0], state=State.SUCCEEDED, finished_at="2026-11-28T10:00:00.000Z", job_dir="/d/1")
        journal.update(jobs[1], state=State.RUNNING, task_id="t2", job_dir="/d/2")
        journal.update(jobs[2], state=State.FAILED, finished_at="2026-11-28T11:00:00.000Z")
        journal.update(jobs[3], state=State.CANCELLED, finished_at="2026-11-28T10:00:00.000Z")
        return jobs

    def test_find_means_the_newest_active_job_else_the_newest(self, open_journal: Opener) -> None:
        """NAME means the newest active job of that name; when none is active, the newest one."""
        journal = open_journal()
        jobs = self._some(journal)
        found = open_journal().find("clip")
        assert found is not None and found.id == "2"
        journal.update(jobs[1], state=State.FAILED)
        found = open_journal().find("clip")
        assert found is not None and found.id == "4"

    def test_active_lists_unfinished_jobs_oldest_first(self, open_journal: Opener) -> None:
        """active() is the unfinished jobs in claim order, of one inbox when asked."""
        journal = open_journal()
        self._some(journal)
        journal.add_many([_job("5", inbox="a"), _job("6", inbox="b")])
        other = open_journal()
        assert [j.id for j in other.active()] == ["2", "5", "6"]
        assert [j.id for j in other.active("a")] == ["5"] and other.active("none") == []

    def test_jobs_lists_newest_first_with_a_limit_and_a_name(self, open_journal: Opener) -> None:
        """jobs() is newest first, cut at the limit, of one name when asked."""
        journal = open_journal()
        self._some(journal)
        other = open_journal()
        assert [j.id for j in other.jobs()] == ["4", "3", "2", "1"]
        assert [j.id for j in other.jobs(limit=2)] == ["4", "3"]
        assert [j.id for j in other.jobs(limit=2, name="clip")] == ["4", "2"]

    def test_listing_filters_and_pages(self, open_journal: Opener) -> None:
        """listing() is newest first, by exact state, inbox and name together, below a seq when given, cut at
        the limit: the HTTP API's pages."""
        journal = open_journal()
        jobs = self._some(journal)
        other = open_journal()
        assert [j.id for j in other.listing()] == ["4", "3", "2", "1"]
        assert [j.id for j in other.listing(inbox="a")] == ["4", "3", "1"]
        assert [j.id for j in other.listing(inbox="a", name="clip")] == ["4", "1"]
        assert [j.id for j in other.listing(state="running")] == ["2"]
        assert [j.id for j in other.listing(state="running", inbox="a")] == []
        assert [j.id for j in other.listing(limit=2)] == ["4", "3"]
        assert [j.id for j in other.listing(before=jobs[2].seq, limit=2)] == ["2", "1"]
        assert [j.id for j in other.listing(before=jobs[0].seq)] == []

    def test_recently_finished_is_by_end_time_then_newest(self, open_journal: Opener) -> None:
        """The jobs that ended last come first; two that ended at once, the newer first; unfinished ones never."""
        journal = open_journal()
        self._some(journal)
        assert [j.id for j in open_journal().recently_finished(10)] == ["3", "4", "1"]
        assert [j.id for j in open_journal().recently_finished(1)] == ["3"]

    def test_known_dirs_and_counts(self, open_journal: Opener) -> None:
        """known_dirs() holds every job folder recorded; counts() the jobs per state."""
        journal = open_journal()
        self._some(journal)
        other = open_journal()
        assert other.known_dirs() == {"/d/1", "/d/2"}
        assert other.counts() == {"succeeded": 1, "running": 1, "failed": 1, "cancelled": 1}

    def test_an_empty_journal_lists_nothing(self, open_journal: Opener) -> None:
        """A new journal answers every listing with nothing."""
        journal = open_journal()
        assert journal.jobs() == [] and journal.active() == [] and journal.recently_finished(5) == []
        assert journal.known_dirs() == set() and journal.counts() == {} and journal.pending_commands() == []


class TestIntents:
    def test_an_intent_is_committed_and_counts_the_first_attempt(self, open_journal: Opener) -> None:
        """record_intent commits the time a create leaves, counting an attempt on the first try only; another
        instance then sees an unconfirmed create."""
        journal = open_journal()
        journal.add(_job("1"))
        stamp = journal.record_intent("1", first=True)
        again = open_journal().get("1")
        assert again is not None and again.create_started_at == stamp and again.attempts == 1
        assert again.unconfirmed_create
        journal.record_intent("1", first=False)
        again = open_journal().get("1")
        assert again is not None and again.attempts == 1

    def test_a_cleared_intent_stands_no_more(self, open_journal: Opener) -> None:
        """clear_intent removes the intent: the create surely made nothing."""
        journal = open_journal()
        journal.add(_job("1"))
        journal.record_intent("1", first=True)
        journal.clear_intent("1")
        again = open_journal().get("1")
        assert again is not None and again.create_started_at is None and not again.unconfirmed_create

    def test_a_task_id_is_committed_with_its_estimate(self, open_journal: Opener) -> None:
        """record_task commits the task id and moves the job to submitted; an estimate of None keeps the old."""
        journal = open_journal()
        journal.add_many([_job("1", estimated_credits=40.0), _job("2", estimated_credits=40.0)])
        journal.record_intent("1", first=True)
        journal.record_task("1", "task-1", None)
        journal.record_task("2", "task-2", 12.5)
        other = open_journal()
        one, two = other.get("1"), other.get("2")
        assert one is not None and (one.task_id, one.state, one.estimated_credits) == ("task-1", "submitted", 40.0)
        assert two is not None and (two.task_id, two.estimated_credits) == ("task-2", 12.5)
        assert not one.unconfirmed_create

    def test_no_intent_for_a_job_that_has_a_task(self, open_journal: Opener) -> None:
        """A job whose task id is recorded never records another intent: record_intent raises TaskNamedAlready
        naming the task, and the row is left as it was."""
        journal = open_journal()
        journal.add(_job("1"))
        stamp = journal.record_intent("1", first=True)
        journal.record_task("1", "task-1", 3.0)
        with pytest.raises(TaskNamedAlready, match="task-1") as refused:
            journal.record_intent("1", first=True)
        assert refused.value.task_id == "task-1"
        again = open_journal().get("1")
        assert again is not None and (again.create_started_at, again.attempts, again.task_id) == (stamp, 1, "task-1")

    def test_a_task_id_held_by_another_job_is_refused(self, open_journal: Opener) -> None:
        """record_task of a task id another job holds raises a JournalError and changes nothing."""
        journal = open_journal()
        journal.add_many([_job("1"), _job("2")])
        journal.record_task("1", "task-1", None)
        with pytest.raises(JournalError):
            journal.record_task("2", "task-1", None)
        again = open_journal().get("2")
        assert again is not None and again.task_id is None and again.state == "accepted"


class TestWaiting:
    def test_what_polls_learn_is_saved_for_many_at_once(self, open_journal: Opener) -> None:
        """save_waiting records state, progress and updated_at of several jobs; others are left alone."""
        journal = open_journal()
        jobs = [journal.add(_job(str(i), name=f"clip{i}")) for i in range(3)]
        for job in jobs:
            journal.update(job, state=State.SUBMITTED, task_id=f"t{job.id}")
        jobs[0].state, jobs[0].progress = State.RUNNING, 0.25
        jobs[2].state, jobs[2].progress, jobs[2].updated_at = State.PENDING, None, "2026-11-28T10:00:00.000Z"
        journal.save_waiting([jobs[0], jobs[2]])
        other = open_journal()
        seen = [other.get(j.id) for j in jobs]
        assert [(j.state, j.progress) for j in seen if j] == [("running", 0.25), ("submitted", None), ("pending", None)]
        assert seen[2] is not None and seen[2].updated_at == "2026-11-28T10:00:00.000Z"

    def test_a_late_batch_never_overwrites_a_committed_state(self, open_journal: Opener) -> None:
        """A job that went on in its own commit (downloading) keeps that state whatever a batch says, and a job
        the batch holds in a state that is not waiting is not written."""
        journal = open_journal()
        job = journal.add(_job("1"))
        journal.update(job, state=State.DOWNLOADING, task_id="t1", progress=1.0)
        other = journal.add(_job("2"))
        journal.update(other, state=State.SUBMITTED, task_id="t2")
        stale = journal.get("1")
        assert stale is not None
        stale.state, stale.progress = State.RUNNING, 0.5
        other.state, other.progress = State.FAILED, 0.5  # not a waiting state: not the batch's to record
        journal.save_waiting([stale, other])
        again = open_journal()
        one, two = again.get("1"), again.get("2")
        assert one is not None and (one.state, one.progress) == ("downloading", 1.0)
        assert two is not None and (two.state, two.progress) == ("submitted", None)

    def test_an_empty_batch_is_nothing(self, open_journal: Opener) -> None:
        """save_waiting of no jobs changes nothing and raises nothing."""
        journal = open_journal()
        journal.add(_job("1"))
        journal.save_waiting([])
        assert open_journal().get("1") == journal.get("1")


class TestCommands:
    def test_commands_queue_up_and_are_answered_once(self, open_journal: Opener) -> None:
        """Commands from other processes queue in order; an answer is read back once it is given."""
        journal = open_journal()
        first = journal.add_command("cancel", "clip")
        second = journal.add_command("approve", "other")
        assert second > first
        daemon = open_journal()
        assert [(c.id, c.kind, c.name) for c in daemon.pending_commands()] == [
            (first, "cancel", "clip"),
            (second, "approve", "other"),
        ]
        assert journal.command_result(first) is None
        daemon.finish_command(first, "cancelled")
        assert journal.command_result(first) == "cancelled"
        assert [c.id for c in journal.pending_commands()] == [second]

    def test_an_unknown_command_has_no_answer(self, open_journal: Opener) -> None:
        """command_result of an id never given is None."""
        assert open_journal().command_result(12345) is None


class TestOneNode:
    def test_a_lone_node_owns_everything_it_records(self, open_journal: Opener) -> None:
        """A daemon alone on its journal (SQLite always; PostgreSQL with one node): after it joins, the jobs it
        records are its own (its heartbeat renews them), nothing is left to take over, its claims go through,
        a job it ended and brings back is its own, and a clean stop leaves nothing owned."""
        journal = open_journal()
        journal.join("desk", 10.0, host="desk", pid=1, version="test", node_time=1.0e9)
        journal.add_many([_job("a"), _job("b", name="other", state=State.SUCCEEDED)])
        assert journal.beat(1.0e9) == {"a"}
        assert journal.take_over(["main"], 10) == []
        assert journal.claim("main", "clip.json", "1:2:3", "a")
        assert journal.claims_elsewhere("main") == set() and journal.orphan_claims(["main"]) == []
        assert journal.adopt_claim("main", "a") and journal.own("b")
        assert journal.pending_commands() == []
        assert journal.leave() in (0, 1)  # its one unfinished job; SQLite has nobody to hand it to
