"""`runwatch validate`, `validate --price`, `submit` and `credits` against real folders, the simulator over
loopback and SeaweedFS: what each prints, its exit codes, and what reaches Runway (or does not)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from runwatch.cli import main
from runwatch.credits import credits_command
from runwatch.jobs.job import Job
from runwatch.ops import daemon_holder
from runwatch.pricing import estimate
from runwatch.simulator import Fault, Simulator
from runwatch.store import Journal, StateLock
from runwatch.submit import _SubmitLock, submit_command, sweep_abandoned
from runwatch.validate import validate_command

from .conftest import SAMPLES

WAVES = {
    "endpoint": "image_to_video",
    "model": "gen4_turbo",
    "promptImage": "still.jpg",
    "promptText": "waves",
    "ratio": "1280:720",
    "duration": 5,
}
SPEECH = {
    "endpoint": "text_to_speech",
    "model": "eleven_multilingual_v2",
    "promptText": "Hello there.",
    "voice": {"type": "runway-preset", "presetId": "Maya"},
}
FILM = {"endpoint": "text_to_video", "model": "veo3.1", "promptText": "a forest", "ratio": "1280:720", "duration": 8}
MYSTERY = {"endpoint": "text_to_video", "model": "kling3.0_pro", "promptText": "x", "ratio": "1920:1080"}
BAD = {
    "endpoint": "image_to_video",
    "model": "gen4_turbo",
    "promptImage": "missing.jpg",
    "ratio": "1:1",
    "duration": "long",
}


class Setup:
    """A config file on disk (simulator URL, state dir, one inbox), its folders, and the environment."""

    def __init__(
        self,
        root: Path,
        sim: Simulator | None,
        *,
        s3: Any = None,
        inbox: dict[str, Any] | None = None,
        runway: dict[str, Any] | None = None,
    ) -> None:
        self.root = root
        self.inbox = root / "inbox"
        self.outbox = root / "outbox"
        self.requests = root / "requests"
        for folder in (self.inbox, self.requests):
            folder.mkdir(exist_ok=True)
        data: dict[str, Any] = {
            "runway": {"base_url": sim.url if sim else "http://127.0.0.1:9", "poll_interval": 0.05, **(runway or {})},
            "state": {"dir": str(root / "state")},
            "inbox": [{"name": "main", "path": str(self.inbox), "outbox": str(self.outbox), **(inbox or {})}],
        }
        if s3 is not None:
            data["s3"] = {
                "bucket": s3.bucket,
                "endpoint_url": s3.endpoint_url,
                "region": s3.region,
                "addressing_style": "path",
            }
        self.config = root / "runwatch.toml"
        self.config.write_text(tomli_w.dumps(data))
        self.env = {"RUNWAYML_API_SECRET": sim.key if sim else "key_" + "0" * 128}

    def request(
        self,
        name: str,
        body: dict[str, Any],
        *,
        folder: Path | None = None,
        fmt: str = "json",
        media: tuple[str, ...] = (),
    ) -> Path:
        where = folder or self.requests
        for item in media:
            shutil.copy(SAMPLES / item, where / item)
        path = where / f"{name}.{fmt}"
        path.write_text(json.dumps(body) if fmt == "json" else tomli_w.dumps(body))
        return path

    def journal(self) -> Journal:
        return Journal(self.root / "state" / "journal.sqlite3")


@pytest.fixture
def setup(tmp_path: Path, sim: Simulator) -> Setup:
    return Setup(tmp_path, sim)


def _validate(setup: Setup, *paths: Path | str, price: bool = False, as_json: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = validate_command(
        [str(p) for p in paths],
        config_file=str(setup.config),
        price=price,
        as_json=as_json,
        out=out,
        err=err,
        env=setup.env,
    )
    return code, out.getvalue(), err.getvalue()


def _submit(setup: Setup, path: Path, **kwargs: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    kwargs.setdefault("env", setup.env)
    code = submit_command(str(path), config_file=str(setup.config), out=out, err=err, **kwargs)
    return code, out.getvalue(), err.getvalue()


class TestValidate:
    def test_folder_of_good_and_bad_files(self, setup: Setup) -> None:
        """A folder stands for its request files: each problem is printed as FILE: field: message, each good
        file as OK with its estimate; status files and other files are left out; exit 1."""
        setup.request("waves", WAVES, media=("still.jpg",))
        setup.request("speech", SPEECH, fmt="toml")
        setup.request("bad", BAD)
        (setup.requests / "notes.txt").write_text("not a request")
        (setup.requests / "waves.status.json").write_text("{}")
        code, out, _ = _validate(setup, setup.requests)
        assert code == 1
        bad = f"{setup.requests / 'bad.json'}"
        for field in ("ratio", "duration", "promptImage"):
            assert any(line.startswith(f"{bad}: {field}: ") for line in out.splitlines()), (field, out)
        assert f"{setup.requests / 'waves.json'}: OK image_to_video gen4_turbo, 5 credits/s × 5 s = 25 credits" in out
        assert f"{setup.requests / 'speech.toml'}: OK text_to_speech" in out
        assert "notes.txt" not in out and "status" not in out.split("(config")[0]
        assert "3 files: 2 valid, 1 invalid" in out

    def test_all_valid_exits_0(self, setup: Setup) -> None:
        """Only valid files: exit 0."""
        path = setup.request("speech", SPEECH)
        assert _validate(setup, path)[0] == 0

    def test_unknown_price_says_why(self, setup: Setup) -> None:
        """A model without a documented price is valid; its estimate reads "unknown: <why>"."""
        code, out, _ = _validate(setup, setup.request("mystery", MYSTERY))
        assert code == 0 and ", unknown: no documented price for kling3.0_pro" in out

    def test_json(self, setup: Setup) -> None:
        """--json gives every file with validity, problems (path and message) and the estimate."""
        setup.request("waves", WAVES, media=("still.jpg",))
        setup.request("bad", BAD)
        code, out, _ = _validate(setup, setup.requests, as_json=True)
        doc = json.loads(out)
        files = {Path(f["file"]).name: f for f in doc["files"]}
        assert code == 1 and doc["valid"] == 1 and doc["invalid"] == 1 and doc["config"] == str(setup.config)
        assert files["waves.json"]["estimate"]["credits"] == 25 and files["waves.json"]["problems"] == []
        assert {"ratio", "duration", "promptImage"} <= {p["path"] for p in files["bad.json"]["problems"]}
        assert files["bad.json"]["estimate"] is None

    def test_inbox_context(self, tmp_path: Path, sim: Simulator) -> None:
        """A file in a configured inbox gets that inbox's endpoint and defaults; the same file elsewhere does not."""
        setup = Setup(
            tmp_path,
            sim,
            inbox={"endpoint": "image_to_video", "defaults": {"model": "gen4_turbo", "ratio": "1280:720"}},
        )
        body = {"promptImage": "still.jpg", "promptText": "a bay", "runwatch": {"max_credits": 10}}
        inside = setup.request("short", body, folder=setup.inbox, media=("still.jpg",))
        outside = setup.request("short", body, media=("still.jpg",))
        code, out, _ = _validate(setup, inside)
        assert code == 0 and "OK image_to_video gen4_turbo" in out and "duration not given" in out
        assert "above its max_credits of 10" in out  # the daemon would hold it
        code, out, _ = _validate(setup, outside)
        assert code == 1 and f"{outside}: endpoint: is required" in out

    def test_bare_media_in_an_accepting_inbox(self, tmp_path: Path, sim: Simulator) -> None:
        """In an inbox with accept_media its pictures are requests too (the inbox's defaults complete them);
        a picture named on its own elsewhere is not a request."""
        setup = Setup(
            tmp_path,
            sim,
            inbox={
                "endpoint": "image_to_video",
                "accept_media": True,
                "defaults": {"model": "gen4_turbo", "ratio": "1280:720"},
            },
        )
        shutil.copy(SAMPLES / "still.jpg", setup.inbox / "holiday.jpg")
        code, out, _ = _validate(setup, setup.inbox)
        assert code == 0 and f"{setup.inbox / 'holiday.jpg'}: OK image_to_video gen4_turbo" in out
        shutil.copy(SAMPLES / "still.jpg", setup.requests / "pic.jpg")
        code, out, _ = _validate(setup, setup.requests / "pic.jpg")
        assert code == 1 and "is not a request file" in out

    def test_media_outside_the_folder_refused(self, setup: Setup) -> None:
        """Outside an inbox the request's own folder is the root: a path leading out of it is a problem."""
        shutil.copy(SAMPLES / "still.jpg", setup.root / "still.jpg")
        path = setup.request("escape", dict(WAVES, promptImage="../still.jpg"))
        code, out, _ = _validate(setup, path)
        assert code == 1 and f"{path}: promptImage: " in out and "outside" in out

    def test_no_such_file_is_a_usage_error(self, setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
        """A path that does not exist: exit 2, named on stderr, nothing checked."""
        good = setup.request("speech", SPEECH)
        assert main(["validate", "--config", str(setup.config), str(good), str(setup.root / "nope.json")]) == 2
        captured = capsys.readouterr()
        assert "nope.json: no such file" in captured.err and captured.out == ""

    def test_config_error_exits_78(self, setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
        """A broken config is reported with its problems (file and key), exit 78."""
        setup.config.write_text('[runway]\npoll_intervall = 3\n[[inbox]]\npath = "i"\noutbox = "o"\n')
        assert main(["validate", "--config", str(setup.config), str(setup.request("speech", SPEECH))]) == 78
        err = capsys.readouterr().err
        assert str(setup.config) in err and "poll_intervall" in err

    def test_without_any_config(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No config named and none found: plain defaults, and the summary says so."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("RUNWATCH_CONFIG", raising=False)
        (tmp_path / "speech.json").write_text(json.dumps(SPEECH))
        assert main(["validate", "speech.json"]) == 0
        assert "no config file: plain defaults" in capsys.readouterr().out

    def test_thousand_files(self, setup: Setup) -> None:
        """1,000 request files are checked well within 2 s (catalogue, prices and media probes loaded once)."""
        shutil.copy(SAMPLES / "still.jpg", setup.requests / "still.jpg")
        bodies = [WAVES, SPEECH, FILM, MYSTERY]
        for i in range(1000):
            body = dict(bodies[i % 4], promptText=f"take {i}")
            (setup.requests / f"r{i:04d}.json").write_text(json.dumps(body))
        started = time.perf_counter()
        code, out, _ = _validate(setup, setup.requests)
        elapsed = time.perf_counter() - started
        assert code == 0 and "1,000 files: 1,000 valid, 0 invalid" in out
        assert elapsed < 2.0, elapsed


class TestPrice:
    def test_totals_match_the_price_data(self, setup: Setup) -> None:
        """--price: one row per request, and a total equal to runwatch.pricing.estimate summed; unknowns are
        named and counted apart, invalid files listed with their problems."""
        bodies = {"waves": WAVES, "speech": SPEECH, "film": FILM, "film2": dict(FILM, duration=4), "mystery": MYSTERY}
        for name, body in bodies.items():
            setup.request(name, body, media=("still.jpg",) if body is WAVES else ())
        setup.request("bad", BAD)
        expected = 0.0
        for body in bodies.values():
            fields = {k: v for k, v in body.items() if k != "endpoint"}
            credits = estimate(str(body["endpoint"]), str(body["model"]), fields).credits
            expected += credits or 0
        code, out, _ = _validate(setup, setup.requests, price=True)
        assert code == 1  # bad.json
        assert out.splitlines()[0].split() == ["NAME", "ENDPOINT", "MODEL", "ESTIMATE", "BASIS"]
        assert (
            f"total: {int(expected):,} credits for 4 requests; 1 request with unknown price: mystery; "
            "1 invalid request not priced: bad" in out
        )
        assert f"{setup.requests / 'bad.json'}: ratio: " in out
        rows = {line.split()[0]: line.split() for line in out.splitlines()[1:6]}
        assert rows["film"][:4] == ["film", "text_to_video", "veo3.1", "320"] and rows["mystery"][3] == "unknown"

        code, out, _ = _validate(setup, setup.requests, price=True, as_json=True)
        doc = json.loads(out)
        assert doc["total"] == expected and doc["priced"] == 4 and doc["unknown"] == ["mystery"]
        assert [Path(f["file"]).name for f in doc["invalid"]] == ["bad.json"]

    def test_thousands_separator(self, setup: Setup) -> None:
        """Totals are written the way people read them: 1,600 credits."""
        for i in range(5):
            setup.request(f"film{i}", FILM)
        code, out, _ = _validate(setup, setup.requests, price=True)
        assert code == 0 and "total: 1,600 credits for 5 requests\n" in out


class TestSubmit:
    def test_wait_end_to_end(self, setup: Setup, sim: Simulator, capsys: pytest.CaptureFixture[str]) -> None:
        """submit --wait: media through Runway's uploads, one create, progress lines, outputs byte-identical to
        what Runway served beside the request, a status file, and a journal job `runwatch status` lists."""
        path = setup.request("waves", WAVES, media=("still.jpg",))
        code, out, err = _submit(setup, path, wait=True)
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].startswith("waves: submitted as task ") and lines[0].endswith(", estimated 25 credits")
        assert "waves: running" in out and lines[-1].startswith("waves: succeeded (25 credits): ")
        status = json.loads((setup.requests / "waves.status.json").read_text())
        assert status["state"] == "succeeded" and status["request"] == str(path.absolute())
        for index, item in enumerate(status["outputs"]):
            data = (setup.requests / item["file"]).read_bytes()
            assert data == sim.output_bytes(status["task_id"], index)
            assert hashlib.sha256(data).hexdigest() == item["sha256"]
        assert sim.create_count() == 1 and len(sim.requests("/v1/uploads")) == 1
        journal = setup.journal()
        job = journal.find("waves")
        journal.close()
        assert job is not None and job.inbox == "submit" and job.state == "succeeded" and job.credits == 25
        assert main(["status", "--json", "--config", str(setup.config)]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [(d["name"], d["inbox"], d["state"]) for d in listed] == [("waves", "submit", "succeeded")]

    def test_out_folder_and_never_overwrite(self, setup: Setup, sim: Simulator) -> None:
        """--out puts outputs elsewhere; a second submit of the same request gets a suffixed name."""
        path = setup.request("speech", SPEECH)
        target = setup.root / "results"
        assert _submit(setup, path, wait=True, out_dir=str(target))[0] == 0
        first = (target / "speech.mp3").read_bytes()
        assert _submit(setup, path, wait=True, out_dir=str(target))[0] == 0
        assert (target / "speech.mp3").read_bytes() == first and (target / "speech.2.mp3").exists()
        status = json.loads((target / "speech.status.json").read_text())
        assert status["outputs"][0]["file"] == "speech.2.mp3" and sim.create_count() == 2

    def test_progress_on_a_terminal(self, setup: Setup) -> None:
        """On a terminal the progress is one line rewritten in place (carriage return, clear to end of line)."""
        sim_path = setup.request("film", FILM)
        code, out, _ = _submit(setup, sim_path, wait=True, tty=True)
        assert code == 0
        assert "\r\x1b[Kfilm: running" in out and "%" in out
        assert out.count("\n") < 6  # not one line per poll

    def test_without_wait(self, setup: Setup, sim: Simulator) -> None:
        """Without --wait: the task id is printed, the job is recorded as submitted, nothing is downloaded."""
        code, out, _ = _submit(setup, setup.request("speech", SPEECH))
        task_id = out.split("task ")[1].split(",")[0]
        assert code == 0 and task_id in sim.world.tasks
        journal = setup.journal()
        job = journal.find("speech")
        journal.close()
        assert job is not None and job.task_id == task_id and job.state == "submitted"
        assert not (setup.requests / "speech.status.json").exists()

    def test_through_s3(self, tmp_path: Path, sim: Simulator, s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        """With a bucket configured the media go by presigned S3 URL (boto3's usual credentials), Runway's
        uploads are not used, and the object is removed once the task has ended."""
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
        setup = Setup(tmp_path, sim, s3=s3)
        code, _, err = _submit(setup, setup.request("waves", WAVES, media=("still.jpg",)), wait=True)
        assert code == 0, err
        fetched = [f for f in sim.world.fetches if f["status"] == 200]
        assert len(fetched) == 1 and fetched[0]["content_type"] == "image/jpeg"
        assert "X-Amz-Signature=***" in fetched[0]["url"] and sim.requests("/v1/uploads") == []
        journal = setup.journal()
        job = journal.find("waves")
        journal.close()
        assert job is not None and job.placed == []
        listing = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=f"runwatch/{job.id}/")
        assert listing.get("KeyCount", 0) == 0  # removed once the task ended
        status = json.loads((setup.requests / "waves.status.json").read_text())
        assert (setup.requests / status["outputs"][0]["file"]).read_bytes() == sim.output_bytes(status["task_id"], 0)

    def test_ambiguous_create_needs_attention(self, setup: Setup, sim: Simulator) -> None:
        """The create reached Runway but the answer was lost: needs_attention, exit 1, and exactly one create."""
        sim.faults.add(Fault("drop", after=True, count=1))
        code, _, err = _submit(setup, setup.request("speech", SPEECH), wait=True)
        assert code == 1 and "needs_attention" in err
        assert sim.create_count() == 1
        journal = setup.journal()
        job = journal.find("speech")
        journal.close()
        assert job is not None and job.state == "needs_attention" and job.error["code"] == "create_unconfirmed"
        assert job.task_id is None and job.create_started_at is not None

    def test_refused_by_runway(self, setup: Setup, sim: Simulator) -> None:
        """A model runwatch does not know passes validation; Runway's free 400 makes it rejected, exit 1."""
        body = {"endpoint": "text_to_video", "model": "gen9_ultra", "promptText": "x"}
        code, _, err = _submit(setup, setup.request("future", body))
        assert code == 1 and "future: rejected" in err and sim.create_count() == 0
        journal = setup.journal()
        job = journal.find("future")
        journal.close()
        assert job is not None and job.state == "rejected" and job.create_started_at is None

    def test_invalid_file_is_never_sent(self, setup: Setup, sim: Simulator) -> None:
        """An invalid file: every problem named, exit 1, no call to Runway, no journal entry."""
        path = setup.request("bad", BAD)
        code, _, err = _submit(setup, path)
        assert code == 1 and f"{path}: ratio: " in err and sim.requests() == []
        assert not (setup.root / "state" / "journal.sqlite3").exists()

    def test_usage_errors(self, setup: Setup, sim: Simulator) -> None:
        """No such file, or a file the daemon would take from its inbox: exit 2, nothing sent."""
        assert _submit(setup, setup.root / "nope.json")[0] == 2
        code, _, err = _submit(setup, setup.request("speech", SPEECH, folder=setup.inbox))
        assert code == 2 and "send it twice" in err and sim.requests() == []

    def test_failed_task(self, setup: Setup, sim: Simulator) -> None:
        """A task failing at Runway: exit 1, the failure code in the status file."""
        sim.faults.add(Fault("fail", failure_code="SAFETY.INPUT.TEXT"))
        code, _, err = _submit(setup, setup.request("speech", SPEECH), wait=True)
        status = json.loads((setup.requests / "speech.status.json").read_text())
        assert code == 1 and "speech: failed" in err
        assert status["state"] == "failed" and status["error"]["code"] == "SAFETY.INPUT.TEXT"

    def test_ctrl_c_while_waiting(self, setup: Setup, sim: Simulator) -> None:
        """Ctrl-C during --wait: the task keeps running at Runway (no DELETE), its id is said, exit 1."""
        sim.config.time_scale = 1.0

        def interrupt(seconds: float) -> None:
            raise KeyboardInterrupt

        code, out, err = _submit(setup, setup.request("film", FILM), wait=True, sleep=interrupt)
        task_id = out.split("task ")[1].split(",")[0]
        assert code == 1 and f"task {task_id} keeps running at Runway" in err
        assert sim.requests("/v1/tasks/", method="DELETE") == []
        journal = setup.journal()
        job = journal.find("film")
        journal.close()
        assert job is not None and job.task_id == task_id and not job.final

    def test_sweep_after_a_crash(self, setup: Setup) -> None:
        """A submit that died between its intent and Runway's answer is found by the next one and marked
        needs_attention; one still alive (its lock held) is left alone; one that never began the create fails."""
        journal = setup.journal()
        folder = setup.root / "state" / "submit"
        stamp = "2026-01-01T00:00:00Z"
        journal.add(
            Job(
                id="20260101T000000Z-00000001",
                name="dead",
                inbox="submit",
                format="json",
                state="accepted",
                create_started_at=stamp,
            )
        )
        journal.add(Job(id="20260101T000000Z-00000002", name="early", inbox="submit", format="json", state="uploading"))
        alive = journal.add(
            Job(
                id="20260101T000000Z-00000003",
                name="alive",
                inbox="submit",
                format="json",
                state="accepted",
                create_started_at=stamp,
            )
        )
        journal.add(
            Job(
                id="20260101T000000Z-00000004",
                name="theirs",
                inbox="main",
                format="json",
                state="accepted",
                create_started_at=stamp,
            )
        )
        lock = _SubmitLock(folder, alive.id)
        lock.acquire()
        try:
            swept = sweep_abandoned(journal, folder)
        finally:
            lock.release()
        assert {j.name for j in swept} == {"dead", "early"}
        states = {j.name: (j.state, (j.error or {}).get("code")) for j in journal.jobs()}
        journal.close()
        assert states["dead"] == ("needs_attention", "create_unconfirmed")
        assert states["early"] == ("failed", "interrupted")
        assert states["alive"] == ("accepted", None) and states["theirs"] == ("accepted", None)

    def test_daemon_leaves_a_live_submit_alone(self, setup: Setup, sim: Simulator) -> None:
        """A daemon started on the same state leaves a submit job alone while the submit that made it lives (it
        follows the task itself with --wait): no poll of its task, no state change."""
        from runwatch.config import load_config
        from runwatch.daemon import Daemon
        from runwatch.submit import _SubmitLock

        sim.config.time_scale = 1.0
        code, out, _ = _submit(setup, setup.request("film", FILM))
        task_id = out.split("task ")[1].split(",")[0]
        journal = setup.journal()
        job = journal.find("film")
        journal.close()
        assert job is not None
        config = load_config(setup.config)
        alive = _SubmitLock(config.state.dir / "submit", job.id)
        alive.acquire()  # as `runwatch submit --wait` holds it while it follows the task
        try:
            daemon = Daemon(config, api_key=sim.key)
            daemon.start()
            stop = threading.Event()
            thread = threading.Thread(target=lambda: daemon.run(stop), daemon=True)
            thread.start()
            time.sleep(1.0)
            stop.set()
            thread.join(30)
        finally:
            alive.release()
        assert code == 0 and sim.requests(f"/v1/tasks/{task_id}") == []
        journal = setup.journal()
        job = journal.find("film")
        journal.close()
        assert job is not None and job.state == "submitted"


class TestCredits:
    NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)

    def _ledger(self, sim: Simulator, when: str, model: str, amount: float) -> None:
        at = datetime.fromisoformat(when).replace(tzinfo=UTC).timestamp()
        with sim.world.lock:
            sim.world.ledger.append((at, model, amount))

    def test_against_known_usage(self, setup: Setup, sim: Simulator) -> None:
        """Balance, tier, limits with the rolling day's count, and the journal's spending (final credits, else
        in-flight estimates; by inbox and model) beside Runway's usage, for today and this month."""
        from runwatch.api import RunwayClient

        sim.world.balance = 12_345
        sim.config.model_limits["eleven_multilingual_v2"] = (2, 50)
        import httpx

        with httpx.Client() as http:
            RunwayClient(http, base_url=sim.url, api_key=sim.key).create_task(
                "text_to_speech", {k: v for k, v in SPEECH.items() if k != "endpoint"}
            )
        self._ledger(sim, "2026-03-15T08:00:00", "gen4_turbo", 25)
        self._ledger(sim, "2026-03-15T09:00:00", "veo3.1", 320)
        self._ledger(sim, "2026-03-02T09:00:00", "gen4_image", 10)
        self._ledger(sim, "2026-02-27T09:00:00", "gen4_image", 99)  # last month
        journal = setup.journal()
        for i, (inbox, model, state, credits, est, day) in enumerate(
            [
                ("main", "gen4_turbo", "succeeded", 25.0, 25.0, "2026-03-15"),
                ("submit", "veo3.1", "running", None, 320.0, "2026-03-15"),  # in flight: its estimate
                ("main", "gen4_turbo", "failed", 0.0, 25.0, "2026-03-15"),
                ("main", "gen4_image", "succeeded", 10.0, 10.0, "2026-03-02"),
                ("main", "gen4_image", "succeeded", 99.0, 99.0, "2026-02-27"),  # last month
                ("main", None, "rejected", None, None, "2026-03-15"),
            ]
        ):
            journal.add(
                Job(
                    id=f"j{i}",
                    name=f"n{i}",
                    inbox=inbox,
                    format="json",
                    model=model,
                    state=state,
                    credits=credits,
                    estimated_credits=est,
                    created_at=f"{day}T07:00:00Z",
                )
            )
        journal.close()

        out = io.StringIO()
        assert credits_command(config_file=str(setup.config), as_json=True, out=out, env=setup.env, now=self.NOW) == 0
        doc = json.loads(out.getvalue())
        assert doc["balance"] == 12_344 and doc["tier"]["maxMonthlyCreditSpend"] == 200_000  # 1 credit spent above
        row = next(m for m in doc["models"] if m["model"] == "eleven_multilingual_v2")
        assert row == {
            "model": "eleven_multilingual_v2",
            "maxConcurrentGenerations": 2,
            "maxDailyGenerations": 50,
            "dailyGenerations": 1,
            "remaining": 49,
        }
        ours, theirs = doc["spending"]["journal"], doc["spending"]["runway"]
        assert ours["today"] == {
            "total": 345.0,
            "by_model": {"gen4_turbo": 25.0, "veo3.1": 320.0},
            "by_inbox": {"main": 25.0, "submit": 320.0},
        }
        assert ours["month"]["total"] == 355.0 and ours["month"]["by_inbox"] == {"main": 35.0, "submit": 320.0}
        assert theirs["today"] == {"total": 345.0, "by_model": {"gen4_turbo": 25.0, "veo3.1": 320.0}}
        assert theirs["month"]["total"] == 355.0 and theirs["month"]["by_model"]["gen4_image"] == 10.0

        out = io.StringIO()
        assert credits_command(config_file=str(setup.config), out=out, env=setup.env, now=self.NOW) == 0
        text = out.getvalue()
        assert "balance: 12,344 credits" in text and "up to 200,000 credits a month" in text
        assert "eleven_multilingual_v2  2 " in text and "other models)" in text
        total = next(line for line in text.splitlines() if line.startswith("total "))
        assert total.split() == ["total", "345", "345", "355", "355"]
        assert any(line.split() == ["submit", "320", "320"] for line in text.splitlines())

    def test_refused_key(self, setup: Setup, sim: Simulator) -> None:
        """A key Runway refuses: exit 1 and the reason, never the key."""
        env = {"RUNWAYML_API_SECRET": "key_" + "1" * 127 + "x"}
        err = io.StringIO()
        assert credits_command(config_file=str(setup.config), out=io.StringIO(), err=err, env=env) == 1
        assert "refused" in err.getvalue() and env["RUNWAYML_API_SECRET"] not in err.getvalue()


class TestCommandLine:
    @pytest.mark.parametrize("command", ["validate", "submit", "credits", "doctor"])
    def test_help(self, command: str, capsys: pytest.CaptureFixture[str]) -> None:
        """Each command's --help stands on its own: what it does, --config, and its exit status."""
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        text = capsys.readouterr().out
        assert info.value.code == 0 and "--config" in text and "Exit status" in text

    def test_submit_missing_key_exits_78(
        self, setup: Setup, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No key anywhere: a configuration error, exit 78."""
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        assert main(["submit", "--config", str(setup.config), str(setup.request("speech", SPEECH))]) == 78
        assert "RUNWAYML_API_SECRET" in capsys.readouterr().err

    def test_submit_and_credits_through_main(
        self, setup: Setup, sim: Simulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`runwatch submit --wait` and `runwatch credits --json` as a user runs them."""
        monkeypatch.setenv("RUNWAYML_API_SECRET", sim.key)
        path = setup.request("speech", SPEECH)
        assert main(["submit", "--config", str(setup.config), "--wait", str(path)]) == 0
        assert "speech: succeeded" in capsys.readouterr().out
        assert main(["credits", "--config", str(setup.config), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["spending"]["journal"]["today"]["by_inbox"] == {"submit": 1.0}


class TestDaemonHolder:
    @pytest.mark.parametrize("table", ["/proc/locks", "none"], ids=["lock-table", "shared-lock"])
    def test_tells_a_running_daemon(self, tmp_path: Path, table: str) -> None:
        """Whether a daemon holds the state directory, and who: from the kernel's lock table, or without one
        by trying a shared lock; nothing is told once the daemon let go, and the lock is left as it was."""
        locks = Path(table) if table.startswith("/") else tmp_path / "no-lock-table"
        state = tmp_path / "state"
        assert daemon_holder(state, locks) is None  # no lock file at all
        lock = StateLock(state)
        lock.acquire()
        try:
            assert daemon_holder(state, locks) == f"runwatch pid {os.getpid()}"
            assert daemon_holder(state, locks) == f"runwatch pid {os.getpid()}"
        finally:
            lock.release()
        assert daemon_holder(state, locks) is None
        again = StateLock(state)
        again.acquire()  # a daemon may start right after a look
        again.release()
