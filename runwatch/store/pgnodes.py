"""Nodes on one PostgreSQL journal: the node's row and heartbeat, the owner and lease of every unfinished job,
the takeover of jobs whose lease ran out, the claims of request files, and the commands a node may answer.

Every time here is the database's (``now()``): a node whose clock is off by minutes still holds and loses its
leases when the others see it so. A node is *live* while its heartbeat is younger than a lease and it has not
stopped. The rules:

- A job's owner alone changes its row: :class:`~runwatch.store.postgres.PostgresJournal` fences every job write
  with ``owner = this node`` once it joined, and an intent is recorded only while the lease is held
  (:meth:`NodeSection._lease_held`). A node that lost a job can therefore send no create for it, and a job
  whose intent stands when another node takes it over is never sent again (the recovery's rule).
- A job is taken over when its lease ran out (``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)``), so
  two nodes never take the same job.
- A request file is claimed by inserting its claim row; the insert that wins takes the file. A claim row left
  by a node that is not live any more (or by this node's previous run) may be taken again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psycopg import sql
from psycopg.rows import DictRow

from runwatch.errors import JournalError
from runwatch.jobs.job import FIELDS, Job
from runwatch.jobs.states import ACTIVE
from runwatch.store.listen import NODES_CHANNEL
from runwatch.store.protocol import ClaimRow, Command, NodeRow, TakenOver

if TYPE_CHECKING:
    import psycopg

__all__ = ["NodeSection"]

_ACTIVE = sorted(ACTIVE)
# A node whose heartbeat is younger than a lease and that has not stopped (%(lease)s: seconds).
_LIVE = "n.stopped_at IS NULL AND n.heartbeat_at > now() - make_interval(secs => %(lease)s)"
_SAME_ROW = "n.host = %(host)s AND n.pid = %(old)s"


def _running(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: it runs
        return True
    return True


class NodeSection:
    """The node's part of the PostgreSQL journal (mixed into ``PostgresJournal``)."""

    url: str

    def __init__(self) -> None:
        self.node: str | None = None  # set by join(): from then on this journal writes as that node
        self.lease = 10.0

    if TYPE_CHECKING:

        def _cursor(
            self, transaction: bool = False, durable: bool = True
        ) -> contextlib.AbstractContextManager[psycopg.Cursor[DictRow]]: ...

    # -- fences used by the job writes -------------------------------------------------------------

    def _fence(self) -> tuple[sql.Composable, tuple[Any, ...]]:
        """The condition a joined node's job write adds: the job is its own (or nobody's, e.g. a `runwatch
        submit` job it adopted)."""
        if self.node is None:
            return sql.SQL(""), ()
        return sql.SQL(" AND (owner IS NULL OR owner = %s)"), (self.node,)

    def _lease_held(self) -> tuple[sql.Composable, tuple[Any, ...]]:
        """The condition of an intent: the job is this node's and its lease has not run out. By the database's
        clock as it is now (``clock_timestamp()``), not ``now()``, the start of the transaction: an intent's
        transaction may have waited for the money lock longer than the lease had left."""
        if self.node is None:
            return sql.SQL(""), ()
        return sql.SQL(" AND owner = %s AND lease_until > clock_timestamp()"), (self.node,)

    def _own_new(self, cur: psycopg.Cursor[DictRow], job_ids: Sequence[str]) -> set[str]:
        """Jobs this node just recorded are its own, under a fresh lease (same transaction as their insert); the
        ids it recorded. A row that has an owner already was recorded first by another node, which owned it in
        the transaction of its insert."""
        if self.node is None or not job_ids:
            return set(job_ids)
        cur.execute(
            "UPDATE jobs SET owner = %s, lease_until = now() + make_interval(secs => %s) "
            "WHERE id = ANY(%s) AND owner IS NULL RETURNING id",
            (self.node, self.lease, list(job_ids)),
        )
        return {str(row["id"]) for row in cur.fetchall()}

    def _args(self, **more: Any) -> dict[str, Any]:
        return {"me": self.node, "lease": self.lease, "active": _ACTIVE, **more}

    # -- the node's row ----------------------------------------------------------------------------

    def join(self, name: str, lease: float, *, host: str, pid: int, version: str, node_time: float) -> None:
        """Register as node ``name`` (again, after a restart or a cut-off); refused while another live node has
        that name. A row of this host whose process is gone (a crash, restarted at once) is no live node.
        ``node_time``: this node's epoch now, for the clock offset."""
        args = {"name": name, "host": host, "pid": pid, "version": version, "t": node_time, "lease": lease}
        with self._cursor() as cur:
            if not self._upsert_node(cur, args, "NOT (" + _LIVE + ") OR (n.host = %(host)s AND n.pid = %(pid)s)"):
                cur.execute(
                    "SELECT host, pid, extract(epoch FROM now() - heartbeat_at) AS age FROM nodes WHERE name = %s",
                    (name,),
                )
                row = cur.fetchone()
                gone = row is not None and row["host"] == host and not _running(int(row["pid"]))
                # Only that very row: a node that joined meanwhile is not replaced.
                if not (gone and self._upsert_node(cur, args | {"old": row["pid"] if row else 0}, _SAME_ROW)):
                    held = (
                        f" on {row['host']} (pid {row['pid']}, heartbeat {float(row['age']):.0f} s ago)" if row else ""
                    )
                    raise JournalError(
                        f"the node name {name!r} is in use by a running runwatch{held} on the journal database "
                        f"{self.url}; give this machine another [node] name"
                    )
        self.lease = lease
        self.node = name

    @staticmethod
    def _upsert_node(cur: psycopg.Cursor[DictRow], args: dict[str, Any], replace_when: str) -> bool:
        cur.execute(
            "INSERT INTO nodes AS n (name, host, pid, version, started_at, heartbeat_at, clock_offset) "  # noqa: S608 - constants
            "VALUES (%(name)s, %(host)s, %(pid)s, %(version)s, now(), now(), "
            "%(t)s - extract(epoch FROM clock_timestamp())) "
            "ON CONFLICT (name) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, "
            "version = EXCLUDED.version, started_at = now(), heartbeat_at = now(), "
            "clock_offset = EXCLUDED.clock_offset, stopped_at = NULL "
            f"WHERE {replace_when} RETURNING name",
            args,
        )
        return cur.fetchone() is not None

    def beat(self, node_time: float) -> set[str]:
        """The heartbeat, and every unfinished job of this node's lease renewed, in one transaction; returns
        the ids of those jobs (the ones the database says are this node's)."""
        if self.node is None:
            return set()
        with self._cursor(transaction=True) as cur:
            cur.execute(
                "UPDATE nodes SET heartbeat_at = now(), clock_offset = %(t)s - extract(epoch FROM clock_timestamp()) "
                "WHERE name = %(me)s",
                self._args(t=node_time),
            )
            cur.execute(
                "UPDATE jobs SET lease_until = now() + make_interval(secs => %(lease)s) "
                "WHERE owner = %(me)s AND finished_at IS NULL AND state = ANY(%(active)s) RETURNING id",
                self._args(),
            )
            return {str(row["id"]) for row in cur.fetchall()}

    def take_over(self, inboxes: Sequence[str], limit: int, *, mine_too: bool = False) -> list[TakenOver]:
        """Unfinished jobs of ``inboxes`` whose lease ran out (or that nobody owns), made this node's: up to
        ``limit``, oldest first, each with the node that had it. ``mine_too``: also the jobs this node's name
        still owns (a start, or a return after a cut-off: this run follows nothing yet)."""
        if self.node is None or not inboxes:
            return []
        mine = "OR owner = %(me)s" if mine_too else ""
        with self._cursor() as cur:
            cur.execute(
                "WITH picked AS (SELECT id, owner FROM jobs "  # noqa: S608 - constants
                "WHERE finished_at IS NULL AND state = ANY(%(active)s) AND inbox = ANY(%(inboxes)s) "
                f"AND (owner IS NULL OR lease_until IS NULL OR lease_until < now() {mine}) "
                "ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
                "UPDATE jobs AS j SET owner = %(me)s, lease_until = now() + make_interval(secs => %(lease)s) "
                "FROM picked WHERE j.id = picked.id RETURNING j.*, picked.owner AS from_node",
                self._args(inboxes=list(inboxes), limit=limit),
            )
            rows = cur.fetchall()
        taken = [TakenOver(Job(**{name: row[name] for name in FIELDS}), row["from_node"]) for row in rows]
        return sorted(taken, key=lambda t: t.job.seq)

    def own(self, job_id: str) -> bool:
        """An ended job brought back on purpose (``runwatch retry``) becomes this node's, under a fresh lease;
        False when it is not ended (then it is some node's to follow)."""
        if self.node is None:
            return True
        with self._cursor() as cur:
            cur.execute(
                "UPDATE jobs SET owner = %(me)s, lease_until = now() + make_interval(secs => %(lease)s) "
                "WHERE id = %(job)s AND NOT state = ANY(%(active)s) RETURNING id",
                self._args(job=job_id),
            )
            return cur.fetchone() is not None

    def leave(self) -> int:
        """A clean stop: this node's leases end now and its row says it stopped; every listening node is told
        in the same transaction (``NOTIFY runwatch_nodes``, delivered at the commit) and takes the jobs at
        once. Returns how many jobs it handed over."""
        if self.node is None:
            return 0
        with self._cursor(transaction=True) as cur:
            # Already past: a node told of this commit finds the leases run out by its own transaction's now().
            cur.execute(
                "UPDATE jobs SET lease_until = now() - interval '1 second' "
                "WHERE owner = %(me)s AND finished_at IS NULL AND state = ANY(%(active)s)",
                self._args(),
            )
            handed = cur.rowcount
            cur.execute("UPDATE nodes SET stopped_at = now(), heartbeat_at = now() WHERE name = %(me)s", self._args())
            if handed > 0:
                cur.execute("SELECT pg_notify(%s, %s)", (NODES_CHANNEL, self.node))
        return max(handed, 0)  # still this node's name: a late write stays fenced

    def owners(self, job_ids: Sequence[str]) -> dict[str, str]:
        """The node following each of these jobs that is unfinished (``runwatch status``); ended jobs and jobs
        nobody owns are left out."""
        if not job_ids:
            return {}
        with self._cursor() as cur:
            cur.execute(
                "SELECT id, owner FROM jobs WHERE id = ANY(%(ids)s) AND owner IS NOT NULL AND finished_at IS NULL "
                "AND state = ANY(%(active)s)",
                self._args(ids=list(job_ids)),
            )
            return {str(row["id"]): str(row["owner"]) for row in cur.fetchall()}

    def nodes(self) -> list[NodeRow]:
        """Every node that ever joined, with its heartbeat's age by the database's clock and its jobs."""
        with self._cursor() as cur:
            cur.execute(
                "SELECT n.*, extract(epoch FROM now() - n.heartbeat_at) AS age, "
                "(SELECT COUNT(*) FROM jobs j WHERE j.owner = n.name AND j.finished_at IS NULL "
                "AND j.state = ANY(%(active)s)) AS owned FROM nodes n ORDER BY n.name",
                self._args(),
            )
            rows = cur.fetchall()
        return [
            NodeRow(
                name=r["name"],
                host=r["host"],
                pid=int(r["pid"]),
                version=r["version"],
                started_at=r["started_at"].isoformat(timespec="seconds"),
                heartbeat_age=float(r["age"]),
                clock_offset=None if r["clock_offset"] is None else float(r["clock_offset"]),
                stopped=r["stopped_at"] is not None,
                jobs=int(r["owned"]),
            )
            for r in rows
        ]

    # -- claims of request files -------------------------------------------------------------------

    def claim(self, inbox: str, path: str, identity: str, job_id: str) -> bool:
        """Claim the file ``path`` of ``inbox`` as it is (``identity``) for ``job_id``; True when this node
        won. A claim left by a node that is no longer live, or by this node's previous run, is taken again."""
        if self.node is None:
            return True
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO claims AS c (inbox, path, identity, node, job_id) "  # noqa: S608 - constants
                "VALUES (%(inbox)s, %(path)s, %(identity)s, %(me)s, %(job)s) "
                "ON CONFLICT (inbox, path, identity) DO UPDATE SET node = EXCLUDED.node, job_id = EXCLUDED.job_id, "
                "claimed_at = now() "
                # Its own row too: a claim whose rename failed and whose release did not reach the journal.
                f"WHERE c.node = %(me)s OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.name = c.node AND {_LIVE} "
                "AND n.started_at <= c.claimed_at) "
                "RETURNING job_id",
                self._args(inbox=inbox, path=path, identity=identity, job=job_id),
            )
            return cur.fetchone() is not None

    def unclaim(self, inbox: str, path: str, identity: str, job_id: str) -> None:
        """A claim whose rename truly failed: the file may be claimed again (by any node)."""
        if self.node is None:
            return
        with self._cursor() as cur:
            cur.execute(
                "DELETE FROM claims WHERE inbox = %s AND path = %s AND identity = %s AND job_id = %s",
                (inbox, path, identity, job_id),
            )

    def claims_elsewhere(self, inbox: str) -> set[str]:
        """Job ids of ``inbox``'s claims that live nodes other than this one are making (no job recorded yet):
        their job dirs are theirs to finish."""
        if self.node is None:
            return set()
        with self._cursor() as cur:
            cur.execute(
                "SELECT c.job_id FROM claims c JOIN nodes n ON n.name = c.node "  # noqa: S608 - constants
                f"WHERE c.inbox = %(inbox)s AND c.node <> %(me)s AND {_LIVE} AND n.started_at <= c.claimed_at "
                "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = c.job_id)",
                self._args(inbox=inbox),
            )
            return {str(row["job_id"]) for row in cur.fetchall()}

    def adopt_claim(self, inbox: str, job_id: str) -> bool:
        """A job dir the journal has no job for: True when it is now this node's to take (its claim was this
        node's, or a node's that is not live, or it has none: then a claim row is made for it, which one node
        alone can)."""
        if self.node is None:
            return True
        with self._cursor(transaction=True) as cur:
            cur.execute(
                "UPDATE claims AS c SET node = %(me)s, claimed_at = now() WHERE c.job_id = %(job)s "  # noqa: S608 - constants
                f"AND (c.node = %(me)s OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.name = c.node AND {_LIVE} "
                "AND n.started_at <= c.claimed_at)) RETURNING job_id",
                self._args(job=job_id),
            )
            if cur.fetchone() is not None:
                return True
            cur.execute("SELECT 1 FROM claims WHERE job_id = %s", (job_id,))
            if cur.fetchone() is not None:
                return False  # a live node's
            cur.execute(
                "INSERT INTO claims (inbox, path, identity, node, job_id) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING RETURNING job_id",
                (inbox, f"jobs/{job_id}", "recovered", self.node, job_id),
            )
            return cur.fetchone() is not None

    def orphan_claims(self, inboxes: Sequence[str]) -> list[ClaimRow]:
        """Claims of ``inboxes`` whose node is not live and whose job the journal never
        recorded: a node died between the rename and the record. Its job dir waits for a node to take it."""
        if self.node is None or not inboxes:
            return []
        with self._cursor() as cur:
            cur.execute(
                "SELECT c.inbox, c.path, c.identity, c.job_id FROM claims c "  # noqa: S608 - constants
                # A day back is plenty: every node looks every few seconds, and a node's own start takes its own.
                "WHERE c.claimed_at > now() - interval '1 day' AND c.inbox = ANY(%(inboxes)s) AND c.node <> %(me)s "
                f"AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.name = c.node AND {_LIVE} "
                "AND n.started_at <= c.claimed_at) "
                "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = c.job_id) ORDER BY c.claimed_at LIMIT 500",
                self._args(inboxes=list(inboxes)),
            )
            return [ClaimRow(r["inbox"], r["path"], r["identity"], r["job_id"]) for r in cur.fetchall()]

    # -- commands ----------------------------------------------------------------------------------

    def _node_commands(self) -> list[Command]:
        """The commands this node answers, taken so that no other node answers them too: those naming an
        unfinished job it owns, and those naming no unfinished job at all (a retry, a name nobody has). One
        naming a job that nobody live follows waits until a node takes the job over."""
        with self._cursor() as cur:
            cur.execute(
                "UPDATE commands AS c SET taken_by = %(me)s WHERE c.id IN (SELECT d.id FROM commands d "  # noqa: S608 - constants
                "WHERE d.done_at IS NULL AND (d.taken_by IS NULL OR d.taken_by = %(me)s OR NOT EXISTS "
                f"(SELECT 1 FROM nodes n WHERE n.name = d.taken_by AND {_LIVE})) "
                "AND (EXISTS (SELECT 1 FROM jobs j WHERE j.name = d.name AND j.owner = %(me)s "
                "AND j.finished_at IS NULL AND j.state = ANY(%(active)s)) "
                "OR NOT EXISTS (SELECT 1 FROM jobs j WHERE j.name = d.name AND j.finished_at IS NULL "
                "AND j.state = ANY(%(active)s))) "
                "ORDER BY d.id FOR UPDATE SKIP LOCKED) RETURNING c.id, c.kind, c.name",
                self._args(),
            )
            rows = cur.fetchall()
        return sorted((Command(int(r["id"]), r["kind"], r["name"]) for r in rows), key=lambda c: c.id)
