"""``runwatch doctor``'s checks of each inbox's folders and filesystem, and of inotify.

The folders exist (or can be made) with read and write permission; the work area shares the inbox's filesystem,
so claims are atomic renames; the filesystem type (on a network share, events from other machines never
arrive); inotify events really arrive (a dot-named canary file, removed at once; scans ignore dot-names); the
per-user inotify limits leave room for every watched inbox. Nothing is created but the canary.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from runwatch.doctorcheck import CheckResult, Status, _existing_ancestor, _fail, _ok, _warn

if TYPE_CHECKING:
    from runwatch.config import Config, InboxConfig

PROC_INOTIFY = Path("/proc/sys/fs/inotify")
# Headroom for the other programs of the same user, which draw on the same per-user inotify limits.
_SPARE_INSTANCES = 8
_SPARE_WATCHES = 1000
_MAX_DIR_WATCHES = 1000  # the inbox watcher's cap on subfolder watches per inbox


def _folder(name: str, path: Path, *, missing: Status, missing_hint: str) -> CheckResult:
    if not path.exists():
        parent = _existing_ancestor(path)
        if missing == "FAIL" or not os.access(parent, os.W_OK | os.X_OK):
            return _fail(name, f"{path}: missing", missing_hint)
        return CheckResult(
            missing,
            name,
            f"{path}: missing; runwatch creates it when needed",
            missing_hint if missing != "PASS" else "",
        )
    if not path.is_dir():
        return _fail(name, f"{path}: not a folder", "point the config at a folder")
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        return _fail(
            name,
            f"{path}: no read and write permission for uid {os.geteuid()}",
            "give the service user read/write access (chown/chmod or an ACL)",
        )
    return _ok(name, f"{path}: readable and writable")


def check_folders(inbox: InboxConfig) -> list[CheckResult]:
    """The inbox, outbox and work area exist (or can be made) with read and write permission."""
    return [
        _folder(
            f"{inbox.name}/inbox",
            inbox.path,
            missing="FAIL",
            missing_hint="create it, or mount the share it lives on (the daemon pauses a missing inbox)",
        ),
        _folder(
            f"{inbox.name}/outbox",
            inbox.outbox,
            missing="WARN",
            missing_hint="create it; if it lives on a share, mount it first, or outputs land on the local disk",
        ),
        _folder(
            f"{inbox.name}/work",
            inbox.work,
            missing="PASS",
            missing_hint="its parent folder must be writable by the service user",
        ),
    ]


def check_same_filesystem(inbox: InboxConfig) -> CheckResult:
    """The work area is on the inbox's filesystem, so claims are atomic renames."""
    name = f"{inbox.name}/same-fs"
    from runwatch.mounts import same_filesystem

    work = _existing_ancestor(inbox.work)
    try:
        same = same_filesystem(work, inbox.path)
    except OSError as exc:
        return _fail(name, f"cannot stat {inbox.path}: {exc.strerror}", "check the inbox folder")
    if not same:
        return _fail(
            name,
            f"the work area {inbox.work} is on another filesystem than {inbox.path}",
            "put work on the inbox's filesystem (default: INBOX/.runwatch); claims must be renames",
        )
    return _ok(name, f"the work area {inbox.work} is on the inbox's filesystem")


def _network(inbox: InboxConfig, mounts: Path | None) -> tuple[str | None, bool]:
    from runwatch.mounts import fs_type, is_network_fs

    return fs_type(inbox.path, mounts), is_network_fs(inbox.path, mounts=mounts)


def check_filesystem_type(inbox: InboxConfig, mounts: Path | None = None) -> CheckResult:
    """The inbox's filesystem type; on a network share, events from other machines never arrive.

    ``mounts`` reads another mountinfo-format file than ``/proc/self/mountinfo`` (for tests).
    """
    name = f"{inbox.name}/fs-type"
    kind, network = _network(inbox, mounts)
    if kind is None:
        return _warn(
            name, f"{inbox.path}: the filesystem type cannot be told", "set polling = true if this is a network share"
        )
    if not network:
        return _ok(name, f"{kind} (local)")
    if inbox.polling:
        return _ok(name, f"{kind} (network share), polling = true")
    return _warn(
        name,
        f"{kind} is a network filesystem: inotify does not see files written by other machines",
        f"use polling = true for inbox {inbox.name!r} (and a settle time that fits the share)",
    )


