"""Wiring: the one place that builds real adapters (HTTP client, boto3 client, watchdog observers),
hands them to the engine, and runs the loop until told to stop.

``run --once`` processes everything waiting, waits for every task it started, then returns.
SIGTERM (or SIGINT) stops taking new requests, waits up to ``[daemon] stop_timeout`` for creates in flight (so
their task ids are recorded), abandons uploads and downloads, and returns 0; tasks keep running at Runway and
are followed again at the next start. A second signal stops at once.

Under systemd (``Type=notify``, see ``runwatch.notify``): READY=1 once every inbox is watched, STATUS= with the
queue counts (led by ``UNHEALTHY:`` and :meth:`Engine.health`'s reasons while a disk refuses writes),
WATCHDOG=1 from the main loop (a hung loop stops pinging and systemd restarts the service),
STOPPING=1 on the way out. SIGHUP reloads the config file on the main loop: inboxes come and go while the
tasks of a removed inbox are followed to their end, and a broken file leaves the running config in force.

With a PostgreSQL journal the daemon is a node (``[node] name``, see ``runwatch.nodes``): it joins at start (a
live node of the same name makes it exit 78), claims through the journal, and a stop hands its jobs over.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import structlog

from runwatch import notify
from runwatch.api import RunwayClient
from runwatch.catalog import load_catalog
from runwatch.clock import now_iso
from runwatch.config import Config, InboxConfig, load_config
from runwatch.errors import ConfigError, JournalError, RunwatchError, StartupError
from runwatch.health import Heartbeat
from runwatch.inbox import Claimed, InboxWatcher, recover
from runwatch.jobs.engine import Engine
from runwatch.jobs.job import Job
from runwatch.jobs.states import IN_FLIGHT, State
from runwatch.media import DataTransport, RunwayTransport, S3Transport
from runwatch.notifications import Notifier
from runwatch.store import StateLock, Store, open_store
from runwatch.store.opening import sqlite_path
from runwatch.store.protocol import Listening
from runwatch.web.server import WebServer
from runwatch.workrecords import claimed_anything, prepare_records

__all__ = ["Daemon", "run_daemon", "status_line"]

_FIRST_LOOK = 5.0  # seconds start-up waits for the first scan of the inboxes before READY=1 regardless
_STATUS_EVERY = 1.0  # at most one STATUS= per this many seconds: systemd need not hear every poll
_STEP = 0.5  # seconds one turn of the main loop may wait when idle (work wakes it at once)
# Settings held by objects built once at start (HTTP client, S3 transport, thread pool, state lock):
# a reload reports a change to them and keeps the running value.
_RESTART_ONLY: dict[str, tuple[str, ...]] = {
    "runway": ("base_url", "api_version", "timeout", "api_key_file"),
    "scheduler": ("max_uploads", "max_downloads"),
}
_RESTART_ONLY_SECTIONS = ("state", "s3", "http", "notify", "node")


def _s3_client(config: Config) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    assert config.s3 is not None
    style = config.s3.addressing_style
    return boto3.client(
        "s3",
        region_name=config.s3.region,
        endpoint_url=config.s3.endpoint_url,
        config=BotoConfig(
            signature_version="s3v4", s3={"addressing_style": style}, retries={"max_attempts": 5, "mode": "standard"}
        ),
    )


class Daemon:
    """One runwatch daemon: a state directory, a journal, an engine and a watcher per inbox."""

    def __init__(self, config: Config, *, api_key: str, log: Any = None, s3_client: Any = None) -> None:
        self.config = config
        self.log = log or structlog.get_logger("runwatch")
        if config.state.database is not None:  # several nodes log to one place: every line names its node
            self.log = self.log.bind(node=config.node.name)
        os.umask(config.umask)  # first: the state directory and its lock file are created under it too
        self.lock = StateLock(config.state.dir)
        try:
            self.lock.acquire()
        except OSError as exc:
            raise StartupError(_state_dir_problem(config.state.dir, exc)) from exc
        except JournalError as exc:
            raise StartupError(f"{exc}: stop the other one first (systemctl stop runwatch)") from exc
        try:
            self.journal = open_journal(config)
            timeout = httpx.Timeout(config.runway.timeout, connect=10.0)
            limits = httpx.Limits(max_connections=100, max_keepalive_connections=40)
            self.http = httpx.Client(timeout=timeout, limits=limits, follow_redirects=False)
            self.api = RunwayClient(
                self.http, base_url=config.runway.base_url, api_key=api_key, version=config.runway.api_version
            )
            transports: dict[str, Any] = {"runway": RunwayTransport(self.api, self.http), "data": DataTransport()}
            if config.s3 is not None:
                transports["s3"] = S3Transport(config.s3, s3_client or _s3_client(config))
            self.catalog = load_catalog()
            self.engine = Engine(config, self.journal, self.api, transports, self.http, self.catalog, log=self.log)
            try:  # among the nodes of a shared journal: refused while a live node has this name
                self.engine.node.join()
            except JournalError as exc:
                raise StartupError(str(exc)) from exc
            self._watching = {inbox.name: self._watcher(inbox, config) for inbox in config.inboxes}
            self.web = WebServer(self) if config.http.enabled else None
            self.notifier = (
                Notifier(config.notify, log=self.log, secrets=(api_key,), source=str(config.path or "runwatch"))
                if config.notify
                else None
            )
        except BaseException:
            self.lock.release()
            raise
        # Inboxes taken out of the config by a reload whose jobs are still followed: their configs stay in
        # the engine's map (status files, outputs and done/failed records still go to their folders).
        self._retired: set[str] = set()
        self._reload_failed = False
        self._status_sent: str | None = None
        self._status_at = -_STATUS_EVERY
        self._ping_every: float | None = None  # set by run() from $WATCHDOG_USEC
        self._next_ping = 0.0
        self._heartbeat = Heartbeat(config.state.dir)  # what `runwatch health` reads (a container's HEALTHCHECK)
        self._started_at = now_iso()  # set again by start(): what ends after it counts for --once
        self.turned_at = time.monotonic()  # the main loop's last turn, for /healthz
        self.ready = False  # every inbox watched (READY=1 sent)
        self.listener: Listening | None = None  # a shared journal's notifications of new commands

    @property
    def watchers(self) -> list[InboxWatcher]:
        return list(self._watching.values())

    def _watcher(self, inbox: InboxConfig, config: Config) -> InboxWatcher:
        return InboxWatcher(
            inbox,
            deliver=self.engine.deliver,
            catalog=self.catalog,
            unknown_models=config.runway.unknown_models,
            rescan=config.scheduler.rescan,
            log=self.log,
            claims=self.journal if self.engine.node.shared else None,
        )

    def start(self) -> None:
        if self.web is not None:
            self.web.start()
        for inbox in self.config.inboxes:
            prepare_records(inbox)
        self._started_at = now_iso()
        self.engine.load_limits()
        self.listener = self.journal.listen_commands(self.engine.wake_commands, self.log, self.engine.wake_nodes)
        if self.notifier is not None:
            self.notifier.start(self.engine, lambda: self.watchers)
        claimed = [(inbox, d) for inbox in self.config.inboxes for d in recover(inbox, skip=self._elsewhere(inbox))]
        self.engine.recover(claimed)
        for watcher in self._watching.values():
            watcher.start()
        self._first_looks(_FIRST_LOOK)
        self.log.info("daemon.started", inboxes=len(self._watching), modes=[w.mode for w in self._watching.values()])
        self._publish_status(force=True)
        self.ready = True
        notify.ready()

    def _elsewhere(self, inbox: InboxConfig) -> set[str]:
        """Job dirs of the inbox's work area that other live nodes are claiming: not this node's to settle."""
        return self.journal.claims_elsewhere(inbox.name) if self.engine.node.shared else set()

    def _first_looks(self, timeout: float) -> None:
        """Wait (a little) until each watcher has been through its first scan, so READY=1 means "looked".

        The observers are already watching when ``start()`` returns; this only lets files that were waiting
        before the start be seen first. A missing folder (paused) or a slow share does not hold READY back.
        """
        deadline = time.monotonic() + timeout
        for watcher in self._watching.values():
            while not (watcher.paused or watcher.pending() or watcher.wait_idle(0.05)):
                if time.monotonic() >= deadline:
                    return

    def run(
        self, stop: threading.Event, once: bool = False, on_tick: Any = None, reload: threading.Event | None = None
    ) -> int:
        """The loop. Returns the exit code (``--once``: 1 if any request of this run did not succeed).

        ``reload`` is set by the SIGHUP handler; the reload itself happens here, between two engine steps,
        so the engine's one-writer rule holds and no watcher is changed under a running claim.
        """
        started_seq = max((j.seq for j in self.journal.jobs(limit=1)), default=0)
        started_at = self._started_at
        interval = notify.watchdog_interval()
        self._ping_every = interval / 2 if interval else None
        step = min(_STEP, self._ping_every / 2) if self._ping_every else _STEP
        try:
            while not stop.is_set():
                if reload is not None and reload.is_set():
                    reload.clear()
                    self.reload()
                self.engine.step(step)
                self._retire()
                if on_tick is not None:
                    on_tick(self)
                now = self.turned_at = time.monotonic()
                self._keepalive(now)
                self._publish_status(now=now)
                if once and all(w.wait_idle(0) for w in self._watching.values()) and self.engine.idle():
                    break
            if not once:
                return 0
            # Read before close() below shuts the journal.
            # Requests taken in this run, and older ones that ended in it (followed again after a restart).
            ended = [
                j
                for j in self.journal.jobs(limit=100_000)
                if j.seq > started_seq or (j.finished_at or "") >= started_at
            ]
            return self._summary(ended)
        finally:
            self.close()

    def _summary(self, ended: list[Job]) -> int:
        """``--once``: one line for the run, and its exit status: 1 when a request of this run was rejected,
        failed or needs attention; 0 otherwise (held requests wait for approval or a budget, and are named)."""
        counts: dict[str, int] = {}
        for job in ended:
            counts[job.state] = counts.get(job.state, 0) + 1
        bad = [j.name for j in ended if j.state in (State.REJECTED, State.FAILED, State.NEEDS_ATTENTION)]
        held = [j.name for j in ended if j.state == State.HELD]
        credits = sum(j.credits or 0.0 for j in ended)
        log = self.log.warning if bad else self.log.info
        log("daemon.summary", requests=len(ended), states=counts, credits=credits, not_done=bad, held=held)
        return 1 if bad else 0

    def close(self) -> None:
        notify.stopping()
        if self.web is not None:
            self.web.stop()
        at_runway = sum(1 for j in self.engine.jobs.values() if j.task_id and j.state in IN_FLIGHT)
        notify.status(f"stopping; {at_runway} tasks continue at Runway and are followed at the next start")
        self.log.info("daemon.stopping")
        for watcher in self._watching.values():
            watcher.stop()
        self.engine.shutdown(self.config.daemon.stop_timeout)
        if self.notifier is not None:
            self.notifier.close()
        self.http.close()
        if self.listener is not None:
            self.listener.close()
        self.journal.close()
        self.lock.release()
        self.log.info("daemon.stopped")

    # -- systemd status ---------------------------------------------------------------------------

    def _keepalive(self, now: float | None = None) -> None:
        """WATCHDOG=1 and the heartbeat file when due. Called only from the main loop's thread: a loop that hangs
        stops pinging."""
        now = time.monotonic() if now is None else now
        self._heartbeat.beat(now)
        if self._ping_every is None:
            return
        if now >= self._next_ping:
            notify.watchdog()
            self._next_ping = now + self._ping_every

    def _publish_status(self, *, now: float | None = None, force: bool = False) -> None:
        now = time.monotonic() if now is None else now
        if not force and now - self._status_at < _STATUS_EVERY:
            return
        watchers = self._watching.values()
        text = status_line(
            self.engine.jobs.values(),
            waiting_files=sum(w.pending() for w in watchers),
            watched=sum(not w.paused for w in watchers),
            paused=sum(w.paused for w in watchers),
        )
        if self._reload_failed:
            text += "; the last reload failed, see the log"
        if self.engine.node.shared:
            text = f"node {self.engine.node.name}: {text}"
        trouble = self.engine.health()
        if trouble:  # what systemctl status shows first: the daemon is running, but not well
            text = "UNHEALTHY: " + "; ".join(trouble) + "; " + text
        self._status_at = now  # counted every _STATUS_EVERY, sent only when it changed
        if text != self._status_sent:
            notify.status(text)
            self._status_sent = text

    # -- reload -----------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Read the config file again and apply what can change while running; False if it was refused."""
        notify.reloading()
        try:
            ok = self._reload()
        except Exception as exc:  # a bug in a reload must not end the daemon; the old config stays
            self.log.exception("daemon.reload_failed", error=repr(exc), kept="the previous configuration")
            ok = False
        self._reload_failed = not ok
        self._publish_status(force=True)
        notify.ready()  # ends the reload for systemd, whether it was applied or refused
        return ok

    def _reload(self) -> bool:
        path = self.config.path
        if path is None:
            self.log.error(
                "daemon.reload_failed",
                error="the configuration was not read from a file",
                kept="the previous configuration",
            )
            return False
        self.log.info("daemon.reloading", config=str(path))
        try:
            new = load_config(path)
        except ConfigError as exc:
            self.log.error(
                "daemon.reload_failed",
                config=str(path),
                problems=[str(p) for p in exc.problems],
                kept="the previous configuration",
            )
            return False
        new, ignored = keep_restart_settings(self.config, new)
        if ignored:
            self.log.warning(
                "daemon.reload_needs_restart",
                settings=ignored,
                hint="these keep their running values until runwatch is restarted",
            )
        running = self.config
        old = {inbox.name: inbox for inbox in running.inboxes}
        wanted = {inbox.name: inbox for inbox in new.inboxes}
        # Watchers take these at construction: a change restarts every watcher (a restart is a rescan).
        params_changed = (new.runway.unknown_models, new.scheduler.rescan) != (
            running.runway.unknown_models,
            running.scheduler.rescan,
        )
        removed = sorted(old.keys() - wanted.keys())
        added = sorted(wanted.keys() - old.keys())
        changed = sorted(n for n in wanted.keys() & old.keys() if wanted[n] != old[n] or params_changed)
        for name in removed:
            self._watching.pop(name).stop()
            self._keepalive()  # stopping a watcher may take seconds; it is progress, not a hang
            self._retired.add(name)  # its config stays in engine.inboxes until its jobs have ended
            self.log.info("inbox.removed", inbox=name, path=str(old[name].path))
        applied = dict(wanted)
        failed: list[str] = []
        for name in added + changed:
            if name in changed:
                self._watching.pop(name).stop()
            if self._watch(wanted[name], new, adopt=name in added):
                self.log.info(
                    "inbox.added" if name in added else "inbox.changed",
                    inbox=name,
                    path=str(wanted[name].path),
                    mode=self._watching[name].mode,
                )
                continue
            failed.append(name)
            del applied[name]  # not applied, so the next reload tries it again
            if name in changed:  # back to the settings that worked
                applied[name] = old[name]
                self._watch(old[name], running, adopt=False)
        self.config = dataclasses.replace(new, inboxes=tuple(applied[i.name] for i in new.inboxes if i.name in applied))
        self.engine.config = self.config
        os.umask(self.config.umask)
        self.log.info(
            "daemon.reloaded",
            config=str(path),
            added=[n for n in added if n not in failed],
            removed=removed,
            changed=[n for n in changed if n not in failed],
            failed=failed,
        )
        return not failed

    def _watch(self, inbox: InboxConfig, config: Config, *, adopt: bool) -> bool:
        """Start watching ``inbox`` (after taking over its orphaned claims when ``adopt``); False if it cannot be."""
        try:
            prepare_records(inbox)
            self.engine.inboxes[inbox.name] = inbox
            self._retired.discard(inbox.name)
            if adopt:  # before the watcher starts, or a fresh claim could be taken twice
                self._adopt_claims(inbox)
            watcher = self._watcher(inbox, config)
            watcher.start()
        except (OSError, RunwatchError) as exc:
            # Typically a folder outside the unit's ReadWritePaths=: the rest of the reload still applies.
            self.log.error("inbox.unusable", inbox=inbox.name, path=str(inbox.path), error=str(exc))
            self._retired.add(inbox.name)  # adopted jobs, if any, are followed to their end
            return False
        finally:
            self._keepalive()
        self._watching[inbox.name] = watcher
        return True

    def _adopt_claims(self, inbox: InboxConfig) -> None:
        """Claims left in a (re-)added inbox's work area that no job knows: taken as at a start."""
        known = self.journal.known_dirs() | {j.job_dir for j in self.engine.jobs.values() if j.job_dir}
        shared = self.engine.node.shared
        for job_dir in recover(inbox, skip=self._elsewhere(inbox)):
            if str(job_dir) in known or (shared and not self.journal.adopt_claim(inbox.name, job_dir.name)):
                continue
            files = sorted(p for p in job_dir.iterdir() if p.suffix in (".json", ".toml") and p.is_file())
            if files:
                self.log.info("job.recovered_claim", job_dir=str(job_dir))
                self.engine.deliver(
                    Claimed(
                        job_dir.name,
                        inbox.name,
                        job_dir,
                        files[0],
                        files[0].stem,
                        "json" if files[0].suffix == ".json" else "toml",
                        False,
                    )
                )

    def _retire(self) -> None:
        """Forget a removed inbox once none of its jobs is left and nothing it delivered is still queued."""
        if not self._retired or not self.engine.events.empty():
            return
        busy = {job.inbox for job in self.engine.jobs.values()}
        for name in sorted(self._retired - busy):
            self._retired.discard(name)
            self.engine.inboxes.pop(name, None)
            self.log.info("inbox.retired", inbox=name)


