"""A request file as a file: its name, its bytes and its parse.

What a file name in an inbox is (request, control file, media, or to be ignored), the request name it
gives, and whether a name can be used as a file base name; then reading a request file without opening what
is not a small regular file, parsing it as strict JSON (duplicate keys found, numbers finite) or TOML within
the limits of :mod:`runwatch.requestlimits`, and scanning the result for what JSON cannot carry, for depth
and for size. The inbox watcher needs only the names, and none of this needs the catalogue, so it stands
apart from building a :class:`runwatch.request.Request`.
"""

from __future__ import annotations

import codecs
import json
import os
import stat
import tomllib
from datetime import date, time
from pathlib import Path
from typing import Any, Literal

from runwatch.catalog import PathT
from runwatch.requestlimits import (
    MAX_DEPTH,
    MAX_ENTRIES,
    MAX_NUMBER_CHARS,
    MAX_REQUEST_BYTES,
    LongNumber,
    NotFinite,
    finite,
    json_hooks,
    prescan_json,
    prescan_toml,
    too_many,
)
from runwatch.requestproblems import Problems, fail, show

__all__ = [
    "CONTROL_SUFFIXES",
    "MAX_DEPTH",
    "MAX_ENTRIES",
    "MAX_NAME",
    "MAX_REQUEST_BYTES",
    "MEDIA_SUFFIXES",
    "REQUEST_SUFFIXES",
    "classify",
    "is_ignored",
    "is_utf8",
    "name_problem",
    "parse",
    "read",
    "request_name",
    "scan",
]

REQUEST_SUFFIXES = (".json", ".toml")
CONTROL_SUFFIXES = (".cancel", ".approve")
MEDIA_SUFFIXES: frozenset[str] = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".png",
        ".webp",
        ".mp4",
        ".m4v",
        ".mov",
        ".webm",
        ".ogv",
        ".mp3",
        ".wav",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".m4a",
        ".aac",
    }
)
_PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".download")

MAX_NAME = 200
# Characters a name must not hold: separators and their look-alikes, and bidi controls that disguise a name.
_SLASHES = frozenset("/\\\u2044\u2215\u2216\u29f8\u29f9\ufe68\uff0f\uff3c")
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


# -- names ------------------------------------------------------------------------------------------------


def is_ignored(name: str) -> bool:
    """Names that are being written or are not for runwatch: dotfiles, ``~`` files, partial downloads."""
    return name.startswith((".", "~")) or name.lower().endswith(_PARTIAL_SUFFIXES)


def classify(name: str, accept_media: bool) -> Literal["request", "control", "media", "ignored", "other"]:
    """What a file name in an inbox is; bare media only count when the inbox accepts them."""
    if is_ignored(name):
        return "ignored"
    suffix = os.path.splitext(name)[1].lower()
    if suffix in REQUEST_SUFFIXES:
        return "request"
    if suffix in CONTROL_SUFFIXES:
        return "control"
    if suffix in MEDIA_SUFFIXES and accept_media:
        return "media"
    return "other"  # media named by a request travel with it


def request_name(path: Path) -> str:
    """The request's name: the file name without ``.json``/``.toml`` (or a control or media suffix)."""
    stem, suffix = os.path.splitext(path.name)
    known = suffix.lower() in (*REQUEST_SUFFIXES, *CONTROL_SUFFIXES) or suffix.lower() in MEDIA_SUFFIXES
    return stem if known and stem else path.name


