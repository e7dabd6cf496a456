"""The outbox: finished outputs and one status file per request, each appearing only complete.

Every file is written under a temporary name in the outbox itself (``.NAME.partN.<hex>.tmp`` for an output,
``.NAME.status.json.<hex>.tmp`` for a status file; the leading dot and ``.tmp`` make every scanner skip them),
fsynced, then moved into place on the same filesystem, and the directory is fsynced, so a reader or a crash
never meets half a file (a status file of a state the daemon rewrites after a restart skips the fsyncs). A
status file replaces its previous version; an output never replaces anything: a taken name gets a
deterministic ``.2``, ``.3``... suffix, because a user's file is never overwritten.

An output is checked before it is published (and before its request can succeed): its size against the
Content-Length announced, and its container against its media type (``runwatch.mediacheck``). A bad output is a
failed download, counted like any other.

Status files go through :func:`redact` on the way out: they never carry an API key or a presigned signature.
OSError and httpx errors become :class:`~runwatch.errors.OutboxError` here.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

import httpx
import tomli_w

from runwatch import __version__
from runwatch.errors import OutboxError, RunwatchError
from runwatch.mediacheck import check_output, expected_format
from runwatch.redact import redact
from runwatch.redact import redact_text as _redact_text

if TYPE_CHECKING:
    from runwatch.config import InboxConfig
    from runwatch.jobs.job import Job

__all__ = [
    "NAME_MAX",
    "STATUS_KEYS",
    "DownloadError",
    "OutputRecord",
    "clean_partials",
    "download_outputs",
    "extension_for",
    "fit_name",
    "ordered_status",
    "outbox_of",
    "output_name",
    "redact",
    "reserve_unique",
    "status_path",
    "write_status",
]

StatusFormat = Literal["json", "toml"]

#: The status file's keys, in the contract's order (§5).
STATUS_KEYS = (
    "name",
    "state",
    "endpoint",
    "model",
    "task_id",
    "progress",
    "estimated_credits",
    "credits",
    "created_at",
    "updated_at",
    "finished_at",
    "outputs",
    "error",
    "request",
    "runwatch_version",
)

CONTENT_EXTENSIONS: dict[str, str] = {
    "video/mp4": "mp4",
    "video/quicktime": "mov",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/flac": "flac",
    "audio/ogg": "ogg",
    "application/zip": "zip",
}

# Our temporary names and nothing else: a user's ".notes.tmp" is not ours to delete.
_TEMP = re.compile(r"\..+\.(?:part\d+|status\.(?:json|toml))\.[0-9a-f]{16}\.tmp", re.S)
#: Bytes in one file name (Linux filesystems, and what SMB and NFS servers allow).
NAME_MAX = 255
_TEMP_NAME_MAX = 100  # bytes of NAME kept in a temporary name, so it stays under NAME_MAX
_STATUS_SUFFIXES = (".status.json", ".status.toml")
_UNIQUE_ROOM = len(".9999")  # what reserve_unique may add to an output's name
_RETRY_DELAYS = (0.25, 0.5, 1.0)  # network errors on an output: three retries, short backoff
_EXPIRED = frozenset({403, 404})  # CloudFront's answer to an expired or altered _jwt
_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK})


# -- status files ---------------------------------------------------------------------------------


def outbox_of(job: Job, inbox: InboxConfig | None) -> Path | None:
    """Where the job's outputs and status file go: its inbox's outbox (``inbox``, as configured now), or the
    folder it was submitted for."""
    if inbox is not None:
        return inbox.outbox
    return Path(job.outbox) if job.outbox else None


def status_path(outbox: Path, name: str, fmt: StatusFormat) -> Path:
    """``OUTBOX/NAME.status.json`` or ``OUTBOX/NAME.status.toml``; a NAME too long for that is shortened
    (see :func:`fit_name`), so a request refused for its long name still gets its status file."""
    _check_name(name)
    return outbox / fit_name(name, f".status.{fmt}")


def fit_name(name: str, tail: str, room: int = 0) -> str:
    """``name + tail`` when it fits in one file name (:data:`NAME_MAX` bytes, less ``room`` kept for a
    suffix added later); else ``name`` cut on a character boundary, then ``~`` and the first 8 hex digits of
    the SHA-256 of the whole name, then ``tail``. Two long names that begin alike still get two files."""
    raw = os.fsencode(name)
    limit = NAME_MAX - room - len(os.fsencode(tail))
    if len(raw) <= limit:
        return name + tail
    digest = hashlib.sha256(raw).hexdigest()[:8]
    cut = max(0, limit - 1 - len(digest))
    while cut > 0 and raw[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte: the cut would split a character
        cut -= 1
    return f"{os.fsdecode(raw[:cut])}~{digest}{tail}"


def ordered_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status keys in the contract's order, then any others alphabetically (stable diffs for readers)."""
    ordered = {key: status[key] for key in STATUS_KEYS if key in status}
    ordered.update((key, status[key]) for key in sorted((k for k in status if k not in ordered), key=str))
    return ordered


