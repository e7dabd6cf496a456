"""SIGHUP reloads the config of a running `runwatch run`: inboxes are added and removed while a task is in flight,
that task is followed to its end, and a broken file leaves the running config in force."""

from __future__ import annotations

import signal
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from runwatch.config import parse_config
from runwatch.daemon import keep_restart_settings, status_line
from runwatch.jobs.job import Job
from runwatch.simulator import Simulator

from .test_systemd import FINAL, SPEECH, DaemonProcess, daemon_process, drop, wait_status, write_config

__all__ = ["daemon_process"]  # the fixture, shared with test_systemd

# veo3.1 for 8 s: over a minute at Runway's pace, so it is still running through every reload below.
SLOW = {"endpoint": "text_to_video", "model": "veo3.1", "promptText": "a forest", "ratio": "1280:720", "duration": 8}
AT_RUNWAY = {"submitted", "throttled", "pending", "running"}


def _reload(daemon: DaemonProcess) -> None:
    """SIGHUP, then wait for RELOADING=1 and the READY=1 that ends the reload."""
    mark = len(daemon.received())
    daemon.signal(signal.SIGHUP)
    began = daemon.wait_message(lambda m: m.startswith("RELOADING=1\nMONOTONIC_USEC="), after=mark)
    daemon.wait_message(lambda m: m == "READY=1", after=began + 1)


