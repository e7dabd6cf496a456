"""Scale: many requests dropped at once, many tasks in flight at once.

    python bench/scale.py [--sizes 100,1000,10000] [--in-flight 100,1000] [--task-seconds 60]
                          [--window 20] [--hold approve|cap] [--json] [--dir DIR] [--py-spy DIR]

Both the daemon (``runwatch run --config FILE``, default log level) and the simulator (``runwatch simulate``)
run as subprocesses, so the daemon's figures are its own: peak RSS is ``VmHWM`` from ``/proc/PID/status``,
CPU is ``utime + stime`` from ``/proc/PID/stat``.

Part A, taking (per size N of ``--sizes``): N ready requests are written into a staging folder on the inbox's
filesystem before the daemon starts; once it has logged ``daemon.started`` they are renamed into the inbox one
after another as fast as Python can (that is "dropped at once"), and the clock runs until every request has a
status file in the outbox (any state: the target is "taken and have status files"). Figures: that time, the
daemon's peak RSS, its CPU seconds from the first rename to the last status file, and its CPU while the N
requests then wait (``--idle`` seconds). Baseline: the time of the renames alone.

Submissions are held so the API does not pace the taking. ``--hold approve`` (the default) sets the inbox's
``approve_above = 0``: every request (estimated 1 credit) is accepted, estimated, status-written and then
``held`` for approval, i.e. it goes through every step of taking including the money checks, and nothing is
created at the simulator. That is the realistic "a big batch waits for a person" case, and the waiting CPU
figure shows what held requests cost. ``--hold cap`` instead sets ``max_in_flight = 1`` against a slow
simulator: the requests stay ``accepted`` and one task at a time is in flight (no money guard involved).

Part B, in flight (per size N of ``--in-flight``): the simulator runs with no concurrency or daily limit;
the requests are 4-second text_to_video clips, which the simulator queues for ~3 s and runs for ~44 s (each
phase jittered ±25 %), Runway's own pace (time scale 1) unless ``--task-seconds`` asks for another length;
the config allows ``max_in_flight = per_model = N`` and polls every ``--poll-interval`` seconds (Runway's
default 5). N requests are dropped at once. "While waiting" is the whole wait: from the moment every job has
a task id (read from the journal, read-only) to the moment the first task is done; the target is judged on
it. Inside it, the ``--window`` seconds from two seconds after the last create are also shown alone: they
hold every task's first look (a GET, a state change, a status file), the busiest part of the wait (checked:
no job left the in-flight states during the window). Then the clock runs until every job is final. Figures:
drop → all submitted, CPU % of one core while waiting, peak RSS, drop → all final (baseline: how long the
tasks themselves last at the simulator). Baseline for the CPU and RSS rows: the same N tasks followed the
official SDK's way against a fresh simulator, one thread per task in ``wait_for_task_output`` at its default
interval (bench/sdk_wait.py, its own process, CPU read over the same span: all created → first done);
``--no-sdk`` skips it.

Part A's requests are text_to_speech with eleven_multilingual_v2 and a distinct promptText each; no media.
Output: a markdown table | what | runwatch | baseline | target |, or with ``--json`` a JSON list of rows
``{"what", "figure", "baseline", "target", "met"}``. ``--py-spy DIR`` records a py-spy profile of the daemon
during each measured phase (collapsed stacks per thread, idle frames included, so wall time in fsync shows):
it slows the daemon, so do not quote the figures of a profiled run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit

KEY = "key_" + "0" * 128
FINAL = frozenset({"succeeded", "rejected", "failed", "cancelled", "needs_attention"})
AT_RUNWAY = frozenset({"submitted", "throttled", "pending", "running"})
VIDEO_PHASES = (3.0, 20.0 + 6.0 * 4)  # the simulator's queue and run seconds of a 4 s text_to_video clip
JITTER = (0.75, 1.25)  # the simulator's per-phase jitter
TAKE_TARGET_S = 30.0
RSS_TARGET_MB = 200.0
CPU_TARGET_PCT = 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    what: str
    figure: str
    baseline: str = "—"
    target: str = "—"
    met: bool | None = None


def body(index: int, video: bool = False) -> dict[str, Any]:
    if video:
        return {
            "endpoint": "text_to_video",
            "model": "veo3.1",
            "promptText": f"scene {index}",
            "ratio": "1280:720",
            "duration": 4,
        }
    return {
        "endpoint": "text_to_speech",
        "model": "eleven_multilingual_v2",
        "promptText": f"hi {index}",
        "voice": {"type": "runway-preset", "presetId": "Maya"},
    }


# -- /proc ----------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)


def memory_mb(pid: int) -> tuple[float, float]:
    """(peak RSS, current RSS) in MB, from VmHWM and VmRSS."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmHWM", 0.0), values.get("VmRSS", 0.0)


