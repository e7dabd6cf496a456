"""A daemon whose HTTP server listens on loopback, as the web API's and the dashboard's tests start it, and the
busy run their scans for secrets read while it goes on."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runwatch.simulator import Fault, SimConfig, Simulator

from .rig import SEED_REQUESTS, Rig
from .test_secrets import SECRET_PATTERNS

TOKEN = "t0ken-for-the-tests-" + "9" * 24

# A presigned S3 URL whose access key id and signature must never be shown.
KEY = "key_" + "5e" * 64
SIGNATURE = "ab12" * 16
SIGNED = (
    "https://media.s3.us-east-1.amazonaws.com/x.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    f"&X-Amz-Credential=AKIAEXAMPLEKEY12%2F20261207%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature={SIGNATURE}"
)
BUSY = ("image_to_video", "speech_to_speech", "text_to_video", "sound_effect")


def served(
    rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path, *, token: bool = True, **kwargs: Any
) -> Rig:
    """A running daemon whose HTTP server listens on a free loopback port (or on ``listen``), with TOKEN in a
    file unless ``token`` is false."""
    http: dict[str, Any] = {"listen": kwargs.pop("listen", "127.0.0.1:0")}
    if token:
        (tmp_path / "http-token").write_text(TOKEN + "\n")
        http["token_file"] = str(tmp_path / "http-token")
    return rig_factory(sim, http=http, **kwargs).start()


def job_id(rig: Rig, name: str) -> str:
    """The id of request ``name``'s job, as the rig's journal has it."""
    journal = rig.journal()
    try:
        job = journal.find(name)
        assert job is not None
        return job.id
    finally:
        journal.close()


def leaks(data: bytes, key: str, planted: tuple[str, ...]) -> list[str]:
    """What `data` gives away: the API key, anything SECRET_PATTERNS knows, and each planted secret."""
    found = [f"the API key at {data.find(key.encode())}"] if key.encode() in data else []
    found += [f"{p.pattern!r}" for p in SECRET_PATTERNS if p.search(data)]
    return found + [f"planted {secret[:12]}" for secret in planted if secret.encode() in data]


def busy_run(
    rig_factory: Callable[..., Rig],
    s3: Any,
    tmp_path: Path,
    read: Callable[[Rig, threading.Event], None],
    then: Callable[[Rig], None] = lambda rig: None,
) -> dict[str, str]:
    """The BUSY requests (media through presigned S3 URLs, Runway failures quoting SIGNED) run to their end by a
    served daemon on a simulator taking KEY, while ``read(rig, stop)`` reads in a thread until ``stop`` is set;
    then ``then(rig)``, the daemon still up. Returns each request's end state."""
    config = SimConfig(keys=frozenset({KEY}), time_scale=0.002, allow_http_loopback=True)
    with Simulator(config) as sim:
        sim.faults.add(Fault("fail", endpoint="text_to_video", failure_code="ASSET.INVALID", message=f"Bad {SIGNED}"))
        sim.faults.add(Fault("error", status=400, endpoint="sound_effect", message=f"Cannot fetch {SIGNED}"))
        rig = served(rig_factory, sim, tmp_path, s3=s3)
        stop = threading.Event()
        reader = threading.Thread(target=read, args=(rig, stop))
        reader.start()
        try:
            for name in BUSY:
                body, media = SEED_REQUESTS[name]
                rig.drop(name, body, media=media)
            ends = {name: rig.wait(name, timeout=60)["state"] for name in BUSY}
        finally:
            stop.set()
            reader.join(30)
        then(rig)
    return ends
