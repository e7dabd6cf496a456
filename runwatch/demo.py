"""``runwatch demo``: the daemon against the in-process simulator, in a folder tree of its own.

It does what a user would do by hand (write a config, start a daemon, drop requests and their media into the
inbox, follow the status files in the outbox) so a new user sees the whole main job on a fresh machine with no
key, no network and no S3. The tree is kept afterwards so the outputs, status files and config can be looked at.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from types import FrameType
from typing import Any, Final, TextIO

import structlog
import tomli_w

from runwatch.config import load_config
from runwatch.daemon import Daemon
from runwatch.errors import RunwatchError
from runwatch.logs import configure_logging
from runwatch.simulator import SimConfig, Simulator

__all__ = ["DEFAULT_TIME_SCALE", "REQUESTS", "DemoRequest", "run_demo"]

# A tenth of Runway's typical times: the slowest sample (a video upscale, about two minutes at Runway) takes
# about 12 s, long enough to watch tasks go through pending and running, short enough for a first look.
DEFAULT_TIME_SCALE: Final = 0.1
FINAL: Final = frozenset({"succeeded", "rejected", "failed", "cancelled", "needs_attention"})
EXIT_OK, EXIT_FAILURE, EXIT_INTERRUPTED = 0, 1, 130


@dataclass(frozen=True)
class DemoRequest:
    """One sample request: what is dropped into the inbox and how it should end."""

    name: str
    body: dict[str, Any]
    media: tuple[str, ...] = ()
    fmt: str = "json"
    expect: str = "succeeded"
    note: str = ""

    @property
    def file(self) -> str:
        return f"{self.name}.{self.fmt}"

    @property
    def status_file(self) -> str:
        return f"{self.name}.status.{self.fmt}"


REQUESTS: Final[tuple[DemoRequest, ...]] = (
    DemoRequest(
        "waves",
        {
            "endpoint": "image_to_video",
            "model": "gen4_turbo",
            "promptImage": "still.jpg",
            "promptText": "waves rolling in at dusk",
            "ratio": "1280:720",
            "duration": 5,
        },
        media=("still.jpg",),
    ),
    DemoRequest(
        "poster",
        {
            "endpoint": "text_to_image",
            "model": "gen4_image",
            "ratio": "1920:1080",
            "promptText": "@hero on a film poster, neon city at night",
            "referenceImages": [{"uri": "portrait.jpg", "tag": "hero"}],
        },
        media=("portrait.jpg",),
    ),
    DemoRequest(
        "sketches",
        {
            "endpoint": "text_to_image",
            "model": "muse_image",
            "ratio": "2016:1152",
            "promptText": "pencil sketches of a lighthouse",
            "outputCount": 2,
        },
        note="two images",
    ),
    DemoRequest(
        "greeting",
        {
            "endpoint": "text_to_speech",
            "model": "eleven_multilingual_v2",
            "promptText": "Hello from runwatch.",
            "voice": {"type": "runway-preset", "presetId": "Maya"},
        },
        note="voice Maya",
    ),
    DemoRequest(
        "new_voice",
        {
            "endpoint": "speech_to_speech",
            "model": "eleven_multilingual_sts_v2",
            "media": {"type": "audio", "uri": "speech.mp3"},
            "voice": {"type": "runway-preset", "presetId": "Bernard"},
        },
        media=("speech.mp3",),
        note="voice Bernard",
    ),
    DemoRequest(
        "sharper",
        {
            "endpoint": "video_upscale",
            "model": "magnific_video_upscaler_creative",
            "videoUri": "clip.mp4",
            "resolution": "1k",
        },
        media=("clip.mp4",),
    ),
    DemoRequest(
        "rain",
        {
            "endpoint": "sound_effect",
            "model": "eleven_text_to_sound_v2",
            "promptText": "rain on a tin roof",
            "duration": 4,
        },
        fmt="toml",
        note="a TOML request",
    ),
    # Deliberately wrong: veo3.1 offers neither this ratio nor this duration, so the request is refused
    # locally with both problems listed, before anything is uploaded or paid for.
    DemoRequest(
        "bad_ratio",
        {"endpoint": "text_to_video", "model": "veo3.1", "promptText": "a forest", "ratio": "1024:1024", "duration": 7},
        expect="rejected",
        note="deliberately invalid",
    ),
)


@dataclass
class _Seen:
    """What the follower last saw of one request."""

    state: str | None = None
    shown_progress: float = -1.0
    status: dict[str, Any] = field(default_factory=dict)


def _config_text(base_url: str, time_scale: float) -> str:
    poll = max(0.05, min(5.0, round(2.0 * time_scale, 3)))
    return f"""\
