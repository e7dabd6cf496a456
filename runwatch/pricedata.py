"""The price data file, ``runwatch/data/prices.json`` (format in ``docs/price-format.md``), parsed and checked.

The file holds one declarative rule per model, each with the source that states it. :func:`parse_prices` checks
all of it at once, so a malformed file raises ``CatalogError`` at load, never half-way through an estimate, and
turns each rule into the tree below, which :mod:`runwatch.pricing` evaluates against a request body. Numbers
become exact ``Fraction``s as written, so 0.7 stays 7/10.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeAlias

from runwatch.errors import CatalogError

__all__ = [
    "Case",
    "CaseSelect",
    "Cond",
    "Entry",
    "Kind",
    "NoPrice",
    "PerCharacters",
    "PerFrame",
    "PerGeneration",
    "PerImage",
    "PerSecond",
    "PriceData",
    "Quantity",
    "Rate",
    "Rule",
    "Tier",
    "TierSelect",
    "exact",
    "merge_override",
    "parse_prices",
    "same",
]

_FORMAT = 1  # the data file format this module reads


# --- the parsed rule tree ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cond:
    field: str
    equals: object  # compared strictly (type and value); unused when non_empty
    non_empty: bool


@dataclass(frozen=True)
class Case:
    values: tuple[object, ...]
    value: Rate
    label: str | None


@dataclass(frozen=True)
class CaseSelect:
    field: str
    cases: tuple[Case, ...]
    # None = required; "max" = dearest case (default undocumented); a case value = the documented default;
    # a tuple of (condition or None, case value) = a documented default that depends on other fields
    absent: object


@dataclass(frozen=True)
class Tier:
    up_to: int | None
    value: Rate
    label: str


@dataclass(frozen=True)
class TierSelect:
    path: str
    media: bool  # pixels from the MediaHint at ``path``, else from the "W:H" body field at ``path``
    tiers: tuple[Tier, ...]
    absent_max: bool


Rate: TypeAlias = "Fraction | CaseSelect | TierSelect"


@dataclass(frozen=True)
class Quantity:
    path: str
    media: bool  # read from the MediaHint at ``path``, else from the body field at ``path``
    default: Fraction | None
    assume: Fraction | None


@dataclass(frozen=True)
class PerSecond:
    rate: Rate
    surcharges: tuple[Rate, ...]
    seconds: Quantity
    every: Fraction


@dataclass(frozen=True)
class PerFrame:
    rate: Rate
    seconds: Quantity
    fps: Quantity


@dataclass(frozen=True)
class PerImage:
    price: Rate
    count: Quantity | None


@dataclass(frozen=True)
class PerCharacters:
    field: str
    rate: Fraction
    every: Fraction


@dataclass(frozen=True)
class PerGeneration:
    price: Fraction
    low: Fraction | None


@dataclass(frozen=True)
class NoPrice:
    pass


Kind: TypeAlias = "PerSecond | PerFrame | PerImage | PerCharacters | PerGeneration | NoPrice"


@dataclass(frozen=True)
class Rule:
    kind: Kind
    round_up: bool = False
    minimum: Fraction | None = None
    unknown_when: tuple[tuple[Cond, str], ...] = ()


@dataclass(frozen=True)
class Entry:
    rule: Rule
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


def exact(value: int | float) -> Fraction:
    # repr() keeps the decimal as written, so 0.7 is 7/10 and 5.7 s × 20 is exactly 114
    return Fraction(value) if isinstance(value, int) else Fraction(repr(value))


def _num(value: object, path: str, *, positive: bool = False) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(path, "must be a finite number")
    q = exact(value)
    if q < 0 or (positive and q == 0):
        raise _bad(path, "must be positive" if positive else "must not be negative")
    return q


def _one_of(d: Mapping[str, Any], path: str, a: str, b: str) -> tuple[str, bool]:
    """The value of whichever of ``a``/``b`` is present (exactly one must be), and whether it was ``b``."""
    if (a in d) == (b in d):
        raise _bad(path, f"needs exactly one of {a}, {b}")
    return (_str(d[b], f"{path}.{b}"), True) if b in d else (_str(d[a], f"{path}.{a}"), False)


def _cond(value: object, path: str) -> Cond:
    d = _obj(value, path, {"field", "equals", "nonEmpty"}, {"field"})
    if ("equals" in d) == ("nonEmpty" in d):
        raise _bad(path, "needs exactly one of equals, nonEmpty")
    if "nonEmpty" in d and d["nonEmpty"] is not True:
        raise _bad(path + ".nonEmpty", "must be true")
    return Cond(_str(d["field"], path + ".field"), d.get("equals"), "nonEmpty" in d)


def _tiers(value: object, path: str) -> TierSelect:
    d = _obj(value, path, {"pixelsOf", "tiers", "absent"}, {"pixelsOf", "tiers"})
    src_path, media = _one_of(_obj(d["pixelsOf"], path + ".pixelsOf", {"field", "media"}), path, "field", "media")
    raw = d["tiers"]
    if not isinstance(raw, list) or len(raw) < 2:
        raise _bad(path + ".tiers", "must list at least two tiers")
    tiers: list[Tier] = []
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
        tiers.append(Tier(up, _rate(td["value"], tp + ".value"), label))
    if d.get("absent", "max") != "max":
        raise _bad(path + ".absent", 'must be "max" when given')
    return TierSelect(src_path, media, tuple(tiers), "absent" in d)


def _cases(value: object, path: str) -> CaseSelect:
    d = _obj(value, path, {"field", "cases", "absent"}, {"field", "cases"})
    raw = d["cases"]
    if not isinstance(raw, list) or not raw:
        raise _bad(path + ".cases", "must be a non-empty list")
    cases: list[Case] = []
    for i, c in enumerate(raw):
        cp = f"{path}.cases[{i}]"
        cd = _obj(c, cp, {"in", "value", "label"}, {"in", "value"})
        values = cd["in"]
        if not isinstance(values, list) or not values or any(isinstance(v, Mapping | list) for v in values):
            raise _bad(cp + ".in", "must be a non-empty list of JSON scalars")
        label = _str(cd["label"], cp + ".label") if "label" in cd else None
        cases.append(Case(tuple(values), _rate(cd["value"], cp + ".value"), label))
    field = _str(d["field"], path + ".field")
    absent = d.get("absent")
    if isinstance(absent, list):
        pairs: list[tuple[Cond | None, object]] = []
        for i, a in enumerate(absent):
            ap = f"{path}.absent[{i}]"
            ad = _obj(a, ap, {"when", "use"}, {"use"})
            _find_case(cases, ad["use"], ap + ".use")
            pairs.append((_cond(ad["when"], ap + ".when") if "when" in ad else None, ad["use"]))
        if not pairs or pairs[-1][0] is not None:
            raise _bad(path + ".absent", "the last entry must have no condition")
        return CaseSelect(field, tuple(cases), tuple(pairs))
    if absent is not None and absent != "max":
        _find_case(cases, absent, path + ".absent")
    return CaseSelect(field, tuple(cases), absent)


def _find_case(cases: list[Case], key: object, path: str) -> None:
    if not any(same(key, v) for c in cases for v in c.values):
        raise _bad(path, f"{key!r} is not one of the cases")


def _rate(value: object, path: str) -> Rate:
    if not isinstance(value, Mapping):
        return _num(value, path)
    return _tiers(value, path) if "pixelsOf" in value else _cases(value, path)


def _quantity(value: object, path: str) -> Quantity:
    d = _obj(value, path, {"field", "media", "default", "assume"})
    src, media = _one_of(d, path, "field", "media")
    if media and ("default" in d or "assume" in d):
        raise _bad(path, "default/assume apply to body fields only")
    if "default" in d and "assume" in d:
        raise _bad(path, "default (documented) and assume (undocumented) exclude each other")
    default = _num(d["default"], path + ".default", positive=True) if "default" in d else None
    assume = _num(d["assume"], path + ".assume", positive=True) if "assume" in d else None
    return Quantity(src, media, default, assume)


_KIND_KEYS: dict[str, tuple[set[str], set[str]]] = {
    "second": ({"rate", "seconds", "surcharges", "every"}, {"rate", "seconds"}),
    "frame": ({"rate", "seconds", "fps"}, {"rate", "seconds", "fps"}),
    "image": ({"price", "count"}, {"price"}),
    "characters": ({"field", "rate", "every"}, {"field", "rate"}),
    "generation": ({"price", "low"}, {"price"}),
    "unknown": (set(), set()),
}


def _kind(per: str, d: Mapping[str, Any], path: str) -> Kind:
    every = _num(d["every"], path + ".every", positive=True) if "every" in d else Fraction(1)
    if per == "second":
        surcharges = d.get("surcharges", [])
        if not isinstance(surcharges, list):
            raise _bad(path + ".surcharges", "must be a list")
        extra = tuple(_rate(s, f"{path}.surcharges[{i}]") for i, s in enumerate(surcharges))
        return PerSecond(_rate(d["rate"], path + ".rate"), extra, _quantity(d["seconds"], path + ".seconds"), every)
    if per == "frame":
        seconds, fps = _quantity(d["seconds"], path + ".seconds"), _quantity(d["fps"], path + ".fps")
        return PerFrame(_rate(d["rate"], path + ".rate"), seconds, fps)
    if per == "image":
        count = _quantity(d["count"], path + ".count") if "count" in d else None
        return PerImage(_rate(d["price"], path + ".price"), count)
    if per == "characters":
        return PerCharacters(_str(d["field"], path + ".field"), _num(d["rate"], path + ".rate"), every)
    if per == "generation":
        low = _num(d["low"], path + ".low") if "low" in d else None
        return PerGeneration(_num(d["price"], path + ".price"), low)
    return NoPrice()


def _rule(value: object, path: str) -> Rule:
    per = value.get("per") if isinstance(value, Mapping) else None
    if not isinstance(per, str) or per not in _KIND_KEYS:
        raise _bad(path + ".per", f"must be one of {sorted(_KIND_KEYS)}")
    allowed, required = _KIND_KEYS[per]
    common = {"round", "minimum", "unknownWhen"} if per != "unknown" else set()
    d = _obj(value, path, allowed | common | {"per"}, required | {"per"})
    if d.get("round", "none") not in ("none", "ceil"):
        raise _bad(path + ".round", 'must be "none" or "ceil"')
    unknown_when: list[tuple[Cond, str]] = []
    uw = d.get("unknownWhen", [])
    if not isinstance(uw, list):
        raise _bad(path + ".unknownWhen", "must be a list")
    for i, u in enumerate(uw):
        up = f"{path}.unknownWhen[{i}]"
        ud = _obj(u, up, {"when", "reason"}, {"when", "reason"})
        unknown_when.append((_cond(ud["when"], up + ".when"), _str(ud["reason"], up + ".reason")))
    minimum = _num(d["minimum"], path + ".minimum") if "minimum" in d else None
    return Rule(_kind(per, d, path), d.get("round") == "ceil", minimum, tuple(unknown_when))


_ENTRY_KEYS = {"endpoints", "legacy", "price", "confidence", "source", "note", "overrides"}
_OVERRIDE_KEYS = {"price", "confidence", "source", "note"}


def _entry(d: Mapping[str, Any], path: str, legacy: bool) -> Entry:
    rule = _rule(d["price"], path + ".price")
    unknown = isinstance(rule.kind, NoPrice)
    confidence = d.get("confidence", "unknown" if unknown else "documented")
    if confidence not in ("documented", "presumed", "unknown") or (confidence == "unknown") != unknown:
        raise _bad(path + ".confidence", "documented or presumed for a price; unknown only for per=unknown")
    _str(d["source"], path + ".source")
    note = d.get("note", "")
    if not isinstance(note, str):
        raise _bad(path + ".note", "must be a string")
    if unknown and not note:
        raise _bad(path + ".note", "an unknown price needs a note saying why")
    return Entry(rule, confidence, note, legacy)


def merge_override(entry: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A model's entry as written with one endpoint's override applied."""
    # an override replaces the price; the base's confidence described the base price, so it is not inherited
    base = {k: v for k, v in entry.items() if k != "confidence" and k != "overrides"}
    return {**base, **override}


