"""Several nodes on one PostgreSQL journal: every create is checked against what all nodes have spent and let
through, the check and the recorded intent in one transaction under the money lock; commands added anywhere
reach the daemon through LISTEN/NOTIFY."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from runwatch.budget import Limits, MoneyCheck, OrgFigures, Spent, charge_of, spent, user_hold
from runwatch.clock import now_iso
from runwatch.config import parse_config
from runwatch.control import control_command
from runwatch.daemon import Daemon
from runwatch.errors import LeaseLost, MoneyHeld
from runwatch.jobs.job import Job
from runwatch.jobs.states import State
from runwatch.simulator import Simulator
from runwatch.store import Journal
from runwatch.store.listen import CommandListener
from runwatch.store.pgschema import LOCK_CLASS, MONEY_LOCK
from runwatch.store.postgres import PostgresJournal
from runwatch.submit import submit_command

from .rig import SEED_REQUESTS, Rig

MODEL = "gen4_turbo"
SPEECH = SEED_REQUESTS["text_to_speech"][0]  # 1 credit
WAIT = 30.0  # seconds a test waits for what should come at once, before it fails


class _Log:
    """A logger that keeps the events it is given."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def _keep(self, event: str, **_: Any) -> None:
        self.events.append(event)

    info = warning = error = exception = _keep


@pytest.fixture
def nodes(pg_url: str) -> Iterator[list[PostgresJournal]]:
    """Three journals on one database, as three nodes hold them."""
    opened = [PostgresJournal(pg_url, pool_size=3) for _ in range(3)]
    yield opened
    for journal in opened:
        journal.close()


def _job(job_id: str, inbox: str = "in", estimate: float = 10.0, **fields: Any) -> Job:
    return Job(id=job_id, name=job_id, inbox=inbox, format="json", model=MODEL, estimated_credits=estimate, **fields)


def _check(job: Job, limits: Limits, **more: Any) -> MoneyCheck:
    return MoneyCheck.for_job(job, job.estimated_credits, "5 s", limits, **more)


def _sent(journal: PostgresJournal, inbox: str) -> list[Job]:
    return [j for j in journal.jobs(limit=10_000) if j.inbox == inbox and j.create_started_at is not None]


