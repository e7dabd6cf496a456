"""The pool: blocking work goes out, events come back.

Uploads, API calls and downloads run on a thread pool. A piece of work returns the events it wants the engine
to see; when it raises, every job it was for gets that exception as its result, as the event of its kind. The
done-callback only posts events: it never touches a job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from enum import StrEnum
from typing import Any

from runwatch.jobs import events

__all__ = ["Runner", "Work"]


class Work(StrEnum):
    """The kinds of blocking work, each answered by the event of the same name."""

    PLACE = "place"
    CREATE = "create"
    POLL = "poll"
    DOWNLOAD = "download"
    DELETE = "delete"


_FAILED: dict[Work, Callable[[str, BaseException], events.JobEvent]] = {
    Work.PLACE: events.Placed,
    Work.CREATE: events.Created,
    Work.POLL: events.Polled,
    Work.DOWNLOAD: events.Downloaded,
    Work.DELETE: events.Deleted,
}


class Runner:
    """A thread pool whose results come back through ``post``; it knows what is in flight, by kind."""

    def __init__(self, workers: int, post: Callable[[events.Event], None]) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="runwatch-io")
        self._post = post
        self._futures: dict[Future[Any], Work] = {}
        self._lock = threading.Lock()  # done-callbacks drop their futures from pool threads

    def run(self, kind: Work, job_ids: Sequence[str], work: Callable[[], Sequence[events.JobEvent]]) -> None:
        """Run ``work`` for the jobs on one pool thread; its events (or its failure, per job) come back."""
        future = self.pool.submit(work)
        with self._lock:
            self._futures[future] = kind
        ids = list(job_ids)

        def done(f: Future[Sequence[events.JobEvent]]) -> None:
            try:
                results: Sequence[events.JobEvent] = f.result()
            except BaseException as exc:  # noqa: BLE001 - every failure goes back to the engine to decide
                results = [_FAILED[kind](job_id, exc) for job_id in ids]
            for event in results:
                self._post(event)
            with self._lock:  # after the events are posted: in flight until the engine can see the answer
                self._futures.pop(f, None)

        future.add_done_callback(done)

    def background(self, fn: Callable[[], Any]) -> Future[Any]:
        """Work whose result nobody waits for as an event (a clean-up, a read that posts its own event)."""
        return self.pool.submit(fn)

    def in_flight(self, kind: Work | None = None) -> int:
        """Pieces of work not yet answered (of one kind, when given)."""
        with self._lock:
            return sum(1 for k in self._futures.values() if kind is None or k == kind)

    def shutdown(self) -> None:
        """Abandon what has not started; what runs finishes on its own (its events are no longer read)."""
        self.pool.shutdown(wait=False, cancel_futures=True)
