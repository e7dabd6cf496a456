"""Wiring: the one place that builds real adapters (HTTP client, boto3 client, watchdog observers),
hands them to the engine, and runs the loop until told to stop.

``run --once`` processes everything waiting, waits for every task it started, then returns.
SIGTERM stops taking new requests, waits a few seconds for creates in flight (so their task ids are
recorded), and returns; tasks keep running at Runway and are followed again at the next start.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

import httpx
import structlog

from runwatch.api import RunwayClient
from runwatch.catalog import load_catalog
from runwatch.config import Config
from runwatch.engine import Engine
from runwatch.errors import ConfigError, Problem
from runwatch.inbox import InboxWatcher, recover
from runwatch.journal import Journal, StateLock
from runwatch.media import DataTransport, RunwayTransport, S3Transport

__all__ = ["Daemon"]


def _s3_client(config: Config) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    assert config.s3 is not None
    style = config.s3.addressing_style
    return boto3.client(
        "s3", region_name=config.s3.region, endpoint_url=config.s3.endpoint_url,
        config=BotoConfig(signature_version="s3v4", s3={"addressing_style": style},
                          retries={"max_attempts": 5, "mode": "standard"}),
    )


def refuse_unenforced(config: Config) -> None:
    """Budgets are not enforced by this version: refuse to start rather than let anyone believe they are."""
    problems = []
    for key in ("daily", "monthly"):
        if getattr(config.budget, key) is not None:
            problems.append(Problem(f"budget.{key}", "budgets are not enforced by this version of runwatch; "
                                    "remove the key (per-request max_credits and approve_above are enforced)"))
    for i, inbox in enumerate(config.inboxes):
        if inbox.budget_daily is not None:
            problems.append(Problem(f"inbox[{i}].budget_daily", "budgets are not enforced by this version of "
                                    "runwatch; remove the key"))
    if problems:
        raise ConfigError(str(config.path or "configuration"), problems)


class Daemon:
    """One runwatch daemon: a state directory, a journal, an engine and a watcher per inbox."""

    def __init__(self, config: Config, *, api_key: str, log: Any = None, s3_client: Any = None) -> None:
        refuse_unenforced(config)
        self.config = config
        self.log = log or structlog.get_logger("runwatch")
        self.lock = StateLock(config.state.dir)
        self.lock.acquire()
        try:
            os.umask(config.umask)
            self.journal = Journal(config.state.dir / "journal.sqlite3")
            timeout = httpx.Timeout(config.runway.timeout, connect=10.0)
            limits = httpx.Limits(max_connections=100, max_keepalive_connections=40)
            self.http = httpx.Client(timeout=timeout, limits=limits, follow_redirects=False)
            self.api = RunwayClient(self.http, base_url=config.runway.base_url, api_key=api_key,
                                    version=config.runway.api_version)
            transports: dict[str, Any] = {"runway": RunwayTransport(self.api, self.http), "data": DataTransport()}
            if config.s3 is not None:
                transports["s3"] = S3Transport(config.s3, s3_client or _s3_client(config))
            self.catalog = load_catalog()
            self.engine = Engine(config, self.journal, self.api, transports, self.http, self.catalog, log=self.log)
            self.watchers = [
                InboxWatcher(inbox, deliver=self.engine.deliver, catalog=self.catalog,
                             unknown_models=config.runway.unknown_models, rescan=config.scheduler.rescan,
                             log=self.log)
                for inbox in config.inboxes
            ]
        except BaseException:
            self.lock.release()
            raise

    def start(self) -> None:
        for inbox in self.config.inboxes:
            for folder in (inbox.work / "jobs", inbox.work / "done", inbox.work / "failed"):
                if inbox.path.is_dir():
                    folder.mkdir(parents=True, exist_ok=True)
        self.engine.load_limits()
        self.engine.recover([(inbox, d) for inbox in self.config.inboxes for d in recover(inbox)])
        for watcher in self.watchers:
            watcher.start()
        self.log.info("daemon.started", inboxes=len(self.watchers),
                      modes=[w.mode for w in self.watchers])

    def run(self, stop: threading.Event, once: bool = False, on_tick: Any = None) -> int:
        """The loop. Returns the exit code (``--once``: 1 if any request of this run did not succeed)."""
        started_seq = max((j.seq for j in self.journal.jobs(limit=1)), default=0)
        try:
            while not stop.is_set():
                self.engine.step(0.2)
                if on_tick is not None:
                    on_tick(self)
                if once and all(w.wait_idle(0) for w in self.watchers) and self.engine.idle():
                    break
        finally:
            self.close()
        if not once:
            return 0
        ended = [j for j in self.journal.jobs(limit=100_000) if j.seq > started_seq]
        return 0 if all(j.state in ("succeeded", "cancelled", "held") for j in ended) else 1

    def close(self) -> None:
        self.log.info("daemon.stopping")
        for watcher in self.watchers:
            watcher.stop()
        self.engine.shutdown()
        self.http.close()
        self.journal.close()
        self.lock.release()
        self.log.info("daemon.stopped")


def run_daemon(config: Config, *, api_key: str, once: bool) -> int:
    """``runwatch run``: signals wired to a stop event."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    daemon = Daemon(config, api_key=api_key)
    daemon.start()
    return daemon.run(stop, once=once)
