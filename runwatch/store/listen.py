"""Commands from anywhere and nodes that stop, heard at once: ``LISTEN`` on a connection of the daemon's own.

Two channels:

- ``runwatch_commands``: ``PostgresJournal.add_command`` sends ``NOTIFY runwatch_commands, '<id>'`` in the
  transaction that adds the command, so the notification arrives when the command is committed and readable,
  from any machine; it wakes the engine's command check (``wake``).
- ``runwatch_nodes``: a node that stops cleanly sends ``NOTIFY runwatch_nodes, '<name>'`` in the transaction that
  ends its leases; it wakes the engine's takeover sweep (``nodes``), so its jobs are taken at once rather than at
  the next sweep.

A notification only wakes; the tables stay the one truth, read as before, so a notification lost to a restart
of the database costs nothing but time: the daemon's poll and sweep still read them, and every (re)connection
wakes both once for what happened meanwhile.

The connection is not the pool's: a LISTEN belongs to one session, and a pooled connection is handed to other
callers. When the database goes away the listener connects again with a back-off (0.5 s doubling to 30 s).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg

__all__ = ["COMMANDS_CHANNEL", "NODES_CHANNEL", "CommandListener"]

COMMANDS_CHANNEL = "runwatch_commands"
NODES_CHANNEL = "runwatch_nodes"
_TURN = 0.5  # seconds a wait for notifications lasts before the stop flag is looked at
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 30.0


class CommandListener:
    """A thread that calls ``wake`` whenever a command is added to the journal, and ``nodes`` whenever a node
    stops cleanly; :meth:`close` stops it."""

    def __init__(
        self,
        conninfo: str,
        where: str,
        wake: Callable[[], None],
        log: Any,
        nodes: Callable[[], None] | None = None,
    ) -> None:
        self._conninfo = conninfo  # may hold the credential's password: never logged
        self.where = where  # the configured URL, which holds none
        self._wakes = {COMMANDS_CHANNEL: wake} | ({NODES_CHANNEL: nodes} if nodes is not None else {})
        self.log = log
        self._stop = threading.Event()
        self.connected = threading.Event()  # listening now (tests and readiness read it)
        self.heard = 0  # notifications received, for the tests and the log
        self._thread = threading.Thread(target=self._run, name="runwatch-listen", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(_TURN * 4)

    def _run(self) -> None:
        delay = _BACKOFF_FIRST
        lost = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, application_name="runwatch listen") as conn:
                    for channel in self._wakes:
                        conn.execute(f"LISTEN {channel}")
                    self.connected.set()
                    if lost:
                        self.log.info("journal.listening_again", database=self.where)
                    lost, delay = False, _BACKOFF_FIRST
                    for channel in self._wakes:  # what happened while nobody listened
                        self._poke(channel)
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=_TURN):
                            self.heard += 1
                            self._poke(note.channel)
            except psycopg.Error as exc:
                self.connected.clear()
                if not lost:
                    self.log.warning("journal.listen_lost", database=self.where, error=" ".join(str(exc).split()))
                lost = True
                self._stop.wait(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
        self.connected.clear()

    def _poke(self, channel: str) -> None:
        wake = self._wakes.get(channel)
        if wake is None:
            return
        try:
            wake()
        except Exception as exc:  # a bug in the engine's hook must not end the listener
            self.log.exception("journal.listen_wake_failed", error=repr(exc))