# -- processes ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def simulator(*extra: str) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "runwatch.cli", "simulate", "--port", str(port), *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"the simulator did not start: {line!r}")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def stop(proc: subprocess.Popen[Any], timeout: float = 60.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclass
class Tree:
    root: Path
    inbox: Path
    outbox: Path
    state: Path
    staging: Path

    @classmethod
    def make(cls, root: Path) -> Tree:
        if root.exists():
            shutil.rmtree(root)
        tree = cls(root, root / "inbox", root / "outbox", root / "state", root / "staging")
        for folder in (tree.inbox, tree.outbox, tree.staging):
            folder.mkdir(parents=True)
        return tree

    def config(self, url: str, *, scheduler: dict[str, Any], inbox: dict[str, Any], poll: float) -> Path:
        lines = [
            f'[runway]\nbase_url = "{url}"\npoll_interval = {poll}\n',
            f'[state]\ndir = "{self.state}"\n',
            "[scheduler]",
        ]
        lines += [f"{k} = {v}" for k, v in scheduler.items()]
        lines += ["", "[[inbox]]", f'path = "{self.inbox}"', f'outbox = "{self.outbox}"']
        lines += [f"{k} = {v}" for k, v in inbox.items()]
        path = self.root / "runwatch.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def stage(self, count: int, video: bool = False) -> list[str]:
        return stage(self.staging, count, video)

    def drop(self, names: list[str]) -> float:
        """Rename every staged request into the inbox; the seconds it took."""
        start = time.perf_counter()
        for name in names:
            os.rename(self.staging / name, self.inbox / name)
        return time.perf_counter() - start

    def status_count(self) -> int:
        with os.scandir(self.outbox) as entries:
            return sum(1 for e in entries if e.name.endswith(".status.json") and not e.name.startswith("."))

    def status_states(self) -> Counter[str]:
        states: Counter[str] = Counter()
        for path in self.outbox.glob("*.status.json"):
            states[json.loads(path.read_text())["state"]] += 1
        return states

    def journal_states(self) -> Counter[str]:
        """Jobs per state, read-only (WAL readers do not block the daemon's writes)."""
        db = sqlite3.connect(f"file:{self.state / 'journal.sqlite3'}?mode=ro", uri=True, timeout=10)
        try:
            return Counter(dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()))
        except sqlite3.OperationalError:  # not created yet
            return Counter()
        finally:
            db.close()


