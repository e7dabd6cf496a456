"""Crash harness: requests through `runwatch run` while it is killed with SIGKILL at random moments.

    python bench/crash_harness.py [--requests 200] [--kills 20] [--seed N] [--dir DIR] [--time-scale F]
                                  [--journal-loss]

Starts `runwatch simulate` (fast time, some 503s, 429s and task failures), writes a config, drops the requests
in waves (varied endpoints, some with a local image), runs `runwatch run` and SIGKILLs it at seeded random
moments, restarting after each kill, then lets a last run finish everything. It then checks what §6 promises:

- every request has a status file in a final state;
- no create was sent twice (the simulator's log of create bodies, and per request by its marker);
- no paid output lost: every succeeded request's outputs exist and are byte-identical to a fresh download,
  and no output was left twice (every file in the outbox is recorded by a status file);
- the journal is consistent: every job final, no task id in two jobs, every task at the simulator owned by
  one job (or by a needs_attention job whose create was cut off between send and record).

With ``--journal-loss`` every fourth kill also loses the journal, in turn: deleted, emptied (0 bytes), and
restored from the copy taken two kills before. A lost journal must stop the next start (exit 78) until
``runwatch journal rebuild`` makes it again from the work area; a restored one must be caught up by the work
area's intent markers. The same checks must hold. A loss falls on a kill after which the work area holds a taken
request (until then a lost journal is a fresh start, and rightly not refused).

Exit status 0 when every check holds. Each request's promptText carries a marker ``[rq-NNN]`` so a task at the
simulator can be traced back to its request even when its media URI differs between attempts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import httpx

if TYPE_CHECKING:
    from runwatch.jobs.job import Job

KEY = "key_" + "0" * 128
FINAL = {"succeeded", "rejected", "failed", "cancelled", "needs_attention"}
SAMPLES = Path(__file__).resolve().parent.parent / "runwatch" / "data" / "samples"
MARK = re.compile(r"\[rq-(\d+)\]")

# Faults that a client must survive without duplicating anything: 5xx and 429 before the work, task failures.
FAULTS = (
    "error:rate=0.04:status=503",
    "error:rate=0.02:status=502",
    "rate_limit:rate=0.04:retry_after=0.05",
    "fail:rate=0.03:failure_code=INTERNAL.BAD_OUTPUT.CODE01",
)


def request_body(index: int) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A varied request, its promptText marked so the simulator's tasks can be traced back to it."""
    mark = f"[rq-{index:04d}]"
    kind = index % 5
    if kind == 0:
        return {
            "endpoint": "text_to_speech",
            "model": "eleven_multilingual_v2",
            "promptText": f"Hello {mark}",
            "voice": {"type": "runway-preset", "presetId": "Maya"},
        }, ()
    if kind == 1:
        return {"endpoint": "sound_effect", "model": "eleven_text_to_sound_v2", "promptText": f"rain {mark}"}, ()
    if kind == 2:
        return {
            "endpoint": "image_to_video",
            "model": "gen4_turbo",
            "promptImage": f"still{index:04d}.jpg",
            "ratio": "1280:720",
            "duration": 5,
            "promptText": f"waves {mark}",
        }, (f"still{index:04d}.jpg",)
    if kind == 3:
        return {
            "endpoint": "text_to_image",
            "model": "gen4_image_turbo",
            "promptText": f"a cat {mark}",
            "ratio": "1920:1080",
            "referenceImages": [{"uri": f"ref{index:04d}.jpg", "tag": "cat"}],
        }, (f"ref{index:04d}.jpg",)
    return {
        "endpoint": "text_to_video",
        "model": "veo3.1",
        "promptText": f"a forest {mark}",
        "ratio": "1280:720",
        "duration": 8,
    }, ()


@dataclass
class Report:
    requests: int = 0
    kills: int = 0
    seconds: float = 0.0
    states: Counter[str] = field(default_factory=Counter)
    creates: int = 0
    problems: list[str] = field(default_factory=list)
    needs_attention: list[str] = field(default_factory=list)
    outputs_checked: int = 0
    losses: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"requests: {self.requests}, SIGKILLs: {self.kills}, wall time: {self.seconds:.1f} s",
            f"journal losses: {len(self.losses)}" + (f" ({', '.join(self.losses)})" if self.losses else ""),
            "final states: " + ", ".join(f"{k}={v}" for k, v in sorted(self.states.items())),
            f"creates at the simulator: {self.creates}",
            f"outputs checked byte for byte: {self.outputs_checked}",
            "needs_attention (create possibly made: cut off by a kill, or a 5xx after sending): "
            f"{len(self.needs_attention)}" + (f" {sorted(self.needs_attention)}" if self.needs_attention else ""),
        ]
        out.append("problems: none" if not self.problems else f"problems ({len(self.problems)}):")
        out.extend(f"  - {p}" for p in self.problems[:50])
        return out


