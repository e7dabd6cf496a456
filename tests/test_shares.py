"""Network shares: with the polling observer a file copied slowly is not taken before it is complete, and an
inbox folder that disappears (an unmount) pauses that inbox and resumes it, losing and resending nothing."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from runwatch.simulator import Simulator

from .conftest import SAMPLES
from .rig import SEED_REQUESTS, Rig

POLLING = {"polling": True, "settle": 1.0}
SPEECH = SEED_REQUESTS["text_to_speech"][0]


def _slow_copy(data: bytes, target: Path, chunks: int, pause: float) -> threading.Thread:
    """Writes ``data`` to ``target`` in ``chunks`` pieces with ``pause`` seconds between, as a slow share copy."""

    def write() -> None:
        step = -(-len(data) // chunks)
        with open(target, "wb") as fh:
            for start in range(0, len(data), step):
                fh.write(data[start : start + step])
                fh.flush()
                os.fsync(fh.fileno())
                time.sleep(pause)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_slow_copies_are_not_taken_early(rig_factory: Callable[..., Rig], sim: Simulator) -> None:
    """A request and its image copied slowly in chunks (no temporary names): nothing is taken or sent until both
    are complete; then the request succeeds with the whole image. (The pauses stay well under the settle time,
    as a copy that stalls for longer than `settle` is indistinguishable from a finished one.)"""
    # A settle time ten times the writers' pauses: a loaded machine may hold a writer back for a while.
    rig = rig_factory(sim, inbox={**POLLING, "settle": 2.0}).start()
    image = (SAMPLES / "still.jpg").read_bytes()
    body, _ = SEED_REQUESTS["image_to_video"]
    request = json.dumps(body, indent=2).encode()
    writers = [
        _slow_copy(image, rig.inbox / "still.jpg", chunks=12, pause=0.2),
        _slow_copy(request, rig.inbox / "waves.json", chunks=9, pause=0.2),
    ]
    while not (rig.inbox / "waves.json").exists():  # the writers' threads have begun
        time.sleep(0.01)
    while any(w.is_alive() for w in writers):
        assert (rig.inbox / "waves.json").exists(), "taken while still being copied"
        assert rig.status("waves") is None and sim.create_count() == 0 and sim.requests("/v1/uploads") == []
        time.sleep(0.05)
    status = rig.wait("waves", timeout=30)
    assert status["state"] == "succeeded", status
    uploads = list(sim.world.uploads.values())
    assert len(uploads) == 1 and uploads[0].size == len(image)
    assert sim.create_count() == 1


def test_inbox_unmounted_and_back(rig_factory: Callable[..., Rig], sim: Simulator) -> None:
    """The inbox folder renamed away (an unmount) and put back: the inbox pauses, then resumes; nothing is refused,
    failed or resubmitted, the kept records are intact, and a request dropped after the return is processed."""
    rig = rig_factory(sim, inbox=POLLING).start()
    assert rig.daemon is not None
    watcher = rig.daemon.watchers[0]
    rig.drop("before", SPEECH)
    assert rig.wait("before")["state"] == "succeeded"
    statuses_before = sorted(p.name for p in rig.outbox.iterdir())
    gone = rig.root / "inbox.unmounted"
    os.rename(rig.inbox, gone)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not watcher.paused:
        time.sleep(0.05)
    assert watcher.paused, "the inbox did not pause while its folder was missing"
    time.sleep(1.5)  # several rescans while missing: none may treat it as "everything was deleted"
    assert rig.thread is not None and rig.thread.is_alive()
    os.rename(gone, rig.inbox)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and watcher.paused:
        time.sleep(0.05)
    assert not watcher.paused, "the inbox did not resume"
    rig.drop("after", dict(SPEECH, promptText="back again"))
    assert rig.wait("after", timeout=30)["state"] == "succeeded"
    assert sim.create_count() == 2 and sim.duplicate_creates() == []
    assert (rig.status("before") or {}).get("state") == "succeeded"
    assert set(statuses_before) <= {p.name for p in rig.outbox.iterdir()}
    assert not [
        p
        for p in rig.outbox.glob("*.status.json")
        if json.loads(p.read_text())["state"] in {"rejected", "failed", "needs_attention"}
    ]
    done = list((rig.inbox / ".runwatch" / "done").iterdir())
    assert len(done) == 2


def test_inbox_missing_at_start(rig_factory: Callable[..., Rig], sim: Simulator) -> None:
    """A share not mounted yet when the daemon starts: the inbox waits, paused, and works once it appears."""
    rig = rig_factory(sim, inbox=POLLING)
    rig.inbox.rmdir()
    rig.start()
    assert rig.daemon is not None
    watcher = rig.daemon.watchers[0]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not watcher.paused:
        time.sleep(0.05)
    assert watcher.paused and not rig.inbox.exists()  # runwatch does not invent the mount point
    rig.inbox.mkdir()
    rig.drop("late", SPEECH)
    assert rig.wait("late", timeout=30)["state"] == "succeeded"
