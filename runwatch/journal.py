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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runwatch.errors import JournalError

__all__ = ["ACTIVE_STATES", "FINAL_STATES", "Command", "Job", "Journal", "StateLock", "now_iso"]

SCHEMA_VERSION = 1
FINAL_STATES = frozenset({"succeeded", "rejected", "failed", "cancelled", "needs_attention"})
ACTIVE_STATES = frozenset(
    {
        "accepted",
        "held",
        "uploading",
        "submitted",
        "throttled",
        "pending",
        "running",
        "downloading",
    }
)
AT_RUNWAY = frozenset({"submitted", "throttled", "pending", "running"})

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
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS jobs_name ON jobs(name, seq);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
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


def now_iso() -> str:
    """Now as ISO 8601 UTC, seconds precision: what status files and the journal show."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Job:
    """One request's life, as the journal keeps it."""

    id: str
    name: str
    inbox: str
    format: str
    state: str = "accepted"
    seq: int = 0
    endpoint: str | None = None
    model: str | None = None
    priority: int = 0
    job_dir: str | None = None
    request_path: str | None = None
    body: Any = None
    task_id: str | None = None
    estimated_credits: float | None = None
    credits: float | None = None
    progress: float | None = None
    error: Any = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    placed: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    create_started_at: str | None = None
    attempts: int = 0
    not_before: float | None = None
    cancel_requested: bool = False
    approved: bool = False
    created_at: str = ""
    updated_at: str = ""
    finished_at: str | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def unconfirmed_create(self) -> bool:
        """The create may have reached Runway, but no task id was recorded."""
        return self.create_started_at is not None and self.task_id is None


@dataclass(frozen=True)
class Command:
    id: int
    kind: str
    name: str


_COLUMNS = tuple(f.name for f in fields(Job))


def _row_to_job(row: sqlite3.Row) -> Job:
    data = {k: row[k] for k in _COLUMNS}
    for key in _JSON_FIELDS:
        if data[key] is not None:
            data[key] = json.loads(data[key])
    data["cancel_requested"] = bool(data["cancel_requested"])
    data["approved"] = bool(data["approved"])
    return Job(**data)


def _encode(key: str, value: Any) -> Any:
    if key in _JSON_FIELDS:
        return None if value is None else json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return int(value)
    return value


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
            self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {path}: {exc}") from exc
        self._lock = threading.RLock()

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
                raise JournalError(f"journal {self.path}: {exc}") from exc
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
                raise JournalError(f"journal {self.path}: {exc}") from exc

    # -- jobs -------------------------------------------------------------------------------------

    def add(self, job: Job) -> Job:
        self.add_many([job])
        return job

    def add_many(self, jobs: Sequence[Job]) -> None:
        """Record new jobs in one commit (a burst of claims costs one fsync, not one each)."""
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

    def update(self, job: Job, **changes: Any) -> Job:
        """Apply changes to the job and commit them durably (fsync'd) before returning."""
        for key, value in changes.items():
            if key not in _COLUMNS or key in ("id", "seq"):
                raise JournalError(f"journal: {key!r} is not a job field that may change")
            setattr(job, key, value)
        job.updated_at = now_iso()
        changes["updated_at"] = job.updated_at
        sets = ", ".join(f"{k} = ?" for k in changes)
        with self._tx() as db:
            db.execute(
                f"UPDATE jobs SET {sets} WHERE id = ?",  # noqa: S608 - column names checked above
                [*(_encode(k, v) for k, v in changes.items()), job.id],
            )
        return job

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
        rows = self._query(
            "SELECT * FROM jobs WHERE name = ? ORDER BY (state IN ('succeeded','rejected','failed','cancelled',"
            "'needs_attention')), seq DESC LIMIT 1",
            (name,),
        )
        return _row_to_job(rows[0]) if rows else None

    def active(self) -> list[Job]:
        marks = ", ".join("?" for _ in ACTIVE_STATES)
        rows = self._query(
            f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY seq",  # noqa: S608
            sorted(ACTIVE_STATES),
        )
        return [_row_to_job(r) for r in rows]

    def jobs(self, limit: int = 200, name: str | None = None) -> list[Job]:
        if name is None:
            rows = self._query("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        else:
            rows = self._query("SELECT * FROM jobs WHERE name = ? ORDER BY seq DESC LIMIT ?", (name, limit))
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
