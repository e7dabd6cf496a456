"""The HTTP server against a big journal: `python bench/web.py [--jobs 10000] [--requests 200] [--live-runs 3]
[--json]`.

Fills a SQLite journal with ``--jobs`` finished requests (as months of use leave it), starts `runwatch run` on it
(a subprocess, as users run it) against `runwatch simulate`, with the HTTP server on a loopback port, then asks
each route ``--requests`` times over one keep-alive connection (after a few warm-up requests) and reports the
median and the 95th percentile of the answer times seen by the client: GET /metrics, GET /api/v1/jobs/{id} (ids
spread over the whole journal), a page of GET /api/v1/jobs filtered by state, the dashboard's page of a job
(GET /jobs/{id}, HTML) and its jobs table. The baseline is GET /healthz, which reads nothing: the cost of HTTP
itself.

Then the live pages: ``--live-clients`` (20) server-sent-event streams are opened as 20 open jobs tables would,
each watching four videos running at Runway's pace at the simulator and 46 finished jobs, and asking to hear of
newer jobs. Tasks are polled every second (``poll_interval = 1``), so their progress changes often and the pages
have events to receive (the row counts them). The daemon's CPU (utime + stime from /proc) is read over
``--live-seconds`` without the streams, then as long with them open; ``--live-runs`` times, each run with four
videos of its own that it cancels after. The row reports the median of what the streams added, as a percentage
of one core.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from idle import cpu_seconds, start_daemon, start_sim, stop
from report import emit

from runwatch.jobs.job import Job
from runwatch.jobs.states import State
from runwatch.store import Journal

TARGETS = {"/metrics": 20.0, "/api/v1/jobs/{id}": 50.0, "/jobs/{id}": 50.0}  # ms, median
LIVE_TARGET = 1.0  # % of one core that the open live pages may add
TOKEN = "bench-token-" + "5" * 32  # the live-pages run cancels its videos through the API
STATES = (State.SUCCEEDED, State.SUCCEEDED, State.SUCCEEDED, State.FAILED, State.CANCELLED, State.REJECTED)


def fill(state: Path, count: int) -> list[str]:
    """``count`` finished jobs in a new journal, with outputs and errors as real ones have; their ids."""
    journal = Journal(state / "journal.sqlite3")
    rng = random.Random(7)
    jobs = []
    for n in range(count):
        ended = STATES[n % len(STATES)]
        stamp = f"2026-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:00:00.000Z"
        jobs.append(
            Job(
                id=f"2026T{n:08d}-{rng.getrandbits(32):08x}",
                name=f"shot-{n:05d}",
                inbox=f"inbox{n % 4}",
                format="json",
                state=ended,
                endpoint="image_to_video",
                model="gen4_turbo",
                body={"promptText": "waves on a shore at dusk, slow push in", "ratio": "1280:720", "duration": 5},
                task_id=f"{rng.getrandbits(128):032x}",
                estimated_credits=25.0,
                credits=25.0 if ended == State.SUCCEEDED else None,
                outputs=[{"file": f"shot-{n:05d}.mp4", "bytes": 4_000_000, "sha256": "ab" * 32}]
                if ended == State.SUCCEEDED
                else [],
                error=None if ended == State.SUCCEEDED else {"code": "SAFETY.INPUT.TEXT", "message": "refused"},
                created_at=stamp,
                finished_at=stamp,
            )
        )
    for first in range(0, count, 1000):
        journal.add_many(jobs[first : first + 1000])
    journal.close()
    return [job.id for job in jobs]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timings(http: httpx.Client, paths: list[str], warmup: int = 5) -> list[float]:
    """Milliseconds per request, as the client sees them."""
    for path in paths[:warmup]:
        http.get(path).raise_for_status()
    seen = []
    for path in paths:
        started = time.perf_counter()
        answer = http.get(path)
        seen.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
    return seen


def read_live(http: httpx.Client, query: dict[str, str], events: list[int], index: int) -> None:
    """One live page: count its events until its client is closed."""
    with contextlib.suppress(httpx.HTTPError, RuntimeError), http.stream("GET", "/live", params=query) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            events[index] += line.startswith("data: ")


def films(inbox: Path, http: httpx.Client, run: int) -> list[str]:
    """Four videos dropped and running at Runway's pace (a minute or more): their job ids."""
    body = {
        "endpoint": "text_to_video",
        "model": "veo3.1",
        "promptText": "a forest",
        "ratio": "1280:720",
        "duration": 8,
    }
    for n in range(4):
        tmp = inbox / f"film{run}-{n}.json.tmp"
        tmp.write_text(json.dumps(body))
        tmp.rename(inbox / f"film{run}-{n}.json")
    deadline = time.monotonic() + 60
    while True:
        running = http.get("/api/v1/jobs", params={"state": "running"}).json()["jobs"]
        if len(running) == 4:
            return [j["job_id"] for j in running]
        if time.monotonic() > deadline:
            raise SystemExit("the four videos did not start running within 60 s")
        time.sleep(0.5)


