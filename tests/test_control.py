"""`runwatch cancel`, `retry`, `approve` and `status` as a user types them, against a real daemon (in a thread)
and the simulator over loopback: exit codes from the daemon's answers, what happens with no daemon, `--wait`
meaning "until it is done", and the status table showing a whole note."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from runwatch.control import carried_out
from runwatch.ops import daemon_holder
from runwatch.simulator import Fault, Simulator

from .rig import SEED_REQUESTS, Rig

SPEECH = SEED_REQUESTS["text_to_speech"][0]
VIDEO = SEED_REQUESTS["text_to_video"][0]  # veo3.1, 8 s: 320 credits


def run(*argv: str, columns: int = 80) -> tuple[int, str, str]:
    """The command in its own process, as a user runs it (the daemon's log lines stay out of its output)."""
    env = dict(os.environ, COLUMNS=str(columns))
    done = subprocess.run(
        [sys.executable, "-m", "runwatch.cli", *argv], env=env, capture_output=True, text=True, timeout=300
    )
    return done.returncode, done.stdout, done.stderr


def finished(rig_factory: Callable[..., Rig], sim: Simulator, name: str = "hello") -> tuple[Rig, Path]:
    """A running daemon, and one request of it that has succeeded."""
    rig = rig_factory(sim).start()
    rig.drop(name, SPEECH)
    assert rig.wait(name)["state"] == "succeeded"
    return rig, rig.config_file()


class TestAnswers:
    def test_one_rule_for_answers(self) -> None:
        """The daemon's answers that mean "done as asked", and its refusals, are told apart in one place."""
        assert all(carried_out(a) for a in ("approved", "cancelled", "cancelling", "resubmitting"))
        refusals = ("no held request named x", "no active request named x", "no request named x")
        assert not any(carried_out(a) for a in (*refusals, "x is running; only needs_attention, failed or ..."))

    def test_approve_not_held(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """`approve` of a request that is not held exits 1 with the daemon's reason on stderr, like a name
        that does not exist."""
        _, config = finished(rig_factory, sim)
        code, out, err = run("approve", "hello", "--config", str(config))
        assert (code, out) == (1, "") and err == "runwatch approve: no held request named hello\n"
        code, _, err = run("approve", "nobody", "--config", str(config))
        assert code == 1 and "no request named 'nobody'" in err

    def test_cancel_not_active(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """`cancel` of a request that has ended exits 1: nothing was cancelled."""
        rig, config = finished(rig_factory, sim)
        code, out, err = run("cancel", "hello", "--config", str(config))
        assert (code, out) == (1, "") and err == "runwatch cancel: no active request named hello\n"
        assert rig.status("hello")["state"] == "succeeded"  # type: ignore[index]

    def test_retry_not_retryable(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """`retry` of a request that succeeded exits 1 saying which states are retried; nothing is sent."""
        _, config = finished(rig_factory, sim)
        code, _, err = run("retry", "hello", "--config", str(config))
        assert code == 1 and err.startswith("runwatch retry: hello is succeeded; only ")
        assert sim.create_count() == 1

    def test_no_daemon(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """With no daemon running, a command says so at once and exits 1; it stays recorded, and the next
        daemon carries it out."""
        rig, config = finished(rig_factory, sim)
        rig.stop()
        assert daemon_holder(rig.root / "state") is None
        rig.drop("later", dict(SPEECH, promptText="later"))  # waits in the inbox: no daemon takes it
        code, out, err = run("retry", "hello", "--config", str(config))
        assert (code, out) == (1, "")
        assert err == (
            f"runwatch retry: no daemon is running on {rig.root / 'state'}; the retry of 'hello' is recorded for "
            "the daemon to carry out (or refuse) when `runwatch run` starts\n"
        )
        journal = rig.journal()
        try:
            (pending,) = journal.pending_commands()
            assert (pending.kind, pending.name) == ("retry", "hello")
            rig.start()
            assert rig.wait("later")["state"] == "succeeded"
            assert journal.pending_commands() == []
            assert journal.command_result(pending.id) == "hello is succeeded; only needs_attention, failed or " + (
                "cancelled requests are retried"
            )
        finally:
            journal.close()


class TestWait:
    def test_cancel_wait_until_cancelled(self, rig_factory: Callable[..., Rig], slow_sim: Simulator) -> None:
        """`cancel --wait` of a task running at Runway returns once the request is cancelled, not when the
        daemon has only begun: the status file and the journal say cancelled by then."""
        rig = rig_factory(slow_sim).start()
        rig.drop("film", VIDEO)
        rig.wait("film", {"pending", "running", "throttled"})
        code, out, err = run("cancel", "film", "--wait", "--config", str(rig.config_file()))
        assert code == 0, err
        assert out.splitlines()[0] == "film: cancelling" and out.splitlines()[-1] == "film: cancelled"
        assert rig.status("film")["state"] == "cancelled"  # type: ignore[index]
        journal = rig.journal()
        try:
            assert journal.find("film").state == "cancelled"  # type: ignore[union-attr]
        finally:
            journal.close()
        assert len(slow_sim.requests("/v1/tasks/", method="DELETE")) == 1  # cancelled at Runway too

    def test_approve_wait_until_done(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """`approve --wait` follows the released request to its end: it returns 0 once the outputs are in the
        outbox, naming them."""
        rig = rig_factory(sim, inbox={"approve_above": 10}).start()
        rig.drop("big", VIDEO)
        rig.wait("big", {"held"})
        code, out, err = run("approve", "big", "--wait", "--config", str(rig.config_file()))
        assert code == 0, err
        status = rig.status("big")
        assert status is not None and status["state"] == "succeeded"
        rig.check_outputs(status)
        assert out.splitlines()[0] == "big: approved"
        assert out.splitlines()[-1] == f"big: succeeded; outputs in {rig.outbox}: {status['outputs'][0]['file']}"

    def test_retry_wait_until_done(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """`retry --wait` of a failed request returns 0 once the new attempt succeeded."""
        sim.faults.add(Fault("fail", endpoint="text_to_speech", count=1, failure_code="INTERNAL.BAD_OUTPUT.CODE01"))
        rig = rig_factory(sim).start()
        rig.drop("hello", SPEECH)
        assert rig.wait("hello")["state"] == "failed"
        code, out, err = run("retry", "hello", "--wait", "--config", str(rig.config_file()))
        assert code == 0, err
        assert out.splitlines()[0] == "hello: resubmitting" and out.splitlines()[-1].startswith("hello: succeeded")
        assert rig.status("hello")["state"] == "succeeded"  # type: ignore[index]

    def test_wait_ends_as_not_asked(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """`retry --wait` whose new attempt fails again exits 1 with the reason."""
        sim.faults.add(Fault("fail", endpoint="text_to_speech", count=2, failure_code="SAFETY.INPUT.TEXT"))
        rig = rig_factory(sim).start()
        rig.drop("hello", SPEECH)
        assert rig.wait("hello")["state"] == "failed"
        code, _, err = run("retry", "hello", "--wait", "--config", str(rig.config_file()))
        assert code == 1 and err.startswith("runwatch retry: hello ended failed")


class TestStatusNote:
    def test_whole_note_wrapped(
        self,
        rig_factory: Callable[..., Rig],
        sim: Simulator,
    ) -> None:
        """`runwatch status` shows a held request's whole reason, wrapped to the terminal's width, with no
        line wider than the terminal."""
        rig = rig_factory(sim, inbox={"approve_above": 10}).start()
        rig.drop("big", VIDEO)
        message = rig.wait("big", {"held"})["error"]["message"]
        assert len(message) > 80
        for width in (80, 200):
            code, out, _ = run("status", "--config", str(rig.config_file()), columns=width)
            assert code == 0
            lines = out.splitlines()
            assert all(len(line) <= width for line in lines), lines
            shown = " ".join(line.strip() for line in lines[1:])
            assert message in shown
