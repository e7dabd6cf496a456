"""`runwatch demo` as a new user runs it: a subprocess with no key, no network and no S3, which must end with
every sample request in its expected state, leave real outputs and status files behind, and leave no process."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from runwatch.cli import main
from runwatch.config import load_config
from runwatch.demo import REQUESTS

KEY = "key_" + "0" * 128


def _demo(*args: str, cwd: Path, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run `runwatch demo ARGS` in a session of its own; returns the result and the session's process group."""
    with subprocess.Popen(
        [sys.executable, "-m", "runwatch.cli", "demo", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), proc.pid


def _assert_group_gone(pgid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


def _folder(stdout: str) -> Path:
    found = re.search(r"^  folder\s+(\S+)$", stdout, re.MULTILINE)
    assert found, stdout
    return Path(found[1])


def _status(outbox: Path, name: str, fmt: str) -> dict[str, Any]:
    text = (outbox / f"{name}.status.{fmt}").read_text()
    data: dict[str, Any] = json.loads(text) if fmt == "json" else tomllib.loads(text)
    return data


@pytest.fixture(scope="module")
def kept_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One `runwatch demo --dir` run (faster time scale), its tree kept; shared by the tests that inspect it."""
    root = tmp_path_factory.mktemp("kept") / "demo"
    done, pgid = _demo("--dir", str(root), "--time-scale", "0.03", cwd=root.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_group_gone(pgid)
    return root, done.stdout


class TestDemo:
    def test_clean_run_succeeds_and_leaves_nothing(self, tmp_path: Path) -> None:
        """`runwatch demo --clean` exits 0, reports each request's final state, removes its folder, leaves no
        process and prints neither a traceback nor the key."""
        done, pgid = _demo("--clean", cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stderr == ""
        for req in REQUESTS:
            assert re.search(rf"^  {req.name}\s+{req.expect}\s", done.stdout, re.MULTILINE), (req.name, done.stdout)
        assert "running" in done.stdout  # states were followed as they happened, not only the end
        assert f"{len(REQUESTS)} of {len(REQUESTS)} requests ended as expected" in done.stdout
        assert KEY not in done.stdout
        assert not _folder(done.stdout).exists()
        _assert_group_gone(pgid)

    def test_dir_keeps_outputs_status_files_and_config(self, kept_demo: tuple[Path, str]) -> None:
        """With --dir the tree is kept: outputs are non-empty and match their status files, status files parse,
        the rejected request lists its problems, the config loads, and the daemon log is a file in the tree."""
        root, stdout = kept_demo
        assert _folder(stdout) == root
        outbox = root / "outbox"
        for req in REQUESTS:
            status = _status(outbox, req.name, req.fmt)
            assert status["state"] == req.expect, status
            if req.expect == "succeeded":
                assert status["outputs"], status
                for out in status["outputs"]:
                    data = (outbox / out["file"]).read_bytes()
                    assert len(data) == out["bytes"] > 0
                    assert hashlib.sha256(data).hexdigest() == out["sha256"]
            else:
                issues = status["error"]["issues"]
                assert {issue["path"] for issue in issues} == {"ratio", "duration"}, issues
                assert status["task_id"] is None and status["outputs"] == []
        assert len(_status(outbox, "sketches", "json")["outputs"]) == 2  # outputCount = 2
        assert not list(outbox.glob("*.tmp*"))
        assert [p.name for p in (root / "inbox").iterdir()] == [".runwatch"]  # every request and medium taken
        config = load_config(root / "runwatch.toml")
        assert config.runway.base_url.startswith("http://127.0.0.1:")
        assert config.inboxes[0].outbox == outbox
        log = root / "runwatch.log"
        assert str(log) in stdout
        events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
        assert "daemon.started" in events and events[-1] == "daemon.stopped"

    def test_next_steps_work_on_the_kept_tree(self, kept_demo: tuple[Path, str]) -> None:
        """The printed next steps run as printed: `runwatch simulate` on the config's port, then `runwatch run
        --config` takes a new request in the same tree (same journal) and `runwatch status` lists it."""
        root, stdout = kept_demo
        port = re.search(r"runwatch simulate --port (\d+)", stdout)
        assert port, stdout
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWAY", "AWS_"))}
        env["RUNWAYML_API_SECRET"] = KEY
        cli = [sys.executable, "-m", "runwatch.cli"]
        with subprocess.Popen(
            [*cli, "simulate", "--port", port[1], "--time-scale", "0.01"], env=env, stdout=subprocess.PIPE, text=True
        ) as sim:
            try:
                assert sim.stdout is not None and "listening" in sim.stdout.readline()
                request = {
                    "endpoint": "text_to_speech",
                    "model": "eleven_multilingual_v2",
                    "promptText": "Again.",
                    "voice": {"type": "runway-preset", "presetId": "Maya"},
                }
                (root / "inbox" / "again.json.tmp").write_text(json.dumps(request))
                os.rename(root / "inbox" / "again.json.tmp", root / "inbox" / "again.json")
                config = str(root / "runwatch.toml")
                with subprocess.Popen(
                    [*cli, "run", "--config", config], env=env, stderr=subprocess.PIPE, text=True
                ) as daemon:
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline and daemon.poll() is None:
                        path = root / "outbox" / "again.status.json"
                        if path.exists() and json.loads(path.read_text())["state"] == "succeeded":
                            break
                        time.sleep(0.05)
                    daemon.terminate()
                    _, err = daemon.communicate(timeout=30)
                assert daemon.returncode == 0, err[-2000:]
                assert _status(root / "outbox", "again", "json")["state"] == "succeeded", err[-2000:]
                listing = subprocess.run(
                    [*cli, "status", "--json", "--config", config], env=env, capture_output=True, text=True, timeout=60
                )
                states = {row["name"]: row["state"] for row in json.loads(listing.stdout)}
                assert states == {"again": "succeeded", **{r.name: r.expect for r in REQUESTS}}
            finally:
                sim.terminate()
                sim.wait(10)

    def test_ctrl_c_stops_cleanly(self, tmp_path: Path) -> None:
        """Ctrl-C while tasks run stops the daemon and the simulator: exit 130, no traceback, folder kept."""
        root = tmp_path / "demo"
        argv = [sys.executable, "-m", "runwatch.cli", "demo", "--dir", str(root)]
        with subprocess.Popen(
            argv,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            # As from a terminal: a run started in the background (`cmd &` in a script) inherits Ctrl-C ignored,
            # and Python keeps an ignored SIGINT ignored.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                if "running" in line:
                    break
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            try:
                rest, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                raise
        assert proc.returncode == 130, rest + err
        assert "Traceback" not in rest + err and err == ""
        assert "interrupted" in rest and root.is_dir()
        assert json.loads((root / "runwatch.log").read_text().splitlines()[-1])["event"] == "daemon.stopped"
        _assert_group_gone(proc.pid)

    def test_refuses_a_folder_that_is_not_empty(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--dir never mixes with someone's files: a non-empty folder is refused and left as it was."""
        (tmp_path / "notes.txt").write_text("mine")
        assert main(["demo", "--dir", str(tmp_path)]) == 1
        assert "not an empty folder" in capsys.readouterr().err
        assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]

    def test_bad_time_scale_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A time scale that is not above 0 exits 2 before anything starts."""
        assert main(["demo", "--time-scale", "0"]) == 2
        assert "--time-scale" in capsys.readouterr().err

    def test_help_names_every_option(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`runwatch demo --help` explains --dir, --clean and --time-scale and the exit status."""
        with pytest.raises(SystemExit) as exit_info:
            main(["demo", "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert all(option in text for option in ("--dir", "--clean", "--time-scale", "Exit status"))
