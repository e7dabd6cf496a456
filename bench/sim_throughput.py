"""Requests per second the simulator holds: `python bench/sim_throughput.py [--seconds 10] [--clients 8]`.

The simulator runs in its own process (`runwatch simulate --port 0`), as users run it; the load comes from
client threads in this process, each with its own keep-alive connection. The mix is what a daemon sends:
one create, then GETs of that task until it ends. Prints one table row per run; run several times and take
the median.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit

KEY = "key_" + "e" * 128
BODY = {
    "model": "eleven_multilingual_v2",
    "promptText": "hello",
    "voice": {"type": "runway-preset", "presetId": "Maya"},
}


def worker(url: str, stop: threading.Event, counts: list[int], latencies: list[float]) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "X-Runway-Version": "2024-11-06"}
    with httpx.Client(base_url=url, headers=headers) as client:
        while not stop.is_set():
            started = time.perf_counter()
            task = client.post("/v1/text_to_speech", json=BODY).json()
            latencies.append(time.perf_counter() - started)
            counts[0] += 1
            for _ in range(4):
                if stop.is_set():
                    break
                started = time.perf_counter()
                client.get(f"/v1/tasks/{task['id']}")
                latencies.append(time.perf_counter() - started)
                counts[0] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    args = parser.parse_args()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runwatch.cli",
            "simulate",
            "--port",
            "0",
            "--key",
            KEY,
            "--daily-limit",
            "0",
            "--concurrency",
            "0",
            "--time-scale",
            "0.01",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        stop = threading.Event()
        counts = [[0] for _ in range(args.clients)]
        lats: list[list[float]] = [[] for _ in range(args.clients)]
        threads = [threading.Thread(target=worker, args=(url, stop, counts[i], lats[i])) for i in range(args.clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        total = sum(c[0] for c in counts)
        flat = sorted(x for lat in lats for x in lat)
        p50 = statistics.median(flat) * 1000
        p99 = flat[int(len(flat) * 0.99)] * 1000
        row = {
            "what": f"simulator throughput, create + 4 GETs per task, {args.clients} keep-alive clients in "
            "another process",
            "figure": f"{total / elapsed:.0f} requests/s (p50 {p50:.1f} ms, p99 {p99:.1f} ms)",
            "baseline": "—",
            "target": "hundreds per second",
            "met": total / elapsed >= 200,
        }
        emit([row], args.json)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
