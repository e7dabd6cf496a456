"""The money rules as tables: what counts as spent, UTC day and month boundaries, unknown prices, and what an
approval passes."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from runwatch.budget import (
    Charge,
    Limits,
    Spent,
    balance_hold,
    charge_of,
    daily_limit_hold,
    next_day,
    next_month,
    spent,
    user_hold,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
NONE = Spent(0, 0, 0)


def _job(
    state: str,
    credits: float | None = None,
    estimated: float | None = None,
    sent: str | None = "2026-11-28T10:00:00Z",
    inbox: str = "a",
    task_id: str | None = "task",
) -> Any:
    return SimpleNamespace(
        state=state,
        task_id=task_id if sent is not None else None,
        credits=credits,
        estimated_credits=estimated,
        create_started_at=sent,
        updated_at="2026-11-28T11:00:00Z",
        inbox=inbox,
    )


class TestCharges:
    @pytest.mark.parametrize(
        ("job", "credits"),
        [
            (_job("succeeded", credits=40, estimated=50), 40),  # the final cost wins over the estimate
            (_job("running", estimated=50), 50),  # in flight: its estimate
            (_job("uploading", estimated=30, sent=None), 30),  # let through, about to be sent
            (_job("downloading", estimated=20), 20),
            (_job("failed", credits=0, estimated=50), None),  # refunded
            (_job("cancelled", estimated=50), None),  # no cost recorded: nothing counted
            (_job("held", estimated=500, sent=None), None),  # never sent
            (_job("accepted", estimated=500, sent=None), None),
            (_job("needs_attention", estimated=70, task_id=None), 70),  # the create may have been charged
            (_job("held", estimated=70, task_id=None), 70),  # its create's fate being read from Runway's counts
            (_job("needs_attention", estimated=70, sent=None), None),
            (_job("running", estimated=None), None),  # unknown price, no cost yet
        ],
    )
    def test_what_counts(self, job: Any, credits: float | None) -> None:
        """A job counts its final credits when known, else its estimate while Runway may be charging it."""
        charge = charge_of(job, NOW)
        assert (charge.credits if charge else None) == credits

    def test_spent_when_sent(self) -> None:
        """A charge is dated by the create; one about to be sent falls back to its last change."""
        assert charge_of(_job("running", estimated=5), NOW) == Charge("a", 5.0, datetime(2026, 11, 28, 10, tzinfo=UTC))
        assert charge_of(_job("uploading", estimated=5, sent=None), NOW).at.hour == 11  # type: ignore[union-attr]


class TestBoundaries:
    @pytest.mark.parametrize(
        ("now", "expected"),
        [
            (datetime(2026, 11, 28, 23, 59, 59, tzinfo=UTC), Spent(10, 15, 115)),
            (datetime(2026, 11, 29, 0, 0, 0, tzinfo=UTC), Spent(0, 0, 115)),  # a new UTC day: daily budgets free
            (datetime(2026, 12, 1, 0, 0, 0, tzinfo=UTC), Spent(0, 0, 0)),  # a new UTC month: all free
        ],
    )
    def test_day_and_month(self, now: datetime, expected: Spent) -> None:
        """Spent today (this inbox, all inboxes) and this month, cut at UTC midnight and the 1st."""
        charges = [
            Charge("a", 10, datetime(2026, 11, 28, 0, 0, tzinfo=UTC)),
            Charge("b", 5, datetime(2026, 11, 28, 23, 0, tzinfo=UTC)),
            Charge("a", 100, datetime(2026, 11, 1, 0, 0, tzinfo=UTC)),
            Charge("a", 1000, datetime(2026, 10, 31, 23, 59, tzinfo=UTC)),  # last month
        ]
        assert spent(charges, "a", now) == expected

    def test_local_times_are_read_as_utc(self) -> None:
        """A clock in another zone still cuts days at UTC midnight."""
        from datetime import timedelta, timezone

        tokyo = timezone(timedelta(hours=9))
        charges = [Charge("a", 7, datetime(2026, 11, 28, 23, 30, tzinfo=UTC))]
        assert spent(charges, "a", datetime(2026, 11, 29, 8, 0, tzinfo=tokyo)).today == 7  # 23:00 UTC
        assert spent(charges, "a", datetime(2026, 11, 29, 9, 0, tzinfo=tokyo)).today == 0  # 00:00 UTC

    def test_next_day_and_month(self) -> None:
        """When daily and monthly budgets free, including across a year."""
        assert next_day(NOW) == datetime(2026, 11, 29, tzinfo=UTC)
        assert next_month(NOW) == datetime(2026, 12, 1, tzinfo=UTC)
        assert next_month(datetime(2026, 12, 31, 23, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)


def _hold(credits: float | None, limits: Limits, used: Spent = NONE, approved: bool = False) -> str | None:
    return user_hold("clip", "veo3.1", credits, "20 credits/s x 8 s", limits, used, approved=approved)


class TestUserLimits:
    @pytest.mark.parametrize(
        ("credits", "limits", "used", "words"),
        [
            (
                320,
                Limits(max_credits=100),
                NONE,
                "estimated 320 credits (20 credits/s x 8 s) is above its max_credits "
                "of 100; `runwatch approve clip` sends it",
            ),
            (320, Limits(approve_above=200), NONE, "is above the inbox's approve_above of 200"),
            (
                320,
                Limits(inbox_daily=500),
                Spent(410, 410, 410),
                "estimated 320 credits would exceed the inbox's daily budget of 500 (410 spent today, UTC); "
                "waits for the next day or `runwatch approve clip`",
            ),
            (
                320,
                Limits(daily=2000),
                Spent(0, 1900, 1900),
                "the daily budget of 2000 (1900 spent today by all inboxes",
            ),
            (
                320,
                Limits(monthly=40000),
                Spent(0, 0, 39900),
                "the monthly budget of 40000 (39900 spent this month, UTC); waits for the next month",
            ),
            (None, Limits(max_credits=100), NONE, "no price is known for veo3.1"),
            (None, Limits(daily=100), NONE, "cannot be checked against the daily budget of 100"),
        ],
    )
    def test_held(self, credits: float | None, limits: Limits, used: Spent, words: str) -> None:
        """Each limit holds with a reason that names it, the numbers, and how the request goes on."""
        reason = _hold(credits, limits, used)
        assert reason is not None and words in reason

    @pytest.mark.parametrize(
        ("credits", "limits", "used"),
        [
            (320, Limits(), NONE),  # no limits
            (100, Limits(max_credits=100, approve_above=100), NONE),  # "above" means above, not equal
            (90, Limits(inbox_daily=500), Spent(410, 410, 410)),  # exactly reaches the budget
            (320, Limits(inbox_daily=500), Spent(0, 9999, 9999)),  # other inboxes' spending is not this inbox's
            (None, Limits(), NONE),  # unknown price, nothing to check it against
            (None, Limits(max_credits=1, unknown_price="allow"), NONE),
            (0, Limits(inbox_daily=0), NONE),  # a free request fits a zero budget
        ],
    )
    def test_goes(self, credits: float | None, limits: Limits, used: Spent) -> None:
        """Within every limit (or with nothing to check against), the request goes."""
        assert _hold(credits, limits, used) is None

    def test_order(self) -> None:
        """A limit a person must approve is named before a budget that frees by itself."""
        reason = _hold(320, Limits(max_credits=100, inbox_daily=10), Spent(5, 5, 5))
        assert reason is not None and "max_credits" in reason

    @pytest.mark.parametrize(
        "limits",
        [
            Limits(max_credits=1),
            Limits(approve_above=1),
            Limits(inbox_daily=1),
            Limits(daily=1),
            Limits(monthly=1),
        ],
    )
    @pytest.mark.parametrize("credits", [320, None])
    def test_approval_passes_every_user_limit(self, limits: Limits, credits: float | None) -> None:
        """An approved request passes max_credits, approve_above, the budgets and an unknown price."""
        assert _hold(credits, limits, Spent(50, 50, 50)) is not None
        assert _hold(credits, limits, Spent(50, 50, 50), approved=True) is None


class TestRunwayLimits:
    @pytest.mark.parametrize(
        ("credits", "balance", "held"),
        [
            (320, 100, True),
            (100, 100, False),
            (320, None, False),
            (None, 5, False),
            (1, -3, True),
        ],
    )
    def test_balance(self, credits: float | None, balance: float | None, held: bool) -> None:
        """Above the organization's balance a request waits (unknown figures cannot hold anything)."""
        reason = balance_hold(credits, balance)
        assert (reason is not None) == held
        if reason:
            assert "the organization's balance of" in reason and "approving does not override" in reason

    @pytest.mark.parametrize(
        ("used", "cap", "held"), [(49, 50, False), (50, 50, True), (51, 50, True), (10**6, None, False), (0, 0, True)]
    )
    def test_daily_task_limit(self, used: int, cap: int | None, held: bool) -> None:
        """A create that would certainly meet the daily-limit 429 is not sent."""
        reason = daily_limit_hold("veo3.1", used, cap)
        assert (reason is not None) == held
        if reason:
            assert f"daily task limit for veo3.1 is reached ({used} of {cap}" in reason


