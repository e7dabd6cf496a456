"""The daemon with its journal in a real PostgreSQL database: requests through the simulator to their outputs,
a daemon killed with SIGKILL and the next one following its tasks, and `runwatch journal migrate` moving a
SQLite journal with jobs in flight to a database where the daemon follows them to the end."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import tomli_w

from runwatch.config import parse_config
from runwatch.credits import credits_command
from runwatch.daemon import Daemon
from runwatch.errors import JournalError
from runwatch.jobs.job import Job
from runwatch.simulator import Simulator
from runwatch.store import Journal
from runwatch.store.postgres import PostgresJournal
from runwatch.store.transfer import migrate_command

from .rig import SEED_REQUESTS, Rig

SPEECH = SEED_REQUESTS["text_to_speech"][0]
VIDEO = SEED_REQUESTS["text_to_video"][0]
AT_RUNWAY = {"submitted", "pending", "running"}


def _daemon_process(rig: Rig, sim: Simulator) -> subprocess.Popen[bytes]:
    """`runwatch run` on the rig's config, as its own process (so it can be killed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWAY", "AWS_"))}
    env |= {"RUNWAYML_API_SECRET": sim.key, "RUNWATCH_ALLOW_ROOT": "1"}
    argv = [sys.executable, "-m", "runwatch.cli", "run", "--config", str(rig.config_file()), "--log-level", "warning"]
    with open(rig.root / "daemon.log", "ab") as log:
        return subprocess.Popen(argv, cwd=rig.root, env=env, stdout=log, stderr=log)


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(30)


