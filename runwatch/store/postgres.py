"""The journal in PostgreSQL: the same jobs, commands and money rule as the SQLite journal, in a database that
several machines can reach (``[state] database = "postgresql://…"``).

Every write is one transaction committed with ``synchronous_commit = on`` (set per connection, whatever the
server's default): an intent or a task id is on the server's disk before the call returns. Only
:meth:`PostgresJournal.save_waiting` commits without waiting for the flush, as the SQLite journal does without
an fsync. Connections come from a small pool, so the sending thread's writes do not queue behind the engine's.
Every driver error leaves as a :class:`~runwatch.errors.JournalError` naming the database; one that says the
server cannot be reached (a restart, a network cut, no connection within a few seconds) as its
:class:`~runwatch.errors.JournalUnwritable`, which the daemon keeps and writes again as it does on a full disk.

The password never comes from the config: libpq reads ``PGPASSWORD`` or the password file (``~/.pgpass``,
``PGPASSFILE``) itself, and a systemd credential named ``runwatch_db_password`` is passed as the password.

Several daemons (nodes) share one database. A daemon's journal joins as its node
(:class:`~runwatch.store.pgnodes.NodeSection`): from then on the jobs it records are its own, under a lease
on the database's clock, and every change it writes to a job is fenced by that ownership, so a node that lost a
job to another cannot overwrite what the new owner records, nor record an intent (and so send a create) for it.

Money across nodes: :meth:`PostgresJournal.record_intent` given a :class:`~runwatch.budget.MoneyCheck` checks
the create against every node's spending and records its intent in one transaction under the money lock (see
:meth:`PostgresJournal._money_verdict`). Commands added here are announced with ``NOTIFY runwatch_commands`` in
their own transaction; :mod:`runwatch.store.listen` hears them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from types import SimpleNamespace
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Json
from psycopg_pool import ConnectionPool

from runwatch.budget import Charge, MoneyCheck, charge_of, money_hold, spent, spent_since
from runwatch.clock import iso, now_iso
from runwatch.config import DB_PASSWORD_SOURCES
from runwatch.errors import JournalError, JournalUnwritable, LeaseLost, MoneyHeld, TaskNamedAlready
from runwatch.jobs.job import FIELDS, Job
from runwatch.jobs.states import ACTIVE, AT_RUNWAY, FINAL, State
from runwatch.store.listen import COMMANDS_CHANNEL, CommandListener
from runwatch.store.pgnodes import NodeSection
from runwatch.store.pgschema import LOCK_CLASS, MONEY_LOCK, migrate
from runwatch.store.protocol import Command

__all__ = ["CommandRecord", "PostgresJournal"]

_JSON_FIELDS = frozenset({"body", "error", "outputs", "placed", "history"})
_COLUMNS = sql.SQL(", ").join(sql.Identifier(name) for name in FIELDS)
_INSERT = sql.SQL("INSERT INTO jobs ({}) VALUES ({})").format(
    _COLUMNS, sql.SQL(", ").join(sql.Placeholder() for _ in FIELDS)
)
_INSERT_NEW = _INSERT + sql.SQL(" ON CONFLICT (id) DO NOTHING")  # a node's claims: another may have taken one
_Sql = LiteralString | sql.Composed  # statements built from constants and our own column names only
_CONNECT_TIMEOUT = "10"  # seconds; a URL that sets connect_timeout keeps its own
# The engine, the I/O threads recording intents and task ids, and the inbox watchers' claims (a write holds a
# connection for milliseconds).
_POOL_SIZE = 6
_WAIT_FOR_CONNECTION = 5.0  # seconds


@dataclass(frozen=True)
class CommandRecord:
    """A command as the journal keeps it, answered or not: what ``runwatch journal migrate`` carries over."""

    id: int
    kind: str
    name: str
    created_at: str
    done_at: str | None = None
    result: str | None = None


def _one_line(exc: BaseException) -> str:
    """libpq's messages run over several lines (a DETAIL, a HINT): one line for a log or a terminal."""
    return " ".join(str(exc).split())


def _encode(key: str, value: Any) -> Any:
    if key in _JSON_FIELDS:
        return None if value is None else Json(value)
    if isinstance(value, Enum):
        return value.value
    return value


def _first(cur: psycopg.Cursor[DictRow]) -> DictRow:
    row = cur.fetchone()
    if row is None:  # an aggregate, or a select without FROM, always gives a row
        raise JournalError("the journal database gave no answer to a query that always has one")
    return row


