"""`runwatch health`: the daemon's main loop touches a heartbeat file in the state directory, and the command
says from it whether the loop goes round (exit 0), or why not: stuck, still starting, or no daemon at all."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from runwatch.daemon import Daemon
from runwatch.health import HEARTBEAT_FILE, Heartbeat, check
from runwatch.simulator import Simulator
from runwatch.store import StateLock

from .rig import Rig


def _health(config: Path, *more: str) -> tuple[int, str]:
    """`runwatch health` in a process of its own, as a HEALTHCHECK runs it: exit code, and what it said."""
    argv = [sys.executable, "-m", "runwatch.cli", "health", "--config", str(config), *more]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


def _config(tmp_path: Path, state: Path) -> Path:
    config = tmp_path / "runwatch.toml"
    config.write_text(f'[state]\ndir = "{state}"\n[[inbox]]\npath = "inbox"\noutbox = "outbox"\n')
    return config


def _wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _age(path: Path, seconds: float) -> None:
    """Set the file's times ``seconds`` into the past, as if nothing had touched it since."""
    then = time.time() - seconds
    os.utime(path, (then, then))


class TestRunningDaemon:
    def test_a_running_daemon_is_healthy(self, sim: Simulator, rig_factory: Callable[..., Rig]) -> None:
        """A daemon whose loop goes round has a fresh heartbeat: `runwatch health` exits 0 and says so."""
        rig = rig_factory(sim)
        config = rig.config_file()
        rig.start()
        _wait_for(rig.config.state.dir / HEARTBEAT_FILE)
        code, said = _health(config)
        assert (code, said.startswith("healthy: the main loop went round")) == (0, True), said

    def test_a_hung_loop_is_stuck(self, sim: Simulator, rig_factory: Callable[..., Rig]) -> None:
        """A daemon that started minutes ago and whose loop hangs (here in its per-turn hook) since its last beat
        two minutes ago: `runwatch health` exits 1 and names the daemon as stuck."""
        rig = rig_factory(sim)
        config = rig.config_file()
        daemon = Daemon(rig.config, api_key=sim.key)
        daemon.start()
        heartbeat = rig.config.state.dir / HEARTBEAT_FILE
        hung, release, stop = threading.Event(), threading.Event(), threading.Event()

        def hang(_: Daemon) -> None:
            if heartbeat.exists():  # the turn after the first beat
                hung.set()
                release.wait(60)

        thread = threading.Thread(target=daemon.run, args=(stop,), kwargs={"on_tick": hang}, daemon=True)
        thread.start()
        try:
            assert hung.wait(30)
            _age(rig.config.state.dir / "runwatch.lock", 300)  # started five minutes ago,
            _age(heartbeat, 120)  # last went round two minutes ago
            code, said = _health(config)
            assert code == 1
            assert said.startswith(f"unhealthy: runwatch pid {os.getpid()} is stuck: its main loop last went round")
        finally:
            stop.set()
            release.set()
            thread.join(30)


class TestVerdicts:
    def test_no_daemon(self, tmp_path: Path) -> None:
        """No daemon holds the state directory: unhealthy, whatever the heartbeat says."""
        state = tmp_path / "state"
        state.mkdir()
        (state / HEARTBEAT_FILE).touch()
        _age(state / HEARTBEAT_FILE, 600)
        config = _config(tmp_path, state)
        code, said = _health(config)
        assert (code, said.strip()) == (1, f"unhealthy: no daemon runs on {state}")

    def test_still_starting(self, tmp_path: Path) -> None:
        """A daemon holds the state directory but has not beaten since it started (no heartbeat, or one older
        than its lock, left by the run before): still starting, not stuck."""
        state = tmp_path / "state"
        lock = StateLock(state)
        lock.acquire()
        try:
            first = check(state)
            Heartbeat(state).beat(time.monotonic())
            _age(state / HEARTBEAT_FILE, 300)
            _age(state / "runwatch.lock", 10)
            second = check(state)
        finally:
            lock.release()
        assert not first.ok and "is still starting" in first.message and "no heartbeat" in first.message
        assert not second.ok and "is still starting (for 10 s)" in second.message

    def test_threshold(self, tmp_path: Path) -> None:
        """The heartbeat is fresh up to the threshold (60 s by default) and stale past it; one from the future
        (a clock set back) counts as fresh."""
        state = tmp_path / "state"
        state.mkdir()
        Heartbeat(state).beat(time.monotonic())
        beat = (state / HEARTBEAT_FILE).stat().st_mtime
        assert check(state, now=beat + 60).ok
        assert not check(state, now=beat + 61).ok
        assert check(state, now=beat + 5, stale_after=10).ok
        assert not check(state, now=beat + 11, stale_after=10).ok
        assert check(state, now=beat - 3600).ok

    def test_max_age_option(self, tmp_path: Path) -> None:
        """--max-age must be a positive number of seconds (usage error otherwise); a missing config is a
        config error (78)."""
        config = _config(tmp_path, tmp_path)
        assert _health(config, "--max-age", "0")[0] == 2
        code, said = _health(tmp_path / "missing.toml")
        assert code == 78 and "missing.toml" in said


class TestHeartbeat:
    def test_beats_at_most_every_period(self, tmp_path: Path) -> None:
        """The file is touched on the first beat and then only once the period has passed (monotonic time),
        so an idle loop that turns twice a second writes every 5 s, not at every turn."""
        heartbeat = Heartbeat(tmp_path, every=5.0)
        heartbeat.beat(100.0)
        path = tmp_path / HEARTBEAT_FILE
        _age(path, 30)
        before = path.stat().st_mtime
        heartbeat.beat(104.9)
        assert path.stat().st_mtime == before
        heartbeat.beat(105.0)
        assert path.stat().st_mtime > before

    def test_an_unwritable_state_does_not_raise(self, tmp_path: Path) -> None:
        """A heartbeat that cannot be written is skipped (the check will call it stale); the loop goes on."""
        Heartbeat(tmp_path / "missing").beat(0.0)
        assert not (tmp_path / "missing").exists()
