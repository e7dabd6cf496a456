"""This daemon as one node among several on a shared PostgreSQL journal, and ``runwatch nodes``.

With a PostgreSQL journal every daemon is a node (``[node] name``, unique among the live ones). :class:`Node`
keeps, from the engine's loop (so the engine's one-writer rule holds):

- **the heartbeat**: every third of a lease, one transaction stamps the node's row with the database's
  ``now()`` (and the node's clock offset) and renews the lease of every unfinished job it owns;
- **the takeover**: every half lease, and at once when another node says it stopped, jobs of its inboxes whose
  lease ran out (their node died, or stopped and handed them over) become its own, and are followed through the
  same code as a restart (:func:`runwatch.jobs.recovery.resume`): a task is followed and downloaded into the same
  outbox, a create whose intent stands without a task id goes to ``needs_attention`` and is never sent again;
- **the cut-off**: a node that could not renew its leases for a whole lease forgets every job it followed
  (others take them), logs ``node.cut_off``, takes no claim and sends no create. When the database answers
  again it writes what it kept, joins again and starts over from the journal;
- **jobs that changed hands**: a renewal that does not return a followed job means another node has it now:
  it is no longer followed here.

The money rule does not rest on these timers: the journal records an intent only while this node holds the
job's lease by the database's clock (``runwatch.store.pgnodes``), so a node late or cut off sends nothing.
With the SQLite journal there is one node, which owns everything, and none of this runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from runwatch import __version__, workarea
from runwatch.errors import JournalError, RunwatchError
from runwatch.jobs import recovery
from runwatch.jobs.states import ACTIVE
from runwatch.store.protocol import NodeRow, TakenOver
from runwatch.workrecords import find_record

if TYPE_CHECKING:
    from runwatch.config import Config, NodeConfig
    from runwatch.jobs.engine import Engine
    from runwatch.jobs.job import Job
    from runwatch.store import Store

__all__ = ["Node", "nodes_command", "nodes_table"]

_UNKNOWN = math.nan  # a heartbeat age nobody knows (a local node that is not running)
TAKE_AT_ONCE = 200  # jobs taken over in one statement; a sweep takes more in further statements


class Node:
    """The engine's node: joined at start, kept alive by :meth:`tick`, handed over by :meth:`leave`."""

    def __init__(self, engine: Engine, config: NodeConfig, *, shared: bool) -> None:
        self.engine = engine
        self.name = config.name
        self.lease = config.lease
        self.shared = shared  # a journal several daemons share: otherwise this node owns everything
        self.cut_off = False
        self._beat_every = max(0.5, self.lease / 3)
        self._sweep_every = max(1.0, min(5.0, self.lease / 2))
        now = engine.clock.monotonic()
        self._renewed_at = now  # monotonic moment before the last renewal that went through
        self._next_beat = now + self._beat_every
        self._next_sweep = now + self._sweep_every
        self._beat_failing = False

    @property
    def store(self) -> Store:
        return self.engine.store

    # -- start and stop ---------------------------------------------------------------------------

    def join(self) -> None:
        """Register the node; raises JournalError when a live node has its name (the daemon exits 78)."""
        if not self.shared:
            return
        self.store.join(
            self.name,
            self.lease,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            node_time=self.engine.clock.time(),
        )
        self._renewed_at = self.engine.clock.monotonic()
        self.engine.log.info("node.started", node=self.name, lease=self.lease)

    def take_own(self) -> list[Job]:
        """At a start (or a return after a cut-off): every unfinished job of this node's inboxes that is its own,
        nobody's, or whose lease ran out, now this node's. Nothing is followed yet."""
        return [t.job for t in self._take(mine_too=True)]

    def leave(self) -> None:
        """A clean stop: the leases of this node's jobs end now, and the others, told so by the journal's
        notification, take them at once (:meth:`handed_over`)."""
        if not self.shared or self.cut_off:
            return
        try:
            handed = self.store.leave()
        except JournalError as exc:
            self.engine.log.warning("node.stopped", node=self.name, handed_over=0, error=str(exc))
            return
        self.engine.log.info("node.stopped", node=self.name, handed_over=handed)

    # -- from the engine's loop -------------------------------------------------------------------

    def tick(self) -> None:
        if not self.shared:
            return
        clock = self.engine.clock
        now = clock.monotonic()
        if now >= self._next_beat:
            self._next_beat = now + self._beat_every
            self._beat(now)
        if not self.cut_off and clock.monotonic() - self._renewed_at > self.lease:
            self._cut(clock.monotonic() - self._renewed_at)
        if not self.cut_off and clock.monotonic() >= self._next_sweep and not self.engine.stopping.is_set():
            self._next_sweep = clock.monotonic() + self._sweep_every
            self.sweep()

    def handed_over(self) -> None:
        """Another node stopped cleanly (the journal's notification): its jobs are taken now, not at the next
        sweep. A notification of this node's own stop, or one heard while cut off, changes nothing."""
        if not self.shared or self.cut_off or self.engine.stopping.is_set():
            return
        self._next_sweep = self.engine.clock.monotonic() + self._sweep_every
        self.sweep()

    def _beat(self, before: float) -> None:
        if self.cut_off:
            self._come_back()
            return
        try:
            renewed: set[str] = self.store.beat(self.engine.clock.time())
        except JournalError as exc:
            if not self._beat_failing:
                self.engine.log.warning("node.heartbeat_failed", node=self.name, error=str(exc))
            self._beat_failing = True
            return
        self._beat_failing = False
        self._renewed_at = before
        self._changed_hands(renewed)

    def _changed_hands(self, renewed: set[str]) -> None:
        """Compare what the journal says this node owns with what it follows."""
        engine = self.engine
        followed = self._followed()
        lost = [job_id for job_id in followed - renewed if not engine.ledger.owes(job_id)]
        if lost:
            engine.log.warning("jobs.lost", node=self.name, count=len(lost), reason="another node has them now")
            for job_id in lost:
                self._forget(job_id)
        unfollowed = sorted(job_id for job_id in renewed - followed if not engine.ledger.owes(job_id))
        for job_id in unfollowed:
            job = engine.store.get(job_id)
            if job is not None and not job.final:
                engine.log.info("job.followed_again", job=job_id, request=job.name)
                self._adopt(job)

    def _followed(self) -> set[str]:
        """The jobs this node follows for the journal (`runwatch submit` jobs it adopted are nobody's lease)."""
        return {job.id for job in self.engine.book if job.inbox != recovery.SUBMIT_INBOX}

    def _cut(self, silent: float) -> None:
        """No renewal for a whole lease: every job is someone else's to take now."""
        engine = self.engine
        followed = sorted(self._followed())
        engine.log.error(
            "node.cut_off",
            node=self.name,
            seconds_without_journal=round(silent, 1),
            forgotten=len(followed),
            meanwhile="no new requests are taken and no create is sent; other nodes take this node's jobs over",
        )
        for job_id in followed:
            self._forget(job_id)
        self.cut_off = True

    def _come_back(self) -> None:
        """After a cut-off: what was kept is written, the node joins again and starts over from the journal."""
        engine = self.engine
        if not engine.ledger.flush():
            return
        try:
            self.join()
            jobs = self.take_own()
        except JournalError as exc:
            if not self._beat_failing:
                engine.log.warning("node.heartbeat_failed", node=self.name, error=str(exc))
            self._beat_failing = True
            return
        self._beat_failing = False
        self.cut_off = False
        for job in jobs:
            if job.id not in engine.book:
                self._adopt(job)
        engine.log.warning("node.returned", node=self.name, followed=len(jobs))

    def sweep(self) -> int:
        """Take over the jobs whose lease ran out; how many."""
        try:
            taken = self._take(mine_too=False)
        except JournalError as exc:
            self.engine.log.warning("node.takeover_failed", node=self.name, error=str(exc))
            return 0
        by_node: Counter[str] = Counter()
        for item in taken:
            if item.job.id in self.engine.book:
                continue
            self._adopt(item.job)
            by_node[item.from_node or "nobody"] += 1
        for from_node, count in sorted(by_node.items()):
            self.engine.log.warning("jobs.taken_over", node=self.name, from_node=from_node, count=count)
        return sum(by_node.values()) + self._orphans()

    def _orphans(self) -> int:
        """Claims of nodes gone between their rename and their record: their job dirs taken as new claims, the
        claim rows of renames that never happened given up (the file, still in the inbox, is claimed anew)."""
        engine = self.engine
        try:
            rows = self.store.orphan_claims(sorted(engine.inboxes))
            mine = [row for row in rows if self.store.adopt_claim(row.inbox, row.job_id)]
        except JournalError as exc:
            engine.log.warning("node.takeover_failed", node=self.name, error=str(exc))
            return 0
        taken = 0
        for name in sorted({row.inbox for row in mine}):
            inbox = engine.inboxes[name]
            ids = {row.job_id for row in mine if row.inbox == name}
            found = workarea.recover(inbox, only=ids)
            for row in mine:
                if row.inbox == name and row.job_id not in {d.name for d in found}:
                    self.store.unclaim(row.inbox, row.path, row.identity, row.job_id)
            taken += recovery.take_claims(engine, [(inbox, d) for d in found])
        if taken:
            engine.log.warning("jobs.taken_over", node=self.name, from_node="a node gone", claims=taken)
        return taken

    def _take(self, *, mine_too: bool) -> list[TakenOver]:
        inboxes = sorted(self.engine.inboxes)
        taken: list[TakenOver] = []
        while True:
            some = self.store.take_over(inboxes, TAKE_AT_ONCE, mine_too=mine_too)
            taken += some
            if len(some) < TAKE_AT_ONCE:
                return taken

    def _adopt(self, job: Job) -> None:
        try:
            self._here(job)
            recovery.resume(self.engine, job)
        except RunwatchError as exc:  # the job stays this node's; the next start (or a takeover) tries again
            self.engine.log.exception("engine.error", kind="takeover", job=job.id, error=repr(exc))

    def _here(self, job: Job) -> None:
        """The job's folder as this machine reaches it: a node that mounts the share elsewhere recorded its own
        path. Found by the job id in this node's work area of the job's inbox."""
        inbox = self.engine.inboxes.get(job.inbox)
        if inbox is None or not job.job_dir or not job.request_path or Path(job.job_dir).exists():
            return
        found = find_record(inbox, job.id)
        if found is None:
            return
        with contextlib.suppress(ValueError):
            request = found / Path(job.request_path).relative_to(job.job_dir)
            self.engine.store.update(job, job_dir=str(found), request_path=str(request))

    def _forget(self, job_id: str) -> None:
        engine = self.engine
        job = engine.book.job(job_id)
        if job is None:
            return
        engine.book.untrack(job)
        engine.book.ready.discard(job_id)
        engine.proving.discard(job_id)
        engine.forget_waiting(job_id)
        # Its create's answer, if one is on its way, is no longer taken here: nothing stays reserved for it on
        # this node's balance (the journal counts the create for every node).
        engine.money.unreserve(job_id)
        engine.money.landed(job_id)


