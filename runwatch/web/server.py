"""The HTTP server's life: built with the daemon, listening from its start to its stop, on a thread of its own.

The socket is bound in :meth:`WebServer.start`, on the daemon's thread. A port already taken is logged as an
error and the daemon goes on without the server: the folders keep working, and monitoring notices the silent
endpoint. uvicorn then serves the socket from its own thread and event loop (no reload, no workers, no signal
handlers: the daemon owns the signals); idle, that loop only wakes a few times a second. The server reads
through a journal connection of its own, so a page of the API never waits behind the engine's durable writes
(SQLite's WAL lets readers through).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import uvicorn

from runwatch.store import Store, open_store
from runwatch.web.app import STALE_LOOP, View, make_app
from runwatch.web.board import Board, InboxHealth, health_of
from runwatch.web.live import Live
from runwatch.web.metrics import Metrics, Sources
from runwatch.web.pages import Dash
from runwatch.web.security import Security, load_token
from runwatch.web.session import Sessions

if TYPE_CHECKING:
    from runwatch.daemon import Daemon

__all__ = ["WebServer"]

_HOUSEKEEPING = 1.0  # seconds between two looks of the server's loop at its stop flag and the clock
_STOP_WAIT = 5  # seconds a stop waits for requests in flight (a command waiting for its answer)


class _Server(uvicorn.Server):
    """uvicorn's server with its housekeeping (the Date header, the stop flag) once a second instead of ten
    times: an idle daemon stays idle. A stop wakes it at once."""

    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        while not await self.on_tick(0):  # 0: a count on_tick takes as "refresh the Date header"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _HOUSEKEEPING)

    def exit_soon(self) -> None:
        """From any thread."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(wake.set)


class WebServer:
    """The API, health and metrics of one daemon."""

    def __init__(self, daemon: Daemon, env: Mapping[str, str] = os.environ) -> None:
        self.daemon = daemon
        self.http = daemon.config.http
        self.token = load_token(daemon.config, env)  # a config error (no token beyond loopback) stops the start
        self.store: Store | None = None
        engine = daemon.engine
        self.sources = Sources(
            store=daemon.journal,  # replaced by the server's own connection at start()
            paused=lambda: {w.inbox.name: w.paused for w in daemon.watchers},
            balance=engine.money.balance,
            followed=lambda: list(engine.jobs.values()),  # one C-level copy: safe while the engine changes it
            notifications=lambda: daemon.notifier.tallies() if daemon.notifier is not None else [],
        )
        self.metrics = Metrics(self.sources, book=engine.book)
        engine.book.listeners.append(self.metrics.job_entered)
        self.live = Live(lambda: self.sources.store, lambda job_id: engine.jobs.get(job_id))
        engine.book.listeners.append(self.live.job_entered)
        daemon.api.observer = self.metrics.api_call
        self.port = self.http.port
        self.stale_after = STALE_LOOP  # seconds without a turn of the main loop before /healthz says 503
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = self.http.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.http.host else socket.AF_INET
        # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without
        # it every answer waits 40 ms for the client's delayed ACK (headers and body are two writes).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.http.host, self.http.port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            # The folders matter more than the server: they go on, and the log says loudly what is missing.
            self.daemon.log.error(
                "http.unavailable",
                listen=self.http.listen,
                error=exc.strerror or str(exc),
                hint="another program holds the port, or the address is not this machine's; change [http] listen "
                '(or set it to "" to switch the server off) and restart',
            )
            return
        self.port = sock.getsockname()[1]
        self.store = store = open_store(self.daemon.config)
        self.sources.store = store
        view = View(
            store=store,
            metrics=self.metrics,
            security=Security.of(self.http, self.port, self.token),
            turned_at=lambda: self.daemon.turned_at,
            problems=self._problems,
            stale_after=self.stale_after,
            dash=Dash(
                board=Board(
                    inboxes=self._inboxes,
                    budget=lambda: self.daemon.config.budget,
                    organization=self.daemon.engine.money.organization,
                    contact=self.metrics.contact,
                ),
                sessions=Sessions(self.token, self.port),
                live=self.live,
                catalog=self.daemon.catalog,
            ),
        )
        config = uvicorn.Config(
            make_app(view),
            log_config=None,
            log_level=logging.WARNING,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=_STOP_WAIT,
            server_header=False,
        )
        self._server = server = _Server(config)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="runwatch-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10.0
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.daemon.log.info("http.listening", url=self.url, token=self.token is not None)

    def _inboxes(self) -> list[InboxHealth]:
        return [health_of(w.inbox, w.paused, w.mode) for w in self.daemon.watchers]

    def _problems(self) -> list[str]:
        """Why the daemon is not ready: not started yet, an inbox paused, a disk refusing writes, Runway silent."""
        daemon = self.daemon
        problems = [] if daemon.ready else ["starting: the inboxes are not all watched yet"]
        problems += [
            f"inbox {w.inbox.name!r} is paused: {w.inbox.path} is missing" for w in daemon.watchers if w.paused
        ]
        problems += daemon.engine.health()
        silent = self.metrics.contact.problem()
        if silent:
            problems.append(silent)
        return problems

    def stop(self) -> None:
        self.live.close()  # live pages end within a tick, so uvicorn's wait for open answers ends too
        if self._server is not None:
            self._server.exit_soon()
        if self._thread is not None:
            self._thread.join(_STOP_WAIT + 2.0)
        if self.store is not None:
            self.store.close()
            self.store = None
