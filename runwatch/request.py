"""Request files: parse, defaults, aliases, the ``runwatch`` table, local media, pre-flight validation.

A request is ``NAME.json`` or ``NAME.toml`` (or, in an inbox with ``accept_media``, a bare media file).
:func:`load_request` turns one into a :class:`Request` or raises one :class:`RequestError` listing every
problem, each with its field path, what was wrong and what is allowed. Nothing here spends money, writes a
file or runs anything: it reads the request, ``stat``s the media it names and reads their headers.

Local media are checked before anything is uploaded: a path is taken relative to the request file's folder
and must resolve (``..`` and symlinks followed) to a regular, non-empty file inside ``root`` whose content
(not its name) is of the kind the field wants. FIFOs, sockets and devices are recognised by ``lstat`` and
never opened.
"""

from __future__ import annotations

import codecs
import copy
import difflib
import functools
import json
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from typing import Any, Literal, NoReturn, Protocol

from runwatch.catalog import Catalog, Endpoint, Issue, format_path, load_catalog
from runwatch.errors import Problem, RequestError
from runwatch.mediaprobe import probe_file

__all__ = [
    "CONTROL_SUFFIXES",
    "MEDIA_SUFFIXES",
    "REQUEST_SUFFIXES",
    "InboxLike",
    "LocalMedia",
    "Request",
    "RequestOptions",
    "bare_media_request",
    "classify",
    "is_ignored",
    "load_request",
    "request_name",
]

REQUEST_SUFFIXES = (".json", ".toml")
CONTROL_SUFFIXES = (".cancel", ".approve")
MEDIA_SUFFIXES: frozenset[str] = frozenset({
    ".jpg", ".jpeg", ".png", ".webp",
    ".mp4", ".m4v", ".mov", ".webm", ".ogv",
    ".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac",
})
_PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".download")

MAX_REQUEST_BYTES = 1 << 20
MAX_MEDIA_BYTES = 200 << 20  # Runway's upload limit, the largest any transport takes
MAX_DEPTH = 32
MAX_NAME = 200
PRIORITY_RANGE = (-1_000_000, 1_000_000)
_OPTION_KEYS = ("name", "priority", "max_credits")
_PASS_SCHEMES = ("https://", "data:", "runway://")
_URI_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://|^(data|file):", re.IGNORECASE)
_SNAKE_RE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$")
_KINDS = ("image", "video", "audio")
# What Runway takes per kind, by content type (as the probe names them); GIF, AVIF, HEIC and MKV are not.
_ACCEPTED_TYPES: dict[str, frozenset[str]] = {
    "image": frozenset({"image/jpeg", "image/png", "image/webp"}),
    "video": frozenset({"video/mp4", "video/quicktime", "video/webm", "video/ogg"}),
    "audio": frozenset({"audio/mpeg", "audio/mp4", "audio/wav", "audio/flac", "audio/ogg", "audio/webm"}),
}
# Characters a name must not hold: separators and their look-alikes, and bidi controls that disguise a name.
_SLASHES = frozenset("/\\\u2044\u2215\u2216\u29f8\u29f9\ufe68\uff0f\uff3c")
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

PathT = tuple[str | int, ...]


class InboxLike(Protocol):
    """What a request needs of its inbox (``runwatch.config.InboxConfig`` fits)."""

    @property
    def path(self) -> Path: ...
    @property
    def endpoint(self) -> str | None: ...
    @property
    def defaults(self) -> Mapping[str, Any]: ...
    @property
    def media_field(self) -> str: ...
    @property
    def accept_media(self) -> bool: ...


@dataclass(frozen=True)
class RequestOptions:
    """The request's own ``runwatch`` table."""

    name: str
    priority: int = 0
    max_credits: float | None = None


@dataclass(frozen=True)
class LocalMedia:
    """A media field whose value is a file in the inbox, to be uploaded and replaced by a URI."""

    field: PathT
    rel: str
    file: Path  # fully resolved (symlinks followed), inside the resolved root
    kind: str
    size: int
    content_type: str | None