def _wait_for(rig: Rig, name: str, states: set[str], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while (status := rig.status(name)) is None or status["state"] not in states:
        assert process.poll() is None, (rig.root / "daemon.log").read_text(errors="replace")
        assert time.monotonic() < deadline, f"{name} did not reach {states}: {status}"
        time.sleep(0.05)


class TestDaemonOnPostgres:
    def test_requests_reach_their_outputs(self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Requests dropped in the inbox are created once each and succeed, with their outputs; the jobs are in
        the database, `runwatch credits` counts their spending from there, and no SQLite journal is made."""
        rig = rig_factory(sim, state={"database": pg_url}).start()
        names = ["line0", "line1", "rain"]
        rig.drop("line0", SPEECH)
        rig.drop("line1", dict(SPEECH, promptText="Goodbye."))
        rig.drop("rain", SEED_REQUESTS["sound_effect"][0])
        rig.succeed(names)
        assert sim.create_count() == 3 and sim.duplicate_creates() == []
        journal = PostgresJournal(pg_url)
        assert journal.counts() == {"succeeded": 3}
        spent = sum(job.credits or 0 for job in journal.jobs())
        journal.close()
        assert spent > 0
        out = io.StringIO()
        env = {"RUNWAYML_API_SECRET": sim.key}
        assert credits_command(config_file=str(rig.config_file()), as_json=True, out=out, env=env) == 0
        assert json.loads(out.getvalue())["spending"]["journal"]["today"]["total"] == spent  # read from the database
        assert not (rig.root / "state" / "journal.sqlite3").exists()

    def test_a_killed_daemon_is_followed_by_the_next(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator
    ) -> None:
        """A daemon killed with SIGKILL while its tasks run at Runway: the next start (its database lock gone
        with it) follows them to their outputs, and nothing is created twice."""
        sim.config.time_scale = 1.0  # tasks take real minutes: they are still running at the kill
        rig = rig_factory(sim, state={"database": pg_url})
        process = _daemon_process(rig, sim)
        try:
            rig.drop("film", VIDEO)
            rig.drop("line", SPEECH)
            for name in ("film", "line"):
                _wait_for(rig, name, AT_RUNWAY | {"downloading", "succeeded"}, process)
        finally:
            _kill(process)
        sim.advance(3600)  # the tasks end while no runwatch runs
        rig.start()
        rig.succeed(("film", "line"))
        assert sim.create_count() == 2 and sim.duplicate_creates() == []

    def test_a_second_daemon_with_a_live_nodes_name_refuses_to_start(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """Daemons share a database as nodes: a second daemon (another process and state folder) under the name
        of a live node exits 78 with one line naming it; under its own name it starts."""
        first = rig_factory(sim, state={"database": pg_url}, node={"name": "suite-1"}).start()
        other = dict(first.data, state={"dir": str(tmp_path / "other-state"), "database": pg_url})
        config = tmp_path / "other.toml"
        config.write_text(tomli_w.dumps(other))
        env = dict(os.environ, RUNWAYML_API_SECRET=sim.key, RUNWATCH_ALLOW_ROOT="1")
        argv = [sys.executable, "-m", "runwatch.cli", "run", "--config", str(config)]
        refused = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert refused.returncode == 78, refused.stderr
        line = refused.stderr.strip().splitlines()[-1]
        assert re.fullmatch(r"runwatch run: the node name 'suite-1' is in use by a running runwatch on .*", line)
        second = Daemon(parse_config(dict(other, node={"name": "suite-2"}), "other.toml"), api_key=sim.key)
        second.close()


class TestMigrate:
    def test_jobs_in_flight_are_followed_from_the_database(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator
    ) -> None:
        """Tasks at Runway in the SQLite journal, moved: the daemon on the database downloads their outputs,
        a create that may have happened is never sent again, and the SQLite journal refuses to open."""
        sim.config.time_scale = 1.0
        before = rig_factory(sim).start()
        before.drop("film", VIDEO)
        before.drop("line", SPEECH)
        for name in ("film", "line"):
            before.wait(name, AT_RUNWAY)
        before.stop()
        before.unconfirmed("lost", {"endpoint": "sound_effect", "model": "eleven_text_to_sound_v2"})
        journal = Journal(before.root / "state" / "journal.sqlite3")
        journal.add_command("retry", "nothing-by-that-name")  # left for the next daemon: it moves too
        journal.close()
        creates = sim.create_count()

        out, err = io.StringIO(), io.StringIO()
        assert migrate_command(pg_url, config_file=str(before.config_file()), out=out, err=err, env={}) == 0, err
        assert "moved 3 jobs (3 not finished) and 1 commands" in out.getvalue()
        with pytest.raises(JournalError, match="was moved to"):
            Journal(before.root / "state" / "journal.sqlite3")

        sim.advance(3600)
        after = rig_factory(sim, state={"database": pg_url}).start()
        for name in ("film", "line"):
            status = after.wait(name)
            assert status["state"] == "succeeded", status
            after.check_outputs(status)
        assert after.wait("lost")["state"] == "needs_attention"
        assert sim.create_count() == creates and sim.duplicate_creates() == []
        database = PostgresJournal(pg_url)
        deadline = time.monotonic() + 30
        while database.pending_commands():  # the command that came over is answered by the new daemon
            assert time.monotonic() < deadline, "the command moved over was never answered"
            time.sleep(0.05)
        database.close()

    def test_ids_numbers_and_answers_come_over_as_they_were(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator
    ) -> None:
        """Jobs and commands keep their ids, numbers and answers; new ones number on after them."""
        rig = rig_factory(sim)
        journal = Journal(rig.root / "state" / "journal.sqlite3")
        jobs = [Job(id=f"j{i}", name=f"n{i}", inbox="inbox", format="json") for i in range(3)]
        journal.add_many(jobs)
        done = journal.add_command("cancel", "n0")
        journal.finish_command(done, "no active request named n0")
        pending = journal.add_command("approve", "n1")
        journal.close()
        assert migrate_command(pg_url, config_file=str(rig.config_file()), out=io.StringIO(), env={}) == 0
        database = PostgresJournal(pg_url)
        assert [(job.id, job.seq, job.created_at) for job in database.jobs()] == [
            (job.id, job.seq, job.created_at) for job in reversed(jobs)
        ]
        assert database.command_result(done) == "no active request named n0"
        assert [c.id for c in database.pending_commands()] == [pending]
        assert database.add_command("retry", "n2") == pending + 1
        assert database.add(Job(id="new", name="new", inbox="inbox", format="json")).seq == 4
        database.close()

    def test_a_database_with_jobs_is_refused(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator
    ) -> None:
        """A database that holds jobs is never filled more: the command fails and the SQLite journal is left as
        it was, still usable."""
        rig = rig_factory(sim)
        journal = Journal(rig.root / "state" / "journal.sqlite3")
        journal.add(Job(id="a", name="a", inbox="inbox", format="json"))
        journal.close()
        database = PostgresJournal(pg_url)
        database.add(Job(id="b", name="b", inbox="inbox", format="json"))
        database.close()
        err = io.StringIO()
        assert migrate_command(pg_url, config_file=str(rig.config_file()), err=err, env={}) == 1
        assert "already holds 1 jobs and 0 commands; it must be empty" in err.getvalue()
        assert [job.id for job in Journal(rig.root / "state" / "journal.sqlite3").jobs()] == ["a"]

    def test_a_running_daemon_is_refused(self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """While a daemon runs on the state folder nothing is moved: it would go on writing to SQLite."""
        rig = rig_factory(sim).start()
        err = io.StringIO()
        assert migrate_command(pg_url, config_file=str(rig.config_file()), err=err, env={}) == 1
        assert "stop the daemon first" in err.getvalue() and "runwatch pid" in err.getvalue()
        database = PostgresJournal(pg_url)
        assert database.counts() == {}
        database.close()

    def test_a_bad_url_or_no_journal(self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A URL with a password is a usage error that does not repeat it; no SQLite journal, nothing to move."""
        rig = rig_factory(sim)
        config = str(rig.config_file())
        err = io.StringIO()
        assert migrate_command("postgresql://u:hunter2secret@db/x", config_file=config, err=err, env={}) == 2
        assert "the database password never goes in the config file" in err.getvalue()
        assert "hunter2secret" not in err.getvalue()
        err = io.StringIO()
        assert migrate_command(pg_url, config_file=config, err=err, env={}) == 1
        assert "no SQLite journal at" in err.getvalue()
