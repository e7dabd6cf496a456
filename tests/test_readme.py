"""The README is real: every request example loads and validates, one per task endpoint, and the walkthrough
"Running the daemon against the simulator" runs as written."""

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runwatch.catalog import load_catalog
from runwatch.request import load_request

from .conftest import SAMPLES

README = Path(__file__).resolve().parent.parent / "README.md"


def _json_block_lines(text: str) -> list[str]:
    """Lines of the README's ```json blocks that are one-line request examples."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = line == "```json"
            continue
        if inside and line.startswith('{"endpoint": '):
            lines.append(line)
    return lines


EXAMPLES = [json.loads(line) for line in _json_block_lines(README.read_text())]


@dataclass(frozen=True)
class PlainInbox:
    path: Path
    endpoint: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    media_field: str = "promptImage"
    accept_media: bool = False
    media_transport: str = "runway"


def test_one_example_per_endpoint() -> None:
    """Every task endpoint has an example in the README."""
    assert {e["endpoint"] for e in EXAMPLES} == set(load_catalog().endpoints)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["endpoint"] for e in EXAMPLES])
def test_example_validates(tmp_path: Path, example: dict[str, Any]) -> None:
    """Each example, with the sample media beside it, passes runwatch's pre-flight validation."""
    for sample in ("still.jpg", "clip.mp4", "speech.mp3", "speech.wav"):
        shutil.copy(SAMPLES / sample, tmp_path / sample)
    path = tmp_path / "example.json"
    path.write_text(json.dumps(example))
    request = load_request(path, root=tmp_path, inbox=PlainInbox(tmp_path), catalog=load_catalog())
    assert request.endpoint == example["endpoint"] and request.model == example["model"]


def _sh_block(heading: str) -> str:
    """The first ```sh block after a heading of the README."""
    text = README.read_text()
    start = text.index("```sh\n", text.index(f"\n{heading}\n")) + len("```sh\n")
    return text[start : text.index("```\n", start)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestWalkthrough:
    def test_runs_as_written(self, tmp_path: Path) -> None:
        """The walkthrough's commands, run by bash in a clone whose .venv is this environment and with a fresh
        HOME, stopping at the first failure: the simulator starts, the request succeeds, the outputs and the
        status table are there, and `kill %1` stops the simulator. Only the port is changed (8000 may be
        taken on this machine)."""
        script = _sh_block("## Running the daemon against the simulator")
        assert "kill %1" in script and "$SAMPLES/still.jpg" in script and ". .venv/bin/activate" in script
        port = _free_port()
        clone, home = tmp_path / "clone", tmp_path / "home"
        (clone / ".venv" / "bin").mkdir(parents=True)
        home.mkdir()
        bin_dir = Path(sys.executable).parent
        # The real activate script when this is a venv; else one that does the same for PATH.
        activate = Path(sys.prefix) / "bin" / "activate"
        shim = f'export PATH="{bin_dir}:$PATH"\n'
        (clone / ".venv" / "bin" / "activate").write_text(activate.read_text() if activate.is_file() else shim)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWAY", "AWS_", "VIRTUAL_ENV"))}
        env.update(HOME=str(home), PATH=f"{bin_dir}:/usr/bin:/bin")
        proc = subprocess.Popen(
            ["bash", "-e", "-c", script.replace("8000", str(port))],
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # bash and the simulator in a group of their own, for the clean-up
        )
        try:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
            outbox = home / "rw" / "outbox"
            status = json.loads((outbox / "waves.status.json").read_text())
            assert status["state"] == "succeeded" and status["outputs"][0]["file"] == "waves.mp4"
            assert (outbox / "waves.mp4").stat().st_size == status["outputs"][0]["bytes"]
            assert '"state": "succeeded"' in out and "\nwaves.mp4\nwaves.status.json\n" in out
            assert any(line.split()[:2] == ["waves", "succeeded"] for line in out.splitlines())
            deadline = time.monotonic() + 30  # `kill %1` sent SIGTERM; the simulator stops within moments
            while _listening(port) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _listening(port), "the walkthrough's `kill %1` did not stop the simulator"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever a failed run left behind
            proc.wait()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
