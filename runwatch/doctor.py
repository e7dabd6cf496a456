"""``runwatch doctor``: is this machine ready to run runwatch?

Each check is a function returning a :class:`CheckResult` (PASS, WARN or FAIL, a name, what was found and,
when not PASS, what to do), so tests can call them one by one. Nothing is created: a missing folder is
reported, not made. The only things written are a dot-named canary file in each inbox (removed at once; scans
ignore dot-names) and, when S3 is configured, one small object under the prefix (deleted at once).
The API key is never shown: only where it came from and its length.

This module holds the config, state, key, API, clock and S3 checks and runs them all in order; the checks of
each inbox's folders, filesystem and inotify are in ``doctorfs``, the journal's database in ``doctordb``, the
HTTP server and notification targets in ``doctorhttp``, and the result type in ``doctorcheck``. Every check is
re-exported here.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from runwatch.doctorcheck import CheckResult, Status, _existing_ancestor, _fail, _ok, _problems, _warn
from runwatch.doctorfs import (
    PROC_INOTIFY,
    check_events,
    check_filesystem_type,
    check_folders,
    check_inotify_limits,
    check_same_filesystem,
)
from runwatch.errors import ConfigError, RunwatchError
from runwatch.ops import daemon_holder

if TYPE_CHECKING:
    from runwatch.config import Config

# The checks of every module and what doctordb and doctorhttp take from here (the result and its helpers).
__all__ = [
    "PROC_INOTIFY",
    "CheckResult",
    "Status",
    "_fail",
    "_ok",
    "_problems",
    "_warn",
    "check_api",
    "check_api_key",
    "check_clock",
    "check_config",
    "check_events",
    "check_filesystem_type",
    "check_folders",
    "check_inotify_limits",
    "check_s3",
    "check_same_filesystem",
    "check_state",
    "doctor_command",
    "iter_checks",
    "run_checks",
]

CLOCK_WARN = 30.0  # seconds of skew worth a warning
CLOCK_FAIL = 300.0  # S3 refuses SigV4 requests more than 15 min off; Runway's fetch of a fresh URL far sooner
_KEY_SHAPE = re.compile(r"key_[0-9a-fA-F]{128}")


# -- config ---------------------------------------------------------------------------------------------


def check_config(explicit: str | None, env: Mapping[str, str] = os.environ) -> tuple[CheckResult, Config | None]:
    """The config file is found and valid."""
    from runwatch.config import find_config, load_config

    try:
        path = find_config(explicit, env)
    except ConfigError as exc:
        return _fail(
            "config",
            _problems(exc.summary, exc),
            "write one with `runwatch init DIR`, then pass --config DIR/runwatch.toml (or set $RUNWATCH_CONFIG)",
        ), None
    try:
        config = load_config(path, env)
    except ConfigError as exc:
        return _fail(
            "config",
            _problems(f"{exc.path}: {exc.summary}", exc),
            "fix the file; `runwatch init DIR` writes a commented config that loads, to compare with",
        ), None
    inboxes = ", ".join(i.name for i in config.inboxes)
    return _ok("config", f"{config.path}: inboxes {inboxes}; state in {config.state.dir}"), config


# -- state, key, API, clock, S3 -------------------------------------------------------------------------


def check_state(config: Config, env: Mapping[str, str] = os.environ) -> CheckResult:
    """The state directory is writable and the journal opens (the SQLite file in it, or the configured database)."""
    from runwatch.jobs.states import ACTIVE
    from runwatch.store import journal_exists, journal_name, open_store

    name, folder = "state", config.state.dir
    if not folder.exists():
        parent = _existing_ancestor(folder)
        if not os.access(parent, os.W_OK | os.X_OK):
            return _fail(
                name,
                f"{folder}: missing, and {parent} is not writable",
                "create it for the service user (systemd: StateDirectory=runwatch)",
            )
        return _ok(name, f"{folder}: not there yet; made at the first start")
    if not folder.is_dir() or not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
        return _fail(
            name,
            f"{folder}: not a writable folder for uid {os.geteuid()}",
            "give the service user read/write access to the state directory",
        )
    holder = daemon_holder(folder)
    running = f"; a daemon is running ({holder})" if holder else "; no daemon running"
    if not journal_exists(config):
        return _ok(name, f"{folder}: writable; no journal yet (made at the first start){running}")
    try:
        if config.state.database:  # looked at as it is: the daemon migrates it at its start, not the doctor
            from runwatch.doctordb import database_counts

            counts = database_counts(config, env)
            if counts is None:
                return _ok(
                    name, f"{journal_name(config)}: reachable; no journal yet (made at the first start){running}"
                )
        else:
            journal = open_store(config, env)
            try:
                counts = journal.counts()
            finally:
                journal.close()
    except RunwatchError as exc:
        hint = (
            "check the database is up, the URL, the role and its password"
            if config.state.database
            else "check the file's owner and permissions; restore it from a backup if damaged"
        )
        return _fail(name, str(exc), hint)
    active = sum(n for state, n in counts.items() if state in ACTIVE)
    return _ok(name, f"{journal_name(config)}: {sum(counts.values()):,} jobs, {active:,} active{running}")


def _key_source(config: Config, key: str, env: Mapping[str, str]) -> str:
    """Where the key came from, in load_api_key's order (the first source holding it)."""
    from runwatch.config import CREDENTIAL_NAME

    for var in ("RUNWAYML_API_SECRET", "RUNWAY_API_KEY"):
        if env.get(var, "").strip() == key:
            return f"${var}"
    folder = env.get("CREDENTIALS_DIRECTORY")
    if folder:
        try:
            if (Path(folder) / CREDENTIAL_NAME).read_text("utf-8").strip() == key:
                return f"systemd credential {CREDENTIAL_NAME}"
        except (OSError, UnicodeDecodeError):
            pass
    return f"runway.api_key_file ({config.runway.api_key_file})"


