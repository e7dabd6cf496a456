"""Upload throughput and memory: `python bench/upload.py [--size-mib 1024] [--runs 5] [--json]`.

S3: runwatch's transport (``runwatch.media.S3Transport.place``, with the boto3 client the daemon builds,
``runwatch.daemon._s3_client``, and the default ``[s3]`` multipart settings) against plain boto3
``upload_file`` (default client and transfer settings) of the same file to the same SeaweedFS on loopback
(``weed mini``, started as the test suite starts it, ``tests/s3server.py``). The two go in pairs A B, B A... over
``--runs`` runs; each upload runs in a fresh subprocess, which times the upload alone (not its imports) and
reports its peak RSS (``VmHWM``). The figure is the median throughput of each and their ratio (which decides
"met"), and, as a check on a noisy machine, the median of the per-pair ratios (run i of A over run i of B).

``S3Transport`` refuses, by default, files over Runway's URL size caps (16 MiB images, 32 MiB video/audio),
because Runway would not fetch them. This benchmark measures raw upload speed, so it builds the transport with
``url_caps`` that let the big file through; nothing else about the transport is changed.

Memory: one upload per size in ``--rss-sizes`` (MiB) for each of runwatch and boto3, each in a fresh process;
"flat" means the peak RSS at the largest size is at most ``--flat-mib`` above the peak at the smallest.

Runway: runwatch's ``runway`` transport (``POST /v1/uploads`` then the streamed multipart form POST) against
``runwatch simulate`` in a subprocess, one upload per size in ``--runway-sizes`` (MiB; the simulator, like
Runway, takes at most 200 MiB), each in a fresh process: its peak RSS beside the same process's RSS just
before the upload (imports done, clients built).

The files are real bytes (an MP4 ``ftyp`` box, then random data), not sparse; they, the SeaweedFS data and the
simulator's received uploads are removed at the end.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
KEY = "key_" + "b" * 128
JOB_ID = "20261128T000000Z-bench001"
# The start of an MP4 file (an ftyp box); the rest of each file is random bytes.
MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"


@dataclass(frozen=True)
class Sample:
    seconds: float
    size: int
    hwm_kib: int  # peak RSS of the worker process
    before_kib: int  # RSS just before the upload began

    @property
    def mib_s(self) -> float:
        return self.size / MIB / self.seconds


# -- the worker: one upload in a fresh process ------------------------------------------------------


def _proc_status(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def worker(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Do one upload of ``spec["file"]`` and return its timing and memory. Runs in its own process."""
    path = Path(spec["file"]).resolve()
    st = path.stat()
    size = st.st_size
    from runwatch.localmedia import LocalMedia

    # As a request check leaves it: the file's folder, device and inode, which the transport opens it by.
    media = LocalMedia(("videoUri",), "clip.mp4", path, "video", size, "video/mp4", path.parent, st.st_dev, st.st_ino)
    if kind == "boto3":
        import boto3

        client = boto3.client("s3", endpoint_url=spec["endpoint_url"], region_name=spec["region"])
        key = f"plain/{JOB_ID}/clip.mp4"
        before = _proc_status("VmRSS")
        started = time.perf_counter()
        client.upload_file(str(path), spec["bucket"], key)
        seconds = time.perf_counter() - started
        client.delete_object(Bucket=spec["bucket"], Key=key)
    elif kind == "runwatch-s3":
        from runwatch.config import parse_config
        from runwatch.daemon import _s3_client
        from runwatch.media import S3Transport

        config = parse_config(
            {
                "runway": {"base_url": "http://127.0.0.1:9"},
                "state": {"dir": spec["scratch"]},
                "s3": {"bucket": spec["bucket"], "endpoint_url": spec["endpoint_url"], "region": spec["region"]},
                "inbox": [{"path": spec["scratch"] + "/inbox", "outbox": spec["scratch"] + "/outbox"}],
            },
            "bench",
        )
        assert config.s3 is not None
        # Raw upload speed: let a file over Runway's URL caps through (see the module's docstring).
        transport = S3Transport(config.s3, _s3_client(config), url_caps={})
        before = _proc_status("VmRSS")
        started = time.perf_counter()
        placed = transport.place(media, JOB_ID)
        seconds = time.perf_counter() - started
        transport.remove(placed)
    elif kind == "runwatch-runway":
        import httpx

        from runwatch.api import RunwayClient
        from runwatch.media import RunwayTransport

        # As the daemon builds them (runwatch.daemon.Daemon.__init__), with the default timeout.
        timeout = httpx.Timeout(60.0, connect=10.0)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=40)
        with httpx.Client(timeout=timeout, limits=limits, follow_redirects=False) as http:
            api = RunwayClient(http, base_url=spec["base_url"], api_key=KEY, version="2024-11-06")
            runway = RunwayTransport(api, http)
            before = _proc_status("VmRSS")
            started = time.perf_counter()
            runway.place(media, JOB_ID)
            seconds = time.perf_counter() - started
    else:
        raise SystemExit(f"unknown worker kind {kind!r}")
    return {"seconds": seconds, "size": size, "hwm_kib": _proc_status("VmHWM"), "before_kib": before}