def _race(nodes: list[PostgresJournal], jobs: list[list[Job]], limits: Limits) -> list[str]:
    """Each node records the intents of its own jobs, all starting at once; the codes of the refusals."""
    start = threading.Barrier(len(nodes))
    refused: list[str] = []

    def node(journal: PostgresJournal, mine: list[Job]) -> None:
        start.wait()
        for job in mine:
            try:
                journal.record_intent(job.id, first=True, check=_check(job, limits))
            except MoneyHeld as exc:
                refused.append(exc.code)

    threads = [threading.Thread(target=node, args=pair) for pair in zip(nodes, jobs, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return refused


class TestRacingNodes:
    def test_three_nodes_never_spend_more_than_a_tight_budget(self, nodes: list[PostgresJournal]) -> None:
        """Three nodes recording intents at the same moment under a tight daily budget, round after round: the
        estimates of the creates let through never add up to more than the budget, and every create that fits
        goes."""
        rounds, per_node, credits, budget = 15, 6, 10.0, 95.0  # 18 creates of 10 want to go; 9 fit
        for r in range(rounds):
            inbox = f"round{r}"  # each round its own inbox budget, all on today
            limits = Limits(inbox_daily=budget)
            jobs = [[_job(f"r{r}n{n}j{i}", inbox, credits) for i in range(per_node)] for n in range(3)]
            nodes[0].add_many([job for mine in jobs for job in mine])
            refused = _race(nodes, jobs, limits)
            sent = _sent(nodes[1], inbox)
            assert sum(j.estimated_credits or 0 for j in sent) <= budget, f"round {r}: {len(sent)} creates let through"
            assert len(sent) == 9 and refused == ["held"] * 9, (r, len(sent), refused)

    def test_a_refused_create_records_nothing(self, nodes: list[PostgresJournal]) -> None:
        """A create that every node's spending does not allow leaves no intent and counts no attempt; the reason
        is the one the node's own guard gives for the same figures."""
        a, b = nodes[0], nodes[1]
        a.add(_job("spent", estimate=80.0, state=State.SUCCEEDED, credits=80.0, create_started_at=now_iso()))
        job = b.add(_job("next", estimate=30.0))
        limits = Limits(daily=100.0)
        with pytest.raises(MoneyHeld) as caught:
            b.record_intent(job.id, first=True, check=_check(job, limits))
        stored = a.get(job.id)
        assert stored is not None and stored.create_started_at is None and stored.attempts == 0
        local = user_hold(job.name, MODEL, 30.0, "5 s", limits, Spent(80.0, 80.0, 80.0), approved=False)
        assert caught.value.code == "held" and caught.value.reason == local

    def test_spending_is_what_charge_of_says_of_every_job(self, nodes: list[PostgresJournal]) -> None:
        """Every node's jobs count as the one node's guard counts them (charge_of): final costs, estimates of
        jobs that may be charged (in flight, or a create whose answer was lost), nothing for a request not yet
        sent or a create that surely failed; a create fits exactly up to the budget and not half a credit beyond."""
        a, b = nodes[0], nodes[1]
        stamp = now_iso()
        jobs = [
            _job("done", estimate=9.0, state=State.SUCCEEDED, credits=7.5, create_started_at=stamp, task_id="t1"),
            _job("running", estimate=12.0, state=State.RUNNING, create_started_at=stamp, task_id="t2"),
            _job("uploading", estimate=4.0, state=State.UPLOADING),
            _job("lost", estimate=20.0, state=State.NEEDS_ATTENTION, create_started_at=stamp),
            _job("waiting", estimate=50.0, state=State.ACCEPTED),
            _job("refused", estimate=30.0, state=State.FAILED),
            _job("other", inbox="elsewhere", estimate=5.0, state=State.PENDING, create_started_at=stamp, task_id="t3"),
        ]
        a.add_many(jobs)
        now = datetime.now(UTC)
        expected = spent([c for j in jobs if (c := charge_of(j, now)) is not None], "in", now)
        assert (expected.today, expected.inbox_today) == (48.5, 43.5)
        fits, over = b.add(_job("fits", estimate=100 - 48.5)), b.add(_job("over", estimate=100 - 48.5 + 0.5))
        limits = Limits(daily=100.0, inbox_daily=100.0)
        assert b.money_hold(_check(over, limits)) is not None
        b.record_intent(fits.id, first=True, check=_check(fits, limits))

    def test_jobs_of_another_day_or_month_do_not_count(self, nodes: list[PostgresJournal]) -> None:
        """Spending is counted by UTC day and month as at one node: yesterday's creates leave today's budget
        free, last month's leave the monthly one free."""
        a, b = nodes[0], nodes[1]
        a.add(
            _job("old", estimate=500.0, state=State.SUCCEEDED, credits=500.0, create_started_at="2000-01-31T23:00:00Z")
        )
        job = b.add(_job("now", estimate=30.0))
        b.record_intent(job.id, first=True, check=_check(job, Limits(daily=100.0, monthly=100.0)))
        assert (b.get(job.id) or job).create_started_at is not None


class TestOrganizationAcrossNodes:
    def test_balance_counts_creates_of_other_nodes_since_the_last_read(self, nodes: list[PostgresJournal]) -> None:
        """The balance one node read is the balance of every node, less the creates any node let through since;
        a create larger than what remains is held for the balance (approval does not pass it)."""
        a, b = nodes[0], nodes[1]
        first, second = a.add(_job("first", estimate=60.0)), b.add(_job("second", estimate=50.0))
        org = OrgFigures(balance=100.0, daily_used={}, age=0.0)
        a.record_intent(first.id, first=True, check=_check(first, Limits(), org=org))
        with pytest.raises(MoneyHeld) as caught:
            b.record_intent(second.id, first=True, check=_check(second, Limits(), approved=True))
        assert caught.value.code == "balance" and "balance of 40" in caught.value.reason

    def test_a_newer_read_seen_before_uploading_releases_a_balance_hold(self, nodes: list[PostgresJournal]) -> None:
        """A node that reads a higher balance (a top-up) passes it on at its look before uploading, even while
        every create is held for the balance and none is recorded."""
        a, b = nodes[0], nodes[1]
        one, two = a.add(_job("one", estimate=10.0)), b.add(_job("two", estimate=50.0))
        a.record_intent(one.id, first=True, check=_check(one, Limits(), org=OrgFigures(40.0, {}, age=0.0)))
        assert b.money_hold(_check(two, Limits())) is not None
        assert b.money_hold(_check(two, Limits(), org=OrgFigures(500.0, {}, age=0.0))) is None
        b.record_intent(two.id, first=True, check=_check(two, Limits()))

    def test_an_older_read_does_not_replace_a_newer_one(self, nodes: list[PostgresJournal]) -> None:
        """A node whose organization read is older than the one kept does not put its balance back."""
        a, b = nodes[0], nodes[1]
        one, two = a.add(_job("one", estimate=10.0)), b.add(_job("two", estimate=50.0))
        a.record_intent(one.id, first=True, check=_check(one, Limits(), org=OrgFigures(40.0, {}, age=0.0)))
        with pytest.raises(MoneyHeld) as caught:  # a read of 1000 credits from an hour ago changes nothing
            b.record_intent(two.id, first=True, check=_check(two, Limits(), org=OrgFigures(1000.0, {}, age=3600.0)))
        assert caught.value.code == "balance"

    def test_daily_task_limit_counts_every_node(self, nodes: list[PostgresJournal]) -> None:
        """Runway's daily task limit for a model counts the creates every node sent since the read."""
        a, b = nodes[0], nodes[1]
        one, two = a.add(_job("one")), b.add(_job("two"))
        org = OrgFigures(balance=None, daily_used={MODEL: 4}, age=0.0)
        a.record_intent(one.id, first=True, check=_check(one, Limits(), org=org, daily_cap=5))
        with pytest.raises(MoneyHeld) as caught:
            b.record_intent(two.id, first=True, check=_check(two, Limits(), daily_cap=5))
        assert caught.value.code == "daily_limit" and "5 of 5" in caught.value.reason

    def test_concurrency_counts_tasks_at_runway_on_every_node(self, nodes: list[PostgresJournal]) -> None:
        """Runway's per-model concurrency counts every node's tasks at Runway; a surely failed create frees it."""
        a, b = nodes[0], nodes[1]
        a.add(_job("running", state=State.RUNNING, task_id="t-1", create_started_at=now_iso()))
        job = b.add(_job("next"))
        with pytest.raises(MoneyHeld) as caught:
            b.record_intent(job.id, first=True, check=_check(job, Limits(), model_cap=1))
        assert caught.value.code == "concurrency"
        b.record_intent(job.id, first=True, check=_check(job, Limits(), model_cap=2))


class TestApprovalAcrossNodes:
    def test_an_approval_recorded_by_one_node_is_honoured_by_another(self, nodes: list[PostgresJournal]) -> None:
        """The approved flag lives in the job's row: a node that takes a job over with an approval another
        node recorded lets it through the budgets (without the flag, it is held)."""
        a, b = nodes[0], nodes[1]
        a.add(_job("spent", estimate=90.0, state=State.SUCCEEDED, credits=90.0, create_started_at=now_iso()))
        job = a.add(_job("big", estimate=50.0, state=State.HELD))
        limits = Limits(daily=100.0, approve_above=20.0)
        assert b.money_hold(_check(job, limits)) is not None
        with pytest.raises(MoneyHeld):
            b.record_intent(job.id, first=True, check=_check(job, limits))
        a.update(job, approved=True, state=State.ACCEPTED)  # `runwatch approve big`, answered by node a
        taken = b.get(job.id)
        assert taken is not None and taken.approved
        assert b.money_hold(_check(job, limits)) is None  # node b's own copy still says not approved
        b.record_intent(job.id, first=True, check=_check(job, limits))


def _node(url: str, name: str, lease: float) -> PostgresJournal:
    """A journal joined as node ``name`` (no heartbeat of its own: its leases run out after ``lease``)."""
    journal = PostgresJournal(url, pool_size=2)
    journal.join(name, lease, host=f"host-{name}", pid=os.getpid(), version="test", node_time=time.time())
    return journal


def _counted(journal: PostgresJournal) -> list[str]:
    """The creates the organization's figures are short of (money_creates), by job id."""
    with journal._cursor() as cur:
        cur.execute("SELECT job_id FROM money_creates ORDER BY job_id")
        return [str(row["job_id"]) for row in cur.fetchall()]


class TestLeaseAndMoney:
    def test_an_intent_that_waited_for_the_money_lock_past_its_lease_is_refused(self, pg_url: str) -> None:
        """A node's intent waits for the money lock (another create holds it) while the job's lease runs out:
        when the lock comes, the intent is refused (LeaseLost) and nothing is recorded or counted, however early
        its transaction began."""
        node = _node(pg_url, "n1", lease=1.0)
        job = node.add(_job("late"))
        holder = psycopg.connect(pg_url, autocommit=True)
        results: list[BaseException | str] = []

        def intent() -> None:
            try:
                results.append(node.record_intent(job.id, first=True, check=_check(job, Limits())))
            except Exception as exc:  # noqa: BLE001 - what the test looks at
                results.append(exc)

        try:
            holder.execute("BEGIN")
            holder.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, MONEY_LOCK))
            thread = threading.Thread(target=intent)
            thread.start()
            deadline = time.monotonic() + WAIT
            while not holder.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchall():
                assert time.monotonic() < deadline, "the intent never waited for the money lock"
                time.sleep(0.01)
            time.sleep(1.5)  # the lease runs out while the intent waits
            holder.execute("COMMIT")
            thread.join(WAIT)
            row = node.get(job.id)
            assert len(results) == 1 and isinstance(results[0], LeaseLost), results
            assert row is not None and row.create_started_at is None and _counted(node) == []
        finally:
            holder.close()
            node.close()

    def test_a_late_clear_from_a_node_that_lost_the_job_leaves_the_intent_counted(self, pg_url: str) -> None:
        """Node n1 recorded an intent and fell silent; n2 took the job over (its intent stands: never sent
        again). n1's late word that its create made nothing changes nothing now: the job keeps its intent for
        n2, and every node keeps counting it."""
        first, second = _node(pg_url, "n1", lease=1.0), _node(pg_url, "n2", lease=1.0)
        try:
            job = first.add(_job("late"))
            first.record_intent(job.id, first=True, check=_check(job, Limits()))
            time.sleep(1.2)  # n1's lease runs out (it never beats here)
            assert [t.job.id for t in second.take_over(["in"], 10)] == [job.id]
            first.clear_intent(job.id)
            row = second.get(job.id)
            assert row is not None and row.create_started_at is not None
            assert _counted(second) == [job.id]
        finally:
            first.close()
            second.close()


