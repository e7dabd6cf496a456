"""Idle CPU of the daemon: `python bench/idle.py [--seconds 60] [--inboxes 10] [--json]`.

Starts `runwatch run` (a subprocess, as users run it) with a config of ``--inboxes`` empty inboxes against
`runwatch simulate` (another subprocess), waits until the daemon says READY=1 on a notify socket of ours (as
systemd would see it) plus ``--settle`` seconds, then reads the daemon's utime + stime from /proc/PID/stat
at the start and the end of ``--seconds`` and reports CPU time as a percentage of one core. Everything else
is the config's defaults (rescans every 30 s, the main loop's own period, the HTTP server listening on a loopback
port, log level info to /dev/null).

Two rows: inotify inboxes (the default on a local disk), then ``polling = true`` inboxes (network-share mode).
Each row's baseline runs over the same window in a process of its own: a bare watchdog observer of the same
kind (``Observer`` with inotify, ``PollingObserver`` with runwatch's 1 s period) over the same folders. A
bare sleeping Python process is measured beside the first row.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit

KEY = "key_" + "c" * 128
TICKS = os.sysconf("SC_CLK_TCK")
TARGET = 0.5  # % of one core

# A bare watchdog observer over the folders in argv[2:]; argv[1] is "inotify" or "polling".
WATCHDOG_BASELINE = """
import sys, time
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

observer = PollingObserver(timeout=1.0) if sys.argv[1] == "polling" else Observer()
for folder in sys.argv[2:]:
    observer.schedule(FileSystemEventHandler(), folder, recursive=False)
observer.start()
print("ready", flush=True)
time.sleep(1e6)
"""
SLEEPER = 'import time; print("ready", flush=True); time.sleep(1e6)'


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        text = fh.read()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICKS  # fields 14 and 15 of stat(5)


def start_sim(root: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "runwatch.cli", "simulate", "--port", "0", "--key", KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=root,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()[-1]


def write_config(root: Path, url: str, inboxes: int, polling: bool) -> tuple[Path, list[Path]]:
    folders = [root / f"inbox{i}" for i in range(inboxes)]
    lines = ["[runway]", f'base_url = "{url}"', "", "[state]", f'dir = "{root / "state"}"', ""]
    lines += ["[http]", 'listen = "127.0.0.1:0"', ""]  # the HTTP server on, as by default, on a port of its own
    for i, folder in enumerate(folders):
        folder.mkdir()
        lines += [
            "[[inbox]]",
            f'path = "{folder}"',
            f'outbox = "{root / f"outbox{i}"}"',
            f"polling = {'true' if polling else 'false'}",
            "",
        ]
    config = root / "runwatch.toml"
    config.write_text("\n".join(lines))
    return config, folders


def start_daemon(config: Path, root: Path, timeout: float = 60.0) -> subprocess.Popen[bytes]:
    """`runwatch run`, returned once it has sent READY=1 to our notify socket."""
    address = root / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(address))
    sock.settimeout(0.5)
    env = {**os.environ, "RUNWAYML_API_SECRET": KEY, "NOTIFY_SOCKET": str(address)}
    env.pop("WATCHDOG_USEC", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runwatch.cli", "run", "--config", str(config), "--allow-root"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=root,
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"runwatch run exited with status {proc.returncode} before READY=1")
            if time.monotonic() > deadline:
                proc.terminate()
                raise SystemExit(f"runwatch run sent no READY=1 within {timeout:.0f} s")
            try:
                message = sock.recv(4096).decode(errors="replace")
            except TimeoutError:
                continue
            if "READY=1" in message.splitlines():
                return proc
    finally:
        sock.close()
        address.unlink(missing_ok=True)


def start_ready(code: str, *argv: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"baseline process {code[:40]!r} did not start")
    return proc


def measure(procs: dict[str, subprocess.Popen[Any]], seconds: float) -> dict[str, float]:
    """CPU % of one core of each process over the same ``seconds`` of wall time."""
    before = {name: cpu_seconds(p.pid) for name, p in procs.items()}
    started = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - started
    after = {name: cpu_seconds(p.pid) for name, p in procs.items()}
    for name, p in procs.items():
        if p.poll() is not None:
            raise SystemExit(f"{name} exited (status {p.returncode}) during the measurement")
    return {name: 100.0 * (after[name] - before[name]) / wall for name in procs}


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def one_mode(mode: str, args: argparse.Namespace, log: Any) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix=f"runwatch-bench-idle-{mode}-"))
    started: list[subprocess.Popen[Any]] = []
    try:
        sim, url = start_sim(root)
        started.append(sim)
        config, folders = write_config(root, url, args.inboxes, polling=mode == "polling")
        daemon = start_daemon(config, root)
        started.append(daemon)
        procs: dict[str, subprocess.Popen[Any]] = {"runwatch": daemon}
        procs["watchdog"] = start_ready(WATCHDOG_BASELINE, mode, *map(str, folders))
        started.append(procs["watchdog"])
        if args.sleeper and mode == "inotify":
            procs["sleep"] = start_ready(SLEEPER)
            started.append(procs["sleep"])
        time.sleep(args.settle)
        result = measure(procs, args.seconds)
        print(f"{mode}: " + ", ".join(f"{k} {v:.3f}%" for k, v in result.items()), file=log, flush=True)
        return result
    finally:
        for proc in reversed(started):
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each measurement window")
    parser.add_argument("--inboxes", type=int, default=10)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after READY=1 before measuring")
    parser.add_argument("--modes", default="inotify,polling", help="comma-separated: inotify, polling")
    parser.add_argument(
        "--no-sleeper", dest="sleeper", action="store_false", help="leave out the bare sleeping Python baseline"
    )
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        if mode not in ("inotify", "polling"):
            parser.error(f"--modes: unknown mode {mode!r}")
        r = one_mode(mode, args, sys.stderr)
        observer = "Observer (inotify)" if mode == "inotify" else "PollingObserver(timeout=1.0)"
        rows.append(
            {
                "what": f"idle CPU, `runwatch run` watching {args.inboxes} empty inboxes ({mode}), HTTP server on, "
                f"{args.seconds:g} s",
                "figure": f"{r['runwatch']:.2f}% of one core",
                "baseline": f"{r['watchdog']:.2f}% (bare watchdog {observer} over the same folders)",
                "target": f"< {TARGET}% of one core",
                "met": r["runwatch"] < TARGET,
            }
        )
        if "sleep" in r:
            rows.append(
                {
                    "what": "idle CPU, bare sleeping Python process (same window)",
                    "figure": "",
                    "baseline": f"{r['sleep']:.2f}%",
                    "target": "",
                    "met": None,
                }
            )
    emit(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
