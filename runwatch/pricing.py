"""Credit estimates from price data: ``runwatch/data/prices.json``, format in ``docs/price-format.md``.

Prices are data, not code: :mod:`runwatch.pricedata` parses and checks the whole file once (a malformed file
raises ``CatalogError`` at load, never half-way through an estimate); this module evaluates a model's rule
against a request body::

    estimate("text_to_video", "gen4.5", {"duration": 5, "outputFormat": "prores"})
    -> Estimate(credits=85, basis="17 credits/s (12 + 5 for outputFormat=prores) × 5 s", assumptions=())

An estimate mirrors Runway's ``estimatedCost`` ("the maximum credits this task may charge"): where a
default is undocumented the dearer reading is taken and said so in ``assumptions``. ``credits`` is None when
no source gives a price or the body lacks what the rule needs; ``basis`` then says why. Odd bodies never
raise. Arithmetic is exact (``Fraction``), so 0.7 × 30 × 10 frames is 210, not 210.00000000000003.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from typing import Any

from runwatch.errors import CatalogError
from runwatch.pricedata import (
    CaseSelect,
    Cond,
    NoPrice,
    PerCharacters,
    PerFrame,
    PerGeneration,
    PerImage,
    PerSecond,
    Quantity,
    Rate,
    Rule,
    TierSelect,
    exact,
    merge_override,
    parse_prices,
    same,
)

__all__ = ["Estimate", "MediaHint", "PriceBook", "estimate", "known_models", "load_prices", "price_rule"]


@dataclass(frozen=True)
class Estimate:
    """What a request is expected to cost, how that was worked out, and what had to be assumed."""

    credits: float | None  # None = unknown
    basis: str
    assumptions: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        """Whether a price could be worked out."""
        return self.credits is not None


@dataclass(frozen=True)
class MediaHint:
    """What the caller knows about an input file; rules priced by input length or size need it."""

    duration: float | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None


class PriceBook:
    """A checked set of price rules; ``load_prices()`` gives the one shipped with runwatch."""

    def __init__(self, data: object) -> None:
        checked = parse_prices(data)
        self._raw = checked.raw  # what price_rule() hands out copies of
        self._entries = checked.entries
        self._endpoints = checked.endpoints

    def known_models(self) -> set[str]:
        """Every model id with an entry, priced or explicitly unknown."""
        return set(self._endpoints)

    def price_rule(self, model: str, endpoint: str | None = None) -> dict[str, Any] | None:
        """A copy of the model's entry as written; with ``endpoint``, that endpoint's override applied."""
        raw = self._raw.get(model)
        if raw is None:
            return None
        entry: dict[str, Any] = copy.deepcopy(raw)
        override = entry.get("overrides", {}).get(endpoint) if endpoint else None
        return merge_override(entry, override) if override else entry

    def estimate(
        self,
        endpoint: str,
        model: str,
        body: Mapping[str, Any],
        media: Mapping[str, MediaHint] | None = None,
    ) -> Estimate:
        """Estimate one request; never raises for an odd body or hint (the estimate is unknown instead)."""
        if not isinstance(model, str) or model not in self._endpoints:
            return Estimate(None, f"no price data for model {model!r}")
        entry = self._entries.get((model, endpoint)) if isinstance(endpoint, str) else None
        if entry is None:
            offered = ", ".join(self._endpoints[model])
            return Estimate(None, f"no price for {model} on endpoint {endpoint!r} (it is offered on {offered})")
        if isinstance(entry.rule.kind, NoPrice):
            return Estimate(None, f"no documented price for {model}: {entry.note}")
        if not isinstance(body, Mapping):
            return Estimate(None, "the request body is not an object")
        if media is not None and not isinstance(media, Mapping):
            return Estimate(None, "the media details given are not keyed by the fields' paths")
        ctx = _Ctx(body, media or {}, [])
        if entry.confidence == "presumed":
            ctx.assumptions.append("presumed price: the source marks it UNCERTAIN")
        if entry.legacy:
            ctx.assumptions.append("legacy model, gone from the SDK types: older price, may be refused")
        preamble = tuple(ctx.assumptions)
        try:
            amount, basis = _evaluate(entry.rule, ctx)
        except _Unknown as exc:
            # what was assumed on the way to a missing input says nothing about the price
            return Estimate(None, str(exc), preamble)
        return Estimate(_credits(amount), basis, tuple(ctx.assumptions))


# --- evaluation -------------------------------------------------------------------------------------------


class _Unknown(Exception):
    """The rule cannot price this body; the message says why."""


@dataclass
class _Ctx:
    body: Mapping[str, Any]
    media: Mapping[str, Any]
    assumptions: list[str]


def _show(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _fmt(q: Fraction) -> str:
    if q.denominator == 1:
        return str(q.numerator)
    return f"{float(q):.4f}".rstrip("0").rstrip(".")


def _unit(q: Fraction, one: str, many: str) -> str:
    return f"{_fmt(q)} {one if q == 1 else many}"


def _credits(q: Fraction) -> float:
    return q.numerator if q.denominator == 1 else float(q)


def _lookup(body: Mapping[str, Any], path: str) -> tuple[bool, object]:
    node: object = body
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return node is not None, node


def _holds(cond: Cond, body: Mapping[str, Any]) -> bool:
    found, value = _lookup(body, cond.field)
    if cond.non_empty:
        return found and isinstance(value, str | list | tuple | Mapping) and len(value) > 0
    return found and same(value, cond.equals)


def _positive(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return value > 0 and (isinstance(value, int) or math.isfinite(value))


def _max_of(rate: Rate) -> Fraction:
    if isinstance(rate, Fraction):
        return rate
    if isinstance(rate, CaseSelect):
        return max(_max_of(c.value) for c in rate.cases)
    return max(_max_of(t.value) for t in rate.tiers)


def _pixels(sel: TierSelect, ctx: _Ctx) -> tuple[int | None, str]:
    """The pixel count that picks the tier, or None and what was missing."""
    if sel.media:
        hint = ctx.media.get(sel.path)
        if isinstance(hint, MediaHint):
            w, h = hint.width, hint.height
            if isinstance(w, int) and isinstance(h, int) and _positive(w) and _positive(h):
                return w * h, ""
        return None, f"size of {sel.path} not given"
    found, value = _lookup(ctx.body, sel.path)
    if not found:
        return None, f"{sel.path} not given"
    if not isinstance(value, str):
        raise _Unknown(f"{sel.path} must be a 'W:H' string, got {value!r}")
    w_txt, _, h_txt = value.partition(":")
    if not (w_txt.isdigit() and h_txt.isdigit() and int(w_txt) > 0 and int(h_txt) > 0):
        return None, f"{sel.path} {value!r} gives no pixel size"
    return int(w_txt) * int(h_txt), ""


def _eval_rate(rate: Rate, ctx: _Ctx) -> tuple[Fraction, str]:
    """The value and a short label of what chose it ("" for a plain number)."""
    if isinstance(rate, Fraction):
        return rate, ""
    if isinstance(rate, TierSelect):
        pixels, missing = _pixels(rate, ctx)
        if pixels is not None:
            tier = next(t for t in rate.tiers if t.up_to is None or pixels <= t.up_to)
        elif rate.absent_max:
            tier = max(rate.tiers, key=lambda t: _max_of(t.value))
            ctx.assumptions.append(f"{missing}; assumed the dearer tier ({tier.label})")
        else:
            raise _Unknown(f"{missing}; the price depends on the pixel count")
        value, sub = _eval_rate(tier.value, ctx)
        return value, tier.label + (f", {sub}" if sub else "")
    found, key = _lookup(ctx.body, rate.field)
    how = ""
    if not found:
        if rate.absent is None:
            raise _Unknown(f"{rate.field} not given and it has no documented default")
        if rate.absent == "max":
            key = max(rate.cases, key=lambda c: _max_of(c.value)).values[0]
            ctx.assumptions.append(f"{rate.field} not given (default undocumented); assumed {_show(key)}, the dearest")
        elif isinstance(rate.absent, tuple):
            key = next(use for cond, use in rate.absent if cond is None or _holds(cond, ctx.body))
            how = " by default"
        else:
            key, how = rate.absent, " by default"
    case = next((c for c in rate.cases if any(same(key, v) for v in c.values)), None)
    if case is None:
        raise _Unknown(f"{rate.field}={_show(key)} has no documented price")
    value, sub = _eval_rate(case.value, ctx)
    label = (case.label or f"{rate.field}={_show(key)}") + how
    return value, label + (f", {sub}" if sub else "")


def _amount(q: Quantity, ctx: _Ctx, attr: str, unit: str) -> Fraction:
    """A positive amount (seconds, fps, image count) from the body or from a media hint."""
    if q.media:
        hint = ctx.media.get(q.path)
        value = getattr(hint, attr, None) if isinstance(hint, MediaHint) else None
        if value is None:
            raise _Unknown(
                f"needs the {attr} of the input at {q.path}, known only for a local media file whose {attr} "
                "runwatch can read"
            )
        what = f"the {attr} hint for {q.path}"
    else:
        found, value = _lookup(ctx.body, q.path)
        if not found:
            if q.default is not None:
                return q.default
            if q.assume is None:
                raise _Unknown(f"{q.path} not given and it has no documented default")
            ctx.assumptions.append(f"{q.path} not given; assumed {_fmt(q.assume)}{unit}")
            return q.assume
        if value == "auto":
            raise _Unknown(f"{q.path} 'auto' is billed at the model's maximum, which no source states")
        what = q.path
    if not isinstance(value, int | float) or not _positive(value):
        raise _Unknown(f"{what} must be a positive number, got {value!r}")
    return exact(value)


def _evaluate(rule: Rule, ctx: _Ctx) -> tuple[Fraction, str]:
    for cond, reason in rule.unknown_when:
        if _holds(cond, ctx.body):
            raise _Unknown(reason)
    k = rule.kind
    if isinstance(k, PerSecond):
        base, label = _eval_rate(k.rate, ctx)
        extras = [(v, lab) for v, lab in (_eval_rate(s, ctx) for s in k.surcharges) if v]
        seconds = _amount(k.seconds, ctx, "duration", " s")
        rate = base + sum((v for v, _ in extras), Fraction(0))
        if extras:
            label = " + ".join(
                [_fmt(base) + (f" {label}" if label else "")] + [f"{_fmt(v)} for {x}" for v, x in extras]
            )
        per = "/s" if k.every == 1 else f" per {_fmt(k.every)} s"
        amount = rate * seconds / k.every
        basis = f"{_unit(rate, 'credit', 'credits')}{per}{f' ({label})' if label else ''} × {_fmt(seconds)} s"
    elif isinstance(k, PerFrame):
        rate, label = _eval_rate(k.rate, ctx)
        seconds = _amount(k.seconds, ctx, "duration", " s")
        fps = _amount(k.fps, ctx, "fps", " fps")
        amount = rate * fps * seconds
        basis = f"{_fmt(rate)} credits/frame ({label}) × {_fmt(fps)} fps × {_fmt(seconds)} s"
    elif isinstance(k, PerImage):
        price, label = _eval_rate(k.price, ctx)
        count = _amount(k.count, ctx, "count", "") if k.count else Fraction(1)
        if count.denominator != 1:
            raise _Unknown(f"the image count must be a whole number, got {_fmt(count)}")
        amount = price * count
        basis = f"{_unit(price, 'credit', 'credits')}/image{f' ({label})' if label else ''}"
        basis += f" × {_unit(count, 'image', 'images')}"
    elif isinstance(k, PerCharacters):
        found, text = _lookup(ctx.body, k.field)
        if not found or not isinstance(text, str) or not text:
            raise _Unknown(f"{k.field} must be a non-empty string" + (f", got {text!r}" if found else ""))
        # UTF-16 code units: the unit the API measures promptText in, never fewer than code points
        chars = len(text.encode("utf-16-le", "surrogatepass")) // 2
        amount = k.rate * chars / k.every
        basis = f"{_unit(k.rate, 'credit', 'credits')} per {_fmt(k.every)} characters × {chars} characters"
    elif isinstance(k, PerGeneration):
        amount = k.price
        span = f" ({_fmt(k.low)}–{_fmt(k.price)}; the maximum is used)" if k.low is not None else ""
        basis = f"{_unit(k.price, 'credit', 'credits')} per generation{span}"
    else:
        raise _Unknown("no documented price")
    if rule.round_up and amount.denominator != 1:
        basis += f" = {_fmt(amount)}, rounded up"
        amount = Fraction(math.ceil(amount))
    if rule.minimum is not None and amount < rule.minimum:
        basis += f", raised to the minimum of {_fmt(rule.minimum)}"
        amount = rule.minimum
    return amount, basis


# --- the shipped price book -------------------------------------------------------------------------------


@functools.cache
def load_prices() -> PriceBook:
    """The price book shipped in the package (read and checked once)."""
    try:
        text = resources.files("runwatch.data").joinpath("prices.json").read_text("utf-8")
        data = json.loads(text)
    except (OSError, ValueError, ImportError) as exc:
        raise CatalogError(f"cannot read the price data: {exc}") from exc
    return PriceBook(data)


def estimate(
    endpoint: str,
    model: str,
    body: Mapping[str, Any],
    media: Mapping[str, MediaHint] | None = None,
) -> Estimate:
    """Estimate a request with the shipped prices. ``media`` is keyed by body field path ("media.uri")."""
    return load_prices().estimate(endpoint, model, body, media)


def known_models() -> set[str]:
    """Every model id the shipped price data has an entry for (its price may still be unknown)."""
    return load_prices().known_models()


def price_rule(model: str, endpoint: str | None = None) -> dict[str, Any] | None:
    """The shipped entry for ``model`` as written in the data file, or None."""
    return load_prices().price_rule(model, endpoint)
