"""``runwatch journal migrate --to postgresql://…``: the SQLite journal's jobs and commands moved into an empty
PostgreSQL database, as they are (ids, numbers, intents, task ids, times), so a daemon started on the database
follows the jobs in flight to their outputs and never sends a create the SQLite journal had recorded.

While it runs, no daemon may use the state directory (its lock is taken), no daemon may use the database (its
daemon lock is taken), and nothing else writes to the SQLite journal (its write lock is held until the database
has committed). The SQLite journal is then kept, marked as moved: opening it again is refused with the URL to
set, so no second daemon can follow the same jobs from it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from runwatch.config import database_url_problem
from runwatch.errors import JournalError
from runwatch.jobs.job import Job
from runwatch.ops import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, load_required_config
from runwatch.store.opening import DRIVER_HINT, credential_password, sqlite_path
from runwatch.store.sqlite import Journal, StateLock, _row_to_job

__all__ = ["Moved", "migrate_command", "move_journal"]


@dataclass(frozen=True)
class Moved:
    jobs: int
    unfinished: int
    commands: int


def move_journal(source: Path, url: str, *, password: str | None = None) -> Moved:
    """Copy the SQLite journal at ``source`` into the empty database at ``url`` and mark it as moved."""
    try:
        from runwatch.store.postgres import CommandRecord, PostgresJournal
    except ImportError as exc:
        raise JournalError(f"{DRIVER_HINT} ({exc})") from exc
    Journal(source).close()  # brings an older journal up to this runwatch's schema; refuses one moved already
    db = sqlite3.connect(str(source), isolation_level=None, timeout=10.0)
    db.row_factory = sqlite3.Row
    try:
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")  # a `runwatch cancel` now waits, and then finds the journal moved
        jobs: list[Job] = [_row_to_job(row) for row in db.execute("SELECT * FROM jobs ORDER BY seq")]
        commands = [
            CommandRecord(r["id"], r["kind"], r["name"], r["created_at"], r["done_at"], r["result"])
            for r in db.execute("SELECT id, kind, name, created_at, done_at, result FROM commands ORDER BY id")
        ]
        target = PostgresJournal(url, password=password)  # load() refuses a database a daemon wrote to meanwhile
        try:
            target.load(jobs, commands)
        finally:
            target.close()
        db.execute("INSERT INTO meta (key, value) VALUES ('moved_to', ?)", (url,))
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        raise JournalError(f"journal {source}: {exc}") from exc
    finally:
        with contextlib.suppress(sqlite3.Error):
            if db.in_transaction:
                db.execute("ROLLBACK")
        db.close()
    return Moved(len(jobs), sum(1 for job in jobs if not job.final), len(commands))


def _live_submits(source: Path, folder: Path) -> list[str]:
    """Names of unfinished `runwatch submit` jobs whose process still runs: it would go on writing to SQLite."""
    from runwatch.jobs.recovery import SUBMIT_INBOX
    from runwatch.submit import _lock_free

    journal = Journal(source)
    try:
        jobs = journal.active(SUBMIT_INBOX)
    finally:
        journal.close()
    live = []
    for job in jobs:
        free, fd = _lock_free(folder, job.id)
        if fd is not None:
            os.close(fd)
        if not free:
            live.append(job.name)
    return live


def migrate_command(
    to: str,
    *,
    config_file: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    env: Mapping[str, str] = os.environ,
) -> int:
    """0 moved; 1 nothing to move, a daemon or a submit still running, the database not empty or unreachable;
    2 a bad URL."""
    out, err = out or sys.stdout, err or sys.stderr
    say = "runwatch journal migrate"
    problem = database_url_problem(to)
    if problem is not None:
        err.write(f"{say}: --to: {problem}\n")
        return EXIT_USAGE
    config = load_required_config(config_file, env)
    source = sqlite_path(config)
    if not source.is_file():
        err.write(f"{say}: no SQLite journal at {source} to move\n")
        return EXIT_FAILURE
    lock = StateLock(config.state.dir)
    try:
        lock.acquire()
    except JournalError as exc:
        err.write(f"{say}: stop the daemon first: {exc}\n")
        return EXIT_FAILURE
    try:
        live = _live_submits(source, config.state.dir / "submit")
        if live:
            err.write(f"{say}: `runwatch submit` still runs for {', '.join(sorted(live))}; let it end (or stop it)\n")
            return EXIT_FAILURE
        moved = move_journal(source, to, password=credential_password(env))
    except JournalError as exc:
        err.write(f"{say}: {exc}\n")
        return EXIT_FAILURE
    finally:
        lock.release()
    where = f"in {config.path}" if config.path else "in the config"
    out.write(
        f"moved {moved.jobs} jobs ({moved.unfinished} not finished) and {moved.commands} commands from {source} "
        f"to {to}\n"
        f'next: set [state] database = "{to}" {where} and start runwatch; it follows the unfinished jobs. '
        f"{source} is kept, marked as moved.\n"
    )
    return EXIT_OK
