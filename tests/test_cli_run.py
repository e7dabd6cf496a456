"""`runwatch run --once` as a user runs it from the README: the simulator in one process, the daemon in
another, a config file on disk and the key in the environment."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from .conftest import SAMPLES

KEY = "key_" + "0" * 128


@contextlib.contextmanager
def simulate(time_scale: float, faults: Sequence[str] = ()) -> Iterator[str]:
    """`runwatch simulate` in its own process, as a user starts it (with ``--fault`` rules, when given)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "runwatch.cli", "simulate", "--port", str(port), "--time-scale", str(time_scale)]
    argv += [arg for rule in faults for arg in ("--fault", rule)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        try:
            line = proc.stdout.readline()
            assert "listening" in line, line
            yield f"http://127.0.0.1:{port}"
        finally:  # also when the test failed: a simulator left running would hold the test until its timeout
            proc.terminate()
            proc.wait(10)


@pytest.fixture
def simulator_process() -> Iterator[str]:
    with simulate(0.01) as url:
        yield url


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runwatch.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


class TestRunOnce:
    def test_readme_walkthrough(self, tmp_path: Path, simulator_process: str) -> None:
        """The README's steps: config, key in the environment, a request and its image, `run --once`."""
        (tmp_path / "inbox").mkdir()
        (tmp_path / "runwatch.toml").write_text(
            f'[runway]\nbase_url = "{simulator_process}"\npoll_interval = 0.2\n\n'
            '[state]\ndir = "state"\n\n'
            '[[inbox]]\npath = "inbox"\noutbox = "outbox"\nsettle = 0.5\n'
        )
        shutil.copy(SAMPLES / "still.jpg", tmp_path / "inbox" / "still.jpg")
        (tmp_path / "inbox" / "waves.json").write_text(
            json.dumps(
                {
                    "endpoint": "image_to_video",
                    "model": "gen4_turbo",
                    "promptImage": "still.jpg",
                    "promptText": "waves rolling in",
                    "ratio": "1280:720",
                    "duration": 5,
                }
            )
        )
        (tmp_path / "inbox" / "broken.json").write_text('{"endpoint": "image_to_video", "model": ')
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWAY", "AWS_"))}
        env["RUNWAYML_API_SECRET"] = KEY + "\n"  # a trailing newline, as `echo key > file` leaves it
        done = _run(["run", "--once"], tmp_path, env)
        assert done.returncode == 1, done.stderr  # one request of the run did not succeed: broken.json
        status = json.loads((tmp_path / "outbox" / "waves.status.json").read_text())
        assert status["state"] == "succeeded" and (tmp_path / "outbox" / status["outputs"][0]["file"]).exists()
        broken = json.loads((tmp_path / "outbox" / "broken.status.json").read_text())
        assert broken["state"] == "rejected"
        assert KEY not in done.stdout + done.stderr

        listing = _run(["status", "--json"], tmp_path, env)
        assert listing.returncode == 0
        assert {row["name"]: row["state"] for row in json.loads(listing.stdout)} == {
            "waves": "succeeded",
            "broken": "rejected",
        }
        table = _run(["status"], tmp_path, env)
        assert "waves" in table.stdout and "succeeded" in table.stdout

    def test_missing_key_is_a_config_error(self, tmp_path: Path) -> None:
        """Without any key source, `run` exits 78 and says where a key may come from."""
        (tmp_path / "inbox").mkdir()
        (tmp_path / "runwatch.toml").write_text('[state]\ndir = "state"\n[[inbox]]\npath = "inbox"\noutbox = "out"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWAY", "AWS_", "CREDENTIALS"))}
        done = _run(["run", "--once"], tmp_path, env, timeout=60)
        assert done.returncode == 78 and "RUNWAYML_API_SECRET" in done.stderr

    def test_unknown_config_key_is_a_config_error(self, tmp_path: Path) -> None:
        """A typo in the config exits 78 naming the key."""
        (tmp_path / "runwatch.toml").write_text('[runway]\npoll_intervall = 3\n[[inbox]]\npath = "i"\noutbox = "o"\n')
        done = _run(["run", "--once"], tmp_path, dict(os.environ, RUNWAYML_API_SECRET=KEY), timeout=60)
        assert done.returncode == 78 and "poll_intervall" in done.stderr


class TestSigterm:
    def test_sigterm_then_restart(self, tmp_path: Path) -> None:
        """SIGTERM with a task in flight: the daemon exits within seconds; the next start follows the same
        task to the end (one create in all) and downloads its output."""
        with simulate(0.1) as url:
            (tmp_path / "inbox").mkdir()
            (tmp_path / "runwatch.toml").write_text(
                f'[runway]\nbase_url = "{url}"\npoll_interval = 0.2\n[state]\ndir = "state"\n'
                '[[inbox]]\npath = "inbox"\noutbox = "outbox"\nsettle = 0.3\n'
            )
            env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWAY", "AWS_"))}
            env["RUNWAYML_API_SECRET"] = KEY
            argv = [sys.executable, "-m", "runwatch.cli", "run"]
            with subprocess.Popen(
                argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            ) as proc:
                (tmp_path / "inbox" / "film.json").write_text(
                    json.dumps(
                        {
                            "endpoint": "text_to_video",
                            "model": "veo3.1",
                            "promptText": "dusk",
                            "ratio": "1280:720",
                            "duration": 8,
                        }
                    )
                )
                status_file = tmp_path / "outbox" / "film.status.json"
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    if status_file.exists() and json.loads(status_file.read_text())["task_id"]:
                        break
                    time.sleep(0.05)
                proc.send_signal(signal.SIGTERM)
                started = time.monotonic()
                assert proc.wait(timeout=15) == 0
                assert time.monotonic() - started < 10
            state = json.loads(status_file.read_text())["state"]
            assert state in ("submitted", "pending", "running", "throttled")
            done = _run(["run", "--once"], tmp_path, env)
            assert done.returncode == 0, done.stderr
            status = json.loads(status_file.read_text())
            assert status["state"] == "succeeded" and (tmp_path / "outbox" / status["outputs"][0]["file"]).exists()
            creates = httpx.get(f"{url}/_sim/creates").json()
            assert creates["total"] == 1


class TestInit:
    def test_init_then_run(self, tmp_path: Path, simulator_process: str) -> None:
        """`runwatch init DIR` makes a layout whose config loads; pointed at the simulator it runs a request."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWAY", "AWS_"))}
        env["RUNWAYML_API_SECRET"] = KEY
        made = _run(["init", str(tmp_path / "rw")], tmp_path, env, timeout=60)
        assert made.returncode == 0, made.stderr
        root = tmp_path / "rw"
        assert all((root / d).is_dir() for d in ("inbox", "outbox", "state"))
        config = root / "runwatch.toml"
        text = config.read_text()
        config.write_text(
            text.replace('"https://api.dev.runwayml.com"', f'"{simulator_process}"').replace(
                "poll_interval = 5.0", "poll_interval = 0.2"
            )
        )
        (root / "inbox" / "hello.json").write_text(
            json.dumps(
                {
                    "endpoint": "text_to_speech",
                    "model": "eleven_multilingual_v2",
                    "promptText": "Hello.",
                    "voice": {"type": "runway-preset", "presetId": "Maya"},
                }
            )
        )
        done = _run(["run", "--once", "--config", str(config)], tmp_path, env)
        assert done.returncode == 0, done.stderr
        assert json.loads((root / "outbox" / "hello.status.json").read_text())["state"] == "succeeded"

    def test_init_never_overwrites(self, tmp_path: Path) -> None:
        """A second init on the same folder is a usage error and leaves the config as it was."""
        assert _run(["init", str(tmp_path)], tmp_path, dict(os.environ), timeout=60).returncode == 0
        (tmp_path / "runwatch.toml").write_text("# mine\n")
        again = _run(["init", str(tmp_path)], tmp_path, dict(os.environ), timeout=60)
        assert again.returncode == 2 and "never overwrites" in again.stderr
        assert (tmp_path / "runwatch.toml").read_text() == "# mine\n"