# -- runwatch nodes -----------------------------------------------------------------------------------


def nodes_command(config_file: str | None = None, *, as_json: bool = False, out: TextIO | None = None) -> int:
    """``runwatch nodes``: the nodes of the configured journal (with SQLite, the one local node)."""
    from runwatch.ops import EXIT_OK, load_required_config
    from runwatch.store import open_store

    out = out or sys.stdout
    config = load_required_config(config_file)
    journal = open_store(config)
    try:
        rows = journal.nodes() if config.state.database is not None else [_local_node(config, journal.counts())]
    finally:
        journal.close()
    nodes_table(rows, config.node.lease, out, as_json=as_json)
    return EXIT_OK


def _local_node(config: Config, counts: dict[str, int]) -> NodeRow:
    """The one node of a SQLite journal: this machine, as its state directory shows it."""
    from runwatch.health import HEARTBEAT_FILE
    from runwatch.ops import daemon_holder

    holder = daemon_holder(config.state.dir)
    try:
        age = max(0.0, time.time() - (config.state.dir / HEARTBEAT_FILE).stat().st_mtime) if holder else _UNKNOWN
    except OSError:
        age = _UNKNOWN
    pid = holder.rsplit(" ", 1)[-1] if holder else ""
    return NodeRow(
        name=config.node.name,
        host=socket.gethostname(),
        pid=int(pid) if pid.isdigit() else 0,
        version=__version__,
        started_at="",
        heartbeat_age=age,
        clock_offset=None,
        stopped=holder is None,
        jobs=sum(n for state, n in counts.items() if state in ACTIVE),
    )


