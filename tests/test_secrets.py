"""Nothing runwatch writes (logs, status files, the journal, kept records) contains the API key or the
signature of a presigned URL — checked by searching every byte written during a busy run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import structlog

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
