"""What the one-shot commands (``validate``, ``submit``, ``credits``, ``doctor``, ``cancel`` and friends) share:
their exit codes, the configuration they load, whether a daemon runs, the S3 client they build, and how they
print amounts and tables.

Each command writes to the ``out`` stream it is given and returns the exit code.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from runwatch.errors import ConfigError

if TYPE_CHECKING:
    from runwatch.config import Config
    from runwatch.jobs.job import Job

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "daemon_holder",
    "job_owners",
    "load_optional_config",
    "load_required_config",
    "make_s3_client",
    "node_column",
    "plural",
    "readable",
    "with_node",
    "write_table",
]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def readable(credits: float) -> str:
    """Credits (or any count) as people read them: 1,234 or 12.5."""
    if float(credits).is_integer():
        return f"{int(credits):,}"
    return f"{credits:,.2f}".rstrip("0").rstrip(".")


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def write_table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Columns padded to their widest cell; the last column is never padded."""
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] + "\n")


def job_owners(journal: Any, jobs: Sequence[Job]) -> dict[str, str] | None:
    """``runwatch status`` on a journal nodes share: the node following each unfinished job (ended jobs have
    none). None with a journal one node owns (SQLite), where the status shows no node at all."""
    from runwatch.store.pgnodes import NodeSection

    if not isinstance(journal, NodeSection):
        return None
    return journal.owners([job.id for job in jobs if not job.final])


def with_node(doc: dict[str, Any], job: Job, owners: dict[str, str] | None) -> dict[str, Any]:
    """A status document with the node following its job (``node``: null once ended), on a shared journal."""
    return doc if owners is None else dict(doc, node=owners.get(job.id))


def node_column(
    rows: Sequence[Sequence[str]], docs: Sequence[Mapping[str, Any]], owners: dict[str, str] | None
) -> list[Sequence[str]]:
    """The status table with a NODE column after STATE on a shared journal (``rows[0]`` is the header)."""
    if owners is None:
        return list(rows)
    return [
        (*row[:2], "NODE" if i == 0 else str(docs[i - 1].get("node") or ""), *row[2:]) for i, row in enumerate(rows)
    ]


def load_optional_config(explicit: str | None, env: Mapping[str, str] = os.environ) -> Config | None:
    """The config for commands that also work without one: a file named by --config or $RUNWATCH_CONFIG
    must load; when none is named and none is found, None (plain defaults)."""
    from runwatch.config import find_config, load_config

    named = bool(explicit) or bool(env.get("RUNWATCH_CONFIG"))
    try:
        path = find_config(explicit, env)
    except ConfigError:
        if named:
            raise
        return None
    return load_config(path, env)


def load_required_config(explicit: str | None, env: Mapping[str, str] = os.environ) -> Config:
    """The config for commands that need one: ConfigError when none is found or it is invalid."""
    from runwatch.config import find_config, load_config

    return load_config(find_config(explicit, env), env)


def make_s3_client(config: Config) -> Any:
    """A boto3 S3 client for the configured store (credentials from boto3's usual chain)."""
    import boto3
    from botocore.config import Config as BotoConfig

    assert config.s3 is not None
    return boto3.client(
        "s3",
        region_name=config.s3.region,
        endpoint_url=config.s3.endpoint_url,
        config=BotoConfig(
            signature_version="s3v4",
            s3={"addressing_style": config.s3.addressing_style},
            retries={"max_attempts": 5, "mode": "standard"},
        ),
    )


def daemon_holder(state_dir: Path, locks: Path = Path("/proc/locks")) -> str | None:
    """Who holds the daemon's lock on the state directory ("runwatch pid N"), or None when no daemon runs.

    Read from the kernel's lock table, which takes nothing. Without one (not Linux, or /proc hidden), by
    taking a shared lock for an instant: a daemon starting in that very instant would then find the state
    directory in use and refuse to start.
    """
    lock = state_dir / "runwatch.lock"
    try:
        info = lock.stat()
    except OSError:
        return None
    held = _in_lock_table(info, locks)
    if held is None:
        held = _lock_taken(lock)
    if not held:
        return None
    try:
        return lock.read_text(errors="replace").strip() or "another process"
    except OSError:
        return "another process"


def _in_lock_table(info: os.stat_result, locks: Path) -> bool | None:
    """Whether /proc/locks lists a flock on this file; None when the table cannot be read."""
    try:
        table = locks.read_text()
    except OSError:
        return None
    file = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2146387 0 EOF"; a waiting lock's line has "->" before FLOCK.
    return any(
        "FLOCK" in fields and "->" not in fields and file in fields for fields in map(str.split, table.splitlines())
    )


def _lock_taken(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
