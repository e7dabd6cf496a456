"""The configuration's ways out to people and programs: ``[http]`` (the server's address, token file, allowed
hosts) and ``[[notify]]`` targets (webhooks and Apprise URLs, their events and secrets).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from runwatch.configsecrets import WEBHOOK_CREDENTIAL_NAME
from runwatch.configtable import _MISSING, _Table

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
_LISTEN_RE = re.compile(r"((\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5})?")  # empty: the server is off
_HOST_RE = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


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
class NotifyConfig:
    """One [[notify]] target: a webhook (http/https: a signed JSON POST) or an Apprise URL (any other scheme)."""

    url: str
    events: tuple[str, ...] = DEFAULT_NOTIFY_EVENTS
    secret_file: Path | None = None  # the webhook's HMAC secret; never in the config text

    @property
    def webhook(self) -> bool:
        return self.url.split(":", 1)[0].lower() in ("http", "https")


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