def _job(row: DictRow) -> Job:
    return Job(**{name: row[name] for name in FIELDS})


class PostgresJournal(NodeSection):
    """Jobs and commands in PostgreSQL. Any thread may call; each call takes a pooled connection."""

    def __init__(self, url: str, *, password: str | None = None, pool_size: int = _POOL_SIZE) -> None:
        self.url = url  # as configured: it never holds a password (config.database_url_problem)
        super().__init__()
        self._conninfo = self._make_conninfo(url, password)
        first = self._connect("runwatch")
        try:
            row = first.execute("SHOW server_encoding").fetchone()
            encoding = row[0] if row else b"unknown"
            shown = encoding.decode() if isinstance(encoding, bytes) else str(encoding)  # bytes unless UTF8
            if shown != "UTF8":
                raise JournalError(
                    f"the journal database {url} has the encoding {shown}; runwatch needs UTF8 "
                    "(CREATE DATABASE … ENCODING 'UTF8')"
                )
            migrate(first, url)
        except psycopg.Error as exc:
            raise JournalError(f"cannot open the journal database {url}: {_one_line(exc)}") from exc
        finally:
            first.close()
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self._conninfo,
            kwargs={"autocommit": True, "application_name": "runwatch"},
            min_size=1,
            max_size=pool_size,
            open=False,
            name="runwatch-journal",
            configure=self._configure,
            # A call waits this long for a connection while the server is away; then it counts as a refused
            # write (JournalUnwritable), which the daemon keeps and writes again.
            timeout=_WAIT_FOR_CONNECTION,
        )
        try:
            self._pool.open(wait=True, timeout=30.0)
        except psycopg.Error as exc:
            raise JournalError(f"cannot open the journal database {url}: {_one_line(exc)}") from exc

    # -- connecting -------------------------------------------------------------------------------

    @staticmethod
    def _make_conninfo(url: str, password: str | None) -> str:
        try:
            given = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise JournalError(f"the journal database URL {url} is not valid: {_one_line(exc)}") from exc
        extra: dict[str, Any] = {}
        if "connect_timeout" not in given:
            extra["connect_timeout"] = _CONNECT_TIMEOUT
        if password is not None:
            extra["password"] = password
        return make_conninfo(url, **extra)

    @staticmethod
    def _configure(conn: psycopg.Connection[Any]) -> None:
        # The money rule needs a commit on disk before a create leaves, even on a server set to run without.
        conn.execute("SET synchronous_commit = on")

    def _connect(self, application: str) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, application_name=application[:63])
            self._configure(conn)
        except psycopg.Error as exc:
            message = _one_line(exc)
            hint = f"; the password comes from {DB_PASSWORD_SOURCES}" if "password" in message else ""
            raise JournalError(f"cannot open the journal database {self.url}: {message}{hint}") from exc
        return conn

    def close(self) -> None:
        self._pool.close()

    @contextlib.contextmanager
    def _cursor(self, transaction: bool = False, durable: bool = True) -> Iterator[psycopg.Cursor[DictRow]]:
        """A cursor on a pooled connection; every driver error becomes a JournalError.

        Without ``transaction`` each statement commits on its own (one round trip for a one-statement write).
        """
        try:
            with (
                self._pool.connection() as conn,
                conn.transaction() if transaction else contextlib.nullcontext(),
                conn.cursor(row_factory=dict_row) as cur,
            ):
                if not durable:  # still atomic; only the wait for the flush is left to the next durable commit
                    cur.execute("SET LOCAL synchronous_commit = off")
                yield cur
        except psycopg.OperationalError as exc:
            # The server went away, restarts, refuses connections, or its disk is full: the same write may
            # work later, like a SQLite journal on a full disk (the pool connects again by itself).
            raise JournalUnwritable(f"journal {self.url}: {_one_line(exc)}") from exc
        except psycopg.Error as exc:
            raise JournalError(f"journal {self.url}: {_one_line(exc)}") from exc

    def _query(self, query: _Sql, args: Sequence[Any] = ()) -> list[DictRow]:
        with self._cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall()

    def _write(self, query: _Sql, args: Sequence[Any]) -> None:
        """One statement, committed durably on its own."""
        with self._cursor() as cur:
            cur.execute(query, args)

    # -- jobs -------------------------------------------------------------------------------------

    def add(self, job: Job) -> Job:
        self.add_many([job])
        return job

    def add_many(self, jobs: Sequence[Job]) -> set[str]:
        """Record new jobs in one commit; their seq numbers come from the database's sequence. The ids recorded:
        a node leaves out a job another node recorded first (see ``Store.add_many``)."""
        if not jobs:
            return set()
        stamp = now_iso()
        with self._cursor(transaction=True) as cur:
            cur.execute("SELECT nextval('jobs_seq') AS seq FROM generate_series(1, %s)", (len(jobs),))
            numbers = sorted(int(row["seq"]) for row in cur.fetchall())
            for job, seq in zip(jobs, numbers, strict=True):
                job.created_at = job.created_at or stamp
                job.updated_at = stamp
                job.seq = seq
            insert = _INSERT if self.node is None else _INSERT_NEW
            cur.executemany(insert, [[_encode(k, getattr(job, k)) for k in FIELDS] for job in jobs])
            return self._own_new(cur, [job.id for job in jobs])

    def update(self, job: Job, **changes: Any) -> Job:
        """Apply changes to the job and commit them durably before returning."""
        for key, value in changes.items():
            if key not in FIELDS or key in ("id", "seq"):
                raise JournalError(f"journal: {key!r} is not a job field that may change")
            setattr(job, key, value)
        job.updated_at = now_iso()
        changes["updated_at"] = job.updated_at
        sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in changes)
        fence, fence_args = self._fence()
        self._write(
            sql.SQL("UPDATE jobs SET {} WHERE id = %s{}").format(sets, fence),
            [*(_encode(k, v) for k, v in changes.items()), job.id, *fence_args],
        )
        return job

    def probe(self) -> None:
        """A round trip in a transaction that changes no job: does the database take writes again?"""
        self._write("SELECT 1", ())

    # -- what the sending thread records, keyed by job id -----------------------------------------

    def record_intent(self, job_id: str, *, first: bool, check: MoneyCheck | None = None) -> str:
        """A create is about to leave: commit the intent (and count the attempt on the first try). With
        ``check``, the create is first checked against every node's spending in the same transaction, under the
        money lock (see :meth:`_money_verdict`); refused, nothing is recorded and :class:`MoneyHeld` says why.
        A job that has a task is refused with :class:`TaskNamedAlready`."""
        stamp = now_iso()
        bump = sql.SQL(", attempts = attempts + 1" if first else "")
        lease, lease_args = self._lease_held()
        with self._cursor(transaction=check is not None) as cur:
            if check is not None:
                verdict = self._money_verdict(cur, check, lock=True)
                if verdict is not None:
                    raise MoneyHeld(*verdict)  # leaves the transaction: rolled back, nothing recorded
            cur.execute(
                sql.SQL(
                    "UPDATE jobs SET create_started_at = %s, updated_at = %s{} WHERE id = %s AND task_id IS NULL{}"
                ).format(bump, lease),
                (stamp, stamp, job_id, *lease_args),
            )
            if cur.rowcount == 0:  # raising rolls the money check's transaction back too
                cur.execute("SELECT task_id FROM jobs WHERE id = %s", (job_id,))
                row = cur.fetchone()
                if row is not None and row["task_id"] is not None:  # a job that has a task never sends another
                    raise TaskNamedAlready(job_id, str(row["task_id"]))
                if self.node is not None:
                    raise LeaseLost(f"journal {self.url}: node {self.node} no longer holds the lease of job {job_id}")
            if check is not None:  # what the balance and Runway's daily count are short of since their last read
                cur.execute(
                    "INSERT INTO money_creates (job_id, model, credits) VALUES (%s, %s, %s) ON CONFLICT (job_id) "
                    "DO UPDATE SET model = EXCLUDED.model, credits = EXCLUDED.credits, sent_at = now()",
                    (job_id, check.model, check.credits or 0.0),
                )
        return stamp

    def clear_intent(self, job_id: str) -> None:
        """The create surely created nothing: no intent stands, and it counts nowhere. On a job another node
        took over meanwhile nothing changes: its intent stands for the new owner (which never sends it again),
        and so does its count, which may be a newer create's by then."""
        fence, fence_args = self._fence()
        with self._cursor(transaction=True) as cur:
            cur.execute(
                sql.SQL("UPDATE jobs SET create_started_at = NULL, updated_at = %s WHERE id = %s{}").format(fence),
                (now_iso(), job_id, *fence_args),
            )
            if cur.rowcount > 0:
                cur.execute("DELETE FROM money_creates WHERE job_id = %s", (job_id,))

    def record_task(self, job_id: str, task_id: str, estimated_credits: float | None) -> None:
        """Runway named the task: commit its id the moment the answer is in. On a job another node took over
        meanwhile only the id is kept (its owner decides its state): a task that exists is never forgotten."""
        fence, fence_args = self._fence()
        with self._cursor() as cur:
            cur.execute(
                sql.SQL(
                    "UPDATE jobs SET task_id = %s, estimated_credits = COALESCE(%s, estimated_credits), state = %s, "
                    "updated_at = %s WHERE id = %s{}"
                ).format(fence),
                (task_id, estimated_credits, State.SUBMITTED.value, now_iso(), job_id, *fence_args),
            )
            if cur.rowcount == 0:
                cur.execute("UPDATE jobs SET task_id = %s WHERE id = %s AND task_id IS NULL", (task_id, job_id))

    def save_waiting(self, jobs: Iterable[Job]) -> None:
        """State, progress and updated_at of jobs waiting at Runway, in one commit that does not wait for the
        flush. Only rows still in a waiting state change: a late batch never overwrites a state committed on
        its own."""
        rows = [(str(job.state), job.progress, job.updated_at, job.id) for job in jobs if job.state in AT_RUNWAY]
        if not rows:
            return
        waiting = sorted(AT_RUNWAY)
        fence, fence_args = self._fence()
        with self._cursor(transaction=True, durable=False) as cur:
            cur.executemany(
                sql.SQL(
                    "UPDATE jobs SET state = %s, progress = %s, updated_at = %s WHERE id = %s AND state = ANY(%s){}"
                ).format(fence),
                [(*row, waiting, *fence_args) for row in rows],
            )

    def get(self, job_id: str) -> Job | None:
        rows = self._query("SELECT * FROM jobs WHERE id = %s", (job_id,))
        return _job(rows[0]) if rows else None

    def find(self, name: str) -> Job | None:
        """The job a person means by NAME: the newest active one, else the newest one."""
        rows = self._query(
            "SELECT * FROM jobs WHERE name = %s ORDER BY (state = ANY(%s)), seq DESC LIMIT 1", (name, sorted(FINAL))
        )
        return _job(rows[0]) if rows else None

    def active(self, inbox: str | None = None) -> list[Job]:
        """Unfinished jobs, oldest first (of one inbox, when given)."""
        if inbox is None:
            rows = self._query("SELECT * FROM jobs WHERE state = ANY(%s) ORDER BY seq", (sorted(ACTIVE),))
        else:
            rows = self._query(
                "SELECT * FROM jobs WHERE state = ANY(%s) AND inbox = %s ORDER BY seq", (sorted(ACTIVE), inbox)
            )
        return [_job(r) for r in rows]

    def jobs(self, limit: int = 200, name: str | None = None) -> list[Job]:
        if name is None:
            rows = self._query("SELECT * FROM jobs ORDER BY seq DESC LIMIT %s", (limit,))
        else:
            rows = self._query("SELECT * FROM jobs WHERE name = %s ORDER BY seq DESC LIMIT %s", (name, limit))
        return [_job(r) for r in rows]

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
        given = {"state": state, "inbox": inbox, "name": name}
        tests = [sql.SQL("{} = %s").format(sql.Identifier(column)) for column, value in given.items() if value]
        args: list[Any] = [value for value in given.values() if value]
        if before is not None:
            tests.append(sql.SQL("{} < %s").format(sql.Identifier("seq")))
            args.append(before)
        where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(tests) if tests else sql.SQL("")
        query = sql.SQL("SELECT * FROM jobs{} ORDER BY seq DESC LIMIT %s").format(where)
        return [_job(r) for r in self._query(query, [*args, limit])]

    def recently_finished(self, limit: int) -> list[Job]:
        """The jobs that reached a final state last, newest first."""
        rows = self._query(
            "SELECT * FROM jobs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC, seq DESC LIMIT %s", (limit,)
        )
        return [_job(r) for r in rows]

    def known_dirs(self) -> set[str]:
        return {r["job_dir"] for r in self._query("SELECT job_dir FROM jobs WHERE job_dir IS NOT NULL")}

    def counts(self) -> dict[str, int]:
        return {r["state"]: int(r["n"]) for r in self._query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")}

    # -- commands from other processes ------------------------------------------------------------

    def add_command(self, kind: str, name: str) -> int:
        """Append a command, and tell every listening node in the same transaction (delivered at its commit)."""
        rows = self._query(
            "WITH added AS (INSERT INTO commands (kind, name, created_at) VALUES (%s, %s, %s) RETURNING id) "
            "SELECT id, pg_notify(%s, id::text) FROM added",
            (kind, name, now_iso(), COMMANDS_CHANNEL),
        )
        return int(rows[0]["id"])

    def pending_commands(self) -> list[Command]:
        if self.node is not None:  # a node answers for its own jobs only (runwatch.store.pgnodes)
            return self._node_commands()
        rows = self._query("SELECT id, kind, name FROM commands WHERE done_at IS NULL ORDER BY id")
        return [Command(int(r["id"]), r["kind"], r["name"]) for r in rows]

    def finish_command(self, command_id: int, result: str) -> None:
        self._write("UPDATE commands SET done_at = %s, result = %s WHERE id = %s", (now_iso(), result, command_id))

    def command_result(self, command_id: int) -> str | None:
        rows = self._query("SELECT result FROM commands WHERE id = %s AND done_at IS NOT NULL", (command_id,))
        return str(rows[0]["result"]) if rows else None

    def listen_commands(
        self, wake: Callable[[], None], log: Any, nodes: Callable[[], None] | None = None
    ) -> CommandListener:
        """A connection of its own (never the pool's) that calls ``wake`` on every command added anywhere, and
        ``nodes`` whenever a node stops cleanly (its jobs are free to take)."""
        return CommandListener(self._conninfo, self.url, wake, log, nodes)

    # -- money across nodes -----------------------------------------------------------------------

    def money_hold(self, check: MoneyCheck) -> tuple[str, str] | None:
        """Whether every node's spending holds the create back now, without the lock and recording no intent:
        a look before media are uploaded (``record_intent`` decides). The node's organization figures are kept
        when newer than any node's, without waiting for the disk: a lost one is read again."""
        with self._cursor(transaction=True, durable=False) as cur:
            return self._money_verdict(cur, check, lock=False)

    def _money_verdict(self, cur: psycopg.Cursor[DictRow], check: MoneyCheck, *, lock: bool) -> tuple[str, str] | None:
        """The money rules of ``runwatch.budget`` over every node's jobs, in the caller's transaction.

        With ``lock``, the transaction first takes the money lock, which every node's create takes: two creates
        are never checked at once, so between this check and the commit of the intent nothing else is let
        through, and three nodes under a tight budget spend no more than it. The node's organization figures
        are kept when they are newer than any node's. Times are the database's: a node's clock may be off.
        """
        if lock:
            cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, MONEY_LOCK))
        if check.org is not None:  # also at the look before uploading: a top-up read anywhere releases holds
            cur.execute(
                "INSERT INTO money_org (balance, daily, read_at) "
                "VALUES (%s, %s, now() - make_interval(secs => %s)) "
                "ON CONFLICT (only_row) DO UPDATE SET balance = EXCLUDED.balance, daily = EXCLUDED.daily, "
                "read_at = EXCLUDED.read_at WHERE money_org.read_at < EXCLUDED.read_at",
                (check.org.balance, Json(check.org.daily_used), max(check.org.age, 0.0)),
            )
        row = _first(
            cur.execute("SELECT now() AS now, (SELECT approved FROM jobs WHERE id = %s) AS approved", (check.job_id,))
        )
        now: datetime = row["now"]
        # An approval is a column of the job's row: whichever node recorded it, every node sees it.
        approved = check.approved or bool(row["approved"])
        charges: list[Charge] = []
        since = spent_since(now, check.limits)
        if since is not None and not approved:
            # One row per group of jobs that charge_of treats alike (every field it reads, the day for the time),
            # credits summed: a day's thousands of jobs come over as a few rows, and the rule stays charge_of's.
            cur.execute(
                "SELECT inbox, state, substr(COALESCE(create_started_at, updated_at), 1, 10) AS day, "
                "credits IS NOT NULL AS charged, create_started_at IS NOT NULL AS intent, task_id IS NOT NULL AS task, "
                "SUM(credits) AS credits, SUM(estimated_credits) AS estimated FROM jobs "
                "WHERE COALESCE(create_started_at, updated_at) >= %s AND id <> %s "
                "AND (credits IS NOT NULL OR estimated_credits IS NOT NULL) GROUP BY 1, 2, 3, 4, 5, 6",
                (iso(since), check.job_id),
            )
            for group in cur.fetchall():
                midnight = f"{group['day']}T00:00:00Z"
                alike = SimpleNamespace(
                    inbox=group["inbox"],
                    state=group["state"],
                    credits=group["credits"] if group["charged"] else None,
                    estimated_credits=group["estimated"],
                    create_started_at=midnight if group["intent"] else None,
                    task_id="task" if group["task"] else None,
                    updated_at=midnight,
                )
                charge = charge_of(alike, now)
                if charge is not None:
                    charges.append(charge)
        org = _first(
            cur.execute(
                "SELECT o.balance, o.daily, "
                "(SELECT COALESCE(SUM(c.credits), 0) FROM money_creates c "
                " WHERE c.sent_at >= o.read_at AND c.job_id <> %(job)s) AS spent_since, "
                "(SELECT COUNT(*) FROM money_creates c "
                " WHERE c.sent_at >= o.read_at AND c.model = %(model)s AND c.job_id <> %(job)s) AS made_since "
                "FROM (SELECT true) AS one LEFT JOIN money_org o ON true",
                {"job": check.job_id, "model": check.model},
            )
        )
        balance = None if org["balance"] is None else float(org["balance"]) - float(org["spent_since"])
        daily_used = 0
        if check.daily_cap is not None and check.model is not None:
            daily = org["daily"] if isinstance(org["daily"], dict) else {}
            reported = daily.get(check.model)
            counted = int(reported) + int(org["made_since"]) if isinstance(reported, int) else 0
            made_today = _first(
                cur.execute(
                    "SELECT COUNT(*) AS n FROM money_creates WHERE model = %s AND job_id <> %s "
                    "AND sent_at > now() - interval '24 hours'",
                    (check.model, check.job_id),
                )
            )["n"]
            daily_used = max(counted, int(made_today))
        at_runway = 0
        if check.model_cap is not None and check.model is not None:
            at_runway = _first(
                cur.execute(
                    "SELECT COUNT(*) AS n FROM jobs WHERE model = %s AND id <> %s AND state = ANY(%s) "
                    "AND (state = ANY(%s) OR (create_started_at IS NOT NULL AND task_id IS NULL))",
                    (check.model, check.job_id, sorted(ACTIVE), sorted(AT_RUNWAY)),
                )
            )["n"]
        if lock:  # Runway's rolling day is all money_creates is read for
            cur.execute("DELETE FROM money_creates WHERE sent_at < now() - interval '2 days'")
        used = spent(charges, check.inbox, now)
        return money_hold(
            check, used, balance=balance, daily_used=daily_used, at_runway=int(at_runway), approved=approved
        )

    # -- a whole journal brought over (`runwatch journal migrate`) --------------------------------

    def load(self, jobs: Sequence[Job], commands: Sequence[CommandRecord]) -> None:
        """Copy another journal's jobs and commands in as they are (ids, seq numbers, times), in one commit;
        refused unless this journal holds neither jobs nor commands."""
        with self._cursor(transaction=True) as cur:
            # No other writer between the look and the copy.
            cur.execute("LOCK TABLE jobs, commands IN EXCLUSIVE MODE")
            cur.execute("SELECT (SELECT COUNT(*) FROM jobs) AS jobs, (SELECT COUNT(*) FROM commands) AS commands")
            held = cur.fetchone()
            if held is None or held["jobs"] or held["commands"]:
                shown = f"{held['jobs']} jobs and {held['commands']} commands" if held else "something"
                raise JournalError(f"the journal database {self.url} already holds {shown}; it must be empty")
            cur.executemany(_INSERT, [[_encode(k, getattr(job, k)) for k in FIELDS] for job in jobs])
            cur.executemany(
                "INSERT INTO commands (id, kind, name, created_at, done_at, result) VALUES (%s, %s, %s, %s, %s, %s)",
                [(c.id, c.kind, c.name, c.created_at, c.done_at, c.result) for c in commands],
            )
            # New jobs and commands number on from the ones brought over.
            cur.execute(
                "SELECT setval('jobs_seq', GREATEST((SELECT MAX(seq) FROM jobs), 1), EXISTS (SELECT FROM jobs))"
            )
            cur.execute(
                "SELECT setval(pg_get_serial_sequence('commands', 'id'), GREATEST((SELECT MAX(id) FROM commands), 1), "
                "EXISTS (SELECT FROM commands))"
            )
