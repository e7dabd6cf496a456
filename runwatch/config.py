"""The configuration: one TOML file, validated whole and frozen into dataclasses; and where the API key comes from.

Validation follows borgmatic: unknown keys are errors (a typo must not silently change behaviour), every problem
is collected with its dotted path (``inbox[1].settle``) and reported at once, and no raw dict travels past this
module. Folders need not exist here: the daemon and ``runwatch doctor`` check them when they are used.

This module holds the whole (``Config``), the file found, read and parsed, and the small sections (``[runway]``,
``[s3]``, ``[daemon]``, ``umask``); the rest lives in sibling modules and is re-exported here, so every name is
imported from ``runwatch.config``:

- ``configtable``: reading one table (typed getters, unknown keys, the helpers the sections share);
- ``configsecrets``: the key and credentials (never in the file; ``load_api_key``), the masking of errors;
- ``configinbox``: ``[[inbox]]`` sections and the rules between their folders;
- ``configmoney``: ``[budget]`` and ``[scheduler]``;
- ``confighttp``: ``[http]`` and ``[[notify]]``;
- ``confignode``: ``[state]`` (and the journal's URL) and ``[node]``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast, get_args

from runwatch.confighttp import (
    DEFAULT_NOTIFY_EVENTS,
    NOTIFY_EVENTS,
    HttpConfig,
    NotifyConfig,
    _apprise_problem,
    _http,
    _notifies,
)
from runwatch.configinbox import InboxConfig, _inboxes
from runwatch.configmoney import BudgetConfig, SchedulerConfig, _budget, _scheduler
from runwatch.confignode import (
    DEFAULT_STATE_DIR,
    NODE_NAME_MAX,
    NodeConfig,
    StateConfig,
    _node,
    _state,
    database_url_problem,
    default_node_name,
)
from runwatch.configsecrets import (
    _KEY_RE,
    _KEY_REFUSED,
    CREDENTIAL_NAME,
    DB_CREDENTIAL_NAME,
    DB_PASSWORD_SOURCES,
    HTTP_CREDENTIAL_NAME,
    HTTP_TOKEN_SOURCES,
    WEBHOOK_CREDENTIAL_NAME,
    _error,
    load_api_key,
)
from runwatch.configtable import _MISSING, _found, _leaves, _Table
from runwatch.errors import Problem

# Every name the code base imports from ``runwatch.config``, wherever it is defined.
__all__ = [
    "CREDENTIAL_NAME",
    "DB_CREDENTIAL_NAME",
    "DB_PASSWORD_SOURCES",
    "DEFAULT_NOTIFY_EVENTS",
    "DEFAULT_STATE_DIR",
    "HTTP_CREDENTIAL_NAME",
    "HTTP_TOKEN_SOURCES",
    "NODE_NAME_MAX",
    "NOTIFY_EVENTS",
    "SYSTEM_CONFIG",
    "WEBHOOK_CREDENTIAL_NAME",
    "BudgetConfig",
    "Config",
    "DaemonConfig",
    "HttpConfig",
    "InboxConfig",
    "NodeConfig",
    "NotifyConfig",
    "RunwayConfig",
    "S3Config",
    "SchedulerConfig",
    "StateConfig",
    "_apprise_problem",
    "database_url_problem",
    "default_node_name",
    "find_config",
    "load_api_key",
    "load_config",
    "parse_config",
]

UnknownModels = Literal["pass", "reject"]
AddressingStyle = Literal["auto", "path", "virtual"]

SYSTEM_CONFIG: Final = Path("/etc/runwatch/config.toml")
MIB: Final = 1024 * 1024
MAX_PRESIGN: Final = 604800  # SigV4 presigned URLs live at most 7 days
MAX_PART: Final = 5 * 1024 * MIB  # S3's largest multipart part

_URL_RE = re.compile(r"https?://[^\s/?#@]+(/[^\s?#]*)?")
_VERSION_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")
_REGION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class RunwayConfig:
    base_url: str = "https://api.dev.runwayml.com"
    api_version: str = "2024-11-06"
    unknown_models: UnknownModels = "pass"
    poll_interval: float = 5.0  # seconds between GETs of one task
    api_key_file: Path | None = None
    timeout: float = 60.0  # seconds per HTTP request


@dataclass(frozen=True)
class S3Config:
    bucket: str
    prefix: str = "runwatch/"  # always empty or ending in "/"
    region: str = "us-east-1"
    endpoint_url: str | None = None
    presign_expiry: int = 3600
    keep: bool = False  # keep objects after the task ends
    multipart_threshold: int = 64 * MIB
    multipart_chunksize: int = 16 * MIB
    addressing_style: AddressingStyle = "auto"


@dataclass(frozen=True)
class DaemonConfig:
    stop_timeout: float = 20.0  # seconds a stop waits for creates in flight, so their task ids are recorded


@dataclass(frozen=True)
class Config:
    path: Path | None
    runway: RunwayConfig
    s3: S3Config | None
    state: StateConfig
    budget: BudgetConfig
    scheduler: SchedulerConfig
    inboxes: tuple[InboxConfig, ...]
    umask: int = 0o027
    daemon: DaemonConfig = DaemonConfig()
    http: HttpConfig = HttpConfig()  # noqa: RUF009 - frozen, so one shared default is safe
    node: NodeConfig = field(default_factory=NodeConfig)
    notify: tuple[NotifyConfig, ...] = ()


def _runway(t: _Table, base: Path, env: Mapping[str, str]) -> RunwayConfig:
    d = RunwayConfig()
    return RunwayConfig(
        base_url=t.string("base_url", d.base_url, pattern=_URL_RE, expected="an http:// or https:// URL").rstrip("/"),
        api_version=t.string("api_version", d.api_version, pattern=_VERSION_RE, expected='a date like "2024-11-06"'),
        unknown_models=cast(
            UnknownModels, t.string("unknown_models", d.unknown_models, choices=get_args(UnknownModels))
        ),
        poll_interval=t.number("poll_interval", d.poll_interval, unit=" (seconds)"),
        api_key_file=t.path("api_key_file", None, base=base, env=env),
        timeout=t.number("timeout", d.timeout, unit=" (seconds)"),
    )


def _s3(t: _Table) -> S3Config:
    d = S3Config(bucket="")
    bucket = t.string(
        "bucket",
        "",
        pattern=_BUCKET_RE,
        required="the bucket media are uploaded to",
        expected="a bucket name (no s3:// and no slashes; folders go in prefix)",
    )
    prefix = t.string(
        "prefix",
        d.prefix,
        pattern=re.compile(r"(?!/)\S*"),
        empty_ok=True,
        expected="a key prefix without spaces or a leading /",
    )
    region = t.string("region", d.region, pattern=_REGION_RE, expected='a region name like "us-east-1"')
    endpoint_url = t.string("endpoint_url", None, pattern=_URL_RE, expected="an http:// or https:// URL")
    return S3Config(
        bucket=bucket,
        prefix=prefix if not prefix or prefix.endswith("/") else prefix + "/",
        region=region,
        endpoint_url=endpoint_url.rstrip("/") if endpoint_url else None,
        presign_expiry=t.integer(
            "presign_expiry",
            d.presign_expiry,
            minimum=1,
            maximum=MAX_PRESIGN,
            unit=" (seconds; SigV4 allows at most 7 days)",
        ),
        keep=t.boolean("keep", d.keep),
        multipart_threshold=t.integer(
            "multipart_threshold", d.multipart_threshold, minimum=5 * MIB, unit=" (bytes; S3 parts are at least 5 MiB)"
        ),
        multipart_chunksize=t.integer(
            "multipart_chunksize",
            d.multipart_chunksize,
            minimum=5 * MIB,
            maximum=MAX_PART,
            unit=" (bytes; S3 parts are 5 MiB to 5 GiB)",
        ),
        addressing_style=cast(
            AddressingStyle, t.string("addressing_style", d.addressing_style, choices=get_args(AddressingStyle))
        ),
    )


def _daemon(t: _Table) -> DaemonConfig:
    d = DaemonConfig()
    return DaemonConfig(stop_timeout=t.number("stop_timeout", d.stop_timeout, zero_ok=True, unit=" (seconds)"))


def _umask(top: _Table, env: Mapping[str, str]) -> int:
    value = top.get("umask")
    if value is _MISSING:  # the config says nothing: $RUNWATCH_UMASK (a container's UMASK), else the default
        from_env = env.get("RUNWATCH_UMASK")
        if not from_env:
            return Config.umask
        value = from_env if from_env.startswith("0o") else f"0o{from_env}"
        if not re.fullmatch(r"0o[0-7]{1,4}", value) or int(value[2:], 8) & 0o700 or int(value[2:], 8) > 0o777:
            top.problem("umask", f"$RUNWATCH_UMASK is {from_env!r}: expected an octal umask such as 027, owner digit 0")
            return Config.umask
        return int(value[2:], 8)
    expected = 'an octal umask such as "027" (a string) or 0o027 (an integer), owner digit 0'
    if isinstance(value, str) and re.fullmatch(r"(0o)?[0-7]{1,4}", value):
        mask = int(value.removeprefix("0o"), 8)
    elif isinstance(value, int) and not isinstance(value, bool):
        mask = value
    else:
        mask = -1
    if not 0 <= mask <= 0o777 or mask & 0o700:  # masking the owner would lock runwatch out of its own files
        top.bad("umask", expected, value)
        return Config.umask
    return mask


def parse_config(
    data: Mapping[str, Any], path: str, env: Mapping[str, str] = os.environ, base: Path | None = None
) -> Config:
    """Validate already-parsed TOML data; ``path`` names the source in errors, relative paths are taken from
    ``base`` (the current folder when None). ``Config.path`` is None: no file was read here."""
    base = Path(os.path.abspath(base if base is not None else Path.cwd()))
    problems: list[Problem] = []
    if not isinstance(data, Mapping):
        raise _error(path, [Problem("", f"expected a table of settings, found {_found(data)}")])
    problems += [
        Problem(where, _KEY_REFUSED)
        for where, leaf in _leaves(data, "")
        if isinstance(leaf, str) and _KEY_RE.search(leaf)
    ]
    top = _Table(data, "", problems)

    def section(name: str) -> _Table:
        value = top.get(name)
        if value is not _MISSING and not isinstance(value, Mapping):
            top.bad(name, f"a table ([{name}] section)", value)
        return _Table(value, name, problems)

    sections = ("runway", "s3", "state", "budget", "scheduler", "daemon", "http", "node")
    tables = {name: section(name) for name in sections}
    has_s3 = isinstance(data.get("s3"), Mapping)
    config = Config(
        path=None,
        runway=_runway(tables["runway"], base, env),
        s3=_s3(tables["s3"]) if has_s3 else None,
        state=_state(tables["state"], base, env),
        budget=_budget(tables["budget"]),
        scheduler=_scheduler(tables["scheduler"]),
        inboxes=_inboxes(top, base, env, has_s3),
        umask=_umask(top, env),
        daemon=_daemon(tables["daemon"]),
        http=_http(tables["http"], base, env),
        node=_node(tables["node"]),
        notify=_notifies(top, base, env),
    )
    for table in (*tables.values(), top):
        table.done()
    if problems:
        raise _error(path, problems)
    return config


def load_config(path: Path, env: Mapping[str, str] = os.environ) -> Config:
    """Read and validate the config file; relative paths in it are taken from its folder."""
    path = Path(path).absolute()
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:
        where = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", str(exc), re.DOTALL)
        text = f"at line {where[2]}, column {where[3]}: {where[1]}" if where else str(exc)
        raise _error(str(path), [Problem("", f"TOML syntax error {text}")]) from exc
    except UnicodeDecodeError as exc:
        raise _error(str(path), [Problem("", f"not UTF-8 text (bad byte at offset {exc.start})")]) from exc
    except OSError as exc:
        raise _error(str(path), [Problem("", f"cannot read: {exc.strerror or exc}")]) from exc
    return dataclasses.replace(parse_config(data, str(path), env, base=path.parent), path=path)


def find_config(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] = os.environ, cwd: Path | None = None
) -> Path:
    """The config file to use: --config, then $RUNWATCH_CONFIG, then ./runwatch.toml, then the system one.

    A file named explicitly (--config or $RUNWATCH_CONFIG) must exist: falling back to another file would run
    other inboxes than the ones asked for.
    """
    here = cwd if cwd is not None else Path.cwd()
    if explicit is not None and os.fspath(explicit):
        places = [("--config", here / explicit)]
    elif env.get("RUNWATCH_CONFIG"):
        places = [("$RUNWATCH_CONFIG", here / env["RUNWATCH_CONFIG"])]
    else:
        places = [("the current folder", here / "runwatch.toml"), ("the system default", SYSTEM_CONFIG)]
    tried: list[Problem] = []
    for source, place in places:
        try:
            if place.is_file():
                return place
            why = "not a regular file" if place.exists() else "no such file"
        except OSError as exc:  # a folder on the way that this user may not search
            why = f"cannot be looked at: {exc.strerror or exc}"
        tried.append(Problem(str(place), f"{why} (from {source})"))
    raise _error(str(places[0][1]), tried, "no configuration file found; tried:")