# Written by `runwatch demo`: a working configuration for this folder tree (every key is documented in
# config.example.toml). Relative paths are taken from this file's folder.

[runway]
# The simulator the demo started; `runwatch simulate --port {base_url.rsplit(":", 1)[-1]}` serves it again.
base_url = {json.dumps(base_url)}
# Short because the simulator's tasks take {time_scale:g} of Runway's time; against the real API keep the
# default of 5.
poll_interval = {poll}

[state]
dir = "state"

[scheduler]
rescan = 5.0

[[inbox]]
path = "inbox"
outbox = "outbox"
settle = 0.5
"""


def _sample(name: str) -> bytes:
    # Through importlib.resources so the samples are found in an installed wheel, not just in a checkout.
    return files("runwatch.data").joinpath("samples", name).read_bytes()


def _drop(inbox: Path, req: DemoRequest) -> None:
    """Media first, then the request under a .tmp name renamed into place: the inbox never sees half a file."""
    for item in req.media:
        (inbox / item).write_bytes(_sample(item))
    text = json.dumps(req.body, indent=2) + "\n" if req.fmt == "json" else tomli_w.dumps(req.body)
    tmp = inbox / f"{req.file}.tmp"
    tmp.write_text(text)
    os.rename(tmp, inbox / req.file)


def _read_status(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except ValueError:  # TOMLDecodeError too
        return None  # status files are replaced atomically; a bad one is not ours to explain here
    return data if isinstance(data, dict) else None


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB"


def _credits(status: dict[str, Any]) -> str:
    value = status.get("credits")
    if isinstance(value, int | float):
        return f"{value:g}"
    return "-"


class _Demo:
    def __init__(self, root: Path, time_scale: float, out: TextIO) -> None:
        self.root, self.time_scale, self.out = root, time_scale, out
        self.inbox, self.outbox = root / "inbox", root / "outbox"
        self.config_path, self.log_path = root / "runwatch.toml", root / "runwatch.log"
        self.sim: Simulator | None = None
        self.daemon: Daemon | None = None
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()
        self.daemon_error: BaseException | None = None
        self.seen = {r.name: _Seen() for r in REQUESTS}
        self.width = max(len(r.name) for r in REQUESTS)

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        # A random seed: the simulator derives task ids from it, and `runwatch simulate` (seed 0) run later
        # against this tree's journal must not hand out the ids of the demo's tasks again.
        self.sim = Simulator(SimConfig(time_scale=self.time_scale, seed=secrets.randbelow(2**31) + 1))
        url = self.sim.start()
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(_config_text(url, self.time_scale))
        config = load_config(self.config_path)
        self.daemon = Daemon(config, api_key=self.sim.key)
        self.daemon.start()
        daemon = self.daemon

        def run() -> None:
            try:
                daemon.run(self.stop)
            except BaseException as exc:  # noqa: BLE001 - reported once by the main thread, not as a traceback
                self.daemon_error = exc

        self.thread = threading.Thread(target=run, name="runwatch-demo-daemon", daemon=True)
        self.thread.start()

    def shutdown(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(60)
            if self.thread.is_alive():
                self.say("runwatch demo: the daemon did not stop within 60 s")
            self.thread = None
        elif self.daemon is not None:
            self.daemon.close()  # built but never run: release its lock and threads
        self.daemon = None
        if self.sim is not None:
            self.sim.stop()

    # -- following --------------------------------------------------------------------------------

    def follow(self, t0: float, deadline: float) -> bool:
        """Print a line per change seen in the status files until every request is final; False on timeout."""
        while True:
            for req in REQUESTS:
                seen = self.seen[req.name]
                if seen.state in FINAL:
                    continue
                status = _read_status(self.outbox / req.status_file)
                if status is None:
                    continue
                seen.status = status
                self.show(req.name, seen, status, time.monotonic() - t0)
            if all(s.state in FINAL for s in self.seen.values()):
                return True
            if self.daemon_error is not None or (self.thread is not None and not self.thread.is_alive()):
                return False
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def show(self, name: str, seen: _Seen, status: dict[str, Any], elapsed: float) -> None:
        state = str(status.get("state"))
        progress = status.get("progress")
        pct = progress * 100 if isinstance(progress, int | float) and state == "running" else None
        # Progress is shown in steps of a quarter so long tasks do not flood the terminal.
        if state == seen.state and (pct is None or pct < seen.shown_progress + 25):
            return
        seen.state = state
        seen.shown_progress = pct if pct is not None else -1.0
        line = f"{elapsed:6.1f}s  {name:<{self.width}}  {state}"
        if pct is not None:
            line = f"{line:<{self.width + 30}}{pct:3.0f}%"
        self.say(line.rstrip())

    # -- the report -------------------------------------------------------------------------------

    def check(self, req: DemoRequest) -> tuple[bool, list[str]]:
        """Whether a request ended as expected; its outputs as `file (size)`."""
        status = self.seen[req.name].status
        outputs: list[str] = []
        ok = status.get("state") == req.expect
        for out in status.get("outputs") or []:
            path = self.outbox / str(out.get("file"))
            size = path.stat().st_size if path.is_file() else 0
            ok = ok and size > 0
            outputs.append(f"{out.get('file')} ({_size(size)})" if size else f"{out.get('file')} (missing)")
        if req.expect == "succeeded" and not outputs:
            ok = False
        return ok, outputs

    def summary(self, elapsed: float) -> bool:
        rows = [("NAME", "STATE", "OUTPUTS", "CREDITS")]
        all_ok = True
        for req in REQUESTS:
            ok, outputs = self.check(req)
            all_ok = all_ok and ok
            state = str(self.seen[req.name].status.get("state", "(no status file)"))
            if not ok:
                state = f"{state} (expected {req.expect})"
            rows.append((req.name, state, ", ".join(outputs) or "-", _credits(self.seen[req.name].status)))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        self.say()
        self.say("Results")
        for r in rows:
            self.say("  " + "  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3].rjust(7))
        for req in REQUESTS:
            error = self.seen[req.name].status.get("error")
            if not isinstance(error, dict):
                continue
            how = "refused before any upload or API call" if req.expect == "rejected" else "error"
            self.say(f"\n  {req.name} was {self.seen[req.name].status.get('state')}: {how}")
            issues = error.get("issues") or []
            for issue in issues:
                if isinstance(issue, dict):
                    where = f"{issue.get('path')}: " if issue.get("path") else ""
                    self.say(f"    - {where}{issue.get('message')}")
            if not issues:
                self.say(f"    - {error.get('message')}")
        expected = sum(self.check(r)[0] for r in REQUESTS)
        self.say()
        self.say(f"{expected} of {len(REQUESTS)} requests ended as expected in {elapsed:.1f} s.")
        if self.sim is not None:
            tasks = list(self.sim.world.tasks.values())
            spent = sum(t.cost or 0 for t in tasks)
            valid = sum(r.expect != "rejected" for r in REQUESTS)
            twice = " (one was sent twice!)" if self.sim.duplicate_creates() else ""
            self.say(
                f"The simulator created {len(tasks)} tasks for the {valid} valid requests{twice}, none for "
                f"the invalid one, and charged {spent} simulated credits."
            )
        return all_ok

    def where(self, clean: bool) -> None:
        self.say()
        if clean:
            self.say(
                f"Removed the demo folder {self.root} (--clean); `runwatch demo --dir DIR` keeps one where you choose."
            )
            self.say('Next: README.md, "Running the daemon against the simulator", walks through the same by hand.')
            return
        places = {
            "config": self.config_path,
            "outbox": f"{self.outbox}/  (outputs, NAME.status.json / NAME.status.toml)",
            "requests": f"{self.inbox}/.runwatch/done/ and failed/  (each request kept with its media)",
            "journal": self.root / "state" / "journal.sqlite3",
            "daemon log": self.log_path,
        }
        self.say("Where things are (the folder is kept so you can look; rm -rf it when done):")
        for key, value in places.items():
            self.say(f"  {key:<11} {value}")
        port = self.sim.url.rsplit(":", 1)[-1] if self.sim is not None else "8000"
        config = self.config_path
        self.say()
        self.say("Next steps")
        self.say(f"  cat {self.outbox}/waves.status.json   # what other tools read to follow a job")
        self.say(f"  runwatch simulate --port {port} --time-scale {self.time_scale:g} &   # the same local API again")
        self.say(f"  RUNWAYML_API_SECRET=key_$(python3 -c 'print(\"0\" * 128)') runwatch run --config {config}")
        self.say("  # ...then drop requests into the inbox (NAME.json.tmp renamed to NAME.json), and:")
        self.say(f"  runwatch status --config {config}")
        self.say("  # or open the dashboard the daemon serves: http://127.0.0.1:8765/ ([http] in the README)")
        self.say("  # for the real API, leave base_url at its default and put your key in RUNWAYML_API_SECRET")


@contextlib.contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """The daemon's structlog output (and any stray stdlib warnings) to a file, so the terminal stays readable."""
    stream = path.open("a", encoding="utf-8", buffering=1)
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    configure_logging("info", stream=stream)
    try:
        yield
    finally:
        root.removeHandler(handler)
        # Nothing may write to the file once it is closed; whatever still logs goes nowhere.
        structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
        stream.close()


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C (main thread only: signal handlers cannot be set elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """While stopping, a second Ctrl-C must not leave the daemon half closed (its lock, its journal)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def _prepare(directory: Path | None) -> Path:
    if directory is None:
        return Path(tempfile.mkdtemp(prefix="runwatch-demo-"))
    root = directory.expanduser().absolute()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        # Never mix with someone's files: old status files would look like this run's results.
        raise RunwatchError(f"{root} is not an empty folder; give --dir a new or empty one")
    root.mkdir(parents=True, exist_ok=True)
    return root


def run_demo(
    *,
    directory: Path | None = None,
    time_scale: float = DEFAULT_TIME_SCALE,
    out: TextIO | None = None,
    clean: bool = False,
) -> int:
    """Run the demo; 0 when every request ended as expected, 1 otherwise, 130 when interrupted.

    ``directory`` (created, must be empty) holds the tree; by default a new temporary folder. Either is kept
    afterwards unless ``clean``. ``out`` defaults to the standard output at call time.
    """
    if not (math.isfinite(time_scale) and time_scale > 0):
        raise RunwatchError(f"the time scale must be a number above 0, not {time_scale!r}")
    root = _prepare(directory)
    demo = _Demo(root, time_scale, out if out is not None else sys.stdout)
    try:
        with _interruptible():
            code = _run(demo)
    except KeyboardInterrupt:  # between the steps _run guards itself
        code = EXIT_INTERRUPTED
    if clean:
        shutil.rmtree(root, ignore_errors=True)
    if code == EXIT_INTERRUPTED:
        demo.say("runwatch demo: interrupted" + ("" if clean else f"; the folder {root} is kept"))
    else:
        demo.where(clean)
    return code


def _run(demo: _Demo) -> int:
    demo.say("runwatch demo: the daemon against a local Runway API simulator (no key, no network, no credits)")
    demo.say(f"  folder      {demo.root}")
    with _log_to(demo.log_path):
        try:
            demo.start()
            url = demo.sim.url if demo.sim is not None else ""
            demo.say(f"  simulator   {url}  (tasks {1 / demo.time_scale:g}x faster than Runway)")
            demo.say(f"  config      {demo.config_path}")
            demo.say()
            demo.say(
                f"Dropping {len(REQUESTS)} requests into inbox/ (media first, then NAME.json.tmp renamed to NAME.json):"
            )
            for req in REQUESTS:
                model = f"{req.body['endpoint']} / {req.body['model']}"
                extra = ", ".join((*req.media, req.note) if req.note else req.media)
                demo.say(f"  {req.file:<{demo.width + 5}}  {model:<50}  {extra}".rstrip())
            demo.say()
            demo.say("Following the status files in outbox/ (one line per change):")
            t0 = time.monotonic()
            for req in REQUESTS:
                _drop(demo.inbox, req)
            finished = demo.follow(t0, deadline=t0 + 60 + 300 * demo.time_scale)
            if demo.daemon_error is not None:
                demo.say(f"runwatch demo: the daemon stopped: {demo.daemon_error}")
            elif not finished:
                waiting = [n for n, s in demo.seen.items() if s.state not in FINAL]
                demo.say(f"runwatch demo: gave up waiting for {', '.join(waiting)}; see {demo.log_path}")
            ok = demo.summary(time.monotonic() - t0)
            return EXIT_OK if ok and finished else EXIT_FAILURE
        except KeyboardInterrupt:
            demo.say("\nrunwatch demo: stopping the daemon and the simulator")
            return EXIT_INTERRUPTED
        finally:
            with _uninterrupted():
                demo.shutdown()