def check_api_key(config: Config, env: Mapping[str, str] = os.environ) -> tuple[CheckResult, str | None]:
    """A key is found; only its source and length are shown."""
    from runwatch.config import load_api_key

    try:
        key = load_api_key(config, env)
    except ConfigError as exc:
        return _fail(
            "api-key",
            _problems(exc.summary, exc),
            "export RUNWAYML_API_SECRET, or LoadCredential=runway_api_key:FILE "
            "under systemd, or set runway.api_key_file",
        ), None
    detail = f"from {_key_source(config, key, env)}, {len(key)} characters"
    if not _KEY_SHAPE.fullmatch(key):
        return _warn(
            "api-key", detail + ", not the usual key_ + 128 hex digits", "check for a truncated or wrong paste"
        ), key
    return _ok("api-key", detail), key


@dataclass(frozen=True)
class ApiProbe:
    """What ``GET /v1/organization`` told: the check, and the server's clock when any answer came."""

    result: CheckResult
    server_time: datetime | None
    local_time: datetime | None


def check_api(config: Config, key: str, timeout: float = 10.0) -> ApiProbe:
    """``GET /v1/organization`` answers with the key; its Date header is kept for the clock check."""
    import httpx

    from runwatch.api import RunwayClient
    from runwatch.errors import ApiConnectionError, ApiStatusError

    seen: dict[str, Any] = {}

    def on_response(response: httpx.Response) -> None:
        seen["local"] = datetime.now(UTC)
        seen["date"] = response.headers.get("date")

    name, base = "api", config.runway.base_url
    started = time.monotonic()
    with httpx.Client(timeout=timeout, follow_redirects=False, event_hooks={"response": [on_response]}) as http:
        api = RunwayClient(http, base_url=base, api_key=key, version=config.runway.api_version, max_attempts=1)
        try:
            org = api.organization()
        except ApiStatusError as exc:
            if exc.status == 401:
                result = _fail(
                    name,
                    f"{base}: key refused (HTTP 401)",
                    "use a key of this API (Runway's developer portal); keys have no spaces inside",
                )
            else:
                result = _fail(name, f"{base}: {exc}", "check runway.base_url and runway.api_version")
        except ApiConnectionError as exc:
            result = _fail(name, f"{base}: {exc}", "check the network, a proxy (HTTPS_PROXY) or runway.base_url")
        else:
            ms = (time.monotonic() - started) * 1000
            balance = org.get("creditBalance")
            shown = f"{balance:,}" if isinstance(balance, int | float) else "unknown"
            result = _ok(name, f"{base} answered in {ms:.0f} ms; balance {shown} credits")
            if isinstance(balance, int | float) and balance <= 0:
                result = _warn(name, result.detail, "buy credits: Runway refuses creates without them")
    server = None
    if seen.get("date"):
        try:
            server = parsedate_to_datetime(seen["date"])
        except (TypeError, ValueError):
            server = None
    return ApiProbe(result, server, seen.get("local"))


