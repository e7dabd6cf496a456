"""``runwatch cancel``, ``retry`` and ``approve``: a command handed to the running daemon, its answer, and with
``--wait`` the request followed until it has ended.

The daemon's engine is the only writer of jobs, so these commands never change a job themselves: they append
to the journal's ``commands`` table, which the engine reads about twice a second, and read its answer back.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TextIO

from runwatch.ops import EXIT_FAILURE, EXIT_OK, daemon_holder, load_required_config

if TYPE_CHECKING:
    from runwatch.config import Config
    from runwatch.jobs.job import Job
    from runwatch.store import Store

__all__ = ["ANSWER_TIMEOUT", "KINDS", "carried_out", "control_command"]

KINDS = ("cancel", "retry", "approve")
ANSWER_TIMEOUT = 10.0  # the engine reads commands every half second; longer means it is stuck or stopping
# What --wait waits for: the state the request should end in for the command to have done what was asked.
_WANTED = {"cancel": "cancelled", "retry": "succeeded", "approve": "succeeded"}
# The engine's answers that mean it does what was asked (a cancel of a task at Runway answers "cancelling"
# and ends "cancelled" once Runway confirms).
_CARRIED_OUT = frozenset({"approved", "cancelled", "cancelling", "resubmitting"})
_LIVENESS_EVERY = 2.0  # seconds between looks at whether the daemon still runs, while waiting


def carried_out(answer: str) -> bool:
    """Whether the daemon's answer means it does what was asked.

    Every other answer is a refusal that names the reason: "no held request named X", "no active request named
    X", "no request named X", "X is STATE; only ... are retried", a job from `runwatch submit`.
    """
    return answer in _CARRIED_OUT


def control_command(
    kind: str,
    name: str,
    *,
    config_file: str | None = None,
    wait: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
    env: Mapping[str, str] = os.environ,
    answer_timeout: float = ANSWER_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """0 when the daemon carries the command out (with --wait: when the request ended as asked: cancelled for a
    cancel, succeeded for a retry or an approval); 1 when there is no such request, the daemon refuses, no
    daemon runs (the command stays recorded for the next start), or the request ended otherwise."""
    from runwatch.store import journal_exists, open_store

    out, err = out or sys.stdout, err or sys.stderr
    if kind not in KINDS:
        raise ValueError(kind)
    config = load_required_config(config_file, env)
    state_dir = config.state.dir
    if not journal_exists(config):
        err.write(f"runwatch {kind}: no request named {name!r} (no journal in {state_dir} yet)\n")
        return EXIT_FAILURE
    journal = open_store(config, env)
    try:
        job = journal.find(name)  # the job the engine acts on: the newest active one, else the newest
        if job is None:
            err.write(f"runwatch {kind}: no request named {name!r}\n")
            return EXIT_FAILURE
        holder = running(config, journal)
        command_id = journal.add_command(kind, name)
        if holder is None:
            where = "on the journal database" if config.state.database else f"on {state_dir}"
            err.write(
                f"runwatch {kind}: no daemon is running {where}; the {kind} of {name!r} is recorded for "
                "the daemon to carry out (or refuse) when `runwatch run` starts\n"
            )
            return EXIT_FAILURE
        answer = _answer(journal, command_id, lambda: running(config, journal), answer_timeout, sleep)
        if answer is None:
            err.write(
                f"runwatch {kind}: the daemon ({holder}) did not answer; the {kind} of {name!r} stays recorded "
                "for it to carry out (or refuse) when it gets to it\n"
            )
            return EXIT_FAILURE
        if not carried_out(answer):
            err.write(f"runwatch {kind}: {answer}\n")
            return EXIT_FAILURE
        out.write(f"{name}: {answer}\n")
        out.flush()
        if not wait:
            return EXIT_OK
        try:
            return _follow(journal, config, job.id, kind, out, err, sleep)
        except KeyboardInterrupt:
            err.write(f"runwatch {kind}: stopped waiting; the daemon goes on with {name!r}\n")
            return EXIT_FAILURE
    finally:
        journal.close()


def running(config: Config, journal: Store) -> str | None:
    """Who carries commands out: the daemon holding this state directory, or, on a journal several nodes share,
    any node whose heartbeat is younger than a lease. None when nobody runs."""
    holder = daemon_holder(config.state.dir)
    if holder is not None or config.state.database is None:
        return holder
    live = [n.name for n in journal.nodes() if not n.stopped and n.heartbeat_age <= config.node.lease]
    return f"node {', '.join(live)}" if live else None


def _answer(
    journal: Store, command_id: int, alive: Callable[[], str | None], timeout: float, sleep: Callable[[float], None]
) -> str | None:
    """The daemon's answer, or None when it gave none in time or stopped."""
    deadline = time.monotonic() + timeout
    looked = time.monotonic()
    while True:
        result = journal.command_result(command_id)
        if result is not None:
            return result
        now = time.monotonic()
        if now >= deadline:
            return None
        if now - looked >= _LIVENESS_EVERY:
            looked = now
            if alive() is None:
                return journal.command_result(command_id)  # it may have answered on its way out
        sleep(0.1)


def _follow(
    journal: Store,
    config: Config,
    job_id: str,
    kind: str,
    out: TextIO,
    err: TextIO,
    sleep: Callable[[float], None],
) -> int:
    """--wait: a line per state the request goes through, until it has ended; 0 when it ended as asked."""
    from runwatch.jobs.states import FINAL

    shown, looked = "", time.monotonic()
    while True:
        job = journal.get(job_id)
        if job is None:  # the journal is never pruned by runwatch; someone removed the row
            err.write(f"runwatch {kind}: the request is no longer in the journal\n")
            return EXIT_FAILURE
        if job.state != shown and job.state not in FINAL:
            shown = job.state
            out.write(f"{job.name}: {job.state}\n")
            out.flush()
        if job.state in FINAL:
            return _ended(job, config, kind, out, err)
        if time.monotonic() - looked >= _LIVENESS_EVERY:
            looked = time.monotonic()
            if running(config, journal) is None:
                err.write(
                    f"runwatch {kind}: the daemon stopped while {job.name!r} was {job.state}; "
                    "it goes on from there when the daemon starts again\n"
                )
                return EXIT_FAILURE
        sleep(0.25)


def _ended(job: Job, config: Config, kind: str, out: TextIO, err: TextIO) -> int:
    if job.state == _WANTED[kind]:
        outbox = next((i.outbox for i in config.inboxes if i.name == job.inbox), None)
        files = ", ".join(str(o.get("file")) for o in job.outputs)
        where = f" in {outbox}" if outbox is not None else ""
        out.write(f"{job.name}: {job.state}" + (f"; outputs{where}: {files}" if files else "") + "\n")
        return EXIT_OK
    message = job.error.get("message") if isinstance(job.error, dict) else None
    err.write(f"runwatch {kind}: {job.name} ended {job.state}" + (f": {message}" if message else "") + "\n")
    return EXIT_FAILURE
