"""Local media: which values of a request are files in the inbox, and the containment rules they must pass.

A media value is either a URI Runway fetches itself (``https://``, ``data:``, ``runway://``) or a path,
taken relative to the request file's folder, that must resolve (``..`` and symlinks followed) to a regular,
non-empty file inside the inbox whose content (not its name) is of the kind the field wants. FIFOs, sockets
and devices are recognised by ``lstat`` and never opened. The request file itself must resolve inside the
inbox too. These rules are what keeps a request from sending files from elsewhere on the machine, so they
sit in one module of their own, to be read and reviewed whole. The same rules tell which inbox files a
request that fails its checks meant to send (:func:`mentioned_files`), so the inbox does not send them alone.

A checked file is opened again to be sent, and between the two someone may swap it for a link to a file
elsewhere. So a file is opened, both to be checked and to be sent, only by :func:`open_beneath`: one path
component at a time from a descriptor of the root, never following a symbolic link. The device and inode it
had when checked are kept in :class:`LocalMedia`; :func:`open_media` refuses a descriptor whose file is not
that one, and the transports send the bytes read from that descriptor. A hard link is a name of the very
file it links, so it is the file that was checked that counts, not how many names it has: one made before
the check is taken (on Linux, ``fs.protected_hardlinks`` lets a person link only files they own or may read
and write), one put in the file's place after the check is refused like any other replacement.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from runwatch.catalog import PathT
from runwatch.catalogtypes import EndpointNames
from runwatch.errors import MediaChangedError, RequestError
from runwatch.medialimits import DATA_URI_CAPS, MAX_URL_LENGTH, UPLOAD_MAX, size_problem
from runwatch.mediaprobe import probe_open
from runwatch.requestfile import is_utf8, parse, read
from runwatch.requestproblems import Problems, article, fail, show

__all__ = [
    "MAX_MEDIA_BYTES",
    "LocalMedia",
    "MediaChecker",
    "TakenBy",
    "check_source",
    "guess_media",
    "inside",
    "mentioned_files",
    "open_beneath",
    "open_media",
]

MAX_MEDIA_BYTES = UPLOAD_MAX  # the largest file any transport takes
_PASS_SCHEMES = ("https://", "data:", "runway://")
_RUNWAY_URI_MAX = 5000  # characters, as Runway's API schema bounds runway:// URIs


def data_uri_problem(value: str, kinds: frozenset[str]) -> str | None:
    """What is wrong with a data: URI, checked here so a malformed one never reaches Runway."""
    head, sep, payload = value.partition(",")
    media_type = head[5:].removesuffix(";base64").strip().lower()
    if not sep or not head.lower().endswith(";base64"):
        return "a data: URI must be data:<type>;base64,<payload>"
    kind = media_type.split("/")[0]
    if kinds and kind not in kinds:
        return f"a data: URI of type {media_type or 'none'!r}; the field wants {' or '.join(sorted(kinds))}"
    if kind not in DATA_URI_CAPS:
        return f"a data: URI of type {media_type or 'none'!r}; expected a specific image, video or audio type"
    if len(value) > DATA_URI_CAPS[kind]:
        return (
            f"a data: URI of {len(value):,} characters; Runway takes {kind} data URIs of at most "
            f"{DATA_URI_CAPS[kind]:,} characters"
        )
    try:
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return "a data: URI whose payload is not valid base64"
    return None


_URI_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://|^(data|file):", re.IGNORECASE)
_KINDS = ("image", "video", "audio")
# What Runway takes per kind, by content type (as the probe names them); GIF, AVIF, HEIC and MKV are not.
_ACCEPTED_TYPES: dict[str, frozenset[str]] = {
    "image": frozenset({"image/jpeg", "image/png", "image/webp"}),
    "video": frozenset({"video/mp4", "video/quicktime", "video/webm", "video/ogg"}),
    "audio": frozenset({"audio/mpeg", "audio/mp4", "audio/wav", "audio/flac", "audio/ogg", "audio/webm"}),
}


# Who took an inbox file (by its path relative to the inbox) last, and when: (request name, ISO 8601 UTC time).
TakenBy = Callable[[str], tuple[str, str] | None]


@dataclass(frozen=True)
class LocalMedia:
    """A media field whose value is a file in the inbox, to be uploaded and replaced by a URI.

    ``root``, ``dev`` and ``ino`` say which file was checked: the resolved folder the request was read in,
    and the file's device and inode then. :func:`open_media` sends that file or nothing.
    """

    field: PathT
    rel: str
    file: Path  # fully resolved (symlinks followed), inside the resolved root
    kind: str
    size: int
    content_type: str | None
    root: Path
    dev: int
    ino: int


class CheckedFile(Protocol):
    """What :func:`open_media` reads of a checked media file (:class:`LocalMedia` fits)."""

    @property
    def rel(self) -> str: ...
    @property
    def file(self) -> Path: ...
    @property
    def root(self) -> Path: ...
    @property
    def dev(self) -> int: ...
    @property
    def ino(self) -> int: ...


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Non-blocking and no controlling terminal: whatever was put in a file's place, the open itself does nothing.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_LINKED_ERRNOS = (errno.ELOOP, errno.ENOTDIR)  # a component that is now a link, or no longer a folder


def open_beneath(root: str | Path, path: str | Path) -> int:
    """A read-only descriptor of ``path``, a resolved path inside the resolved folder ``root``.

    Opened one component at a time from a descriptor of ``root``, none followed if it is a symbolic link: a
    component that became a link since ``path`` was resolved fails with ELOOP (or ENOTDIR) rather than lead
    elsewhere. The caller ``fstat``s what it got (it may be a FIFO or a device put in the file's place).
    """
    rel = os.path.relpath(path, root)
    parts = rel.split(os.sep)
    if os.path.isabs(rel) or any(part in ("", os.curdir, os.pardir) for part in parts):
        raise OSError(errno.EXDEV, "not a file inside the folder", str(path))
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts[:-1]:
            folder = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = folder
        return os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)


def open_media(media: CheckedFile) -> int:
    """A blocking read-only descriptor of the very file that was checked, for sending it.

    Raises :class:`MediaChangedError` when a component of its path is now a symbolic link, or the file found
    is not the checked one (another device or inode, not a regular file); ``OSError`` when it cannot be
    opened (gone, unreadable).
    """
    changed = f"{media.rel}: is no longer the file that was checked"
    try:
        fd = open_beneath(media.root, media.file)
    except OSError as exc:
        if exc.errno in (*_LINKED_ERRNOS, errno.EXDEV):
            raise MediaChangedError(f"{changed}: it, or a folder on its way, is now a symbolic link") from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MediaChangedError(f"{changed}: it is now {_file_type(st.st_mode)}")
        if (st.st_dev, st.st_ino) != (media.dev, media.ino):
            raise MediaChangedError(f"{changed}: another file (or a hard link to one) was put in its place")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_source(path: Path, root: Path) -> None:
    real = os.path.realpath(path)
    if not inside(real, os.path.realpath(root)):
        raise fail(path, "", "resolves to a place outside the inbox; only files inside it are read")


class MediaChecker:
    """Checks media values and collects the local files among them.

    ``transport`` is how the files found will be sent (``s3``, ``runway`` or ``data``), whose size limits they
    must fit; ``taken`` says who took a file that is not there, if anyone did, so that the problem says so.
    """

    def __init__(
        self,
        source: Path,
        root: Path,
        problems: Problems,
        *,
        bare: bool,
        transport: str,
        taken: TakenBy | None = None,
    ) -> None:
        self.folder = os.path.abspath(source.parent)
        self.transport = transport
        self.root_lexical = os.path.abspath(root)
        self.root = os.path.realpath(root)
        self.problems = problems
        self.bare = bare
        self.taken = taken
        try:
            self.source_stat: os.stat_result | None = os.stat(source)
        except OSError:
            self.source_stat = None
        self.found: list[LocalMedia] = []

    def check(self, field: PathT, value: Any, kinds: frozenset[str]) -> None:
        """``kinds``: what the field takes (empty: any media, for fields of models the catalogue lacks)."""
        if not isinstance(value, str):
            return  # the body's validation reports the type
        wants = " or ".join(article(k) for k in sorted(kinds)) if kinds else "a media file"
        lowered = value.lower()
        if lowered.startswith("data:"):
            problem = data_uri_problem(value, kinds)
            if problem:
                self.problems.add(field, problem)
            return
        if lowered.startswith(_PASS_SCHEMES):
            longest = _RUNWAY_URI_MAX if lowered.startswith("runway://") else MAX_URL_LENGTH
            if len(value) > longest:
                self.problems.add(field, f"a URI of {len(value):,} characters; Runway takes at most {longest:,}")
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
            add(field, f"{show(value)} is an absolute path; write it relative to the request file's folder")
            return
        joined = os.path.join(self.folder, value)
        real = os.path.realpath(joined)
        if not inside(real, self.root):
            lexical = os.path.normpath(joined)
            how = (
                "leads through a symlink to"
                if inside(lexical, self.root_lexical) or inside(lexical, self.root)
                else "points to"
            )
            add(field, f"{show(value)} {how} a place outside the inbox; only files inside it can be sent")
            return
        try:
            st = os.lstat(real)  # ``real`` has no symlinks left, so lstat sees the file itself
        except FileNotFoundError:
            add(field, self._not_found(value, joined, real), waiting=True)
            return
        except OSError as exc:
            add(field, f"{show(value)} cannot be read: {exc.strerror}")
            return
        what = _file_type(st.st_mode)
        if what:
            add(field, f"{show(value)} is {what}; expected {wants} file")
            return
        if self.source_stat is not None and not self.bare and os.path.samestat(st, self.source_stat):
            add(field, f"{show(value)} is the request file itself; expected {wants} file")
            return
        if st.st_size == 0:
            add(field, f"{show(value)} is empty (0 bytes)")
            return
        try:  # what is checked is what was opened, never a name that may since point elsewhere
            fd = open_beneath(self.root, real)
        except FileNotFoundError:
            add(field, f"file not found: {show(value)}", waiting=True)
            return
        except OSError as exc:
            if exc.errno in _LINKED_ERRNOS:
                add(field, f"{show(value)} changed while it was being checked", waiting=True)
            else:
                add(field, f"{show(value)} cannot be read: {exc.strerror}")
            return
        with os.fdopen(fd, "rb") as fh:
            opened = os.fstat(fd)
            if not os.path.samestat(st, opened) or not stat.S_ISREG(opened.st_mode):
                add(field, f"{show(value)} changed while it was being checked", waiting=True)
                return
            try:
                info = probe_open(fh)
            except OSError as exc:
                add(field, f"{show(value)} cannot be read: {exc.strerror}")
                return
        if info is None:
            add(
                field,
                f"{show(value)} is not a recognised image, video or audio file (its content was checked, "
                f"not its name); expected {wants} file",
            )
            return
        if kinds and info.kind not in kinds:
            add(
                field,
                f"{show(value)} is {article(info.kind)} file ({info.content_type}); this field takes {wants} file",
            )
            return
        if info.content_type not in _ACCEPTED_TYPES[info.kind]:
            accepted = ", ".join(sorted(_ACCEPTED_TYPES[info.kind]))
            add(field, f"{show(value)} is {info.content_type}, which Runway does not accept; use {accepted}")
            return
        too_big = size_problem(self.transport, info.kind, info.content_type, opened.st_size)
        if too_big:
            add(field, f"{show(value)} is {too_big}")
            return
        self.found.append(
            LocalMedia(
                field,
                value,
                Path(real),
                info.kind,
                opened.st_size,
                info.content_type,
                Path(self.root),
                opened.st_dev,
                opened.st_ino,
            )
        )

    def _not_found(self, value: str, joined: str, real: str) -> str:
        """The problem's words: "file not found", or for a file a request took already, who took it when and
        what to do."""
        if self.taken is not None:
            lexical = os.path.relpath(os.path.normpath(joined), self.root_lexical)
            by = self.taken(lexical) or self.taken(os.path.relpath(real, self.root))
            if by is not None:
                return (
                    f"{show(value)} is not in the inbox: request {show(by[0])} took it at {by[1]}; drop it again "
                    "together with this request, or give each request its own copy"
                )
        return f"file not found: {show(value)}"


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


def mentioned_files(path: Path, root: Path) -> list[str]:
    """Files a request that failed to load seems to name: its string values that are files in the inbox.

    Parsed within the same limits as any request (a file that cannot be parsed names nothing) and resolved;
    a value that is not valid text names nothing either.
    """
    try:
        data: Any = parse(path, read(path), "toml" if path.suffix.lower() == ".toml" else "json")
    except RequestError:
        return []
    real_root = os.path.realpath(root)
    found: list[str] = []
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif (
            isinstance(value, str)
            and 0 < len(value) < 4096
            and "\0" not in value
            and ":" not in value
            and not os.path.isabs(value)
            and is_utf8(value)
        ):
            real = os.path.realpath(os.path.join(root, value))
            if inside(real, real_root) and os.path.isfile(real):
                found.append(real)
    return found


def guess_media(body: dict[str, Any], names: EndpointNames) -> list[tuple[PathT, str, frozenset[str]]]:
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
