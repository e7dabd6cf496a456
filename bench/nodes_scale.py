"""Several nodes, measured: taking a burst, drop-to-create latency, database round trips per job, and CPU and
RSS per node with tasks in flight, for 1, 2 and 3 nodes on one PostgreSQL journal and one node on SQLite.

    python bench/nodes_scale.py [--nodes 1,2,3] [--no-sqlite] [--runs 3] [--take 10000] [--drops 300]
                                [--in-flight 1000] [--task-seconds 47] [--json] [--dir DIR]

Every node is ``runwatch run`` in its own process (bench/nodes.py's configs: its own state folder and
``[node] name``, one inbox and outbox for all), against one ``runwatch simulate``. The PostgreSQL server is
Debian's, started as tests/pgserver.py does, then restarted durable (``fsync`` on, unlike the test server)
with ``pg_stat_statements`` loaded; each run gets a fresh database. Each figure is the median of ``--runs``
runs; each run starts every process afresh.

- **take**: ``--take`` ready text_to_speech requests, renamed into the inbox at once once every node has logged
  ``daemon.started``, held for approval (``approve_above = 0``: every step of taking, money checks included,
  nothing created, as bench/scale.py part A); the time from the first rename to the last status file.
- **drop → create**: ``--drops`` requests one after another, as bench/drop_to_submit.py: from the rename into
  the inbox to the simulator's stamp of the create, the next drop once the status file left ``accepted``.
- **round trips per job**: PostgreSQL statements per job from ``pg_stat_statements`` (every statement a client
  sends, BEGIN and COMMIT included, is one round trip), reset before and read after each phase: the take phase
  (per request taken and held) and the drop → create phase followed until every job succeeded (per job, its
  whole life). Beside them, ``xact_commit`` of ``pg_stat_database`` (transactions) per job, and statements per
  second of the idle nodes (heartbeats, commands, held re-checks) measured for 5 s before the drops.
- **in flight**: ``--in-flight`` 4 s text_to_video tasks at Runway's pace (~47 s each), ``poll_interval = 5``;
  per node, its CPU from the moment every job has a task id to the first one done (as bench/scale.py part B),
  and its peak RSS (``VmHWM``); beside them the database's statements per second over the same span.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crash_harness import KEY
from drop_to_submit import P99_TARGET_MS, drop_in_turn, state_of
from drop_to_submit import pct as percentile
from noderig import Node, node_config, pg_server
from report import emit
from scale import AT_RUNWAY, FINAL, VIDEO_PHASES, cpu_seconds, memory_mb, simulator, stage, wait_for

TAKE_TARGET_S = 30.0


# -- the database server ----------------------------------------------------------------------------------


BENCH_ROLE, BENCH_PASSWORD = "runwatch_bench", "bench-only-4Kq"  # the bench's own statements are told apart by role


@contextmanager
def durable_server() -> Iterator[Any]:
    """tests/pgserver.py's server, restarted with fsync on (a real server's commits) and pg_stat_statements."""
    with pg_server() as server:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        options = (
            f"-c listen_addresses='' -c unix_socket_directories={server.root} -c max_connections=200 "
            "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
        )
        pg_ctl = [str(server.bindir / "pg_ctl"), "-D", str(server.data), "-l", str(server.root / "log")]
        subprocess.run([*as_postgres, *pg_ctl, "-o", options, "-w", "-s", "restart"], check=True, timeout=120)
        with server.admin() as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
            conn.execute(f"CREATE ROLE {BENCH_ROLE} LOGIN SUPERUSER PASSWORD '{BENCH_PASSWORD}'")
        yield server


class Stats:
    """One phase's database, and pg_stat_statements read by the bench's own role (left out of the counts)."""

    def __init__(self, server: Any) -> None:
        self.database = server.create_database()
        self.url = server.url(self.database)
        self.stats = psycopg.connect(server.url("postgres", BENCH_ROLE), password=BENCH_PASSWORD, autocommit=True)
        self.jobs = psycopg.connect(server.url(self.database, BENCH_ROLE), password=BENCH_PASSWORD, autocommit=True)

    def reset(self) -> None:
        self.stats.execute("SELECT pg_stat_statements_reset()")

    def read(self) -> Counter[str]:
        """Statements runwatch sent to this phase's database since reset(), by their first word."""
        rows = self.stats.execute(
            "SELECT split_part(ltrim(upper(s.query)), ' ', 1), SUM(s.calls) FROM pg_stat_statements s "
            "WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = %s) "
            "AND s.userid <> (SELECT oid FROM pg_roles WHERE rolname = %s) GROUP BY 1",
            (self.database, BENCH_ROLE),
        ).fetchall()
        return Counter({str(word): int(n) for word, n in rows})

    def states(self) -> Counter[str]:
        try:
            rows = self.jobs.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        except psycopg.errors.UndefinedTable:
            return Counter()
        return Counter({str(s): int(n) for s, n in rows})

    def close(self) -> None:
        self.stats.close()
        self.jobs.close()


