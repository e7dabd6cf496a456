"""Nothing runwatch writes (logs, status files, the journal, kept records) contains the API key or the
signature of a presigned URL — checked by searching every byte written during a busy run."""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
import tomli_w

from runwatch.cli import main
from runwatch.logs import configure_logging
from runwatch.simulator import Fault, SimConfig, Simulator

from .rig import SEED_REQUESTS, Rig

SECRET_PATTERNS = [
    re.compile(rb"(?i)x-amz-signature[=\"':\s]+(?!REDACTED|\*\*\*)[0-9a-f]{16,}"),
    re.compile(rb"(?i)x-amz-credential[=\"':\s]+(?!REDACTED|\*\*\*)[A-Z0-9]{8,}"),
    re.compile(rb"(?i)[?&]_jwt=(?!REDACTED|\*\*\*)[A-Za-z0-9_\-.]{16,}"),
]


def _scan(root: Path, key: str) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if key.encode() in data:
            found.append(f"{path}: the API key")
        for pattern in SECRET_PATTERNS:
            match = pattern.search(data)
            if match:
                found.append(f"{path}: {match.group(0)[:60]!r}")
    return found


class TestNothingSecretIsWritten:
    def test_busy_run_leaks_nothing(self, tmp_path: Path, s3: Any) -> None:
        """S3 and Runway uploads, a rejection, a failure, debug logging: no secret anywhere."""
        key = "key_" + "7f" * 64
        log_file = tmp_path / "runwatch.log"
        config = SimConfig(keys=frozenset({key}), time_scale=0.002, allow_http_loopback=True)
        with Simulator(config) as sim, log_file.open("w") as stream:
            configure_logging("debug", stream=stream)
            try:
                sim.faults.add(Fault("fail", endpoint="sound_effect", failure_code="SAFETY.INPUT.TEXT"))
                for transport_s3 in (True, False):
                    root = tmp_path / ("s3" if transport_s3 else "runway")
                    root.mkdir()
                    rig = Rig(root, sim, s3=s3 if transport_s3 else None)
                    rig.start()
                    try:
                        for name in ("image_to_video", "speech_to_speech", "sound_effect"):
                            body, media = SEED_REQUESTS[name]
                            rig.drop(name, body, media=media)
                        rig.drop("bad", {"endpoint": "image_to_video", "model": "gen4_turbo", "ratio": "9:9"})
                        for name in ("image_to_video", "speech_to_speech", "sound_effect", "bad"):
                            rig.wait(name, timeout=60)
                    finally:
                        rig.stop()
            finally:
                structlog.reset_defaults()
        written = log_file.read_text()
        assert "api.created" in written and "job.failed" in written  # the log really saw the run
        assert _scan(tmp_path, key) == []

    def test_the_scan_finds_leaks(self, tmp_path: Path) -> None:
        """A control: the scan above would notice a key or a signature if one were written."""
        key = "key_" + "1" * 128
        (tmp_path / "a.log").write_text(f"GET /x?X-Amz-Signature={'c' * 64}&X-Amz-Credential=AKIAEXAMPLE123/x")
        (tmp_path / "b.json").write_text(f'{{"k": "{key}", "u": "https://o.example.com/0.mp4?_jwt={"z" * 40}"}}')
        assert len(_scan(tmp_path, key)) == 4


def _key_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


class TestRedactedAtTheDoor:
    """Text from outside is redacted where it enters, not only where it is written out: Runway's error text
    quoting a presigned URL never reaches the journal's file (or its write-ahead log) nor `runwatch status`."""

    SIG_V4 = secrets.token_hex(32)
    KEY_V4 = _key_id("AKIA")
    SIG_V2 = secrets.token_hex(14) + "%2B" + secrets.token_hex(5) + "%3D"
    KEY_V2 = _key_id("ASIA")
    V4 = (
        "https://media.s3.us-east-1.amazonaws.com/in/still.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={KEY_V4}%2F20261207%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261207T000000Z"
        f"&X-Amz-Expires=600&X-Amz-SignedHeaders=host&X-Amz-Signature={SIG_V4}"
    )
    V2 = f"https://media.s3.amazonaws.com/in/clip.mp4?AWSAccessKeyId={KEY_V2}&Expires=1796601600&Signature={SIG_V2}"
    SECRETS = (SIG_V4, KEY_V4, SIG_V2, KEY_V2)

    def _found(self, data: bytes) -> list[str]:
        return [secret for secret in self.SECRETS if secret.encode() in data]

    def _journal_bytes(self, state: Path) -> bytes:
        files = [state / "journal.sqlite3", state / "journal.sqlite3-wal"]
        return b"".join(f.read_bytes() for f in files if f.exists())

    def _status_json(self, config: Path, capsys: pytest.CaptureFixture[str]) -> str:
        capsys.readouterr()
        assert main(["status", "--json", "--config", str(config)]) == 0
        return capsys.readouterr().out

    def test_errors_quoting_presigned_urls(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Runway answers a create with a 400 and a 502 (after the work), a task fails, and an upload is
        refused, each quoting a presigned URL with its signature and access key id: the journal's bytes and
        `runwatch status --json` hold neither, while the same scan finds both once they are planted as is."""
        sim.faults.add(
            Fault("error", status=400, endpoint="text_to_speech", count=1, message=f"Cannot fetch {self.V4}")
        )
        sim.faults.add(
            Fault("error", status=502, after=True, endpoint="sound_effect", count=1, message=f"via {self.V2}")
        )
        sim.faults.add(Fault("fail", endpoint="text_to_video", failure_code="ASSET.INVALID", message=f"Bad {self.V4}"))
        sim.faults.add(Fault("error", status=400, endpoint="uploads", count=1, message=f"Refused {self.V2}"))
        rig = rig_factory(sim).start()
        expected = {
            "text_to_speech": "failed",
            "sound_effect": "needs_attention",
            "text_to_video": "failed",
            "image_to_video": "failed",
        }
        for name in expected:
            body, media = SEED_REQUESTS[name]
            rig.drop(name, body, media=media)
        states = {name: rig.wait(name, timeout=60)["state"] for name in expected}
        assert states == expected
        state = tmp_path / "state"
        config = tmp_path / "status.toml"
        config.write_text(
            tomli_w.dumps(
                {
                    "runway": {"base_url": sim.url},
                    "state": {"dir": str(state)},
                    "inbox": [{"path": str(rig.inbox), "outbox": str(rig.outbox)}],
                }
            )
        )
        stored = self._journal_bytes(state)
        assert stored.count(b"X-Amz-Signature=REDACTED") >= 2 and stored.count(b"Signature=REDACTED") >= 4
        assert self._found(stored) == []  # while the daemon runs: the database and its write-ahead log
        rig.stop()
        assert self._found(self._journal_bytes(state)) == []  # and once the log is folded into the database
        # Listed once the daemon is stopped, so none of its log lines (printed to the same captured stdout,
        # and redacted too) are counted with the listing.
        listed = self._status_json(config, capsys)
        assert listed.count("X-Amz-Credential=REDACTED") == 2 and listed.count("AWSAccessKeyId=REDACTED") == 2
        assert self._found(listed.encode()) == []

        # The control: the same text stored as it came is found by the same scans.
        journal = rig.journal()
        job = journal.find("text_to_speech")
        assert job is not None
        journal.update(job, error={"code": "400", "message": f"Cannot fetch {self.V4} via {self.V2}"})
        journal.close()
        assert self._found(self._journal_bytes(state)) == list(self.SECRETS)
        assert self._found(self._status_json(config, capsys).encode()) == list(self.SECRETS)