def run_worker(kind: str, spec: dict[str, Any], env: dict[str, str]) -> Sample:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--spec", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{kind} upload of {spec['file']} failed (exit {proc.returncode}):\n{proc.stderr}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return Sample(data["seconds"], data["size"], data["hwm_kib"], data["before_kib"])


# -- the parent --------------------------------------------------------------------------------------


def make_file(path: Path, size_mib: int) -> Path:
    """``size_mib`` MiB of real bytes: an MP4 header, then random data (nothing sparse, nothing repeated)."""
    with open(path, "wb") as fh:
        fh.write(MP4_HEAD)
        left = size_mib * MIB - len(MP4_HEAD)
        while left > 0:
            chunk = min(left, 8 * MIB)
            fh.write(os.urandom(chunk))
            left -= chunk
    return path


def mib(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB"


def signed_mib(value: float) -> str:
    return f"{round(value) or 0:+d} MiB"  # no "-0"


def row(what: str, figure: str, baseline: str, target: str, met: bool | None) -> dict[str, Any]:
    return {"what": what, "figure": figure, "baseline": baseline, "target": target, "met": met}


def s3_rows(args: argparse.Namespace, work: Path, log: Any) -> list[dict[str, Any]]:
    sys.path.insert(0, str(ROOT))
    from tests.s3server import start_s3_server

    server = start_s3_server(bucket="runwatch-bench")
    rows: list[dict[str, Any]] = []
    try:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key}
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            env.pop(name, None)
        base = {
            "endpoint_url": server.endpoint_url,
            "bucket": server.bucket,
            "region": server.region,
            "scratch": str(work / "scratch"),
        }
        ours: list[Sample] = []
        plain: list[Sample] = []
        big = make_file(work / "big.mp4", args.size_mib)
        spec = dict(base, file=str(big))
        for i in range(args.runs):
            # A B, then B A: whichever goes second meets a warmer server and page cache.
            if i % 2 == 0:
                ours.append(run_worker("runwatch-s3", spec, env))
                plain.append(run_worker("boto3", spec, env))
            else:
                plain.append(run_worker("boto3", spec, env))
                ours.append(run_worker("runwatch-s3", spec, env))
            print(
                f"run {i + 1}/{args.runs}: runwatch {ours[-1].mib_s:.0f} MiB/s "
                f"(peak RSS {mib(ours[-1].hwm_kib)}), boto3 {plain[-1].mib_s:.0f} MiB/s "
                f"(peak RSS {mib(plain[-1].hwm_kib)})",
                file=log,
                flush=True,
            )
        big.unlink()
        a = statistics.median(s.mib_s for s in ours)
        b = statistics.median(s.mib_s for s in plain)
        ratio = a / b
        paired = statistics.median(o.mib_s / p.mib_s for o, p in zip(ours, plain, strict=True))
        rows.append(
            row(
                f"S3 upload of {args.size_mib} MiB to SeaweedFS, median of {args.runs} (pairs A B, B A, ..., fresh "
                "processes): S3Transport.place vs boto3 upload_file",
                f"{a:.0f} MiB/s = {ratio:.0%} of baseline; median of the per-pair ratios {paired:.0%} "
                f"(runs: {', '.join(f'{s.mib_s:.0f}' for s in ours)})",
                f"{b:.0f} MiB/s (runs: {', '.join(f'{s.mib_s:.0f}' for s in plain)})",
                "≥ 90% of baseline",
                ratio >= 0.9,
            )
        )
        # Peak RSS per size; the size of the throughput runs is already measured (median of its runs).
        peaks: dict[int, tuple[float, float]] = {}
        for size in args.rss_sizes:
            if size == args.size_mib:
                peaks[size] = (statistics.median(s.hwm_kib for s in ours), statistics.median(s.hwm_kib for s in plain))
                continue
            f = make_file(work / f"f{size}.mp4", size)
            spec = dict(base, file=str(f))
            o, p = run_worker("runwatch-s3", spec, env), run_worker("boto3", spec, env)
            f.unlink()
            print(f"{size} MiB: runwatch peak RSS {mib(o.hwm_kib)}, boto3 {mib(p.hwm_kib)}", file=log, flush=True)
            peaks[size] = (o.hwm_kib, p.hwm_kib)
        for size in sorted(peaks):
            rows.append(
                row(
                    f"S3 upload peak RSS (whole process), {size} MiB file",
                    mib(peaks[size][0]),
                    f"{mib(peaks[size][1])} (boto3 upload_file)",
                    "flat as the file grows",
                    None,
                )
            )
        lo, hi = min(peaks), max(peaks)
        if lo != hi:
            ours_growth = (peaks[hi][0] - peaks[lo][0]) / 1024
            plain_growth = (peaks[hi][1] - peaks[lo][1]) / 1024
            rows.append(
                row(
                    f"S3 upload peak RSS growth, {lo} → {hi} MiB file",
                    signed_mib(ours_growth),
                    signed_mib(plain_growth),
                    f"≤ +{args.flat_mib} MiB (flat)",
                    ours_growth <= args.flat_mib,
                )
            )
    finally:
        server.stop()
    return rows