class TestSighup:
    def test_inboxes_come_and_go(
        self, tmp_path: Path, sim: Simulator, daemon_process: Callable[..., DaemonProcess]
    ) -> None:
        """Add an inbox, remove one, load a broken file, change a restart-only key: the slow task of the removed
        inbox ends succeeded in that inbox's outbox, and only watched inboxes take new files."""
        a_in, a_out, b_in, b_out = (tmp_path / n for n in ("a-in", "a-out", "b-in", "b-out"))
        a_in.mkdir()
        b_in.mkdir()
        config, state = tmp_path / "runwatch.toml", tmp_path / "state"
        write_config(config, sim, state, [("a", a_in, a_out)])
        sim.config.time_scale = 1.0
        daemon = daemon_process(config, sim.key)
        daemon.wait_ready()
        drop(a_in, "slow", SLOW)
        wait_status(a_out, "slow", AT_RUNWAY)
        sim.config.time_scale = 0.002  # tasks created from now on end at once

        # A second inbox: watched after the reload, and the task in flight is not disturbed.
        write_config(config, sim, state, [("a", a_in, a_out), ("b", b_in, b_out)])
        _reload(daemon)
        daemon.wait_log("daemon.reloaded", added=["b"], removed=[], changed=[])
        drop(b_in, "quick", dict(SPEECH, promptText="quick"))
        assert wait_status(b_out, "quick", FINAL)["state"] == "succeeded"
        assert wait_status(a_out, "slow", AT_RUNWAY | FINAL)["state"] in AT_RUNWAY

        # The first inbox removed: nothing new is taken from it, its task is still followed.
        write_config(config, sim, state, [("b", b_in, b_out)])
        _reload(daemon)
        daemon.wait_log("daemon.reloaded", added=[], removed=["a"], changed=[])
        drop(a_in, "late", dict(SPEECH, promptText="late"))
        drop(b_in, "ontime", dict(SPEECH, promptText="ontime"))
        assert wait_status(b_out, "ontime", FINAL)["state"] == "succeeded"
        time.sleep(1.0)  # a watched inbox takes a file in well under this (settle is 0.3 s)
        assert (a_in / "late.json").exists() and not (a_out / "late.status.json").exists()
        assert wait_status(a_out, "slow", AT_RUNWAY | FINAL)["state"] in AT_RUNWAY
        sim.advance(3600)  # the slow task finishes at Runway
        slow = wait_status(a_out, "slow", FINAL)
        assert slow["state"] == "succeeded", slow
        assert slow["outputs"]
        for index, output in enumerate(slow["outputs"]):
            assert (a_out / output["file"]).read_bytes() == sim.output_bytes(slow["task_id"], index)
        assert "/done/" in slow["request"] and Path(slow["request"]).is_file()
        daemon.wait_log("inbox.retired", inbox="a")
        assert sim.create_count() == 3 and sim.duplicate_creates() == []

        # A broken file: loudly refused, the running config stays.
        config.write_text('[runway\nbase_url = "http://127.0.0.1:9"\n')
        mark = len(daemon.logs)
        _reload(daemon)
        failed = daemon.logs[daemon.wait_log("daemon.reload_failed", after=mark)]
        assert failed["level"] == "error" and failed["kept"] == "the previous configuration"
        assert any("TOML syntax error" in p for p in failed["problems"]), failed
        daemon.wait_message(lambda m: m.startswith("STATUS=") and "the last reload failed" in m)
        drop(b_in, "after", dict(SPEECH, promptText="after"))
        assert wait_status(b_out, "after", FINAL)["state"] == "succeeded"

        # A key that needs a restart: reported and kept at its running value; the rest applies.
        write_config(config, sim, state, [("b", b_in, b_out)], base_url="http://127.0.0.1:9", poll_interval=0.2)
        mark = len(daemon.logs)
        _reload(daemon)
        warned = daemon.logs[daemon.wait_log("daemon.reload_needs_restart", after=mark)]
        assert warned["settings"] == ["runway.base_url"]
        daemon.wait_log("daemon.reloaded", after=mark, added=[], removed=[], changed=[])
        drop(b_in, "still", dict(SPEECH, promptText="still"))
        assert wait_status(b_out, "still", FINAL)["state"] == "succeeded"  # still talking to the simulator
        assert not any("the last reload failed" in m for m, _ in daemon.received()[-3:])

        daemon.signal(signal.SIGTERM)
        assert daemon.proc.wait(15) == 0
        assert (a_in / "late.json").exists()  # never taken

    def test_changed_inbox_is_rewatched(
        self, tmp_path: Path, sim: Simulator, daemon_process: Callable[..., DaemonProcess]
    ) -> None:
        """An inbox whose settings change gets a new watcher with them (here: its outbox moves)."""
        inbox = tmp_path / "in"
        inbox.mkdir()
        config = tmp_path / "runwatch.toml"
        write_config(config, sim, tmp_path / "state", [("main", inbox, tmp_path / "out1")])
        daemon = daemon_process(config, sim.key)
        daemon.wait_ready()
        write_config(config, sim, tmp_path / "state", [("main", inbox, tmp_path / "out2")])
        _reload(daemon)
        daemon.wait_log("daemon.reloaded", added=[], removed=[], changed=["main"])
        drop(inbox, "moved", dict(SPEECH, promptText="moved"))
        assert wait_status(tmp_path / "out2", "moved", FINAL)["state"] == "succeeded"
        assert not (tmp_path / "out1" / "moved.status.json").exists()
        daemon.signal(signal.SIGTERM)
        assert daemon.proc.wait(15) == 0

    def test_unusable_inbox_is_retried(
        self, tmp_path: Path, sim: Simulator, daemon_process: Callable[..., DaemonProcess]
    ) -> None:
        """An added inbox that cannot be used is logged and left out; the rest applies; the next reload retries."""
        good, bad = tmp_path / "good", tmp_path / "bad"
        good.mkdir()
        bad.mkdir()
        blocker = tmp_path / "blocker"
        blocker.write_text("a file where the work folder's parent should be")
        config = tmp_path / "runwatch.toml"
        write_config(config, sim, tmp_path / "state", [("good", good, tmp_path / "good-out")])
        daemon = daemon_process(config, sim.key)
        daemon.wait_ready()

        data = tomllib.loads(config.read_text())
        data["inbox"].append(
            {
                "name": "bad",
                "path": str(bad),
                "outbox": str(tmp_path / "bad-out"),
                "work": str(blocker / "work"),
                "settle": 0.3,
            }
        )
        config.write_text(tomli_w.dumps(data))
        _reload(daemon)
        unusable = daemon.logs[daemon.wait_log("inbox.unusable", inbox="bad")]
        assert unusable["level"] == "error"
        daemon.wait_log("daemon.reloaded", added=[], failed=["bad"])
        daemon.wait_message(lambda m: "inboxes: 1 watched" in m and "the last reload failed" in m)
        drop(good, "fine", dict(SPEECH, promptText="fine"))
        assert wait_status(tmp_path / "good-out", "fine", FINAL)["state"] == "succeeded"

        blocker.unlink()  # the admin fixes it and reloads again
        mark = len(daemon.logs)
        _reload(daemon)
        daemon.wait_log("daemon.reloaded", after=mark, added=["bad"], failed=[])
        drop(bad, "fixed", dict(SPEECH, promptText="fixed"))
        assert wait_status(tmp_path / "bad-out", "fixed", FINAL)["state"] == "succeeded"
        daemon.signal(signal.SIGTERM)
        assert daemon.proc.wait(15) == 0


