"""Request files: from a file in an inbox to a :class:`Request` ready to send, or every reason it is not.

A request is ``NAME.json`` or ``NAME.toml`` (or, in an inbox with ``accept_media``, a bare media file).
:func:`load_request` turns one into a :class:`Request` or raises one :class:`RequestError` listing every
problem, each with its field path, what was wrong and what is allowed. Nothing here spends money, writes a
file or runs anything: it reads the request, ``stat``s the media it names and reads their headers.

This module holds the request's types and the order of the steps; each step is a module of its own:

* :mod:`runwatch.requestfile`: file names, reading and strict parsing (JSON or TOML), depth and duplicates;
* :mod:`runwatch.aliases`: SDK spellings to wire names, and the inbox's defaults under the file's values;
* :mod:`runwatch.localmedia`: which values are files in the inbox, and the containment rules they must pass;
* :mod:`runwatch.requestproblems`: the problems collected, and the catalogue's issues in a person's words;
* :mod:`runwatch.catalogtypes`: the questions the steps ask of the catalogue's type specs.

The names other modules use from those (``classify``, ``LocalMedia``...) are importable from here too.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from runwatch.aliases import merge, plain, resolve_generic, resolve_known
from runwatch.catalog import Catalog, format_path, load_catalog
from runwatch.catalog import PathT as PathT
from runwatch.catalogtypes import endpoint_names, media_kinds, specs_at
from runwatch.localmedia import MAX_MEDIA_BYTES as MAX_MEDIA_BYTES
from runwatch.localmedia import LocalMedia, MediaChecker, TakenBy, check_source, guess_media
from runwatch.requestfile import (
    CONTROL_SUFFIXES,
    MEDIA_SUFFIXES,
    REQUEST_SUFFIXES,
    classify,
    is_ignored,
    is_utf8,
    name_problem,
    parse,
    read,
    request_name,
    scan,
)
from runwatch.requestfile import MAX_DEPTH as MAX_DEPTH
from runwatch.requestfile import MAX_NAME as MAX_NAME
from runwatch.requestfile import MAX_REQUEST_BYTES as MAX_REQUEST_BYTES
from runwatch.requestproblems import MISSING, Problems, fail, issue_problems, show

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

PRIORITY_RANGE = (-1_000_000, 1_000_000)
_OPTION_KEYS = ("name", "priority", "max_credits")


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
    @property
    def media_transport(self) -> str:
        """How the inbox sends local media: ``s3``, ``runway`` or ``data`` (``auto`` already decided)."""
        ...


@dataclass(frozen=True)
class RequestOptions:
    """The request's own ``runwatch`` table."""

    name: str
    priority: int = 0
    max_credits: float | None = None


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


# -- building a request -----------------------------------------------------------------------------------


def _options(table: Any, default_name: str, problems: Problems, *, bare: bool) -> RequestOptions:
    if table is None:
        table = {}
    if not isinstance(table, dict):
        problems.add("runwatch", f"must be a table/object with {', '.join(_OPTION_KEYS)}; got {show(table)}")
        table = {}
    for key in table:
        if key not in _OPTION_KEYS:
            problems.add(("runwatch", key), f"unknown option; allowed: {', '.join(_OPTION_KEYS)}")
    name = table.get("name", default_name)
    if not isinstance(name, str):
        problems.add(("runwatch", "name"), f"{show(name)} must be a string")
        name = default_name
    if why := name_problem(name):
        where = (
            "" if "name" in table else " (taken from the file name" + (")" if bare else "; set runwatch.name instead)")
        )
        problems.add(("runwatch", "name"), f"{show(name)} {why}{where}")
    priority = table.get("priority", 0)
    lo, hi = PRIORITY_RANGE
    if isinstance(priority, float) and priority.is_integer():
        priority = int(priority)
    if not isinstance(priority, int) or isinstance(priority, bool) or not lo <= priority <= hi:
        problems.add(
            ("runwatch", "priority"),
            f"{show(priority)} is not allowed; expected a whole number from {lo} to {hi} (higher goes first)",
        )
        priority = 0
    credits = table.get("max_credits")
    ok = isinstance(credits, int | float) and not isinstance(credits, bool) and math.isfinite(credits) and credits > 0
    if credits is not None and not ok:
        problems.add(("runwatch", "max_credits"), f"{show(credits)} is not allowed; expected a number above 0")
        credits = None
    return RequestOptions(name, priority, float(credits) if credits is not None else None)


