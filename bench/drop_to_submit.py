"""Drop-to-submit latency: `python bench/drop_to_submit.py [--drops 500] [--json]`.

From the rename of a ready request into a local inbox to its create call reaching the simulator (no upload),
over N drops one after another. runwatch runs as it does in use: `runwatch run` in its own process (inotify
observer), against `runwatch simulate` in another; the simulator stamps each request as it reads it, and
this process stamps each rename (both read the same wall clock), so nothing is timed inside the daemon.
The next drop waits until the previous request's status file has left `accepted`.

Beside it, the baseline: watchdog's raw event latency for the same renames on the same machine (an observer
in this process, its handler noting the time). Prints a table | what | runwatch | baseline | target |, or
with --json a list of rows {"what", "figure", "baseline", "target", "met"}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit
from scale import Daemon, Tree, simulator, wait_for

BODY = {
    "endpoint": "text_to_speech",
    "model": "eleven_multilingual_v2",
    "voice": {"type": "runway-preset", "presetId": "Maya"},
}
P50_TARGET_MS, P99_TARGET_MS = 20.0, 100.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def baseline(drops: int, root: Path) -> list[float]:
    """Raw watchdog: rename a file in, time until the observer's handler sees it."""
    inbox, staging = root / "raw", root / "raw-staging"
    inbox.mkdir()
    staging.mkdir()
    seen: dict[str, float] = {}
    event = threading.Event()

    class Handler(FileSystemEventHandler):
        def on_any_event(self, ev: FileSystemEvent) -> None:
            path = str(ev.dest_path or ev.src_path)
            if path.endswith(".json") and path not in seen:
                seen[path] = time.time()
                event.set()

    observer = Observer()
    observer.schedule(Handler(), str(inbox))
    observer.start()
    out = []
    try:
        for i in range(drops):
            tmp = staging / f"raw{i}.json"
            tmp.write_text("{}")
            event.clear()
            start = time.time()
            tmp.rename(inbox / f"r{i}.json")
            event.wait(5)
            out.append((seen[str(inbox / f"r{i}.json")] - start) * 1000)
    finally:
        observer.stop()
        observer.join()
    return out


def state_of(path: Path) -> str | None:
    """The state a status file shows; None while it is not there (or caught mid-replace: read again)."""
    try:
        return str(json.loads(path.read_text())["state"])
    except (OSError, ValueError, KeyError):
        return None


def drop_in_turn(staging: Path, inbox: Path, outbox: Path, drops: int) -> tuple[dict[str, float], int | None]:
    """Requests ``r0000``... written in ``staging`` and renamed into ``inbox`` one after another, each once the
    one before was submitted (its status file in ``outbox`` past ``accepted``). Returns the moment of each
    rename by promptText, and the index of a drop not submitted within 10 s (None when all were): it ends the
    run."""
    renamed: dict[str, float] = {}
    for i in range(drops):
        name, text = f"r{i:04d}", f"line {i}"
        staged = staging / f"{name}.json"
        staged.write_text(json.dumps(dict(BODY, promptText=text)))
        renamed[text] = time.time()
        staged.rename(inbox / f"{name}.json")
        status = outbox / f"{name}.status.json"
        if not wait_for(lambda status=status: state_of(status) not in (None, "accepted"), 10, 0.002):  # type: ignore[misc]
            return renamed, i
    return renamed, None


def runwatch(drops: int, root: Path, config_extra: str = "", strict: bool = True) -> list[float]:
    """The daemon in its own process: rename a request in; the simulator's stamp of its create (ms).

    ``config_extra`` is appended to the daemon's config (another benchmark's [[notify]], say); with ``strict``,
    a drop with no create at the simulator stops the run."""
    tree = Tree.make(root / "daemon")
    with simulator("--time-scale", "0.001", "--daily-limit", "0", "--concurrency", "0") as url:
        config = tree.config(url, scheduler={}, inbox={}, poll=0.5)
        if config_extra:
            with config.open("a") as file:
                file.write(config_extra)
        daemon = Daemon(tree, config, "info")
        try:
            daemon.wait_started()
            renamed, stuck = drop_in_turn(tree.staging, tree.inbox, tree.outbox, drops)
            if stuck is not None:
                raise SystemExit(f"drop {stuck} was not submitted within 10 s; see {daemon.log_path}")
            rows: list[dict[str, Any]] = httpx.get(f"{url}/_sim/requests", timeout=30).json()["requests"]
        finally:
            daemon.stop()
    creates = {
        r["body"]["promptText"]: float(r["at"])
        for r in rows
        if r["method"] == "POST" and r["path"] == "/v1/text_to_speech"
    }
    missing = set(renamed) - set(creates)
    if missing and strict:
        raise SystemExit(f"{len(missing)} drops have no create at the simulator")
    return [(creates[text] - at) * 1000 for text, at in renamed.items() if text in creates]


def rows(raw: list[float], ours: list[float]) -> list[dict[str, Any]]:
    p50, p99 = pct(ours, 0.5), pct(ours, 0.99)
    return [
        {
            "what": f"drop to submit, {len(ours)} drops: rename into a local inbox → create at the simulator, p50",
            "figure": f"{p50:.1f} ms",
            "baseline": f"watchdog raw event p50 {pct(raw, 0.5):.2f} ms",
            "target": f"≤ {P50_TARGET_MS:.0f} ms",
            "met": p50 <= P50_TARGET_MS,
        },
        {
            "what": "drop to submit, p99",
            "figure": f"{p99:.1f} ms (max {max(ours):.1f} ms)",
            "baseline": f"watchdog raw event p99 {pct(raw, 0.99):.2f} ms",
            "target": f"≤ {P99_TARGET_MS:.0f} ms",
            "met": p99 <= P99_TARGET_MS,
        },
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--drops", type=int, default=500)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = baseline(args.drops, Path(tmp))
        ours = runwatch(args.drops, Path(tmp))
    out = rows(raw, ours)
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
