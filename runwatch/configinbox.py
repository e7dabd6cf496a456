"""The ``[[inbox]]`` sections of the configuration: each inbox's folders (inbox, outbox, work area) and the rules
between them, its defaults, transport, media and money keys.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

from runwatch.catalog import load_catalog
from runwatch.configtable import _MISSING, _found, _jsonable, _leaves, _Table, _within
from runwatch.errors import MissingKey, Problem
from runwatch.medialimits import choose

Transport = Literal["auto", "s3", "runway", "data"]
_FIELD_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_NAME_RE = re.compile(r"[^/\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class InboxConfig:
    name: str
    path: Path
    outbox: Path
    work: Path
    endpoint: str | None = None
    # Only the top level is read-only: nested values stay plain dicts/lists so merged bodies serialise as JSON.
    defaults: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    polling: bool = False
    settle: float = 2.0
    transport: Transport = "auto"
    accept_media: bool = False
    media_field: str = "promptImage"
    budget_daily: float | None = None
    approve_above: float | None = None
    priority: int = 0
    # Not a key of its own: whether the configuration has an [s3] bucket, which ``transport = "auto"`` goes by.
    has_s3: bool = field(default=False, metadata={"derived": True})

    @property
    def media_transport(self) -> str:
        """The transport this inbox's local media go by: ``auto`` is ``s3`` when there is a bucket, else ``runway``.

        Request checks fit media to this transport's size limits; the daemon sends them by it.
        """
        return choose(self.transport, s3_configured=self.has_s3)


def _inbox(t: _Table, base: Path, env: Mapping[str, str], has_s3: bool) -> InboxConfig | None:
    """One [[inbox]] table; None when its folders are unusable (the problems are recorded)."""
    name = t.string("name", None, pattern=_NAME_RE, expected="a name without slashes or control characters")
    path = t.path("path", None, base=base, env=env, required="the folder users drop requests into")
    outbox = t.path("outbox", None, base=base, env=env, required="the folder outputs and status files go to")
    work = t.path("work", None, base=base, env=env)
    endpoints = load_catalog().endpoints
    endpoint = t.string("endpoint", None, choices=tuple(sorted(endpoints)))
    raw_defaults = t.get("defaults")
    defaults: dict[str, Any] = {}
    if isinstance(raw_defaults, Mapping):
        defaults = copy.deepcopy({str(k): v for k, v in raw_defaults.items()})
        for where, leaf in _leaves(defaults, t.key("defaults")):
            if not _jsonable(leaf):
                t.problems.append(Problem(where, f"cannot be sent in a JSON request body: found {_found(leaf)}"))
        for reserved, instead in (("endpoint", "the inbox's endpoint key"), ("runwatch", "the inbox's own keys")):
            if reserved in defaults:
                t.problem(f"defaults.{reserved}", f"not a request body field; use {instead}")
    elif raw_defaults is not _MISSING:
        t.bad(
            "defaults",
            'a table of request body fields, e.g. { model = "gen4_turbo", ratio = "1280:720" }',
            raw_defaults,
        )
    inbox = InboxConfig(
        name="",
        path=Path(),
        outbox=Path(),
        work=Path(),
        endpoint=endpoint,
        defaults=types.MappingProxyType(defaults),
        polling=t.boolean("polling", False),
        settle=t.number("settle", 2.0, unit=" (seconds)"),
        transport=cast(Transport, t.string("transport", "auto", choices=get_args(Transport))),
        accept_media=t.boolean("accept_media", False),
        media_field=t.string(
            "media_field",
            "promptImage",
            pattern=_FIELD_RE,
            expected='a request field name as the API spells it, e.g. "promptImage"',
        ),
        budget_daily=t.number("budget_daily", None, zero_ok=True, unit=" (credits)"),
        approve_above=t.number("approve_above", None, zero_ok=True, unit=" (credits)"),
        priority=t.integer("priority", 0, minimum=-1000, maximum=1000),
    )
    if inbox.transport == "s3" and not has_s3:
        t.problem("transport", '"s3" needs an [s3] section with a bucket')
    if inbox.accept_media:
        if endpoint is None:
            t.problem("accept_media", "needs this inbox's endpoint: a bare media file names no endpoint")
        else:
            fields = sorted({f for m in endpoints[endpoint].models.values() for f in m.fields})
            if inbox.media_field not in fields:
                t.problem(
                    "media_field", f'"{inbox.media_field}" is not a field of {endpoint}; allowed: {", ".join(fields)}'
                )
    if path is None or outbox is None:
        return None
    work = work if work is not None else path / ".runwatch"
    if name is None:
        name = path.name
        if not name:
            t.problem("name", f"the folder {path} has no name to use; set name")
    if _within(outbox, path):
        t.problem("outbox", f"{outbox} must not be the inbox itself nor inside it")
    elif work == path or _within(work, outbox):
        t.problem("work", f"{work} must not be the inbox, the outbox, nor inside the outbox")
    elif _within(work, path) and not work.relative_to(path).parts[0].startswith("."):
        t.problem(
            "work",
            f"{work} is inside the inbox, so it must be a hidden folder (its name starting with "
            f'".") that scans ignore, e.g. {path / ".runwatch"}',
        )
    return dataclasses.replace(inbox, name=name, path=path, outbox=outbox, work=work, has_s3=has_s3)


def _inboxes(top: _Table, base: Path, env: Mapping[str, str], has_s3: bool) -> tuple[InboxConfig, ...]:
    value = top.get("inbox")
    if value is _MISSING:
        top.problems.append(
            MissingKey("", "`[[inbox]]` is missing (at least one [[inbox]] section with path and outbox)")
        )
        return ()
    if not isinstance(value, list) or not value:
        hint = "; write [[inbox]], not [inbox]" if isinstance(value, Mapping) else ""
        top.bad("inbox", f"at least one [[inbox]] section{hint}", value)
        return ()
    found: list[tuple[int, InboxConfig]] = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            top.bad(f"inbox[{i}]", "a table ([[inbox]] section)", item)
            continue
        t = _Table(item, f"inbox[{i}]", top.problems, label=f"[[inbox]] {i + 1}")
        inbox = _inbox(t, base, env, has_s3)
        t.done()
        if inbox is not None:
            found.append((i, inbox))
    for n, (i, a) in enumerate(found):
        for j, b in found[:n]:
            if a.name == b.name:
                top.problem(f"inbox[{i}].name", f'"{a.name}" is already the name of inbox[{j}]; names must be unique')
            if _within(a.path, b.path) or _within(b.path, a.path):
                top.problem(f"inbox[{i}].path", f"{a.path} is, contains or is inside inbox[{j}]'s folder {b.path}")
        for j, b in found:
            if j != i and _within(a.outbox, b.path):
                top.problem(
                    f"inbox[{i}].outbox",
                    f"{a.outbox} is inside inbox[{j}]'s folder {b.path}: its status files would be taken as requests",
                )
    return tuple(inbox for _, inbox in found)