def runway_rows(args: argparse.Namespace, work: Path, log: Any) -> list[dict[str, Any]]:
    sim_dir = work / "sim"
    sim_dir.mkdir()
    # The simulator keeps received uploads under its temporary folder: point that into ours.
    env = {**os.environ, "TMPDIR": str(sim_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runwatch.cli", "simulate", "--port", "0", "--key", KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
    )
    rows: list[dict[str, Any]] = []
    peaks: dict[int, Sample] = {}
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        for size in args.runway_sizes:
            f = make_file(work / f"r{size}.mp4", size)
            sample = run_worker("runwatch-runway", {"file": str(f), "base_url": url}, dict(os.environ))
            f.unlink()
            print(
                f"runway {size} MiB: peak RSS {mib(sample.hwm_kib)} (before {mib(sample.before_kib)}), "
                f"{sample.mib_s:.0f} MiB/s",
                file=log,
                flush=True,
            )
            peaks[size] = sample
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for size, s in sorted(peaks.items()):
        rows.append(
            row(
                f"runway upload (POST /v1/uploads + form POST to the simulator) peak RSS, {size} MiB file",
                f"{mib(s.hwm_kib)} ({s.mib_s:.0f} MiB/s)",
                f"{mib(s.before_kib)} just before the upload",
                "flat as the file grows",
                None,
            )
        )
    lo, hi = min(peaks), max(peaks)
    if lo != hi:
        growth = (peaks[hi].hwm_kib - peaks[lo].hwm_kib) / 1024
        before = (peaks[hi].before_kib - peaks[lo].before_kib) / 1024
        rows.append(
            row(
                f"runway upload peak RSS growth, {lo} → {hi} MiB file",
                signed_mib(growth),
                f"{signed_mib(before)} before the upload",
                f"≤ +{args.flat_mib} MiB (flat)",
                growth <= args.flat_mib,
            )
        )
    return rows


def sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="file size of the throughput runs (MiB)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each of runwatch and boto3")
    parser.add_argument("--rss-sizes", type=sizes, default=[64, 256, 1024], help="MiB, comma-separated")
    parser.add_argument(
        "--runway-sizes",
        type=sizes,
        default=[32, 100, 200],
        help="MiB, comma-separated; at most 200 (Runway's upload limit); empty skips the runway rows",
    )
    parser.add_argument("--flat-mib", type=int, default=32, help="peak RSS growth that still counts as flat")
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, json.loads(args.spec))))
        return 0
    if any(s * MIB > 200 * MIB for s in args.runway_sizes):
        parser.error("--runway-sizes: Runway's uploads take at most 200 MiB")
    work = Path(tempfile.mkdtemp(prefix="runwatch-bench-upload-"))
    try:
        rows = s3_rows(args, work, sys.stderr)
        if args.runway_sizes:
            rows += runway_rows(args, work, sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
