"""The configuration: one TOML file, validated whole and frozen into dataclasses; and where the API key comes from.

Validation follows borgmatic: unknown keys are errors (a typo must not silently change behaviour), every problem
is collected with its dotted path (``inbox[1].settle``) and reported at once, and no raw dict travels past this
module. Folders need not exist here: the daemon and ``runwatch doctor`` check them when they are used.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import os
import re
import socket
import tomllib
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, cast, get_args
from urllib.parse import parse_qsl, urlsplit

from runwatch.catalog import load_catalog
from runwatch.errors import ConfigError, MissingKey, Problem
from runwatch.medialimits import choose

__all__ = [
    "BudgetConfig",
    "Config",
    "HttpConfig",
    "InboxConfig",
    "NodeConfig",
    "NotifyConfig",
    "RunwayConfig",
    "S3Config",
    "SchedulerConfig",
    "StateConfig",
    "database_url_problem",
    "find_config",
    "load_api_key",
    "load_config",
    "parse_config",
]

UnknownModels = Literal["pass", "reject"]
AddressingStyle = Literal["auto", "path", "virtual"]
UnknownPrice = Literal["hold", "allow"]
Transport = Literal["auto", "s3", "runway", "data"]

SYSTEM_CONFIG: Final = Path("/etc/runwatch/config.toml")
DEFAULT_STATE_DIR: Final = Path("/var/lib/runwatch")
CREDENTIAL_NAME: Final = "runway_api_key"
DB_CREDENTIAL_NAME: Final = "runwatch_db_password"
HTTP_CREDENTIAL_NAME: Final = "runwatch_http_token"
HTTP_TOKEN_SOURCES: Final = (
    f"$RUNWATCH_HTTP_TOKEN, a systemd credential named {HTTP_CREDENTIAL_NAME} (LoadCredential=) "
    "or a file named by http.token_file"
)
WEBHOOK_CREDENTIAL_NAME: Final = "runwatch_webhook_secret"
NOTIFY_EVENTS: Final = (
    "succeeded",
    "failed",
    "cancelled",
    "rejected",
    "needs_attention",
    "held",
    "budget",
    "inbox_paused",
)
DEFAULT_NOTIFY_EVENTS: Final = ("failed", "needs_attention", "held", "budget")
_ENV_KEYS: Final = ("RUNWAYML_API_SECRET", "RUNWAY_API_KEY")  # the SDK's name first
MIB: Final = 1024 * 1024
MAX_PRESIGN: Final = 604800  # SigV4 presigned URLs live at most 7 days
MAX_PART: Final = 5 * 1024 * MIB  # S3's largest multipart part

_KEY_RE = re.compile(r"key_[0-9a-fA-F]{32,}")  # Runway keys are key_ + 128 hex; a truncated one is still secret
_KEY_REFUSED = (
    "the Runway API key never goes in the config file; give it through RUNWAYML_API_SECRET or RUNWAY_API_KEY, "
    f"a systemd credential named {CREDENTIAL_NAME} (LoadCredential=), or a file named by runway.api_key_file"
)
_SECRET_NAMES = frozenset(
    {
        "api_key",
        "apikey",
        "api_secret",
        "secret",
        "key",
        "token",
        "runwayml_api_secret",
        "runway_api_key",
        "authorization",
    }
)
_AWS_REFUSED = (
    "S3 credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
    "profiles, instance roles), never from the config file"
)
DB_PASSWORD_SOURCES: Final = (
    "PGPASSWORD, a password file (~/.pgpass, or the one PGPASSFILE names) or a systemd credential named "
    f"{DB_CREDENTIAL_NAME} (LoadCredential=)"
)
_DB_PASSWORD_REFUSED = f"the database password never goes in the config file; give it through {DB_PASSWORD_SOURCES}"
_HTTP_TOKEN_REFUSED = f"the HTTP token never goes in the config file; give it through {HTTP_TOKEN_SOURCES}"
_LISTEN_RE = re.compile(r"((\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5})?")  # empty: the server is off
_HOST_RE = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
_DB_URL = "a PostgreSQL URL, postgresql://USER@HOST/DATABASE"
_URL_RE = re.compile(r"https?://[^\s/?#@]+(/[^\s?#]*)?")
_VERSION_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_FIELD_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_NAME_RE = re.compile(r"[^/\x00-\x1f\x7f]+")
_BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")
_REGION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
NODE_NAME_MAX = 63
_NODE_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{NODE_NAME_MAX - 1}}}")


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
class StateConfig:
    dir: Path
    database: str | None = None
    """A PostgreSQL URL: the journal lives there instead of in ``dir`` (which keeps the node's local state)."""


@dataclass(frozen=True)
class BudgetConfig:
    daily: float | None = None
    monthly: float | None = None
    unknown_price: UnknownPrice = "hold"


@dataclass(frozen=True)
class SchedulerConfig:
    max_in_flight: int = 100  # tasks submitted and not finished, all inboxes together
    max_uploads: int = 4
    max_downloads: int = 4
    per_model: int | None = None  # None: the organization's maxConcurrentGenerations
    rescan: float = 30.0  # seconds between full rescans of each inbox


@dataclass(frozen=True)
class DaemonConfig:
    stop_timeout: float = 20.0  # seconds a stop waits for creates in flight, so their task ids are recorded


@dataclass(frozen=True)
class NodeConfig:
    """This machine among the nodes sharing a PostgreSQL journal (``[node]``); with SQLite, the one node."""

    name: str = field(default_factory=lambda: default_node_name())
    lease: float = 10.0  # seconds a node owns its jobs without renewing (the database's clock)


@dataclass(frozen=True)
class HttpConfig:
    """The HTTP server (API, health, metrics). The token is never here: see ``runwatch.web.security``."""

    listen: str = "127.0.0.1:8765"  # "" switches the server off; port 0 takes any free port
    token_file: Path | None = None
    allowed_hosts: tuple[str, ...] = ()  # names the server is reached by besides its listen address

    @property
    def enabled(self) -> bool:
        return bool(self.listen)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


@dataclass(frozen=True)
class InboxConfig:
    name: str
    path: Path
    outbox: Path
    work: Path
    endpoint: str | None = None
    # Only the top level is read-only: nested values stay plain dicts/lists so merged bodies serialise as JSON.
    defaults: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    polling: bool = False
    settle: float = 2.0
    transport: Transport = "auto"
    accept_media: bool = False
    media_field: str = "promptImage"
    budget_daily: float | None = None
    approve_above: float | None = None
    priority: int = 0
    # Not a key of its own: whether the configuration has an [s3] bucket, which ``transport = "auto"`` goes by.
    has_s3: bool = field(default=False, metadata={"derived": True})

    @property
    def media_transport(self) -> str:
        """The transport this inbox's local media go by: ``auto`` is ``s3`` when there is a bucket, else ``runway``.

        Request checks fit media to this transport's size limits; the daemon sends them by it.
        """
        return choose(self.transport, s3_configured=self.has_s3)


@dataclass(frozen=True)
class NotifyConfig:
    """One [[notify]] target: a webhook (http/https: a signed JSON POST) or an Apprise URL (any other scheme)."""

    url: str
    events: tuple[str, ...] = DEFAULT_NOTIFY_EVENTS
    secret_file: Path | None = None  # the webhook's HMAC secret; never in the config text

    @property
    def webhook(self) -> bool:
        return self.url.split(":", 1)[0].lower() in ("http", "https")


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
    http: HttpConfig = HttpConfig()
    node: NodeConfig = field(default_factory=NodeConfig)
    notify: tuple[NotifyConfig, ...] = ()


_D = TypeVar("_D")
_MISSING: Final[Any] = object()


def _found(value: Any) -> str:
    """A value as the error message shows it: short, typed in TOML's words, never a secret."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int):
        return f"{value} (an integer)"
    if isinstance(value, float):
        return f"{value!r} (a float)"
    if isinstance(value, str):
        shown = json.dumps(value[:60] + ("…" if len(value) > 60 else ""), ensure_ascii=False)
        return f"{shown} (a string)"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return f"a {type(value).__name__}"


def _number(value: Any) -> float | None:
    """The value as a finite float, or None; TOML's true is not 1."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


class _Table:
    """One TOML table being read: typed getters that record problems, then a check for keys nobody read."""

    def __init__(self, data: Any, where: str, problems: list[Problem], label: str | None = None) -> None:
        self.data: Mapping[Any, Any] = data if isinstance(data, Mapping) else {}
        self.where, self.problems = where, problems
        # How a person finds this table in the file ("[s3]", "[[inbox]] 2"): a missing key has no line of
        # its own, so it is located by its table.
        self.label = label if label is not None else (f"[{where}]" if where else "")
        self.known: list[str] = []

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def problem(self, name: str, message: str) -> None:
        self.problems.append(Problem(self.key(name), message))

    def bad(self, name: str, expected: str, value: Any) -> None:
        self.problem(name, f"expected {expected}, found {_found(value)}")

    def get(self, name: str, *, required: str | None = None) -> Any:
        self.known.append(name)
        if name in self.data:
            return self.data[name]
        if required:
            self.problems.append(MissingKey(self.label, f"`{name}` is missing ({required})"))
        return _MISSING

    def string(
        self,
        name: str,
        default: _D,
        *,
        choices: tuple[str, ...] = (),
        pattern: re.Pattern[str] | None = None,
        expected: str = "a non-empty string",
        required: str | None = None,
        empty_ok: bool = False,
    ) -> str | _D:
        value = self.get(name, required=required)
        if value is _MISSING:
            return default
        if choices:
            expected = "one of " + ", ".join(f'"{c}"' for c in choices)
            ok = value in choices
        else:
            ok = (
                isinstance(value, str)
                and (empty_ok or bool(value.strip()))
                and (pattern is None or bool(pattern.fullmatch(value)))
            )
        if not (ok and isinstance(value, str)):
            self.bad(name, expected, value)
            return default
        return value

    def number(self, name: str, default: _D, *, zero_ok: bool = False, unit: str = "") -> float | _D:
        value = self.get(name)
        if value is _MISSING:
            return default
        number = _number(value)
        if number is None or number < 0 or (number == 0 and not zero_ok):
            self.bad(name, f"a number {'>=' if zero_ok else '>'} 0{unit}", value)
            return default
        return number

    def integer(self, name: str, default: _D, *, minimum: int, maximum: int | None = None, unit: str = "") -> int | _D:
        value = self.get(name)
        if value is _MISSING:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            span = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
            self.bad(name, f"an integer {span}{unit}", value)
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.bad(name, "true or false", value)
            return default
        return value

    def path(
        self, name: str, default: _D, *, base: Path, env: Mapping[str, str], required: str | None = None
    ) -> Path | _D:
        value = self.get(name, required=required)
        if value is _MISSING:
            return default
        if not isinstance(value, str) or not value.strip() or "\0" in value:
            self.bad(name, "a path (relative paths are taken from the config file's folder)", value)
            return default
        if value.startswith("~"):
            head, _, rest = value.partition("/")
            home = env.get("HOME")
            if head != "~" or not home:
                self.problem(name, "only a leading ~/ is expanded, and only when HOME is set")
                return default
            value = os.path.join(home, rest)
        return Path(os.path.normpath(base / value))

    def done(self) -> None:
        """Report every key that no getter asked for, with the allowed keys and the nearest one."""
        for raw in self.data:
            name = str(raw)
            if name in self.known:
                continue
            if self.where == "http" and name.lower() in ("token", "http_token", "bearer"):
                self.problem(name, _HTTP_TOKEN_REFUSED)
            elif name.lower().replace("-", "_") in _SECRET_NAMES:
                self.problem(name, _KEY_REFUSED)
            elif self.where == "s3" and name.lower().startswith("aws_"):
                self.problem(name, _AWS_REFUSED)
            elif self.where == "state" and "password" in name.lower():
                self.problem(name, _DB_PASSWORD_REFUSED)
            else:
                near = difflib.get_close_matches(name, self.known, n=1)
                hint = f' (did you mean "{near[0]}"?)' if near else ""
                self.problem(name, f"unknown key{hint}; allowed keys: {', '.join(self.known)}")


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _leaves(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every non-container value under ``value``, with its dotted path."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{where}[{i}]")
    else:
        yield where, value


def _jsonable(value: Any) -> bool:
    # Defaults end up in a JSON request body: TOML dates and non-finite floats cannot.
    return isinstance(value, str | bool | int) or (isinstance(value, float) and _number(value) is not None)


def _error(label: str, problems: list[Problem], summary: str = "invalid configuration") -> ConfigError:
    """The error to raise; anything key-like is masked, so no message can ever carry a key."""

    def mask(text: str) -> str:
        return _KEY_RE.sub("key_…", text)

    unique = list(dict.fromkeys(dataclasses.replace(p, path=mask(p.path), message=mask(p.message)) for p in problems))
    if unique and all(isinstance(p, MissingKey) for p in unique):
        summary = "a required key is missing" if len(unique) == 1 else f"{len(unique)} required keys are missing"
        return ConfigError(mask(label), unique, summary)
    return ConfigError(mask(label), unique, summary)


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


def database_url_problem(url: str) -> str | None:
    """What is wrong with a PostgreSQL URL for the journal, or None. The message never repeats the URL: it may
    hold a password."""
    if not url.strip() or any(c.isspace() or not c.isprintable() for c in url):
        return f"expected {_DB_URL}, without spaces or control characters"
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return f"expected {_DB_URL}; this one does not parse"
    if parts.scheme not in ("postgresql", "postgres") or not url.startswith(f"{parts.scheme}://"):
        return f"expected {_DB_URL}; it must start with postgresql://"
    if parts.password is not None or any(key.lower() in ("password", "sslpassword") for key, _ in query):
        return _DB_PASSWORD_REFUSED
    if parts.fragment:
        return f"expected {_DB_URL}; a #fragment has no meaning here"
    return None


def _state(t: _Table, base: Path, env: Mapping[str, str]) -> StateConfig:
    # systemd's StateDirectory= sets $STATE_DIRECTORY (colon-separated when several are listed).
    from_systemd = env.get("STATE_DIRECTORY", "").split(":")[0]
    folder = t.path("dir", Path(from_systemd) if from_systemd else DEFAULT_STATE_DIR, base=base, env=env)
    database = t.get("database")
    if database is _MISSING:
        return StateConfig(dir=folder)
    # Checked here, not by string(): a rejected value is shown in the message, and this one may hold a password.
    problem = (
        database_url_problem(database) if isinstance(database, str) else f"expected {_DB_URL}, found {_found(database)}"
    )
    if problem is not None:
        t.problem("database", problem)
        return StateConfig(dir=folder)
    return StateConfig(dir=folder, database=database)


def _budget(t: _Table) -> BudgetConfig:
    return BudgetConfig(
        daily=t.number("daily", None, zero_ok=True, unit=" (credits)"),
        monthly=t.number("monthly", None, zero_ok=True, unit=" (credits)"),
        unknown_price=cast(UnknownPrice, t.string("unknown_price", "hold", choices=get_args(UnknownPrice))),
    )


def _scheduler(t: _Table) -> SchedulerConfig:
    d = SchedulerConfig()
    return SchedulerConfig(
        max_in_flight=t.integer("max_in_flight", d.max_in_flight, minimum=1),
        max_uploads=t.integer("max_uploads", d.max_uploads, minimum=1),
        max_downloads=t.integer("max_downloads", d.max_downloads, minimum=1),
        per_model=t.integer("per_model", None, minimum=1),
        rescan=t.number("rescan", d.rescan, unit=" (seconds)"),
    )


def _daemon(t: _Table) -> DaemonConfig:
    d = DaemonConfig()
    return DaemonConfig(stop_timeout=t.number("stop_timeout", d.stop_timeout, zero_ok=True, unit=" (seconds)"))


def default_node_name() -> str:
    """The host name's first label, made safe for a node name (the default of ``[node] name``)."""
    host = socket.gethostname().split(".")[0]
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", host).strip("-")[:NODE_NAME_MAX]
    return safe if safe and _NODE_RE.fullmatch(safe) else "runwatch"


def _node(t: _Table) -> NodeConfig:
    d = NodeConfig()
    name = t.string(
        "name",
        d.name,
        pattern=_NODE_RE,
        expected=f"a node name of 1 to {NODE_NAME_MAX} letters, digits, '-' or '_', starting with a letter or digit",
    )
    lease = t.number("lease", d.lease, unit=" (seconds)")
    if not 1.0 <= lease <= 600.0:
        t.bad("lease", "a number of seconds from 1 to 600", lease)
        lease = d.lease
    return NodeConfig(name=name, lease=lease)


def _http(t: _Table, base: Path, env: Mapping[str, str]) -> HttpConfig:
    d = HttpConfig()
    listen = t.string(
        "listen",
        d.listen,
        pattern=_LISTEN_RE,
        expected='HOST:PORT such as "127.0.0.1:8765" (or "" to switch the server off)',
        empty_ok=True,
    )
    if listen and not 0 <= int(listen.rpartition(":")[2]) <= 65535:
        t.bad("listen", "a port from 0 to 65535", listen)
        listen = d.listen
    hosts = t.get("allowed_hosts")
    allowed: tuple[str, ...] = ()
    if hosts is not _MISSING:
        if isinstance(hosts, list) and all(isinstance(h, str) and _HOST_RE.fullmatch(h) for h in hosts):
            allowed = tuple(h.lower() for h in hosts)
        else:
            t.bad("allowed_hosts", 'a list of host names, such as ["runwatch.example.org"]', hosts)
    return HttpConfig(listen=listen, token_file=t.path("token_file", None, base=base, env=env), allowed_hosts=allowed)


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


def _inbox(t: _Table, base: Path, env: Mapping[str, str], has_s3: bool) -> InboxConfig | None:
    """One [[inbox]] table; None when its folders are unusable (the problems are recorded)."""
    name = t.string("name", None, pattern=_NAME_RE, expected="a name without slashes or control characters")
    path = t.path("path", None, base=base, env=env, required="the folder users drop requests into")
    outbox = t.path("outbox", None, base=base, env=env, required="the folder outputs and status files go to")
    work = t.path("work", None, base=base, env=env)
    endpoints = load_catalog().endpoints
    endpoint = t.string("endpoint", None, choices=tuple(sorted(endpoints)))
    raw_defaults = t.get("defaults")
    defaults: dict[str, Any] = {}
    if isinstance(raw_defaults, Mapping):
        defaults = copy.deepcopy({str(k): v for k, v in raw_defaults.items()})
        for where, leaf in _leaves(defaults, t.key("defaults")):
            if not _jsonable(leaf):
                t.problems.append(Problem(where, f"cannot be sent in a JSON request body: found {_found(leaf)}"))
        for reserved, instead in (("endpoint", "the inbox's endpoint key"), ("runwatch", "the inbox's own keys")):
            if reserved in defaults:
                t.problem(f"defaults.{reserved}", f"not a request body field; use {instead}")
    elif raw_defaults is not _MISSING:
        t.bad(
            "defaults",
            'a table of request body fields, e.g. { model = "gen4_turbo", ratio = "1280:720" }',
            raw_defaults,
        )
    inbox = InboxConfig(
        name="",
        path=Path(),
        outbox=Path(),
        work=Path(),
        endpoint=endpoint,
        defaults=types.MappingProxyType(defaults),
        polling=t.boolean("polling", False),
        settle=t.number("settle", 2.0, unit=" (seconds)"),
        transport=cast(Transport, t.string("transport", "auto", choices=get_args(Transport))),
        accept_media=t.boolean("accept_media", False),
        media_field=t.string(
            "media_field",
            "promptImage",
            pattern=_FIELD_RE,
            expected='a request field name as the API spells it, e.g. "promptImage"',
        ),
        budget_daily=t.number("budget_daily", None, zero_ok=True, unit=" (credits)"),
        approve_above=t.number("approve_above", None, zero_ok=True, unit=" (credits)"),
        priority=t.integer("priority", 0, minimum=-1000, maximum=1000),
    )
    if inbox.transport == "s3" and not has_s3:
        t.problem("transport", '"s3" needs an [s3] section with a bucket')
    if inbox.accept_media:
        if endpoint is None:
            t.problem("accept_media", "needs this inbox's endpoint: a bare media file names no endpoint")
        else:
            fields = sorted({f for m in endpoints[endpoint].models.values() for f in m.fields})
            if inbox.media_field not in fields:
                t.problem(
                    "media_field", f'"{inbox.media_field}" is not a field of {endpoint}; allowed: {", ".join(fields)}'
                )
    if path is None or outbox is None:
        return None
    work = work if work is not None else path / ".runwatch"
    if name is None:
        name = path.name
        if not name:
            t.problem("name", f"the folder {path} has no name to use; set name")
    if _within(outbox, path):
        t.problem("outbox", f"{outbox} must not be the inbox itself nor inside it")
    elif work == path or _within(work, outbox):
        t.problem("work", f"{work} must not be the inbox, the outbox, nor inside the outbox")
    elif _within(work, path) and not work.relative_to(path).parts[0].startswith("."):
        t.problem(
            "work",
            f"{work} is inside the inbox, so it must be a hidden folder (its name starting with "
            f'".") that scans ignore, e.g. {path / ".runwatch"}',
        )
    return dataclasses.replace(inbox, name=name, path=path, outbox=outbox, work=work, has_s3=has_s3)


def _inboxes(top: _Table, base: Path, env: Mapping[str, str], has_s3: bool) -> tuple[InboxConfig, ...]:
    value = top.get("inbox")
    if value is _MISSING:
        top.problems.append(
            MissingKey("", "`[[inbox]]` is missing (at least one [[inbox]] section with path and outbox)")
        )
        return ()
    if not isinstance(value, list) or not value:
        hint = "; write [[inbox]], not [inbox]" if isinstance(value, Mapping) else ""
        top.bad("inbox", f"at least one [[inbox]] section{hint}", value)
        return ()
    found: list[tuple[int, InboxConfig]] = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            top.bad(f"inbox[{i}]", "a table ([[inbox]] section)", item)
            continue
        t = _Table(item, f"inbox[{i}]", top.problems, label=f"[[inbox]] {i + 1}")
        inbox = _inbox(t, base, env, has_s3)
        t.done()
        if inbox is not None:
            found.append((i, inbox))
    for n, (i, a) in enumerate(found):
        for j, b in found[:n]:
            if a.name == b.name:
                top.problem(f"inbox[{i}].name", f'"{a.name}" is already the name of inbox[{j}]; names must be unique')
            if _within(a.path, b.path) or _within(b.path, a.path):
                top.problem(f"inbox[{i}].path", f"{a.path} is, contains or is inside inbox[{j}]'s folder {b.path}")
        for j, b in found:
            if j != i and _within(a.outbox, b.path):
                top.problem(
                    f"inbox[{i}].outbox",
                    f"{a.outbox} is inside inbox[{j}]'s folder {b.path}: its status files would be taken as requests",
                )
    return tuple(inbox for _, inbox in found)


def _notify(t: _Table, base: Path, env: Mapping[str, str]) -> NotifyConfig | None:
    """One [[notify]] table; None when its URL is unusable (the problems are recorded)."""
    from runwatch.webhook import APPRISE_HTTP_SCHEMES, url_problem

    url = t.string("url", None, required="a webhook (https://…) or an Apprise URL (mailto://, slack://, ntfy://…)")
    raw_events = t.get("events")
    events = DEFAULT_NOTIFY_EVENTS
    if raw_events is not _MISSING:
        allowed = ", ".join(NOTIFY_EVENTS)
        if not isinstance(raw_events, list) or not raw_events or not all(isinstance(e, str) for e in raw_events):
            t.bad("events", f"a non-empty array of event names ({allowed})", raw_events)
        else:
            unknown = [e for e in raw_events if e not in NOTIFY_EVENTS]
            for name in unknown:
                near = difflib.get_close_matches(name, NOTIFY_EVENTS, n=1)
                hint = f' (did you mean "{near[0]}"?)' if near else ""
                t.problem("events", f'unknown event "{name}"{hint}; allowed: {allowed}')
            events = tuple(dict.fromkeys(raw_events))
    secret_file = t.path("secret_file", None, base=base, env=env)
    if "secret" in t.data:
        t.known.append("secret")
        t.problem(
            "secret",
            "the webhook secret never goes in the config file; name a file holding it with secret_file, or give "
            f"the systemd credential {WEBHOOK_CREDENTIAL_NAME} (LoadCredential=)",
        )
    if url is None:
        return None
    if any(c.isspace() or not c.isprintable() for c in url) or "://" not in url:
        t.bad("url", "a URL such as https://hooks.example.org/runwatch or ntfy://ntfy.sh/topic", url)
        return None
    scheme = url.split("://", 1)[0].lower()
    notify = NotifyConfig(url=url, events=events, secret_file=secret_file)
    if notify.webhook or scheme in APPRISE_HTTP_SCHEMES:
        problem = url_problem(url, scheme)
        if problem is not None:
            t.problem("url", problem)
            return None
    if not notify.webhook:
        problem = _apprise_problem(url)
        if problem is not None:
            t.problem("url", problem)
            return None
        if secret_file is not None:
            t.problem("secret_file", "only a webhook (an http:// or https:// URL) is signed; Apprise URLs are not")
    return notify


def _apprise_problem(url: str) -> str | None:
    """Why the Apprise library cannot send to ``url``; None when it can."""
    try:
        import apprise
    except ImportError:
        return (
            "an Apprise URL (any scheme but http and https) needs the apprise library: "
            "pip install 'runwatch[notify]' (or pip install apprise)"
        )
    if apprise.Apprise.instantiate(url, suppress_exceptions=True) is None:
        return "Apprise does not understand this URL; see https://github.com/caronc/apprise/wiki for the forms"
    return None


def _notifies(top: _Table, base: Path, env: Mapping[str, str]) -> tuple[NotifyConfig, ...]:
    value = top.get("notify")
    if value is _MISSING:
        return ()
    if not isinstance(value, list):
        hint = "; write [[notify]], not [notify]" if isinstance(value, Mapping) else ""
        top.bad("notify", f"[[notify]] sections{hint}", value)
        return ()
    found: list[NotifyConfig] = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            top.bad(f"notify[{i}]", "a table ([[notify]] section)", item)
            continue
        t = _Table(item, f"notify[{i}]", top.problems, label=f"[[notify]] {i + 1}")
        notify = _notify(t, base, env)
        t.done()
        if notify is not None:
            found.append(notify)
    return tuple(found)


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


def load_api_key(config: Config, env: Mapping[str, str] = os.environ) -> str:
    """The Runway API key from the first source that has one, surrounding whitespace stripped.

    Sources, in order: RUNWAYML_API_SECRET, RUNWAY_API_KEY, $CREDENTIALS_DIRECTORY/runway_api_key (systemd
    LoadCredential=), runway.api_key_file. An unset or empty source is skipped; one that is present but
    unreadable or malformed is an error rather than a silent fall-through to another key.
    """
    label = str(config.path) if config.path else "runwatch"
    credential = f"$CREDENTIALS_DIRECTORY/{CREDENTIAL_NAME}"

    def read(source: str) -> tuple[str | None, str]:
        """The source's text (or None), and what to say when it holds no key."""
        if source in _ENV_KEYS:
            return env.get(source), "not set" if source not in env else "set but empty"
        if source == credential:
            folder = env.get("CREDENTIALS_DIRECTORY")
            if not folder:
                return None, f"CREDENTIALS_DIRECTORY not set (systemd: LoadCredential={CREDENTIAL_NAME}:FILE)"
            file = Path(folder) / CREDENTIAL_NAME
        elif config.runway.api_key_file is None:
            return None, "not set in the config"
        else:
            file = config.runway.api_key_file
        try:
            return file.read_text("utf-8"), f"{file}: empty"
        except FileNotFoundError:
            return None, f"{file}: no such file"
        except UnicodeDecodeError as exc:
            raise _error(label, [Problem(source, f"{file}: not UTF-8 text")]) from exc
        except OSError as exc:
            raise _error(label, [Problem(source, f"{file}: cannot read: {exc.strerror or exc}")]) from exc

    tried: list[Problem] = []
    for source in (*_ENV_KEYS, credential, "runway.api_key_file"):
        text, why = read(source)
        key = (text or "").strip()
        if not key:
            tried.append(Problem(source, why))
        elif any(c.isspace() or not c.isprintable() for c in key):
            # Only the ends are stripped: whitespace inside is a broken paste and would break the header.
            raise _error(label, [Problem(source, "the key has whitespace or control characters inside it")])
        else:
            return key
    raise _error(label, tried, "no Runway API key found; tried, in order:")
