"""Following tasks: `python bench/follow.py [--tasks 200] [--scale 0.3] [--seed 0] [--json]`.

N tasks of varied length (text_to_speech, sound_effect, text_to_image, text_to_video 4 s and 8 s,
image_to_video 5 s and 10 s with a data: image; about 6 s to 85 s at Runway's pace) are followed to their
outputs twice in one run, one side after the other, each against its own in-process simulator with the same
config (no concurrency or daily limit, so nothing waits THROTTLED):

- runwatch: the real Daemon, an inbox with the N request files, `poll_interval` = 5 * scale;
- the SDK baseline: the official `runwayml` client, one thread per task doing create, `wait_for_task_output()`
  at its default interval (`POLL_TIME` = 6 * scale, `POLL_JITTER` = 3 * scale), then downloading each output
  with httpx into a folder, as a plain script would (no fsync).

Time is scaled by one factor for all three: the simulator's task durations (`time_scale`), the SDK's interval
and jitter, and runwatch's `poll_interval`. Measured per task:

- lag: from the task's end at the simulator (`Task.ends`, wall clock) to its outputs being complete in the
  outbox. For runwatch that is the moment its final (`succeeded`) status file was renamed into place, read
  afterwards as the file's ctime (a rename sets it; mtime would be the earlier write of the temporary file).
  The status file is written after the outputs are in place and is what another tool waits for. Reading
  ctimes after the run costs nothing while it runs, where watching the outbox would compete for the same two
  cores; the kernel stamps them with its coarse clock, up to a few ms early. For the SDK, `time.time()`
  after the last output file is closed.
- where the lag goes: poll wait (end -> the first GET of the task logged at or after its end; the log has
  ms resolution), download (-> outputs complete: the newest output file's ctime for runwatch, set when it
  was linked or renamed into place), and for runwatch the status-file write (-> the status file's ctime).
  Also create -> first GET: the first look at a task, an interval after its create unless the client is
  busy.
- GETs per task: `GET /v1/tasks/{id}` in the simulator's request log, per task id.

Lag is shown as measured (scaled) and divided by the scale (what it means at Runway's pace); only the poll
wait really scales, download and file writes do not, so the unscaled figure overstates their share.
The default scale 0.3 keeps a 200-task run near a minute; smaller scales crowd runwatch's fixed per-task
work (journal commits, status files) into less time and so count against it more than at Runway's pace.

Prints a markdown table (| what | runwatch | SDK baseline | target |) or with `--json` a list of rows
{what, figure, baseline, target, met}. Targets: runwatch's median lag below the SDK's, and its mean GETs per
task no more than the SDK's; exit status 1 when one is missed. `--dir` puts the run's folders elsewhere (a
tmpfs takes fsync cost out), `--dump FILE` writes every task's figures.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import runwayml
import runwayml.lib.polling as sdk_polling

from runwatch.config import parse_config
from runwatch.daemon import Daemon
from runwatch.logs import configure_logging
from runwatch.simulator import SimConfig, Simulator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit

SAMPLES = Path(__file__).resolve().parent.parent / "runwatch" / "data" / "samples"
_TASK_GET = re.compile(r"^/v1/tasks/([^/]+)$")


def bodies(count: int) -> list[dict[str, Any]]:
    """Request bodies as the API spells them (plus `endpoint`), cycling through seven task lengths."""
    image = "data:image/jpeg;base64," + base64.b64encode((SAMPLES / "base.jpg").read_bytes()).decode()
    kinds: list[dict[str, Any]] = [
        {
            "endpoint": "text_to_speech",
            "model": "eleven_multilingual_v2",
            "promptText": "Hello",
            "voice": {"type": "runway-preset", "presetId": "Maya"},
        },
        {"endpoint": "sound_effect", "model": "eleven_text_to_sound_v2", "promptText": "rain"},
        {"endpoint": "text_to_image", "model": "gen4_image", "promptText": "a cat", "ratio": "1920:1080"},
        {"endpoint": "text_to_video", "model": "veo3.1", "promptText": "a forest", "ratio": "1280:720", "duration": 4},
        {"endpoint": "text_to_video", "model": "veo3.1", "promptText": "a river", "ratio": "1280:720", "duration": 8},
        {
            "endpoint": "image_to_video",
            "model": "gen4_turbo",
            "promptImage": image,
            "ratio": "1280:720",
            "duration": 5,
            "promptText": "waves",
        },
        {
            "endpoint": "image_to_video",
            "model": "gen4_turbo",
            "promptImage": image,
            "ratio": "1280:720",
            "duration": 10,
            "promptText": "clouds",
        },
    ]
    out = []
    for i in range(count):
        body = json.loads(json.dumps(kinds[i % len(kinds)]))
        body["promptText"] += f" #{i}"  # every body distinct, so no two look like one request sent twice
        out.append(body)
    return out


def snake(value: Any) -> Any:
    """The SDK's keyword spelling of a wire body (promptText -> prompt_text, nested keys too)."""
    if isinstance(value, dict):
        return {re.sub(r"(?<!^)([A-Z])", r"_\1", k).lower(): snake(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snake(v) for v in value]
    return value


@dataclass
class Side:
    """What one side measured, per task id."""

    name: str
    lag: dict[str, float] = field(default_factory=dict)  # task id -> seconds, end to outputs complete
    poll_wait: dict[str, float] = field(default_factory=dict)
    download: dict[str, float] = field(default_factory=dict)
    status_write: dict[str, float] = field(default_factory=dict)
    gets: dict[str, int] = field(default_factory=dict)
    ends: dict[str, float] = field(default_factory=dict)
    created: dict[str, float] = field(default_factory=dict)
    first_get: dict[str, float] = field(default_factory=dict)
    endpoints: dict[str, str] = field(default_factory=dict)
    other_requests: int = 0  # /v1 requests that are not a task's GET or its create
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def sim_config(scale: float, seed: int) -> SimConfig:
    return SimConfig(
        time_scale=scale,
        seed=seed,
        concurrency=None,
        daily_limit=None,
        credit_balance=10_000_000,
        max_monthly_credit_spend=100_000_000,
    )


def parse_ms(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def account(sim: Simulator, side: Side, done: dict[str, tuple[float, float]]) -> None:
    """Lag, its parts and GETs per task from the simulator's world and request log; ``done`` maps a task id
    to the moments its outputs were in place and its result was final (the same for the SDK)."""
    gets: dict[str, list[float]] = {}
    creates = 0
    for entry in sim.requests("/v1/"):
        match = _TASK_GET.match(entry["path"])
        if entry["method"] == "GET" and match:
            gets.setdefault(match.group(1), []).append(parse_ms(entry["time"]))
        elif entry["method"] == "POST" and entry["path"] != "/v1/uploads":
            creates += 1
        else:
            side.other_requests += 1
    side.other_requests += max(0, creates - len(sim.world.tasks))  # creates answered with an error
    for task_id, (outputs, finished) in done.items():
        task = sim.world.tasks[task_id]
        ends = task.ends
        assert ends is not None  # no concurrency limit: every task had a slot from its create
        side.ends[task_id], side.endpoints[task_id] = ends, f"{task.endpoint} {task.body.get('duration', '')}"
        side.created[task_id] = task.created
        times = gets.get(task_id, [])
        side.gets[task_id] = len(times)
        if times:
            side.first_get[task_id] = times[0]
        side.lag[task_id] = finished - ends
        side.status_write[task_id] = finished - outputs
        # The log keeps ms: the first GET in the same ms as the end or later is the one that saw it end.
        seen = next((t for t in times if t >= math.floor(ends * 1000) / 1000), None)
        if seen is not None:
            side.poll_wait[task_id] = seen - ends
            side.download[task_id] = outputs - seen


def run_runwatch(root: Path, all_bodies: list[dict[str, Any]], scale: float, seed: int, timeout: float) -> Side:
    side = Side("runwatch")
    inbox, outbox = root / "inbox", root / "outbox"
    inbox.mkdir(parents=True)
    with Simulator(sim_config(scale, seed)) as sim:
        config = parse_config(
            {
                "runway": {"base_url": sim.url, "poll_interval": 5.0 * scale},
                "state": {"dir": str(root / "state")},
                "scheduler": {"max_in_flight": len(all_bodies) + 10, "per_model": len(all_bodies) + 10},
                "inbox": [{"path": str(inbox), "outbox": str(outbox)}],
            },
            "bench",
        )
        daemon = Daemon(config, api_key=sim.key)
        daemon.start()
        started = time.time()
        for i, body in enumerate(all_bodies):
            tmp = inbox / f"t{i:03d}.json.tmp"  # the inbox ignores *.tmp: the rename is the drop
            tmp.write_text(json.dumps(body))
            os.rename(tmp, inbox / f"t{i:03d}.json")
        stop = threading.Event()
        guard = threading.Timer(timeout, stop.set)  # a stuck run ends and reports what it has
        guard.start()
        try:
            daemon.run(stop, once=True)
        finally:
            guard.cancel()
        side.seconds = time.time() - started
        done: dict[str, tuple[float, float]] = {}
        for i in range(len(all_bodies)):
            path = outbox / f"t{i:03d}.status.json"
            status = json.loads(path.read_text()) if path.exists() else {}
            if status.get("state") != "succeeded":
                side.failed.append(f"t{i:03d}: {status.get('state')} {status.get('error')}")
                continue
            outputs = max(os.stat(outbox / o["file"]).st_ctime for o in status["outputs"])
            done[status["task_id"]] = outputs, path.stat().st_ctime
        account(sim, side, done)
    return side


def run_sdk(root: Path, all_bodies: list[dict[str, Any]], scale: float, seed: int, timeout: float) -> Side:
    side = Side("SDK")
    out = root / "sdk-out"
    out.mkdir(parents=True)
    done: dict[str, tuple[float, float]] = {}
    lock = threading.Lock()
    saved = sdk_polling.POLL_TIME, sdk_polling.POLL_JITTER
    # Module globals, read by wait_for_task_output at every sleep: the only knob the SDK has.
    sdk_polling.POLL_TIME, sdk_polling.POLL_JITTER = 6 * scale, 3 * scale  # type: ignore[assignment]
    try:
        with (
            Simulator(sim_config(scale, seed)) as sim,
            runwayml.RunwayML(base_url=sim.url, api_key=sim.key) as client,
            httpx.Client() as http,
        ):

            def one(i: int, body: dict[str, Any]) -> None:
                args = snake({k: v for k, v in body.items() if k != "endpoint"})
                try:
                    created = getattr(client, body["endpoint"]).create(**args)
                    task = created.wait_for_task_output(timeout=timeout)
                    for n, url in enumerate(task.output):
                        answer = http.get(url)
                        answer.raise_for_status()
                        (out / f"t{i:03d}_{n}{Path(url.split('?')[0]).suffix}").write_bytes(answer.content)
                    finished = time.time()
                    with lock:
                        done[task.id] = finished, finished
                except Exception as exc:  # noqa: BLE001 - counted and shown, the run goes on
                    with lock:
                        side.failed.append(f"t{i:03d}: {exc!r}")

            started = time.time()
            threads = [threading.Thread(target=one, args=(i, b), daemon=True) for i, b in enumerate(all_bodies)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(max(0.0, started + timeout - time.time()))
            side.seconds = time.time() - started
            account(sim, side, dict(done))
    finally:
        sdk_polling.POLL_TIME, sdk_polling.POLL_JITTER = saved
    return side


def per_task(side: Side) -> list[dict[str, Any]]:
    return [
        {
            "task": t,
            "endpoint": side.endpoints.get(t),
            "created": side.created.get(t),
            "first_get": side.first_get.get(t),
            "ends": side.ends.get(t),
            "lag": lag,
            "poll_wait": side.poll_wait.get(t),
            "download": side.download.get(t),
            "status_write": side.status_write.get(t),
            "gets": side.gets.get(t),
        }
        for t, lag in side.lag.items()
    ]


# -- the table --------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def rows(ours: Side, sdk: Side, scale: float, tasks: int) -> list[dict[str, Any]]:
    def secs(values: list[float], q: float | None) -> str:
        if not values:
            return "n/a"
        v = statistics.median(values) if q is None else pct(values, q)
        return f"{v:.3f} s ({v / scale:.2f} s unscaled)"

    def part(side: Side, what: Callable[[Side], dict[str, float]]) -> str:
        values = list(what(side).values())
        return f"{statistics.median(values):.3f} s" if values else "n/a"

    def first_look(side: Side) -> dict[str, float]:
        return {t: side.first_get[t] - side.created[t] for t in side.first_get}

    def gets(side: Side, fn: Callable[[list[int]], float]) -> str:
        values = list(side.gets.values())
        return f"{fn(values):.2f}" if values else "n/a"

    out: list[dict[str, Any]] = []

    def add(what: str, figure: str, baseline: str, target: str = "", met: bool | None = None) -> None:
        out.append({"what": what, "figure": figure, "baseline": baseline, "target": target, "met": met})

    a, b = list(ours.lag.values()), list(sdk.lag.values())
    add(
        "tasks with outputs complete",
        f"{len(a)} of {tasks}",
        f"{len(b)} of {tasks}",
        f"all {tasks}",
        len(a) == tasks and len(b) == tasks,
    )
    add(
        "lag p50, task end -> outputs complete",
        secs(a, None),
        secs(b, None),
        "runwatch lower than SDK",
        bool(a and b) and statistics.median(a) < statistics.median(b),
    )
    add("lag p90", secs(a, 0.9), secs(b, 0.9))
    add("lag max", secs(a, 1.0), secs(b, 1.0))
    add("… p50 create -> first GET of the task", part(ours, first_look), part(sdk, first_look))
    add(
        "… p50 poll wait (end -> first GET after it)",
        part(ours, lambda s: s.poll_wait),
        part(sdk, lambda s: s.poll_wait),
    )
    add("… p50 download (-> outputs complete)", part(ours, lambda s: s.download), part(sdk, lambda s: s.download))
    add("… p50 status file write (-> final status file)", part(ours, lambda s: s.status_write), "none")
    mean_a = statistics.fmean(ours.gets.values()) if ours.gets else math.inf
    mean_b = statistics.fmean(sdk.gets.values()) if sdk.gets else 0.0
    add(
        "GETs per task, mean",
        gets(ours, statistics.fmean),
        gets(sdk, statistics.fmean),
        "runwatch ≤ SDK",
        bool(ours.gets and sdk.gets) and mean_a <= mean_b,
    )
    add("GETs per task, max", gets(ours, max), gets(sdk, max))
    add(
        "other /v1 requests (organization, failed creates), whole run",
        str(ours.other_requests),
        str(sdk.other_requests),
    )
    add("wall time of the side", f"{ours.seconds:.1f} s", f"{sdk.seconds:.1f} s")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--scale", type=float, default=0.3, help="time factor for all three (default 0.3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds each side may take")
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    parser.add_argument("--dir", type=Path, help="where the run's temporary folders go (default: the system's)")
    parser.add_argument("--dump", type=Path, help="write every task's figures (JSON) to this file")
    args = parser.parse_args()
    configure_logging("warning", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run
    all_bodies = bodies(args.tasks)
    with tempfile.TemporaryDirectory(prefix="runwatch-follow-", dir=args.dir) as tmp:
        ours = run_runwatch(Path(tmp) / "runwatch", all_bodies, args.scale, args.seed, args.timeout)
        sdk = run_sdk(Path(tmp) / "sdk", all_bodies, args.scale, args.seed, args.timeout)
    table = rows(ours, sdk, args.scale, args.tasks)
    if args.dump:
        args.dump.write_text(json.dumps({side.name: per_task(side) for side in (ours, sdk)}, indent=1))
    if not args.json:
        print(
            f"{args.tasks} tasks, scale {args.scale:g} (runwatch poll_interval {5 * args.scale:g} s, "
            f"SDK POLL_TIME {6 * args.scale:g} s ± {1.5 * args.scale:g} s)\n"
        )
    emit(table, args.json, baseline="SDK baseline")
    for side in (ours, sdk):
        for problem in side.failed[:10]:
            print(f"{side.name} did not complete {problem}", file=sys.stderr)
    return 0 if all(r["met"] is not False for r in table) else 1


if __name__ == "__main__":
    sys.exit(main())