class Harness:
    def __init__(
        self,
        root: Path,
        *,
        requests: int,
        kills: int,
        seed: int,
        time_scale: float,
        faults: tuple[str, ...] = FAULTS,
        log: Any = print,
        journal_loss: bool = False,
    ) -> None:
        self.root, self.requests, self.kills, self.seed = root, requests, kills, seed
        self.journal_loss = journal_loss
        self.loss_due = False  # a journal loss put off to the next kill
        self.time_scale, self.faults, self.log = time_scale, faults, log
        self.rng = random.Random(seed)  # seeded: a run can be replayed
        self.inbox, self.outbox, self.state = root / "inbox", root / "outbox", root / "state"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWAY", "AWS_"))}
        self.env["RUNWAYML_API_SECRET"] = KEY
        self.env["RUNWATCH_ALLOW_ROOT"] = "1"  # a rehearsal on a throwaway tree; harmless as root
        self.sim: subprocess.Popen[str] | None = None
        self.url = ""

    # -- processes --------------------------------------------------------------------------------

    def start_simulator(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        argv = [
            sys.executable,
            "-m",
            "runwatch.cli",
            "simulate",
            "--port",
            str(port),
            "--time-scale",
            str(self.time_scale),
            "--seed",
            str(self.seed),
            "--concurrency",
            "0",
        ]
        for spec in self.faults:
            argv += ["--fault", spec]
        self.sim = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.sim.stdout is not None
        line = self.sim.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"the simulator did not start: {line!r}")
        self.url = f"http://127.0.0.1:{port}"

    def stop_simulator(self) -> None:
        if self.sim is not None:
            self.sim.terminate()
            self.sim.wait(10)
            if self.sim.stdout is not None:
                self.sim.stdout.close()
            self.sim = None

    def write_config(self) -> Path:
        self.inbox.mkdir(parents=True, exist_ok=True)
        config = self.root / "runwatch.toml"
        config.write_text(
            f'[runway]\nbase_url = "{self.url}"\npoll_interval = 0.2\n\n'
            f'[state]\ndir = "{self.state}"\n\n[scheduler]\nrescan = 1.0\n\n'
            f'[[inbox]]\npath = "{self.inbox}"\noutbox = "{self.outbox}"\nsettle = 0.3\n'
        )
        return config

    def daemon(self, config: Path) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "runwatch.cli", "run", "--config", str(config), "--log-level", "warning"]
        with open(self.root / "daemon.log", "ab") as log:
            return subprocess.Popen(argv, cwd=self.root, env=self.env, stdout=log, stderr=log)

    def _journal_files(self) -> list[Path]:
        base = self.state / "journal.sqlite3"
        return [base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")]

    def lose_journal(self, kill: int, config: Path, report: Report) -> None:
        """Every fourth kill: the journal deleted, emptied, or put back to the copy of two kills before."""
        copies = self.root / "journal-copies"
        copy = copies / str(kill)
        copy.mkdir(parents=True, exist_ok=True)
        for f in self._journal_files():
            if f.exists():
                shutil.copy(f, copy / f.name)
        if kill % 4 != 3 and not self.loss_due:
            return
        from runwatch.config import load_config
        from runwatch.workrecords import claimed_anything

        if not any(claimed_anything(inbox) for inbox in load_config(config).inboxes):  # the daemon's own test
            # Nothing taken yet (every daemon so far was killed before its first claim): a lost journal is then
            # a fresh start, rightly not refused. The loss waits for a kill after something was taken.
            self.loss_due = True
            self.log("journal loss put off: nothing taken yet")
            return
        self.loss_due = False
        mode = ("deleted", "emptied", "older")[len(report.losses) % 3]
        older = copies / str(kill - 2)
        if mode == "older" and not older.is_dir():
            mode = "deleted"
        for f in self._journal_files():
            f.unlink(missing_ok=True)
        if mode == "emptied":
            self._journal_files()[0].write_bytes(b"")
        if mode == "older":
            for f in older.iterdir():
                shutil.copy(f, self.state / f.name)
            report.losses.append(mode)
            self.log(f"journal {mode}")
            return
        refused = self._cli(config, "run", "--once")
        if refused.returncode != 78:
            report.problems.append(f"journal {mode}: `runwatch run` exited {refused.returncode}, not 78")
        rebuilt = self._cli(config, "journal", "rebuild")
        if rebuilt.returncode != 0:
            report.problems.append(f"journal {mode}: rebuild failed: {rebuilt.stderr.strip()}")
        report.losses.append(mode)
        said = (rebuilt.stdout or rebuilt.stderr).strip().splitlines()
        self.log(f"journal {mode}: start refused ({refused.returncode}), {said[0] if said else 'rebuild said nothing'}")

    def _cli(self, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "runwatch.cli", *args, "--config", str(config)]
        return subprocess.run(argv, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=120)

    def drop(self, index: int) -> None:
        drop_request(self.inbox, index)

    def statuses(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for index in range(self.requests):
            path = self.outbox / f"r{index:04d}.status.json"
            try:
                out[f"r{index:04d}"] = json.loads(path.read_text())
            except FileNotFoundError:
                continue
        return out

    # -- the run ----------------------------------------------------------------------------------

    def run(self, final_timeout: float = 600.0) -> Report:
        report = Report(requests=self.requests)
        started = time.monotonic()
        self.start_simulator()
        try:
            config = self.write_config()
            waves = max(1, min(self.kills, self.requests))
            per_wave = -(-self.requests // waves)
            dropped = 0
            for kill in range(self.kills):
                proc = self.daemon(config)
                for _ in range(per_wave if dropped < self.requests else 0):
                    if dropped < self.requests:
                        self.drop(dropped)
                        dropped += 1
                time.sleep(self.rng.uniform(0.3, 2.5))
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                report.kills += 1
                if self.journal_loss:
                    self.lose_journal(kill, config, report)
                self.log(
                    f"kill {kill + 1}/{self.kills}: {dropped} dropped, "
                    f"{sum(1 for s in self.statuses().values() if s['state'] in FINAL)} final"
                )
            while dropped < self.requests:
                self.drop(dropped)
                dropped += 1
            proc = self.daemon(config)
            deadline = time.monotonic() + final_timeout
            while time.monotonic() < deadline:
                statuses = self.statuses()
                if len(statuses) == self.requests and all(s["state"] in FINAL for s in statuses.values()):
                    break
                time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                report.problems.append("the last daemon did not stop within 30 s of SIGTERM")
            self.check(report)
        finally:
            self.stop_simulator()
        report.seconds = time.monotonic() - started
        return report

    # -- the checks -------------------------------------------------------------------------------

    def check(self, report: Report) -> None:
        problems = report.problems
        statuses = self.statuses()
        for index in range(self.requests):
            name = f"r{index:04d}"
            status = statuses.get(name)
            if status is None:
                problems.append(f"{name}: no status file")
            elif status["state"] not in FINAL:
                error = status.get("error") or {}  # why it is stuck: a hold's code and reason
                why = f", {error.get('code')}: {error.get('message')}" if error else ""
                problems.append(f"{name}: not final ({status['state']}{why})")
            report.states[status["state"] if status else "missing"] += 1
        report.needs_attention = [n for n, s in statuses.items() if s["state"] == "needs_attention"]

        with sim_client(self.url) as http:
            report.creates, tasks, by_request = check_creates(http, problems)
            report.outputs_checked += check_outputs(http, self.outbox, statuses, problems)
        self._check_journal(tasks, by_request, report)

    def _check_journal(self, tasks: list[dict[str, Any]], by_request: dict[str, list[str]], report: Report) -> None:
        from runwatch.store import Journal

        journal = Journal(self.state / "journal.sqlite3")
        try:
            jobs = journal.jobs(limit=100_000)
        finally:
            journal.close()
        for job in jobs:
            if not job.final:
                report.problems.append(f"journal: job {job.id} ({job.name}) not final: {job.state}")
        check_task_owners(jobs, tasks, by_request, report.problems)


# -- checks shared with bench/nodes.py ------------------------------------------------------------


def drop_request(inbox: Path, index: int) -> None:
    """Request `index` (and its media) dropped in `inbox`, the request file renamed into place whole."""
    body, media = request_body(index)
    for item in media:
        shutil.copy(SAMPLES / "still.jpg", inbox / item)
    tmp = inbox / f"r{index:04d}.json.tmp"
    tmp.write_text(json.dumps(body))
    os.rename(tmp, inbox / f"r{index:04d}.json")


def sim_client(url: str) -> httpx.Client:
    return httpx.Client(
        base_url=url, timeout=30, headers={"Authorization": f"Bearer {KEY}", "X-Runway-Version": "2024-11-06"}
    )


def check_creates(http: httpx.Client, problems: list[str]) -> tuple[int, list[dict[str, Any]], dict[str, list[str]]]:
    """No create sent twice, by body and by request marker. Returns the simulator's count of creates, its
    tasks, and the task ids per request name (``?`` for a task without a marker)."""
    creates = http.get("/_sim/creates").json()
    tasks: list[dict[str, Any]] = http.get("/_sim/tasks").json()["tasks"]
    for entry in creates["bodies"]:
        if entry["count"] > 1:
            problems.append(f"the same body was created {entry['count']} times: tasks {entry['tasks']}")
    by_request: dict[str, list[str]] = defaultdict(list)
    for task in tasks:
        match = MARK.search(json.dumps(task["body"]))
        by_request[f"r{int(match.group(1)):04d}" if match else "?"].append(task["id"])
    for name, ids in by_request.items():
        if len(ids) > 1:
            problems.append(f"{name}: created {len(ids)} times ({ids})")
    return int(creates["total"]), tasks, by_request


def check_outputs(http: httpx.Client, outbox: Path, statuses: dict[str, dict[str, Any]], problems: list[str]) -> int:
    """No paid output lost: every succeeded request's outputs byte-identical to the simulator's, and no file in
    the outbox that no status file records. Returns how many outputs were compared."""
    checked = 0
    for name, status in sorted(statuses.items()):
        if status["state"] != "succeeded":
            continue
        urls = _get_task(http, status["task_id"]).get("output") or []
        if len(urls) != len(status["outputs"]) or not urls:
            problems.append(f"{name}: {len(status['outputs'])} outputs recorded, task has {len(urls)}")
            continue
        for url, out in zip(urls, status["outputs"], strict=True):
            try:
                data = (outbox / out["file"]).read_bytes()
            except FileNotFoundError:
                problems.append(f"{name}: output {out['file']} lost")
                continue
            fresh = httpx.get(url, timeout=30).content
            if data != fresh or hashlib.sha256(data).hexdigest() != out["sha256"] or len(data) != out["bytes"]:
                problems.append(f"{name}: output {out['file']} differs from the simulator's bytes")
            checked += 1
    # An output downloaded again (after a kill, or by a second node) must not be left as a second copy
    # (NAME.2.EXT).
    recorded = {out["file"] for status in statuses.values() for out in status.get("outputs") or []}
    for path in sorted(outbox.iterdir()):
        if ".status." not in path.name and not path.name.startswith(".") and path.name not in recorded:
            problems.append(f"{path.name}: an output file no status file records")
    return checked


def check_task_owners(
    jobs: list[Job], tasks: list[dict[str, Any]], by_request: dict[str, list[str]], problems: list[str]
) -> None:
    """No task id in two jobs, and every task at the simulator owned by a job (or by a needs_attention job
    whose create was cut off between send and record)."""
    owners: dict[str, list[str]] = defaultdict(list)
    for job in jobs:
        if job.task_id:
            owners[job.task_id].append(job.id)
    for task_id, ids in owners.items():
        if len(ids) > 1:
            problems.append(f"journal: task {task_id} belongs to jobs {ids}")
    attention = {job.name for job in jobs if job.state == "needs_attention"}
    by_task = {tid: name for name, ids in by_request.items() for tid in ids}
    for task in tasks:
        if task["id"] not in owners and by_task.get(task["id"]) not in attention:
            problems.append(f"simulator task {task['id']} ({by_task.get(task['id'])}) belongs to no job")


def _get_task(http: httpx.Client, task_id: str) -> dict[str, Any]:
    # The simulator's injected 429s and 5xx hit the checker's GETs too: ask again.
    for _ in range(50):
        answer = http.get(f"/v1/tasks/{task_id}")
        if answer.status_code == 200:
            result: dict[str, Any] = answer.json()
            return result
        time.sleep(0.05)
    raise RuntimeError(f"GET /v1/tasks/{task_id} kept failing: {answer.status_code}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-scale", type=float, default=0.01, help="simulator time scale (default 0.01)")
    parser.add_argument("--journal-loss", action="store_true", help="also lose the journal at every 4th kill")
    parser.add_argument("--dir", help="work in DIR and keep it (default: a temporary folder, removed if all passed)")
    args = parser.parse_args(argv)
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="runwatch-crash-"))
    root.mkdir(parents=True, exist_ok=True)
    report = Harness(
        root,
        requests=args.requests,
        kills=args.kills,
        seed=args.seed,
        time_scale=args.time_scale,
        journal_loss=args.journal_loss,
    ).run()
    return conclude(report.lines(), report.problems, root, keep=bool(args.dir))


def conclude(
    lines: list[str],
    problems: list[str],
    root: Path,
    *,
    keep: bool,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """The report's lines printed to ``out``; the work folder kept for inspection when a check failed (said on
    ``err``), else removed unless ``keep``. The exit status. Both default to stdout."""
    for line in lines:
        print(line, file=out)
    if problems:
        print(f"kept for inspection: {root}", file=err)
        return 1
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
