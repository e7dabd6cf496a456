"""Live pages: server-sent events that move the dashboard's progress bars and states without a reload.

A page opens one stream for the jobs it shows (``/live?ids=...``). Each stream looks once per :data:`TICK`
second and pushes one event only when something it shows changed, so a page costs the server one small
comparison a second however busy the engine is. Jobs the engine follows are read from its memory (progress lives
there between journal flushes); the others from the journal, again only after the book's listener said some job
entered a state (:meth:`Live.job_entered`, on the engine's thread: it bumps a counter and returns).

Bounded: a stream watches at most :data:`MAX_IDS` jobs and at most :data:`MAX_STREAMS` streams are open at
once. :meth:`Live.close` (the daemon stopping) ends every stream within a tick, so uvicorn's thread ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from runwatch.jobs.states import FINAL, State

if TYPE_CHECKING:
    from runwatch.jobs.job import Job
    from runwatch.store import Store

__all__ = ["MAX_IDS", "MAX_STREAMS", "TICK", "Live"]

TICK = 1.0  # seconds between two looks of a stream: at most one push a second per page
KEEPALIVE = 15  # ticks without a change before a comment line keeps proxies from closing the stream
MAX_IDS = 200
MAX_STREAMS = 64
_UNFINISHED = frozenset(state.value for state in State if state not in FINAL)


def shown(job: Job) -> dict[str, Any]:
    """What a live page shows of a job."""
    return {"state": str(job.state), "progress": job.progress, "credits": job.credits}


class Live:
    """The streams of one server."""

    def __init__(self, store: Callable[[], Store], followed: Callable[[str], Job | None]) -> None:
        self._store = store  # the server's journal connection (known once it listens)
        self._followed = followed  # a job the engine follows, by id (a dict read: safe from any thread)
        self.version = 0  # bumped on the engine's thread whenever a job enters a state
        self.streams = 0
        self.closed = False
        self.tick = TICK

    def job_entered(self, job: Job) -> None:
        """``Book.listeners``: only a counter; the streams do the reading on their own time."""
        self.version += 1

    def close(self) -> None:
        """End every stream (the daemon stops)."""
        self.closed = True

    def full(self) -> bool:
        return self.streams >= MAX_STREAMS

    def _read(self, ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """What the journal says of ``ids``; None for an id it does not know (not asked again)."""
        store = self._store()
        found: dict[str, dict[str, Any] | None] = {}
        for job_id in ids:
            job = store.get(job_id)
            found[job_id] = shown(job) if job is not None else None
        return found

    async def events(self, ids: Sequence[str], fresh: Callable[[], bool] | None = None) -> AsyncIterator[str]:
        """The stream for ``ids``: an event when what they show changed (and ``fresh`` once, when it says newer
        jobs than the page's match its filters)."""
        self.streams += 1
        try:
            yield "retry: 3000\n\n"
            stored: dict[str, dict[str, Any] | None] = {}
            seen_version, sent, quiet, told_fresh = -1, None, 0, False
            while not self.closed:
                live = {job_id: self._followed(job_id) for job_id in ids}
                changed = self.version != seen_version
                seen_version = self.version
                # From the journal: jobs not read yet, and after a change those it last showed unfinished (an
                # ended job changes only by a retry, which the engine then follows: read from memory again).
                wanted = [
                    i
                    for i, job in live.items()
                    if job is None and (i not in stored or (changed and (stored[i] or {}).get("state") in _UNFINISHED))
                ]
                if wanted:
                    stored.update(await run_in_threadpool(self._read, wanted))
                if changed and fresh is not None and not told_fresh:
                    told_fresh = await run_in_threadpool(fresh)
                now = {i: shown(job) if job is not None else stored.get(i) for i, job in live.items()}
                snapshot = {"jobs": {i: v for i, v in now.items() if v is not None}, "fresh": told_fresh}
                if snapshot != sent:
                    sent, quiet = snapshot, 0
                    yield f"data: {json.dumps(snapshot, separators=(',', ':'))}\n\n"
                elif quiet >= KEEPALIVE:
                    quiet = 0
                    yield ": still here\n\n"
                quiet += 1
                await asyncio.sleep(self.tick)
        finally:
            self.streams -= 1