def _prepare(inbox: InboxConfig) -> None:
    if inbox.path.is_dir():
        for folder in (inbox.work / "jobs", inbox.work / "done", inbox.work / "failed"):
            folder.mkdir(parents=True, exist_ok=True)


def _state_dir_problem(state: Path, exc: OSError) -> str:
    why = exc.strerror or str(exc)
    return (
        f"the state directory {state} cannot be used ({why}): create it writable for the user runwatch runs as "
        f"(e.g. `install -d -o USER {state}`), or point `[state] dir` elsewhere; under systemd StateDirectory= "
        "makes it"
    )


def open_journal(config: Config) -> Store:
    """The journal, checked against the work area: a SQLite journal that is missing, empty or unreadable while
    the work area holds requests taken before is refused (they might be sent again), with the way out."""
    taken = [inbox.name for inbox in config.inboxes if inbox.path.is_dir() and claimed_anything(inbox)]
    fix = (
        "restore the journal from a backup, or rebuild it from the work area with `runwatch journal rebuild` "
        "(README: What runwatch does when …)"
    )
    if config.state.database is None:
        path = sqlite_path(config)
        try:
            lost = not path.exists() or path.stat().st_size == 0
        except OSError as exc:
            raise StartupError(_state_dir_problem(config.state.dir, exc)) from exc
        if lost and taken:
            raise StartupError(
                f"the journal {path} is {'empty' if path.exists() else 'missing'}, but the work area of inbox "
                f"{', '.join(repr(t) for t in taken)} holds requests taken before; nothing is sent until it is "
                f"back: {fix}"
            )
    try:
        return open_store(config, daemon=True)
    except JournalError as exc:
        raise StartupError(f"{exc}; {fix}" if taken else str(exc)) from exc


