"""Media files a claim takes: hard links into the job dir, what is remembered of them, and their way out.

Several requests may name one file (three prompts on one still). So a claim never moves a media file out of the
inbox: it hard-links it into the job dir, at the path the request names it by (a copy where the filesystem has no
hard links, e.g. exFAT or some FUSE mounts). The file stays in the inbox while requests waiting there name it,
and for the settle time after the last claim that took it, so that requests copied in with it (or just after)
find it too. Then the watcher takes it out of the inbox with :func:`sweep`.

A claim with media files goes, in this order::

    mkdir WORK/jobs/JOB_ID
    WORK/jobs/JOB_ID/.claiming       the plan: request file, and each link's place in the job dir and in the inbox
    links into the job dir           the inbox is not touched
    rename of the request            the claim itself (a second runwatch process may win it)
    WORK/taken/…                     a record per media file taken
    .claiming removed

Nothing leaves the inbox before the rename of the request, so a kill at any step leaves either a whole claim
whose plan says which records to write, or the request still in the inbox and links in a job dir that no request
reached; :func:`settle` finishes the first and undoes the second at the next start.

``WORK/taken/`` holds one small JSON file per inbox path ever taken, named by a digest of the path: which request
took the file last, when, and the file's identity (device, inode, size, mtime). It answers "why is this file not
there?" for a request dropped later, and it recognises, after a restart, a file still in the inbox that was taken
already (it has a second link, and its identity matches), so that it leaves the inbox instead of waiting forever
or being sent alone as bare media.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "MANIFEST",
    "Ident",
    "Plan",
    "Record",
    "identity",
    "link",
    "lookup",
    "remember",
    "settle",
    "sweep",
    "write_plan",
]

MANIFEST = ".claiming"
_TAKEN = "taken"
_SHARED = "shared"
# What link(2) answers where hard links cannot be made: the filesystem lacks them (EPERM on vfat/exFAT,
# EOPNOTSUPP on some FUSE mounts), the file has too many, or fs.protected_hardlinks forbids linking a file of
# another user that runwatch cannot write.
_NO_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS, errno.EACCES})

Ident = tuple[int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns): "the same file, unchanged"


def identity(st: os.stat_result) -> Ident:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class Plan:
    """One link a claim makes: ``dest`` inside the job dir, ``source`` inside the inbox (both relative)."""

    dest: str
    source: str


@dataclass(frozen=True)
class Record:
    """The last time an inbox file was taken."""

    file: str
    request: str
    job_id: str
    taken_at: str
    ident: Ident


# -- the claim's plan and its links ---------------------------------------------------------------------------


def write_plan(job_dir: Path, request_file: str, name: str, taken_at: str, plan: list[Plan]) -> None:
    """The plan, whole or not at all (written under a temporary name, then renamed)."""
    data = {
        "request_file": request_file,
        "name": name,
        "taken_at": taken_at,
        "links": [{"dest": p.dest, "source": p.source} for p in plan],
    }
    tmp = job_dir / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8", errors="surrogateescape")
    os.rename(tmp, job_dir / MANIFEST)


def _read_plan(job_dir: Path) -> tuple[str, str, str, list[Plan]] | None:
    try:
        data: Any = json.loads((job_dir / MANIFEST).read_text(encoding="utf-8", errors="surrogateescape"))
        plan = [Plan(str(item["dest"]), str(item["source"])) for item in data["links"]]
        return str(data["request_file"]), str(data["name"]), str(data["taken_at"]), plan
    except (OSError, ValueError, KeyError, TypeError):
        return None


def link(source: Path, dest: Path) -> bool:
    """``dest`` as a hard link to ``source`` (a symlink is linked itself, not followed); True when it is one.

    Where the filesystem makes none, a copy: a symlink is made again, a file is copied under a temporary name
    then renamed, so ``dest`` never exists half-written.
    """
    try:
        os.link(source, dest, follow_symlinks=False)
        return True
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
    if os.path.islink(source):
        os.symlink(os.readlink(source), dest)
        return False
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    try:
        shutil.copy2(source, tmp, follow_symlinks=False)  # refuses a FIFO put there since the check
        os.rename(tmp, dest)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return False


# -- records ------------------------------------------------------------------------------------------------


def _record_path(work: Path, rel: str) -> Path:
    digest = hashlib.sha256(os.path.normpath(rel).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return work / _TAKEN / f"{digest}.json"


def remember(work: Path, record: Record) -> None:
    """Writes (or replaces) the record of one inbox path; best effort, like the log (it only explains)."""
    path = _record_path(work, record.file)
    data = {
        "file": record.file,
        "request": record.request,
        "job_id": record.job_id,
        "taken_at": record.taken_at,
        "ident": list(record.ident),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8", errors="surrogateescape")
    os.rename(tmp, path)


def lookup(work: Path, rel: str) -> Record | None:
    """The record of an inbox path (relative to the inbox), or None."""
    try:
        text = _record_path(work, rel).read_text(encoding="utf-8", errors="surrogateescape")
        data: Any = json.loads(text)
        dev, ino, size, mtime = (int(x) for x in data["ident"])
        record = Record(
            str(data["file"]), str(data["request"]), str(data["job_id"]), str(data["taken_at"]), (dev, ino, size, mtime)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if os.path.normpath(record.file) == os.path.normpath(rel) else None


# -- after a restart: a claim cut short -----------------------------------------------------------------------


def settle(root: Path, work: Path, job_dir: Path) -> list[str]:
    """A claim cut short in ``job_dir`` made whole: the records written when its request got there, its links
    undone when it did not. Returns what it did, for the log; empty when there was nothing to do.
    """
    with contextlib.suppress(FileNotFoundError):
        (job_dir / f"{MANIFEST}.tmp").unlink()  # cut short before the plan was whole: no link was made
    if not (job_dir / MANIFEST).exists():
        return []
    read = _read_plan(job_dir)
    if read is None:
        return ["unreadable plan kept"]
    request_file, name, taken_at, plan = read
    done: list[str] = []
    if os.path.lexists(job_dir / request_file):  # the claim happened: only the records are missing
        for item in plan:
            st = _taken_as(_lstat(root / item.source), _lstat(job_dir / item.dest))
            if st is not None:
                with contextlib.suppress(OSError):
                    remember(work, Record(item.source, name, job_dir.name, taken_at, identity(st)))
        done.append("claim finished")
    else:
        for item in plan:
            done.extend(_unlink_or_keep(root, work, job_dir, item))
        done.append("claim undone")
    (job_dir / MANIFEST).unlink()
    return done


def _taken_as(source: os.stat_result | None, dest: os.stat_result | None) -> os.stat_result | None:
    """What was taken: the inbox file when the job dir holds it (a link, or a copy with its size and mtime),
    else the job dir's file (the inbox has another one now, or none)."""
    if source is not None and dest is not None:
        copy = (source.st_size, source.st_mtime_ns) == (dest.st_size, dest.st_mtime_ns)
        return source if copy or os.path.samestat(source, dest) else dest
    return dest or source


