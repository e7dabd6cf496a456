"""Several nodes on one PostgreSQL journal: requests through N `runwatch run` processes sharing one inbox tree,
one simulator and one database, while nodes are killed with SIGKILL at random moments and restarted.

    python bench/nodes.py [--requests 300] [--nodes 3] [--kills 6] [--seed N] [--budget CREDITS]
                          [--database URL] [--time-scale F] [--dir DIR] [--json]

Starts a PostgreSQL server as tests/pgserver.py does (Debian's server, ``initdb`` and ``pg_ctl`` on a Unix
socket in a temporary folder, as the postgres user) unless ``--database`` names an empty database, one
``runwatch simulate`` (fast time, some 503s, 429s and task failures, as bench/crash_harness.py), and N nodes:
each its own ``[state] dir`` and ``[node] name``, all the same ``[state] database``, inbox and outbox. A
tight ``[budget] daily`` (default: 40 % of what every request would cost) is shared by the nodes. Requests are
dropped in waves; after each wave one node, picked at random among those that own active jobs, is killed with
SIGKILL (``--kills`` times) or, once, stopped with SIGTERM, and restarted. Then the last requests go in and the
harness waits until every request is final or held by the budget. The simulator's time runs 20 times faster
(``--time-scale 0.05``): tasks last seconds, so a kill finds jobs in flight. It checks what §6 and §13 promise:

- every request has a status file, final or ``held`` by the daily budget;
- no create was sent twice (the simulator's log of create bodies, and per request by its ``[rq-NNNN]`` marker);
- no paid output lost: every succeeded request's outputs are byte-identical to what the simulator serves, and
  no output file is left that no status file records;
- each request claimed once: one journal row per request name, and one row per request in the ``claims`` table
  (when the schema has it);
- the budget never exceeded: the credits the journal counts (final cost, or the estimate of a create that may
  have been charged) and the costs of the tasks at the simulator are each at most the budget;
- the journal is consistent: no task id in two jobs, every task at the simulator owned by a job.

Takeover: after each SIGKILL, the time from the kill to the moment no active job in the journal has the killed
node as ``owner`` (``jobs.owner``, polled every 0.1 s); the killed node is restarted only after that, so its
own restart cannot be what clears it. Reported as median and max (goal ≤ 30 s); the clean stop's hand-over is
reported beside it. With one node, or a schema without ``jobs.owner``, takeover is not measured (the node's
jobs wait for its restart) and the report says so.

Exit status 0 when every check holds. ``--json`` prints rows of what / figure / target / met (bench/report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crash_harness import (
    FAULTS,
    KEY,
    check_creates,
    check_outputs,
    check_task_owners,
    conclude,
    drop_request,
    request_body,
    sim_client,
)
from noderig import Journal, Node, database, node_config
from report import emit
from scale import simulator

from runwatch.budget import charge_of
from runwatch.jobs.states import FINAL
from runwatch.pricing import estimate

TAKEOVER_TARGET_S = 30.0
TAKEOVER_GIVE_UP_S = 90.0
FINAL_STATES = frozenset(str(s) for s in FINAL)


def auto_budget(requests: int) -> int:
    """40 % of what every request would cost: tight enough that requests end held."""
    total = 0.0
    for index in range(requests):
        body, _ = request_body(index)
        total += estimate(body["endpoint"], body["model"], body).credits or 0.0
    return int(total * 0.4)


# -- the report -------------------------------------------------------------------------------------------


@dataclass
class Takeover:
    node: str
    how: str  # "SIGKILL" or "SIGTERM"
    owned: int | None  # active jobs it owned at that moment (None: the schema has no owners)
    seconds: float | None  # None: not measured, or not seen within TAKEOVER_GIVE_UP_S


@dataclass
class Report:
    nodes: int = 0
    requests: int = 0
    kills: int = 0  # SIGKILLs asked for
    budget: float = 0.0
    seconds: float = 0.0
    states: Counter[str] = field(default_factory=Counter)
    creates: int = 0
    outputs_checked: int = 0
    spent_journal: float = 0.0
    spent_simulator: float = 0.0
    held_by_budget: int = 0
    claims: Counter[str] = field(default_factory=Counter)
    takeovers: list[Takeover] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def measured(self, how: str) -> list[float]:
        return [t.seconds for t in self.takeovers if t.how == how and t.owned and t.seconds is not None]

    def lines(self) -> list[str]:
        kills = [t for t in self.takeovers if t.how == "SIGKILL"]
        taken = self.measured("SIGKILL")
        out = [
            f"nodes: {self.nodes}, requests: {self.requests}, SIGKILLs: {len(kills)}, clean stops: "
            f"{len(self.takeovers) - len(kills)}, wall time: {self.seconds:.1f} s",
            "final states: " + ", ".join(f"{k}={v}" for k, v in sorted(self.states.items())),
            f"creates at the simulator: {self.creates}; outputs checked byte for byte: {self.outputs_checked}",
            f"daily budget {self.budget:g}: the journal counts {self.spent_journal:g}, the simulator charged "
            f"{self.spent_simulator:g}; held by the budget: {self.held_by_budget}",
            "claims per node: " + (", ".join(f"{k}={v}" for k, v in sorted(self.claims.items())) or "—"),
        ]
        if taken:
            out.append(
                f"takeover after SIGKILL: median {statistics.median(taken):.1f} s, max {max(taken):.1f} s "
                f"over {len(taken)} kills of a node that owned jobs (goal ≤ {TAKEOVER_TARGET_S:.0f} s)"
            )
        for t in self.takeovers:
            took = "not measured" if t.seconds is None else f"{t.seconds:.1f} s"
            owning = "" if t.owned is None else f" owning {t.owned} active jobs"
            out.append(f"  {t.how} {t.node}{owning}: {took}")
        out.extend(f"note: {n}" for n in self.notes)
        out.append("problems: none" if not self.problems else f"problems ({len(self.problems)}):")
        out.extend(f"  - {p}" for p in self.problems[:50])
        return out

    def rows(self) -> list[dict[str, Any]]:
        taken, handed = self.measured("SIGKILL"), self.measured("SIGTERM")
        what = f"{_n(self.nodes, 'node')}, {self.requests} requests, {_n(self.kills, 'SIGKILL')} and a clean stop"
        rows: list[dict[str, Any]] = [
            {
                "what": f"{what}: problems (all final or held, no duplicate create, no lost output, claimed once)",
                "figure": f"{len(self.problems)}" + (f" (first: {self.problems[0]})" if self.problems else ""),
                "baseline": "—",
                "target": "0",
                "met": not self.problems,
            },
            {
                "what": f"{what}: daily budget shared by the nodes",
                "figure": f"{self.spent_journal:g} of {self.budget:g} credits counted, {self.held_by_budget} held",
                "baseline": f"the simulator charged {self.spent_simulator:g}",
                "target": "≤ budget",
                "met": self.spent_journal <= self.budget and self.spent_simulator <= self.budget,
            },
        ]
        if taken:
            rows.append(
                {
                    "what": f"{what}: takeover, SIGKILL → no active job owned by the dead node",
                    "figure": f"median {statistics.median(taken):.1f} s, max {max(taken):.1f} s",
                    "baseline": f"clean stop: {handed[0]:.1f} s" if handed else "—",
                    "target": f"≤ {TAKEOVER_TARGET_S:.0f} s",
                    "met": max(taken) <= TAKEOVER_TARGET_S,
                }
            )
        return rows


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


class Aborted(Exception):
    """The run cannot go on (a node exited by itself); the reason is already among the report's problems."""