def status_line(jobs: Iterable[Job], *, waiting_files: int, watched: int, paused: int) -> str:
    """The ``STATUS=`` text: "3 waiting, 2 running, 1 held; inboxes: 2 watched, 0 paused".

    Waiting counts requests accepted but not yet sent and files seen in an inbox but not yet taken; running,
    everything between the first upload and the last download.
    """
    waiting, running, held = waiting_files, 0, 0
    for job in jobs:
        if job.state == State.ACCEPTED:
            waiting += 1
        elif job.state in IN_FLIGHT or job.state == State.DOWNLOADING:
            running += 1
        elif job.state == State.HELD:
            held += 1
    return f"{waiting} waiting, {running} running, {held} held; inboxes: {watched} watched, {paused} paused"


def keep_restart_settings(running: Config, new: Config) -> tuple[Config, list[str]]:
    """``new`` with the settings that need a restart put back to their running values, and their names."""
    ignored: list[str] = []
    replaced: dict[str, Any] = {}
    for section in _RESTART_ONLY_SECTIONS:
        if getattr(running, section) != getattr(new, section):
            ignored.append(section)
            replaced[section] = getattr(running, section)
    for section, keys in _RESTART_ONLY.items():
        was, now = getattr(running, section), getattr(new, section)
        kept = {key: getattr(was, key) for key in keys if getattr(was, key) != getattr(now, key)}
        ignored += [f"{section}.{key}" for key in kept]
        if kept:
            replaced[section] = dataclasses.replace(now, **kept)
    return dataclasses.replace(new, **replaced), ignored


def run_daemon(config: Config, *, api_key: str, once: bool) -> int:
    """``runwatch run``: SIGTERM and SIGINT stop, SIGHUP reloads; both only set a flag for the main loop."""
    stop = threading.Event()
    reload = threading.Event()
    hurry = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():  # a second signal: stop at once, without waiting for creates in flight
            hurry.set()
        stop.set()

    def on_reload(signum: int, frame: FrameType | None) -> None:
        reload.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_reload)
    daemon = Daemon(config, api_key=api_key)
    daemon.engine.hurry = hurry
    daemon.start()
    code = daemon.run(stop, once=once, reload=reload)
    left = daemon.engine.runner.in_flight()
    if left:
        # Work abandoned on the pool (an upload, a download, a create past stop_timeout) would keep the process
        # alive until it ends: everything worth keeping is committed, so leave now. The next start resumes it.
        daemon.log.info("daemon.abandoned_work", calls=left)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
