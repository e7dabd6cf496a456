"""Drop-to-submit latency: `python bench/drop_to_submit.py [--drops 500]`.

From the rename of a ready request into a local inbox to its create call reaching the simulator (no upload),
over N drops one after another, with the real daemon (inotify observer) and the simulator in this process.
Beside it, the baseline: watchdog's raw event latency for the same renames on the same machine.
Prints p50 / p99 / max in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from runwatch.config import parse_config
from runwatch.daemon import Daemon
from runwatch.logs import configure_logging
from runwatch.simulator import SimConfig, Simulator

BODY = {"endpoint": "text_to_speech", "model": "eleven_multilingual_v2", "promptText": "hi",
        "voice": {"type": "runway-preset", "presetId": "Maya"}}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(label: str, ms: list[float]) -> str:
    return (f"| {label} | {len(ms)} | {statistics.median(ms):.2f} | {pct(ms, 0.99):.2f} | {max(ms):.2f} |")


def baseline(drops: int, root: Path) -> list[float]:
    """Raw watchdog: rename a file in, time until the observer's handler sees it."""
    inbox = root / "raw"
    inbox.mkdir()
    seen: dict[str, float] = {}
    event = threading.Event()

    class Handler(FileSystemEventHandler):
        def on_any_event(self, ev: FileSystemEvent) -> None:
            path = str(ev.dest_path or ev.src_path)
            if path.endswith(".json") and path not in seen:
                seen[path] = time.perf_counter()
                event.set()

    observer = Observer()
    observer.schedule(Handler(), str(inbox))
    observer.start()
    out = []
    try:
        for i in range(drops):
            tmp = root / f"raw{i}.json"
            tmp.write_text("{}")
            event.clear()
            start = time.perf_counter()
            os.rename(tmp, inbox / f"r{i}.json")
            event.wait(5)
            out.append((seen[str(inbox / f"r{i}.json")] - start) * 1000)
    finally:
        observer.stop()
        observer.join()
    return out


def runwatch(drops: int, root: Path) -> list[float]:
    """The daemon: rename a request in, time until its create is logged by the simulator."""
    with Simulator(SimConfig(time_scale=0.001, daily_limit=None, concurrency=None)) as sim:
        inbox = root / "inbox"
        inbox.mkdir()
        config = parse_config({
            "runway": {"base_url": sim.url, "poll_interval": 0.5},
            "state": {"dir": str(root / "state")},
            "inbox": [{"path": str(inbox), "outbox": str(root / "outbox")}],
        }, "bench")
        daemon = Daemon(config, api_key=sim.key)
        daemon.start()
        stop = threading.Event()
        thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
        thread.start()
        out = []
        try:
            for i in range(drops):
                tmp = root / f"req{i}.json"
                tmp.write_text(json.dumps(dict(BODY, promptText=f"line {i}")))
                before = sim.create_count()
                start = time.perf_counter()
                os.rename(tmp, inbox / f"r{i}.json")
                while sim.create_count() == before:
                    time.sleep(0.0002)
                    if time.perf_counter() - start > 10:
                        raise SystemExit(f"drop {i} was not submitted within 10 s")
                out.append((time.perf_counter() - start) * 1000)
        finally:
            stop.set()
            thread.join(30)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--drops", type=int, default=500)
    args = parser.parse_args()
    configure_logging("warning", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run
    with tempfile.TemporaryDirectory() as tmp:
        raw = baseline(args.drops, Path(tmp))
        ours = runwatch(args.drops, Path(tmp))
    print("| what | drops | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    print(row("watchdog raw event (baseline)", raw))
    print(row("runwatch: rename in -> create at the simulator", ours))
    return 0


if __name__ == "__main__":
    sys.exit(main())
