"""Proof from Runway's counts that a create with no answer made nothing, or made a task: the pure rule, and the
daemon acting on it against the simulator."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from runwatch.proof import DAY, GIVE_UP, CountsProof, OrgLook, Verdicts
from runwatch.simulator import Fault, Simulator

from .rig import SEED_REQUESTS, Rig

M = "gen4_turbo"


def _look(at: float, count: int, balance: float | None = 1000.0, model: str = M) -> OrgLook:
    return OrgLook(sent=at, answered=at + 0.1, counts={model: count}, balance=balance)


def _trusted(lag: float = 1.0) -> CountsProof:
    """A proof that has seen two of its own creates show in the count, ``lag`` seconds after each."""
    proof = CountsProof()
    proof.looked(_look(0.0, 10, 1000))
    proof.confirmed(M, 9.5, 10.0, 5.0)
    proof.looked(_look(10.0 + lag, 11, 995))
    proof.confirmed(M, 19.5, 20.0, 5.0)
    proof.looked(_look(20.0 + lag, 12, 990))
    return proof


class TestLearning:
    def test_trusted_after_two_creates_with_their_lag(self) -> None:
        """The count is trusted once two of runwatch's creates have shown in it; the longest delay is kept."""
        proof = CountsProof()
        proof.looked(_look(0.0, 3))
        proof.confirmed(M, 0.5, 1.0, 5.0)
        proof.looked(_look(2.0, 3))  # not yet in the count
        assert proof.lag(M) is None
        proof.looked(_look(4.0, 4))
        proof.confirmed(M, 4.5, 5.0, 5.0)
        proof.looked(_look(6.0, 5))
        assert proof.lag(M) == 3.0

    def test_a_count_that_never_follows_is_never_trusted(self) -> None:
        """Creates that never show in the count leave it untrusted: once they are minutes old, every verdict is
        "no proof"."""
        proof = CountsProof()
        proof.looked(_look(0.0, 3))
        for at in (1.0, 5.0, 9.0):
            proof.confirmed(M, at - 0.5, at, 5.0)
            proof.looked(_look(at + 1, 3))
        assert proof.lag(M) is None
        assert proof.verdict(M, 12.0, 40.0).kind == Verdicts.WAIT  # recent creates may still show
        assert proof.verdict(M, 12.0, 200.0).kind == Verdicts.NO_PROOF


class TestVerdicts:
    def test_not_made(self) -> None:
        """Same offset and a balance moved only by confirmed creates, after twice the lag: nothing was made."""
        proof = _trusted()
        proof.looked(_look(30.0, 12, 990))
        verdict_before = proof.verdict(M, 31.0, 32.0)
        assert verdict_before.kind == Verdicts.WAIT and verdict_before.until == 31.0 + 2 * 1.0 + 5.0
        proof.looked(_look(40.0, 12, 990))
        assert proof.verdict(M, 31.0, 41.0).kind == Verdicts.NOT_MADE

    def test_made(self) -> None:
        """The count rose by one more than the confirmed creates: the task exists."""
        proof = _trusted()
        proof.looked(_look(30.0, 12, 990))
        proof.looked(_look(40.0, 13, 985))
        verdict = proof.verdict(M, 31.0, 41.0)
        assert verdict.kind == Verdicts.MADE and "rose by 1" in verdict.reason

    @pytest.mark.parametrize(
        ("after", "why"),
        [
            (_look(40.0, 12, 985), "balance moved"),  # the count hides it, the balance does not
            (_look(40.0, 12, None), "balance moved"),  # no balance: no proof
            (_look(40.0, 11, 990), "fell"),  # a create left the rolling day, or a reset
        ],
    )
    def test_doubt_is_no_proof(self, after: OrgLook, why: str) -> None:
        """Any figure that does not add up is no proof, never "not made"."""
        proof = _trusted()
        proof.looked(_look(30.0, 12, 990))
        proof.looked(after)
        verdict = proof.verdict(M, 31.0, 41.0)
        assert verdict.kind == Verdicts.NO_PROOF and why in verdict.reason

    def test_confirmed_creates_between_are_counted(self) -> None:
        """Creates runwatch saw confirmed while it waited are taken out of the count and the balance."""
        proof = _trusted()
        proof.looked(_look(30.0, 12, 990))
        proof.confirmed(M, 32.5, 33.0, 5.0)
        proof.looked(_look(34.0, 13, 985))  # the lag learned is the longest seen from a create to a read showing it
        proof.looked(_look(40.0, 13, 985))
        assert proof.verdict(M, 31.0, 41.0).kind == Verdicts.NOT_MADE

    def test_no_look_before_the_create(self) -> None:
        """Without a read answered before the create left there is no baseline."""
        proof = _trusted()
        assert proof.verdict(M, -5.0, 50.0).kind == Verdicts.NO_PROOF

    def test_a_create_leaving_the_rolling_day(self) -> None:
        """One of runwatch's creates of a day ago leaving the count meanwhile could hide a new one: no proof."""
        proof = CountsProof()
        proof.looked(_look(0.0, 10))
        proof.confirmed(M, 9.5, 10.0, 5.0)
        proof.looked(_look(11.0, 11, 995))
        proof.confirmed(M, 19.5, 20.0, 5.0)
        proof.looked(_look(21.0, 12, 990))
        proof.looked(_look(DAY + 15.0, 12, 990))
        proof.looked(_look(DAY + 30.0, 12, 990))
        verdict = proof.verdict(M, DAY + 16.0, DAY + 31.0)
        assert verdict.kind == Verdicts.NO_PROOF and "a day ago" in verdict.reason

    def test_gives_up(self) -> None:
        """A count that never settles is handed to a person after a while."""
        proof = _trusted()
        proof.looked(_look(30.0, 12, 990))
        assert proof.verdict(M, 31.0, 31.0 + GIVE_UP + 1).kind == Verdicts.NO_PROOF

    def test_unknown_model(self) -> None:
        """A model Runway reports no count for proves nothing."""
        assert _trusted().verdict("veo3", 31.0, 50.0).kind == Verdicts.NO_PROOF