def live_cost(
    pid: int, inbox: Path, base: str, ids: list[str], args: argparse.Namespace
) -> tuple[list[float], list[int]]:
    """What ``--live-clients`` open live pages add to the daemon's CPU, % of one core, one figure per run; and the
    events they got in each run. Each run has four videos of its own, running through both its windows, and
    cancels them after: no video ends (downloads, status files) inside a window."""

    def window() -> float:
        before, started = cpu_seconds(pid), time.monotonic()
        time.sleep(args.live_seconds)
        return 100.0 * (cpu_seconds(pid) - before) / (time.monotonic() - started)

    added: list[float] = []
    pushed: list[int] = []
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, timeout=30.0, headers=auth) as http:
        for run in range(args.live_runs):
            running = films(inbox, http, run)
            query = {"ids": ",".join(running + ids[-46:]), "top": ids[-1], "state": "", "inbox": "", "name": ""}
            time.sleep(1.0)
            quiet = window()
            clients = [httpx.Client(base_url=base, timeout=None) for _ in range(args.live_clients)]
            events = [0] * len(clients)
            readers = [
                threading.Thread(target=read_live, args=(c, query, events, i), daemon=True)
                for i, c in enumerate(clients)
            ]
            for reader in readers:
                reader.start()
            time.sleep(2.0)  # every stream open and past its first event
            busy = window()
            for client in clients:
                client.close()
            if min(events) < 1:
                raise SystemExit(f"a live page got no event: {events}")
            pushed.append(sum(events))
            added.append(busy - quiet)
            for job_id in running:
                http.post(f"/api/v1/jobs/{job_id}/cancel").raise_for_status()
            deadline = time.monotonic() + 60
            while http.get("/api/v1/jobs", params={"state": "running"}).json()["jobs"]:
                if time.monotonic() > deadline:
                    raise SystemExit("the videos were not cancelled within 60 s")
                time.sleep(0.5)
    return added, pushed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--live-clients", type=int, default=20, help="live pages (SSE streams) open at once")
    parser.add_argument("--live-seconds", type=float, default=8.0, help="length of one CPU window")
    parser.add_argument("--live-runs", type=int, default=3, help="pairs of windows (0: no live pages row)")
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="runwatch-bench-web-"))
    started: list[Any] = []
    try:
        (root / "state").mkdir()
        ids = fill(root / "state", args.jobs)
        sim, url = start_sim(root)
        started.append(sim)
        port = free_port()
        (root / "inbox").mkdir()
        config = root / "runwatch.toml"
        (root / "http-token").write_text(TOKEN)
        config.write_text(
            f'[runway]\nbase_url = "{url}"\npoll_interval = 1.0\n\n[state]\ndir = "{root / "state"}"\n\n'
            f'[http]\nlisten = "127.0.0.1:{port}"\ntoken_file = "{root / "http-token"}"\n\n'
            f'[[inbox]]\npath = "{root / "inbox"}"\noutbox = "{root / "outbox"}"\n'
        )
        started.append(start_daemon(config, root))
        rng = random.Random(11)
        n = args.requests
        routes = {
            "/healthz": ["/healthz"] * n,
            "/metrics": ["/metrics"] * n,
            "/api/v1/jobs/{id}": [f"/api/v1/jobs/{rng.choice(ids)}" for _ in range(n)],
            "/api/v1/jobs?state=failed&limit=100": ["/api/v1/jobs?state=failed&limit=100"] * n,
        }
        routes["/jobs/{id}"] = [f"/jobs/{rng.choice(ids)}" for _ in range(n)]
        routes["/jobs?state=failed"] = ["/jobs?state=failed"] * n
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30.0) as http:
            results = {route: timings(http, paths) for route, paths in routes.items()}
        live, pushed = ([], []) if not args.live_runs else live_cost(started[-1].pid, root / "inbox", base, ids, args)
    finally:
        for proc in reversed(started):
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)

    def figure(route: str) -> str:
        seen = sorted(results[route])
        return f"median {statistics.median(seen):.1f} ms, p95 {seen[int(len(seen) * 0.95) - 1]:.1f} ms"

    base = f"{statistics.median(results['/healthz']):.1f} ms (GET /healthz, reads nothing)"
    rows = []
    for route in (
        "/metrics",
        "/api/v1/jobs/{id}",
        "/api/v1/jobs?state=failed&limit=100",
        "/jobs/{id}",
        "/jobs?state=failed",
    ):
        target = TARGETS.get(route)
        rows.append(
            {
                "what": f"GET {route}, journal of {args.jobs} jobs, {args.requests} requests",
                "figure": figure(route),
                "baseline": base,
                "target": f"median ≤ {target:g} ms" if target else "",
                "met": statistics.median(results[route]) <= target if target else None,
            }
        )
    if live:
        added = statistics.median(live)
        rows.append(
            {
                "what": f"{args.live_clients} open live pages (SSE) of 50 jobs, 4 of them running "
                f"({sum(pushed)} events pushed): daemon CPU added",
                "figure": f"median {added:.2f} % of a core, {len(live)} runs: {', '.join(f'{x:.2f}' for x in live)}",
                "baseline": "the same daemon and tasks, no page open",
                "target": f"< {LIVE_TARGET:g} % of a core",
                "met": added < LIVE_TARGET,
            }
        )
    emit(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
