"""Several runwatch nodes on one PostgreSQL journal: each request claimed once however many nodes race for it, a
node's tasks taken over by another when it dies or stops, a create whose fate is unknown never sent again, a
node cut off from the database sending nothing, a database restart losing nothing, leases by the database's
clock, commands answered by the owning node, and `runwatch nodes`.

Daemons run as their own processes (so they can be killed) on one inbox tree and one simulator; leases are
short (``[node] lease = 3``) so that takeovers come within seconds."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import structlog
import tomli_w

from runwatch.clock import SystemClock, now_iso
from runwatch.config import NodeConfig, parse_config
from runwatch.control import control_command
from runwatch.errors import ConfigError, IntentNotRecorded
from runwatch.jobs.job import Job
from runwatch.jobs.ledger import Ledger
from runwatch.nodes import nodes_command
from runwatch.simulator import Fault, Simulator
from runwatch.store.listen import CommandListener
from runwatch.store.postgres import PostgresJournal
from runwatch.workarea import Control, Taken, WorkArea

from .pgserver import _SETTINGS, PgServer, find_bindir
from .rig import SEED_REQUESTS, Rig

SPEECH = SEED_REQUESTS["text_to_speech"][0]
VIDEO = SEED_REQUESTS["text_to_video"][0]
AT_RUNWAY = {"submitted", "pending", "running"}
LEASE = 3


class _Server(PgServer):
    """A server of the test's own, which it may stop and start again (the session's server is shared)."""

    def pause(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-s", "-w", "stop")

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # paused by a test that failed before resuming: removed all the same
            super().stop()

    def resume(self) -> None:
        options = _SETTINGS.format(socket=self.root)
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", options,
                  "-w", "-s", "start")  # fmt: skip


@pytest.fixture
def own_pg(pg_server: PgServer) -> Iterator[tuple[_Server, str]]:
    """A PostgreSQL server for this test alone, and a fresh database's URL on it."""
    bindir = find_bindir()
    assert bindir is not None
    server = _Server(bindir)
    try:
        server.start()
        yield server, server.url(server.create_database())
    finally:
        server.stop()


class _Ahead(SystemClock):
    """This machine's clocks, the wall clock five minutes ahead (monotonic time cannot be off)."""

    def time(self) -> float:
        return super().time() + 300

    def now(self) -> datetime:
        return super().now() + timedelta(seconds=300)


# -- helpers ----------------------------------------------------------------------------------------------


def _config(rig: Rig, name: str, url: str) -> Path:
    """A node's config: the rig's inbox and outbox, a state folder of its own, the shared database."""
    data = dict(
        rig.data,
        state={"dir": str(rig.root / f"state-{name}"), "database": url},
        node={"name": name, "lease": LEASE},
    )
    path = rig.root / f"{name}.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def _spawn(rig: Rig, sim: Simulator, name: str, url: str) -> subprocess.Popen[bytes]:
    """`runwatch run` as node ``name``, its own process, logging to ROOT/NAME.log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWAY", "AWS_"))}
    env |= {"RUNWAYML_API_SECRET": sim.key, "RUNWATCH_ALLOW_ROOT": "1"}
    argv = [sys.executable, "-m", "runwatch.cli", "run", "--config", str(_config(rig, name, url))]
    with open(rig.root / f"{name}.log", "ab") as log:
        return subprocess.Popen([*argv, "--log-level", "info"], cwd=rig.root, env=env, stdout=log, stderr=log)


def _log(rig: Rig, name: str) -> str:
    return (rig.root / f"{name}.log").read_text(errors="replace")


def _events(rig: Rig, name: str, event: str) -> list[dict[str, Any]]:
    """The node's log lines (JSON) of one event."""
    found = []
    for line in _log(rig, name).splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == event:
            found.append(entry)
    return found


def _until(what: Callable[[], Any], message: Callable[[], str], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := what()):
        assert time.monotonic() < deadline, message()
        time.sleep(0.1)
    return found


def _states(rig: Rig, *names: str) -> set[str]:
    """The states the requests' status files show (an empty string for one with none yet)."""
    return {str((rig.status(name) or {}).get("state", "")) for name in names}


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    """What `query` finds in the shared database, read on a connection of its own."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def _owners(url: str) -> dict[str, str | None]:
    """Each job's name and owner, as the database has them."""
    return {str(name): owner for name, owner in _rows(url, "SELECT name, owner FROM jobs")}


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        process.wait(60)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Daemons a test started: killed at its end, whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        _stop(process)


def _joined(url: str, name: str, lease: float = LEASE, skew: float = 0.0) -> PostgresJournal:
    journal = PostgresJournal(url)
    journal.join(name, lease, host=f"host-{name}", pid=os.getpid(), version="test", node_time=time.time() + skew)
    return journal