def status_document(job: Job) -> dict[str, Any]:
    """The status file's content for a job: the contract's keys in its order, every string valid UTF-8."""
    document: dict[str, Any] = _printable_all(
        {
            "name": job.name,
            "state": job.state,
            "endpoint": job.endpoint,
            "model": job.model,
            "task_id": job.task_id,
            "progress": job.progress,
            "estimated_credits": job.estimated_credits,
            "credits": job.credits,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "finished_at": job.finished_at,
            "outputs": [{"file": o["file"], "bytes": o["bytes"], "sha256": o["sha256"]} for o in job.outputs],
            "error": job.error,
            "request": job.request_path,
            "runwatch_version": __version__,
        }
    )
    if job.credits_estimated:  # the task's final cost could not be read: say the figure is runwatch's estimate
        document["credits_estimated"] = True
    return document


def printable(text: str) -> str:
    """Text that came from a file name, made valid UTF-8 (undecodable bytes shown as \\xNN)."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def _printable_all(value: Any) -> Any:
    # Names and messages may carry the undecodable bytes of a file name.
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {k: _printable_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable_all(v) for v in value]
    return value


def write_status(
    outbox: Path,
    name: str,
    fmt: StatusFormat,
    status: Mapping[str, Any],
    *,
    durable: bool = True,
) -> Path:
    """Write the status file atomically (a reader sees the old or the new version, never half of one).

    ``durable=False`` skips the fsyncs: for states the daemon writes again after a restart anyway (it
    rewrites the status of every job it still follows), so a power cut can cost nothing but a stale view.
    """
    path = status_path(outbox, name, fmt)
    try:
        if fmt == "json":
            plain = redact(ordered_status(status))
            data = (json.dumps(plain, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()
        else:
            data = tomli_w.dumps(redact(ordered_status(status), drop_none=True)).encode()
    except (TypeError, ValueError) as exc:
        raise OutboxError(f"{path}: status cannot be written as {fmt}: {exc}") from exc
    fd, tmp = _create_temp(outbox, name, f"status.{fmt}")
    try:
        # Plain os calls, no file object: a thousand tasks' status files are rewritten within seconds, and a
        # file object costs four more system calls each time (fstat, ioctl, lseek...).
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutboxError(f"{path}: cannot write status: {exc}") from exc
    if durable:
        _fsync_dir(outbox)
    return path


# -- output names ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputRecord:
    """One downloaded output. ``file`` is relative to the outbox; ``index`` is its place in the task's output."""

    file: str
    bytes: int
    sha256: str
    index: int

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "bytes": self.bytes, "sha256": self.sha256}


def output_name(name: str, index: int, count: int, ext: str) -> str:
    """``NAME.EXT`` for a task's only output, ``NAME_1.EXT``, ``NAME_2.EXT``... when there are several.

    ``index`` is 0-based (the output's place in the task's list); the suffix people see is 1-based.
    """
    _check_name(name)
    ext = ext.lstrip(".")
    tail = ("" if count <= 1 else f"_{index + 1}") + (f".{ext}" if ext else "")
    return fit_name(name, tail, room=_UNIQUE_ROOM)


def reserve_unique(outbox: Path, filename: str) -> Path:
    """The first free one of ``filename``, ``STEM.2.EXT``, ``STEM.3.EXT``... in the outbox (nothing created).

    Names that look like a status file are treated as taken: a request named after another's output must
    never have its status file land on that output.
    """
    _check_name(filename)
    stem, dot, ext = filename.rpartition(".")
    if not stem:  # no extension (or only a leading dot): the suffix goes at the end
        stem, dot, ext = filename, "", ""
    for n in range(1, 10_000):
        candidate = filename if n == 1 else f"{stem}.{n}{dot}{ext}"
        path = outbox / candidate
        if not candidate.endswith(_STATUS_SUFFIXES) and not os.path.lexists(path):
            return path
    raise OutboxError(f"{outbox}: no free name for {filename}")


def extension_for(url: str, content_type: str | None) -> str:
    """The output's extension: from its Content-Type, else from the URL path, else ``bin``."""
    if content_type:
        ext = CONTENT_EXTENSIONS.get(content_type.split(";", 1)[0].strip().lower())
        if ext:
            return ext
    try:
        path = unquote(urlsplit(url).path)
    except ValueError:
        return "bin"
    ext = posixpath.splitext(posixpath.basename(path))[1][1:].lower()
    # The extension lands in a file name: only short alphanumerics are trusted.
    return ext if re.fullmatch(r"[a-z0-9]{1,10}", ext) else "bin"


