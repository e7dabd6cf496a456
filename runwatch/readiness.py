"""When a file in an inbox is complete: the readiness rule, as pure functions.

A producer may still be writing a file the watcher sees, and on a network share no event says when it is
done. What has been seen of one file is kept as a :class:`History`; :func:`observe` adds one more look and
:func:`is_ready` judges it. Kept apart from the watcher, with no clock and no filesystem of its own, so the
rule can be read in a minute and tested without threads or timing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["History", "Sig", "is_ready", "observe"]

Sig = tuple[int, int]  # (size, mtime_ns): what "unchanged" means


@dataclass(frozen=True)
class History:
    """What has been seen of one file: when first, its last (size, mtime_ns), when that last changed, and
    whether a close-after-write or a rename-in arrived after that change."""

    first_seen: float
    sig: Sig
    changed: float
    signalled: bool = False


def observe(prev: History | None, sig: Sig, now: float, *, signal: bool = False) -> History:
    """The history after one more look at a file (``signal``: a close-after-write or rename-in came)."""
    if prev is None:
        return History(now, sig, now, signal)
    if sig != prev.sig:
        # A stat taken after the close shows the closed content, so a signal with a change still counts.
        return History(prev.first_seen, sig, now, signal)
    return replace(prev, signalled=True) if signal and not prev.signalled else prev


def is_ready(history: History, now: float, *, settle: float, events: bool) -> bool:
    """Complete: signalled (when events can be trusted: local inotify), or unchanged for ``settle`` seconds."""
    return (events and history.signalled) or now - history.changed >= settle