def _job(job_id: str, name: str, inbox: str = "inbox", **fields: Any) -> Job:
    return Job(id=job_id, name=name, inbox=inbox, format="json", **fields)


def _job_dir(inbox: Path, where: str, name: str, body: dict[str, Any]) -> Path:
    """A job's folder in the inbox's work area (``jobs/ID``, ``failed/ID``...) holding request NAME.json."""
    job_dir = inbox / ".runwatch" / where
    job_dir.mkdir(parents=True)
    (job_dir / f"{name}.json").write_text(json.dumps(body))
    return job_dir


def _area(inbox: Path, journal: PostgresJournal) -> WorkArea:
    """The inbox's work area as a node holds it: claims go through `journal`, nothing is delivered."""
    return WorkArea(
        "inbox",
        inbox,
        inbox / ".runwatch",
        deliver=lambda item: None,
        forget=lambda path: None,
        root_gone=lambda: False,
        clock=time.monotonic,
        log=structlog.get_logger(),
        claims=journal,
    )


def _status(config: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """`runwatch status --json`'s documents and `runwatch status`'s table lines, wide enough for every column."""
    env = dict(os.environ, RUNWATCH_ALLOW_ROOT="1", COLUMNS="200")
    cli = [sys.executable, "-m", "runwatch.cli", "status", "--config", str(config)]
    shown = json.loads(subprocess.run([*cli, "--json"], env=env, capture_output=True, check=True).stdout)
    table = subprocess.run(cli, env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    return shown, table


# -- claims -----------------------------------------------------------------------------------------------


class TestClaims:
    def test_a_job_recorded_first_by_another_node_is_left_out(self, pg_url: str) -> None:
        """Two nodes record the same claimed job (one took the claim over while the other could not reach the
        journal): the first records and owns it; the second's burst leaves it out and records the rest."""
        first, second = _joined(pg_url, "n1"), _joined(pg_url, "n2")
        try:
            assert first.add_many([_job("j1", "a")]) == {"j1"}
            assert second.add_many([_job("j1", "a"), _job("j2", "b")]) == {"j2"}
            assert first.beat(time.time()) == {"j1"} and second.beat(time.time()) == {"j2"}
        finally:
            first.close()
            second.close()

    def test_three_nodes_racing_claim_each_request_once(self, pg_url: str, tmp_path: Path) -> None:
        """Three nodes (a work area and a joined journal each, in threads) take the same 40 request files at
        the same moment: every file is claimed exactly once, by the node whose claim row won, and the claims
        table names that node and job."""
        inbox = tmp_path / "inbox"
        (inbox / ".runwatch" / "jobs").mkdir(parents=True)
        names = [f"r{i:02d}.json" for i in range(40)]
        for name in names:
            (inbox / name).write_text('{"endpoint": "sound_effect", "promptText": "rain"}')
        journals = [_joined(pg_url, f"n{i}") for i in range(3)]
        won: dict[str, list[tuple[str, Taken]]] = {name: [] for name in names}
        start = threading.Barrier(3)

        def race(journal: PostgresJournal) -> None:
            area = _area(inbox, journal)
            order = list(names)
            random.Random(journal.node).shuffle(order)
            start.wait()
            for name in order:
                taken = area.take(inbox / name, None)
                if taken is not None:
                    won[name].append((str(journal.node), taken))

        threads = [threading.Thread(target=race, args=(journal,)) for journal in journals]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert all(len(takers) == 1 for takers in won.values()), won
        rows = _rows(pg_url, "SELECT path, node, job_id FROM claims")
        assert sorted(rows) == sorted((name, node, taken.job_id) for name, [(node, taken)] in won.items())
        for name, [(_, taken)] in won.items():
            assert taken.request_file.read_text().startswith("{") and taken.request_file.name == name
        assert sorted(p.name for p in (inbox / ".runwatch" / "jobs").iterdir()) == sorted(
            taken.job_id for [(_, taken)] in won.values()
        )
        for journal in journals:
            journal.close()

    def test_a_rename_reported_failed_but_made_is_a_claim(
        self, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """NFS may answer a rename that happened with an error (a retransmitted request): when the request file
        is gone from the inbox and the job dir holds the same file, the claim stands and its row stays."""
        inbox = tmp_path / "inbox"
        (inbox / ".runwatch" / "jobs").mkdir(parents=True)
        (inbox / "a.json").write_text("{}")
        journal = _joined(pg_url, "n1")
        real = os.rename

        def rename_then_fail(src: Any, dst: Any) -> None:
            real(src, dst)
            raise OSError(errno.EIO, "Input/output error")

        area = _area(inbox, journal)
        monkeypatch.setattr(os, "rename", rename_then_fail)
        taken = area.take(inbox / "a.json", None)
        monkeypatch.setattr(os, "rename", real)
        assert taken is not None and taken.request_file.read_text() == "{}"
        assert not (inbox / "a.json").exists()
        assert _rows(pg_url, "SELECT path, job_id FROM claims") == [("a.json", taken.job_id)]
        journal.close()

    def test_a_claim_row_of_a_node_gone_is_taken_again(self, pg_url: str) -> None:
        """A claim row whose node is live decides against everyone else; once that node stopped (or went
        silent for a lease) the file may be claimed by another node, and a truly failed claim is released."""
        first, second = _joined(pg_url, "n1"), _joined(pg_url, "n2")
        assert first.claim("inbox", "a.json", "1:2:3", "job-1")
        assert not second.claim("inbox", "a.json", "1:2:3", "job-2")
        assert second.claim("inbox", "a.json", "1:2:4", "job-3")  # the file was replaced: another identity
        second.unclaim("inbox", "a.json", "1:2:4", "job-3")
        assert first.claim("inbox", "a.json", "1:2:4", "job-4")
        first.leave()
        assert second.claim("inbox", "a.json", "1:2:3", "job-5")
        first.close()
        second.close()

    def test_three_daemons_on_one_inbox_take_each_request_once(
        self,
        pg_url: str,
        rig_factory: Callable[..., Rig],
        sim: Simulator,
        processes: list[subprocess.Popen[bytes]],
    ) -> None:
        """Three daemons watch one inbox: twelve requests dropped at once are each claimed by one node, created
        once and succeed, and the work among the nodes is recorded (one job and one claim per request)."""
        rig = rig_factory(sim)
        processes += [_spawn(rig, sim, f"n{i}", pg_url) for i in (1, 2, 3)]
        _until(lambda: all(_events(rig, f"n{i}", "daemon.started") for i in (1, 2, 3)), lambda: _log(rig, "n1"))
        names = [f"line{i:02d}" for i in range(12)]
        for name in names:
            rig.drop(name, dict(SPEECH, promptText=f"Hello {name}."))
        rig.succeed(names, timeout=60)
        assert sim.create_count() == len(names) and sim.duplicate_creates() == []
        jobs = _rows(pg_url, "SELECT name, id FROM jobs")
        claims = _rows(pg_url, "SELECT path, job_id FROM claims")
        assert sorted(name for name, _ in jobs) == names
        assert sorted(claims) == sorted((f"{name}.json", job_id) for name, job_id in jobs)


# -- takeover ---------------------------------------------------------------------------------------------


class TestTakeover:
    def test_a_killed_nodes_tasks_are_taken_over(
        self,
        pg_url: str,
        rig_factory: Callable[..., Rig],
        sim: Simulator,
        processes: list[subprocess.Popen[bytes]],
    ) -> None:
        """Node n1 follows two tasks and is killed with SIGKILL; node n2 takes them over (owner n2, logged with
        n1 named), downloads their outputs into the same outbox, and nothing is created twice."""
        sim.config.time_scale = 1.0  # tasks take real minutes: still running at the kill
        rig = rig_factory(sim)
        first = _spawn(rig, sim, "n1", pg_url)
        processes.append(first)
        rig.drop("film", VIDEO)
        rig.drop("line", SPEECH)
        _until(lambda: _states(rig, "film", "line") <= AT_RUNWAY, lambda: _log(rig, "n1"))
        assert set(_owners(pg_url).values()) == {"n1"}
        processes.append(_spawn(rig, sim, "n2", pg_url))
        _stop(first)
        _until(lambda: set(_owners(pg_url).values()) == {"n2"}, lambda: _log(rig, "n2"))
        sim.advance(3600)
        rig.succeed(("film", "line"), timeout=60)
        assert sim.create_count() == 2 and sim.duplicate_creates() == []
        taken = _events(rig, "n2", "jobs.taken_over")
        assert {e["from_node"] for e in taken} == {"n1"} and sum(e["count"] for e in taken) == 2
        assert not list(rig.outbox.glob(".*.tmp"))  # no partial file left visible

    def test_a_clean_stop_hands_the_jobs_over(
        self,
        pg_url: str,
        rig_factory: Callable[..., Rig],
        sim: Simulator,
        processes: list[subprocess.Popen[bytes]],
    ) -> None:
        """Node n1 stopped with SIGTERM ends its leases and marks itself stopped: node n2 takes its tasks over
        and finishes them, and `runwatch nodes` shows n1 stopped."""
        sim.config.time_scale = 1.0
        rig = rig_factory(sim)
        first = _spawn(rig, sim, "n1", pg_url)
        processes.append(first)
        rig.drop("film", VIDEO)
        _until(lambda: (rig.status("film") or {}).get("state") in AT_RUNWAY, lambda: _log(rig, "n1"))
        processes.append(_spawn(rig, sim, "n2", pg_url))
        _until(lambda: _events(rig, "n2", "node.started"), lambda: _log(rig, "n2"))
        _stop(first, signal.SIGTERM)
        assert first.returncode == 0
        assert [e["handed_over"] for e in _events(rig, "n1", "node.stopped")] == [1]
        _until(lambda: _owners(pg_url) == {"film": "n2"}, lambda: _log(rig, "n2"))
        sim.advance(3600)
        status = rig.wait("film", timeout=60)
        assert status["state"] == "succeeded", status
        rig.check_outputs(status)
        assert sim.create_count() == 1
        out = io.StringIO()
        assert nodes_command(str(_config(rig, "n2", pg_url)), as_json=True, out=out) == 0
        shown = {node["name"]: node for node in json.loads(out.getvalue())["nodes"]}
        assert shown["n1"]["state"] == "stopped" and shown["n1"]["jobs"] == 0
        assert shown["n2"]["state"] == "running"

    def test_a_clean_stop_is_taken_over_at_once_through_the_notification(
        self, pg_url: str, tmp_path: Path, rig_factory: Callable[..., Rig], sim: Simulator
    ) -> None:
        """Node n1 stops cleanly while following a task; node n2, whose leases last ten minutes and whose own
        sweep is turned off, takes the task over all the same, woken by the notification n1's stop sent, and
        finishes it: one create."""
        sim.config.time_scale = 1.0  # the task still runs at the stop
        first = rig_factory(sim, state={"dir": str(tmp_path / "state-n1"), "database": pg_url},
                            node={"name": "n1", "lease": 600}).start()  # fmt: skip
        first.drop("film", VIDEO)
        first.wait("film", AT_RUNWAY)
        second = rig_factory(sim, state={"dir": str(tmp_path / "state-n2"), "database": pg_url},
                             node={"name": "n2", "lease": 600}).start()  # fmt: skip
        assert second.daemon is not None and second.daemon.listener is not None
        node = second.daemon.engine.node
        node._sweep_every, node._next_sweep = 3600.0, float("inf")  # no sweep but the one a notification asks for
        assert isinstance(second.daemon.listener, CommandListener) and second.daemon.listener.connected.wait(30)
        assert _owners(pg_url) == {"film": "n1"}
        first.stop()
        _until(lambda: _owners(pg_url) == {"film": "n2"}, lambda: str(_owners(pg_url)), timeout=30)
        sim.advance(3600)
        status = second.wait("film", timeout=60)
        assert status["state"] == "succeeded", status
        second.check_outputs(status)
        assert sim.create_count() == 1 and sim.duplicate_creates() == []

    def test_a_create_on_its_way_at_a_nodes_death_is_never_sent_again(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator
    ) -> None:
        """A job whose intent node n1 recorded without a task id, n1 then silent: node n2 takes it over and
        moves it to needs_attention; no create is sent."""
        rig = rig_factory(sim, state={"database": pg_url}, node={"name": "n2", "lease": LEASE}).start()
        job_dir = _job_dir(rig.inbox, "jobs/20261207T000000Z-0badf00d", "lost", SEED_REQUESTS["sound_effect"][0])
        dead = _joined(pg_url, "n1", lease=1)
        dead.add(
            _job(
                job_dir.name,
                "lost",
                endpoint="sound_effect",
                model="eleven_text_to_sound_v2",
                state="accepted",
                job_dir=str(job_dir),
                request_path=str(job_dir / "lost.json"),
            )
        )
        dead.record_intent(job_dir.name, first=True)
        dead.close()  # no heartbeat from here on: its lease runs out
        status = rig.wait("lost", timeout=30)
        assert status["state"] == "needs_attention", status
        assert _owners(pg_url) == {"lost": "n2"}
        assert sim.create_count() == 0

    def test_a_task_of_a_node_mounting_the_share_elsewhere_is_followed(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator
    ) -> None:
        """Node n1 mounted the share at another path and died following a task: node n2 finds the job's folder
        by its id in its own work area, downloads the outputs and files the request away there."""
        rig = rig_factory(sim, state={"database": pg_url}, node={"name": "n2", "lease": LEASE}).start()
        job_dir = _job_dir(rig.inbox, "jobs/20261207T000000Z-e15ewhe2", "line", SPEECH)
        answer = httpx.post(
            f"{sim.url}/v1/text_to_speech",
            json={k: v for k, v in SPEECH.items() if k != "endpoint"},
            headers={"Authorization": f"Bearer {sim.key}", "X-Runway-Version": "2024-11-06"},
        )
        assert answer.status_code == 200, answer.text
        elsewhere = Path("/mnt/elsewhere/inbox/.runwatch/jobs") / job_dir.name
        dead = _joined(pg_url, "n1", lease=1)
        fields = {"endpoint": "text_to_speech", "model": SPEECH["model"], "body": SPEECH, "state": "accepted"}
        job = dead.add(
            _job(job_dir.name, "line", job_dir=str(elsewhere), request_path=str(elsewhere / "line.json"), **fields)
        )
        dead.record_intent(job.id, first=True)
        dead.record_task(job.id, answer.json()["id"], 1.0)
        dead.close()
        status = rig.wait("line", timeout=30)
        assert status["state"] == "succeeded", status
        rig.check_outputs(status)
        assert sim.create_count() == 1
        journal = PostgresJournal(pg_url)
        moved = journal.get(job_dir.name)
        journal.close()
        assert moved is not None and moved.job_dir == str(rig.inbox / ".runwatch" / "done" / job_dir.name)

    def test_a_claim_its_node_never_recorded_is_taken_over(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator
    ) -> None:
        """Node n1 renamed a request into its job dir and died before recording the job: node n2, running,
        takes that claim over and the request succeeds, created once; a claim row whose rename never happened
        is given up."""
        rig = rig_factory(sim, state={"database": pg_url}, node={"name": "n2", "lease": LEASE}).start()
        job_dir = _job_dir(rig.inbox, "jobs/20261207T000000Z-0rphan00", "line", SPEECH)
        dead = _joined(pg_url, "n1", lease=1)
        assert dead.claim("inbox", "line.json", "1:2:3", job_dir.name)
        assert dead.claim("inbox", "never.json", "4:5:6", "20261207T000000Z-n0tmade0")
        dead.close()
        status = rig.wait("line", timeout=30)
        assert status["state"] == "succeeded", status
        assert sim.create_count() == 1
        rows = _rows(pg_url, "SELECT path, node FROM claims ORDER BY path")
        assert rows == [("line.json", "n2")]

    def test_a_claim_a_live_node_is_making_is_left_to_it(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator
    ) -> None:
        """Node n2 starts while live node n1 has renamed a request into its job dir but not yet recorded it:
        n2's start leaves that folder alone; once n1 falls silent, n2 takes the claim over and the request
        succeeds, created once."""
        job_dir = _job_dir(rig_factory(sim).inbox, "jobs/20261207T000000Z-11vec1a1", "line", SPEECH)
        live = _joined(pg_url, "n1")
        assert live.claim("inbox", "line.json", "1:2:3", job_dir.name)
        rig = rig_factory(sim, state={"database": pg_url}, node={"name": "n2", "lease": LEASE}).start()
        assert live.get(job_dir.name) is None and (job_dir / "line.json").exists()
        live.close()  # silent from here on
        status = rig.wait("line", timeout=30)
        assert status["state"] == "succeeded", status
        assert sim.create_count() == 1 and _owners(pg_url) == {"line": "n2"}


# -- faults -----------------------------------------------------------------------------------------------


class TestFaults:
    def test_a_node_cut_off_sends_nothing_and_resumes(
        self, own_pg: tuple[_Server, str], rig_factory: Callable[..., Rig], sim: Simulator
    ) -> None:
        """The database stops: the node logs node.cut_off, takes no request and sends no create meanwhile;
        when the database is back the node returns and the request waiting in the inbox succeeds, created
        once."""
        server, url = own_pg
        rig = rig_factory(sim, state={"database": url}, node={"name": "n1", "lease": LEASE})
        with structlog.testing.capture_logs() as logs:
            rig.start()
            server.pause()
            rig.drop("line", SPEECH)
            _until(lambda: any(e["event"] == "node.cut_off" for e in logs), lambda: str(logs[-20:]))
            time.sleep(LEASE)
            assert rig.status("line") is None and sim.create_count() == 0
            assert (rig.inbox / "line.json").exists()
            server.resume()
            status = rig.wait("line", timeout=60)
        assert status["state"] == "succeeded", status
        assert sim.create_count() == 1 and sim.duplicate_creates() == []
        assert any(e["event"] == "node.returned" for e in logs)

    def test_a_node_cut_off_with_a_create_in_flight_keeps_nothing_reserved(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator
    ) -> None:
        """A node whose heartbeat stops while its create is on its way is cut off and forgets the job (another
        node's to take now): the credits it had set aside for that create are no longer taken off its balance,
        and the create's late answer changes nothing on it."""
        sim.faults.add(Fault("slow", endpoint="text_to_speech", method="POST", delay=5.0))
        rig = rig_factory(sim, state={"database": pg_url}, node={"name": "n1", "lease": 2}).start()
        assert rig.daemon is not None
        engine = rig.daemon.engine
        rig.drop("line", SPEECH)
        journal = PostgresJournal(pg_url)
        try:
            job = _until(lambda: [j for j in journal.jobs() if j.create_started_at], lambda: _log(rig, "n1"))[0]
            assert job.id in engine.money.reserved  # set aside while the create is on its way
            engine.node._beat_every = engine.node._next_beat = float("inf")  # no heartbeat from here on
            _until(lambda: engine.node.cut_off, lambda: "never cut off", timeout=30)
            assert job.id not in engine.money.reserved and job.id not in engine.jobs
            _until(lambda: (journal.get(job.id) or job).task_id, lambda: "the create never answered", timeout=30)
            assert job.id not in engine.money.reserved and sim.create_count() == 1
        finally:
            journal.close()

    def test_a_database_restart_mid_run_loses_nothing(
        self,
        own_pg: tuple[_Server, str],
        rig_factory: Callable[..., Rig],
        sim: Simulator,
        processes: list[subprocess.Popen[bytes]],
    ) -> None:
        """Two nodes work through requests while the database restarts: every request ends succeeded with
        its outputs, each created once."""
        server, url = own_pg
        sim.config.time_scale = 0.05
        rig = rig_factory(sim)
        processes += [_spawn(rig, sim, "n1", url), _spawn(rig, sim, "n2", url)]
        names = [f"line{i}" for i in range(6)]
        for name in names[:3]:
            rig.drop(name, dict(SPEECH, promptText=f"Hello {name}."))
        _until(lambda: rig.status("line0") is not None, lambda: _log(rig, "n1") + _log(rig, "n2"))
        server.pause()
        for name in names[3:]:
            rig.drop(name, dict(SPEECH, promptText=f"Hello {name}."))
        time.sleep(1.0)
        server.resume()
        rig.succeed(names, timeout=90, why=lambda: _log(rig, "n1")[-3000:] + _log(rig, "n2")[-3000:])
        assert sim.create_count() == len(names) and sim.duplicate_creates() == []
        ended = [name for name, process in zip(("n1", "n2"), processes, strict=True) if process.poll() is not None]
        assert ended == [], "\n".join(_log(rig, name)[-4000:] for name in ended)

    def test_a_lost_connection_is_kept_by_the_ledger(self, own_pg: tuple[_Server, str]) -> None:
        """While the server is down a job's change is kept in memory and owed (the journal reported unwritable),
        an intent is refused (no create could be sent), and once the server is back the change is written."""
        server, url = own_pg
        journal = _joined(url, "n1")
        ledger = Ledger(journal, structlog.get_logger())
        job = ledger.store.add(_job("j1", "a", state="accepted"))
        server.pause()
        ledger.update(job, progress=0.5)
        assert job.progress == 0.5 and ledger.owes("j1") and not ledger.healthy
        with pytest.raises(IntentNotRecorded):
            ledger.record_intent("j1", first=True)
        server.resume()
        _until(ledger.flush, lambda: str(ledger.error))
        assert ledger.healthy
        fresh = journal.get("j1")
        assert fresh is not None and fresh.progress == 0.5 and fresh.create_started_at is None
        journal.close()

    def test_a_node_whose_clock_is_minutes_ahead_keeps_its_jobs(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """Node n1's clock runs five minutes ahead: node n2 beside it takes none of n1's jobs while n1 runs
        (leases go by the database's clock), `runwatch nodes` shows n1's offset, and the request succeeds."""
        sim.config.time_scale = 1.0
        first = rig_factory(sim, state={"database": pg_url}, node={"name": "n1", "lease": LEASE})
        second = Rig(tmp_path, sim, state={"dir": str(tmp_path / "state-n2"), "database": pg_url})
        second.data["node"] = {"name": "n2", "lease": LEASE}
        second.config = parse_config(second.data, str(tmp_path / "n2.toml"))
        first.start()
        assert first.daemon is not None
        first.daemon.engine.clock = _Ahead()
        first.drop("film", VIDEO)
        first.wait("film", AT_RUNWAY)
        try:
            second.start()
            time.sleep(3 * LEASE)  # several leases and takeover sweeps of n2
            assert _owners(pg_url) == {"film": "n1"}
            out = io.StringIO()
            assert nodes_command(str(first.config_file()), as_json=True, out=out) == 0
            offsets = {node["name"]: node["clock_offset"] for node in json.loads(out.getvalue())["nodes"]}
            assert 299 < offsets["n1"] < 301 and abs(offsets["n2"]) < 1
            sim.advance(3600)
            assert first.wait("film")["state"] == "succeeded"
        finally:
            second.stop()
        assert sim.create_count() == 1

    def test_leases_go_by_the_databases_clock(self, pg_url: str) -> None:
        """A node whose clock is five minutes ahead holds its jobs as long as any other (its offset is shown):
        another node takes nothing from it while it renews, and takes its jobs once it stops renewing."""
        ahead = _joined(pg_url, "ahead", lease=2, skew=300)
        other = _joined(pg_url, "other", lease=2)
        ahead.add(_job("j1", "a", state="accepted"))
        offset = {n.name: n.clock_offset for n in other.nodes()}["ahead"]
        assert offset is not None and 299 < offset < 301
        for _ in range(3):
            assert ahead.beat(time.time() + 300) == {"j1"}
            assert other.take_over(["inbox"], 10) == []
            time.sleep(1.0)
        time.sleep(2.2)
        taken = other.take_over(["inbox"], 10)
        assert [(t.job.id, t.from_node) for t in taken] == [("j1", "ahead")]
        with pytest.raises(Exception, match="no longer holds the lease"):
            ahead.record_intent("j1", first=True)
        ahead.record_task("j1", "task-1", None)  # a late answer still leaves its task id
        kept = other.get("j1")
        assert kept is not None and kept.task_id == "task-1"
        assert ahead.beat(time.time() + 300) == set()
        ahead.close()
        other.close()


# -- commands and `runwatch nodes` --------------------------------------------------------------------------


class TestCommands:
    def test_a_command_reaches_only_the_owning_node(self, pg_url: str) -> None:
        """A command naming a node's unfinished job is taken by that node alone; one naming a job whose node is
        silent waits until the job is taken over; one naming no unfinished job is taken by one node."""
        first, second = _joined(pg_url, "n1", lease=1), _joined(pg_url, "n2", lease=1)
        first.add(_job("j1", "a", state="accepted"))
        cancel = second.add_command("cancel", "a")
        nobody = second.add_command("cancel", "nothing-by-that-name")
        assert [c.id for c in second.pending_commands()] == [nobody]
        assert [c.id for c in first.pending_commands()] == [cancel]
        time.sleep(1.2)  # n1 silent for a lease: its command waits for the takeover
        assert second.pending_commands() == [c for c in second.pending_commands() if c.id == nobody]
        assert [t.job.id for t in second.take_over(["inbox"], 10)] == ["j1"]
        assert sorted(c.id for c in second.pending_commands()) == [cancel, nobody]
        first.close()
        second.close()

    def test_an_approve_file_another_node_took_reaches_the_owner(
        self,
        pg_url: str,
        rig_factory: Callable[..., Rig],
        sim: Simulator,
        processes: list[subprocess.Popen[bytes]],
    ) -> None:
        """A request held for approval by node n1; the `NAME.approve` file is taken by node n2, which does not
        own the request: n2 passes it on through the journal, n1 releases it, and it succeeds, created once."""
        rig = rig_factory(
            sim, inbox={"approve_above": 10}, state={"database": pg_url}, node={"name": "n2", "lease": LEASE}
        )
        processes.append(_spawn(rig, sim, "n1", pg_url))
        rig.drop("big", VIDEO)
        rig.wait("big", {"held"}, timeout=30)
        rig.start()
        assert rig.daemon is not None
        rig.daemon.engine.deliver(Control("inbox", "approve", "big"))
        status = rig.wait("big", {"succeeded", "failed", "needs_attention"}, timeout=60)
        assert status["state"] == "succeeded", status
        assert sim.create_count() == 1 and _owners(pg_url) == {"big": "n1"}
        rows = _rows(pg_url, "SELECT kind, name, taken_by, result FROM commands")
        assert rows == [("approve", "big", "n1", "approved")]

    def test_a_retry_of_a_request_another_node_ended_is_sent_again(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator
    ) -> None:
        """A request node n1 ended as failed, n1 gone: `runwatch retry NAME` is answered by node n2, which
        makes the request its own and sends it; it succeeds, created once."""
        rig = rig_factory(sim, state={"database": pg_url}, node={"name": "n2", "lease": LEASE}).start()
        job_dir = _job_dir(rig.inbox, "failed/20261207T000000Z-fa11ed00", "line", SPEECH)
        gone = _joined(pg_url, "n1")
        fields = {"endpoint": "text_to_speech", "model": SPEECH["model"], "body": SPEECH, "state": "failed"}
        gone.add(_job(job_dir.name, "line", job_dir=str(job_dir), request_path=str(job_dir / "line.json"), **fields))
        gone.leave()
        gone.close()
        commands = PostgresJournal(pg_url)
        command = commands.add_command("retry", "line")
        _until(lambda: commands.command_result(command), lambda: "no answer to the retry")
        assert commands.command_result(command) == "resubmitting"
        commands.close()
        status = rig.wait("line", {"succeeded", "failed", "needs_attention"}, timeout=30)
        assert status["state"] == "succeeded", status
        assert sim.create_count() == 1 and _owners(pg_url) == {"line": "n2"}

    def test_a_command_from_a_machine_without_a_daemon_is_carried_out(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """`runwatch approve` on a machine whose own state folder has no daemon (the database has live nodes) is
        answered by the node that holds the request: exit 0, and the request succeeds."""
        rig = rig_factory(
            sim, inbox={"approve_above": 10}, state={"database": pg_url}, node={"name": "n1", "lease": LEASE}
        ).start()
        rig.drop("big", VIDEO)
        rig.wait("big", {"held"}, timeout=30)
        elsewhere = tmp_path / "workstation.toml"
        elsewhere.write_text(tomli_w.dumps(dict(rig.data, state={"dir": str(tmp_path / "ws"), "database": pg_url})))
        out, err = io.StringIO(), io.StringIO()
        assert control_command("approve", "big", config_file=str(elsewhere), out=out, err=err) == 0, err.getvalue()
        assert out.getvalue() == "big: approved\n"
        assert rig.wait("big", {"succeeded", "failed"}, timeout=60)["state"] == "succeeded"


class TestNodesCommand:
    def test_nodes_lists_every_node_with_its_jobs(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator
    ) -> None:
        """`runwatch nodes` lists each node with its host, last heartbeat, jobs owned and state (a node
        silent for a lease shown silent); with SQLite it shows the one local node."""
        first, second = _joined(pg_url, "edit-1"), _joined(pg_url, "edit-2", lease=1)
        first.add(_job("j1", "a", state="accepted"))
        first.add(_job("j2", "b", state="succeeded", finished_at=now_iso()))
        time.sleep(1.2)
        assert first.beat(time.time()) == {"j1"}  # edit-1 beats on, edit-2 fell silent
        rig = rig_factory(sim, state={"database": pg_url}, node={"lease": 1})  # silent: no heartbeat for a lease
        out = io.StringIO()
        assert nodes_command(str(rig.config_file()), out=out) == 0
        lines = out.getvalue().splitlines()
        assert lines[0].split() == ["NODE", "HOST", "PID", "HEARTBEAT", "JOBS", "CLOCK", "STATE"]
        one, two = (line.split() for line in lines[1:])
        # NODE HOST PID AGE "s" "ago" JOBS CLOCK STATE
        assert one[:2] == ["edit-1", "host-edit-1"] and one[6] == "1" and one[-1] == "running"
        assert two[:2] == ["edit-2", "host-edit-2"] and two[6] == "0" and two[-1] == "silent"
        first.close()
        second.close()
        local = rig_factory(sim, node={"name": "desk"}).start()
        local.drop("line", SPEECH)
        local.wait("line")
        out = io.StringIO()
        assert nodes_command(str(local.config_file()), as_json=True, out=out) == 0
        (node,) = json.loads(out.getvalue())["nodes"]
        assert node["name"] == "desk" and node["state"] == "running" and node["jobs"] == 0


class TestStatusShowsNodes:
    def test_status_names_the_node_following_each_unfinished_job(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """`runwatch status` on a shared journal has a NODE column after STATE, and `--json` a "node" key: the
        node following each unfinished job, empty (null) for an ended one. With SQLite neither is there."""
        first, second = _joined(pg_url, "edit-1"), _joined(pg_url, "edit-2")
        first.add(_job("j1", "cut", state="accepted"))
        second.add(_job("j2", "grade", state="running", task_id="t2"))
        first.add(_job("j3", "done", state="succeeded", finished_at=now_iso()))
        first.close()
        second.close()
        shared = rig_factory(sim, state={"database": pg_url}).config_file()
        shown, table = _status(shared)
        assert {doc["name"]: doc["node"] for doc in shown} == {"cut": "edit-1", "grade": "edit-2", "done": None}
        assert table[0].split()[:3] == ["NAME", "STATE", "NODE"]
        rows = {line.split()[0]: line.split()[1:3] for line in table[1:]}
        assert rows["cut"] == ["accepted", "edit-1"] and rows["grade"] == ["running", "edit-2"]
        assert rows["done"][1] != "edit-1"  # no node for an ended job: the next column follows
        alone = tmp_path / "alone"
        alone.mkdir()
        local = rig_factory(sim, state={"dir": str(alone / "state")})
        local.start()
        local.drop("line", SPEECH)
        local.wait("line")
        local.stop()
        (doc,), table = _status(local.config_file())
        assert "node" not in doc
        assert "NODE" not in table[0].split()


class TestNodeConfig:
    def test_node_name_and_lease_are_checked(self) -> None:
        """`[node] name` defaults to the host name's first label, made safe; a name with a space or a lease
        outside 1 to 600 s is refused, naming the key."""
        inbox = {"inbox": [{"path": "/srv/in", "outbox": "/srv/out"}]}
        default = parse_config(inbox, "runwatch.toml").node
        assert default.lease == 10 and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", default.name)
        assert parse_config(dict(inbox, node={"name": "edit-3", "lease": 3}), "runwatch.toml").node == NodeConfig(
            "edit-3", 3.0
        )
        with pytest.raises(ConfigError) as caught:
            parse_config(dict(inbox, node={"name": "edit 3", "lease": 0.5}), "runwatch.toml")
        assert [p.path for p in caught.value.problems] == ["node.name", "node.lease"]
