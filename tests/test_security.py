"""Security: no shell anywhere, created files honour the configured umask, one daemon per state directory,
no running as root unless told to. (Secrets never written anywhere: tests/test_secrets.py.)"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runwatch.config import parse_config
from runwatch.simulator import Simulator

from .conftest import NOT_APPLICABLE
from .rig import SEED_REQUESTS, Rig

PACKAGE = Path(__file__).resolve().parent.parent / "runwatch"
KEY = "key_" + "0" * 128

# Anything that can start a program or hand a string to a shell.
SHELL_PATTERNS = re.compile(
    r"\bsubprocess\b|\bos\.system\b|\bos\.popen\b|shell\s*=\s*True|\bos\.exec\w*\(|\bos\.spawn\w*\(|"
    r"\bpty\.spawn\b|\bcommands\.getoutput\b|\bos\.posix_spawn\w*\(|\bpexpect\b"
)


def test_no_shell_or_process_spawning_in_the_package() -> None:
    """No module of runwatch starts a program: nothing from a request or a file name can reach a shell."""
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if SHELL_PATTERNS.search(line)
    ]
    assert found == []


@pytest.fixture
def restore_umask() -> Iterator[None]:
    # The daemon sets the process umask; put the test process's back.
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def test_umask_is_honoured(tmp_path: Path, sim: Simulator, restore_umask: None) -> None:
    """`umask = "077"`: outputs, status files, kept records and the folders runwatch makes are private."""
    rig = Rig(tmp_path, sim)
    data = {
        "umask": "077",
        "runway": {"base_url": sim.url, "poll_interval": 0.05},
        "state": {"dir": str(tmp_path / "state")},
        "scheduler": {"rescan": 1.0},
        "inbox": [{"path": str(rig.inbox), "outbox": str(rig.outbox), "settle": 0.3}],
    }
    rig.config = parse_config(data, str(tmp_path / "runwatch.toml"))
    rig.start()
    try:
        body, media = SEED_REQUESTS["image_to_video"]
        rig.drop("private", body, media=media)
        status = rig.wait("private")
        assert status["state"] == "succeeded", status
    finally:
        rig.stop()
    made = [
        rig.outbox,
        rig.outbox / "private.status.json",
        rig.outbox / status["outputs"][0]["file"],
        Path(status["request"]),
        tmp_path / "state" / "journal.sqlite3",
    ]
    for path in made:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
    assert _open_to_others(tmp_path / "state") <= {"state", "runwatch.lock"}


def _open_to_others(root: Path) -> set[str]:
    found = {root.name} if stat.S_IMODE(root.stat().st_mode) & 0o077 else set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if stat.S_IMODE((Path(dirpath) / name).stat().st_mode) & 0o077:
                found.add(name)
    return found


def test_umask_covers_the_state_lock(tmp_path: Path, sim: Simulator, restore_umask: None) -> None:
    """The state directory and its lock file are made under the configured umask too."""
    os.umask(0o022)  # a typical login umask: the configured one must win
    config = parse_config(
        {
            "umask": "077",
            "runway": {"base_url": sim.url},
            "state": {"dir": str(tmp_path / "state")},
            "inbox": [{"path": str(tmp_path / "in"), "outbox": str(tmp_path / "out")}],
        },
        "x.toml",
    )
    from runwatch.daemon import Daemon

    daemon = Daemon(config, api_key=sim.key)
    try:
        assert _open_to_others(tmp_path / "state") == set()
    finally:
        daemon.lock.release()


def _config(tmp_path: Path, url: str) -> Path:
    (tmp_path / "inbox").mkdir(exist_ok=True)
    path = tmp_path / "runwatch.toml"
    path.write_text(
        f'[runway]\nbase_url = "{url}"\n[state]\ndir = "{tmp_path / "state"}"\n'
        f'[[inbox]]\npath = "{tmp_path / "inbox"}"\noutbox = "{tmp_path / "outbox"}"\n'
    )
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWAY", "AWS_"))}
    env["RUNWAYML_API_SECRET"] = KEY
    return env


def test_second_daemon_on_the_same_state_refuses(tmp_path: Path, sim: Simulator) -> None:
    """While one daemon holds the state directory, a second exits at once with a clear message."""
    config = _config(tmp_path, sim.url)
    argv = [sys.executable, "-m", "runwatch.cli", "run", "--config", str(config)]
    with subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as first:
        try:
            deadline = time.monotonic() + 20
            lock = tmp_path / "state" / "runwatch.lock"
            while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip()):
                time.sleep(0.05)
            second = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=30)
            assert second.returncode != 0
            assert "in use" in second.stderr and str(first.pid) in second.stderr, second.stderr
            assert first.poll() is None, "the first daemon must keep running"
        finally:
            first.terminate()
            first.wait(15)


@pytest.mark.skipif(os.geteuid() != 0, reason=NOT_APPLICABLE + "only meaningful when the test runs as root")
def test_refuses_to_run_as_root(tmp_path: Path, sim: Simulator) -> None:
    """As root without --allow-root, `runwatch run` exits 78 saying why and how to override."""
    config = _config(tmp_path, sim.url)
    env = _env()
    env.pop("RUNWATCH_ALLOW_ROOT", None)
    done = subprocess.run(
        [sys.executable, "-m", "runwatch.cli", "run", "--once", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78, (done.returncode, done.stderr)
    assert "root" in done.stderr and "--allow-root" in done.stderr
    assert not (tmp_path / "state" / "journal.sqlite3").exists()  # refused before touching any state
