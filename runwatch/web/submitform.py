"""The dashboard's submit form: its fields made into a request file, landed in an inbox as a dropped file lands.

Media first, each under a name the watcher ignores (``.NAME.upload-<hex>.tmp``) and renamed in place; then the
request written as ``NAME.json.tmp`` and renamed to ``NAME.json``. The inbox then sees what any producer's
finished drop looks like, and the request goes the way every request goes: the same checks, the same holds and
budgets, the same status file. Only what the form itself can know is checked here (the name can be a file name,
no request of that name is waiting in the inbox, the media's names and sizes, the extra fields are a JSON
object); each error names the form's field.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from runwatch.errors import Problem
from runwatch.requestfile import MEDIA_SUFFIXES, REQUEST_SUFFIXES, is_ignored, name_problem

__all__ = ["MAX_UPLOAD", "Form", "Upload", "land", "read_form"]

MAX_UPLOAD = 512 * 1024 * 1024  # bytes of one form post, media included: Runway's own limits are smaller
_COPY = 1024 * 1024


@dataclass(frozen=True)
class Upload:
    """A media file from the form: its file name and its spooled content."""

    filename: str
    file: IO[bytes]


@dataclass(frozen=True)
class Form:
    """A form that passed the form's own checks: the request's name and body, and its media."""

    inbox: str
    name: str
    body: dict[str, Any]
    media: list[Upload]


def _number(text: str, field: str, problems: list[Problem]) -> float | int | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        problems.append(Problem(field, f"{text!r} is not a number"))
        return None
    return int(value) if value.is_integer() else value


def read_form(
    fields: Mapping[str, str], media: Sequence[Upload], inboxes: Sequence[str]
) -> tuple[Form | None, list[Problem]]:
    """The form's fields as a request body, or the problems, each naming its field."""
    problems: list[Problem] = []
    inbox = fields.get("inbox", "")
    if inbox not in inboxes:
        problems.append(Problem("inbox", f"choose one of the inboxes ({', '.join(inboxes)})"))
    name = fields.get("name", "").strip()
    why = name_problem(name) if name else "is empty: give the request a name"
    if why is None and is_ignored(name):
        why = "must not start with '.' or '~' or end like a partial download (.tmp, .part ...)"
    if why is not None:
        problems.append(Problem("name", why))
    body: dict[str, Any] = {}
    extra = fields.get("extra", "").strip()
    if extra:
        try:
            parsed = json.loads(extra)
        except ValueError as exc:
            problems.append(Problem("extra", f"is not JSON: {exc}"))
        else:
            if isinstance(parsed, dict):
                body.update(parsed)
            else:
                problems.append(Problem("extra", "must be a JSON object ({...}) of more request fields"))
    for key in ("endpoint", "model", "promptText", "ratio"):
        value = fields.get(key, "").strip()
        if value:
            body[key] = value
    duration = _number(fields.get("duration", "").strip(), "duration", problems)
    if duration is not None:
        body["duration"] = duration
    uploads = [m for m in media if m.filename]
    seen: set[str] = set()
    for upload in uploads:
        base = os.path.basename(upload.filename.replace("\\", "/"))
        why = name_problem(base)
        if why is None and (is_ignored(base) or os.path.splitext(base)[1].lower() not in MEDIA_SUFFIXES):
            why = f"is not a media file name runwatch takes (one of {', '.join(sorted(MEDIA_SUFFIXES))})"
        if why is None and base in seen:
            why = "is given twice"
        if why is not None:
            problems.append(Problem("media", f"{upload.filename!r} {why}"))
        seen.add(base)
    field_name = fields.get("media_field", "").strip()
    names = [os.path.basename(u.filename.replace("\\", "/")) for u in uploads]
    if names and field_name:
        body[field_name] = names[0] if len(names) == 1 else names
    elif names and not all(json.dumps(name) in json.dumps(body) for name in names):
        # Media the request does not name would lie in the inbox unused: say where they go.
        problems.append(Problem("media_field", "name the request field the media go in (promptImage, videoUri ...)"))
    if problems:
        return None, problems
    media_named = [Upload(os.path.basename(u.filename.replace("\\", "/")), u.file) for u in uploads]
    return Form(inbox, name, body, media_named), []


def land(form: Form, folder: Path) -> Path:
    """Write the media, then the request, into the inbox ``folder``; the request file's path.

    Raises :class:`FileExistsError` naming the form field when a file of the same name already lies there (it
    would be a different request's, or media another request names).
    """
    request = folder / f"{form.name}.json"
    for suffix in REQUEST_SUFFIXES:
        if (folder / f"{form.name}{suffix}").exists():
            raise FileExistsError(f"name: {form.name}{suffix} already lies in the inbox, waiting to be taken")
    for upload in form.media:
        if (folder / upload.filename).exists():
            raise FileExistsError(f"media: {upload.filename} already lies in the inbox (another request's media?)")
    written: list[Path] = []
    try:
        for upload in form.media:
            tmp = folder / f".{upload.filename}.upload-{secrets.token_hex(4)}.tmp"
            written.append(tmp)
            upload.file.seek(0)
            with open(tmp, "xb") as out:
                shutil.copyfileobj(upload.file, out, _COPY)
                out.flush()
                os.fsync(out.fileno())
            os.rename(tmp, folder / upload.filename)
            written[-1] = folder / upload.filename
        tmp = folder / f"{form.name}.json.tmp"
        written.append(tmp)
        with open(tmp, "x", encoding="utf-8") as out:
            out.write(json.dumps(form.body, indent=2, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, request)
    except OSError:
        for path in written:  # nothing half-landed: the inbox is as it was
            path.unlink(missing_ok=True)
        raise
    return request
