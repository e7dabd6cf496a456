"""Credit estimates from price data: ``runwatch/data/prices.json``, format in ``docs/price-format.md``.

Prices are data, not code: the file holds one declarative rule per model, each with the source that states
it. This module parses and checks the whole file once (a malformed file raises ``CatalogError`` at load,
never half-way through an estimate), then evaluates a rule against a request body::

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
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from typing import Any, TypeAlias

from runwatch.errors import CatalogError

__all__ = ["Estimate", "MediaHint", "PriceBook", "estimate", "known_models", "load_prices", "price_rule"]

_FORMAT = 1  # the data file format this module reads


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


# --- the parsed rule tree ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cond:
    field: str
    equals: object  # compared strictly (type and value); unused when non_empty
    non_empty: bool


@dataclass(frozen=True)
class _Case:
    values: tuple[object, ...]
    value: _Rate
    label: str | None


@dataclass(frozen=True)
class _CaseSelect:
    field: str
    cases: tuple[_Case, ...]
    # None = required; "max" = dearest case (default undocumented); a case value = the documented default;
    # a tuple of (condition or None, case value) = a documented default that depends on other fields
    absent: object


@dataclass(frozen=True)
class _Tier:
    up_to: int | None
    value: _Rate
    label: str


@dataclass(frozen=True)
class _TierSelect:
    path: str
    media: bool  # pixels from the MediaHint at ``path``, else from the "W:H" body field at ``path``
    tiers: tuple[_Tier, ...]
    absent_max: bool


_Rate: TypeAlias = "Fraction | _CaseSelect | _TierSelect"


@dataclass(frozen=True)
class _Quantity:
    path: str
    media: bool  # read from the MediaHint at ``path``, else from the body field at ``path``
    default: Fraction | None
    assume: Fraction | None


@dataclass(frozen=True)
class _PerSecond:
    rate: _Rate
    surcharges: tuple[_Rate, ...]
    seconds: _Quantity
    every: Fraction


@dataclass(frozen=True)
class _PerFrame:
    rate: _Rate
    seconds: _Quantity
    fps: _Quantity


@dataclass(frozen=True)
class _PerImage:
    price: _Rate
    count: _Quantity | None


@dataclass(frozen=True)
class _PerCharacters:
    field: str
    rate: Fraction
    every: Fraction


@dataclass(frozen=True)
class _PerGeneration:
    price: Fraction
    low: Fraction | None


@dataclass(frozen=True)
class _NoPrice:
    pass


_Kind: TypeAlias = "_PerSecond | _PerFrame | _PerImage | _PerCharacters | _PerGeneration | _NoPrice"


@dataclass(frozen=True)
class _Rule:
    kind: _Kind
    round_up: bool = False
    minimum: Fraction | None = None
    unknown_when: tuple[tuple[_Cond, str], ...] = ()


@dataclass(frozen=True)
class _Entry:
    rule: _Rule
    confidence: str
    note: str
    legacy: bool


# --- parsing and checking the data file -------------------------------------------------------------------


def _bad(path: str, message: str) -> CatalogError:
    return CatalogError(f"prices.json: {path}: {message}")


def _obj(
    value: object, path: str, allowed: AbstractSet[str], required: AbstractSet[str] = frozenset()
) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(path, "must be an object")
    unknown = set(value) - set(allowed)
    if unknown:
        raise _bad(path, f"unknown keys {sorted(unknown)}")
    missing = set(required) - set(value)
    if missing:
        raise _bad(path, f"missing keys {sorted(missing)}")
    return value


def _str(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(path, "must be a non-empty string")
    return value


def _exact(value: int | float) -> Fraction:
    # repr() keeps the decimal as written, so 0.7 is 7/10 and 5.7 s × 20 is exactly 114
    return Fraction(value) if isinstance(value, int) else Fraction(repr(value))


def _num(value: object, path: str, *, positive: bool = False) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(path, "must be a finite number")
    q = _exact(value)
    if q < 0 or (positive and q == 0):
        raise _bad(path, "must be positive" if positive else "must not be negative")
    return q


def _one_of(d: Mapping[str, Any], path: str, a: str, b: str) -> tuple[str, bool]:
    """The value of whichever of ``a``/``b`` is present (exactly one must be), and whether it was ``b``."""
    if (a in d) == (b in d):
        raise _bad(path, f"needs exactly one of {a}, {b}")
    return (_str(d[b], f"{path}.{b}"), True) if b in d else (_str(d[a], f"{path}.{a}"), False)


def _cond(value: object, path: str) -> _Cond:
    d = _obj(value, path, {"field", "equals", "nonEmpty"}, {"field"})
    if ("equals" in d) == ("nonEmpty" in d):
        raise _bad(path, "needs exactly one of equals, nonEmpty")
    if "nonEmpty" in d and d["nonEmpty"] is not True:
        raise _bad(path + ".nonEmpty", "must be true")
    return _Cond(_str(d["field"], path + ".field"), d.get("equals"), "nonEmpty" in d)


def _tiers(value: object, path: str) -> _TierSelect:
    d = _obj(value, path, {"pixelsOf", "tiers", "absent"}, {"pixelsOf", "tiers"})
    src_path, media = _one_of(
        _obj(d["pixelsOf"], path + ".pixelsOf", {"field", "media"}), path, "field", "media"
    )
    raw = d["tiers"]
    if not isinstance(raw, list) or len(raw) < 2:
        raise _bad(path + ".tiers", "must list at least two tiers")
    tiers: list[_Tier] = []
    for i, t in enumerate(raw):
        tp = f"{path}.tiers[{i}]"
        td = _obj(t, tp, {"upTo", "value", "label"}, {"value"})
        if (i == len(raw) - 1) == ("upTo" in td):
            raise _bad(tp, "every tier but the last needs upTo; the last has none")
        up = td.get("upTo")
        if up is not None and (isinstance(up, bool) or not isinstance(up, int) or up <= 0):
            raise _bad(tp + ".upTo", "must be a positive whole pixel count")
        prev = tiers[-1].up_to if tiers else 0
        if up is not None and prev is not None and up <= prev:
            raise _bad(tp + ".upTo", "must grow from tier to tier")
        label = _str(td["label"], tp + ".label") if "label" in td else f"≤ {up} px" if up else f"> {prev} px"
        tiers.append(_Tier(up, _rate(td["value"], tp + ".value"), label))
    if d.get("absent", "max") != "max":
        raise _bad(path + ".absent", 'must be "max" when given')
    return _TierSelect(src_path, media, tuple(tiers), "absent" in d)


def _cases(value: object, path: str) -> _CaseSelect:
    d = _obj(value, path, {"field", "cases", "absent"}, {"field", "cases"})
    raw = d["cases"]
    if not isinstance(raw, list) or not raw:
        raise _bad(path + ".cases", "must be a non-empty list")
    cases: list[_Case] = []
    for i, c in enumerate(raw):
        cp = f"{path}.cases[{i}]"
        cd = _obj(c, cp, {"in", "value", "label"}, {"in", "value"})
        values = cd["in"]
        if not isinstance(values, list) or not values or any(isinstance(v, Mapping | list) for v in values):
            raise _bad(cp + ".in", "must be a non-empty list of JSON scalars")
        label = _str(cd["label"], cp + ".label") if "label" in cd else None
        cases.append(_Case(tuple(values), _rate(cd["value"], cp + ".value"), label))
    field = _str(d["field"], path + ".field")
    absent = d.get("absent")
    if isinstance(absent, list):
        pairs: list[tuple[_Cond | None, object]] = []
        for i, a in enumerate(absent):
            ap = f"{path}.absent[{i}]"
            ad = _obj(a, ap, {"when", "use"}, {"use"})
            _find_case(cases, ad["use"], ap + ".use")
            pairs.append((_cond(ad["when"], ap + ".when") if "when" in ad else None, ad["use"]))
        if not pairs or pairs[-1][0] is not None:
            raise _bad(path + ".absent", "the last entry must have no condition")
        return _CaseSelect(field, tuple(cases), tuple(pairs))
    if absent is not None and absent != "max":
        _find_case(cases, absent, path + ".absent")
    return _CaseSelect(field, tuple(cases), absent)


def _find_case(cases: list[_Case], key: object, path: str) -> None:
    if not any(_same(key, v) for c in cases for v in c.values):
        raise _bad(path, f"{key!r} is not one of the cases")


def _rate(value: object, path: str) -> _Rate:
    if not isinstance(value, Mapping):
        return _num(value, path)
    return _tiers(value, path) if "pixelsOf" in value else _cases(value, path)


def _quantity(value: object, path: str) -> _Quantity:
    d = _obj(value, path, {"field", "media", "default", "assume"})
    src, media = _one_of(d, path, "field", "media")
    if media and ("default" in d or "assume" in d):
        raise _bad(path, "default/assume apply to body fields only")
    if "default" in d and "assume" in d:
        raise _bad(path, "default (documented) and assume (undocumented) exclude each other")
    default = _num(d["default"], path + ".default", positive=True) if "default" in d else None
    assume = _num(d["assume"], path + ".assume", positive=True) if "assume" in d else None
    return _Quantity(src, media, default, assume)


_KIND_KEYS: dict[str, tuple[set[str], set[str]]] = {
    "second": ({"rate", "seconds", "surcharges", "every"}, {"rate", "seconds"}),
    "frame": ({"rate", "seconds", "fps"}, {"rate", "seconds", "fps"}),
    "image": ({"price", "count"}, {"price"}),
    "characters": ({"field", "rate", "every"}, {"field", "rate"}),
    "generation": ({"price", "low"}, {"price"}),
    "unknown": (set(), set()),
}


def _kind(per: str, d: Mapping[str, Any], path: str) -> _Kind:
    every = _num(d["every"], path + ".every", positive=True) if "every" in d else Fraction(1)
    if per == "second":
        surcharges = d.get("surcharges", [])
        if not isinstance(surcharges, list):
            raise _bad(path + ".surcharges", "must be a list")
        extra = tuple(_rate(s, f"{path}.surcharges[{i}]") for i, s in enumerate(surcharges))
        return _PerSecond(
            _rate(d["rate"], path + ".rate"), extra, _quantity(d["seconds"], path + ".seconds"), every
        )
    if per == "frame":
        seconds, fps = _quantity(d["seconds"], path + ".seconds"), _quantity(d["fps"], path + ".fps")
        return _PerFrame(_rate(d["rate"], path + ".rate"), seconds, fps)
    if per == "image":
        count = _quantity(d["count"], path + ".count") if "count" in d else None
        return _PerImage(_rate(d["price"], path + ".price"), count)
    if per == "characters":
        return _PerCharacters(_str(d["field"], path + ".field"), _num(d["rate"], path + ".rate"), every)
    if per == "generation":
        low = _num(d["low"], path + ".low") if "low" in d else None
        return _PerGeneration(_num(d["price"], path + ".price"), low)
    return _NoPrice()


def _rule(value: object, path: str) -> _Rule:
    per = value.get("per") if isinstance(value, Mapping) else None
    if not isinstance(per, str) or per not in _KIND_KEYS:
        raise _bad(path + ".per", f"must be one of {sorted(_KIND_KEYS)}")
    allowed, required = _KIND_KEYS[per]
    common = {"round", "minimum", "unknownWhen"} if per != "unknown" else set()
    d = _obj(value, path, allowed | common | {"per"}, required | {"per"})
    if d.get("round", "none") not in ("none", "ceil"):
        raise _bad(path + ".round", 'must be "none" or "ceil"')
    unknown_when: list[tuple[_Cond, str]] = []
    uw = d.get("unknownWhen", [])
    if not isinstance(uw, list):
        raise _bad(path + ".unknownWhen", "must be a list")
    for i, u in enumerate(uw):
        up = f"{path}.unknownWhen[{i}]"
        ud = _obj(u, up, {"when", "reason"}, {"when", "reason"})
        unknown_when.append((_cond(ud["when"], up + ".when"), _str(ud["reason"], up + ".reason")))
    minimum = _num(d["minimum"], path + ".minimum") if "minimum" in d else None
    return _Rule(_kind(per, d, path), d.get("round") == "ceil", minimum, tuple(unknown_when))


_ENTRY_KEYS = {"endpoints", "legacy", "price", "confidence", "source", "note", "overrides"}
_OVERRIDE_KEYS = {"price", "confidence", "source", "note"}


def _entry(d: Mapping[str, Any], path: str, legacy: bool) -> _Entry:
    rule = _rule(d["price"], path + ".price")
    unknown = isinstance(rule.kind, _NoPrice)
    confidence = d.get("confidence", "unknown" if unknown else "documented")
    if confidence not in ("documented", "presumed", "unknown") or (confidence == "unknown") != unknown:
        raise _bad(path + ".confidence", "documented or presumed for a price; unknown only for per=unknown")
    _str(d["source"], path + ".source")
    note = d.get("note", "")
    if not isinstance(note, str):
        raise _bad(path + ".note", "must be a string")
    if unknown and not note:
        raise _bad(path + ".note", "an unknown price needs a note saying why")
    return _Entry(rule, confidence, note, legacy)


def _merge(entry: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    # an override replaces the price; the base's confidence described the base price, so it is not inherited
    base = {k: v for k, v in entry.items() if k != "confidence" and k != "overrides"}
    return {**base, **override}


class PriceBook:
    """A checked set of price rules; ``load_prices()`` gives the one shipped with runwatch."""

    def __init__(self, data: object) -> None:
        doc = _obj(data, "(top)", {"format", "creditUsd", "about", "models"}, {"format", "models"})
        if doc["format"] != _FORMAT:
            raise _bad("format", f"expected {_FORMAT}, got {doc['format']!r}")
        models = doc["models"]
        if not isinstance(models, Mapping) or not models:
            raise _bad("models", "must be a non-empty object")
        self._raw: dict[str, Any] = copy.deepcopy(dict(models))  # what price_rule() hands out copies of
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._endpoints: dict[str, tuple[str, ...]] = {}
        for model, raw in models.items():
            path = f"models[{model!r}]"
            d = _obj(raw, path, _ENTRY_KEYS, {"endpoints", "price", "source"})
            eps = d["endpoints"]
            if not isinstance(eps, list) or not eps or not all(isinstance(e, str) and e for e in eps):
                raise _bad(path + ".endpoints", "must be a non-empty list of endpoint names")
            legacy = d.get("legacy", False)
            if not isinstance(legacy, bool):
                raise _bad(path + ".legacy", "must be a boolean")
            overrides = _obj(d.get("overrides", {}), path + ".overrides", set(eps))
            base = _entry(d, path, legacy)
            for ep in eps:
                if ep in overrides:
                    op = f"{path}.overrides[{ep!r}]"
                    o = _obj(overrides[ep], op, _OVERRIDE_KEYS, {"price"})
                    self._entries[model, ep] = _entry(_merge(d, o), op, legacy)
                else:
                    self._entries[model, ep] = base
            self._endpoints[model] = tuple(eps)

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
        return _merge(entry, override) if override else entry

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
            return Estimate(
                None, f"no price for {model} on endpoint {endpoint!r} (it is offered on {offered})"
            )
        if isinstance(entry.rule.kind, _NoPrice):
            return Estimate(None, f"no documented price for {model}: {entry.note}")
        if not isinstance(body, Mapping):
            return Estimate(None, "the request body is not an object")
        if media is not None and not isinstance(media, Mapping):
            return Estimate(None, "media hints must map body field paths to MediaHint")
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


def _same(a: object, b: object) -> bool:
    # strict, so JSON true never matches 1 and "true" never matches true
    return type(a) is type(b) and a == b


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


def _holds(cond: _Cond, body: Mapping[str, Any]) -> bool:
    found, value = _lookup(body, cond.field)
    if cond.non_empty:
        return found and isinstance(value, str | list | tuple | Mapping) and len(value) > 0
    return found and _same(value, cond.equals)


def _positive(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return value > 0 and (isinstance(value, int) or math.isfinite(value))


def _max_of(rate: _Rate) -> Fraction:
    if isinstance(rate, Fraction):
        return rate
    if isinstance(rate, _CaseSelect):
        return max(_max_of(c.value) for c in rate.cases)
    return max(_max_of(t.value) for t in rate.tiers)


def _pixels(sel: _TierSelect, ctx: _Ctx) -> tuple[int | None, str]:
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


def _eval_rate(rate: _Rate, ctx: _Ctx) -> tuple[Fraction, str]:
    """The value and a short label of what chose it ("" for a plain number)."""
    if isinstance(rate, Fraction):
        return rate, ""
    if isinstance(rate, _TierSelect):
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
            ctx.assumptions.append(
                f"{rate.field} not given (default undocumented); assumed {_show(key)}, the dearest"
            )
        elif isinstance(rate.absent, tuple):
            key = next(use for cond, use in rate.absent if cond is None or _holds(cond, ctx.body))
            how = " by default"
        else:
            key, how = rate.absent, " by default"
    case = next((c for c in rate.cases if any(_same(key, v) for v in c.values)), None)
    if case is None:
        raise _Unknown(f"{rate.field}={_show(key)} has no documented price")
    value, sub = _eval_rate(case.value, ctx)
    label = (case.label or f"{rate.field}={_show(key)}") + how
    return value, label + (f", {sub}" if sub else "")


def _amount(q: _Quantity, ctx: _Ctx, attr: str, unit: str) -> Fraction:
    """A positive amount (seconds, fps, image count) from the body or from a media hint."""
    if q.media:
        hint = ctx.media.get(q.path)
        value = getattr(hint, attr, None) if isinstance(hint, MediaHint) else None
        if value is None:
            raise _Unknown(f"needs the {attr} of the input at {q.path} (pass a MediaHint)")
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
    return _exact(value)


def _evaluate(rule: _Rule, ctx: _Ctx) -> tuple[Fraction, str]:
    for cond, reason in rule.unknown_when:
        if _holds(cond, ctx.body):
            raise _Unknown(reason)
    k = rule.kind
    if isinstance(k, _PerSecond):
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
    elif isinstance(k, _PerFrame):
        rate, label = _eval_rate(k.rate, ctx)
        seconds = _amount(k.seconds, ctx, "duration", " s")
        fps = _amount(k.fps, ctx, "fps", " fps")
        amount = rate * fps * seconds
        basis = f"{_fmt(rate)} credits/frame ({label}) × {_fmt(fps)} fps × {_fmt(seconds)} s"
    elif isinstance(k, _PerImage):
        price, label = _eval_rate(k.price, ctx)
        count = _amount(k.count, ctx, "count", "") if k.count else Fraction(1)
        if count.denominator != 1:
            raise _Unknown(f"the image count must be a whole number, got {_fmt(count)}")
        amount = price * count
        basis = f"{_unit(price, 'credit', 'credits')}/image{f' ({label})' if label else ''}"
        basis += f" × {_unit(count, 'image', 'images')}"
    elif isinstance(k, _PerCharacters):
        found, text = _lookup(ctx.body, k.field)
        if not found or not isinstance(text, str) or not text:
            raise _Unknown(f"{k.field} must be a non-empty string" + (f", got {text!r}" if found else ""))
        # UTF-16 code units: the unit the API measures promptText in, never fewer than code points
        chars = len(text.encode("utf-16-le", "surrogatepass")) // 2
        amount = k.rate * chars / k.every
        basis = f"{_unit(k.rate, 'credit', 'credits')} per {_fmt(k.every)} characters × {chars} characters"
    elif isinstance(k, _PerGeneration):
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
