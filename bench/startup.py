"""Start-up times, whole process: `python bench/startup.py [--runs 10] [--files 1000] [--json]`.

Each command runs ``--runs`` times as a fresh subprocess (after one untimed warm-up run, so the page cache
and bytecode caches are warm as on a machine in use); the figure is the median wall time from spawn to exit.

- ``runwatch --help`` (the installed console script beside this Python), against the interpreter's own
  start-up, ``python -c pass``.
- ``runwatch validate DIR`` of ``--files`` valid request files (JSON; text-only bodies of four endpoints, so
  no media is probed) in a temporary folder with no config file (plain defaults), against a bare Python that
  reads and parses the same files with ``json``. The command must exit 0 (every file valid).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit

BODIES: list[dict[str, Any]] = [
    {
        "endpoint": "text_to_speech",
        "model": "eleven_multilingual_v2",
        "promptText": "Hello.",
        "voice": {"type": "runway-preset", "presetId": "Maya"},
    },
    {"endpoint": "text_to_video", "model": "veo3.1", "promptText": "a forest", "ratio": "1280:720", "duration": 8},
    {"endpoint": "sound_effect", "model": "eleven_text_to_sound_v2", "promptText": "rain"},
    {"endpoint": "text_to_image", "model": "bria_fibo_1_5", "promptText": "a cat on a sofa", "ratio": "1024:1024"},
]
PARSE_ALL = "import json, os, sys\nfor e in os.scandir(sys.argv[1]):\n    json.load(open(e.path))"


def runwatch_command() -> str:
    beside = Path(sys.executable).parent / "runwatch"
    found = str(beside) if beside.is_file() else shutil.which("runwatch")
    if not found:
        raise SystemExit(f"the runwatch command was found neither next to {sys.executable} nor on PATH")
    return found


def time_command(argv: list[str], runs: int, cwd: Path, env: dict[str, str]) -> list[float]:
    """Wall seconds of ``runs`` runs of ``argv`` after one warm-up; a non-zero exit stops the benchmark."""
    out = []
    for i in range(runs + 1):
        started = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(
                f"{' '.join(argv)} exited with status {proc.returncode}:\n"
                f"{proc.stdout.decode(errors='replace')[-2000:]}{proc.stderr.decode(errors='replace')}"
            )
        if i:
            out.append(elapsed)
    return out


def write_requests(folder: Path, count: int) -> None:
    folder.mkdir()
    for i in range(count):
        body = dict(BODIES[i % len(BODIES)])
        body["promptText"] = f"{body['promptText']} (request {i})"
        (folder / f"req{i:04d}.json").write_text(json.dumps(body))


def ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1000:.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="timed runs of each command (median)")
    parser.add_argument("--files", type=int, default=1000, help="request files for runwatch validate")
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    args = parser.parse_args()
    runwatch = runwatch_command()
    env = {k: v for k, v in os.environ.items() if k != "RUNWATCH_CONFIG" and not k.startswith("PYTHON")}
    work = Path(tempfile.mkdtemp(prefix="runwatch-bench-startup-"))
    try:
        requests = work / "requests"
        write_requests(requests, args.files)
        bare = time_command([sys.executable, "-c", "pass"], args.runs, work, env)
        helps = time_command([runwatch, "--help"], args.runs, work, env)
        parse = time_command([sys.executable, "-c", PARSE_ALL, str(requests)], args.runs, work, env)
        validate = time_command([runwatch, "validate", str(requests)], args.runs, work, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        {
            "what": f"`runwatch --help`, whole process, median of {args.runs}",
            "figure": ms(helps),
            "baseline": f"{ms(bare)} (`python -c pass`)",
            "target": "≤ 150 ms",
            "met": statistics.median(helps) <= 0.150,
        },
        {
            "what": (
                f"`runwatch validate DIR` of {args.files} valid request files, whole process, median of {args.runs}"
            ),
            "figure": ms(validate),
            "baseline": f"{ms(parse)} (bare Python: json.load of every file)",
            "target": "≤ 2 s",
            "met": statistics.median(validate) <= 2.0,
        },
    ]
    print(
        f"runs (ms): python -c pass {[round(x * 1000) for x in bare]}, --help {[round(x * 1000) for x in helps]}, "
        f"json parse {[round(x * 1000) for x in parse]}, validate {[round(x * 1000) for x in validate]}",
        file=sys.stderr,
    )
    emit(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
