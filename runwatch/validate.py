"""``runwatch validate`` (and ``--price``): request files checked and priced without spending anything.

It never calls the API nor uploads anything: it reads request files with the inbox context they would get (the
inbox's endpoint and defaults when the file sits in a configured inbox, plain defaults otherwise) and prices them
with the shipped price data. :class:`Validator` is also how ``runwatch submit`` checks its file.
"""

from __future__ import annotations

import json
import os
import sys
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from runwatch.errors import Problem, RequestError
from runwatch.ops import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, load_optional_config, plural, readable, write_table

if TYPE_CHECKING:
    from runwatch.catalog import Catalog
    from runwatch.config import Config, InboxConfig
    from runwatch.pricing import Estimate, MediaHint
    from runwatch.request import Request

__all__ = ["Checked", "PlainInbox", "Validator", "validate_command"]

_STATUS_SUFFIXES = (".status.json", ".status.toml")


@dataclass(frozen=True)
class PlainInbox:
    """The context of a request file outside every configured inbox: no endpoint, no defaults, and media sent
    as ``runwatch submit`` sends them (``transport = "auto"``: by S3 when the configuration has a bucket)."""

    path: Path
    endpoint: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    media_field: str = "promptImage"
    accept_media: bool = False
    has_s3: bool = False

    @property
    def media_transport(self) -> str:
        from runwatch.medialimits import choose

        return choose("auto", s3_configured=self.has_s3)


@dataclass(frozen=True)
class Checked:
    """One request file, checked: its request when valid, else every problem; its estimate when priced;
    ``transport``, the transport its media were fitted to (and must be sent by)."""

    file: Path
    inbox: str | None
    request: Request | None = None
    problems: tuple[Problem, ...] = ()
    estimate: Estimate | None = None
    notes: tuple[str, ...] = ()
    transport: str | None = None

    @property
    def valid(self) -> bool:
        return self.request is not None

    @property
    def name(self) -> str:
        from runwatch.request import request_name

        return self.request.name if self.request is not None else request_name(self.file)

    def to_json(self) -> dict[str, Any]:
        req, est = self.request, self.estimate
        return {
            "file": str(self.file),
            "valid": self.valid,
            "name": self.name,
            "inbox": self.inbox,
            "endpoint": req.endpoint if req else None,
            "model": req.model if req else None,
            "problems": [{"path": p.path, "message": p.message} for p in self.problems],
            "estimate": None
            if est is None
            else {"credits": est.credits, "basis": est.basis, "assumptions": list(est.assumptions)},
            "notes": list(self.notes),
        }