def nodes_table(rows: Sequence[NodeRow], lease: float, out: TextIO, *, as_json: bool = False) -> None:
    """The nodes, their last heartbeat (age by the journal's clock), the jobs they own and whether they run."""
    if as_json:
        json.dump({"nodes": [_node_json(row, lease) for row in rows]}, out, indent=2)
        out.write("\n")
        return
    if not rows:
        out.write("no node has joined this journal yet\n")
        return
    header = ("NODE", "HOST", "PID", "HEARTBEAT", "JOBS", "CLOCK", "STATE")
    lines = [header] + [
        (
            row.name,
            row.host,
            str(row.pid) if row.pid else "-",
            "-" if math.isnan(row.heartbeat_age) else f"{row.heartbeat_age:.0f} s ago",
            str(row.jobs),
            "-" if row.clock_offset is None else f"{row.clock_offset:+.1f} s",
            _state(row, lease),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        out.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() + "\n")


def _state(row: NodeRow, lease: float) -> str:
    if row.stopped:
        return "stopped"
    if math.isnan(row.heartbeat_age):  # no heartbeat known (a local node)
        return "running"
    return "running" if row.heartbeat_age <= lease else "silent"


def _node_json(row: NodeRow, lease: float) -> dict[str, Any]:
    return {
        "name": row.name,
        "host": row.host,
        "pid": row.pid or None,
        "version": row.version,
        "started_at": row.started_at or None,
        "heartbeat_age": None if math.isnan(row.heartbeat_age) else round(row.heartbeat_age, 1),
        "clock_offset": row.clock_offset,
        "jobs": row.jobs,
        "state": _state(row, lease),
    }