@dataclass(frozen=True)
class Request:
    """A parsed, validated request; ``body`` still holds local media paths as written."""

    name: str
    source: Path
    format: Literal["json", "toml"]
    endpoint: str
    model: str | None
    body: dict[str, Any]
    media: tuple[LocalMedia, ...]
    options: RequestOptions
    known_model: bool

    def with_uris(self, uris: Mapping[PathT, str]) -> dict[str, Any]:
        """A copy of ``body`` with every local media field replaced by its URI (KeyError if one is missing)."""
        body = copy.deepcopy(self.body)
        for media in self.media:
            if media.field not in uris:
                raise KeyError(f"no URI for local media field {format_path(media.field)}")
            target: Any = body
            for part in media.field[:-1]:
                target = target[part]
            target[media.field[-1]] = uris[media.field]
        return body


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


def _name_problem(name: str) -> str | None:
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


# -- problems ---------------------------------------------------------------------------------------------


class _Problems:
    """Problems collected so far; ``waiting`` counts those that go away once copying ends (missing files)."""

    def __init__(self) -> None:
        self.items: list[Problem] = []
        self.waiting = 0

    def add(self, path: PathT | str, message: str, *, waiting: bool = False) -> None:
        where = path if isinstance(path, str) else format_path(path)
        self.items.append(Problem(where, message))
        self.waiting += waiting

    def raise_if_any(self, source: Path) -> None:
        if self.items:
            self.fail(source)

    def fail(self, source: Path) -> NoReturn:
        raise RequestError(str(source), list(self.items), incomplete=self.waiting == len(self.items))