class Validator:
    """Checks request files against one config; the catalogue, prices and media probes are loaded once."""

    def __init__(self, config: Config | None, catalog: Catalog | None = None) -> None:
        from runwatch.catalog import load_catalog
        from runwatch.pricing import load_prices

        self.config = config
        self.catalog = catalog or load_catalog()
        self.prices = load_prices()
        self.unknown_models = config.runway.unknown_models if config else "pass"
        self._roots = [(os.path.realpath(i.path), i) for i in config.inboxes] if config else []
        self._hints: dict[Path, MediaHint | None] = {}

    def inbox_of(self, path: Path, *, folder: bool = False) -> InboxConfig | None:
        """The configured inbox the file sits in (at any depth), or None; with ``folder``, the inbox the
        folder is or is inside."""
        real = os.path.realpath(path)
        for root, inbox in self._roots:
            if real.startswith(root.rstrip(os.sep) + os.sep) or (folder and real == root):
                return inbox
        return None

    def watched_by(self, path: Path) -> InboxConfig | None:
        """The inbox whose daemon would take this file itself (it sits at the inbox's top level)."""
        parent = os.path.realpath(path.parent)
        return next((inbox for root, inbox in self._roots if root == parent), None)

    def check(self, path: Path) -> Checked:
        from runwatch.pricing import Estimate
        from runwatch.request import MEDIA_SUFFIXES, REQUEST_SUFFIXES, load_request

        inbox = self.inbox_of(path)
        context = inbox or PlainInbox(path.parent, has_s3=self.config is not None and self.config.s3 is not None)
        label = inbox.name if inbox else None
        suffix = path.suffix.lower()
        if suffix not in REQUEST_SUFFIXES and not (suffix in MEDIA_SUFFIXES and context.accept_media):
            why = "is not a request file: expected NAME.json or NAME.toml"
            if suffix in MEDIA_SUFFIXES:
                why += " (a bare media file is a request only in an inbox with accept_media = true)"
            return Checked(path, label, problems=(Problem("", why),))
        try:
            req = load_request(
                path,
                root=inbox.path if inbox else path.parent,
                inbox=context,
                catalog=self.catalog,
                unknown_models=self.unknown_models,
            )
        except RequestError as exc:
            return Checked(path, label, problems=tuple(exc.problems))
        if req.model is None:
            guess = Estimate(None, "the request names no model")
        else:
            guess = self.prices.estimate(req.endpoint, req.model, req.body, self._media_hints(req))
        return Checked(
            path,
            label,
            request=req,
            estimate=guess,
            notes=self._notes(req, guess, inbox),
            transport=context.media_transport,
        )

    def _media_hints(self, req: Request) -> dict[str, MediaHint]:
        from runwatch.catalog import format_path
        from runwatch.mediaprobe import probe_file
        from runwatch.pricing import MediaHint

        hints: dict[str, MediaHint] = {}
        for media in req.media:
            if media.file not in self._hints:  # many requests share one picture: probe it once
                try:
                    info = probe_file(media.file)
                except OSError:
                    info = None
                self._hints[media.file] = (
                    None if info is None else MediaHint(duration=info.duration, width=info.width, height=info.height)
                )
            hint = self._hints[media.file]
            if hint is not None:
                hints[format_path(media.field)] = hint
        return hints

    def _notes(self, req: Request, guess: Estimate, inbox: InboxConfig | None) -> tuple[str, ...]:
        notes = []
        if not req.known_model:
            notes.append(
                f"model {req.model!r} is not in runwatch's catalogue: it is sent as written and Runway "
                "checks it (a refused create costs nothing)"
            )
        limits = [(f"its max_credits of {readable(v)}", v) for v in (req.options.max_credits,) if v is not None]
        if inbox is not None and inbox.approve_above is not None:
            limits.append((f"the inbox's approve_above of {readable(inbox.approve_above)}", inbox.approve_above))
        for label, value in limits:
            if guess.credits is not None and guess.credits > value:
                notes.append(f"the estimate is above {label}: the daemon holds it until `runwatch approve`")
        return tuple(notes)


def _expand(paths: Sequence[str], validator: Validator) -> tuple[list[Path], list[str]]:
    """Files to check (a folder stands for the request files at its top) and usage errors."""
    from runwatch.request import classify

    files: list[Path] = []
    errors: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inbox = validator.inbox_of(path, folder=True)
            accept = inbox.accept_media if inbox is not None else False
            try:
                names = sorted(os.listdir(path))
            except OSError as exc:
                errors.append(f"{raw}: cannot list the folder: {exc.strerror}")
                continue
            for name in names:
                # Status files are runwatch's own answers (submit writes them beside requests), never requests.
                if (
                    classify(name, accept) in ("request", "media")
                    and not name.endswith(_STATUS_SUFFIXES)
                    and (path / name).is_file()
                ):
                    files.append(path / name)
        elif path.exists() or path.is_symlink():
            files.append(path)
        else:
            errors.append(f"{raw}: no such file or folder")
    return files, errors


def _estimate_text(guess: Estimate | None) -> str:
    if guess is None or guess.credits is None:
        return f"unknown: {guess.basis if guess else 'not priced'}"
    total = f"{readable(guess.credits)} {'credit' if guess.credits == 1 else 'credits'}"
    return f"{guess.basis} = {total}"


