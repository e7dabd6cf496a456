"""The container image's size and start-up: `python bench/container_start.py --image IMAGE [--runs 7] [--json]`.

Runs IMAGE (built from the Containerfile) ``--runs`` times with podman (``--engine docker`` for Docker), each
time a fresh container on a bind-mounted tree (config, inbox, outbox, a new state) with PUID/PGID of an
ordinary user and `runwatch simulate` on the host's loopback (``--network host``); the figure is the median
wall time from spawning ``podman run`` to the daemon's ``daemon.started`` log line (it is logged when every
inbox is watched: systemd's READY=1). One untimed run first, so the page cache is warm as on a machine in use.
Each container is stopped with SIGTERM and removed. The image's size is what ``podman image inspect`` says.

On hosts where crun or the default ulimits are refused, give ``--runtime runc`` and set CONTAINERS_CONF to a
file with ``[containers] default_ulimits = []``.
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
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit

KEY = "key_" + "e" * 128
PUID, PGID = 4321, 4322


def _engine(args: argparse.Namespace) -> list[str]:
    return [args.engine, *(["--runtime", args.runtime] if args.runtime else [])]


def _simulator() -> tuple[subprocess.Popen[str], str]:
    argv = [sys.executable, "-m", "runwatch.cli", "simulate", "--port", "0", "--time-scale", "0.01"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, line.split("listening on ", 1)[1].strip()


def _tree(root: Path, url: str) -> list[str]:
    for name in ("config", "inbox", "outbox", "state"):
        (root / name).mkdir()
    for name in ("inbox", "outbox"):
        os.chown(root / name, PUID, PGID)
    (root / "config" / "runwatch.toml").write_text(
        f'[runway]\nbase_url = "{url}"\n[state]\ndir = "/state"\n'
        '[[inbox]]\npath = "/data/inbox"\noutbox = "/data/outbox"\npolling = true\n'
    )
    (root / "key").write_text(KEY)
    return [
        f"--volume={root / 'config'}:/config",
        f"--volume={root / 'inbox'}:/data/inbox",
        f"--volume={root / 'outbox'}:/data/outbox",
        f"--volume={root / 'state'}:/state",
        f"--volume={root / 'key'}:/run/secrets/runway_api_key:ro",
    ]


def _start(args: argparse.Namespace, url: str) -> float:
    """Seconds from spawning `run` to daemon.started, for one new container."""
    name = f"runwatch-bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        mounts = _tree(Path(tmp), url)
        argv = [*_engine(args), "run", f"--name={name}", "--network=host", "--stop-timeout=60"]
        argv += [f"--env=PUID={PUID}", f"--env=PGID={PGID}", *mounts, args.image]
        started = time.monotonic()
        with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
            assert proc.stderr is not None
            try:
                for line in proc.stderr:
                    if '"event": "daemon.started"' in line:
                        return time.monotonic() - started
                raise SystemExit(f"the container ended before daemon.started (exit {proc.wait()})")
            finally:
                subprocess.run([*_engine(args), "stop", "--time=60", name], capture_output=True, check=False)
                proc.wait(90)
                subprocess.run([*_engine(args), "rm", "--force", name], capture_output=True, check=False)
                shutil.rmtree(tmp, ignore_errors=True)
    raise AssertionError("unreachable")


def _bare(args: argparse.Namespace) -> float:
    """Seconds for a container of the image that runs `true`: what starting any container costs here."""
    started = time.monotonic()
    argv = [*_engine(args), "run", "--rm", "--network=host", "--entrypoint=true", args.image]
    subprocess.run(argv, capture_output=True, check=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--engine", default="podman")
    parser.add_argument("--runtime", default=None, help="an OCI runtime for podman (runc, crun)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    inspect = subprocess.run(
        [*_engine(args), "image", "inspect", args.image], capture_output=True, text=True, check=True
    ).stdout
    size = json.loads(inspect)[0]["Size"]
    du = [*_engine(args), "run", "--rm", "--network=none", "--entrypoint=du", args.image, "-sb", "/opt/runwatch"]
    own = int(subprocess.run(du, capture_output=True, text=True, check=True).stdout.split()[0])
    proc, url = _simulator()
    try:
        _start(args, url)  # warm-up
        times = [_start(args, url) for _ in range(args.runs)]
        bare = [_bare(args) for _ in range(args.runs)]
    finally:
        proc.terminate()
        proc.wait(10)
    rows = [
        {
            "what": "container image size",
            "figure": f"{size / 1e6:.0f} MB, of which runwatch's environment (/opt/runwatch) {own / 1e6:.0f} MB",
            "baseline": "the base image: the rest",
            "target": "small",
        },
        {
            "what": f"container `run` to daemon.started (READY), median of {args.runs}",
            "figure": f"{statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})",
            "baseline": f"`run --rm IMAGE true` (the container alone): {statistics.median(bare):.2f} s",
            "target": "fast",
        },
    ]
    emit(rows, args.json)


if __name__ == "__main__":
    main()
