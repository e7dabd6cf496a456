"""Whether the daemon's main loop is turning: a heartbeat file it touches, and ``runwatch health`` that reads it.

The main loop touches ``STATE_DIR/heartbeat`` (at most every :data:`BEAT_EVERY` seconds, beside the systemd
watchdog ping), so the file's modification time is the last time the loop went round. ``runwatch health``
passes while that time is at most :data:`STALE_AFTER` seconds old (60 s, systemd's ``WatchdogSec=`` in the
shipped unit): a container's ``HEALTHCHECK`` for a daemon that has no HTTP surface. A loop that hangs (a
deadlock, a call that never returns) stops touching the file and the check fails; a daemon that is merely busy
still goes round, since the loop never waits for long.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from runwatch.ops import EXIT_FAILURE, EXIT_OK, daemon_holder, load_required_config

__all__ = ["BEAT_EVERY", "HEARTBEAT_FILE", "STALE_AFTER", "Heartbeat", "Verdict", "check", "health_command"]

HEARTBEAT_FILE = "heartbeat"
LOCK_FILE = "runwatch.lock"  # the daemon's StateLock: written as it starts
BEAT_EVERY = 5.0  # seconds between two touches: a write every turn of the loop would be wasted disk work
STALE_AFTER = 60.0  # seconds: a heartbeat older than this means the main loop is stuck


class Heartbeat:
    """The main loop's side: touch the file when a beat is due. Never raises: a full or read-only disk must
    not stop the daemon (the check then reports the heartbeat stale, which is the truth about it)."""

    def __init__(self, state_dir: Path, every: float = BEAT_EVERY) -> None:
        self.path = state_dir / HEARTBEAT_FILE
        self.every = every
        self._next = float("-inf")

    def beat(self, now: float) -> None:
        """``now`` is monotonic time; the file's own time is the wall clock's, which the check compares with."""
        if now < self._next:
            return
        self._next = now + self.every
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                os.utime(fd)
            finally:
                os.close(fd)
        except OSError:
            return


@dataclass(frozen=True)
class Verdict:
    """What the check found: ``ok`` and one line for people."""

    ok: bool
    message: str


def check(state_dir: Path, *, stale_after: float = STALE_AFTER, now: float | None = None) -> Verdict:
    """Healthy when the heartbeat in ``state_dir`` is at most ``stale_after`` seconds old (``now``: epoch
    seconds). A heartbeat from the future (the clock was set back) counts as fresh: the next beat sets it right.
    When it is not, the message says why: no daemon runs, the running one has not beaten yet (its heartbeat
    file is missing or older than its lock, which the daemon writes as it starts), or its loop is stuck."""
    path = state_dir / HEARTBEAT_FILE
    now = time.time() if now is None else now
    try:
        beat = path.stat().st_mtime
    except FileNotFoundError:
        beat = None
    except OSError as exc:
        return Verdict(False, f"cannot read the heartbeat {path}: {exc.strerror or exc}")
    if beat is not None and now - beat <= stale_after:
        return Verdict(True, f"healthy: the main loop went round {max(now - beat, 0.0):.0f} s ago")
    holder = daemon_holder(state_dir)
    if holder is None:
        return Verdict(False, f"no daemon runs on {state_dir}")
    started = _mtime(state_dir / LOCK_FILE)
    if beat is None or (started is not None and beat < started):
        since = f" (for {now - started:.0f} s)" if started is not None else ""
        return Verdict(False, f"{holder} is still starting{since}: no heartbeat at {path} yet")
    return Verdict(
        False, f"{holder} is stuck: its main loop last went round {now - beat:.0f} s ago (more than {stale_after:g} s)"
    )


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def health_command(
    config_file: str | None = None, *, stale_after: float = STALE_AFTER, out: TextIO | None = None
) -> int:
    """``runwatch health``: 0 healthy, 1 not (the reason on one line), 78 a config error (raised)."""
    config = load_required_config(config_file)
    verdict = check(config.state.dir, stale_after=stale_after)
    print(verdict.message if verdict.ok else f"unhealthy: {verdict.message}", file=out or sys.stdout)
    return EXIT_OK if verdict.ok else EXIT_FAILURE