# -- estimates against the simulator ---------------------------------------------------------------------

_SAMPLE_FOR = {
    "image": ("still.jpg", "image/jpeg"),
    "video": ("clip.mp4", "video/mp4"),
    "audio": ("speech.mp3", "audio/mpeg"),
}


def _minimal(spec: Any) -> Any:
    """The smallest value a catalogue type allows; media as data: URIs of the shipped samples."""
    import base64

    from .conftest import SAMPLES

    kind = spec["kind"]
    if kind == "literal":
        return spec["values"][0]
    if kind == "string":
        if spec.get("media"):
            name, content_type = _SAMPLE_FOR[spec["media"]]
            return f"data:{content_type};base64," + base64.b64encode((SAMPLES / name).read_bytes()).decode()
        return "x" * max(1, spec.get("minLength") or 1)
    if kind in ("integer", "number"):
        return spec["minimum"] if spec.get("minimum") is not None else 1
    if kind == "boolean":
        return False
    if kind == "array":
        return [_minimal(spec["items"]) for _ in range(max(1, spec.get("minItems") or 0))]
    if kind == "object":
        return {k: _minimal(f["type"]) for k, f in spec["fields"].items() if f.get("required")}
    if kind == "union":
        return _minimal(spec["options"][0])
    return {} if kind == "map" else None


