"""What a request file may cost to judge: the limits, and how they hold before and while parsing.

Anyone who can write to an inbox can drop a file in it, and the inbox's worker judges its files one at a
time, so no file may cost much to judge. The stdlib parsers do not promise that: ``tomllib`` builds a key of
*n* dotted parts in time and memory quadratic in *n* (a 40 KB line of ``a.a.a…`` takes it 1.5 GB), reads a
hexadecimal integer of any length, and gives up on long decimal ones with a bare ``ValueError``. So:

* before parsing, the size (:data:`MAX_REQUEST_BYTES`), then a pre-scan of the text with its strings (and
  TOML's comments) set aside: more ``,`` and ``:`` (JSON) or ``=`` and ``,`` (TOML) than twice
  :data:`MAX_ENTRIES` stop the file before the parser builds anything; for TOML also a dotted key or table
  header of more than :data:`MAX_DEPTH` parts, more key parts written than :data:`MAX_ENTRIES`, or a number
  written with more than :data:`MAX_NUMBER_CHARS` characters. A string is found exactly as the parser finds
  it (an unterminated one runs to the end of its line or of the file, where the parser stops too), so
  nothing the parser reads escapes the pre-scan;
* while parsing JSON (:func:`json_hooks`): a number's text is measured before it is converted, and ``NaN``
  and ``Infinity`` are refused;
* after parsing, the one walk over the value (:func:`runwatch.requestfile.scan`) checks depth, keys and list
  items, long numbers (with their path) and text that is not valid Unicode.

Every pass here is a C-level scan (``str.count``, regular expressions without backtracking) or a loop over at
most :data:`MAX_ENTRIES` items, so the pre-scan of a 1 MiB file takes tens of milliseconds, and what the parser
is then handed is bounded (``bench/hostile.py`` measures each shape of bomb; the slowest left is 1 MiB of
string escapes, which tomllib reads one by one in under 200 ms).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "MAX_ENTRIES",
    "MAX_NUMBER_CHARS",
    "MAX_REQUEST_BYTES",
    "LongNumber",
    "NotFinite",
    "finite",
    "json_hooks",
    "prescan_json",
    "prescan_toml",
    "too_many",
]

MAX_REQUEST_BYTES = 1 << 20
#: Levels of objects/tables and lists; a TOML dotted key or table header has at most this many parts.
MAX_DEPTH = 32
#: Keys and list items in one file, counted together at every depth (each part of a TOML dotted key or
#: table header counts, as written).
MAX_ENTRIES = 10_000
#: Characters of one number as written (digits, sign, point, exponent, underscores).
MAX_NUMBER_CHARS = 100

# TOML strings as tomllib reads them; each alternative ends at its closing quotes, or, unterminated, at the
# end of its line (one-line strings) or of the text (multi-line ones). Possessive, so never re-scanned.
_TOML_SKIP = re.compile(
    r'"""(?:[^"\\]++|\\.|"(?!""))*+(?:"""(?:""|")?|\Z)'
    r"|'''(?:[^']++|'(?!''))*+(?:'''(?:''|')?|\Z)"
    r'|"(?:[^"\\\n]++|\\.)*+(?:"|(?=\n)|\Z)'
    r"|'[^'\n]*+(?:'|(?=\n)|\Z)"
    r"|\#[^\n]*+",
    re.DOTALL,
)
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\Z)', re.DOTALL)
# A key before "=": what follows the line start, "{" or "," up to the "=". Anchored after a structural
# character, so a long run without "=" is scanned once, not once per position.
_KEY = re.compile(r"(?<![^\n{},\[\]])[^\n{},=\[\]]*+=")
_HEADER = re.compile(r"^[ \t]*+\[\[?+([^\]\n,={}\[]*+)", re.MULTILINE)
# A number (or a bare key that starts like one) too long: a digit or sign not preceded by a bare-key character.
_LONG_NUMBER = re.compile(rf"(?<![\w.+-])[+-]?+[0-9][\w.:+-]{{{MAX_NUMBER_CHARS},}}")


class NotFinite(ValueError):
    """``NaN``, ``Infinity`` or a number too large for a float."""


class LongNumber:
    """A JSON number whose text is longer than :data:`MAX_NUMBER_CHARS`: kept unconverted, so that the walk
    after parsing reports it with its path (converting 5,000 digits costs time, or fails outright)."""

    __slots__ = ("chars",)

    def __init__(self, text: str) -> None:
        self.chars = len(text)

    def __repr__(self) -> str:
        return f"<a number of {self.chars} characters>"


def prescan_json(text: str) -> str | None:
    """Why ``text`` may not be handed to ``json``, or None: more ``,`` and ``:`` outside strings than twice
    :data:`MAX_ENTRIES` (every member has one ``:``, every ``,`` parts two members or two items).

    Counted before parsing because the parser builds first and asks later: an object's members reach
    ``object_pairs_hook`` only once all are built, and lists have no hook at all (a 1 MiB ``[{},{},…]``
    costs 50 MB before anything could count it).
    """
    skeleton = _JSON_STRING.sub('""', text)
    return too_many() if skeleton.count(",") + skeleton.count(":") > 2 * MAX_ENTRIES else None


def prescan_toml(text: str) -> str | None:
    """Why ``text`` may not be handed to ``tomllib``, or None: the bounds above, on its strings-free skeleton."""
    skeleton = _TOML_SKIP.sub('""', text)
    # Every "=" is a key and every "," parts two items or two members; deep "[[[..." ends in tomllib's
    # RecursionError, cheaply, and table headers are counted with the key parts below.
    if skeleton.count("=") + skeleton.count(",") > 2 * MAX_ENTRIES:
        return too_many()
    if _LONG_NUMBER.search(skeleton):
        return f"holds a number (or bare key) longer than {MAX_NUMBER_CHARS} characters"
    parts = 0
    for match in itertools.chain(_KEY.finditer(skeleton), _HEADER.finditer(skeleton)):
        dots = match.group(0).count(".")
        if dots >= MAX_DEPTH:
            return f"has a dotted key of {dots + 1} parts; at most {MAX_DEPTH}"
        parts += dots + 1
        if parts > MAX_ENTRIES:
            return too_many()
    return None


def too_many() -> str:
    return f"has more than {MAX_ENTRIES:,} keys and list items; at most {MAX_ENTRIES:,}"


def json_hooks(pairs: Callable[[list[tuple[str, Any]]], dict[str, Any]]) -> dict[str, Any]:
    """Keyword arguments for ``json.loads``: ``pairs`` builds each object (it marks duplicate keys), a number's
    text is measured before it is converted, and ``NaN``/``Infinity`` are refused."""
    return {
        "object_pairs_hook": pairs,
        "parse_int": _json_int,
        "parse_float": _json_float,
        "parse_constant": _refuse_constant,
    }


def _json_int(text: str) -> int | LongNumber:
    return LongNumber(text) if len(text) > MAX_NUMBER_CHARS else int(text)


def _json_float(text: str) -> float | LongNumber:
    if len(text) > MAX_NUMBER_CHARS:
        return LongNumber(text)
    return finite(text)


def finite(text: str) -> float:
    """``parse_float`` for both formats: a float, or :class:`NotFinite`."""
    value = float(text)
    if not math.isfinite(value):
        raise NotFinite(text)
    return value


def _refuse_constant(text: str) -> Any:
    raise NotFinite(text)
