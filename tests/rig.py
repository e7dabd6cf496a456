"""The test rig shared by the daemon-level tests: an inbox, its outbox, a state dir, a simulator, and a daemon
running in a thread; plus one request per endpoint of the seed note."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from runwatch.config import Config, parse_config
from runwatch.daemon import Daemon
from runwatch.outbox import status_path
from runwatch.simulator import Simulator
from runwatch.store import Store, open_store

from .conftest import SAMPLES

FINAL = {"succeeded", "rejected", "failed", "cancelled", "needs_attention"}


class Rig:
    """An inbox, its outbox, a state dir, a simulator, and a daemon running in a thread."""

    def __init__(
        self,
        root: Path,
        sim: Simulator,
        *,
        s3: Any = None,
        inbox: dict[str, Any] | None = None,
        runway: dict[str, Any] | None = None,
        budget: dict[str, Any] | None = None,
        state: dict[str, Any] | None = None,
        http: dict[str, Any] | None = None,
        node: dict[str, Any] | None = None,
    ) -> None:
        self.root, self.sim, self.s3 = root, sim, s3
        self.inbox = root / "inbox"
        self.outbox = root / "outbox"
        self.inbox.mkdir(exist_ok=True)
        data: dict[str, Any] = {
            "runway": {"base_url": sim.url, "poll_interval": 0.05, **(runway or {})},
            "state": {"dir": str(root / "state"), **(state or {})},
            "scheduler": {"rescan": 1.0},
            # Off unless a test serves it: daemons of other tests (and other checkouts) must not meet on a port.
            "http": http if http is not None else {"listen": ""},
            "inbox": [{"path": str(self.inbox), "outbox": str(self.outbox), "settle": 0.3, **(inbox or {})}],
        }
        if budget is not None:
            data["budget"] = budget
        if node is not None:
            data["node"] = node
        if s3 is not None:
            data["s3"] = {
                "bucket": s3.bucket,
                "endpoint_url": s3.endpoint_url,
                "region": s3.region,
                "presign_expiry": 600,
                "addressing_style": "path",
            }
        self.data = data
        self.config: Config = parse_config(data, str(root / "runwatch.toml"))
        self.daemon: Daemon | None = None
        self.thread: threading.Thread | None = None
        self.stop_event = threading.Event()

    def config_file(self) -> Path:
        """The rig's config written to ROOT/runwatch.toml, for commands run as a user runs them."""
        path = self.root / "runwatch.toml"
        path.write_text(tomli_w.dumps(self.data))
        return path

    def start(self) -> Rig:
        self.stop_event = threading.Event()
        client = self.s3.client() if self.s3 is not None else None
        self.daemon = Daemon(self.config, api_key=self.sim.key, s3_client=client)
        self.daemon.start()
        daemon = self.daemon
        self.thread = threading.Thread(target=lambda: daemon.run(self.stop_event), daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(30)
            assert not self.thread.is_alive(), "the daemon did not stop within 30 s"
        self.thread = None

    def drop(self, name: str, body: dict[str, Any], fmt: str = "json", media: tuple[str, ...] = ()) -> None:
        """Write media, then the request under a temporary name, then rename it in: as producers should."""
        for item in media:
            shutil.copy(SAMPLES / item, self.inbox / item)
        text = json.dumps(body) if fmt == "json" else tomli_w.dumps(body)
        tmp = self.inbox / f"{name}.{fmt}.tmp"
        tmp.write_text(text)
        os.rename(tmp, self.inbox / f"{name}.{fmt}")

    def status(self, name: str, fmt: str = "json") -> dict[str, Any] | None:
        path = status_path(self.outbox, name, "toml" if fmt == "toml" else "json")  # long names are shortened
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        return json.loads(text) if fmt == "json" else tomllib.loads(text)

    def wait(self, name: str, states: set[str] | None = None, fmt: str = "json", timeout: float = 30) -> dict[str, Any]:
        states = states or FINAL
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.status(name, fmt)
            if last is not None and last["state"] in states:
                return last
            time.sleep(0.02)
        raise AssertionError(f"{name} did not reach {states} in {timeout} s; last status: {last}")

    def succeed(self, names: Iterable[str], timeout: float = 30, why: Callable[[], str] = str) -> None:
        """Each request ends succeeded, its outputs byte-identical to what the simulator served; ``why`` adds
        to a failure's message (a node's log, say)."""
        for name in names:
            status = self.wait(name, timeout=timeout)
            assert status["state"] == "succeeded", (status, why())
            self.check_outputs(status)

    def journal(self) -> Store:
        """The journal the rig's config names (SQLite in the state folder, or its [state] database)."""
        return open_store(self.config)

    def unconfirmed(self, name: str, body: dict[str, Any]) -> None:
        """A claimed request whose create was on its way at a crash (intent recorded, no task id), as the
        journal and the work area hold it."""
        from runwatch.clock import now_iso
        from runwatch.jobs.job import Job

        job_dir = self.inbox / ".runwatch" / "jobs" / "20261128T000000Z-0badf00d"
        job_dir.mkdir(parents=True)
        (job_dir / f"{name}.json").write_text(json.dumps(body))
        journal = self.journal()
        try:
            job = journal.add(
                Job(
                    id=job_dir.name,
                    name=name,
                    inbox="inbox",
                    format="json",
                    endpoint=body["endpoint"],
                    model=body["model"],
                    job_dir=str(job_dir),
                    request_path=str(job_dir / f"{name}.json"),
                )
            )
            journal.update(job, create_started_at=now_iso())
        finally:
            journal.close()

    def check_outputs(self, status: dict[str, Any]) -> None:
        """Every output is in the outbox, byte-identical to what the simulator served for the task."""
        assert status["outputs"], status
        for index, out in enumerate(status["outputs"]):
            data = (self.outbox / out["file"]).read_bytes()
            assert data == self.sim.output_bytes(status["task_id"], index)
            assert hashlib.sha256(data).hexdigest() == out["sha256"] and len(data) == out["bytes"]


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(sim: Simulator, **kwargs: Any) -> Rig:
        rig = Rig(tmp_path, sim, **kwargs)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.stop()


# One request per endpoint of the seed note, each with local media where the endpoint takes any.
SEED_REQUESTS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "image_to_video": (
        {
            "endpoint": "image_to_video",
            "model": "gen4_turbo",
            "promptImage": "still.jpg",
            "ratio": "1280:720",
            "duration": 5,
            "promptText": "waves",
        },
        ("still.jpg",),
    ),
    "text_to_video": (
        {"endpoint": "text_to_video", "model": "veo3.1", "promptText": "a forest", "ratio": "1280:720", "duration": 8},
        (),
    ),
    "video_to_video": (
        {"endpoint": "video_to_video", "model": "aleph2", "videoUri": "clip.mp4", "promptText": "make it snow"},
        ("clip.mp4",),
    ),
    "text_to_image": (
        {
            "endpoint": "text_to_image",
            "model": "gen4_image_turbo",
            "promptText": "@cat on a sofa",
            "ratio": "1920:1080",
            "referenceImages": [{"uri": "still.jpg", "tag": "cat"}],
        },
        ("still.jpg",),
    ),
    "video_upscale": (
        {"endpoint": "video_upscale", "model": "magnific_video_upscaler_creative", "videoUri": "clip.mp4"},
        ("clip.mp4",),
    ),
    "sound_effect": ({"endpoint": "sound_effect", "model": "eleven_text_to_sound_v2", "promptText": "rain"}, ()),
    "text_to_speech": (
        {
            "endpoint": "text_to_speech",
            "model": "eleven_multilingual_v2",
            "promptText": "Hello.",
            "voice": {"type": "runway-preset", "presetId": "Maya"},
        },
        (),
    ),
    "speech_to_speech": (
        {
            "endpoint": "speech_to_speech",
            "model": "eleven_multilingual_sts_v2",
            "media": {"type": "audio", "uri": "speech.mp3"},
            "voice": {"type": "runway-preset", "presetId": "Bernard"},
        },
        ("speech.mp3",),
    ),
}