def test_estimates_match_the_simulators_estimated_cost(sim: Any) -> None:
    """For every model with a known price, a minimal valid request: runwatch's estimate (media probed as the
    engine does) equals the estimatedCost the simulator answers the create with. The simulator prices with the
    same data, so this guards the wiring (hints, field paths, rounding), not the prices themselves. Models
    whose price needs what a probe cannot tell (an input's frame rate) are left out."""
    import httpx

    from runwatch.api import RunwayClient
    from runwatch.catalog import format_path, load_catalog
    from runwatch.mediaprobe import probe_file
    from runwatch.pricing import MediaHint, estimate

    from .conftest import SAMPLES

    catalog = load_catalog()
    compared: dict[str, tuple[float, float | None]] = {}
    left_out = []
    with httpx.Client(timeout=30) as http:
        api = RunwayClient(http, base_url=sim.url, api_key=sim.key)
        for endpoint in catalog.endpoints.values():
            for model in endpoint.models.values():
                body = {k: _minimal(f["type"]) for k, f in model.fields.items() if f.get("required")}
                checked = catalog.validate(endpoint.name, body)
                assert checked.ok, (model.name, checked.issues)
                hints = {}
                for ref in checked.media:
                    info = probe_file(SAMPLES / _SAMPLE_FOR[ref.kind][0])
                    assert info is not None
                    hints[format_path(ref.path)] = MediaHint(
                        duration=info.duration, width=info.width, height=info.height
                    )
                guess = estimate(endpoint.name, model.name, body, hints)
                if guess.credits is None:
                    if "known only for a local media file" in guess.basis:
                        left_out.append(model.name)
                    continue
                created = api.create_task(endpoint.name, body)
                compared[f"{endpoint.name}/{model.name}"] = (float(guess.credits), created.estimated_credits)
    assert {k: v for k, v in compared.items() if v[0] != v[1]} == {}
    assert len(compared) >= 20 and "text_to_video/veo3.1" in compared and "image_to_video/gen4_turbo" in compared
    assert left_out == ["magnific_video_upscaler_creative"]
