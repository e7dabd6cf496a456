"""Pure scheduling rules (tables) and the journal's durability promises."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from runwatch.errors import ApiStatusError, JournalError
from runwatch.jobs.job import Job
from runwatch.polls import NOT_POLLED, PollTimers
from runwatch.scheduler import Candidate, Sample, next_poll, pick, poll_slack, run_length
from runwatch.store import Journal, StateLock


def cand(
    job_id: str, inbox: str = "a", model: str = "m", priority: int = 0, seq: int = 0, not_before: float | None = None
) -> Candidate:
    return Candidate(job_id, inbox, model, priority, seq, not_before)


class TestPick:
    def _pick(self, waiting: list[Candidate], **kw: object) -> str | None:
        args: dict[str, object] = {
            "now": 100.0,
            "in_flight": 0,
            "max_in_flight": 10,
            "per_inbox": {},
            "per_model": {},
            "model_cap": lambda m: None,
        }
        args.update(kw)
        chosen = pick(waiting, **args)  # type: ignore[arg-type]
        return chosen.job_id if chosen else None

    def test_oldest_first(self) -> None:
        """Among equals, the job that arrived first goes first."""
        assert self._pick([cand("b", seq=2), cand("a", seq=1)]) == "a"

    def test_priority_first(self) -> None:
        """A higher runwatch.priority goes before older jobs."""
        assert self._pick([cand("old", seq=1), cand("urgent", seq=9, priority=5)]) == "urgent"

    def test_fair_across_inboxes(self) -> None:
        """A busy inbox does not starve a quiet one: fewer in flight goes first."""
        waiting = [cand("busy-next", inbox="busy", seq=1), cand("quiet", inbox="quiet", seq=5)]
        assert self._pick(waiting, per_inbox={"busy": 3, "quiet": 0}) == "quiet"

    def test_global_cap(self) -> None:
        """Nothing goes while the global in-flight cap is reached."""
        assert self._pick([cand("a")], in_flight=10) is None

    def test_model_cap(self) -> None:
        """A model at its cap waits; other models still go."""
        waiting = [cand("capped", model="gen4.5", seq=1), cand("free", model="veo3.1", seq=2)]
        assert self._pick(waiting, per_model={"gen4.5": 2}, model_cap=lambda m: 2) == "free"

    def test_not_before_and_paused_models(self) -> None:
        """Backoff (not_before) and a model paused by the daily limit hold a job back."""
        assert self._pick([cand("later", not_before=200.0)]) is None
        assert self._pick([cand("p", model="gen4.5")], paused_models={"gen4.5": 500.0}) is None
        assert self._pick([cand("p", model="gen4.5")], paused_models={"gen4.5": 50.0}) == "p"


class TestNextPoll:
    @pytest.mark.parametrize("status", ["THROTTLED", "PENDING", "RUNNING"])
    def test_plain_interval_with_jitter(self, status: str) -> None:
        """Without evidence of an early end, a task is polled every interval, jittered by ±10%."""
        assert next_poll(status, [], now=0.0, interval=5.0, rng=lambda: 0.0) == pytest.approx(4.5)
        assert next_poll(status, [], now=0.0, interval=5.0, rng=lambda: 1.0) == pytest.approx(5.5)

    @pytest.mark.parametrize(
        ("samples", "now", "since", "expected"),
        [
            # 10%/s: at 0.9 after 9 s, the end is 1 s away -> poll just after it (1 + 0.5 margin)
            ([Sample(0.0, 0.0), Sample(9.0, 0.9)], 9.0, None, 1.5),
            # the end within two intervals (9 s away): aim at it rather than look in between
            ([Sample(0.0, 0.0), Sample(1.0, 0.1)], 1.0, None, 9.5),
            # the end 30 s away: half of it, so a long task costs a few GETs, not one every interval
            ([Sample(0.0, 0.0), Sample(10.0, 0.25)], 10.0, None, 15.0),
            # the end far off: never longer than six intervals between looks
            ([Sample(0.0, 0.0), Sample(1.0, 0.01)], 1.0, None, 30.0),
            # the end 12 s away: half of it (6 s), then the aimed poll
            ([Sample(0.0, 0.0), Sample(4.0, 0.25)], 4.0, None, 6.0),
            # the task outlived its prediction: back to the plain interval, no burst of early polls
            ([Sample(0.0, 0.0), Sample(9.0, 0.99)], 12.0, None, 5.0),
            # flat progress gives no rate: the plain interval
            ([Sample(0.0, 0.5), Sample(5.0, 0.5)], 5.0, None, 5.0),
            # one sample: the rate since the task was last known not running is a lower bound (0.8 in 5 s)
            ([Sample(5.0, 0.8)], 5.0, 0.0, 1.75),
            # one sample and nothing known of the start: the plain interval
            ([Sample(5.0, 0.8)], 5.0, None, 5.0),
            # one sample at 0: no rate
            ([Sample(5.0, 0.0)], 5.0, 0.0, 5.0),
        ],
    )
    def test_aims_at_the_expected_end(
        self,
        samples: list[Sample],
        now: float,
        since: float | None,
        expected: float,
    ) -> None:
        """RUNNING progress tells when a task will end; the polls home in on that moment."""
        got = next_poll("RUNNING", samples, now=now, interval=5.0, since=since, rng=lambda: 0.5)
        assert got == pytest.approx(expected)

    @pytest.mark.parametrize("status", ["THROTTLED", "PENDING"])
    def test_waiting_states_ignore_samples(self, status: str) -> None:
        """Progress seen earlier says nothing about a task that is (again) waiting."""
        samples = [Sample(0.0, 0.0), Sample(9.0, 0.9)]
        assert next_poll(status, samples, now=9.0, interval=5.0, since=0.0, rng=lambda: 0.5) == pytest.approx(5.0)


def _job(job_id: str, name: str = "clip") -> Job:
    return Job(id=job_id, name=name, inbox="main", format="json", endpoint="text_to_video", model="veo3.1")


def _hold_lock(path: str, ready: multiprocessing.synchronize.Event, done: multiprocessing.synchronize.Event) -> None:
    lock = StateLock(Path(path))
    lock.acquire()
    ready.set()
    done.wait(10)
    lock.release()


class TestPollRuns:
    def test_slack_is_a_twentieth_of_the_interval(self) -> None:
        assert poll_slack(5.0) == 0.25 and poll_slack(1.0) == 0.05

    @pytest.mark.parametrize(
        ("slack", "latency", "length"),
        [
            (0.25, None, 1),  # nothing measured yet: one GET per thread
            (0.25, 0.001, 64),  # a near simulator: as many as allowed
            (0.25, 0.01, 25),
            (0.25, 0.1, 2),
            (0.25, 0.3, 1),  # slower than the slack: one GET per thread, as without runs
            (0.25, 0.0, 64),
        ],
    )
    def test_run_length_fits_the_slack(self, slack: float, latency: float | None, length: int) -> None:
        assert run_length(slack, latency) == length


class TestPollTimers:
    def test_a_due_poll_waits_the_slack_for_others(self) -> None:
        timers = PollTimers()
        for job_id, at in (("a", 10.0), ("b", 10.05), ("c", 11.0)):
            timers.schedule(job_id, at)
        assert timers.next_due(0.1) == pytest.approx(10.1)
        assert timers.take_due(10.05, 0.1) == []  # the oldest has not waited the slack yet
        assert timers.take_due(10.1, 0.1) == ["a", "b"]  # then everything due by now goes
        assert len(timers) == 1 and timers.next_due(0.1) == pytest.approx(11.1)

    def test_one_timer_per_job(self) -> None:
        """A job set twice is looked at once, at the earlier time: two timers would make two chains of polls
        (each answer sets the next), two downloads when both see the task succeed."""
        timers = PollTimers()
        timers.schedule("a", 10.0)
        timers.schedule("a", 10.0)
        timers.schedule("a", 12.0)  # later than its timer: the earlier stands
        timers.schedule("b", 11.0)
        timers.schedule("b", 9.0)  # earlier: moves the timer
        assert len(timers) == 2 and timers.next_due(0.0) == pytest.approx(9.0)
        assert timers.take_due(20.0, 0.0) == ["b", "a"]
        assert len(timers) == 0 and timers.next_due(0.0) == float("inf") and timers.take_due(30.0, 0.0) == []
        timers.schedule("a", 40.0)  # a new timer once the last one went
        assert timers.take_due(40.0, 0.0) == ["a"]

    def test_runs_follow_the_latency_seen(self) -> None:
        timers = PollTimers()
        items = list(range(10))
        assert timers.runs(items, 0.25) == [[i] for i in items]  # nothing measured: one GET per run
        timers.latency = 0.001
        assert timers.runs(items, 0.25) == [items]
        timers.latency = 0.1
        assert timers.runs(items, 0.25) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]

    def test_a_run_gets_in_a_row_and_learns_the_latency(self) -> None:
        timers = PollTimers()
        asked: list[str] = []

        def get(task_id: str) -> dict[str, str]:
            asked.append(task_id)
            if task_id == "t2":
                raise ApiStatusError(503, {}, "busy")
            return {"id": task_id}

        out = timers.get_run(get, [("j1", "t1"), ("j2", "t2"), ("j3", "t3")], budget=60.0)
        assert asked == ["t1", "t2", "t3"]
        assert out[0] == ("j1", {"id": "t1"}) and out[2] == ("j3", {"id": "t3"})
        assert isinstance(out[1][1], ApiStatusError)  # a failed poll is the engine's to judge
        assert timers.latency is not None and timers.latency >= 0

    def test_a_run_past_its_budget_hands_the_rest_back(self) -> None:
        timers = PollTimers()

        def slow(task_id: str) -> dict[str, str]:
            time.sleep(0.05)
            return {"id": task_id}

        out = timers.get_run(slow, [("j1", "t1"), ("j2", "t2"), ("j3", "t3")], budget=0.01)
        assert out[0] == ("j1", {"id": "t1"})  # one GET is always made
        assert [result for _, result in out[1:]] == [NOT_POLLED, NOT_POLLED]


class TestJournal:
    def test_round_trip(self, tmp_path: Path) -> None:
        """Jobs come back as they were written, JSON fields included."""
        journal = Journal(tmp_path / "j.sqlite3")
        job = journal.add(_job("1"))
        journal.update(job, outputs=[{"file": "a.mp4", "bytes": 3, "sha256": "x", "index": 0}], approved=True)
        again = Journal(tmp_path / "j.sqlite3").get("1")
        assert again is not None and again.outputs[0]["file"] == "a.mp4" and again.approved is True
        assert again.seq == 1 and again.created_at.endswith("Z")

    def test_waiting_states_of_many_in_one_commit(self, tmp_path: Path) -> None:
        """What polls learn (state, progress) is saved for many jobs at once and reads back per job."""
        journal = Journal(tmp_path / "j.sqlite3")
        jobs = [journal.add(_job(str(i), name=f"clip{i}")) for i in range(3)]
        for job in jobs:
            journal.update(job, state="submitted", task_id=f"t{job.id}")
        jobs[0].state, jobs[0].progress = "running", 0.25
        jobs[2].state, jobs[2].progress, jobs[2].updated_at = "pending", None, "2026-11-28T10:00:00.000Z"
        journal.save_waiting([jobs[0], jobs[2]])
        again = Journal(tmp_path / "j.sqlite3")
        seen = [again.get(j.id) for j in jobs]
        assert [(j.state, j.progress) for j in seen if j] == [("running", 0.25), ("submitted", None), ("pending", None)]
        assert seen[2] is not None and seen[2].updated_at == "2026-11-28T10:00:00.000Z"

    def test_a_late_waiting_batch_never_overwrites_a_committed_state(self, tmp_path: Path) -> None:
        """A job that went on (downloading, failed...) in its own commit keeps that state whatever a batch says."""
        journal = Journal(tmp_path / "j.sqlite3")
        job = journal.add(_job("1"))
        journal.update(job, state="downloading", task_id="t1", progress=1.0)
        stale = journal.get("1")
        assert stale is not None
        stale.state, stale.progress = "running", 0.5
        journal.save_waiting([stale])
        again = Journal(tmp_path / "j.sqlite3").get("1")
        assert again is not None and (again.state, again.progress) == ("downloading", 1.0)

    def test_a_step_without_fsync_leaves_the_next_commit_durable(self, tmp_path: Path) -> None:
        """Waiting states are committed without fsync; the journal goes back to full sync at once."""
        journal = Journal(tmp_path / "j.sqlite3")
        job = journal.add(_job("1"))
        journal.update(job, state="submitted", task_id="t1")
        job.state, job.progress = "running", 0.5
        journal.save_waiting([job])
        assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        again = Journal(tmp_path / "j.sqlite3").get("1")
        assert again is not None and again.state == "running" and again.progress == 0.5

    def test_intent_survives_reopen(self, tmp_path: Path) -> None:
        """An intent without a task id is what a restart sees as an unconfirmed create."""
        journal = Journal(tmp_path / "j.sqlite3")
        job = journal.add(_job("1"))
        journal.update(job, create_started_at="2026-11-28T00:00:00Z")
        reopened = Journal(tmp_path / "j.sqlite3").get("1")
        assert reopened is not None and reopened.unconfirmed_create

    def test_find_prefers_active(self, tmp_path: Path) -> None:
        """NAME means the newest active job with that name, else the newest."""
        journal = Journal(tmp_path / "j.sqlite3")
        running = journal.add(_job("1"))
        journal.update(running, state="running")
        done = journal.add(_job("2"))
        journal.update(done, state="succeeded")
        assert journal.find("clip").id == "1"  # type: ignore[union-attr]
        journal.update(running, state="failed")
        assert journal.find("clip").id == "2"  # type: ignore[union-attr]

    def test_task_ids_unique(self, tmp_path: Path) -> None:
        """Two jobs can never claim the same Runway task."""
        journal = Journal(tmp_path / "j.sqlite3")
        a, b = journal.add(_job("1")), journal.add(_job("2"))
        journal.update(a, task_id="t")
        with pytest.raises(JournalError):
            journal.update(b, task_id="t")

    def test_commands_queue(self, tmp_path: Path) -> None:
        """Commands from other processes queue up and are answered once."""
        journal = Journal(tmp_path / "j.sqlite3")
        cid = journal.add_command("cancel", "clip")
        other = Journal(tmp_path / "j.sqlite3")
        assert [c.name for c in other.pending_commands()] == ["clip"]
        other.finish_command(cid, "cancelled")
        assert journal.command_result(cid) == "cancelled" and journal.pending_commands() == []

    def test_unknown_field_refused(self, tmp_path: Path) -> None:
        """A typo in an update is an error, not a silent no-op."""
        journal = Journal(tmp_path / "j.sqlite3")
        with pytest.raises(JournalError):
            journal.update(journal.add(_job("1")), stat="running")

    def test_second_daemon_refused(self, tmp_path: Path) -> None:
        """The state lock refuses a second holder (another process) and names the first."""
        ctx = multiprocessing.get_context("spawn")
        ready, done = ctx.Event(), ctx.Event()
        proc = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, done))
        proc.start()
        try:
            assert ready.wait(20)
            with pytest.raises(JournalError, match="in use by runwatch pid"):
                StateLock(tmp_path).acquire()
        finally:
            done.set()
            proc.join(10)
        lock = StateLock(tmp_path)
        lock.acquire()
        lock.release()