# -- the harness ------------------------------------------------------------------------------------------


class Harness:
    def __init__(
        self,
        root: Path,
        url: str,
        *,
        nodes: int = 3,
        requests: int = 300,
        kills: int = 6,
        seed: int = 1,
        budget: float | None = None,
        time_scale: float = 0.05,
        faults: tuple[str, ...] = FAULTS,
        log: Callable[[str], None] = print,
    ) -> None:
        self.root, self.url, self.count, self.requests, self.kills = root, url, nodes, requests, kills
        self.rng = random.Random(seed)  # seeded: a run can be replayed
        self.seed, self.time_scale, self.faults, self.log = seed, time_scale, faults, log
        self.budget = float(budget if budget is not None else auto_budget(requests))
        self.inbox, self.outbox = root / "inbox", root / "outbox"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWAY", "AWS_", "PG"))}
        self.env["RUNWAYML_API_SECRET"] = KEY
        self.env["RUNWATCH_ALLOW_ROOT"] = "1"  # a rehearsal on a throwaway tree; harmless as root
        self.nodes: list[Node] = []
        self.sim_url = ""

    # -- set-up -------------------------------------------------------------------------------------

    def write_configs(self) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.outbox.mkdir(parents=True, exist_ok=True)
        for index in range(1, self.count + 1):
            name = f"node-{index}"
            text = node_config(
                self.sim_url,
                self.root / name,
                self.url,
                name,
                poll=0.2,
                inbox={"settle": 0.3},
                extra=f"[budget]\ndaily = {self.budget:g}\n",
            )
            config = self.root / f"{name}.toml"
            config.write_text(text)
            self.nodes.append(Node(self.root, name, config, self.env))

    def drop(self, index: int) -> None:
        drop_request(self.inbox, index)

    def statuses(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for index in range(self.requests):
            name = f"r{index:04d}"
            try:
                out[name] = json.loads((self.outbox / f"{name}.status.json").read_text())
            except (FileNotFoundError, ValueError):
                continue
        return out

    def watch(self, report: Report) -> None:
        """A node that ended by itself stops the run: nothing after it would mean what it says."""
        for node in self.nodes:
            status = node.exited()
            if status is not None:
                report.problems.append(f"{node.name} exited by itself (status {status}): {node.last_line()}")
                raise Aborted

    # -- the run --------------------------------------------------------------------------------------

    def run(self, final_timeout: float = 600.0) -> Report:
        report = Report(nodes=self.count, requests=self.requests, kills=self.kills, budget=self.budget)
        started = time.monotonic()
        sim_args = ["--seed", str(self.seed), "--time-scale", str(self.time_scale), "--concurrency", "0"]
        sim_args += ["--balance", "1000000000", "--daily-limit", "0"]
        for spec in self.faults:
            sim_args += ["--fault", spec]
        with ExitStack() as stack:
            self.sim_url = stack.enter_context(simulator(*sim_args))
            journal = Journal(self.url)
            stack.callback(journal.close)
            if not journal.empty():
                raise SystemExit(f"the database {self.url} already holds jobs: give an empty one")
            self.write_configs()
            try:
                self._storm(journal, report, final_timeout)
            except Aborted:
                pass
            finally:
                for node in self.nodes:
                    if not node.stop():
                        report.problems.append(f"{node.name} did not stop within 60 s of SIGTERM")
            if not report.problems:
                self.check(journal, report)
        report.seconds = time.monotonic() - started
        return report

    def _storm(self, journal: Journal, report: Report, final_timeout: float) -> None:
        for node in self.nodes:
            node.start()
        deadline = time.monotonic() + 60.0
        while not all(node.started() for node in self.nodes):  # the schema is up once the first has started
            if time.monotonic() > deadline:
                report.problems.append("the nodes did not all log daemon.started within 60 s")
                raise Aborted
            self._sleep(report, 0.1)
        events = ["SIGKILL"] * self.kills
        events.insert(self.rng.randrange(len(events) + 1), "SIGTERM")
        per_wave = -(-self.requests // (len(events) + 1))
        dropped = 0
        owners = journal.has_column("jobs", "owner")
        if not owners:
            report.notes.append("takeover not measured: the jobs table has no owner column (node support adds it)")
        elif self.count == 1:
            report.notes.append("takeover not measured: one node (its jobs wait for its restart)")
        for number, how in enumerate(events, 1):
            for _ in range(min(per_wave, self.requests - dropped)):
                self.drop(dropped)
                dropped += 1
            self._sleep(report, self.rng.uniform(0.5, 2.5))
            owned = self._owners(journal, report) if owners else None
            busy = [n for n in self.nodes if owned and owned[n.name]] or self.nodes
            victim = self.rng.choice(busy)
            moment = time.monotonic()
            if how == "SIGKILL":
                victim.kill()
            elif not victim.stop():
                report.problems.append(f"{victim.name} did not stop within 60 s of SIGTERM")
            seconds = None
            if owners and self.count > 1:
                seconds = self._taken_over(journal, report, victim.name, moment)
            held = owned[victim.name] if owned is not None else None
            report.takeovers.append(Takeover(victim.name, how, held, seconds))
            victim.start()
            took = "" if seconds is None else f", taken over in {seconds:.1f} s"
            self.log(
                f"{how} {number}/{len(events)} {victim.name} (owned {'?' if held is None else held}){took}: "
                f"{dropped} dropped, "
                f"{sum(1 for s in self.statuses().values() if s['state'] in FINAL_STATES)} final"
            )
        while dropped < self.requests:
            self.drop(dropped)
            dropped += 1
        deadline = time.monotonic() + final_timeout
        while not self._settled(journal):
            if time.monotonic() > deadline:
                report.problems.append(f"not settled within {final_timeout:.0f} s: {dict(journal.states())}")
                return
            self._sleep(report, 0.5)

    def _owners(self, journal: Journal, report: Report) -> Counter[str]:
        """Active jobs per node, waiting up to 5 s for some node to own one: a kill of a node that follows
        nothing shows no takeover."""
        end = time.monotonic() + 5.0
        owned = journal.owned()
        while not owned and time.monotonic() < end:
            self._sleep(report, 0.1)
            owned = journal.owned()
        return owned

    def _sleep(self, report: Report, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.watch(report)
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))

    def _taken_over(self, journal: Journal, report: Report, name: str, moment: float) -> float | None:
        while time.monotonic() - moment < TAKEOVER_GIVE_UP_S:
            if not journal.owned()[name]:
                return time.monotonic() - moment
            self.watch(report)
            time.sleep(0.1)
        report.problems.append(f"{name}'s active jobs still had it as owner {TAKEOVER_GIVE_UP_S:.0f} s after it died")
        return None

    def _settled(self, journal: Journal) -> bool:
        """Every request has a final or held status file, and no job is on its way anywhere."""
        statuses = self.statuses()
        if len(statuses) < self.requests:
            return False
        # Held for anything but the budget (a create being proven, say) is still on its way.
        if any(s["state"] not in FINAL_STATES and not _held_by_budget(s) for s in statuses.values()):
            return False
        return set(journal.states()) <= FINAL_STATES | {"held"}

    # -- the checks -----------------------------------------------------------------------------------

    def check(self, journal: Journal, report: Report) -> None:
        problems = report.problems
        statuses = self.statuses()
        for index in range(self.requests):
            name = f"r{index:04d}"
            status = statuses.get(name)
            state = status["state"] if status else "missing"
            report.states[state] += 1
            if status is None:
                problems.append(f"{name}: no status file")
            elif _held_by_budget(status):
                report.held_by_budget += 1
            elif state not in FINAL_STATES:
                why = (status.get("error") or {}).get("code")
                problems.append(f"{name}: not final ({state}{f', {why}' if why else ''})")
        with sim_client(self.sim_url) as http:
            report.creates, tasks, by_request = check_creates(http, problems)
            for task in tasks:
                report.spent_simulator += float(task["cost"] if task["cost"] is not None else task["estimatedCost"])
            report.outputs_checked += check_outputs(http, self.outbox, statuses, problems)
        self._check_journal(journal, tasks, by_request, report)

    def _check_journal(
        self, journal: Journal, tasks: list[dict[str, Any]], by_request: dict[str, list[str]], report: Report
    ) -> None:
        from runwatch.store.postgres import PostgresJournal

        store = PostgresJournal(self.url)
        try:
            jobs = store.jobs(limit=1_000_000)
        finally:
            store.close()
        now = _utc_now()
        rows: Counter[str] = Counter(job.name for job in jobs)
        for job in jobs:
            if rows[job.name] > 1:
                report.problems.append(f"journal: {job.name} has {rows[job.name]} jobs (claimed more than once)")
                rows[job.name] = 1  # say it once
            charge = charge_of(job, now)
            report.spent_journal += charge.credits if charge else 0.0
        if report.spent_journal > self.budget:
            report.problems.append(f"the journal counts {report.spent_journal:g} credits, over the {self.budget:g}")
        if report.spent_simulator > self.budget:
            report.problems.append(f"the simulator charged {report.spent_simulator:g}, over the {self.budget:g}")
        missing = {f"r{i:04d}" for i in range(self.requests)} - set(rows)
        if missing:
            report.problems.append(f"journal: no job for {sorted(missing)[:10]}")
        check_task_owners(jobs, tasks, by_request, report.problems)
        if journal.has_table("claims"):
            claimed: Counter[str] = Counter()
            for path, node in journal.conn.execute("SELECT path, node FROM claims").fetchall():
                claimed[Path(str(path)).name.split(".")[0]] += 1
                report.claims[str(node)] += 1
            for name, count in claimed.items():
                if count > 1:
                    report.problems.append(f"claims: {name} claimed {count} times")
        else:
            report.notes.append("no claims table (node support adds it): claims counted by journal rows only")


def _held_by_budget(status: dict[str, Any]) -> bool:
    return status["state"] == "held" and "budget" in json.dumps(status.get("error"))


def _utc_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--kills", type=int, default=6, help="SIGKILLs (one clean stop comes on top)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--budget", type=float, help="[budget] daily, credits (default: 40 %% of all requests)")
    parser.add_argument("--database", help="an empty PostgreSQL database (default: a throwaway server)")
    parser.add_argument("--time-scale", type=float, default=0.05, help="simulator time scale (default 0.05)")
    parser.add_argument("--dir", help="work in DIR and keep it (default: a temporary folder, removed if all passed)")
    parser.add_argument("--json", action="store_true", help="print rows as JSON (bench/report.py)")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.requests < 1 or args.kills < 0:
        parser.error("--nodes and --requests must be at least 1, --kills at least 0")
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="runwatch-nodes-"))
    root.mkdir(parents=True, exist_ok=True)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    with database(args.database) as url:
        harness = Harness(
            root,
            url,
            nodes=args.nodes,
            requests=args.requests,
            kills=args.kills,
            seed=args.seed,
            budget=args.budget,
            time_scale=args.time_scale,
            log=log,
        )
        report = harness.run()
    if args.json:
        emit(report.rows(), True)
    out = sys.stderr if args.json else sys.stdout
    return conclude(report.lines(), report.problems, root, keep=bool(args.dir), out=out, err=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