def _show(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fail(source: Path, path: str, message: str, *, incomplete: bool = False) -> RequestError:
    return RequestError(str(source), [Problem(path, message)], incomplete=incomplete)


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


class _NotFinite(ValueError):
    pass


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


def _refuse_constant(text: str) -> Any:
    raise _NotFinite(text)


def _read(path: Path) -> bytes:
    """The file's bytes; refuses what is not a small regular file without opening it."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:  # renamed away or not there yet: look again later
        raise _fail(path, "", "file not found", incomplete=True) from exc
    except OSError as exc:
        raise _fail(path, "", f"cannot be read: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise _fail(path, "", "is not a regular file")
    if st.st_size > MAX_REQUEST_BYTES:
        raise _fail(path, "", f"is {st.st_size} bytes; a request file is at most 1 MiB (this is not a request)")
    try:
        # O_NONBLOCK: should the file be swapped for a FIFO after the stat, the open must not hang.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise _fail(path, "", "is not a regular file")
            data = fh.read(MAX_REQUEST_BYTES + 1)
    except OSError as exc:
        raise _fail(path, "", f"cannot be read: {exc.strerror}") from exc
    if len(data) > MAX_REQUEST_BYTES:
        raise _fail(path, "", "is larger than 1 MiB; a request file is at most 1 MiB (this is not a request)")
    return data


def _parse(path: Path, data: bytes, fmt: Literal["json", "toml"]) -> dict[str, Any]:
    """The top-level object; a parse failure is ``incomplete`` (the file may still be being written)."""
    if data.startswith(codecs.BOM_UTF8):  # editors on Windows add one
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _fail(path, "", f"is not valid UTF-8 at line {line}, column {column}", incomplete=True) from exc
    try:
        if fmt == "toml":
            return tomllib.loads(text, parse_float=_finite)
        value = json.loads(text, object_pairs_hook=_pairs, parse_float=_finite, parse_constant=_refuse_constant)
    except _NotFinite as exc:
        raise _fail(path, "", f"{exc} is not allowed: numbers must be finite") from exc
    except RecursionError as exc:
        raise _fail(path, "", f"is nested too deeply; at most {MAX_DEPTH} levels") from exc
    except tomllib.TOMLDecodeError as exc:
        raise _fail(path, "", f"is not valid TOML: {exc}", incomplete=True) from exc
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise _fail(path, "", f"is not valid JSON: {exc.msg} at {where}", incomplete=True) from exc
    if not isinstance(value, dict):
        kind = "a list" if isinstance(value, list) else "null" if value is None else f"the value {_show(value)}"
        raise _fail(path, "", f"must hold a JSON object at the top level, not {kind}")
    return value


def _scan(value: Any, problems: _Problems) -> bool:
    """Duplicate keys, values JSON cannot carry and depth, without recursion.

    False when the value must go no further: too deep to walk, or holding text that is not text.
    """
    fatal = False
    stack: list[tuple[Any, PathT, int]] = [(value, (), 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict | list) and depth > MAX_DEPTH:
            problems.add(path, f"is nested too deeply; at most {MAX_DEPTH} levels")
            return False
        if isinstance(item, dict):
            for key in getattr(item, "duplicates", ()):
                problems.add((*path, key), f"the key {_show(key)} appears more than once")
            children: list[tuple[str | int, Any]] = list(item.items())
        elif isinstance(item, list):
            children = list(enumerate(item))
        else:
            if isinstance(item, date | time):
                problems.add(path, "dates and times cannot be sent to the API; write it as a quoted string")
            elif isinstance(item, str) and not _utf8(item):
                problems.add(path, "holds an unpaired UTF-16 surrogate, which is not text")
                fatal = True
            continue
        for key, child in reversed(children):
            if isinstance(key, str) and not _utf8(key):
                problems.add(path, "a key holds an unpaired UTF-16 surrogate, which is not text")
                fatal = True
            stack.append((child, (*path, key), depth + 1))
    return not fatal


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _plain(value: Any) -> Any:
    """A deep copy of config values as plain JSON containers (read-only mappings and tuples included)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# -- the catalogue's types --------------------------------------------------------------------------------


def _object_fields(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields an object value may have under a type (every object option of a union together)."""
    if spec is None:
        return {}
    if spec["kind"] == "object":
        return dict(spec["fields"])
    out: dict[str, Any] = {}
    if spec["kind"] == "union":
        for option in spec["options"]:
            for name, field in _object_fields(option).items():
                out.setdefault(name, field)
    return out


def _items(spec: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The item type of a list value under a type."""
    if spec is None:
        return None
    if spec["kind"] == "array":
        items: Mapping[str, Any] = spec["items"]
        return items
    if spec["kind"] == "union":
        found = [i for o in spec["options"] if (i := _items(o)) is not None]
        return found[0] if len(found) == 1 else ({"kind": "union", "options": found} if found else None)
    return None


def _map_values(spec: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if spec is None:
        return None
    if spec["kind"] == "map":
        values: Mapping[str, Any] = spec["values"]
        return values
    if spec["kind"] == "union":
        return next((v for o in spec["options"] if (v := _map_values(o)) is not None), None)
    return None


def _spec_at(top: Mapping[str, Any], path: PathT) -> Mapping[str, Any] | None:
    spec: Mapping[str, Any] | None = top
    for part in path:
        if isinstance(part, int):
            spec = _items(spec)
        else:
            field = _object_fields(spec).get(part)
            spec = field["type"] if field else _map_values(spec)
        if spec is None:
            return None
    return spec


def _specs_at(spec: Mapping[str, Any], path: PathT) -> list[Mapping[str, Any]]:
    """Every type a value at ``path`` may have, following each option of every union."""
    kind = spec["kind"]
    if kind == "union":
        return [found for option in spec["options"] for found in _specs_at(option, path)]
    if not path:
        return [spec]
    part, rest = path[0], path[1:]
    if isinstance(part, int) and kind == "array":
        return _specs_at(spec["items"], rest)
    if isinstance(part, str) and kind == "object" and part in spec["fields"]:
        return _specs_at(spec["fields"][part]["type"], rest)
    if isinstance(part, str) and kind == "map":
        return _specs_at(spec["values"], rest)
    return []


def _media_kinds(spec: Mapping[str, Any]) -> set[str]:
    """Kinds of media a value of this type may be directly (through unions and lists, not objects)."""
    if spec["kind"] == "string":
        return {spec["media"]} if spec.get("media") else set()
    if spec["kind"] == "union":
        return set().union(*(_media_kinds(o) for o in spec["options"]))
    if spec["kind"] == "array":
        return _media_kinds(spec["items"])
    return set()


def _nested(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The field tables of every object reachable inside a type."""
    kind = spec["kind"]
    if kind == "object":
        return [spec["fields"]]
    if kind == "union":
        return [f for o in spec["options"] for f in _nested(o)]
    if kind == "array":
        return _nested(spec["items"])
    if kind == "map":
        return _nested(spec["values"])
    return []


@dataclass(frozen=True)
class _Names:
    """Field names of one endpoint's models (media names of the whole catalogue), for unknown models' bodies."""

    wire: frozenset[str]
    python: Mapping[str, str]  # snake_case -> wire
    media: Mapping[str, frozenset[str]]  # wire name of a media field -> the kinds it takes somewhere


@functools.lru_cache(maxsize=64)
def _endpoint_names(catalog: Catalog, endpoint: str) -> _Names:
    def collect(eps: list[Endpoint]) -> tuple[set[str], dict[str, str], dict[str, frozenset[str]]]:
        wire: set[str] = set()
        python: dict[str, str] = {}
        media: dict[str, set[str]] = {}
        tables = [m.fields for ep in eps for m in ep.models.values()]
        while tables:
            for name, field in tables.pop().items():
                wire.add(name)
                if field.get("python") and field["python"] != name:
                    python.setdefault(field["python"], name)
                if kinds := _media_kinds(field["type"]):
                    media.setdefault(name, set()).update(kinds)
                tables.extend(_nested(field["type"]))
        return wire, python, {k: frozenset(v) for k, v in media.items()}

    wire, python, media = collect([catalog.endpoints[endpoint]])
    # A new model may take media under a name only other endpoints use so far (videoUri, audioUri).
    _, _, everywhere = collect(list(catalog.endpoints.values()))
    return _Names(frozenset(wire), python, {**everywhere, **media})


# -- aliases and defaults ---------------------------------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _resolve_known(value: Any, spec: Mapping[str, Any] | None, path: PathT, problems: _Problems) -> Any:
    """A copy of ``value`` with the SDK's snake_case keys renamed to wire names, following the model's types."""
    if isinstance(value, dict):
        fields = _object_fields(spec)
        if fields:
            aliases = {f["python"]: w for w, f in fields.items() if f.get("python") and f["python"] != w}

            def wire_of(key: str) -> tuple[str, Mapping[str, Any] | None]:
                wire = key if key in fields else aliases.get(key, key)
                return wire, fields[wire]["type"] if wire in fields else None

            return _rename(value, wire_of, path, problems,
                           lambda v, s, p: _resolve_known(v, s, p, problems))
        values = _map_values(spec)  # a map's keys are data, never renamed
        return {k: _resolve_known(v, values, (*path, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        items = _items(spec)
        return [_resolve_known(v, items, (*path, i), problems) for i, v in enumerate(value)]
    return value


def _resolve_generic(value: Any, names: _Names, path: PathT, problems: _Problems) -> Any:
    """Aliases for a model the catalogue does not know: names the endpoint knows, else snake_case -> camelCase."""
    if isinstance(value, dict):
        def wire_of(key: str) -> tuple[str, Mapping[str, Any] | None]:
            if key in names.wire:
                return key, None
            if key in names.python:
                return names.python[key], None
            return (_camel(key) if _SNAKE_RE.match(key) else key), None

        return _rename(value, wire_of, path, problems, lambda v, s, p: _resolve_generic(v, names, p, problems))
    if isinstance(value, list):
        return [_resolve_generic(v, names, (*path, i), problems) for i, v in enumerate(value)]
    return value


def _rename(
    value: dict[str, Any],
    wire_of: Callable[[str], tuple[str, Mapping[str, Any] | None]],
    path: PathT,
    problems: _Problems,
    recurse: Callable[[Any, Mapping[str, Any] | None, PathT], Any],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, item in value.items():
        wire, spec = wire_of(key)
        if wire in out:
            problems.add((*path, wire), f"is given twice, as {_show(spelled[wire])} and {_show(key)}; "
                                        f"write it once, as {_show(wire)}")
            continue
        spelled[wire] = key
        out[wire] = recurse(item, spec, (*path, wire))
    return out


def _merge(under: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``under``; objects are merged key by key, everything else is replaced."""
    out = copy.deepcopy(under)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# -- validation messages ----------------------------------------------------------------------------------

_EXPECTED = {
    "string": "a string", "number": "a number", "int": "a whole number", "object": "an object",
    "array": "a list", "boolean": "true or false", "record": "an object", "null": "null",
}
_MISSING = object()


def _value_at(body: Any, path: PathT) -> Any:
    for part in path:
        if isinstance(body, str):
            return _MISSING
        try:
            body = body[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return body


def _describe(spec: Mapping[str, Any] | None, fallback: str = "another value") -> str:
    """What a type allows, in words."""
    if spec is None:
        return fallback
    kind = spec["kind"]
    if kind == "string":
        if spec.get("media"):
            return f"{_article(spec['media'])} (a file in the inbox, or an https://, runway:// or data: URI)"
        return "a string"
    if kind == "literal":
        values = [_show(v) for v in spec["values"]]
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
        shown.append(f"{name}: {_show(values[0])}" if len(values) == 1 else name)
    return "{" + ", ".join(shown) + "}"


def _article(kind: str) -> str:
    return {"image": "an image", "video": "a video", "audio": "an audio"}.get(kind, kind)


def _issue_problems(issue: Issue, body: dict[str, Any], top: Mapping[str, Any], problems: _Problems) -> None:
    """One catalogue issue as problems a person can act on: what was wrong and what is allowed."""
    code, path, extra = issue.code, issue.path, issue.extra
    value = _value_at(body, path)
    spec = _spec_at(top, path)
    if code == "unrecognized_keys":
        fields = sorted(_object_fields(spec))
        for key in extra.get("keys", ()):
            hint = difflib.get_close_matches(key, fields, 1)
            also = f"did you mean {_show(hint[0])}? " if hint else ""
            problems.add((*path, key), f"unknown field; {also}allowed here: {', '.join(fields)}")
    elif code == "invalid_value":
        allowed = ", ".join(_show(v) for v in extra.get("values", ()))
        problems.add(path, f"{_show(value)} is not allowed; allowed: {allowed}")
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
            problems.add(path, f"{_show(value)} is too {'big' if big else 'small'}; it must be {limit}")
    elif code == "invalid_type":
        expected = _describe(spec, _EXPECTED.get(str(extra.get("expected")), str(extra.get("expected"))))
        if value is _MISSING:
            problems.add(path, f"is required; expected {expected}")
        else:
            problems.add(path, f"{_show(value)} has the wrong type; expected {expected}")
    elif code == "invalid_union":
        problems.add(path, f"{_show(value)} does not fit; expected {_describe(spec)}")
    else:
        problems.add(path, issue.message)


# -- local media ------------------------------------------------------------------------------------------


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class _MediaChecker:
    """Checks media values and collects the local files among them."""

    def __init__(self, source: Path, root: Path, problems: _Problems, *, bare: bool) -> None:
        self.folder = os.path.abspath(source.parent)
        self.root_lexical = os.path.abspath(root)
        self.root = os.path.realpath(root)
        self.problems = problems
        self.bare = bare
        try:
            self.source_stat: os.stat_result | None = os.stat(source)
        except OSError:
            self.source_stat = None
        self.found: list[LocalMedia] = []

    def check(self, field: PathT, value: Any, kinds: frozenset[str]) -> None:
        """``kinds``: what the field takes (empty: any media, for fields of models the catalogue lacks)."""
        if not isinstance(value, str):
            return  # the body's validation reports the type
        wants = " or ".join(_article(k) for k in sorted(kinds)) if kinds else "a media file"
        lowered = value.lower()
        if lowered.startswith(_PASS_SCHEMES):
            return
        scheme = _URI_RE.match(value)
        if scheme:
            name = (scheme.group(1) or scheme.group(2)).lower()
            why = "Runway only fetches https:// URLs" if name == "http" else f'the "{name}" scheme is not supported'
            self.problems.add(field, f"{why}; use https://, a runway:// or data: URI, or a file in the inbox")
            return
        self._local(field, value, kinds, wants)

    def _local(self, field: PathT, value: str, kinds: frozenset[str], wants: str) -> None:
        add = self.problems.add
        if not value:
            add(field, f"is empty; expected {wants}: a file in the inbox or an https://, runway:// or data: URI")
            return
        if "\0" in value:
            add(field, "contains a NUL character")
            return
        if os.path.isabs(value):
            add(field, f"{_show(value)} is an absolute path; write it relative to the request file's folder")
            return
        joined = os.path.join(self.folder, value)
        real = os.path.realpath(joined)
        if not _inside(real, self.root):
            lexical = os.path.normpath(joined)
            how = ("leads through a symlink to" if _inside(lexical, self.root_lexical) or _inside(lexical, self.root)
                   else "points to")
            add(field, f"{_show(value)} {how} a place outside the inbox; only files inside it can be sent")
            return
        try:
            st = os.lstat(real)  # ``real`` has no symlinks left, so lstat sees the file itself
        except FileNotFoundError:
            add(field, f"file not found: {_show(value)}", waiting=True)
            return
        except OSError as exc:
            add(field, f"{_show(value)} cannot be read: {exc.strerror}")
            return
        what = _file_type(st.st_mode)
        if what:
            add(field, f"{_show(value)} is {what}; expected {wants} file")
            return
        if self.source_stat is not None and not self.bare and os.path.samestat(st, self.source_stat):
            add(field, f"{_show(value)} is the request file itself; expected {wants} file")
            return
        if st.st_size == 0:
            add(field, f"{_show(value)} is empty (0 bytes)")
            return
        if st.st_size > MAX_MEDIA_BYTES:
            add(field, f"{_show(value)} is {st.st_size} bytes; at most 200 MiB can be uploaded")
            return
        try:
            info = probe_file(real)
        except OSError as exc:
            add(field, f"{_show(value)} cannot be read: {exc.strerror}")
            return
        if info is None:
            add(field, f"{_show(value)} is not a recognised image, video or audio file (its content was checked, "
                       f"not its name); expected {wants} file")
            return
        if kinds and info.kind not in kinds:
            add(field, f"{_show(value)} is {_article(info.kind)} file ({info.content_type}); "
                       f"this field takes {wants} file")
            return
        if info.content_type not in _ACCEPTED_TYPES[info.kind]:
            accepted = ", ".join(sorted(_ACCEPTED_TYPES[info.kind]))
            add(field, f"{_show(value)} is {info.content_type}, which Runway does not accept; use {accepted}")
            return
        self.found.append(LocalMedia(field, value, Path(real), info.kind, st.st_size, info.content_type))


def _file_type(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISLNK(mode):  # left unresolved by realpath: a symlink loop
        return "a symlink that cannot be resolved"
    return "not a regular file"


def _guess_media(body: dict[str, Any], names: _Names) -> list[tuple[PathT, str, frozenset[str]]]:
    """Media values of a body for a model the catalogue does not know, in document order: strings under a
    key that is a media field somewhere in the catalogue, and ``uri`` members of objects."""
    out: list[tuple[PathT, str, frozenset[str]]] = []

    def walk(value: Any, path: PathT, kinds: frozenset[str] | None, inherited: frozenset[str]) -> None:
        if isinstance(value, str) and kinds is not None:
            out.append((path, value, kinds))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*path, i), kinds, inherited)
        elif isinstance(value, dict):
            for key, item in value.items():
                sub: frozenset[str] | None = names.media.get(key)
                if key == "uri":  # {type: "audio", uri} says its kind; else the field it sits under does
                    kind = value.get("type")
                    sub = frozenset({kind}) if kind in _KINDS else inherited or sub or frozenset()
                walk(item, (*path, key), sub, sub if sub is not None else inherited)

    walk(body, (), None, frozenset())
    return out


# -- building a request -----------------------------------------------------------------------------------


def _options(table: Any, default_name: str, problems: _Problems, *, bare: bool) -> RequestOptions:
    if table is None:
        table = {}
    if not isinstance(table, dict):
        problems.add("runwatch", f"must be a table/object with {', '.join(_OPTION_KEYS)}; got {_show(table)}")
        table = {}
    for key in table:
        if key not in _OPTION_KEYS:
            problems.add(("runwatch", key), f"unknown option; allowed: {', '.join(_OPTION_KEYS)}")
    name = table.get("name", default_name)
    if not isinstance(name, str):
        problems.add(("runwatch", "name"), f"{_show(name)} must be a string")
        name = default_name
    if why := _name_problem(name):
        where = "" if "name" in table else " (taken from the file name" + (")" if bare else
                                                                            "; set runwatch.name instead)")
        problems.add(("runwatch", "name"), f"{_show(name)} {why}{where}")
    priority = table.get("priority", 0)
    lo, hi = PRIORITY_RANGE
    if isinstance(priority, float) and priority.is_integer():
        priority = int(priority)
    if not isinstance(priority, int) or isinstance(priority, bool) or not lo <= priority <= hi:
        problems.add(("runwatch", "priority"), f"{_show(priority)} is not allowed; expected a whole number "
                                               f"from {lo} to {hi} (higher goes first)")
        priority = 0
    credits = table.get("max_credits")
    ok = isinstance(credits, int | float) and not isinstance(credits, bool) and math.isfinite(credits) and credits > 0
    if credits is not None and not ok:
        problems.add(("runwatch", "max_credits"), f"{_show(credits)} is not allowed; expected a number above 0")
        credits = None
    return RequestOptions(name, priority, float(credits) if credits is not None else None)


def _endpoint(value: Any, catalog: Catalog, problems: _Problems) -> str | None:
    allowed = ", ".join(sorted(catalog.endpoints))
    if value is None:
        problems.add("endpoint", f"is required: the request names none and its inbox has none; allowed: {allowed}")
        return None
    if not isinstance(value, str) or value not in catalog.endpoints:
        problems.add("endpoint", f"{_show(value)} is not an endpoint; allowed: {allowed}")
        return None
    return value


def _build(
    *,
    source: Path,
    root: Path,
    fmt: Literal["json", "toml"],
    data: dict[str, Any],
    default_name: str,
    inbox: InboxLike,
    catalog: Catalog | None,
    unknown_models: str,
    problems: _Problems,
    bare_field: str | None = None,
) -> Request:
    if unknown_models not in ("pass", "reject"):
        raise ValueError(f"unknown_models must be 'pass' or 'reject', not {unknown_models!r}")
    catalog = catalog or load_catalog()
    file_body = {k: v for k, v in data.items() if k not in ("endpoint", "runwatch")}
    defaults: dict[str, Any] = _plain(inbox.defaults)
    options = _options(data.get("runwatch"), default_name, problems, bare=bare_field is not None)
    endpoint = _endpoint(data.get("endpoint", inbox.endpoint), catalog, problems)
    if endpoint is None:  # without one nothing else can be checked
        problems.fail(source)
    ep = catalog.endpoints[endpoint]
    model_name = file_body.get("model", defaults.get("model", _MISSING))
    model = ep.models.get(model_name) if isinstance(model_name, str) else None
    media = _MediaChecker(source, root, problems, bare=bare_field is not None)
    known_model = model is not None
    names = _endpoint_names(catalog, endpoint)
    if model is not None:
        top = {"kind": "object", "fields": model.fields}
        body = _merge(_resolve_known(defaults, top, (), problems), _resolve_known(file_body, top, (), problems))
        validation = catalog.validate(endpoint, body)
        for issue in validation.issues:
            _issue_problems(issue, body, top, problems)
        refs = [(ref.path, ref.value, frozenset({ref.kind})) for ref in validation.media]
        # Media under a union that failed validation are not reported by it; check them now anyway,
        # so a second attempt does not bring up new problems.
        seen = {path for path, _, _ in refs}
        for path, value, _ in _guess_media(body, names):
            found = set().union(*(_media_kinds(spec) for spec in _specs_at(top, path)))
            if path not in seen and found:
                refs.append((path, value, frozenset(found)))
    else:
        body = _merge(_resolve_generic(defaults, names, (), problems),
                      _resolve_generic(file_body, names, (), problems))
        models = ", ".join(sorted(ep.models))
        elsewhere = sorted(e for e, other in catalog.endpoints.items() if model_name in other.models)
        if model_name is _MISSING:
            problems.add("model", f"is required; models of {endpoint}: {models}")
        elif not isinstance(model_name, str):
            problems.add("model", f"{_show(model_name)} must be a string; models of {endpoint}: {models}")
        elif elsewhere:  # a known model on the wrong endpoint is surely a mistake, not a new model
            problems.add("model", f"{_show(model_name)} is a model of {', '.join(elsewhere)}, not of {endpoint}; "
                                  f"models of {endpoint}: {models}")
        elif unknown_models == "reject":
            problems.add("model", f"{_show(model_name)} is not a model runwatch knows for {endpoint}; "
                                  f"known models: {models}")
        refs = _guess_media(body, names)
    for path, value, kinds in refs:
        media.check(path, value, kinds)
    if bare_field is not None:  # a file name sent as, say, the prompt text would be money spent on nonsense
        wire = (model.wire_name(bare_field) if model else names.python.get(bare_field)) or bare_field
        if not any(path == (wire,) for path, _, _ in refs):
            problems.add(wire, f"is the inbox's media_field, but {_show(model_name)} on {endpoint} "
                               f"takes no media file in it")
    problems.raise_if_any(source)
    return Request(
        name=options.name, source=source, format=fmt, endpoint=endpoint,
        model=model_name if isinstance(model_name, str) else None, body=body, media=tuple(media.found),
        options=options, known_model=known_model,
    )


def _check_source(path: Path, root: Path) -> None:
    real = os.path.realpath(path)
    if not _inside(real, os.path.realpath(root)):
        raise _fail(path, "", "resolves to a place outside the inbox; only files inside it are read")


def load_request(
    path: Path,
    *,
    root: Path,
    inbox: InboxLike,
    catalog: Catalog | None = None,
    unknown_models: str = "pass",
) -> Request:
    """Read, check and validate one request file (a bare media file is handed to :func:`bare_media_request`).

    Raises :class:`RequestError` with every problem; ``incomplete`` when the file cannot be parsed or the
    only problems are media files not found yet (either may still be being copied).
    """
    suffix = path.suffix.lower()
    if suffix not in REQUEST_SUFFIXES and suffix in MEDIA_SUFFIXES:
        return bare_media_request(path, root=root, inbox=inbox, catalog=catalog, unknown_models=unknown_models)
    _check_source(path, root)
    fmt: Literal["json", "toml"] = "toml" if suffix == ".toml" else "json"
    data = _parse(path, _read(path), fmt)
    problems = _Problems()
    if not _scan(data, problems):
        problems.fail(path)
    return _build(source=path, root=root, fmt=fmt, data=data, default_name=request_name(path), inbox=inbox,
                  catalog=catalog, unknown_models=unknown_models, problems=problems)


def bare_media_request(
    path: Path,
    *,
    root: Path,
    inbox: InboxLike,
    catalog: Catalog | None = None,
    unknown_models: str = "pass",
) -> Request:
    """A request for a media file dropped alone: the inbox's defaults with the file in its ``media_field``."""
    _check_source(path, root)
    if not _utf8(path.name):  # the name goes into the body, and a body must be text
        raise _fail(path, "runwatch.name", "the file name is not valid UTF-8 text")
    field = inbox.media_field
    data = {field: path.name}
    return _build(source=path, root=root, fmt="json", data=data, default_name=request_name(path), inbox=inbox,
                  catalog=catalog, unknown_models=unknown_models, problems=_Problems(), bare_field=field)
