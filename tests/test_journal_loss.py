"""The work area proves what was sent: a journal lost, emptied or restored from an older copy never makes runwatch
pay twice. Real daemons against the simulator, real folders; the journal taken away between runs."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import tomli_w

from runwatch.daemon import Daemon
from runwatch.errors import StartupError
from runwatch.simulator import Simulator
from runwatch.workrecords import INTENT_MARK, IntentMark, mark_intent, read_intent_mark

from .rig import SEED_REQUESTS, Rig

VIDEO = SEED_REQUESTS["text_to_video"][0]


def _journal_files(rig: Rig) -> list[Path]:
    base = rig.root / "state" / "journal.sqlite3"
    return [base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")]


def _lose_journal(rig: Rig, how: str) -> None:
    files = _journal_files(rig)
    for f in files[1:]:
        f.unlink(missing_ok=True)
    if how == "deleted":
        files[0].unlink()
    else:
        files[0].write_bytes(b"")


def _copy_journal(rig: Rig) -> Path:
    """A copy of the journal as it stands (the daemon stopped), as a backup would take it."""
    backup = rig.root / "backup"
    backup.mkdir()
    for f in _journal_files(rig):
        if f.exists():
            shutil.copy(f, backup / f.name)
    return backup


def _put_back(rig: Rig, backup: Path) -> None:
    """The journal restored from ``backup``, whatever it held since."""
    for f in _journal_files(rig):
        f.unlink(missing_ok=True)
        if (backup / f.name).exists():
            shutil.copy(backup / f.name, f)


def _config_file(rig: Rig) -> Path:
    path = rig.root / "runwatch.toml"
    data = {
        "runway": {"base_url": rig.sim.url, "poll_interval": 0.05},
        "state": {"dir": str(rig.root / "state")},
        "inbox": [{"path": str(rig.inbox), "outbox": str(rig.outbox), "settle": 0.3}],
    }
    path.write_text(tomli_w.dumps(data))
    return path


def _cli(rig: Rig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runwatch.cli", *args, "--config", str(_config_file(rig))],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, RUNWAYML_API_SECRET=rig.sim.key),
    )


class TestMarker:
    def test_marker_records_the_task(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Before a create leaves, the job dir gets an intent marker; Runway's task id is added to it."""
        rig = rig_factory(sim).start()
        rig.drop("rain", SEED_REQUESTS["sound_effect"][0])
        status = rig.wait("rain")
        record = Path(status["request"]).parent
        mark = read_intent_mark(record)
        assert record.parent.name == "done" and mark is not None
        assert mark.job_id == record.name and mark.task_id == status["task_id"] and mark.sent_at

    def test_no_marker_when_nothing_was_made(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A create Runway refused (a 4xx: nothing made) leaves no marker behind."""
        rig = rig_factory(sim).start()
        rig.drop("future", {"endpoint": "text_to_video", "model": "gen9_ultra", "promptText": "x"})
        status = rig.wait("future")
        assert status["state"] == "rejected" and sim.create_count() == 0
        assert not (Path(status["request"]).parent / INTENT_MARK).exists()


class TestLostJournal:
    @pytest.mark.parametrize("how", ["deleted", "empty"])
    def test_refused_then_rebuilt(self, rig_factory: Callable[..., Rig], sim: Simulator, how: str) -> None:
        """A journal lost while a task runs: the daemon refuses to start with one line (exit 78, no traceback);
        `runwatch journal rebuild` makes it again, and the next start follows the task to its outputs with one
        create in all."""
        sim.config.time_scale = 0.15
        rig = rig_factory(sim).start()
        rig.drop("film", VIDEO)
        rig.wait("film", {"running", "pending"})
        rig.drop("done", SEED_REQUESTS["sound_effect"][0])
        assert rig.wait("done")["state"] == "succeeded"
        rig.stop()
        _lose_journal(rig, how)
        with pytest.raises(StartupError, match="journal rebuild"):
            Daemon(rig.config, api_key=sim.key)
        refused = _cli(rig, "run", "--once")
        assert refused.returncode == 78 and "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "journal rebuild" in refused.stderr
        rebuilt = _cli(rig, "journal", "rebuild")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "2 requests" in rebuilt.stdout
        rig.start()
        status = rig.wait("film", timeout=60)
        assert status["state"] == "succeeded" and sim.create_count() == 2
        rig.check_outputs(status)
        job = rig.journal().find("done")
        assert job is not None and job.state == "succeeded" and job.credits

    def test_rebuild_refuses_a_journal_with_jobs(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A rebuild never overwrites a journal that holds jobs."""
        rig = rig_factory(sim).start()
        rig.drop("rain", SEED_REQUESTS["sound_effect"][0])
        rig.wait("rain")
        rig.stop()
        refused = _cli(rig, "journal", "rebuild")
        assert refused.returncode == 78 and "still holds 1 jobs" in refused.stderr

    def test_unconfirmed_create_is_never_resent(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A claimed request the journal never saw whose marker has no task id (the crash came between send and
        answer): needs_attention at the next start, and nothing is sent."""
        rig = rig_factory(sim, inbox={"approve_above": 0.5}).start()
        rig.drop("costly", SEED_REQUESTS["sound_effect"][0])
        held = rig.wait("costly", {"held"})
        rig.stop()
        job_dir = Path(held["request"]).parent
        mark_intent(job_dir, IntentMark(job_dir.name, "2026-12-07T00:00:00Z"))
        for f in _journal_files(rig):
            f.unlink(missing_ok=True)
        (rig.root / "state" / "journal.sqlite3").touch()
        assert _cli(rig, "journal", "rebuild").returncode == 0
        rig.start()
        status = rig.wait("costly")
        assert status["state"] == "needs_attention" and status["error"]["code"] == "create_unconfirmed"
        assert sim.create_count() == 0


class TestEndNeverRecorded:
    """A kill between filing a finished request away and writing its final status file, then the journal lost:
    the record is in done/, its status file one state behind, its outputs may be in the outbox."""

    @staticmethod
    def _ended_unrecorded(rig: Rig, mark: Callable[[IntentMark], IntentMark]) -> Path:
        rig.start()
        rig.drop("rain", SEED_REQUESTS["sound_effect"][0])
        status = rig.wait("rain")
        assert status["state"] == "succeeded"
        rig.stop()
        record = Path(status["request"]).parent
        mark_intent(record, mark(read_intent_mark(record) or IntentMark(record.name, "")))
        shown = rig.outbox / "rain.status.json"  # one state behind, as the kill left it
        behind = dict(json.loads(shown.read_text()), state="downloading", outputs=[])
        if not read_intent_mark(record).task_id:  # type: ignore[union-attr]
            behind.update(state="uploading", task_id=None)  # the create's answer never came
        shown.write_text(json.dumps(behind))
        _lose_journal(rig, "deleted")
        assert _cli(rig, "journal", "rebuild").returncode == 0
        return record

    def test_a_recent_task_is_looked_at_again(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Its task is followed again: succeeded, the output in the outbox recorded (not a second copy), no
        second create."""
        rig = rig_factory(sim)
        record = self._ended_unrecorded(rig, lambda m: m)
        assert rig.journal().find("rain").state == "submitted"  # type: ignore[union-attr]
        rig.start()
        status = rig.wait("rain", timeout=60)
        assert status["state"] == "succeeded" and sim.create_count() == 1
        rig.check_outputs(status)
        assert sorted(p.name for p in rig.outbox.iterdir()) == sorted(
            [status["outputs"][0]["file"], "rain.status.json"]
        )
        assert record.parent.name == "done" and record.is_dir()

    def test_an_old_task_stays_history(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Sent three days ago, its outputs gone at Runway: failed, code `rebuilt`, the task id kept, nothing
        fetched or sent."""
        rig = rig_factory(sim)
        self._ended_unrecorded(rig, lambda m: IntentMark(m.job_id, "2026-01-01T00:00:00Z", m.task_id))
        job = rig.journal().find("rain")
        assert job is not None and job.state == "failed" and job.error["code"] == "rebuilt" and job.task_id
        rig.start()
        status = rig.wait("rain")
        assert status["state"] == "failed" and sim.create_count() == 1

    def test_a_create_without_its_answer_needs_attention(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A marker without a task id on a filed record: needs_attention, as in jobs/; nothing sent."""
        rig = rig_factory(sim)
        self._ended_unrecorded(rig, lambda m: IntentMark(m.job_id, m.sent_at))
        rig.start()
        status = rig.wait("rain")
        assert status["state"] == "needs_attention" and status["error"]["code"] == "create_unconfirmed"
        assert sim.create_count() == 1


class TestOlderJournal:
    def test_restored_copy_does_not_resend(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A journal restored from a copy taken before two requests were sent (one held then, one not yet
        dropped): both tasks are followed to their outputs from the work area's markers; nothing is sent twice."""
        sim.config.time_scale = 0.15
        rig = rig_factory(sim, inbox={"approve_above": 3}).start()
        rig.drop("waiting", VIDEO)  # held for approval when the copy is taken
        rig.wait("waiting", {"held"})
        rig.stop()
        backup = _copy_journal(rig)
        rig.start()
        (rig.inbox / "waiting.approve").write_text("")
        rig.drop("later", SEED_REQUESTS["sound_effect"][0])
        rig.wait("waiting", {"running", "pending", "submitted", "throttled"})
        rig.wait("later", {"running", "pending", "submitted", "throttled", "succeeded"})
        rig.stop()
        creates = sim.create_count()
        _put_back(rig, backup)
        rig.start()
        rig.succeed(("waiting", "later"), timeout=60)
        assert sim.create_count() == creates == 2

    def test_a_claim_the_copy_never_saw_is_followed_once(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A request taken and sent after the copy was made: its claim is taken again at the start, its task
        followed from the marker, and polled and downloaded once (before, it was also resumed as a journal job:
        two polls at a time, two downloads, a `.2` copy in the outbox)."""
        sim.config.time_scale = 0.15
        rig = rig_factory(sim).start()
        rig.stop()
        backup = _copy_journal(rig)
        rig.start()
        rig.drop("later", VIDEO)
        running = rig.wait("later", {"running", "pending"})
        rig.stop()
        _put_back(rig, backup)
        polled_before = len(sim.requests(f"/v1/tasks/{running['task_id']}", "GET"))
        rig.start()
        rig.succeed(("later",), timeout=60)
        status = rig.status("later")
        assert status is not None and sim.create_count() == 1
        assert sorted(p.name for p in rig.outbox.iterdir()) == [status["outputs"][0]["file"], "later.status.json"]
        polls = [r["at"] for r in sim.requests(f"/v1/tasks/{running['task_id']}", "GET")][polled_before:]
        gaps = [round(b - a, 4) for a, b in itertools.pairwise(polls)]
        assert polls and min(gaps, default=1) > 0.02, gaps  # one chain of polls, not two interleaved


class TestMarkerCannotBeWritten:
    def test_nothing_sent_when_the_marker_fails(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A job dir where the marker cannot be written (made read-only): the create is not sent, and the request
        goes once the work area is writable again."""
        rig = rig_factory(sim, inbox={"approve_above": 0.5}).start()
        rig.drop("rain", SEED_REQUESTS["sound_effect"][0])
        held = rig.wait("rain", {"held"})
        job_dir = Path(held["request"]).parent
        (job_dir / INTENT_MARK).mkdir()  # a directory where the marker's file must go: the write fails
        (rig.inbox / "rain.approve").write_text("")
        rig.wait("rain", {"accepted"})
        assert sim.create_count() == 0
        (job_dir / INTENT_MARK).rmdir()
        status = rig.wait("rain", timeout=60)
        assert status["state"] == "succeeded" and sim.create_count() == 1
        assert json.loads((job_dir.parent.parent / "done" / job_dir.name / INTENT_MARK).read_text())["task_id"]


class TestStartupProblems:
    def test_lock_held(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A second daemon on a state directory in use: one line naming it and what to do, exit 78."""
        rig = rig_factory(sim).start()
        second = _cli(rig, "run", "--once")
        assert second.returncode == 78 and "Traceback" not in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1 and "in use by runwatch pid" in second.stderr
        assert "stop the other one first" in second.stderr

    def test_state_dir_unusable(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A state directory that cannot be made (a file stands where it should be): one line with the path and
        the fix, exit 78, no traceback."""
        rig = rig_factory(sim)
        (rig.root / "state").write_text("not a folder")
        refused = _cli(rig, "run", "--once")
        assert refused.returncode == 78 and "Traceback" not in refused.stderr
        line = refused.stderr.strip()
        assert len(line.splitlines()) == 1 and str(rig.root / "state") in line and "[state] dir" in line
