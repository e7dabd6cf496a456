"""Notifications never slow the engine: `python bench/notify_latency.py [--drops 200] [--json]`.

Drop-to-create latency (as bench/drop_to_submit.py measures it: the rename of a ready request into the inbox to
its create reaching the simulator) with no [[notify]], then with a webhook told of every job event whose
receiver takes each connection and never answers. runwatch runs as `runwatch run` in its own process against
`runwatch simulate`; the receiver runs in this process. The two sides run in interleaved rounds. With the
webhook, p50 must stay within 5 ms of the run without and p99 within 20 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from drop_to_submit import pct, runwatch
from report import emit

P50_SLACK_MS, P99_SLACK_MS = 5.0, 20.0
EVENTS = ["succeeded", "failed", "cancelled", "rejected", "needs_attention", "held"]


class Silent:
    """A webhook receiver on loopback that reads each request and never answers it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.posts = 0
        silent = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                silent.posts += 1
                silent.release.wait(600)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def run(drops: int, root: Path, notify_url: str | None) -> list[float]:
    """drop_to_submit's measure, with a [[notify]] webhook told of every job event when ``notify_url`` is set."""
    extra = f'\n[[notify]]\nurl = "{notify_url}"\nevents = {json.dumps(EVENTS)}\n' if notify_url else ""
    return runwatch(drops, root, config_extra=extra, strict=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--drops", type=int, default=300, help="drops on each side, over all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="daemon runs on each side, interleaved")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    silent = Silent()
    told: list[float] = []
    plain: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # Interleaved rounds, told first in each: a machine that gets busier (or quieter) during the run
            # weighs on both sides alike.
            for i in range(args.rounds):
                told += run(args.drops // args.rounds, Path(tmp) / f"told{i}", silent.url)
                plain += run(args.drops // args.rounds, Path(tmp) / f"plain{i}", None)
    finally:
        silent.close()
    rows = []
    for q, slack in ((0.5, P50_SLACK_MS), (0.99, P99_SLACK_MS)):
        base, ours = pct(plain, q), pct(told, q)
        rows.append(
            {
                "what": f"drop to create with a webhook that never answers ({silent.posts} posts left hanging), "
                f"{len(told)} drops, p{int(q * 100)}",
                "figure": f"{ours:.1f} ms",
                "baseline": f"no [[notify]]: {base:.1f} ms",
                "target": f"≤ baseline + {slack:.0f} ms",
                "met": ours <= base + slack,
            }
        )
    emit(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
