"""A rejected request's problems, in words a person can act on.

Every check of a request adds to one :class:`Problems`, so a rejected request lists everything wrong with it
at once. This module also holds how those problems are worded: a value quoted short, what a catalogue type
allows, and each ``catalog.Issue`` (shaped like Runway's API errors, for machines) turned into what was wrong
and what is allowed. It is separate so that the checks read as checks and the wording can be read, and
changed, in one place.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from runwatch.catalog import Issue, PathT, format_path
from runwatch.catalogtypes import object_fields, spec_at
from runwatch.errors import Problem, RequestError

__all__ = [
    "MAX_LISTED",
    "MISSING",
    "Problems",
    "article",
    "fail",
    "issue_problems",
    "show",
]

_EXPECTED = {
    "string": "a string",
    "number": "a number",
    "int": "a whole number",
    "object": "an object",
    "array": "a list",
    "boolean": "true or false",
    "record": "an object",
    "null": "null",
}
MISSING = object()
MAX_LISTED = 100  # problems listed for one request


class Problems:
    """Problems collected so far; ``waiting`` counts those that go away once copying ends (missing files).

    The first :data:`MAX_LISTED` are listed, then one line says how many more there were: a file with ten
    thousand unknown keys gets a status file a person can read, not ten thousand lines.
    """

    def __init__(self) -> None:
        self.items: list[Problem] = []
        self.waiting = 0
        self.unlisted = 0

    @property
    def full(self) -> bool:
        """No more problems will be listed (wording one is wasted work)."""
        return len(self.items) >= MAX_LISTED

    def add(self, path: PathT | str, message: str, *, waiting: bool = False) -> None:
        self.waiting += waiting
        if self.full:
            self.unlisted += 1
            return
        where = path if isinstance(path, str) else format_path(path)
        self.items.append(Problem(where, message))

    def raise_if_any(self, source: Path, *, endpoint: str | None = None, model: str | None = None) -> None:
        if self.items:
            self.fail(source, endpoint=endpoint, model=model)

    def fail(self, source: Path, *, endpoint: str | None = None, model: str | None = None) -> NoReturn:
        """Raise every problem at once; ``endpoint`` and ``model`` are what the request named, if known."""
        listed = list(self.items)
        if self.unlisted:
            listed.append(
                Problem("", f"and {self.unlisted:,} more problems like these (the first {MAX_LISTED} are listed)")
            )
        incomplete = self.waiting == len(self.items) + self.unlisted
        raise RequestError(str(source), listed, incomplete=incomplete, endpoint=endpoint, model=model)


def show(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fail(source: Path, path: str, message: str, *, incomplete: bool = False) -> RequestError:
    return RequestError(str(source), [Problem(path, message)], incomplete=incomplete)


def _value_at(body: Any, path: PathT) -> Any:
    for part in path:
        if isinstance(body, str):
            return MISSING
        try:
            body = body[part]
        except (KeyError, IndexError, TypeError):
            return MISSING
    return body


def _describe(spec: Mapping[str, Any] | None, fallback: str = "another value") -> str:
    """What a type allows, in words."""
    if spec is None:
        return fallback
    kind = spec["kind"]
    if kind == "string":
        if spec.get("media"):
            return f"{article(spec['media'])} (a file in the inbox, or an https://, runway:// or data: URI)"
        return "a string"
    if kind == "literal":
        values = [show(v) for v in spec["values"]]
        return values[0] if len(values) == 1 else "one of " + ", ".join(values)
    if kind in ("integer", "number"):
        lo, hi = spec.get("minimum"), spec.get("maximum")
        noun = "a whole number" if kind == "integer" else "a number"
        if lo is not None and hi is not None:
            return f"{noun} from {lo} to {hi}"
        return noun + (f" of at least {lo}" if lo is not None else f" of at most {hi}" if hi is not None else "")
    if kind == "array":
        items = spec["items"]
        if items["kind"] == "object":
            return "a list of objects " + _members(items["fields"])
        return f"a list of {_describe(items)}"
    if kind == "object":
        return "an object " + _members(spec["fields"])
    if kind == "union":
        return " or ".join(dict.fromkeys(_describe(o) for o in spec["options"]))
    words = {"boolean": "true or false", "null": "null", "map": "an object", "any": "any value"}
    return words.get(kind, str(kind))


def _members(fields: Mapping[str, Any]) -> str:
    """``{type: "audio", uri}``: field names, with the value of a field that can only have one."""
    shown = []
    for name, field in fields.items():
        values: list[Any] = field["type"]["values"] if field["type"]["kind"] == "literal" else []
        shown.append(f"{name}: {show(values[0])}" if len(values) == 1 else name)
    return "{" + ", ".join(shown) + "}"


def article(kind: str) -> str:
    return {"image": "an image", "video": "a video", "audio": "an audio"}.get(kind, kind)


def issue_problems(issue: Issue, body: dict[str, Any], top: Mapping[str, Any], problems: Problems) -> None:
    """One catalogue issue as problems a person can act on: what was wrong and what is allowed."""
    code, path, extra = issue.code, issue.path, issue.extra
    value = _value_at(body, path)
    spec = spec_at(top, path)
    if code == "unrecognized_keys":
        fields = sorted(object_fields(spec))
        for key in extra.get("keys", ()):
            if problems.full:
                problems.add((*path, key), "unknown field")  # counted, not listed
                continue
            hint = difflib.get_close_matches(key, fields, 1)
            also = f"did you mean {show(hint[0])}? " if hint else ""
            problems.add((*path, key), f"unknown field; {also}allowed here: {', '.join(fields)}")
    elif code == "invalid_value":
        allowed = ", ".join(show(v) for v in extra.get("values", ()))
        problems.add(path, f"{show(value)} is not allowed; allowed: {allowed}")
    elif code in ("too_big", "too_small"):
        big = code == "too_big"
        bound = extra.get("maximum" if big else "minimum")
        limit = f"at {'most' if big else 'least'} {bound}"
        origin = extra.get("origin")
        if origin == "string":
            unit = "character" if bound == 1 else "characters"
            problems.add(path, f"is too {'long' if big else 'short'}: {limit} {unit} allowed")
        elif origin == "array":
            count = len(value) if isinstance(value, list) else "?"
            problems.add(path, f"has {count} items; {limit} allowed")
        else:
            problems.add(path, f"{show(value)} is too {'big' if big else 'small'}; it must be {limit}")
    elif code == "invalid_type":
        expected = _describe(spec, _EXPECTED.get(str(extra.get("expected")), str(extra.get("expected"))))
        if value is MISSING:
            problems.add(path, f"is required; expected {expected}")
        else:
            problems.add(path, f"{show(value)} has the wrong type; expected {expected}")
    elif code == "invalid_union":
        problems.add(path, f"{show(value)} does not fit; expected {_describe(spec)}")
    else:
        problems.add(path, issue.message)