def _endpoint(value: Any, catalog: Catalog, problems: Problems) -> str | None:
    allowed = ", ".join(sorted(catalog.endpoints))
    if value is None:
        problems.add("endpoint", f"is required: the request names none and its inbox has none; allowed: {allowed}")
        return None
    if not isinstance(value, str) or value not in catalog.endpoints:
        problems.add("endpoint", f"{show(value)} is not an endpoint; allowed: {allowed}")
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
    problems: Problems,
    bare_field: str | None = None,
    taken: TakenBy | None = None,
) -> Request:
    if unknown_models not in ("pass", "reject"):
        raise ValueError(f"unknown_models must be 'pass' or 'reject', not {unknown_models!r}")
    catalog = catalog or load_catalog()
    file_body = {k: v for k, v in data.items() if k not in ("endpoint", "runwatch")}
    defaults: dict[str, Any] = plain(inbox.defaults)
    options = _options(data.get("runwatch"), default_name, problems, bare=bare_field is not None)
    endpoint = _endpoint(data.get("endpoint", inbox.endpoint), catalog, problems)
    model_name = file_body.get("model", defaults.get("model", MISSING))
    named = model_name if isinstance(model_name, str) else None  # for the status file of a rejected request
    if endpoint is None:  # without one nothing else can be checked
        problems.fail(source, model=named)
    ep = catalog.endpoints[endpoint]
    model = ep.models.get(model_name) if isinstance(model_name, str) else None
    media = MediaChecker(
        source, root, problems, bare=bare_field is not None, transport=inbox.media_transport, taken=taken
    )
    known_model = model is not None
    names = endpoint_names(catalog, endpoint)
    if model is not None:
        top = {"kind": "object", "fields": model.fields}
        body = merge(resolve_known(defaults, top, (), problems), resolve_known(file_body, top, (), problems))
        validation = catalog.validate(endpoint, body)
        for issue in validation.issues:
            issue_problems(issue, body, top, problems)
        refs = [(ref.path, ref.value, frozenset({ref.kind})) for ref in validation.media]
        # Media under a union that failed validation are not reported by it; check them now anyway,
        # so a second attempt does not bring up new problems.
        seen = {path for path, _, _ in refs}
        for path, value, _ in guess_media(body, names):
            found = set().union(*(media_kinds(spec) for spec in specs_at(top, path)))
            if path not in seen and found:
                refs.append((path, value, frozenset(found)))
    else:
        body = merge(resolve_generic(defaults, names, (), problems), resolve_generic(file_body, names, (), problems))
        models = ", ".join(sorted(ep.models))
        elsewhere = (
            sorted(e for e, other in catalog.endpoints.items() if model_name in other.models)
            if isinstance(model_name, str)
            else []
        )
        if model_name is MISSING:
            problems.add("model", f"is required; models of {endpoint}: {models}")
        elif not isinstance(model_name, str):
            problems.add("model", f"{show(model_name)} must be a string; models of {endpoint}: {models}")
        elif elsewhere:  # a known model on the wrong endpoint is surely a mistake, not a new model
            problems.add(
                "model",
                f"{show(model_name)} is a model of {', '.join(elsewhere)}, not of {endpoint}; "
                f"models of {endpoint}: {models}",
            )
        elif unknown_models == "reject":
            problems.add(
                "model", f"{show(model_name)} is not a model runwatch knows for {endpoint}; known models: {models}"
            )
        refs = guess_media(body, names)
    for path, value, kinds in refs:
        media.check(path, value, kinds)
    if bare_field is not None:  # a file name sent as, say, the prompt text would be money spent on nonsense
        wire = (model.wire_name(bare_field) if model else names.python.get(bare_field)) or bare_field
        if not any(path == (wire,) for path, _, _ in refs):
            problems.add(
                wire, f"is the inbox's media_field, but {show(model_name)} on {endpoint} takes no media file in it"
            )
    problems.raise_if_any(source, endpoint=endpoint, model=named)
    return Request(
        name=options.name,
        source=source,
        format=fmt,
        endpoint=endpoint,
        model=named,
        body=body,
        media=tuple(media.found),
        options=options,
        known_model=known_model,
    )


def load_request(
    path: Path,
    *,
    root: Path,
    inbox: InboxLike,
    catalog: Catalog | None = None,
    unknown_models: str = "pass",
    taken: TakenBy | None = None,
) -> Request:
    """Read, check and validate one request file (a bare media file is handed to :func:`bare_media_request`).

    Raises :class:`RequestError` with every problem; ``incomplete`` when the file cannot be parsed or the
    only problems are media files not found yet (either may still be being copied). ``taken`` says who took
    a media file that is not there (the inbox's records), so that its problem says so.
    """
    suffix = path.suffix.lower()
    if suffix not in REQUEST_SUFFIXES and suffix in MEDIA_SUFFIXES:
        return bare_media_request(path, root=root, inbox=inbox, catalog=catalog, unknown_models=unknown_models)
    check_source(path, root)
    fmt: Literal["json", "toml"] = "toml" if suffix == ".toml" else "json"
    data = parse(path, read(path), fmt)
    problems = Problems()
    if not scan(data, problems):
        problems.fail(path)
    return _build(
        source=path,
        root=root,
        fmt=fmt,
        data=data,
        default_name=request_name(path),
        inbox=inbox,
        catalog=catalog,
        unknown_models=unknown_models,
        problems=problems,
        taken=taken,
    )


def bare_media_request(
    path: Path,
    *,
    root: Path,
    inbox: InboxLike,
    catalog: Catalog | None = None,
    unknown_models: str = "pass",
) -> Request:
    """A request for a media file dropped alone: the inbox's defaults with the file in its ``media_field``."""
    check_source(path, root)
    if not is_utf8(path.name):  # the name goes into the body, and a body must be text
        raise fail(path, "runwatch.name", "the file name is not valid UTF-8 text")
    field = inbox.media_field
    data = {field: path.name}
    return _build(
        source=path,
        root=root,
        fmt="json",
        data=data,
        default_name=request_name(path),
        inbox=inbox,
        catalog=catalog,
        unknown_models=unknown_models,
        problems=Problems(),
        bare_field=field,
    )
