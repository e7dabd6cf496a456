"""The journal: one SQLite database (WAL) in the state directory that remembers every job.

Money rule: before every paid call the intent is committed (``create_started_at``), and the task id is
committed as soon as Runway answers. A job whose intent is recorded but has no task id after a crash may
have been created at Runway; it goes to ``needs_attention`` and is never sent again by itself.

The daemon's engine thread is the only writer of job rows; commands (``runwatch cancel`` and friends,
other processes) only read jobs and append to the ``commands`` table, which the engine drains.
Nothing secret is stored: bodies are kept as the user wrote them (local paths, not presigned URLs).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runwatch.clock import now_iso
from runwatch.errors import JournalError, JournalUnwritable, TaskNamedAlready
from runwatch.jobs.job import FIELDS, Job
from runwatch.jobs.states import ACTIVE, AT_RUNWAY, FINAL, State
from runwatch.store.protocol import ClaimRow, Command, NodeRow, TakenOver

if TYPE_CHECKING:
    from runwatch.budget import MoneyCheck
    from runwatch.store.protocol import Listening

__all__ = ["Command", "Journal", "StateLock"]

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    inbox TEXT NOT NULL,
    format TEXT NOT NULL,
    state TEXT NOT NULL,
    endpoint TEXT,
    model TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    job_dir TEXT,
    request_path TEXT,
    body TEXT,
    task_id TEXT,
    estimated_credits REAL,
    credits REAL,
    progress REAL,
    error TEXT,
    outputs TEXT NOT NULL DEFAULT '[]',
    placed TEXT NOT NULL DEFAULT '[]',
    history TEXT NOT NULL DEFAULT '[]',
    create_started_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    approved INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT,
    outbox TEXT,
    credits_estimated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_name ON jobs(name, seq);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_by_seq ON jobs(seq);
CREATE INDEX IF NOT EXISTS jobs_state_seq ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_inbox_seq ON jobs(inbox, seq);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_task ON jobs(task_id) WHERE task_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    done_at TEXT,
    result TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_JSON_FIELDS = ("body", "error", "outputs", "placed", "history")


_COLUMNS = FIELDS


def _row_to_job(row: sqlite3.Row) -> Job:
    data = {k: row[k] for k in _COLUMNS}
    for key in _JSON_FIELDS:
        if data[key] is not None:
            data[key] = json.loads(data[key])
    data["cancel_requested"] = bool(data["cancel_requested"])
    data["approved"] = bool(data["approved"])
    data["credits_estimated"] = bool(data["credits_estimated"])
    return Job(**data)


def _encode(key: str, value: Any) -> Any:
    if key in _JSON_FIELDS:
        return None if value is None else json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return int(value)
    return value


def _error(path: Path, exc: sqlite3.Error) -> JournalError:
    """SQLite's "operational" errors (full, read-only, I/O, locked) come from the disk or another process: the
    same write may work later. Anything else (a constraint, a damaged file) will not."""
    kind = JournalUnwritable if isinstance(exc, sqlite3.OperationalError) else JournalError
    return kind(f"journal {path}: {exc}")


def _filters(
    *, state: str | None, inbox: str | None, name: str | None, before: int | None, mark: str
) -> tuple[str, list[Any]]:
    """The WHERE clause of a listing (column names ours, values as parameters)."""
    given = {"state = ": state, "inbox = ": inbox, "name = ": name, "seq < ": before}
    used = [(test, value) for test, value in given.items() if value is not None]
    if not used:
        return "", []
    return " WHERE " + " AND ".join(f"{test}{mark}" for test, _ in used), [value for _, value in used]


class Journal:
    """Jobs and commands in SQLite. One connection, guarded by a lock, so any thread may call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10.0)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed intent survives power loss, not just a crash of the process.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(_SCHEMA)
            self._migrate()
            moved = self._db.execute("SELECT value FROM meta WHERE key = 'moved_to'").fetchone()
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {path}: {exc}") from exc
        if moved is not None:  # its jobs are followed from the database now: following them here too sends twice
            self._db.close()
            raise JournalError(
                f"the journal {path} was moved to {moved[0]} by `runwatch journal migrate`; "
                f'set [state] database = "{moved[0]}" in the config'
            )
        self._lock = threading.RLock()

    def _migrate(self) -> None:
        """Bring an older journal up to this code's schema; refuse one written by newer code."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:  # a new journal: made by _SCHEMA as it is now
            self._db.execute("INSERT INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            return
        version = int(row[0])
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"the journal {self.path} has schema {version}, newer than this runwatch knows ({SCHEMA_VERSION}); "
                "run the newer runwatch, or restore a journal it wrote"
            )
        if version < 2:
            self._db.execute("ALTER TABLE jobs ADD COLUMN outbox TEXT")
            self._db.execute("ALTER TABLE jobs ADD COLUMN credits_estimated INTEGER NOT NULL DEFAULT 0")
        self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                if not durable:  # WAL keeps it atomic; only the fsync is left to the next durable commit
                    self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise _error(self.path, exc) from exc
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            finally:
                if not durable:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("PRAGMA synchronous=FULL")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return list(self._db.execute(sql, args))
            except sqlite3.Error as exc:
                raise _error(self.path, exc) from exc

    # -- jobs -------------------------------------------------------------------------------------

    def add(self, job: Job) -> Job:
        self.add_many([job])
        return job

    def add_many(self, jobs: Sequence[Job]) -> set[str]:
        """Record new jobs in one commit (a burst of claims costs one fsync, not one each); all of them (one
        daemon owns this journal)."""
        stamp = now_iso()
        cols = ", ".join(_COLUMNS)
        marks = ", ".join("?" for _ in _COLUMNS)
        with self._tx() as db:
            (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()
            for offset, job in enumerate(jobs):
                job.created_at = job.created_at or stamp
                job.updated_at = stamp
                job.seq = int(seq) + offset
                db.execute(
                    f"INSERT INTO jobs ({cols}) VALUES ({marks})",  # noqa: S608 - column names are ours
                    [_encode(k, getattr(job, k)) for k in _COLUMNS],
                )
        return {job.id for job in jobs}

    def update(self, job: Job, **changes: Any) -> Job:
        """Commit the changes durably (fsync'd), then apply them to ``job``.

        A commit that fails leaves ``job`` as it was: the caller decides what the change it could not record
        means (the daemon keeps it in memory and records it later, see ``runwatch.jobs.ledger``).
        """
        for key in changes:
            if key not in _COLUMNS or key in ("id", "seq"):
                raise JournalError(f"journal: {key!r} is not a job field that may change")
        stamp = now_iso()
        row = {**changes, "updated_at": stamp}
        sets = ", ".join(f"{k} = ?" for k in row)
        with self._tx() as db:
            db.execute(
                f"UPDATE jobs SET {sets} WHERE id = ?",  # noqa: S608 - column names checked above
                [*(_encode(k, v) for k, v in row.items()), job.id],
            )
        job.apply(**row)
        return job

    def probe(self) -> None:
        """One small durable write that touches no job: does the journal take writes again?"""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('written_at', ?)", (now_iso(),))

    # -- what the sending thread records, keyed by job id (it never touches a Job) ----------------

    def record_intent(self, job_id: str, *, first: bool, check: MoneyCheck | None = None) -> str:
        """A create is about to leave: commit the intent (and count the attempt on the first try); refused with
        :class:`TaskNamedAlready` when the job has a task.

        ``check`` changes nothing here: one daemon owns this journal, and its guard has decided already.
        """
        stamp = now_iso()
        bump = ", attempts = attempts + 1" if first else ""
        with self._tx() as db:
            done = db.execute(
                f"UPDATE jobs SET create_started_at = ?, updated_at = ?{bump} "  # noqa: S608 - constant
                "WHERE id = ? AND task_id IS NULL",
                (stamp, stamp, job_id),
            )
            if done.rowcount == 0:  # a job that has a task never sends another create
                row = db.execute("SELECT task_id FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is not None and row[0] is not None:
                    raise TaskNamedAlready(job_id, str(row[0]))
        return stamp

    def clear_intent(self, job_id: str) -> None:
        """The create surely created nothing (refused before sending, 429, 4xx): no intent stands."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET create_started_at = NULL, updated_at = ? WHERE id = ?", (now_iso(), job_id))

    def record_task(self, job_id: str, task_id: str, estimated_credits: float | None) -> None:
        """Runway named the task: commit its id the moment the answer is in."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET task_id = ?, estimated_credits = COALESCE(?, estimated_credits), state = ?, "
                "updated_at = ? WHERE id = ?",
                (task_id, estimated_credits, State.SUBMITTED.value, now_iso(), job_id),
            )

    def save_waiting(self, jobs: Iterable[Job]) -> None:
        """State, progress and updated_at of many jobs waiting at Runway, in one commit without fsync.

        What a poll learns (PENDING to RUNNING, progress) is for people and is found again by the next start's
        first poll, so it is not worth a commit per poll. Only rows still in a waiting state change: a late
        batch never overwrites a state committed on its own (downloading, succeeded...).
        """
        waiting = ", ".join(f"'{state}'" for state in sorted(AT_RUNWAY))
        with self._tx(durable=False) as db:
            db.executemany(
                f"UPDATE jobs SET state = ?, progress = ?, updated_at = ? WHERE id = ? AND state IN ({waiting})",  # noqa: S608 - constants
                [(job.state, job.progress, job.updated_at, job.id) for job in jobs if job.state in AT_RUNWAY],
            )

    def get(self, job_id: str) -> Job | None:
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _row_to_job(rows[0]) if rows else None

    def find(self, name: str) -> Job | None:
        """The job a person means by NAME: the newest active one, else the newest one."""
        final = ", ".join(f"'{state}'" for state in sorted(FINAL))
        rows = self._query(
            f"SELECT * FROM jobs WHERE name = ? ORDER BY (state IN ({final})), seq DESC LIMIT 1",  # noqa: S608
            (name,),
        )
        return _row_to_job(rows[0]) if rows else None

    def active(self, inbox: str | None = None) -> list[Job]:
        """Unfinished jobs, oldest first (of one inbox, when given)."""
        marks = ", ".join("?" for _ in ACTIVE)
        where = "" if inbox is None else " AND inbox = ?"
        rows = self._query(
            f"SELECT * FROM jobs WHERE state IN ({marks}){where} ORDER BY seq",  # noqa: S608 - constants
            [*sorted(ACTIVE), *([] if inbox is None else [inbox])],
        )
        return [_row_to_job(r) for r in rows]

    def jobs(self, limit: int = 200, name: str | None = None) -> list[Job]:
        if name is None:
            rows = self._query("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        else:
            rows = self._query("SELECT * FROM jobs WHERE name = ? ORDER BY seq DESC LIMIT ?", (name, limit))
        return [_row_to_job(r) for r in rows]

    def listing(
        self,
        *,
        state: str | None = None,
        inbox: str | None = None,
        name: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """A filtered page of jobs, newest first (see :meth:`Store.listing`)."""
        where, args = _filters(state=state, inbox=inbox, name=name, before=before, mark="?")
        rows = self._query(
            f"SELECT * FROM jobs{where} ORDER BY seq DESC LIMIT ?",  # noqa: S608 - column names are ours
            [*args, limit],
        )
        return [_row_to_job(r) for r in rows]

    def recently_finished(self, limit: int) -> list[Job]:
        """The jobs that reached a final state last, newest first."""
        rows = self._query(
            "SELECT * FROM jobs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC, seq DESC LIMIT ?", (limit,)
        )
        return [_row_to_job(r) for r in rows]

    def known_dirs(self) -> set[str]:
        return {r["job_dir"] for r in self._query("SELECT job_dir FROM jobs WHERE job_dir IS NOT NULL")}

    def counts(self) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self._query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")}

    # -- commands from other processes ------------------------------------------------------------

    def add_command(self, kind: str, name: str) -> int:
        with self._tx() as db:
            cur = db.execute("INSERT INTO commands(kind, name, created_at) VALUES (?, ?, ?)", (kind, name, now_iso()))
            return int(cur.lastrowid or 0)

    def pending_commands(self) -> list[Command]:
        rows = self._query("SELECT id, kind, name FROM commands WHERE done_at IS NULL ORDER BY id")
        return [Command(r["id"], r["kind"], r["name"]) for r in rows]

    def finish_command(self, command_id: int, result: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE commands SET done_at = ?, result = ? WHERE id = ?", (now_iso(), result, command_id))

    def command_result(self, command_id: int) -> str | None:
        rows = self._query("SELECT result FROM commands WHERE id = ? AND done_at IS NOT NULL", (command_id,))
        return str(rows[0]["result"]) if rows else None

    # -- nodes: a local journal has one node, the daemon holding the state directory, and it owns every job --

    def join(self, name: str, lease: float, *, host: str, pid: int, version: str, node_time: float) -> None:
        """Nothing to register: the state directory's lock already makes this daemon the only one."""

    def beat(self, node_time: float) -> set[str]:
        return {job.id for job in self.active()}

    def take_over(self, inboxes: Sequence[str], limit: int, *, mine_too: bool = False) -> list[TakenOver]:
        return []  # no other node to take jobs from; a start follows every unfinished job (runwatch.jobs.recovery)

    def own(self, job_id: str) -> bool:
        return True

    def leave(self) -> int:
        return 0

    def nodes(self) -> list[NodeRow]:
        return []  # `runwatch nodes` shows the local node from the state directory

    def claim(self, inbox: str, path: str, identity: str, job_id: str) -> bool:
        return True  # the rename alone decides between processes on one machine

    def unclaim(self, inbox: str, path: str, identity: str, job_id: str) -> None:
        """Nothing was recorded."""

    def claims_elsewhere(self, inbox: str) -> set[str]:
        return set()

    def adopt_claim(self, inbox: str, job_id: str) -> bool:
        return True

    def orphan_claims(self, inboxes: Sequence[str]) -> list[ClaimRow]:
        return []  # a start takes every claim the journal never saw (runwatch.jobs.recovery)

    # -- one node: its guard counts everything, and it reads commands on its own turn -------------

    def money_hold(self, check: MoneyCheck) -> tuple[str, str] | None:
        """Nothing beyond what the one daemon's guard decided."""
        return None

    def listen_commands(
        self, wake: Callable[[], None], log: Any, nodes: Callable[[], None] | None = None
    ) -> Listening | None:
        """SQLite cannot tell another process's write: the daemon reads commands on its turn."""
        return None


class StateLock:
    """An exclusive lock on the state directory: a second daemon on the same state refuses to start."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "runwatch.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            holder = self.path.read_text(errors="replace").strip() or "another process"
            raise JournalError(
                f"the state directory {self.path.parent} is in use by {holder}; one runwatch daemon per state directory"
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"runwatch pid {os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
