"""The daemon end to end: real folders, real watchdog observers, the simulator over loopback HTTP, and
SeaweedFS as the S3 server. A request file goes in; outputs and a status file come out."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

from runwatch.api import Created, RunwayClient
from runwatch.clock import SystemClock, now_iso
from runwatch.polls import NOT_POLLED
from runwatch.simulator import Fault, Simulator
from runwatch.workrecords import IntentMark, mark_intent

from .conftest import SAMPLES
from .rig import SEED_REQUESTS, Rig


class TestSeedEndpoints:
    @pytest.mark.parametrize("endpoint", sorted(SEED_REQUESTS))
    def test_through_runway_uploads(self, rig_factory: Callable[..., Rig], sim: Simulator, endpoint: str) -> None:
        """Each seed endpoint, local media through Runway's upload endpoint, ends succeeded with exact outputs."""
        rig = rig_factory(sim).start()
        body, media = SEED_REQUESTS[endpoint]
        rig.drop(endpoint, body, media=media)
        status = rig.wait(endpoint)
        assert status["state"] == "succeeded", status
        rig.check_outputs(status)
        assert sim.create_count() == 1
        assert len(sim.requests("/v1/uploads")) == len(set(media))
        assert not (rig.inbox / f"{endpoint}.json").exists()  # taken out of the inbox
        assert Path(status["request"]).exists() and "/done/" in status["request"]

    @pytest.mark.parametrize("endpoint", sorted(SEED_REQUESTS))
    def test_through_s3(self, rig_factory: Callable[..., Rig], sim: Simulator, s3: Any, endpoint: str) -> None:
        """Each seed endpoint through presigned S3 URLs: fetched by the simulator with the right type, then removed."""
        rig = rig_factory(sim, s3=s3).start()
        body, media = SEED_REQUESTS[endpoint]
        rig.drop(endpoint, body, media=media)
        status = rig.wait(endpoint)
        assert status["state"] == "succeeded", status
        rig.check_outputs(status)
        fetched = [f for f in sim.world.fetches if f["status"] == 200]
        assert len(fetched) == len(set(media))
        kinds = {"still.jpg": "image/jpeg", "clip.mp4": "video/mp4", "speech.mp3": "audio/mpeg"}
        assert sorted(f["content_type"] for f in fetched) == sorted(kinds[m] for m in set(media))
        assert all("X-Amz-Signature=***" in f["url"] for f in fetched)  # a real SigV4 presigned GET
        assert sim.requests("/v1/uploads") == []
        if media:  # objects are removed after the task ends
            client = s3.client()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and client.list_objects_v2(Bucket=s3.bucket).get("KeyCount", 0):
                time.sleep(0.1)
            assert client.list_objects_v2(Bucket=s3.bucket).get("KeyCount", 0) == 0