# -- downloads ------------------------------------------------------------------------------------


class DownloadError(OutboxError):
    """Outputs could not all be downloaded. ``records`` are those that were (``done`` included), so the
    caller can record them and not fetch them again into a second, suffixed file."""

    def __init__(self, message: str, records: Sequence[OutputRecord] = ()) -> None:
        self.records = sorted(records, key=lambda r: r.index)
        super().__init__(message)


class _Expired(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class _Transient(Exception):
    pass


def download_outputs(
    http: httpx.Client,
    urls: Sequence[str],
    outbox: Path,
    name: str,
    *,
    done: Sequence[OutputRecord] = (),
    refresh: Callable[[], Sequence[str]] | None = None,
    chunk: int = 1 << 20,
    stop: threading.Event | None = None,
) -> list[OutputRecord]:
    """Download every output not already in ``done``; return all records sorted by index.

    Streamed in ``chunk``-sized pieces (memory stays flat whatever the size). A 403/404 means the URL
    expired: ``refresh()`` supplies fresh URLs and the output is tried once more. Network errors and
    passing server errors are retried three times. Failures raise :class:`DownloadError` (an
    ``OutboxError``) carrying the outputs finished so far; no temporary file is left behind.
    """
    _check_name(name)
    records = {r.index: r for r in done}
    current = list(urls)
    for index in range(len(urls)):
        if index in records:
            continue
        refreshed = False
        failures = 0
        while True:
            if stop is not None and stop.is_set():
                raise DownloadError("stopped", list(records.values()))
            url = current[index]
            try:
                records[index] = _download_one(http, url, outbox, name, index, len(urls), chunk, stop)
                break
            except _Expired as exc:
                if refresh is None or refreshed:
                    raise DownloadError(
                        f"{name}: output {index + 1}: HTTP {exc.status} from {_redact_text(url)}"
                        + (" even after refreshing the URL" if refreshed else " (expired URL, no way to refresh)"),
                        list(records.values()),
                    ) from None
                refreshed = True
                try:
                    current = list(refresh())
                except RunwatchError as exc:  # e.g. ApiError: still report what is already on disk
                    raise DownloadError(
                        f"{name}: output {index + 1}: cannot refresh the expired URL: {exc}", list(records.values())
                    ) from exc
                if len(current) <= index:
                    raise DownloadError(
                        f"{name}: output {index + 1}: the refreshed task lists only {len(current)} output(s)",
                        list(records.values()),
                    ) from None
            except _Transient as exc:
                failures += 1
                if failures > len(_RETRY_DELAYS):
                    raise DownloadError(
                        f"{name}: output {index + 1}: {exc} (gave up after {failures} attempts)",
                        list(records.values()),
                    ) from exc.__cause__
                delay = _RETRY_DELAYS[failures - 1]
                if stop is not None:
                    if stop.wait(delay):
                        raise DownloadError("stopped", list(records.values())) from None
                else:
                    time.sleep(delay)
            except OutboxError as exc:
                raise DownloadError(str(exc), list(records.values())) from (exc.__cause__ or exc)
    return sorted(records.values(), key=lambda r: r.index)


def _download_one(
    http: httpx.Client,
    url: str,
    outbox: Path,
    name: str,
    index: int,
    count: int,
    chunk: int,
    stop: threading.Event | None,
) -> OutputRecord:
    """One attempt: stream to a temporary file, then publish it under a free name."""
    where = f"{name}: output {index + 1} from {_redact_text(url)}"
    tmp: Path | None = None
    try:
        with http.stream("GET", url, follow_redirects=True) as response:
            if response.status_code in _EXPIRED:
                raise _Expired(response.status_code)
            if response.status_code in _TRANSIENT:
                raise _Transient(f"{where}: HTTP {response.status_code}")
            if not response.is_success:
                raise OutboxError(f"{where}: HTTP {response.status_code}")
            content_type = response.headers.get("content-type")
            ext = extension_for(url, content_type)
            announced = _announced_length(response)
            fd, tmp = _create_temp(outbox, name, f"part{index}")
            digest, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as f:
                for data in response.iter_bytes(chunk):
                    if stop is not None and stop.is_set():
                        raise OutboxError("stopped")
                    f.write(data)
                    digest.update(data)
                    size += len(data)
                f.flush()
                os.fsync(f.fileno())
        # Runway's answer is not trusted: the size it announced, and a container that parses for its type.
        if announced is not None and size != announced:
            raise OutboxError(f"{name}: output {index + 1} is {size} bytes, but {announced} were announced")
        problem = check_output(tmp, expected_format(content_type, _url_extension(url)))
        if problem is not None:
            raise OutboxError(f"{name}: output {index + 1} {problem} (from {_redact_text(url)})")
        filename = output_name(name, index, count, ext)
        earlier = _already_there(outbox, filename, size, digest.hexdigest())
        final = earlier or _publish(tmp, outbox, filename)
        return OutputRecord(final.name, size, digest.hexdigest(), index)
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise OutboxError(f"{where}: {type(exc).__name__}: {exc}") from exc
    except httpx.TransportError as exc:
        raise _Transient(f"{where}: {type(exc).__name__}") from exc
    except httpx.HTTPError as exc:
        raise OutboxError(f"{where}: {type(exc).__name__}: {exc}") from exc
    except OSError as exc:  # disk full, outbox gone: not worth a quick retry
        raise OutboxError(f"{where}: {exc}") from exc
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)  # already gone after a successful publish