def kinds(counts: Counter[str], per: float) -> str:
    """ "12.0 (SELECT 5.0, UPDATE 3.0, …)": statements per job, and the kinds that make them up."""
    total = sum(counts.values()) / per
    parts = ", ".join(f"{word} {n / per:.1f}" for word, n in counts.most_common(5))
    return f"{total:.1f} ({parts})"


# -- the nodes --------------------------------------------------------------------------------------------


class Cluster:
    """N nodes on one tree: inbox/, outbox/, staging/, node-I/ (state), node-I.toml, node-I.log."""

    def __init__(self, root: Path, url: str | None, count: int, sim_url: str) -> None:
        if root.exists():
            shutil.rmtree(root)
        self.root, self.url, self.count, self.sim_url = root, url, count, sim_url
        self.inbox, self.outbox, self.staging = root / "inbox", root / "outbox", root / "staging"
        for folder in (self.inbox, self.outbox, self.staging):
            folder.mkdir(parents=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWAY", "AWS_", "PG"))}
        self.env["RUNWAYML_API_SECRET"] = KEY
        self.env["RUNWATCH_ALLOW_ROOT"] = "1"  # a throwaway tree; harmless as root
        self.nodes: list[Node] = []

    def start(self, *, poll: float, inbox: dict[str, Any], scheduler: dict[str, Any] | None = None) -> None:
        for index in range(1, self.count + 1):
            name = f"node-{index}"
            config = self.root / f"{name}.toml"
            text = node_config(
                self.sim_url,
                self.root / name,
                self.url,
                name,
                poll=poll,
                inbox=inbox,
                scheduler=scheduler,
            )
            config.write_text(text)
            self.nodes.append(Node(self.root, name, config, self.env))
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            self._wait_started(node)

    def _wait_started(self, node: Node, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = node.exited()
            if status is not None:
                raise NodeFailed(f"{node.name} exited ({status}): {node.last_line()}")
            if node.log.exists() and b"daemon.started" in node.log.read_bytes():
                return
            time.sleep(0.05)
        raise NodeFailed(f"{node.name} did not start within {timeout:.0f} s")

    def pids(self) -> list[int]:
        return [node.proc.pid for node in self.nodes if node.proc is not None]

    def cpu(self) -> list[float]:
        return [cpu_seconds(pid) for pid in self.pids()]

    def peaks(self) -> list[float]:
        return [memory_mb(pid)[0] for pid in self.pids()]

    def stage(self, count: int, video: bool = False) -> list[str]:
        return stage(self.staging, count, video)

    def drop(self, names: list[str]) -> None:
        for name in names:
            os.rename(self.staging / name, self.inbox / name)

    def status_count(self) -> int:
        with os.scandir(self.outbox) as entries:
            return sum(1 for e in entries if e.name.endswith(".status.json") and not e.name.startswith("."))

    def sqlite_states(self) -> Counter[str]:
        path = self.root / "node-1" / "journal.sqlite3"
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return Counter(dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()))
        except sqlite3.OperationalError:
            return Counter()
        finally:
            db.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class NodeFailed(Exception):
    """A node exited or did not start: the configuration cannot be measured on this runwatch."""


# -- one run of one configuration -------------------------------------------------------------------------


@dataclass
class Run:
    take_s: float | None = None
    take_statements: Counter[str] = field(default_factory=Counter)  # over the take phase
    p50_ms: float | None = None
    p99_ms: float | None = None
    life_statements: Counter[str] = field(default_factory=Counter)  # drop → every job succeeded
    idle_statements_s: float | None = None  # per second, every node together, nothing to do
    flight_cpu_pct: list[float] = field(default_factory=list)  # per node
    flight_rss_mb: list[float] = field(default_factory=list)
    flight_statements_s: float | None = None
    flight_jobs: list[int] = field(default_factory=list)  # jobs each node claimed (its log)


class Measure:
    def __init__(self, args: argparse.Namespace, root: Path, log: Callable[[str], None]) -> None:
        self.args, self.root, self.log = args, root, log

    def run(self, server: Any, count: int, index: int) -> Run:
        """One run of every phase; ``server`` None: one node on SQLite. Each phase has a database of its own."""
        label = f"{'sqlite' if server is None else 'pg'}-{count}-{index}"
        out = Run()
        for phase, wanted in ((self._take, self.args.take), (self._latency, self.args.drops)):
            if wanted:
                with ExitStack() as stack:
                    stats = None if server is None else Stats(server)
                    if stats is not None:
                        stack.callback(stats.close)
                    phase(stack, out, label, stats, count)
        if self.args.in_flight:
            with ExitStack() as stack:
                stats = None if server is None else Stats(server)
                if stats is not None:
                    stack.callback(stats.close)
                self._flight(stack, out, label, stats, count)
        return out

    def _cluster(self, stack: ExitStack, name: str, stats: Stats | None, count: int, sim: tuple[str, ...]) -> Cluster:
        sim_url = stack.enter_context(simulator("--seed", "1", "--balance", "1000000000", *sim))
        cluster = Cluster(self.root / name, stats.url if stats else None, count, sim_url)
        stack.callback(cluster.stop)
        return cluster

    def _take(self, stack: ExitStack, out: Run, label: str, stats: Stats | None, count: int) -> None:
        n = self.args.take
        cluster = self._cluster(stack, f"{label}-take", stats, count, ("--concurrency", "0", "--daily-limit", "0"))
        names = cluster.stage(n)
        cluster.start(poll=5.0, inbox={"approve_above": 0})
        if stats:
            stats.reset()
        start = time.perf_counter()
        cluster.drop(names)
        done = wait_for(lambda: cluster.status_count() >= n, self.args.timeout)
        out.take_s = time.perf_counter() - start if done else None
        if stats:
            out.take_statements = stats.read()
        self.log(f"{label} take {n}: {out.take_s} s, statements {dict(out.take_statements)}")

    def _latency(self, stack: ExitStack, out: Run, label: str, stats: Stats | None, count: int) -> None:
        n = self.args.drops
        sim = ("--time-scale", "0.001", "--daily-limit", "0", "--concurrency", "0")
        cluster = self._cluster(stack, f"{label}-latency", stats, count, sim)
        cluster.start(poll=0.5, inbox={})
        if stats:
            time.sleep(2.0)  # past the start's own statements
            stats.reset()
            time.sleep(10.0)
            out.idle_statements_s = sum(stats.read().values()) / 10.0
            stats.reset()
        renamed, stuck = drop_in_turn(cluster.staging, cluster.inbox, cluster.outbox, n)
        if stuck is not None:
            raise NodeFailed(f"drop {stuck} was not submitted within 10 s")
        wait_for(lambda: _count_state(cluster.outbox, "succeeded") >= n, self.args.timeout, 0.2)
        if stats:
            out.life_statements = stats.read()
        rows = httpx.get(f"{cluster.sim_url}/_sim/requests", timeout=30).json()["requests"]
        creates = {r["body"]["promptText"]: float(r["at"]) for r in rows if r["method"] == "POST" and r["body"]}
        ms = [(creates[t] - at) * 1000 for t, at in renamed.items() if t in creates]
        out.p50_ms, out.p99_ms = percentile(ms, 0.5), percentile(ms, 0.99)
        self.log(f"{label} drop→create: p50 {out.p50_ms:.1f} ms p99 {out.p99_ms:.1f} ms; {dict(out.life_statements)}")

    def _flight(self, stack: ExitStack, out: Run, label: str, stats: Stats | None, count: int) -> None:
        n = self.args.in_flight
        scale = self.args.task_seconds / sum(VIDEO_PHASES)
        sim = ("--concurrency", "0", "--daily-limit", "0", "--time-scale", f"{scale:g}")
        cluster = self._cluster(stack, f"{label}-flight", stats, count, sim)
        names = cluster.stage(n, video=True)
        cluster.start(poll=5.0, inbox={}, scheduler={"max_in_flight": n, "per_model": n})

        def states() -> Counter[str]:
            return stats.states() if stats else cluster.sqlite_states()

        cluster.drop(names)
        at_runway = AT_RUNWAY | FINAL | {"downloading"}
        wait_for(lambda: sum(states()[s] for s in at_runway) >= n, self.args.timeout, 0.25)
        cpu0, t0 = cluster.cpu(), time.perf_counter()
        if stats:
            stats.reset()
        wait_for(lambda: sum(states()[s] for s in FINAL | {"downloading"}) > 0, self.args.timeout, 0.1)
        cpu1, span = cluster.cpu(), time.perf_counter() - t0
        if stats:
            out.flight_statements_s = sum(stats.read().values()) / span
        out.flight_cpu_pct = [100 * (b - a) / span for a, b in zip(cpu0, cpu1, strict=True)]
        out.flight_rss_mb = cluster.peaks()
        out.flight_jobs = [_claimed(node.log) for node in cluster.nodes]
        self.log(f"{label} in flight {n}: cpu {out.flight_cpu_pct} rss {out.flight_rss_mb} jobs {out.flight_jobs}")


def _count_state(outbox: Path, state: str) -> int:
    return sum(1 for p in outbox.glob("*.status.json") if state_of(p) == state)


def _claimed(log: Path) -> int:
    """Requests a node claimed, from its log (inbox.claimed lines)."""
    return log.read_bytes().count(b'"event": "inbox.claimed"') if log.exists() else 0


# -- the table --------------------------------------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def rows_for(name: str, runs: list[Run], args: argparse.Namespace) -> list[dict[str, Any]]:
    def fig(values: list[float | None], unit: str, digits: int = 1) -> str:
        m = median(values)
        shown = " / ".join("—" if v is None else f"{v:.{digits}f}" for v in values)
        return "—" if m is None else f"{m:.{digits}f} {unit} (runs: {shown})"

    out: list[dict[str, Any]] = []
    n = len(runs)
    if args.take:
        take = median([r.take_s for r in runs])
        out.append(
            {
                "what": f"{name}: take {args.take:,} dropped at once → every status file (median of {n})",
                "figure": fig([r.take_s for r in runs], "s", 2),
                "baseline": "—",
                "target": f"≤ {TAKE_TARGET_S:.0f} s",
                "met": take is not None and take <= TAKE_TARGET_S,
            }
        )
    if args.drops:
        p99 = median([r.p99_ms for r in runs])
        out.append(
            {
                "what": f"{name}: drop → create, {args.drops} drops one after another, p50 / p99 (median of {n})",
                "figure": f"{median([r.p50_ms for r in runs]) or 0:.1f} / {p99 or 0:.1f} ms "
                f"(p99 runs: {' / '.join(f'{r.p99_ms:.1f}' for r in runs if r.p99_ms is not None)})",
                "baseline": "—",
                "target": f"p99 ≤ {P99_TARGET_MS:.0f} ms",
                "met": p99 is not None and p99 <= P99_TARGET_MS,
            }
        )
    if runs[0].life_statements:
        mid = sorted(runs, key=lambda r: sum(r.life_statements.values()))[n // 2]  # the median run
        held = sorted(runs, key=lambda r: sum(r.take_statements.values()))[n // 2]
        out.append(
            {
                "what": f"{name}: database round trips per job (statements counted by pg_stat_statements; median run)",
                "figure": f"drop → succeeded: {kinds(mid.life_statements, args.drops)}"
                + (f"; taken and held: {kinds(held.take_statements, args.take)}" if args.take else ""),
                "baseline": f"idle nodes: {median([r.idle_statements_s for r in runs]) or 0:.1f} statements/s",
                "target": "—",
                "met": None,
            }
        )
    if args.in_flight and runs[0].flight_cpu_pct:
        cpu = [max(r.flight_cpu_pct) for r in runs if r.flight_cpu_pct]
        rss = [max(r.flight_rss_mb) for r in runs if r.flight_rss_mb]
        per_node = " / ".join(f"{v:.1f}" for v in runs[-1].flight_cpu_pct)
        jobs = " / ".join(str(j) for j in runs[-1].flight_jobs)
        db = median([r.flight_statements_s for r in runs])
        out.append(
            {
                "what": f"{name}: {args.in_flight:,} in flight, CPU and peak RSS of the busiest node while waiting "
                f"(median of {n})",
                "figure": f"{statistics.median(cpu):.1f} % of a core, {statistics.median(rss):.0f} MB "
                f"(last run per node: {per_node} %, jobs {jobs})",
                "baseline": "—" if db is None else f"database: {db:.1f} statements/s",
                "target": "< 10 %, ≤ 200 MB",
                "met": statistics.median(cpu) < 10 and statistics.median(rss) <= 200,
            }
        )
    return out


def sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--nodes", type=sizes, default=[1, 2, 3], help="node counts on PostgreSQL (comma list)")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the one node on SQLite")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--take", type=int, default=10_000, help="requests dropped at once (0 skips)")
    parser.add_argument("--drops", type=int, default=300, help="drops one after another (0 skips)")
    parser.add_argument("--in-flight", type=int, default=1000, help="tasks in flight (0 skips)")
    parser.add_argument("--task-seconds", type=float, default=sum(VIDEO_PHASES), help="mean task length, s")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--dir", type=Path, help="work in DIR and keep it (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    root = args.dir or Path(tempfile.mkdtemp(prefix="runwatch-nodes-scale-"))
    root.mkdir(parents=True, exist_ok=True)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    measure = Measure(args, root, log)
    rows: list[dict[str, Any]] = []
    try:
        configs: list[tuple[str, int]] = ([] if args.no_sqlite else [("sqlite", 1)]) + [("pg", n) for n in args.nodes]
        with durable_server() as server:
            for kind, count in configs:
                name = f"{count} node{'s' if count > 1 else ''}, {'SQLite' if kind == 'sqlite' else 'PostgreSQL'}"
                try:
                    runs = [measure.run(server if kind == "pg" else None, count, i) for i in range(args.runs)]
                except NodeFailed as exc:
                    rows.append({"what": name, "figure": f"not measured: {exc}", "met": False})
                    continue
                rows += rows_for(name, runs, args)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    emit(rows, args.json)
    return 0 if all(row.get("met") is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
