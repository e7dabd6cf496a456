"""Local media: which values of a request are files in the inbox, and the containment rules they must pass.

A media value is either a URI Runway fetches itself (``https://``, ``data:``, ``runway://``) or a path,
taken relative to the request file's folder, that must resolve (``..`` and symlinks followed) to a regular,
non-empty file inside the inbox whose content (not its name) is of the kind the field wants. FIFOs, sockets
and devices are recognised by ``lstat`` and never opened. The request file itself must resolve inside the
inbox too. These rules are what keeps a request from sending files from elsewhere on the machine, so they
sit in one module of their own, to be read and reviewed whole. The same rules tell which inbox files a
request that fails its checks meant to send (:func:`mentioned_files`), so the inbox does not send them alone.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runwatch.catalog import PathT
from runwatch.catalogtypes import EndpointNames
from runwatch.errors import RequestError
from runwatch.mediaprobe import probe_file
from runwatch.requestfile import is_utf8, parse, read
from runwatch.requestproblems import Problems, article, fail, show

__all__ = [
    "MAX_MEDIA_BYTES",
    "LocalMedia",
    "MediaChecker",
    "check_source",
    "guess_media",
    "inside",
    "mentioned_files",
]

MAX_MEDIA_BYTES = 200 << 20  # Runway's upload limit, the largest any transport takes
_PASS_SCHEMES = ("https://", "data:", "runway://")
# Runway's caps on a data URI's length (docs: 5 MB images, 16 MB video and audio).
DATA_URI_CAPS = {"image": 5 * 1024 * 1024, "video": 16 * 1024 * 1024, "audio": 16 * 1024 * 1024}


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
        return f"a data: URI of {len(value):,} characters; Runway takes at most {DATA_URI_CAPS[kind]:,} for {kind}"
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


@dataclass(frozen=True)
class LocalMedia:
    """A media field whose value is a file in the inbox, to be uploaded and replaced by a URI."""

    field: PathT
    rel: str
    file: Path  # fully resolved (symlinks followed), inside the resolved root
    kind: str
    size: int
    content_type: str | None


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def check_source(path: Path, root: Path) -> None:
    real = os.path.realpath(path)
    if not inside(real, os.path.realpath(root)):
        raise fail(path, "", "resolves to a place outside the inbox; only files inside it are read")


class MediaChecker:
    """Checks media values and collects the local files among them."""

    def __init__(self, source: Path, root: Path, problems: Problems, *, bare: bool) -> None:
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
        wants = " or ".join(article(k) for k in sorted(kinds)) if kinds else "a media file"
        lowered = value.lower()
        if lowered.startswith("data:"):
            problem = data_uri_problem(value, kinds)
            if problem:
                self.problems.add(field, problem)
            return
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
            add(field, f"file not found: {show(value)}", waiting=True)
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
        if st.st_size > MAX_MEDIA_BYTES:
            add(field, f"{show(value)} is {st.st_size} bytes; at most 200 MiB can be uploaded")
            return
        try:
            info = probe_file(real)
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
