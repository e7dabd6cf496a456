"""Which files the requests waiting in an inbox name: an index the watcher keeps.

A media file in an inbox waits on the requests there: it is sent alone (bare media) only when none of them
names it, and a file a claim took leaves the inbox only when none of them names it. Asking every waiting
request each time would cost a pass over thousands of files per claim; this index answers at once. A request
not read yet may name any file, so while one waits, every file is wanted.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["Wanted"]


class Wanted:
    """The waiting requests (by path) and the files they name (spelled as events spell them)."""

    def __init__(self) -> None:
        self._unread: set[Path] = set()
        self._naming: dict[Path, set[Path]] = {}

    def __call__(self, file: Path) -> bool:
        """Does a waiting request name ``file``, or might one (it has not been read yet)?"""
        return bool(self._unread) or file in self._naming

    def arrived(self, request: Path) -> None:
        """A request seen, not read yet."""
        self._unread.add(request)

    def read(self, request: Path, before: frozenset[Path] | None, now: frozenset[Path]) -> None:
        """A request read: it names ``now`` (and no longer ``before``)."""
        self._unread.discard(request)
        self._move(request, before or frozenset(), now)

    def gone(self, request: Path, names: frozenset[Path] | None) -> None:
        """A request taken, refused or removed."""
        self._unread.discard(request)
        self._move(request, names or frozenset(), frozenset())

    def _move(self, request: Path, before: frozenset[Path], now: frozenset[Path]) -> None:
        for file in before - now:
            naming = self._naming.get(file)
            if naming is not None:
                naming.discard(request)
                if not naming:
                    del self._naming[file]
        for file in now - before:
            self._naming.setdefault(file, set()).add(request)