def _unlink_or_keep(root: Path, work: Path, job_dir: Path, item: Plan) -> list[str]:
    """Undoes one link of a claim that did not happen, never losing a file: a name with another link (the
    inbox's) goes; a last copy goes back to the inbox, or is kept in WORK/shared when the inbox has a new one."""
    dest = job_dir / item.dest
    st = _lstat(dest)
    if st is None:
        return []
    if st.st_nlink > 1:
        dest.unlink()
        return []
    source = root / item.source
    if not os.path.lexists(source):
        os.rename(dest, source)
        return [f"{item.source} put back into the inbox"]
    kept = _free(work / _SHARED / job_dir.name / item.dest)
    kept.parent.mkdir(parents=True, exist_ok=True)
    os.rename(dest, kept)
    return [f"{item.source} kept as {kept}"]


# -- the way out of the inbox ------------------------------------------------------------------------------


def sweep(root: Path, work: Path, rel: str, ident: Ident, job_id: str) -> Literal["swept", "kept", "changed", "gone"]:
    """Takes a file that was taken already out of the inbox, never losing one.

    It is renamed into the work area first (so whatever is at that name then is what gets looked at), then:
    the same file with another link (in a job dir) loses this name (``swept``); the same file without one (the
    filesystem made a copy for the job) stays as ``WORK/shared/JOB_ID/REL`` (``kept``); a different file (its
    owner dropped a new one meanwhile) goes back to the inbox (``changed``). ``gone``: nothing was there.
    Raises OSError when the work area cannot be written.
    """
    source = root / rel
    st = _lstat(source)
    if st is None:
        return "gone"
    if identity(st) != ident:
        return "changed"
    shared = work / _SHARED
    shared.mkdir(parents=True, exist_ok=True)
    moving = shared / f".{secrets.token_hex(8)}"
    try:
        os.rename(source, moving)
    except FileNotFoundError:
        return "gone"
    st = os.lstat(moving)
    if identity(st) != ident:  # replaced between the look and the rename: it is not ours to move
        if not os.path.lexists(source):
            os.rename(moving, source)
        else:
            os.rename(moving, _free(shared / job_id / rel))
        return "changed"
    if st.st_nlink > 1:
        moving.unlink()  # another name of a file that stays in a job dir
        return "swept"
    kept = _free(shared / job_id / rel)
    kept.parent.mkdir(parents=True, exist_ok=True)
    os.rename(moving, kept)
    return "kept"


def _free(path: Path) -> Path:
    """``path``, or ``path`` with ``.2``, ``.3`` … before its suffix when taken (a rename would replace it)."""
    n = 1
    candidate = path
    while os.path.lexists(candidate):
        n += 1
        candidate = path.with_name(f"{path.stem}.{n}{path.suffix}")
    return candidate


def _lstat(path: Path) -> os.stat_result | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode) else None