class TestOneNode:
    def test_sqlite_records_the_intent_its_guard_let_through(self, tmp_path: Path) -> None:
        """A SQLite journal has one node, whose guard decided already: the check adds nothing and the intent
        is recorded."""
        journal = Journal(tmp_path / "journal.sqlite3")
        job = journal.add(_job("one", estimate=500.0))
        journal.record_intent(job.id, first=True, check=_check(job, Limits(daily=1.0)))
        assert journal.money_hold(_check(job, Limits(daily=1.0))) is None
        assert (journal.get(job.id) or job).create_started_at is not None
        journal.close()


class TestDaemonWithOtherNodes:
    def test_a_request_is_held_for_spending_of_another_node(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator
    ) -> None:
        """A daemon on a shared database holds a request for the daily budget when another node spent it after
        the daemon started (its own guard never saw that job): no create is sent, and the status file gives
        the budget's reason."""
        rig = rig_factory(sim, state={"database": pg_url}, budget={"daily": 100}).start()
        other = PostgresJournal(pg_url)
        try:
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            other.add(_job("elsewhere", estimate=99.5, state=State.SUCCEEDED, credits=99.5, create_started_at=stamp))
            rig.drop("line0", SEED_REQUESTS["text_to_speech"][0])
            status = rig.wait("line0", {"held"})
        finally:
            other.close()
            rig.stop()
        assert status["error"]["code"] == "held" and "daily budget of 100" in status["error"]["message"]
        assert sim.create_count() == 0

    def test_an_approval_added_on_another_node_releases_a_held_request(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator
    ) -> None:
        """A request held for every node's spending is approved from elsewhere (a command added to the shared
        journal): the node holding it sends it, once, and the approval is in the job's row for any node."""
        rig = rig_factory(sim, state={"database": pg_url}, budget={"daily": 100}).start()
        assert rig.daemon is not None
        rig.daemon.engine.command_every = 3600.0  # only the notification brings the approval in
        other = PostgresJournal(pg_url)
        try:
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            other.add(_job("elsewhere", estimate=99.5, state=State.SUCCEEDED, credits=99.5, create_started_at=stamp))
            rig.drop("line0", SEED_REQUESTS["text_to_speech"][0])
            rig.wait("line0", {"held"})
            command = other.add_command("approve", "line0")
            assert rig.wait("line0")["state"] == "succeeded"
            job = other.find("line0")
            assert other.command_result(command) == "approved" and job is not None and job.approved
        finally:
            other.close()
            rig.stop()
        assert sim.create_count() == 1 and sim.duplicate_creates() == []

    def test_a_request_held_by_other_nodes_spending_stays_held_quietly_until_it_fits(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A request held for another node's spending is looked at again and again (every 0.2 s here) while it
        still does not fit: it stays held, with no move through accepted and no log line each time; once the
        other node's spending is gone it is released with one line, and sent once."""
        from runwatch.jobs import sending

        monkeypatch.setattr(sending, "SHARED_HOLD_WAIT", 0.2)
        with capture_logs() as logs:
            rig = rig_factory(sim, state={"database": pg_url}, budget={"daily": 100}).start()
            assert rig.daemon is not None
            rig.daemon.engine.money.recheck_every = 0.05
            other = PostgresJournal(pg_url)
            try:
                # This node's guard reads the journal's spending once, here.
                rig.drop("first", dict(SPEECH, promptText="First."))
                assert rig.wait("first")["state"] == "succeeded"
                stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                spent = _job("elsewhere", estimate=98.5, state=State.SUCCEEDED, credits=98.5, create_started_at=stamp)
                other.add(spent)  # unseen by this node's guard: only the journal's check holds line0
                rig.drop("line0", SPEECH)
                rig.wait("line0", {"held"})
                seen: set[float] = set()
                deadline = time.monotonic() + WAIT
                while len(seen) < 5:  # looked at again four times since it was held
                    job = other.find("line0")
                    assert job is not None and job.state == "held" and time.monotonic() < deadline
                    seen.add(job.not_before or 0.0)
                    time.sleep(0.02)
                other.update(spent, credits=0.0, estimated_credits=0.0)
                assert rig.wait("line0")["state"] == "succeeded"
            finally:
                other.close()
                rig.stop()
        moves = [e["event"] for e in logs if e.get("request") == "line0" and e["event"] in ("job.accepted", "job.held")]
        assert moves == ["job.accepted", "job.held", "job.accepted"]
        assert sim.create_count() == 2 and sim.duplicate_creates() == []


class TestSubmitAcrossNodes:
    def test_submit_is_checked_against_every_nodes_spending(
        self, pg_url: str, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """`runwatch submit` on a journal nodes share goes through the same check as a daemon's create: with
        99.5 of a daily budget of 100 spent by a node, a request of 1 credit is not sent (exit 1, the budget's
        reason, the job failed with code held); once that spending is gone the same request is sent, its intent
        recorded where every node counts it."""
        rig = rig_factory(sim, state={"database": pg_url}, budget={"daily": 100})
        config = str(rig.config_file())
        request = tmp_path / "elsewhere" / "line.json"
        request.parent.mkdir()
        request.write_text(json.dumps(SPEECH))
        env = {"RUNWAYML_API_SECRET": sim.key, "RUNWATCH_ALLOW_ROOT": "1"}
        other = PostgresJournal(pg_url)
        try:
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            spent = other.add(
                _job("elsewhere", estimate=99.5, state=State.SUCCEEDED, credits=99.5, create_started_at=stamp)
            )
            err = io.StringIO()
            assert submit_command(str(request), config_file=config, out=io.StringIO(), err=err, env=env) == 1
            assert "would exceed the daily budget of 100" in err.getvalue()
            refused = other.find("line")
            assert refused is not None and refused.state == "failed" and refused.error is not None
            assert refused.error["code"] == "held" and refused.create_started_at is None
            assert sim.create_count() == 0
            other.update(spent, credits=90.0)
            out = io.StringIO()
            assert submit_command(str(request), config_file=config, out=out, err=io.StringIO(), env=env) == 0
            assert "submitted as task" in out.getvalue()
            with other._cursor() as cur:
                cur.execute("SELECT job_id FROM money_creates")
                counted = [row["job_id"] for row in cur.fetchall()]
            sent = other.find("line")
            assert sent is not None and counted == [sent.id]
        finally:
            other.close()
        assert sim.create_count() == 1


class TestTwoDaemons:
    def test_two_nodes_never_spend_more_than_a_tight_daily_budget(
        self, pg_url: str, tmp_path: Path, sim: Simulator
    ) -> None:
        """Two daemons on one database and one inbox tree, a daily budget of 5.5 and twelve requests of 1
        credit each dropped at once: five are created, the other seven are held for the daily budget, and the
        journal's spending stays within it."""
        pytest.importorskip("runwatch.store.pgnodes", reason="several daemons on one database come with the nodes")
        inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
        inbox.mkdir()
        daemons: list[tuple[Daemon, threading.Thread]] = []
        stop = threading.Event()
        try:
            for name in ("n1", "n2"):
                data = {
                    "runway": {"base_url": sim.url, "poll_interval": 0.05},
                    "state": {"dir": str(tmp_path / name), "database": pg_url},
                    "node": {"name": name},
                    "http": {"listen": ""},
                    "budget": {"daily": 5.5},
                    "inbox": [{"path": str(inbox), "outbox": str(outbox), "settle": 0.3}],
                }
                daemon = Daemon(parse_config(data, str(tmp_path / f"{name}.toml")), api_key=sim.key)
                daemon.start()
                thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
                thread.start()
                daemons.append((daemon, thread))
            names = [f"line{i:02d}" for i in range(12)]
            for name in names:
                (inbox / f"{name}.json.tmp").write_text(json.dumps(dict(SPEECH, promptText=f"Hello {name}.")))
            for name in names:
                os.rename(inbox / f"{name}.json.tmp", inbox / f"{name}.json")
            journal = PostgresJournal(pg_url)
            try:
                deadline = time.monotonic() + 60
                while Counter(j.state for j in journal.jobs()) != {"succeeded": 5, "held": 7}:
                    assert time.monotonic() < deadline, Counter(j.state for j in journal.jobs())
                    time.sleep(0.05)
                spent = sum(j.credits or 0 for j in journal.jobs())
                reasons = {str(j.error["message"]).split(" (")[0] for j in journal.jobs() if j.state == "held"}
            finally:
                journal.close()
        finally:
            stop.set()
            for _, thread in daemons:
                thread.join(30)
        assert spent <= 5.5 and sim.create_count() == 5 and sim.duplicate_creates() == []
        assert reasons == {"estimated 1 credits would exceed the daily budget of 5.5"}


class TestCommandsFromAnywhere:
    def test_cancel_is_answered_through_the_notification(
        self, pg_url: str, rig_factory: Callable[..., Rig], slow_sim: Simulator
    ) -> None:
        """`runwatch cancel` of a task running at Runway is answered while the daemon reads the commands table
        only once an hour: the notification sent with the command woke it."""
        rig = rig_factory(slow_sim, state={"database": pg_url}).start()
        assert rig.daemon is not None and rig.daemon.listener is not None
        rig.daemon.engine.command_every = 3600.0  # read once at the start; never again by the poll in this test
        assert isinstance(rig.daemon.listener, CommandListener) and rig.daemon.listener.connected.wait(WAIT)
        rig.drop("film", SEED_REQUESTS["text_to_video"][0])
        rig.wait("film", {"pending", "running"})
        env = {"RUNWATCH_ALLOW_ROOT": "1"}
        code = control_command("cancel", "film", config_file=str(rig.config_file()), env=env, answer_timeout=WAIT)
        assert code == 0
        assert rig.daemon.listener.heard >= 1
        assert rig.wait("film")["state"] == "cancelled"

    def test_listener_hears_again_after_its_connection_is_cut(self, pg_url: str) -> None:
        """The listener's own connection ended by the server (as in a database restart): it connects again,
        wakes once for what was added meanwhile, and hears the next command."""
        journal = PostgresJournal(pg_url)
        woken = threading.Semaphore(0)
        log = _Log()
        listener = journal.listen_commands(woken.release, log)
        try:
            assert listener.connected.wait(WAIT) and woken.acquire(timeout=WAIT)  # the wake at connecting
            journal.add_command("cancel", "one")
            assert woken.acquire(timeout=WAIT) and listener.heard == 1
            with journal._cursor() as cur:  # the server ends the listening session
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                    ("runwatch listen",),
                )
            assert woken.acquire(timeout=WAIT)  # connected again: one wake for what may have been missed
            journal.add_command("cancel", "two")
            assert woken.acquire(timeout=WAIT) and listener.heard == 2
        finally:
            listener.close()
            journal.close()
        assert log.events == ["journal.listen_lost", "journal.listening_again"]