@dataclass(frozen=True)
class PriceData:
    """A whole price data file, checked: each (model, endpoint)'s entry, each model's endpoints, and the models
    as written (what ``PriceBook.price_rule`` hands out copies of)."""

    entries: dict[tuple[str, str], Entry]
    endpoints: dict[str, tuple[str, ...]]
    raw: dict[str, Any]


def parse_prices(data: object) -> PriceData:
    """The parsed file, or CatalogError naming the first problem: nothing is half-loaded."""
    doc = _obj(data, "(top)", {"format", "creditUsd", "about", "models"}, {"format", "models"})
    if doc["format"] != _FORMAT:
        raise _bad("format", f"expected {_FORMAT}, got {doc['format']!r}")
    models = doc["models"]
    if not isinstance(models, Mapping) or not models:
        raise _bad("models", "must be a non-empty object")
    as_written: dict[str, Any] = copy.deepcopy(dict(models))  # a copy: the caller's data may change later
    entries: dict[tuple[str, str], Entry] = {}
    endpoints: dict[str, tuple[str, ...]] = {}
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
                entries[model, ep] = _entry(merge_override(d, o), op, legacy)
            else:
                entries[model, ep] = base
        endpoints[model] = tuple(eps)
    return PriceData(entries, endpoints, as_written)


def same(a: object, b: object) -> bool:
    # strict, so JSON true never matches 1 and "true" never matches true
    return type(a) is type(b) and a == b