def check_clock(server: datetime | None, local: datetime | None = None) -> CheckResult:
    """This machine's clock against Runway's Date header; presigned URLs break when it is far off."""
    name = "clock"
    if server is None:
        return _warn(name, "cannot tell: no Date header from the API", "make sure NTP runs (timedatectl)")
    local = local or datetime.now(UTC)
    skew = (local - server).total_seconds()
    where = "ahead of" if skew > 0 else "behind"
    detail = f"{abs(skew):.0f} s {where} Runway's clock"
    if abs(skew) > CLOCK_FAIL:
        return _fail(
            name, detail, "sync the clock (timedatectl set-ntp true): presigned URLs and signed requests break"
        )
    if abs(skew) > CLOCK_WARN:
        return _warn(name, detail, "sync the clock with NTP (timedatectl set-ntp true)")
    return _ok(name, f"within {max(1.0, abs(skew)):.0f} s of Runway's clock")


def _private_host(url: str) -> str | None:
    """The host of ``url`` when Runway surely cannot reach it (loopback, private, link-local), else None."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".local"):
        return host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return host if address.is_private or address.is_loopback or address.is_link_local else None


def check_s3(config: Config, client: Any = None) -> CheckResult:
    """When a bucket is configured: an object can be put, fetched through a presigned URL and deleted."""
    from runwatch.media import S3Transport
    from runwatch.ops import make_s3_client

    name, s3 = "s3", config.s3
    if s3 is None:
        return _ok(name, "not configured: media go through Runway's upload endpoint")
    where = f"s3://{s3.bucket}/{s3.prefix}" + (f" at {s3.endpoint_url}" if s3.endpoint_url else "")
    try:
        S3Transport(s3, client or make_s3_client(config)).check()
    except RunwatchError as exc:
        return _fail(name, str(exc), "check [s3] bucket/region/endpoint_url and the AWS_* credentials")
    private = _private_host(s3.endpoint_url) if s3.endpoint_url else None
    if private and not _private_host(config.runway.base_url):
        return _warn(
            name,
            f"{where}: put, presigned GET and delete work, but {private} is not reachable from the internet",
            "Runway fetches media itself: use a public endpoint_url",
        )
    return _ok(name, f"{where}: put, presigned GET and delete work")


# -- all together ---------------------------------------------------------------------------------------


def iter_checks(
    config_file: str | None = None,
    env: Mapping[str, str] = os.environ,
    *,
    mounts: Path | None = None,
    proc: Path = PROC_INOTIFY,
    s3_client: Any = None,
    event_timeout: float = 2.0,
) -> Iterator[CheckResult]:
    """Every check as it completes, in the order a person fixes things; checks that need what failed are
    left out."""
    first, config = check_config(config_file, env)
    yield first
    if config is None:
        return
    for inbox in config.inboxes:
        yield from check_folders(inbox)
        if inbox.path.is_dir():
            yield check_same_filesystem(inbox)
            yield check_filesystem_type(inbox, mounts)
            yield check_events(inbox, event_timeout, mounts)
    yield check_inotify_limits(config, proc, mounts)
    yield check_state(config, env)
    from runwatch.doctordb import check_database  # it builds on this module's results

    yield from check_database(config, env)
    key_result, key = check_api_key(config, env)
    yield key_result
    if key is not None:
        probe = check_api(config, key)
        yield probe.result
        yield check_clock(probe.server_time, probe.local_time)
    yield check_s3(config, s3_client)
    from runwatch.doctorhttp import http_checks  # here: it builds on this module's results

    yield from http_checks(config, env)


def run_checks(
    config_file: str | None = None, env: Mapping[str, str] = os.environ, **options: Any
) -> list[CheckResult]:
    """Every check (see :func:`iter_checks`)."""
    return list(iter_checks(config_file, env, **options))


def doctor_command(
    config_file: str | None = None,
    *,
    as_json: bool = False,
    out: TextIO | None = None,
    env: Mapping[str, str] = os.environ,
    **options: Any,
) -> int:
    """``runwatch doctor``: 0 when nothing FAILs, 1 otherwise. Lines appear as checks complete."""
    out = out or sys.stdout
    results: list[CheckResult] = []
    for result in iter_checks(config_file, env, **options):
        results.append(result)
        if not as_json:
            out.write(result.line() + "\n")
            out.flush()
    failed = sum(r.status == "FAIL" for r in results)
    if as_json:
        out.write(json.dumps([asdict(r) for r in results], indent=2) + "\n")
        return 1 if failed else 0
    warned = sum(r.status == "WARN" for r in results)
    out.write(f"{len(results)} checks: {len(results) - failed - warned} PASS, {warned} WARN, {failed} FAIL\n")
    if os.geteuid() == 0:
        out.write(
            "note: run as root, which passes every permission check; run it as the service user to "
            "see what the daemon can do\n"
        )
    return 1 if failed else 0