def check_events(inbox: InboxConfig, timeout: float = 2.0, mounts: Path | None = None) -> CheckResult:
    """A canary file written into the inbox is reported by inotify within ``timeout`` seconds."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers.inotify import InotifyObserver

    name = f"{inbox.name}/events"
    if inbox.polling or _network(inbox, mounts)[1]:
        return _ok(name, "not needed: this inbox is polled")
    canary = inbox.path / f".runwatch-doctor-{secrets.token_hex(6)}"
    arrived = threading.Event()

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            paths = (event.src_path, getattr(event, "dest_path", ""))
            if any(os.fsdecode(p) == str(canary) for p in paths if p):
                arrived.set()

    observer = InotifyObserver()
    try:
        observer.schedule(Handler(), str(inbox.path), recursive=False)
        observer.start()
    except OSError as exc:
        return _warn(
            name,
            f"inotify cannot watch {inbox.path}: {exc}",
            "raise fs.inotify.max_user_instances/max_user_watches, or set polling = true",
        )
    try:
        started = time.monotonic()
        try:
            fd = os.open(canary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            os.write(fd, b"runwatch doctor canary\n")
            os.close(fd)
        except OSError as exc:
            return _fail(
                name,
                f"cannot write a test file in {inbox.path}: {exc.strerror}",
                "give the service user write access to the inbox",
            )
        if arrived.wait(timeout):
            return _ok(name, f"inotify events arrive ({(time.monotonic() - started) * 1000:.0f} ms)")
        return _warn(
            name,
            f"no inotify event for a file written into {inbox.path} within {timeout:g} s",
            f"set polling = true for inbox {inbox.name!r}: events do not arrive here",
        )
    finally:
        observer.stop()
        observer.join(2.0)
        canary.unlink(missing_ok=True)


def _watches_needed(folder: Path) -> int:
    """One watch for the inbox and one per visible subfolder, as the inbox watcher places them."""
    count = 1
    for _, dirs, _ in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith((".", "~"))]
        count += len(dirs)
        if count > _MAX_DIR_WATCHES:
            return _MAX_DIR_WATCHES + 1
    return count


def check_inotify_limits(config: Config, proc: Path = PROC_INOTIFY, mounts: Path | None = None) -> CheckResult:
    """The per-user inotify limits leave room for one instance per watched inbox and its watches."""
    name = "inotify-limits"
    watched = [i for i in config.inboxes if not i.polling and i.path.is_dir() and not _network(i, mounts)[1]]
    if not watched:
        return _ok(name, "not used: every inbox is polled (or missing)")
    try:
        watches = int((proc / "max_user_watches").read_text().strip())
        instances = int((proc / "max_user_instances").read_text().strip())
    except (OSError, ValueError) as exc:
        return _warn(
            name,
            f"cannot read the inotify limits in {proc}: {exc}",
            "on a system without inotify set polling = true for every inbox",
        )
    need_instances = len(watched)
    need_watches = sum(_watches_needed(i.path) for i in watched)
    detail = (
        f"max_user_instances {instances:,} for {need_instances} inbox(es); max_user_watches {watches:,} "
        f"for {need_watches:,} folder(s)"
    )
    low = []
    if instances < need_instances + _SPARE_INSTANCES:
        low.append(f"sysctl fs.inotify.max_user_instances={max(128, 2 * (need_instances + _SPARE_INSTANCES))}")
    if watches < need_watches + _SPARE_WATCHES:
        low.append(f"sysctl fs.inotify.max_user_watches={max(65536, 4 * (need_watches + _SPARE_WATCHES))}")
    if low:
        return _warn(
            name,
            detail + ": low",
            " and ".join(low) + " (persist in /etc/sysctl.d/); runwatch falls back to polling when they run out",
        )
    return _ok(name, detail)