class Daemon:
    """``runwatch run`` as a subprocess, its log in a file."""

    def __init__(self, tree: Tree, config: Path, log_level: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWAY", "AWS_"))}
        env["RUNWAYML_API_SECRET"] = KEY
        env["RUNWATCH_ALLOW_ROOT"] = "1"  # a throwaway tree; harmless as root
        self.log_path = tree.root / "daemon.log"
        argv = [sys.executable, "-m", "runwatch.cli", "run", "--config", str(config), "--log-level", log_level]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=tree.root, env=env, stdout=log, stderr=log)
        self.pid = self.proc.pid
        self.spy: subprocess.Popen[bytes] | None = None

    def wait_started(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited ({self.proc.returncode}); see {self.log_path}")
            if b"daemon.started" in self.log_path.read_bytes():
                return
            time.sleep(0.05)
        raise RuntimeError(f"the daemon did not start within {timeout} s; see {self.log_path}")

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def peak_mb(self) -> float:
        return memory_mb(self.pid)[0]

    def profile(self, out: Path | None) -> None:
        """Start py-spy recording this daemon (until :meth:`stop_profile`)."""
        if out is None:
            return
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.spy = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(self.pid),
                "--format",
                "raw",
                "--rate",
                "50",
                "--threads",
                "--nonblocking",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # let it attach

    def stop_profile(self) -> None:
        if self.spy is not None:
            self.spy.send_signal(signal.SIGINT)
            try:
                self.spy.wait(60)
            except subprocess.TimeoutExpired:
                self.spy.kill()
            self.spy = None

    def stop(self) -> None:
        self.stop_profile()
        stop(self.proc)


def task_gets(url: str, since: float, until: float) -> int:
    """How many task GETs the simulator answered between two wall-clock moments."""
    rows = httpx.get(f"{url}/_sim/requests", timeout=60).json()["requests"]
    return sum(
        1
        for r in rows
        if r["method"] == "GET" and r["path"].startswith("/v1/tasks/") and since <= float(r["at"]) <= until
    )


def stage(staging: Path, count: int, video: bool = False) -> list[str]:
    """``count`` requests (videos, or speech) written in ``staging``, ready to be renamed into an inbox; their
    file names."""
    names = [f"r{i:05d}.json" for i in range(count)]
    for i, name in enumerate(names):
        (staging / name).write_text(json.dumps(body(i, video)))
    return names


def wait_for(check: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return False


def pct(cpu: float, seconds: float) -> float:
    return 100.0 * cpu / seconds if seconds > 0 else 0.0


def human(n: int) -> str:
    return f"{n:,}"


# -- part A: taking -------------------------------------------------------------------------------------


def take(n: int, root: Path, args: argparse.Namespace, log: Callable[[str], None]) -> list[Row]:
    tree = Tree.make(root / f"take-{n}")
    names = tree.stage(n)
    sim_args = ["--seed", "1", "--balance", "1000000000", "--concurrency", "0", "--daily-limit", "0"]
    scheduler: dict[str, Any] = {}
    inbox: dict[str, Any] = {}
    if args.hold == "approve":
        inbox["approve_above"] = 0
    else:
        sim_args += ["--time-scale", "1000"]  # one task in flight that never ends within the run
        scheduler["max_in_flight"] = 1
    with simulator(*sim_args) as url:
        config = tree.config(url, scheduler=scheduler, inbox=inbox, poll=args.poll_interval)
        daemon = Daemon(tree, config, args.log_level)
        try:
            daemon.wait_started()
            idle_mb = memory_mb(daemon.pid)[1]
            daemon.profile(args.py_spy / f"take-{n}.txt" if args.py_spy else None)
            cpu0 = daemon.cpu()
            start = time.perf_counter()
            renames = tree.drop(names)
            done = wait_for(lambda: tree.status_count() >= n, args.timeout)
            taken = time.perf_counter() - start
            cpu1 = daemon.cpu()
            daemon.stop_profile()
            peak = daemon.peak_mb()
            time.sleep(1.0)  # let the last writes after the status files settle
            cpu2 = daemon.cpu()
            time.sleep(args.idle)
            idle_cpu = daemon.cpu() - cpu2
            peak = max(peak, daemon.peak_mb())
            states = tree.status_states()
        finally:
            daemon.stop()
    log(
        f"take {n}: {taken:.2f} s (renames {renames:.3f} s), cpu {cpu1 - cpu0:.1f} s, peak {peak:.0f} MB "
        f"(idle before drop {idle_mb:.0f} MB), waiting {pct(idle_cpu, args.idle):.1f} %, states {dict(states)}"
    )
    what = f"take {human(n)} dropped at once"
    figure = f"{taken:.2f} s" if done else f"not done in {args.timeout:.0f} s ({tree.status_count()} status files)"
    return [
        Row(
            f"{what}: drop → every status file",
            figure,
            f"renames alone {renames:.3f} s",
            f"≤ {TAKE_TARGET_S:.0f} s (at 10,000)",
            done and taken <= TAKE_TARGET_S,
        ),
        Row(f"{what}: daemon peak RSS", f"{peak:.0f} MB (idle before the drop {idle_mb:.0f} MB)"),
        Row(
            f"{what}: daemon CPU, drop → every status file",
            f"{cpu1 - cpu0:.1f} s ({pct(cpu1 - cpu0, taken):.0f} % of one core)",
        ),
        Row(
            f"{what}: daemon CPU while the {human(n)} wait {'held' if args.hold == 'approve' else 'queued'}",
            f"{pct(idle_cpu, args.idle):.1f} % of one core",
            target=f"< {CPU_TARGET_PCT:.0f} % (as in flight)",
            met=pct(idle_cpu, args.idle) < CPU_TARGET_PCT,
        ),
    ]


# -- part B: in flight ----------------------------------------------------------------------------------


def in_flight(n: int, root: Path, args: argparse.Namespace, log: Callable[[str], None]) -> list[Row]:
    tree = Tree.make(root / f"flight-{n}")
    names = tree.stage(n, video=True)
    scale = args.task_seconds / sum(VIDEO_PHASES)
    shortest, longest = (sum(VIDEO_PHASES) * scale * j for j in JITTER)
    sim_args = [
        "--seed",
        "1",
        "--balance",
        "1000000000",
        "--concurrency",
        "0",
        "--daily-limit",
        "0",
        "--time-scale",
        f"{scale:g}",
    ]
    with simulator(*sim_args) as url:
        config = tree.config(url, scheduler={"max_in_flight": n, "per_model": n}, inbox={}, poll=args.poll_interval)
        daemon = Daemon(tree, config, args.log_level)
        try:
            daemon.wait_started()
            cpu0 = daemon.cpu()
            start = time.perf_counter()
            tree.drop(names)

            def submitted() -> bool:
                states = tree.journal_states()
                return sum(states[s] for s in AT_RUNWAY | FINAL | {"downloading"}) >= n

            all_sent = wait_for(submitted, args.timeout, 0.25)
            sent_at = time.perf_counter() - start
            cpu_sent = daemon.cpu() - cpu0
            span0, spanc0, wall0 = time.perf_counter(), daemon.cpu(), time.time()
            time.sleep(2.0)
            daemon.profile(args.py_spy / f"flight-{n}.txt" if args.py_spy else None)
            before = tree.journal_states()
            w0, c0 = time.perf_counter(), daemon.cpu()
            time.sleep(args.window)
            window_cpu, window = daemon.cpu() - c0, time.perf_counter() - w0
            after = tree.journal_states()
            daemon.stop_profile()
            quiet = sum(after[s] for s in AT_RUNWAY) == n and sum(before[s] for s in AT_RUNWAY) == n
            # The whole wait: from every task created to the first one done (nothing else happens meanwhile).
            wait_for(lambda: sum(tree.journal_states()[s] for s in FINAL | {"downloading"}) > 0, args.timeout, 0.1)
            span_cpu, span = daemon.cpu() - spanc0, time.perf_counter() - span0
            looks = task_gets(url, wall0, wall0 + span)
            ended = wait_for(lambda: sum(tree.journal_states()[s] for s in FINAL) >= n, args.timeout, 0.5)
            final_at = time.perf_counter() - start
            cpu_total = daemon.cpu() - cpu0
            peak = daemon.peak_mb()
            states = tree.status_states()
        finally:
            daemon.stop()
    waiting = pct(window_cpu, window)
    whole = pct(span_cpu, span)
    sdk = None if args.no_sdk else sdk_baseline(n, args, log)
    sdk_cpu = f"SDK, a thread per task: {sdk[0]:.1f} % over {sdk[1]:.0f} s" if sdk else "—"
    sdk_rss = f"SDK: {sdk[2]:.0f} MB" if sdk else "—"
    per_get = 1000 * span_cpu / looks if looks else 0.0
    log(
        f"in flight {n}: all sent {sent_at:.1f} s (cpu {cpu_sent:.1f} s), waiting {whole:.1f} % over {span:.0f} s "
        f"({looks} task GETs, {per_get:.2f} ms CPU each), first {window:.0f} s {waiting:.1f} %"
        f"{'' if quiet else ' (NOT quiet)'}, all final {final_at:.1f} s, cpu total "
        f"{cpu_total:.1f} s, peak {peak:.0f} MB, states {dict(states)}"
    )
    what = f"{human(n)} in flight"
    note = "" if quiet else " (jobs changed state during the window)"
    return [
        Row(f"{what}: drop → every task created", f"{sent_at:.1f} s" if all_sent else "not all sent", met=None),
        Row(
            f"{what}: daemon CPU while waiting, every task created → the first one done "
            f"(poll every {args.poll_interval:g} s)",
            f"{whole:.1f} % of one core over {span:.0f} s",
            sdk_cpu,
            target=f"< {CPU_TARGET_PCT:.0f} % of one core",
            met=whole < CPU_TARGET_PCT,
        ),
        Row(
            f"{what}: … task GETs while waiting",
            f"{looks} ({looks / n:.1f} per task, {per_get:.2f} ms of daemon CPU per GET)",
        ),
        Row(
            f"{what}: … of which the {window:.0f} s from 2 s after the last create (every task's first look)",
            f"{waiting:.1f} % of one core{note}",
        ),
        Row(
            f"{what}: daemon peak RSS",
            f"{peak:.0f} MB",
            sdk_rss,
            target=f"≤ {RSS_TARGET_MB:.0f} MB",
            met=peak <= RSS_TARGET_MB,
        ),
        Row(
            f"{what}: drop → every job final",
            f"{final_at:.1f} s ({states['succeeded']} succeeded), daemon CPU {cpu_total:.0f} s"
            if ended
            else "not all final",
            f"tasks last {shortest:.0f}–{longest:.0f} s at the simulator",
            "followed to the end",
            ended and states["succeeded"] == n,
        ),
    ]


def sdk_baseline(n: int, args: argparse.Namespace, log: Callable[[str], None]) -> tuple[float, float, float] | None:
    """bench/sdk_wait.py against a fresh simulator: (CPU % while waiting, over seconds, peak RSS MB)."""
    scale = args.task_seconds / sum(VIDEO_PHASES)
    sim_args = [
        "--seed",
        "1",
        "--balance",
        "1000000000",
        "--concurrency",
        "0",
        "--daily-limit",
        "0",
        "--time-scale",
        f"{scale:g}",
    ]
    script = Path(__file__).resolve().parent / "sdk_wait.py"
    with simulator(*sim_args) as url:
        proc = subprocess.Popen(
            [sys.executable, str(script), url, str(n), "--timeout", str(args.timeout)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "created":
                log(f"SDK baseline: no 'created' line: {proc.stderr.read() if proc.stderr else ''}")
                return None
            c0, t0 = cpu_seconds(proc.pid), time.perf_counter()
            if proc.stdout.readline().strip() != "first-done":
                return None
            cpu, span = cpu_seconds(proc.pid) - c0, time.perf_counter() - t0
            tail = proc.stdout.readline().split()  # "done OK FAILED" once every wait returned
            peak = memory_mb(proc.pid)[0]
        finally:
            stop(proc)
    log(f"SDK baseline {n}: waiting {pct(cpu, span):.1f} % over {span:.0f} s, peak {peak:.0f} MB, {tail}")
    return pct(cpu, span), span, peak


# -- output ---------------------------------------------------------------------------------------------


def sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()] if text.strip() else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", type=sizes, default=[100, 1000, 10000], help="part A sizes (comma list)")
    parser.add_argument("--in-flight", type=sizes, default=[100, 1000], help="part B sizes (comma list; '' skips)")
    parser.add_argument(
        "--hold",
        choices=["approve", "cap"],
        default="approve",
        help="how part A keeps requests from the API (see the docstring)",
    )
    parser.add_argument(
        "--task-seconds",
        type=float,
        default=sum(VIDEO_PHASES),
        help="part B: mean task length (default 47 s, Runway's pace)",
    )
    parser.add_argument("--poll-interval", type=float, default=5.0, help="[runway] poll_interval (default 5)")
    parser.add_argument("--window", type=float, default=20.0, help="part B: CPU sampling window, s (default 20)")
    parser.add_argument("--idle", type=float, default=5.0, help="part A: CPU sampling while held, s (default 5)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up a phase after this many seconds")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--dir", type=Path, help="work in DIR and keep it (default: a temporary folder)")
    parser.add_argument("--no-sdk", action="store_true", help="part B: skip the SDK baseline (bench/sdk_wait.py)")
    parser.add_argument("--py-spy", type=Path, help="record py-spy profiles of the daemon into DIR")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    root = args.dir or Path(tempfile.mkdtemp(prefix="runwatch-scale-"))
    root.mkdir(parents=True, exist_ok=True)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    rows: list[Row] = []
    try:
        for n in args.sizes:
            rows += take(n, root, args, log)
        for n in args.in_flight:
            rows += in_flight(n, root, args, log)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    emit([row.__dict__ for row in rows], args.json)
    return 0 if all(row.met is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
