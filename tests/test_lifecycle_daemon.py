"""The lifecycle through a real daemon and the simulator: spending that stays true, logs at the level a person
needs, and jobs of `runwatch submit` followed to their outputs wherever they were sent from."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from structlog.testing import capture_logs

from runwatch.simulator import Fault, Simulator
from runwatch.submit import submit_command

from .rig import SEED_REQUESTS, Rig


def _env(sim: Simulator) -> dict[str, str]:
    return {"RUNWAYML_API_SECRET": sim.key}


def _config_file(rig: Rig) -> Path:
    path = rig.root / "runwatch.toml"
    data = {
        "runway": {"base_url": rig.sim.url, "poll_interval": 0.05},
        "state": {"dir": str(rig.root / "state")},
        "inbox": [{"path": str(rig.inbox), "outbox": str(rig.outbox)}],
    }
    path.write_text(tomli_w.dumps(data))
    return path


class TestSpending:
    def test_cancelled_running_task_records_runways_cost(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A task cancelled while running records the cost Runway reports for it, not the estimate."""
        sim.config.time_scale = 1.0
        sim.config.cancelled_visible = 30.0  # the cancelled task answers CANCELLED, with its cost
        rig = rig_factory(sim).start()
        rig.drop("long", SEED_REQUESTS["text_to_video"][0])
        running = rig.wait("long", {"running"})
        (rig.inbox / "long.cancel").write_text("")
        status = rig.wait("long")
        task = sim.world.tasks[running["task_id"]]
        assert status["state"] == "cancelled"
        assert status["credits"] == task.cost == math.ceil(task.estimate) > 0
        assert "credits_estimated" not in status

    def test_cancelled_task_gone_keeps_its_estimate(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """When the cancelled task can no longer be read (Runway forgets it at once), its estimate keeps
        counting, and the status file says the figure is an estimate."""
        sim.config.time_scale = 1.0
        rig = rig_factory(sim).start()
        rig.drop("long", SEED_REQUESTS["text_to_video"][0])
        running = rig.wait("long", {"running"})
        (rig.inbox / "long.cancel").write_text("")
        status = rig.wait("long")
        assert status["state"] == "cancelled" and status["task_id"] == running["task_id"]
        assert status["credits"] == status["estimated_credits"] > 0 and status["credits_estimated"] is True
        job = rig.journal().find("long")
        assert job is not None and job.credits == status["credits"] and job.credits_estimated

    def test_failed_upload_shows_no_credits(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A request whose media never reached Runway spent nothing: no credits in its status or the journal."""
        sim.faults.add(Fault("error", endpoint="uploads", status=403))
        rig = rig_factory(sim).start()
        body = dict(SEED_REQUESTS["image_to_video"][0], promptImage="still.jpg")
        rig.drop("still", body, media=("still.jpg",))
        status = rig.wait("still")
        assert status["state"] == "failed" and status["error"]["code"] == "upload_failed"
        assert status["credits"] is None and status["task_id"] is None and sim.create_count() == 0
        job = rig.journal().find("still")
        assert job is not None and job.credits is None and job.estimated_credits
        shown = subprocess.run(
            [sys.executable, "-m", "runwatch.cli", "status", "--config", str(_config_file(rig))],
            capture_output=True,
            text=True,
            env=dict(os.environ, COLUMNS="200"),
            check=True,
        ).stdout.splitlines()
        header, row = shown[0], next(line for line in shown if line.startswith("still "))
        column = header.index("CREDITS")
        assert row[column : column + 8].strip() == ""  # no credits shown (the estimate was never spent)


class TestLogs:
    def test_levels_and_codes(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Rejected and failed requests log warnings with their code and message; held requests log their
        reason; a command logs an event of its own."""
        sim.faults.add(Fault("fail", failure_code="SAFETY.INPUT.TEXT"))
        with capture_logs() as logs:
            rig = rig_factory(sim, inbox={"approve_above": 0.5}).start()
            rig.drop("broken", {"endpoint": "text_to_video", "model": "veo3.1"})
            rig.drop("costly", SEED_REQUESTS["sound_effect"][0])
            rig.wait("broken")
            rig.wait("costly", {"held"})
            (rig.inbox / "costly.approve").write_text("")
            rig.wait("costly")
            rig.stop()
        by_event: dict[str, list[dict[str, Any]]] = {}
        for entry in logs:
            by_event.setdefault(entry["event"], []).append(entry)
        rejected = by_event["job.rejected"][0]
        assert rejected["log_level"] == "warning" and rejected["problems"] >= 1
        failed = by_event["job.failed"][0]
        assert failed["log_level"] == "warning" and failed["code"] == "SAFETY.INPUT.TEXT" and failed["message"]
        held = by_event["job.held"][0]
        assert held["log_level"] == "info" and "approve" in held["reason"]
        approve = by_event["command.approve"][0]
        assert approve["request"] == "costly" and approve["result"] == "approved"


class TestProgressAndHeartbeat:
    def test_lines_while_tasks_run(
        self, rig_factory: Callable[..., Rig], sim: Simulator, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """While a task runs the log shows its progress with an estimate of the time left, and the queue's
        heartbeat counts the jobs by state with today's credits (intervals shortened for the test)."""
        from runwatch.jobs import engine as engine_module
        from runwatch.jobs import following

        monkeypatch.setattr(engine_module, "HEARTBEAT", 0.3)
        monkeypatch.setattr(following, "PROGRESS_LOG", 0.0)
        sim.config.time_scale = 0.1
        with capture_logs() as logs:
            rig = rig_factory(sim).start()
            rig.drop("film", SEED_REQUESTS["text_to_video"][0])
            assert rig.wait("film", timeout=60)["state"] == "succeeded"
            rig.stop()
        progress = [e for e in logs if e["event"] == "job.progress"]
        assert len(progress) >= 2 and progress[-1]["percent"] > progress[0]["percent"]
        assert any(isinstance(e["eta_seconds"], int) for e in progress)
        beats = [e for e in logs if e["event"] == "queue.heartbeat"]
        assert beats and all(isinstance(b["credits_today"], float) for b in beats)
        assert any(b["states"].get("running") == 1 for b in beats)


class TestSubmitFollowed:
    def test_submit_without_wait_is_followed_by_the_daemon(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """`runwatch submit FILE` without --wait sends the request and returns; the daemon follows the task
        and writes its outputs and status file next to the request file."""
        rig = rig_factory(sim)
        config = _config_file(rig)
        folder = tmp_path / "elsewhere"
        folder.mkdir()
        request = folder / "rain.json"
        request.write_text(json.dumps(SEED_REQUESTS["sound_effect"][0]))
        out = io.StringIO()
        assert submit_command(str(request), config_file=str(config), out=out, err=io.StringIO(), env=_env(sim)) == 0
        assert "submitted as task" in out.getvalue()
        job = rig.journal().find("rain")
        assert job is not None and job.state == "submitted" and job.outbox == str(folder)
        rig.start()
        status_file = folder / "rain.status.json"
        rig_wait_file(status_file, "succeeded")
        status = json.loads(status_file.read_text())
        data = (folder / status["outputs"][0]["file"]).read_bytes()
        assert data == sim.output_bytes(status["task_id"], 0) and sim.create_count() == 1

    def test_run_once_follows_a_submitted_task(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path
    ) -> None:
        """With no daemon running, `runwatch run --once` is the command that follows it to its outputs."""
        from runwatch.daemon import Daemon

        rig = rig_factory(sim)
        config = _config_file(rig)
        request = tmp_path / "rain.json"
        request.write_text(json.dumps(SEED_REQUESTS["sound_effect"][0]))
        sent = submit_command(
            str(request), config_file=str(config), out=io.StringIO(), err=io.StringIO(), env=_env(sim)
        )
        assert sent == 0
        daemon = Daemon(rig.config, api_key=sim.key)
        daemon.start()
        import threading

        assert daemon.run(threading.Event(), once=True) == 0
        status = json.loads((tmp_path / "rain.status.json").read_text())
        assert status["state"] == "succeeded" and (tmp_path / status["outputs"][0]["file"]).exists()


def rig_wait_file(path: Path, state: str, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(path.read_text())["state"] == state:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {state}")


class TestWallClockStep:
    def test_backoff_survives_a_step_back(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A request backing off after Runway's 429s is sent when its back-off ends, even though the wall clock
        stepped an hour back meanwhile: waits run on the monotonic clock."""
        from datetime import timedelta

        from .test_daemon import _ShiftedWall

        sim.faults.add(Fault("rate_limit", endpoint="sound_effect", method="POST", count=5))
        rig = rig_factory(sim).start()
        assert rig.daemon is not None
        engine = rig.daemon.engine
        shift = [timedelta(0)]
        engine.clock = engine.money.clock = _ShiftedWall(shift)
        rig.drop("rain", SEED_REQUESTS["sound_effect"][0])
        deadline = time.monotonic() + 30
        while len(sim.requests("/v1/sound_effect", method="POST")) < 5:  # the client's own retries, all refused
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)  # the engine has the refusal: the request backs off (2 s)
        shift[0] = timedelta(hours=-1)
        assert rig.status("rain")["state"] == "accepted"  # type: ignore[index]
        status = rig.wait("rain", timeout=30)
        assert status["state"] == "succeeded" and sim.create_count() == 1
