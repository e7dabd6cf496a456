"""The plumbing of the multi-node benchmarks (bench/nodes.py, bench/nodes_scale.py): a PostgreSQL database for
the run, the harness's own look at it, and nodes as ``runwatch run`` processes with a config each.

A node's config has its own ``[state] dir`` and ``[node] name`` and the run's ``[state] database``; every node
shares the inbox ``inbox/`` and outbox ``outbox/`` beside the state folders. The HTTP server is off: the nodes
share one host, and so would its port.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from runwatch.jobs.states import ACTIVE

ACTIVE_STATES = sorted(str(s) for s in ACTIVE)


# -- the database -----------------------------------------------------------------------------------------


@contextmanager
def pg_server(hint: str = "") -> Iterator[Any]:
    """A throwaway PostgreSQL server (tests/pgserver.py's PgServer) started for the run, stopped at its end.
    ``hint`` ends the message when no server is installed."""
    # tests/pgserver.py is the one way this project starts a PostgreSQL server: the repository's root on the path
    sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
    from tests.pgserver import PgServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit(f"no PostgreSQL server found: apt-get install postgresql{hint}")
    server = PgServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextmanager
def database(url: str | None) -> Iterator[str]:
    """The given database URL, or a fresh database on a throwaway PostgreSQL server started for the run."""
    if url is not None:
        yield url
        return
    with pg_server(", or give --database URL") as server:
        yield server.url(server.create_database())


class Journal:
    """The harness's own read-only look at the shared database (psycopg, autocommit)."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True, application_name="runwatch-nodes-harness")

    def close(self) -> None:
        self.conn.close()

    def has_column(self, table: str, column: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = %s", (table, column)
        ).fetchone()
        return row is not None

    def has_table(self, table: str) -> bool:
        row = self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        return bool(row and row[0])

    def owned(self) -> Counter[str]:
        """Active jobs per owner."""
        rows = self.conn.execute(
            "SELECT owner, COUNT(*) FROM jobs WHERE state = ANY(%s) AND owner IS NOT NULL GROUP BY owner",
            (ACTIVE_STATES,),
        ).fetchall()
        return Counter({str(owner): int(n) for owner, n in rows})

    def states(self) -> Counter[str]:
        rows = self.conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return Counter({str(state): int(n) for state, n in rows})

    def empty(self) -> bool:
        return not self.has_table("jobs") or self.conn.execute("SELECT COUNT(*) FROM jobs").fetchone() == (0,)


# -- the nodes ------------------------------------------------------------------------------------------


def node_config(
    sim_url: str,
    state: Path,
    database_url: str | None,
    name: str | None,
    *,
    poll: float,
    inbox: dict[str, Any],
    scheduler: dict[str, Any] | None = None,
    extra: str = "",
) -> str:
    """One node's config: its own state folder and name, the shared database (None: SQLite in the state folder),
    inbox ``inbox/`` and outbox ``outbox/`` beside the state folder, and no HTTP server (the nodes share a host)."""
    root = state.parent
    lines = [f'[runway]\nbase_url = "{sim_url}"\npoll_interval = {poll:g}\n', f'[state]\ndir = "{state}"']
    if database_url is not None:
        lines.append(f'database = "{database_url}"')
    if name is not None:
        lines.append(f'\n[node]\nname = "{name}"')
    lines += ["", extra, "[scheduler]", "rescan = 1.0"]
    lines += [f"{k} = {v}" for k, v in (scheduler or {}).items()]
    lines += [
        "",
        "[http]",
        'listen = ""',
        "",
        "[[inbox]]",
        f'path = "{root / "inbox"}"',
        f'outbox = "{root / "outbox"}"',
    ]
    lines += [f"{k} = {v}" for k, v in inbox.items()]
    return "\n".join(lines) + "\n"


class Node:
    """One ``runwatch run`` process: its own state folder, config and log; restartable."""

    def __init__(self, root: Path, name: str, config: Path, env: dict[str, str]) -> None:
        self.root, self.name, self.config, self.env = root, name, config, env
        self.log = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = self.offset = 0

    def start(self) -> None:
        argv = [sys.executable, "-m", "runwatch.cli", "run", "--config", str(self.config), "--log-level", "info"]
        self.offset = self.log.stat().st_size if self.log.exists() else 0  # this start's lines come after
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=self.root, env=self.env, stdout=log, stderr=log)
        self.starts += 1

    def started(self) -> bool:
        """Whether this start has logged ``daemon.started`` (its schema is up, its inboxes watched)."""
        with open(self.log, "rb") as log:
            log.seek(self.offset)
            return b'"daemon.started"' in log.read()

    def exited(self) -> int | None:
        """The exit status of a node that ended by itself (not by the harness), else None."""
        return self.proc.poll() if self.proc is not None else None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM and wait; False when it had to be killed."""
        if self.proc is None:
            return True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return False
        finally:
            self.proc = None

    def last_line(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return ""
        return lines[-1][:300] if lines else ""
