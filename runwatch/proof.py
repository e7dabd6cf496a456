"""Proof from Runway's own counts that a create whose answer never came made nothing (or made a task).

Runway has no idempotency key and no task list, but ``GET /v1/organization`` reports, per model, the generations
of the rolling day (``usage.models.M.dailyGenerations``) and the credit balance. runwatch knows the creates it saw
confirmed. So for one model the *offset* ``count − confirmed creates`` stays the same while nothing else creates,
and a create that made a task raises it by one. The rule, pure and table-tested:

1. The count is trusted only as far as it has been seen to keep up: at least :data:`SEEN_ENOUGH` of runwatch's own
   confirmed creates of that model must have shown in it, and the longest delay seen (``lag``) is how long a
   create may take to show.
2. A *before* look: an organization read answered before the create left, with no confirmed create of the
   model still on its way into the count. An *after* look: a read sent at least ``2 × lag + margin`` after the
   create left, again with none on its way.
3. Not made: the offset is the same in both, the balance moved by exactly the confirmed creates' charges, and
   none of runwatch's own creates left the rolling day in between (which would hide one). Made: the offset rose.
   Anything else (no count for the model, the count never seen to keep up, a balance that moved otherwise, a
   create leaving the window, too long a wait) is no proof, and a person is asked.

A wrong "not made" is a double charge, so every doubt ends in "no proof".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["SEEN_ENOUGH", "CountsProof", "OrgLook", "Verdict", "Verdicts"]

DAY = 86_400.0
SEEN_ENOUGH = 2  # own creates seen in the count before it is trusted
MARGIN = 5.0  # seconds beyond twice the lag seen, before the after-look
WINDOW_MARGIN = 120.0  # seconds of doubt about where Runway's rolling day starts
LOOK_EVERY = 3.0  # seconds between reads while a recent create has not shown in the count
GIVE_UP = 900.0  # seconds after which a create that could not be proven is handed to a person


class Verdicts(StrEnum):
    NOT_MADE = "not_made"
    MADE = "made"
    WAIT = "wait"
    NO_PROOF = "no_proof"


@dataclass(frozen=True)
class Verdict:
    kind: Verdicts
    reason: str = ""
    until: float | None = None  # WAIT: look again once a read sent after this moment has answered


@dataclass(frozen=True)
class OrgLook:
    """One organization read: sent and answered (monotonic seconds), per-model counts, the balance."""

    sent: float
    answered: float
    counts: dict[str, int]
    balance: float | None
    has_usage: bool = True  # a model absent from a usage report has made nothing in the rolling day

    def count(self, model: str) -> int | None:
        return self.counts.get(model, 0 if self.has_usage else None)

    @classmethod
    def of(cls, sent: float, answered: float, org: dict[str, Any]) -> OrgLook:
        usage = org.get("usage")
        models = usage.get("models") if isinstance(usage, dict) else None
        counts: dict[str, int] = {}
        if isinstance(models, dict):
            for model, figures in models.items():
                value = figures.get("dailyGenerations") if isinstance(figures, dict) else None
                if isinstance(value, int) and not isinstance(value, bool):
                    counts[str(model)] = value
        has_usage = isinstance(models, dict)
        balance = org.get("creditBalance")
        if isinstance(balance, bool) or not isinstance(balance, int | float):
            return cls(sent, answered, counts, None, has_usage)
        return cls(sent, answered, counts, float(balance), has_usage)


@dataclass
class _Model:
    confirmed: list[tuple[float, float, float]] = field(default_factory=list)  # (sent, answered, credits)
    unseen: list[float] = field(default_factory=list)  # confirmed, not yet seen in the count
    offset: int | None = None  # count − confirmed, when none was on its way
    seen: int = 0
    lag: float = 0.0


class CountsProof:
    """What runwatch has seen of Runway's counts following its own creates, and the verdicts they allow."""

    def __init__(self) -> None:
        self.looks: deque[OrgLook] = deque(maxlen=500)
        self._models: dict[str, _Model] = {}

    def _model(self, model: str) -> _Model:
        return self._models.setdefault(model, _Model())

    def lag(self, model: str) -> float | None:
        m = self._models.get(model)
        return m.lag if m is not None and m.seen >= SEEN_ENOUGH else None

    def confirmed(self, model: str, sent: float, answered: float, credits: float) -> None:
        """Runway named the task of a create of ``model`` that left at ``sent``, charged ``credits``, by
        ``answered`` (monotonic seconds)."""
        m = self._model(model)
        if m.offset is None and not m.confirmed:  # the first: the count in the last look before it left
            before = [look for look in self.looks if look.answered < sent and look.count(model) is not None]
            if before:
                m.offset = before[-1].count(model)
        m.confirmed.append((sent, answered, credits))
        m.unseen.append(answered)

    def wants_look(self, now: float, last_sent: float) -> bool:
        """Whether a read is worth making to see recent creates show in the count (every few seconds while
        one of the last two minutes has not shown yet)."""
        if now - last_sent < LOOK_EVERY:
            return False
        return any(now - 120.0 < at < now - 1.0 for m in self._models.values() for at in m.unseen)

    def _confirmed_before(self, m: _Model, moment: float) -> int:
        return sum(1 for _, at, _ in m.confirmed if at <= moment)

    def looked(self, look: OrgLook) -> None:
        """An organization read answered: learn how the count follows confirmed creates."""
        self.looks.append(look)
        for model in {*look.counts, *self._models}:
            count = look.count(model)
            if count is None:
                continue
            m = self._model(model)
            offset = count - self._confirmed_before(m, look.sent)
            waiting = [at for at in m.unseen if at <= look.sent]
            before = list(m.unseen)
            if m.offset is None:
                if not waiting:
                    m.offset = offset
                continue
            # The count caught up with every create confirmed before this read (at least: a create made elsewhere
            # may mask one of ours, so the balance is checked too before anything is concluded).
            if offset >= m.offset and waiting:
                m.seen += len(waiting)
                m.lag = max([m.lag, *(look.sent - at for at in waiting)])
                m.unseen = [at for at in m.unseen if at > look.sent]
            if offset > m.offset and (not waiting or m.unseen != before):  # creates made elsewhere: a new reference
                m.offset = offset

    def _settled(self, m: _Model, look: OrgLook) -> bool:
        """No confirmed create of the model was on its way during this read (its charge before or after it is
        then unclear), or may still be on its way into the count."""
        return not any(
            (sent <= look.answered and answered >= look.sent) or look.sent - m.lag - 1.0 <= answered <= look.sent
            for sent, answered, _ in m.confirmed
        )

    def verdict(self, model: str | None, sent: float, now: float) -> Verdict:
        """What the counts say of a create of ``model`` that left at ``sent`` (monotonic) and never answered."""
        m = self._models.get(model or "")
        if model is None or m is None or not any(look.count(model) is not None for look in self.looks):
            return Verdict(Verdicts.NO_PROOF, f"Runway reports no daily count for {model}")
        if m.seen < SEEN_ENOUGH:
            recent = [at for at in m.unseen if at < sent and now - at < 120.0]
            if m.seen + len(recent) >= SEEN_ENOUGH and now - sent < GIVE_UP:  # they may show in a moment
                return Verdict(Verdicts.WAIT, until=now + LOOK_EVERY)
            return Verdict(Verdicts.NO_PROOF, f"Runway's count for {model} has not yet been seen to keep up")
        before = [
            look
            for look in self.looks
            if look.answered < sent and look.count(model) is not None and self._settled(m, look)
        ]
        if not before:
            return Verdict(Verdicts.NO_PROOF, "no settled look at Runway's count from before the create")
        b = before[-1]
        ready = sent + 2 * m.lag + MARGIN
        after = [
            look
            for look in self.looks
            if look.sent >= ready and look.count(model) is not None and self._settled(m, look)
        ]
        if not after:
            if now - sent > GIVE_UP:
                return Verdict(Verdicts.NO_PROOF, "Runway's count did not settle in time")
            return Verdict(Verdicts.WAIT, until=max(ready, now))
        a = after[0]
        if any(b.sent - DAY - WINDOW_MARGIN <= at <= a.sent - DAY + WINDOW_MARGIN for _, at, _ in m.confirmed):
            return Verdict(Verdicts.NO_PROOF, "a create of a day ago left Runway's count meanwhile")
        count_a, count_b = a.count(model) or 0, b.count(model) or 0
        made = count_a - self._confirmed_before(m, a.sent) - (count_b - self._confirmed_before(m, b.sent))
        if made > 0:
            return Verdict(
                Verdicts.MADE, f"Runway's count of {model} rose by {made} more than the creates it confirmed"
            )
        if made < 0:
            return Verdict(Verdicts.NO_PROOF, f"Runway's count of {model} fell meanwhile")
        spent = sum(credits for _, at, credits in m.confirmed if b.sent < at <= a.sent)
        if b.balance is None or a.balance is None or abs((b.balance - a.balance) - spent) > 1e-6:
            return Verdict(Verdicts.NO_PROOF, "the balance moved by other than the creates runwatch confirmed")
        return Verdict(Verdicts.NOT_MADE, f"Runway's count of {model} and the balance show no task from it")
