"""The lifecycle's pure decisions and the state table: no threads, no sleeps, no I/O."""

from __future__ import annotations

import math
from typing import Any

import pytest

from runwatch.errors import ApiConnectionError, ApiStatusError, RateLimitedError, UploadError
from runwatch.jobs import lifecycle
from runwatch.jobs.lifecycle import Download, Finish, Hold, LookAgain, RetryLater, Wait
from runwatch.jobs.states import ACTIVE, FINAL, INITIAL, RETRYABLE, TRANSITIONS, IllegalTransition, State, check_move


def _status(status: int, body: Any = None, **kw: Any) -> ApiStatusError:
    return ApiStatusError(status, body if body is not None else {"error": f"status {status}"}, **kw)


class TestStates:
    def test_every_state_is_in_the_table_and_documented(self) -> None:
        """Each state has a row in the table and a docstring of its own."""
        assert set(TRANSITIONS) == set(State)
        for state in State:
            assert state.__doc__ and state.__doc__ != State.__doc__, state

    def test_final_and_active_split_the_states(self) -> None:
        """A state is final or active, never both."""
        assert set(State) == FINAL | ACTIVE and not FINAL & ACTIVE

    def test_only_retryable_final_states_lead_anywhere(self) -> None:
        """succeeded and rejected are the end; failed, cancelled and needs_attention only go back to accepted."""
        for state in FINAL:
            expected = {State.ACCEPTED} if state in RETRYABLE else set()
            assert TRANSITIONS[state] == expected, state

    @pytest.mark.parametrize(
        ("old", "new"),
        [
            (State.SUCCEEDED, State.ACCEPTED),
            (State.REJECTED, State.ACCEPTED),
            (State.RUNNING, State.ACCEPTED),
            (State.RUNNING, State.NEEDS_ATTENTION),
            (State.DOWNLOADING, State.RUNNING),
            (State.HELD, State.SUBMITTED),
            (State.SUBMITTED, State.SUCCEEDED),
            (State.ACCEPTED, State.DOWNLOADING),
        ],
    )
    def test_illegal_moves_raise(self, old: State, new: State) -> None:
        """A move the table does not list raises, naming the job and both states."""
        with pytest.raises(IllegalTransition, match=f"job j1: {old} cannot become {new}"):
            check_move("j1", old, new)

    @pytest.mark.parametrize(
        ("old", "new"),
        [
            (State.ACCEPTED, State.UPLOADING),
            (State.ACCEPTED, State.SUBMITTED),
            (State.UPLOADING, State.NEEDS_ATTENTION),
            (State.UPLOADING, State.HELD),
            (State.PENDING, State.RUNNING),
            (State.RUNNING, State.DOWNLOADING),
            (State.RUNNING, State.CANCELLED),
            (State.DOWNLOADING, State.SUCCEEDED),
            (State.NEEDS_ATTENTION, State.ACCEPTED),
            (State.RUNNING, State.RUNNING),
        ],
    )
    def test_legal_moves_pass(self, old: State, new: State) -> None:
        """The moves a job really makes are in the table (and staying put is always allowed)."""
        check_move("j1", old, new)

    def test_a_job_is_recorded_in_an_initial_state(self) -> None:
        """Claims are recorded accepted, held or rejected."""
        assert {State.ACCEPTED, State.HELD, State.REJECTED} == INITIAL

    def test_states_are_their_names(self) -> None:
        """A state is the string status files show, so it compares equal to it."""
        assert State.NEEDS_ATTENTION == "needs_attention" and f"{State.HELD}" == "held"