def _config(**sections: Any) -> Any:
    data: dict[str, Any] = {"state": {"dir": "/var/lib/runwatch"}, "inbox": [{"path": "/srv/in", "outbox": "/srv/out"}]}
    for key, value in sections.items():
        data[key] = value
    return parse_config(data, "runwatch.toml", env={})


class TestRestartOnly:
    @pytest.mark.parametrize(
        ("sections", "ignored"),
        [
            ({}, []),
            ({"runway": {"poll_interval": 1.0, "unknown_models": "reject"}}, []),
            ({"scheduler": {"max_in_flight": 3, "rescan": 5.0}}, []),
            ({"runway": {"base_url": "http://127.0.0.1:8000"}}, ["runway.base_url"]),
            ({"runway": {"api_version": "2099-01-01", "timeout": 5.0}}, ["runway.api_version", "runway.timeout"]),
            ({"runway": {"api_key_file": "/etc/other"}}, ["runway.api_key_file"]),
            ({"state": {"dir": "/tmp/elsewhere"}}, ["state"]),
            ({"s3": {"bucket": "media"}}, ["s3"]),
            (
                {"scheduler": {"max_uploads": 9, "max_downloads": 9}},
                ["scheduler.max_uploads", "scheduler.max_downloads"],
            ),
        ],
    )
    def test_kept_and_reported(self, sections: dict[str, Any], ignored: list[str]) -> None:
        """Settings held by objects built at start keep their running value; everything else takes the new one."""
        running = _config()
        effective, reported = keep_restart_settings(running, _config(**sections))
        assert reported == ignored
        for name in ignored:
            section, _, key = name.partition(".")
            if key:
                assert getattr(getattr(effective, section), key) == getattr(getattr(running, section), key)
            else:
                assert getattr(effective, section) == getattr(running, section)
        for section, values in sections.items():
            for key, value in values.items() if section not in ("state", "s3") else ():
                if f"{section}.{key}" not in ignored:
                    assert getattr(getattr(effective, section), key) == value


class TestStatusLine:
    def test_counts(self) -> None:
        """Waiting includes files not yet taken; running is everything from upload to download."""
        states = ["accepted", "accepted", "uploading", "running", "downloading", "held", "throttled"]
        jobs = [Job(id=str(i), name=f"j{i}", inbox="a", format="json", state=s) for i, s in enumerate(states)]
        assert status_line(jobs, waiting_files=1, watched=2, paused=1) == (
            "3 waiting, 4 running, 1 held; inboxes: 2 watched, 1 paused"
        )

    def test_empty(self) -> None:
        """A quiet daemon says so."""
        assert status_line([], waiting_files=0, watched=1, paused=0) == (
            "0 waiting, 0 running, 0 held; inboxes: 1 watched, 0 paused"
        )