def validate_command(
    paths: Sequence[str],
    *,
    config_file: str | None = None,
    price: bool = False,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
    env: Mapping[str, str] = os.environ,
) -> int:
    """``runwatch validate``: 0 when every file is valid, 1 when any is not, 2 for a path that is not there."""
    out = out or sys.stdout
    err = err or sys.stderr
    config = load_optional_config(config_file, env)  # ConfigError: the caller exits 78
    validator = Validator(config)
    files, errors = _expand(paths, validator)
    if errors:
        for line in errors:
            err.write(f"runwatch validate: {line}\n")
        return EXIT_USAGE
    results = [validator.check(f) for f in files]
    if price:
        _price_report(results, out, as_json, config)
    elif as_json:
        out.write(
            json.dumps(
                {
                    "config": str(config.path) if config and config.path else None,
                    "files": [r.to_json() for r in results],
                    "valid": sum(r.valid for r in results),
                    "invalid": sum(not r.valid for r in results),
                },
                indent=2,
            )
            + "\n"
        )
    else:
        _validate_report(results, out, config)
    if not files:
        err.write(f"runwatch validate: no request files in {', '.join(paths)}\n")
    return EXIT_OK if all(r.valid for r in results) else EXIT_FAILURE


def _validate_report(results: Sequence[Checked], out: TextIO, config: Config | None) -> None:
    lines: list[str] = []
    for r in results:
        if r.request is None:
            lines += [f"{r.file}: {p}" for p in r.problems]
            continue
        what = " ".join(x for x in (r.request.endpoint, r.request.model) if x)
        lines.append(f"{r.file}: OK {what}, {_estimate_text(r.estimate)}")
        if r.estimate is not None:
            lines += [f"{r.file}:   assumes {a}" for a in r.estimate.assumptions]
        lines += [f"{r.file}:   note: {n}" for n in r.notes]
    valid = sum(r.valid for r in results)
    source = f"config {config.path}" if config and config.path else "no config file: plain defaults"
    lines.append(f"{plural(len(results), 'file')}: {valid:,} valid, {len(results) - valid:,} invalid ({source})")
    out.write("\n".join(lines) + "\n")


def _price_report(results: Sequence[Checked], out: TextIO, as_json: bool, config: Config | None) -> None:
    valid = [r for r in results if r.request is not None]
    priced = [r for r in valid if r.estimate is not None and r.estimate.credits is not None]
    unknown = [r for r in valid if r.estimate is None or r.estimate.credits is None]
    invalid = [r for r in results if r.request is None]
    total = sum(r.estimate.credits or 0 for r in priced if r.estimate is not None)
    if as_json:
        out.write(
            json.dumps(
                {
                    "config": str(config.path) if config and config.path else None,
                    "requests": [r.to_json() for r in valid],
                    "total": total,
                    "priced": len(priced),
                    "unknown": [r.name for r in unknown],
                    "invalid": [r.to_json() for r in invalid],
                },
                indent=2,
            )
            + "\n"
        )
        return
    rows = [["NAME", "ENDPOINT", "MODEL", "ESTIMATE", "BASIS"]]
    for r in valid:
        assert r.request is not None and r.estimate is not None
        credits = r.estimate.credits
        basis = r.estimate.basis + "".join(f"; assumes {a}" for a in r.estimate.assumptions)
        rows.append(
            [
                r.name,
                r.request.endpoint,
                r.request.model or "",
                "unknown" if credits is None else readable(credits),
                basis,
            ]
        )
    write_table(rows, out)
    for r in invalid:
        out.write("".join(f"{r.file}: {p}\n" for p in r.problems))
    line = f"total: {readable(total)} credits for {plural(len(priced), 'request')}"
    if unknown:
        line += f"; {plural(len(unknown), 'request')} with unknown price: {_names(unknown)}"
    if invalid:
        line += f"; {plural(len(invalid), 'invalid request')} not priced: {_names(invalid)}"
    out.write(line + "\n")


def _names(results: Sequence[Checked], most: int = 20) -> str:
    """The requests' names for a summary line; a long list is cut (the table above has them all)."""
    names = [r.name for r in results]
    more = f" and {len(names) - most:,} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more