def _warm_up(rig: Rig) -> None:
    """Two creates of the model confirmed and seen in Runway's count, so the count is trusted."""
    for n in range(2):
        rig.drop(f"warm{n}", SEED_REQUESTS["sound_effect"][0])
        assert rig.wait(f"warm{n}")["state"] == "succeeded"


class TestDaemon:
    def test_lost_answer_of_a_create_that_made_nothing_is_resent(
        self, rig_factory: Callable[..., Rig], sim: Simulator
    ) -> None:
        """A create whose connection dropped before Runway acted (no task made): the counts prove it, the request
        is sent again and succeeds, with exactly one task made for it."""
        sim.config.usage_lag = 0.3
        rig = rig_factory(sim).start()
        _warm_up(rig)
        sim.faults.add(Fault("drop", endpoint="sound_effect", method="POST", count=1))
        rig.drop("rain", SEED_REQUESTS["sound_effect"][0])
        held = rig.wait("rain", {"held"})
        assert held["error"]["code"] == "create_unconfirmed"
        status = rig.wait("rain", timeout=60)
        assert status["state"] == "succeeded", status
        assert sim.create_count() == 3

    def test_lost_answer_of_a_create_that_made_a_task(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """A create Runway carried out whose answer was lost: the counts show the task, the request ends
        needs_attention saying so plainly, and nothing is sent again."""
        sim.config.usage_lag = 0.3
        rig = rig_factory(sim).start()
        _warm_up(rig)
        sim.faults.add(Fault("drop", endpoint="sound_effect", method="POST", after=True, count=1))
        rig.drop("rain", SEED_REQUESTS["sound_effect"][0])
        status = rig.wait("rain", {"needs_attention"}, timeout=60)
        assert "made a task at Runway" in status["error"]["message"]
        assert sim.create_count() == 3

    def test_no_proof_without_a_trusted_count(self, rig_factory: Callable[..., Rig], sim: Simulator) -> None:
        """The first create of a model, its answer lost: the count was never seen to keep up, so a person is
        asked (needs_attention), and nothing is resent."""
        rig = rig_factory(sim).start()
        sim.faults.add(Fault("drop", endpoint="sound_effect", method="POST", count=1))
        rig.drop("rain", SEED_REQUESTS["sound_effect"][0])
        status = rig.wait("rain", {"needs_attention"}, timeout=60)
        assert "no proof either way" in status["error"]["message"]
        assert sim.create_count() == 0