class TestRequestForms:
    def test_toml_request_gets_toml_status(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A TOML request is answered with NAME.status.toml."""
        rig = rig_factory(sim).start()
        rig.drop("speech", SEED_REQUESTS["text_to_speech"][0], fmt="toml")
        status = rig.wait("speech", fmt="toml")
        assert status["state"] == "succeeded" and not (rig.outbox / "speech.status.json").exists()

    def test_inbox_defaults_and_aliases(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Inbox endpoint and defaults fill in what the file leaves out; snake_case spellings are accepted."""
        rig = rig_factory(
            sim,
            inbox={
                "endpoint": "image_to_video",
                "defaults": {"model": "gen4_turbo", "ratio": "1280:720", "duration": 5},
            },
        ).start()
        rig.drop("short", {"prompt_image": "still.jpg", "prompt_text": "a quiet bay"}, media=("still.jpg",))
        status = rig.wait("short")
        assert status["state"] == "succeeded", status
        task = sim.world.tasks[status["task_id"]]
        assert task.body["ratio"] == "1280:720" and task.body["promptText"] == "a quiet bay"

    def test_bare_media(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """With accept_media, a picture dropped alone becomes a request with the inbox defaults."""
        rig = rig_factory(
            sim,
            inbox={
                "endpoint": "image_to_video",
                "accept_media": True,
                "defaults": {"model": "gen4_turbo", "ratio": "1280:720"},
            },
        ).start()
        shutil.copy(SAMPLES / "still.jpg", rig.inbox / "holiday.jpg")
        status = rig.wait("holiday")
        assert status["state"] == "succeeded", status
        assert sim.world.tasks[status["task_id"]].body["promptImage"].startswith("runway://")

    def test_rejected_never_reaches_runway(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """An invalid request is rejected with every problem listed, and no create is ever sent."""
        rig = rig_factory(sim).start()
        rig.drop(
            "bad",
            {
                "endpoint": "image_to_video",
                "model": "gen4_turbo",
                "ratio": "1:1",
                "duration": "long",
                "promptImage": "missing.jpg",
            },
        )
        status = rig.wait("bad", timeout=10)
        assert status["state"] == "rejected"
        paths = {i["path"] for i in status["error"]["issues"]}
        assert {"ratio", "duration"} <= paths
        assert sim.create_count() == 0 and sim.requests("/v1/image_to_video") == []
        assert "/failed/" in status["request"] and Path(status["request"]).exists()

    def test_unknown_model_passed_through(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A model the catalogue does not know goes to Runway (free 400), and its issues land in the status."""
        rig = rig_factory(sim).start()
        rig.drop("future", {"endpoint": "text_to_video", "model": "gen9_ultra", "promptText": "x"})
        status = rig.wait("future")
        assert status["state"] == "rejected" and status["error"]["code"] == "400"
        assert status["error"]["issues"] and sim.create_count() == 0


class TestEndings:
    def test_failure_code(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A task failing at Runway ends failed with its failureCode and text."""
        sim.faults.add(Fault("fail", failure_code="SAFETY.INPUT.TEXT"))
        rig = rig_factory(sim).start()
        rig.drop("unsafe", SEED_REQUESTS["sound_effect"][0])
        status = rig.wait("unsafe")
        assert status["state"] == "failed" and status["error"]["code"] == "SAFETY.INPUT.TEXT"
        assert status["error"]["message"] and status["credits"] == 0

    def test_cancel_by_command(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """`runwatch cancel NAME` deletes the task at Runway and the request ends cancelled."""
        sim.config.time_scale = 1.0  # slow enough to cancel
        rig = rig_factory(sim).start()
        rig.drop("long", SEED_REQUESTS["text_to_video"][0])
        rig.wait("long", {"submitted", "pending", "throttled", "running"})
        from runwatch.cli import main

        assert main(["cancel", "long", "--config", str(self._write_config(rig))]) == 0
        status = rig.wait("long")
        assert status["state"] == "cancelled"
        assert sim.requests("/v1/tasks/", method="DELETE")

    def test_cancel_by_file(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Dropping NAME.cancel into the inbox cancels the request."""
        sim.config.time_scale = 1.0
        rig = rig_factory(sim).start()
        rig.drop("long", SEED_REQUESTS["text_to_video"][0])
        rig.wait("long", {"submitted", "pending", "throttled", "running"})
        (rig.inbox / "long.cancel").write_text("")
        status = rig.wait("long")
        assert status["state"] == "cancelled" and not (rig.inbox / "long.cancel").exists()

    @staticmethod
    def _write_config(rig: Rig) -> Path:
        path = rig.root / "runwatch.toml"
        path.write_text(
            tomli_w.dumps(
                {
                    "runway": {"base_url": rig.sim.url},
                    "state": {"dir": str(rig.root / "state")},
                    "inbox": [{"path": str(rig.inbox), "outbox": str(rig.outbox)}],
                }
            )
        )
        return path

    def test_waiting_states_reach_the_journal(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """What a poll learns is in the status file at once and in the journal (`runwatch status`) soon after."""
        sim.config.time_scale = 1.0  # a clip runs for tens of seconds
        rig = rig_factory(sim).start()
        rig.drop("film", SEED_REQUESTS["text_to_video"][0])
        shown = rig.wait("film", {"running"})
        deadline = time.monotonic() + 10
        while True:
            job = rig.journal().find("film")
            if job is not None and job.state == "running" and job.progress is not None:
                break
            assert time.monotonic() < deadline, f"the journal still says {job and job.state}"
            time.sleep(0.1)
        assert job.task_id == shown["task_id"] and 0.0 <= job.progress <= 1.0

    def test_outbox_taken_away_is_made_again(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Someone removes the outbox while a task runs: it is made again for the status file and outputs."""
        sim.config.time_scale = 0.05
        rig = rig_factory(sim).start()
        rig.drop("film", SEED_REQUESTS["text_to_video"][0])
        rig.wait("film", {"submitted", "pending", "throttled", "running"})
        shutil.rmtree(rig.outbox)
        status = rig.wait("film")
        assert status["state"] == "succeeded"
        rig.check_outputs(status)


class TestPollRuns:
    """Polls due together go out in runs: one thread GETs several tasks in a row (see runwatch.scheduler)."""

    @staticmethod
    def _watch(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> tuple[list[tuple[int, str]], list[Any]]:
        assert rig.daemon is not None
        engine = rig.daemon.engine
        calls: list[tuple[int, str]] = []  # (thread, task id) of every task GET, in order
        results: list[Any] = []  # what every run handed back
        get_task, get_run = engine.api.get_task, engine.polls.get_run

        def recorded_get(task_id: str) -> dict[str, Any]:
            calls.append((threading.get_ident(), task_id))
            return get_task(task_id)

        def recorded_run(
            get: Callable[[str], Any], tasks: list[tuple[str, str]], budget: float
        ) -> list[tuple[str, Any]]:
            out = get_run(get, tasks, budget)
            results.extend(result for _, result in out)
            return out

        monkeypatch.setattr(engine.api, "get_task", recorded_get)
        monkeypatch.setattr(engine.polls, "get_run", recorded_run)
        return calls, results

    @staticmethod
    def _drop_together(rig: Rig, names: list[str]) -> None:
        body = SEED_REQUESTS["text_to_video"][0]
        for name in names:
            (rig.inbox / f"{name}.json.tmp").write_text(json.dumps(body))
        for name in names:
            os.rename(rig.inbox / f"{name}.json.tmp", rig.inbox / f"{name}.json")

    def test_polls_due_together_share_a_thread(
        self, rig_factory: Callable[..., Rig], sim: Simulator, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Tasks created together are first looked at by one thread in a row, and all followed to the end."""
        sim.config.time_scale = 0.04  # clips of 1.4-2.4 s; the first look comes 1 s after the create
        rig = rig_factory(sim, runway={"poll_interval": 1.0}).start()
        calls, _ = self._watch(rig, monkeypatch)
        rig.drop("warm", SEED_REQUESTS["text_to_video"][0])  # the first GETs tell how fast Runway answers
        assert rig.wait("warm")["state"] == "succeeded"
        names = [f"clip{i}" for i in range(6)]
        self._drop_together(rig, names)
        statuses = [rig.wait(name) for name in names]
        assert [s["state"] for s in statuses] == ["succeeded"] * 6
        tasks = {s["task_id"] for s in statuses}
        first: dict[str, int] = {}
        for thread, task_id in calls:
            if task_id in tasks:
                first.setdefault(task_id, thread)
        assert len(first) == 6
        assert len(set(first.values())) <= 2, f"first looks spread over {len(set(first.values()))} threads"

    def test_a_run_slower_than_its_budget_hands_the_rest_back(
        self,
        rig_factory: Callable[..., Rig],
        sim: Simulator,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Runway suddenly slow: a run stops after its budget, the rest go out again, nothing is lost."""
        sim.config.time_scale = 0.04
        rig = rig_factory(sim, runway={"poll_interval": 1.0}).start()
        _, results = self._watch(rig, monkeypatch)
        rig.drop("warm", SEED_REQUESTS["text_to_video"][0])
        assert rig.wait("warm")["state"] == "succeeded"
        sim.faults.add(Fault("slow", endpoint="tasks", method="GET", delay=0.5, count=1))
        names = [f"clip{i}" for i in range(4)]
        self._drop_together(rig, names)
        assert [rig.wait(name)["state"] for name in names] == ["succeeded"] * 4
        assert any(result is NOT_POLLED for result in results), "no run outlasted its budget"


class TestCrashSafety:
    def test_restart_after_submit(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Stopped after the create, started again: no second create, and the outputs still arrive."""
        sim.config.time_scale = 1.0
        rig = rig_factory(sim).start()
        rig.drop("film", SEED_REQUESTS["text_to_video"][0])
        rig.wait("film", {"submitted", "pending", "running"})
        rig.stop()
        sim.advance(3600)  # the task finishes while runwatch is down
        rig.start()
        status = rig.wait("film")
        assert status["state"] == "succeeded"
        rig.check_outputs(status)
        assert sim.create_count() == 1 and sim.duplicate_creates() == []

    def test_faults_do_not_duplicate(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """429 bursts everywhere and 5xx on every read: every request succeeds and nothing is created twice.
        (A 5xx on a create may come after the task was made: tests/test_faults.py follows that case.)"""
        sim.faults.add(Fault("error", status=503, rate=0.3, method="GET"))
        sim.faults.add(Fault("error", status=502, rate=0.1, method="GET"))
        sim.faults.add(Fault("rate_limit", rate=0.2, retry_after=0.05))
        rig = rig_factory(sim).start()
        for i in range(6):
            body = dict(SEED_REQUESTS["text_to_speech"][0], promptText=f"line {i}")
            rig.drop(f"line{i}", body)
        for i in range(6):
            assert rig.wait(f"line{i}", timeout=60)["state"] == "succeeded"
        assert sim.create_count() == 6 and sim.duplicate_creates() == []

    def test_lost_answer_needs_attention_then_retry(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A create whose answer was lost is never resent by itself; `runwatch retry` sends it on purpose."""
        sim.faults.add(Fault("drop", endpoint="sound_effect", after=True, count=1))
        rig = rig_factory(sim).start()
        rig.drop("boom", SEED_REQUESTS["sound_effect"][0])
        status = rig.wait("boom")
        assert status["state"] == "needs_attention" and status["error"]["code"] == "create_unconfirmed"
        assert sim.create_count() == 1
        journal = rig.journal()
        journal.add_command("retry", "boom")
        journal.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = rig.status("boom") or status
            if status["state"] == "succeeded":
                break
            time.sleep(0.05)
        assert status["state"] == "succeeded" and sim.create_count() == 2


def _task_at_runway(sim: Simulator, request: dict[str, Any]) -> Created:
    """A task made at the simulator for a request's fields, as if another create had made it."""
    fields = {k: v for k, v in request.items() if k != "endpoint"}
    with httpx.Client(timeout=10) as http:
        return RunwayClient(http, base_url=sim.url, api_key=sim.key).create_task(request["endpoint"], fields)


class TestTaskInTheJournal:
    def test_a_job_whose_journal_names_a_task_sends_no_create(
        self, rig_factory: Callable[..., Rig], sim: Simulator
    ) -> None:
        """The last line of the money rule, in the journal: a held request whose row names a task (as it would
        if the engine had missed Runway's answer) is approved; its create is refused by the journal, nothing is
        sent, and that task is followed to its outputs."""
        rig = rig_factory(sim).start()
        body = dict(SEED_REQUESTS["text_to_speech"][0], runwatch={"max_credits": 0.5})
        rig.drop("line", body)
        rig.wait("line", {"held"})
        planted = _task_at_runway(sim, SEED_REQUESTS["text_to_speech"][0])
        journal = rig.journal()
        job = journal.find("line")
        assert job is not None
        journal.update(job, task_id=planted.id)
        journal.add_command("approve", "line")
        journal.close()
        status = rig.wait("line", timeout=30)
        assert status["state"] == "succeeded" and status["task_id"] == planted.id
        assert sim.create_count() == 1  # the planted create alone
        rig.check_outputs(status)


class TestApproval:
    def test_max_credits_holds_until_approved(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A request estimated above its max_credits is held, never created, until `runwatch approve`."""
        rig = rig_factory(sim).start()
        body = dict(SEED_REQUESTS["text_to_video"][0], runwatch={"max_credits": 100})  # veo3.1 8 s: 320
        rig.drop("pricey", body)
        status = rig.wait("pricey", {"held"})
        assert "320" in status["error"]["message"] and "max_credits" in status["error"]["message"]
        time.sleep(0.5)
        assert sim.create_count() == 0
        journal = rig.journal()
        journal.add_command("approve", "pricey")
        journal.close()
        assert rig.wait("pricey")["state"] == "succeeded" and sim.create_count() == 1

    def test_approve_above_by_file(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Above the inbox's approve_above a request waits; a dropped NAME.approve releases it."""
        rig = rig_factory(sim, inbox={"approve_above": 10}).start()
        rig.drop("big", SEED_REQUESTS["text_to_video"][0])
        rig.wait("big", {"held"})
        rig.drop("cheap", SEED_REQUESTS["text_to_speech"][0])  # 1 credit: goes at once
        assert rig.wait("cheap")["state"] == "succeeded"
        (rig.inbox / "big.approve").write_text("")
        assert rig.wait("big")["state"] == "succeeded"

    def test_unknown_price_is_held(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """With a max_credits and no known price, the request is held (unknown_price = "hold")."""
        rig = rig_factory(sim).start()
        body = {
            "endpoint": "text_to_video",
            "model": "kling3.0_pro",
            "ratio": "1920:1080",
            "promptText": "x",
            "runwatch": {"max_credits": 5},
        }
        rig.drop("mystery", body)
        status = rig.wait("mystery", {"held"})
        assert "no price is known" in status["error"]["message"] and sim.create_count() == 0


class TestRecovery:
    def test_intent_without_task_id_needs_attention(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A crash between sending a create and recording its answer: at restart the request is parked in
        needs_attention, and nothing is sent again."""
        rig = rig_factory(sim)
        rig.unconfirmed("crash", SEED_REQUESTS["sound_effect"][0])
        rig.start()
        status = rig.wait("crash")
        assert status["state"] == "needs_attention" and status["error"]["code"] == "create_unconfirmed"
        assert "/failed/" in status["request"]
        time.sleep(0.3)
        assert sim.create_count() == 0

    def test_a_task_id_the_journal_missed_is_followed(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A stop while the journal refused the task id Runway had named: the journal holds the intent alone,
        the work area's marker the task id. At restart that task is followed to its outputs, nothing is sent."""
        rig = rig_factory(sim)
        body = SEED_REQUESTS["sound_effect"][0]
        rig.unconfirmed("kept", body)
        task = _task_at_runway(sim, body)
        (job_dir,) = (rig.inbox / ".runwatch" / "jobs").iterdir()
        mark_intent(job_dir, IntentMark(job_dir.name, now_iso(), task.id))
        rig.start()
        status = rig.wait("kept")
        assert status["state"] == "succeeded" and status["task_id"] == task.id
        assert sim.create_count() == 1  # the one made above
        rig.check_outputs(status)

    def test_a_record_filed_before_the_journal_learnt_it(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A kill after a finished job's dir was filed away but before the journal learnt where: at restart the
        task is followed again, and the journal and status file name the record where it is."""
        sim.config.time_scale = 0.15
        rig = rig_factory(sim).start()
        rig.drop("moved", SEED_REQUESTS["text_to_video"][0])
        running = rig.wait("moved", {"running", "pending"})
        rig.stop()
        job_dir = Path(running["request"]).parent
        done = job_dir.parent.parent / "done" / job_dir.name
        done.parent.mkdir(exist_ok=True)
        job_dir.rename(done)
        rig.start()
        status = rig.wait("moved", timeout=60)
        assert status["state"] == "succeeded" and sim.create_count() == 1
        assert status["request"] == str(done / "moved.json") and Path(status["request"]).is_file()
        job = rig.journal().find("moved")
        assert job is not None and job.job_dir == str(done)
        rig.check_outputs(status)

    def test_status_of_waiting_jobs_rewritten_at_start(
        self,
        rig_factory: Callable[..., Rig],
        sim: Simulator,
    ) -> None:
        """Status files of unfinished jobs are written without fsync, so a start writes them again: a file
        lost to a power cut comes back, matching the journal."""
        from runwatch.jobs.job import Job

        rig = rig_factory(sim)
        job_dir = rig.inbox / ".runwatch" / "jobs" / "20261128T000000Z-00c0ffee"
        job_dir.mkdir(parents=True)
        (job_dir / "waiting.json").write_text(json.dumps(SEED_REQUESTS["text_to_speech"][0]))
        journal = rig.journal()
        # Waiting to be retried in an hour: nothing else in the engine would touch it before then.
        journal.add(
            Job(
                id=job_dir.name,
                name="waiting",
                inbox="inbox",
                format="json",
                endpoint="text_to_speech",
                model="eleven_multilingual_v2",
                job_dir=str(job_dir),
                not_before=time.time() + 3600,
                error={"code": "upload_failed", "message": "S3 was unreachable"},
                request_path=str(job_dir / "waiting.json"),
            )
        )
        journal.close()
        assert rig.status("waiting") is None
        rig.start()
        status = rig.wait("waiting", {"accepted"})
        assert status["error"]["message"] == "S3 was unreachable" and sim.create_count() == 0

    def test_status_file_behind_the_journal_is_renewed(
        self,
        rig_factory: Callable[..., Rig],
        sim: Simulator,
    ) -> None:
        """A kill between a job's final commit and the rename of its status file: the next start brings the
        file up to the journal's state and removes the temporary file; a status file taken away is not
        brought back."""
        from runwatch.clock import now_iso
        from runwatch.jobs.job import Job

        rig = rig_factory(sim)
        rig.outbox.mkdir()
        journal = rig.journal()
        for name in ("behind", "taken"):
            job_id = f"20261128T000000Z-{'0000beef' if name == 'behind' else '0000cafe'}"
            journal.add(
                Job(
                    id=job_id,
                    name=name,
                    inbox="inbox",
                    format="json",
                    endpoint="sound_effect",
                    model="eleven_text_to_sound_v2",
                    state="failed",
                    finished_at=now_iso(),
                    error={"code": "INTERNAL", "message": "went wrong"},
                    request_path=str(rig.inbox / ".runwatch" / "failed" / job_id / f"{name}.json"),
                )
            )
        journal.close()
        stale = {
            "name": "behind",
            "state": "running",
            "request": str(rig.inbox / ".runwatch" / "jobs" / "20261128T000000Z-0000beef" / "behind.json"),
        }
        (rig.outbox / "behind.status.json").write_text(json.dumps(stale))
        leftover = rig.outbox / ".behind.status.json.0123456789abcdef.tmp"
        leftover.write_text("{")
        rig.start()
        deadline = time.monotonic() + 10
        while (rig.status("behind") or {}).get("state") != "failed" and time.monotonic() < deadline:
            time.sleep(0.05)
        status = rig.status("behind")
        assert status is not None and status["state"] == "failed" and status["error"]["code"] == "INTERNAL"
        assert not leftover.exists() and rig.status("taken") is None

    def test_claim_without_journal_row_is_taken(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A crash right after the claim (file moved, nothing recorded): the next start processes it."""
        rig = rig_factory(sim)
        job_dir = rig.inbox / ".runwatch" / "jobs" / "20261128T000000Z-0000beef"
        job_dir.mkdir(parents=True)
        (job_dir / "orphan.json").write_text(json.dumps(SEED_REQUESTS["text_to_speech"][0]))
        rig.journal().close()  # the journal of the run that crashed, which never recorded the claim
        rig.start()
        assert rig.wait("orphan")["state"] == "succeeded" and sim.create_count() == 1

    def test_daily_limit_pauses_only_that_model(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A daily-limit 429 holds that model's requests; other models go on."""
        sim.config.model_limits["eleven_text_to_sound_v2"] = (5, 1)
        rig = rig_factory(sim).start()
        rig.drop("sfx1", SEED_REQUESTS["sound_effect"][0])
        assert rig.wait("sfx1")["state"] == "succeeded"
        rig.drop("sfx2", dict(SEED_REQUESTS["sound_effect"][0], promptText="thunder"))
        held = rig.wait("sfx2", {"held"})
        assert "daily task limit" in held["error"]["message"]
        rig.drop("voice", SEED_REQUESTS["text_to_speech"][0])
        assert rig.wait("voice")["state"] == "succeeded"
        assert sim.create_count("sound_effect") == 1


# veo3.1, 8 s, no audio: 320 credits by the price data (and by the simulator, which uses the same data).
PRICEY = SEED_REQUESTS["text_to_video"][0]


def _approve(rig: Rig, name: str, by: str) -> None:
    if by == "file":
        (rig.inbox / f"{name}.approve").write_text("")
        return
    journal = rig.journal()
    journal.add_command("approve", name)
    journal.close()


class _ShiftedWall(SystemClock):
    """The machine's clocks with the wall (epoch and UTC) moved on by ``shift[0]``; monotonic time as it is."""

    def __init__(self, shift: list[timedelta]) -> None:
        self.shift = shift

    def time(self) -> float:
        return super().time() + self.shift[0].total_seconds()

    def now(self) -> datetime:
        return super().now() + self.shift[0]


def _fast_rechecks(rig: Rig) -> Any:
    assert rig.daemon is not None
    engine = rig.daemon.engine
    engine.money.recheck_every = 0.1
    engine.money.org_ttl = 0.2
    return engine


class TestMoneyGuards:
    @pytest.mark.parametrize(
        ("settings", "words", "by"),
        [
            ({"body": {"runwatch": {"max_credits": 100}}}, "is above its max_credits of 100", "command"),
            ({"inbox": {"approve_above": 200}}, "is above the inbox's approve_above of 200", "file"),
            (
                {"inbox": {"budget_daily": 300}},
                "would exceed the inbox's daily budget of 300 (0 spent today, UTC); waits for the next day",
                "command",
            ),
            ({"budget": {"daily": 300}}, "would exceed the daily budget of 300 (0 spent today by all inboxes", "file"),
            ({"budget": {"monthly": 300}}, "would exceed the monthly budget of 300 (0 spent this month", "command"),
        ],
    )
    def test_held_until_approved(
        self, rig_factory: Callable[..., Rig], sim: Simulator, settings: dict[str, Any], words: str, by: str
    ) -> None:
        """Each of the user's limits holds the request with its reason and our estimate, never sends a
        create, and an approval (by command or by file) sends it; Runway's figures then replace ours."""
        rig = rig_factory(sim, inbox=settings.get("inbox"), budget=settings.get("budget")).start()
        rig.drop("film", {**PRICEY, **settings.get("body", {})})
        held = rig.wait("film", {"held"})
        assert words in held["error"]["message"] and "estimated 320 credits" in held["error"]["message"]
        assert held["estimated_credits"] == 320
        time.sleep(0.5)
        assert sim.create_count() == 0 and rig.status("film")["state"] == "held"  # type: ignore[index]
        _approve(rig, "film", by)
        done = rig.wait("film")
        assert done["state"] == "succeeded" and sim.create_count() == 1
        assert done["estimated_credits"] == 320 and done["credits"] == 320
        journal = rig.journal()
        job = journal.find("film")
        journal.close()
        assert job is not None and (job.estimated_credits, job.credits) == (320, 320)

    def test_balance_holds_even_when_approved(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Above the organization's balance a request waits, approved or not (Runway would refuse it), and
        goes by itself once the balance rises."""
        sim.world.balance = 100
        rig = rig_factory(sim).start()
        rig.drop("film", PRICEY)
        held = rig.wait("film", {"held"})
        assert "the organization's balance of 100 credits" in held["error"]["message"]
        _approve(rig, "film", "command")
        time.sleep(1.0)
        assert rig.status("film")["state"] == "held" and sim.create_count() == 0  # type: ignore[index]
        _fast_rechecks(rig)
        sim.world.balance = 1000
        assert rig.wait("film")["state"] == "succeeded" and sim.create_count() == 1

    def test_balance_counts_what_was_just_spent(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Two requests dropped together with room for one: the second waits instead of meeting Runway's
        'not enough credits' refusal."""
        sim.world.balance = 400
        rig = rig_factory(sim).start()
        rig.drop("one", PRICEY)
        rig.drop("two", dict(PRICEY, promptText="a desert"))
        states = sorted(rig.wait(n, {"held", "succeeded"})["state"] for n in ("one", "two"))
        assert states == ["held", "succeeded"] and sim.create_count() == 1
        assert [r for r in sim.requests("/v1/text_to_video") if r.get("status") == 400] == []

    def test_daily_budget_frees_at_the_next_utc_day(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A request over the inbox's daily budget goes by itself when the (injected) UTC day turns."""

        speech = SEED_REQUESTS["text_to_speech"][0]  # 1 credit
        rig = rig_factory(sim, inbox={"budget_daily": 1}).start()
        engine = _fast_rechecks(rig)
        shift = [timedelta(0)]
        engine.clock = engine.money.clock = _ShiftedWall(shift)
        rig.drop("first", speech)
        assert rig.wait("first")["state"] == "succeeded"
        rig.drop("second", dict(speech, promptText="Goodbye."))
        held = rig.wait("second", {"held"})
        assert "the inbox's daily budget of 1 (1 spent today, UTC)" in held["error"]["message"]
        time.sleep(0.5)
        assert rig.status("second")["state"] == "held" and sim.create_count() == 1  # type: ignore[index]
        now = datetime.now(UTC)
        midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
        sim.advance((midnight - now).total_seconds() + 1)
        shift[0] = midnight - now + timedelta(seconds=1)
        assert rig.wait("second")["state"] == "succeeded" and sim.create_count() == 2

    def test_budget_counts_requests_sent_together(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """Two 1-credit requests dropped together into an inbox with a daily budget of 1: exactly one goes."""
        rig = rig_factory(sim, inbox={"budget_daily": 1}).start()
        rig.drop("a", SEED_REQUESTS["text_to_speech"][0])
        rig.drop("b", dict(SEED_REQUESTS["text_to_speech"][0], promptText="Goodbye."))
        states = sorted(rig.wait(n, {"held", "succeeded"})["state"] for n in ("a", "b"))
        assert states == ["held", "succeeded"] and sim.create_count() == 1

    def test_daily_task_limit_sends_no_create_that_would_429(
        self, rig_factory: Callable[..., Rig], sim: Simulator
    ) -> None:
        """With a model's daily limit at 2, three requests: two go, the third waits without meeting the
        429, and goes when Runway's rolling day has room again."""
        sim.config.model_limits["eleven_text_to_sound_v2"] = (5, 2)
        rig = rig_factory(sim).start()
        for i in range(3):
            rig.drop(f"sfx{i}", dict(SEED_REQUESTS["sound_effect"][0], promptText=f"rain {i}"))
        states = sorted(rig.wait(f"sfx{i}", {"held", "succeeded"})["state"] for i in range(3))
        assert states == ["held", "succeeded", "succeeded"]
        held = [rig.status(f"sfx{i}") for i in range(3) if rig.status(f"sfx{i}")["state"] == "held"]  # type: ignore[index]
        assert "daily task limit for eleven_text_to_sound_v2 is reached (2 of 2" in held[0]["error"]["message"]  # type: ignore[index]
        time.sleep(0.5)
        assert sim.create_count() == 2
        _fast_rechecks(rig)
        sim.advance(86400 + 1)
        assert rig.wait(held[0]["name"])["state"] == "succeeded" and sim.create_count() == 3  # type: ignore[index]
        assert [r for r in sim.requests("/v1/") if r.get("status") == 429] == []

    def test_status_shows_what_waits_and_why(
        self, rig_factory: Callable[..., Rig], sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`runwatch status` lists a held request with its reason."""
        from runwatch.cli import main

        rig = rig_factory(sim, inbox={"budget_daily": 300}).start()
        rig.drop("film", PRICEY)
        rig.wait("film", {"held"})
        path = rig.root / "status.toml"
        path.write_text(
            tomli_w.dumps(
                {
                    "state": {"dir": str(rig.root / "state")},
                    "inbox": [{"path": str(rig.inbox), "outbox": str(rig.outbox)}],
                }
            )
        )
        capsys.readouterr()
        assert main(["status", "--config", str(path)]) == 0
        lines = capsys.readouterr().out.splitlines()
        row = next(i for i, x in enumerate(lines) if x.startswith("film "))
        note = " ".join(x.strip() for x in lines[row + 1 :])  # the note, wrapped under its row
        assert " held " in lines[row] and "estimated 320 credits would exceed" in lines[row] + " " + note


class TestCaps:
    @pytest.mark.parametrize("cap", ["max_in_flight", "per_model"])
    def test_never_more_at_runway_than_the_cap(self, rig_factory: Callable[..., Rig], sim: Simulator, cap: str) -> None:
        """A create on its way counts against the caps: eight requests dropped at once never have more than
        two tasks alive at Runway together."""
        import dataclasses

        sim.config.time_scale = 0.02  # tasks of ~0.1 s: long enough to overlap if the caps leaked
        rig = rig_factory(sim)
        rig.config = dataclasses.replace(rig.config, scheduler=dataclasses.replace(rig.config.scheduler, **{cap: 2}))
        names = [f"say{i}" for i in range(8)]
        for i, name in enumerate(names):
            rig.drop(name, dict(SEED_REQUESTS["text_to_speech"][0], promptText=f"line {i}"))
        rig.start()
        for name in names:
            assert rig.wait(name)["state"] == "succeeded"
        spans = [(t.created, t.ended_at or t.created) for t in sim.world.tasks.values()]
        assert len(spans) == 8
        alive = max(sum(1 for c, e in spans if c <= at < e) for at, _ in spans)
        assert alive <= 2, f"{alive} tasks alive at Runway at once with {cap} = 2"
