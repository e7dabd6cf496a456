"""A graceful stop keeps its promise: `runwatch run` in its own process, signalled as systemd signals it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import httpx

from .test_cli_run import KEY, simulate

REQUEST = {"endpoint": "text_to_speech", "model": "eleven_multilingual_v2", "promptText": "Hello."}
REQUEST["voice"] = {"type": "runway-preset", "presetId": "Maya"}  # type: ignore[assignment]


def _layout(tmp_path: Path, url: str, stop_timeout: float = 20) -> dict[str, str]:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "runwatch.toml").write_text(
        f'[runway]\nbase_url = "{url}"\npoll_interval = 0.2\n[state]\ndir = "state"\n'
        f"[daemon]\nstop_timeout = {stop_timeout}\n"
        '[[inbox]]\npath = "inbox"\noutbox = "outbox"\nsettle = 0.3\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWAY", "AWS_"))}
    env["RUNWAYML_API_SECRET"] = KEY
    return env


def _wait_for_create(url: str, timeout: float = 30) -> None:
    """Until the simulator has received the create (it is held there by a slow fault)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = httpx.get(f"{url}/_sim/requests").json()["requests"]
        if any(r["method"] == "POST" and r["path"] == "/v1/text_to_speech" for r in rows):
            return
        time.sleep(0.05)
    raise AssertionError("the create never reached the simulator")


def _start(tmp_path: Path, env: dict[str, str], log: BinaryIO) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "runwatch.cli", "run"]
    return subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log)


class TestGracefulStop:
    def test_sigterm_waits_for_a_create_in_flight(self, tmp_path: Path) -> None:
        """SIGTERM while a create waits for Runway's answer: the daemon waits for it, records the task id and
        exits 0; the next start follows the task to its outputs with one create and no needs_attention."""
        with simulate(0.05, faults=["slow:endpoint=text_to_speech:method=POST:delay=3:count=1"]) as url:
            env = _layout(tmp_path, url)
            with (tmp_path / "first.log").open("wb") as log_file, _start(tmp_path, env, log_file) as proc:
                (tmp_path / "inbox" / "hello.json").write_text(json.dumps(REQUEST))
                _wait_for_create(url)
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=20) == 0
            log = (tmp_path / "first.log").read_text()
            assert "daemon.waiting_for_creates" in log and "api.created" in log
            status = json.loads((tmp_path / "outbox" / "hello.status.json").read_text())
            assert status["task_id"] and status["state"] in ("submitted", "pending", "running", "throttled")
            done = subprocess.run(
                [sys.executable, "-m", "runwatch.cli", "run", "--once"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            status = json.loads((tmp_path / "outbox" / "hello.status.json").read_text())
            assert status["state"] == "succeeded" and (tmp_path / "outbox" / status["outputs"][0]["file"]).exists()
            assert httpx.get(f"{url}/_sim/creates").json()["total"] == 1
            assert "needs_attention" not in done.stderr

    def test_second_signal_stops_at_once(self, tmp_path: Path) -> None:
        """A second signal does not wait for the create: the daemon exits within a second or two, and the
        create, whose answer was never recorded, is not sent again (needs_attention at the next start)."""
        with simulate(0.05, faults=["slow:endpoint=text_to_speech:method=POST:delay=8:count=1"]) as url:
            env = _layout(tmp_path, url)
            with (tmp_path / "first.log").open("wb") as log_file, _start(tmp_path, env, log_file) as proc:
                (tmp_path / "inbox" / "hello.json").write_text(json.dumps(REQUEST))
                _wait_for_create(url)
                proc.send_signal(signal.SIGTERM)
                time.sleep(0.5)
                assert proc.poll() is None  # still waiting for the create
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=5) == 0
            done = subprocess.run(
                [sys.executable, "-m", "runwatch.cli", "run", "--once"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            status = json.loads((tmp_path / "outbox" / "hello.status.json").read_text())
            assert status["state"] == "needs_attention" and status["error"]["code"] == "create_unconfirmed"
            assert done.returncode == 1
            assert httpx.get(f"{url}/_sim/creates").json()["total"] <= 1