def _announced_length(response: httpx.Response) -> int | None:
    """Content-Length, when it counts the bytes the body decodes to (no content coding)."""
    if response.headers.get("content-encoding", "identity").strip().lower() != "identity":
        return None
    try:
        length = int(response.headers.get("content-length", ""))
    except ValueError:
        return None
    return length if length >= 0 else None


def _url_extension(url: str) -> str:
    try:
        return posixpath.splitext(unquote(urlsplit(url).path))[1]
    except ValueError:
        return ""


def _already_there(outbox: Path, filename: str, size: int, sha256: str) -> Path | None:
    """The file among ``filename``, ``STEM.2.EXT``... holding exactly these bytes, if any.

    A kill after an output was published but before the journal recorded it makes the next start download it
    again: the same bytes under the same name are that earlier download, not a reason for a ``.2`` copy.
    """
    stem, dot, ext = filename.rpartition(".")
    if not stem:
        stem, dot, ext = filename, "", ""
    for n in range(1, 10_000):
        path = outbox / (filename if n == 1 else f"{stem}.{n}{dot}{ext}")
        try:
            if not path.is_file() or path.is_symlink():
                return None
            if path.stat().st_size == size and _sha256(path) == sha256:
                return path
        except OSError:
            return None
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _publish(tmp: Path, outbox: Path, filename: str) -> Path:
    """Give ``tmp`` a free final name without ever replacing a file that appeared meanwhile."""
    for _ in range(100):
        final = reserve_unique(outbox, filename)
        try:
            # link() fails with EEXIST instead of replacing: the check and the move are one step.
            os.link(tmp, final)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            # No hard links here (FAT, some SMB/FUSE mounts): check, then rename; a far narrower window.
            if os.path.lexists(final):
                continue
            os.replace(tmp, final)
        else:
            tmp.unlink()
        _fsync_dir(outbox)
        return final
    raise OutboxError(f"{outbox}: {filename}: the chosen name kept being taken")


def clean_partials(outbox: Path, *, min_age: float = 0.0) -> int:
    """Remove temporary files a crash left in the outbox (only names of our own pattern, not written to for
    ``min_age`` seconds); how many."""
    removed = 0
    before = time.time() - min_age
    try:
        with os.scandir(outbox) as entries:
            for entry in entries:
                if (
                    _TEMP.fullmatch(entry.name)
                    and entry.is_file(follow_symlinks=False)
                    and (not min_age or entry.stat(follow_symlinks=False).st_mtime < before)
                ):
                    Path(entry.path).unlink(missing_ok=True)
                    removed += 1
    except OSError as exc:
        raise OutboxError(f"{outbox}: cannot clean temporary files: {exc}") from exc
    return removed


# -- helpers --------------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    # Names come from request files: one path component, nothing that escapes the outbox.
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise OutboxError(f"not a usable file name: {name!r}")


def _create_temp(outbox: Path, name: str, kind: str) -> tuple[int, Path]:
    short = os.fsencode(name)[:_TEMP_NAME_MAX].decode(errors="ignore") or "x"
    path = outbox / f".{short}.{kind}.{secrets.token_hex(8)}.tmp"
    try:
        # 0o666 under the umask, as any new file: mkstemp's 0o600 would hide outputs from the share's readers.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise OutboxError(f"{outbox}: cannot create a temporary file: {exc}") from exc
    return fd, path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise OutboxError(f"{directory}: cannot open the outbox: {exc}") from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some network filesystems refuse fsync on a directory; the rename itself has happened.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise OutboxError(f"{directory}: cannot sync the outbox: {exc}") from exc
    finally:
        os.close(fd)