def name_problem(name: str) -> str | None:
    """Why a name cannot be used as a file base name, or None."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8 text"
    if not name or name in (".", ".."):
        return f"{json.dumps(name)} cannot be a file name"
    if len(name) > MAX_NAME or size > MAX_NAME:
        return f"is too long ({size} bytes); at most {MAX_NAME} characters and bytes"
    for char in name:
        if char in _SLASHES:
            return f'must not contain "/", "\\" or a look-alike (U+{ord(char):04X})'
        if char in _BIDI or ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 or char in "\u2028\u2029":
            return f"must not contain control characters (U+{ord(char):04X})"
    return None


# -- reading and parsing ----------------------------------------------------------------------------------


class _Duplicates(dict[str, Any]):
    """An object in which some key appeared more than once (found later with its path)."""

    duplicates: list[str]


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    dups: list[str] = []
    for key, value in pairs:
        if key in out and key not in dups:
            dups.append(key)
        out[key] = value
    if not dups:
        return out
    marked = _Duplicates(out)
    marked.duplicates = dups
    return marked


def read(path: Path) -> bytes:
    """The file's bytes; refuses what is not a small regular file without opening it."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:  # renamed away or not there yet: look again later
        raise fail(path, "", "file not found", incomplete=True) from exc
    except OSError as exc:
        raise fail(path, "", f"cannot be read: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise fail(path, "", "is not a regular file")
    if st.st_size > MAX_REQUEST_BYTES:
        raise fail(path, "", f"is {st.st_size} bytes; a request file is at most 1 MiB (this is not a request)")
    try:
        # O_NONBLOCK: should the file be swapped for a FIFO after the stat, the open must not hang.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise fail(path, "", "is not a regular file")
            data = fh.read(MAX_REQUEST_BYTES + 1)
    except OSError as exc:
        raise fail(path, "", f"cannot be read: {exc.strerror}") from exc
    if len(data) > MAX_REQUEST_BYTES:
        raise fail(path, "", "is larger than 1 MiB; a request file is at most 1 MiB (this is not a request)")
    return data


def parse(path: Path, data: bytes, fmt: Literal["json", "toml"]) -> dict[str, Any]:
    """The top-level object; a syntax error is ``incomplete`` (the file may still be being written).

    Bounded in time and memory whatever the file holds (see :mod:`runwatch.requestlimits`).
    """
    if data.startswith(codecs.BOM_UTF8):  # editors on Windows add one
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise fail(path, "", f"is not valid UTF-8 at line {line}, column {column}", incomplete=True) from exc
    try:
        if fmt == "toml":
            if why := prescan_toml(text):
                raise fail(path, "", why)
            return tomllib.loads(text, parse_float=finite)
        if why := prescan_json(text):
            raise fail(path, "", why)
        value = json.loads(text, **json_hooks(_pairs))
    except NotFinite as exc:
        raise fail(path, "", f"{exc} is not allowed: numbers must be finite") from exc
    except RecursionError as exc:
        raise fail(path, "", f"is nested too deeply; at most {MAX_DEPTH} levels") from exc
    except tomllib.TOMLDecodeError as exc:
        raise fail(path, "", f"is not valid TOML: {exc}", incomplete=True) from exc
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise fail(path, "", f"is not valid JSON: {exc.msg} at {where}", incomplete=True) from exc
    except ValueError as exc:  # what the parsers let through, e.g. an integer too long to convert
        raise fail(path, "", f"cannot be read as {fmt.upper()}: {exc}") from exc
    if not isinstance(value, dict):
        kind = "a list" if isinstance(value, list) else "null" if value is None else f"the value {show(value)}"
        raise fail(path, "", f"must hold a JSON object at the top level, not {kind}")
    return value


def scan(value: Any, problems: Problems) -> bool:
    """Duplicate keys, values JSON cannot carry, depth and size, without recursion.

    False when the value must go no further: too deep or too big to walk, or holding text that is not text
    or a number that is not one.
    """
    fatal = False
    entries = 0
    stack: list[tuple[Any, PathT, int]] = [(value, (), 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict | list) and depth > MAX_DEPTH:
            problems.add(path, f"is nested too deeply; at most {MAX_DEPTH} levels")
            return False
        if isinstance(item, dict | list):
            entries += len(item)  # counted before anything is built for its children
            if entries > MAX_ENTRIES:
                problems.add("", too_many())
                return False
        if isinstance(item, dict):
            for key in getattr(item, "duplicates", ()):
                problems.add((*path, key), f"the key {show(key)} appears more than once")
            children: list[tuple[str | int, Any]] = list(item.items())
        elif isinstance(item, list):
            children = list(enumerate(item))
        else:
            if isinstance(item, date | time):
                problems.add(path, "dates and times cannot be sent to the API; write it as a quoted string")
            elif isinstance(item, str) and not is_utf8(item):
                problems.add(path, "holds an unpaired UTF-16 surrogate, which is not text")
                fatal = True
            elif isinstance(item, LongNumber):
                problems.add(path, f"is a number written with {item.chars} characters; at most {MAX_NUMBER_CHARS}")
                fatal = True
            continue
        for key, child in reversed(children):
            if isinstance(key, str) and not is_utf8(key):
                problems.add(path, "a key holds an unpaired UTF-16 surrogate, which is not text")
                fatal = True
            stack.append((child, (*path, key), depth + 1))
    return not fatal


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