class TestCreateFailure:
    @pytest.mark.parametrize(
        ("error", "kind", "state"),
        [
            (ApiConnectionError("refused", sent=False), RetryLater, None),
            (RateLimitedError(429, {"error": "slow down"}, daily=False, retry_after=None), RetryLater, None),
            (ApiConnectionError("read timeout", sent=True), Finish, State.NEEDS_ATTENTION),
            (_status(500), Finish, State.NEEDS_ATTENTION),
            (_status(401), Finish, State.FAILED),
            (_status(400, {"error": "bad", "issues": [{"path": ["ratio"], "message": "no"}]}), Finish, State.REJECTED),
            (_status(400, {"error": "You do not have enough credits to run this task."}), Hold, None),
            (RateLimitedError(429, {"error": "daily"}, daily=True, retry_after=None), Hold, None),
            (RuntimeError("a bug of ours"), Finish, State.NEEDS_ATTENTION),
        ],
    )
    def test_outcomes(self, error: BaseException, kind: type, state: State | None) -> None:
        """Each failure of a create maps to one outcome; only a proven "nothing made" is sent again."""
        outcome = lifecycle.after_create_failure(error, attempts=1, model="gen4_turbo")
        assert isinstance(outcome, kind)
        if state is not None:
            assert isinstance(outcome, Finish) and outcome.state == state

    def test_unconfirmed_keeps_the_intent(self) -> None:
        """A create that may have made a task keeps its intent recorded; every other end clears it."""
        maybe = lifecycle.after_create_failure(ApiConnectionError("reset", sent=True), attempts=1, model=None)
        refused = lifecycle.after_create_failure(_status(401), attempts=1, model=None)
        assert isinstance(maybe, Finish) and not maybe.surely_not_created
        assert maybe.error is not None and maybe.error["code"] == "create_unconfirmed"
        assert isinstance(refused, Finish) and refused.surely_not_created

    def test_not_enough_credits_is_held_the_same_everywhere(self) -> None:
        """A 400 for credits is a hold of five minutes with Runway's own words (daemon and submit alike)."""
        error = _status(400, {"error": "You do not have enough credits to run this task."})
        outcome = lifecycle.after_create_failure(error, attempts=1, model="gen4_turbo")
        assert outcome == Hold(
            "400", "You do not have enough credits to run this task. Trying again in 5 minutes.", 300.0
        )

    def test_daily_limit_pauses_the_model(self) -> None:
        """Runway's daily limit holds the request for half an hour and rests only that model."""
        outcome = lifecycle.after_create_failure(
            RateLimitedError(429, {"error": "daily"}, daily=True, retry_after=None), attempts=1, model="veo3"
        )
        assert isinstance(outcome, Hold) and outcome.pause_model and outcome.wait == 1800.0
        assert "veo3" in outcome.message

    def test_backoff_grows_then_gives_up(self) -> None:
        """Refused-before-sending creates back off 2, 4, 8 … s and fail after the last attempt."""
        refused = ApiConnectionError("refused", sent=False)
        delays = [lifecycle.after_create_failure(refused, attempts=n, model=None) for n in range(1, 8)]
        assert [d.delay for d in delays if isinstance(d, RetryLater)] == [2, 4, 8, 16, 32, 64, 128]
        last = lifecycle.after_create_failure(refused, attempts=8, model=None)
        assert isinstance(last, Finish) and last.state == State.FAILED and last.error is not None
        assert last.error["code"] == "create_failed"

    def test_issue_paths_are_dotted(self) -> None:
        """Runway's issue paths (lists) read as the request file's dotted paths."""
        error = _status(400, {"error": "bad", "issues": [{"path": ["referenceImages", 0, "uri"], "message": "x"}]})
        outcome = lifecycle.after_create_failure(error, attempts=1, model=None)
        assert isinstance(outcome, Finish) and outcome.error is not None
        assert outcome.error["issues"] == [{"path": "referenceImages[0].uri", "message": "x"}]


class TestPlaceFailure:
    def test_retryable_upload_backs_off(self) -> None:
        """A retryable upload failure comes back later; a permanent one fails at once."""
        again = lifecycle.after_place_failure(UploadError("503 from S3", retryable=True), attempts=2)
        final = lifecycle.after_place_failure(UploadError("access denied", retryable=False), attempts=1)
        assert again == RetryLater(4.0, 2, "503 from S3")
        assert isinstance(final, Finish) and final.error == {"code": "upload_failed", "message": "access denied"}


