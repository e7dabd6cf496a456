"""Reading one TOML table of the configuration: typed getters that record every problem with its dotted path,
the check for keys nobody read (secrets refused with the reason), and the small helpers the sections share.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

from runwatch.configsecrets import (
    _AWS_REFUSED,
    _DB_PASSWORD_REFUSED,
    _HTTP_TOKEN_REFUSED,
    _KEY_REFUSED,
    _SECRET_NAMES,
)
from runwatch.errors import MissingKey, Problem

_D = TypeVar("_D")
_MISSING: Final[Any] = object()


def _found(value: Any) -> str:
    """A value as the error message shows it: short, typed in TOML's words, never a secret."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int):
        return f"{value} (an integer)"
    if isinstance(value, float):
        return f"{value!r} (a float)"
    if isinstance(value, str):
        shown = json.dumps(value[:60] + ("…" if len(value) > 60 else ""), ensure_ascii=False)
        return f"{shown} (a string)"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return f"a {type(value).__name__}"


def _number(value: Any) -> float | None:
    """The value as a finite float, or None; TOML's true is not 1."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


class _Table:
    """One TOML table being read: typed getters that record problems, then a check for keys nobody read."""

    def __init__(self, data: Any, where: str, problems: list[Problem], label: str | None = None) -> None:
        self.data: Mapping[Any, Any] = data if isinstance(data, Mapping) else {}
        self.where, self.problems = where, problems
        # How a person finds this table in the file ("[s3]", "[[inbox]] 2"): a missing key has no line of
        # its own, so it is located by its table.
        self.label = label if label is not None else (f"[{where}]" if where else "")
        self.known: list[str] = []

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def problem(self, name: str, message: str) -> None:
        self.problems.append(Problem(self.key(name), message))

    def bad(self, name: str, expected: str, value: Any) -> None:
        self.problem(name, f"expected {expected}, found {_found(value)}")

    def get(self, name: str, *, required: str | None = None) -> Any:
        self.known.append(name)
        if name in self.data:
            return self.data[name]
        if required:
            self.problems.append(MissingKey(self.label, f"`{name}` is missing ({required})"))
        return _MISSING

    def string(
        self,
        name: str,
        default: _D,
        *,
        choices: tuple[str, ...] = (),
        pattern: re.Pattern[str] | None = None,
        expected: str = "a non-empty string",
        required: str | None = None,
        empty_ok: bool = False,
    ) -> str | _D:
        value = self.get(name, required=required)
        if value is _MISSING:
            return default
        if choices:
            expected = "one of " + ", ".join(f'"{c}"' for c in choices)
            ok = value in choices
        else:
            ok = (
                isinstance(value, str)
                and (empty_ok or bool(value.strip()))
                and (pattern is None or bool(pattern.fullmatch(value)))
            )
        if not (ok and isinstance(value, str)):
            self.bad(name, expected, value)
            return default
        return value

    def number(self, name: str, default: _D, *, zero_ok: bool = False, unit: str = "") -> float | _D:
        value = self.get(name)
        if value is _MISSING:
            return default
        number = _number(value)
        if number is None or number < 0 or (number == 0 and not zero_ok):
            self.bad(name, f"a number {'>=' if zero_ok else '>'} 0{unit}", value)
            return default
        return number

    def integer(self, name: str, default: _D, *, minimum: int, maximum: int | None = None, unit: str = "") -> int | _D:
        value = self.get(name)
        if value is _MISSING:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            span = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
            self.bad(name, f"an integer {span}{unit}", value)
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.bad(name, "true or false", value)
            return default
        return value

    def path(
        self, name: str, default: _D, *, base: Path, env: Mapping[str, str], required: str | None = None
    ) -> Path | _D:
        value = self.get(name, required=required)
        if value is _MISSING:
            return default
        if not isinstance(value, str) or not value.strip() or "\0" in value:
            self.bad(name, "a path (relative paths are taken from the config file's folder)", value)
            return default
        if value.startswith("~"):
            head, _, rest = value.partition("/")
            home = env.get("HOME")
            if head != "~" or not home:
                self.problem(name, "only a leading ~/ is expanded, and only when HOME is set")
                return default
            value = os.path.join(home, rest)
        return Path(os.path.normpath(base / value))

    def done(self) -> None:
        """Report every key that no getter asked for, with the allowed keys and the nearest one."""
        for raw in self.data:
            name = str(raw)
            if name in self.known:
                continue
            if self.where == "http" and name.lower() in ("token", "http_token", "bearer"):
                self.problem(name, _HTTP_TOKEN_REFUSED)
            elif name.lower().replace("-", "_") in _SECRET_NAMES:
                self.problem(name, _KEY_REFUSED)
            elif self.where == "s3" and name.lower().startswith("aws_"):
                self.problem(name, _AWS_REFUSED)
            elif self.where == "state" and "password" in name.lower():
                self.problem(name, _DB_PASSWORD_REFUSED)
            else:
                near = difflib.get_close_matches(name, self.known, n=1)
                hint = f' (did you mean "{near[0]}"?)' if near else ""
                self.problem(name, f"unknown key{hint}; allowed keys: {', '.join(self.known)}")


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _leaves(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every non-container value under ``value``, with its dotted path."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{where}[{i}]")
    else:
        yield where, value


def _jsonable(value: Any) -> bool:
    # Defaults end up in a JSON request body: TOML dates and non-finite floats cannot.
    return isinstance(value, str | bool | int) or (isinstance(value, float) and _number(value) is not None)
