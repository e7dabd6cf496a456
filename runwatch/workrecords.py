"""The records a work area keeps of every request it took, and every move of them after the claim.

::

    WORK/jobs/JOB_ID/       a request being worked on (with ``.runwatch-intent`` once a create may have left)
    WORK/done/JOB_ID/       one that ended succeeded or cancelled
    WORK/failed/JOB_ID/     one that ended rejected, failed or needs_attention

A job dir is filed away when its job ends and brought back for ``runwatch retry``. Its intent marker is the work
area's own proof of what was sent: written and fsynced before each create (with the task id once Runway names
it), so a job whose create may have gone out is never sent again because a journal was lost, emptied or restored
from an older copy. Claims themselves are ``runwatch.workarea``'s.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from runwatch.errors import InboxError, RunwatchError

if TYPE_CHECKING:
    from runwatch.config import InboxConfig

__all__ = [
    "INTENT_MARK",
    "IntentMark",
    "RecordPlace",
    "claimed_anything",
    "clear_intent_mark",
    "find_record",
    "mark_intent",
    "move_record",
    "prepare_records",
    "read_intent_mark",
    "request_in",
    "status_shown",
]


def prepare_records(inbox: InboxConfig) -> None:
    """The folders a daemon files its records in (``jobs``, ``done``, ``failed``), when the inbox is there."""
    if inbox.path.is_dir():
        for folder in ("jobs", "done", "failed"):
            (inbox.work / folder).mkdir(parents=True, exist_ok=True)


RecordPlace = Literal["jobs", "done", "failed"]


def move_record(inbox: InboxConfig, job_dir: Path, request_file: Path, where: RecordPlace) -> tuple[Path, Path]:
    """Keep a taken request as a done/failed record, or bring one back into ``jobs`` for a retry.

    Returns the job dir and request file where they now are. A job dir already at its place (the move was done
    before a kill that kept the journal from learning it) is found there; one that is gone (taken away by a
    person) stays where it was said to be; a rename that fails raises :class:`InboxError`.
    """
    target = inbox.work / where / job_dir.name
    if not job_dir.exists():
        if not target.is_dir() or target.is_symlink():
            return job_dir, request_file
    else:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(job_dir, target)
        except OSError as exc:
            raise InboxError(f"{job_dir}: cannot be moved to {target}: {exc.strerror}") from exc
    try:
        return target, target / request_file.relative_to(job_dir)
    except ValueError:
        return target, request_file


INTENT_MARK = ".runwatch-intent"
"""In a job dir: a create of this job may have gone out (written and fsynced before each create, with the
task id once Runway names it). It outlives a lost, emptied or restored journal, so such a job is never sent
again by accident."""


@dataclass(frozen=True)
class IntentMark:
    """What a job dir says was sent: when the create left, and the task id if Runway named one."""

    job_id: str
    sent_at: str
    task_id: str | None = None


def mark_intent(job_dir: Path, mark: IntentMark) -> None:
    """Write the marker durably (temporary file, fsync, rename, directory fsync) before the create leaves."""
    text = json.dumps({"job": mark.job_id, "sent_at": mark.sent_at, "task_id": mark.task_id}) + "\n"
    tmp = job_dir / f"{INTENT_MARK}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, job_dir / INTENT_MARK)
        _fsync_dir(job_dir)
    except OSError as exc:
        raise InboxError(f"{job_dir}: the intent marker cannot be written: {exc.strerror or exc}") from exc


def clear_intent_mark(job_dir: Path) -> None:
    """Nothing was sent (proven by Runway's answer) or it is resent on purpose: the marker goes."""
    try:
        os.unlink(job_dir / INTENT_MARK)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InboxError(f"{job_dir}: the intent marker cannot be removed: {exc.strerror or exc}") from exc
    with contextlib.suppress(OSError):
        _fsync_dir(job_dir)


def read_intent_mark(job_dir: Path) -> IntentMark | None:
    """The marker of a job dir; one that cannot be read counts as a create that may have gone out."""
    path = job_dir / INTENT_MARK
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return IntentMark(job_dir.name, "")
    if not isinstance(data, dict):
        return IntentMark(job_dir.name, "")
    task = data.get("task_id")
    return IntentMark(str(data.get("job") or job_dir.name), str(data.get("sent_at") or ""), task if task else None)


def find_record(inbox: InboxConfig, job_id: str) -> Path | None:
    """Where a job's dir is now: in ``jobs/`` while it runs, ``done/`` or ``failed/`` once it has ended."""
    for where in ("jobs", "done", "failed"):
        candidate = inbox.work / where / job_id
        if candidate.is_dir() and not candidate.is_symlink():
            return candidate
    return None


def claimed_anything(inbox: InboxConfig) -> bool:
    """Whether the work area holds any request taken before (claimed, done or failed)."""
    for where in ("jobs", "done", "failed"):
        with contextlib.suppress(OSError):
            if any(True for _ in (inbox.work / where).iterdir()):
                return True
    return False


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def status_shown(outbox: Path, job_id: str, name: str, fmt: str) -> dict[str, Any] | None:
    """A job's status file as it stands, when it is that job's (it names the job's dir) and can be read."""
    import tomllib

    from runwatch.outbox import status_path

    try:
        path = status_path(outbox, name, "toml" if fmt == "toml" else "json")
        text = path.read_text(encoding="utf-8")
        shown = tomllib.loads(text) if fmt == "toml" else json.loads(text)
    except (OSError, ValueError, RunwatchError):
        return None
    if isinstance(shown, dict) and job_id in str(shown.get("request", "")):
        return shown
    return None


def request_in(job_dir: Path) -> tuple[Path, bool] | None:
    """The request file a job dir holds, and whether it is a bare-media claim (the media file alone, at the top
    of the job dir); None when it holds neither."""
    from runwatch.request import MEDIA_SUFFIXES

    files = sorted(p for p in job_dir.iterdir() if p.suffix in (".json", ".toml") and p.is_file())
    if files:
        return files[0], False
    media = sorted(p for p in job_dir.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
    return (media[0], True) if media else None