class TestPoll:
    @pytest.mark.parametrize(
        ("task", "expected"),
        [
            ({"status": "PENDING"}, Wait(State.PENDING, None)),
            ({"status": "THROTTLED"}, Wait(State.THROTTLED, None)),
            ({"status": "RUNNING", "progress": 0.4}, Wait(State.RUNNING, 0.4)),
            ({"status": "RUNNING", "progress": 1.7}, Wait(State.RUNNING, 1.0)),
            ({"status": "RUNNING", "progress": -3}, Wait(State.RUNNING, 0.0)),
            ({"status": "RUNNING", "progress": math.nan}, Wait(State.RUNNING, None)),
            ({"status": "RUNNING", "progress": True}, Wait(State.RUNNING, None)),
            ({"status": "SUCCEEDED", "output": ["https://x/a.mp4"], "cost": {"credits": 25}}, None),
        ],
    )
    def test_waiting_and_success(self, task: dict[str, Any], expected: Any) -> None:
        """Waiting states carry clamped progress; a success names its outputs and cost."""
        outcome = lifecycle.after_poll(task)
        if expected is None:
            assert outcome == Download(("https://x/a.mp4",), 25.0)
        else:
            assert outcome == expected

    def test_cancelled_records_runways_cost(self) -> None:
        """A task cancelled after it ran records the cost Runway reports."""
        outcome = lifecycle.after_poll({"status": "CANCELLED", "cost": {"credits": 25}})
        assert outcome == Finish(State.CANCELLED, credits=25.0)

    def test_failed_records_code_and_cost(self) -> None:
        """A failed task keeps Runway's failure code, its text and its final cost."""
        outcome = lifecycle.after_poll(
            {"status": "FAILED", "failureCode": "SAFETY.INPUT.IMAGE", "failure": "nope", "cost": {"credits": 0}}
        )
        assert outcome == Finish(State.FAILED, {"code": "SAFETY.INPUT.IMAGE", "message": "nope"}, credits=0.0)

    @pytest.mark.parametrize("output", [None, [], [None, 3], "https://x/a.mp4"])
    def test_success_without_outputs_is_asked_again_then_fails(self, output: Any) -> None:
        """SUCCEEDED without a usable output is asked again twice, then fails with a clear code."""
        task = {"status": "SUCCEEDED", "output": output}
        first = lifecycle.after_poll(task, empty_successes=0)
        second = lifecycle.after_poll(task, empty_successes=1)
        third = lifecycle.after_poll(task, empty_successes=2)
        assert isinstance(first, LookAgain) and first.empty_success
        assert isinstance(second, LookAgain) and second.empty_success
        assert isinstance(third, Finish) and third.state == State.FAILED and third.error is not None
        assert third.error["code"] == "no_outputs"

    def test_unknown_status_is_asked_again(self) -> None:
        """A status runwatch does not know is not an end: look again at the usual interval."""
        outcome = lifecycle.after_poll({"status": "PAUSED"})
        assert isinstance(outcome, LookAgain) and outcome.delay is None

    def test_gone_task(self) -> None:
        """A 404 ends a task: cancelled when a cancel was asked for, failed otherwise."""
        gone = _status(404, {"error": "Could not find Task"})
        assert lifecycle.after_poll_failure(gone, failures=1, interval=5, cancel_requested=True) == Finish(
            State.CANCELLED
        )
        failed = lifecycle.after_poll_failure(gone, failures=1, interval=5, cancel_requested=False)
        assert isinstance(failed, Finish) and failed.state == State.FAILED

    def test_read_failures_back_off(self) -> None:
        """Failed reads back off from the interval, doubling, up to five minutes."""
        error = ApiConnectionError("refused", sent=False)
        delays = [
            lifecycle.after_poll_failure(error, failures=n, interval=5, cancel_requested=False) for n in (1, 2, 9)
        ]
        assert [d.delay for d in delays if isinstance(d, LookAgain)] == [10.0, 20.0, 300.0]


class TestDownloadFailure:
    def test_failures_counted_across_polls_end_the_job(self) -> None:
        """Download failures back off and, past the last try, end the job with a code."""
        error = OSError("404 from the output URL")
        assert lifecycle.after_download_failure(error, failures=3) == LookAgain(8.0, note=str(error))
        final = lifecycle.after_download_failure(error, failures=9)
        assert isinstance(final, Finish) and final.error is not None and final.error["code"] == "download_failed"
