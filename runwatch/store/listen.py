"""Commands from anywhere, heard at once: ``LISTEN runwatch_commands`` on a connection of the daemon's own.

``PostgresJournal.add_command`` sends ``NOTIFY runwatch_commands, '<id>'`` in the transaction that adds the
command, so the notification arrives when the command is committed and readable, from any machine. The listener
only wakes the engine's command check (``wake``); the commands table stays the one truth, read as before, so a
notification lost to a restart of the database costs no command: the daemon's poll still reads it, and every
(re)connection wakes the check once for what was added meanwhile.

The connection is not the pool's: a LISTEN belongs to one session, and a pooled connection is handed to other
callers. When the database goes away the listener connects again with a back-off (0.5 s doubling to 30 s).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg

__all__ = ["COMMANDS_CHANNEL", "CommandListener"]

COMMANDS_CHANNEL = "runwatch_commands"
_TURN = 0.5  # seconds a wait for notifications lasts before the stop flag is looked at
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 30.0


class CommandListener:
    """A thread that calls ``wake`` whenever a command is added to the journal; :meth:`close` stops it."""

    def __init__(self, conninfo: str, where: str, wake: Callable[[], None], log: Any) -> None:
        self._conninfo = conninfo  # may hold the credential's password: never logged
        self.where = where  # the configured URL, which holds none
        self._wake = wake
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
                    conn.execute(f"LISTEN {COMMANDS_CHANNEL}")
                    self.connected.set()
                    if lost:
                        self.log.info("journal.listening_again", database=self.where)
                    lost, delay = False, _BACKOFF_FIRST
                    self._poke()  # commands added while nobody listened
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=_TURN):
                            self.heard += 1
                            self._poke()
            except psycopg.Error as exc:
                self.connected.clear()
                if not lost:
                    self.log.warning("journal.listen_lost", database=self.where, error=" ".join(str(exc).split()))
                lost = True
                self._stop.wait(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
        self.connected.clear()

    def _poke(self) -> None:
        try:
            self._wake()
        except Exception as exc:  # a bug in the engine's hook must not end the listener
            self.log.exception("journal.listen_wake_failed", error=repr(exc))
