"""Filesystem facts about an inbox folder: which filesystem it is on, and whether two paths share one.

Two decisions rest on them. inotify only hears changes made by this machine's kernel, so an inbox on a
network or FUSE filesystem is polled instead; and a claim is an atomic rename only when the work area is on
the inbox's filesystem. The answers come from ``/proc/self/mountinfo`` (or ``/proc/mounts``) and ``stat``,
which have nothing to do with watching itself, and ``runwatch doctor`` asks the same questions.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["fs_type", "is_network_fs", "same_filesystem"]

_NETWORK_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "ceph",
        "glusterfs",
        "afs",
        "davfs",
        "fuse",
        "lustre",
        "gpfs",
        "beegfs",
        "ocfs2",
        "gfs2",
        "vboxsf",
        "virtiofs",
    }
)
_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def fs_type(path: Path, mounts: Path | None) -> str | None:
    """The type of the filesystem ``path`` is on, from mountinfo (or /proc/mounts); None if unknown."""
    sources = [mounts] if mounts is not None else [Path("/proc/self/mountinfo"), Path("/proc/mounts")]
    target = os.path.realpath(path)
    for source in sources:
        try:
            lines = source.read_text("utf-8", "replace").splitlines()
        except OSError:
            continue
        best: tuple[int, str] | None = None
        for line in lines:
            if " - " in line:  # mountinfo: id parent dev root MOUNTPOINT opts [optional...] - TYPE src opts
                left, _, right = line.partition(" - ")
                fields, rest = left.split(), right.split()
                if len(fields) < 5 or not rest:
                    continue
                point, kind = _unescape(fields[4]), rest[0]
            else:  # /proc/mounts: SOURCE MOUNTPOINT TYPE opts 0 0
                fields = line.split()
                if len(fields) < 3:
                    continue
                point, kind = _unescape(fields[1]), fields[2]
            # The deepest mount wins; of equals the later, which is stacked on top.
            if (_inside(target, point) or point == "/") and (best is None or len(point) >= best[0]):
                best = (len(point), kind)
        if best is not None:
            return best[1]
    return None


def is_network_fs(path: Path, *, mounts: Path | None = None) -> bool:
    """Is ``path`` on a network or FUSE filesystem, where inotify misses other machines' changes?

    ``mounts`` reads another mountinfo-format file than ``/proc/self/mountinfo`` (for tests).
    """
    kind = fs_type(path, mounts)
    return kind is not None and (kind in _NETWORK_FS or kind.startswith("fuse."))


def same_filesystem(a: Path, b: Path) -> bool:
    """Are both paths on one filesystem, so that a rename between them is atomic? OSError if either is gone."""
    return os.stat(a).st_dev == os.stat(b).st_dev
