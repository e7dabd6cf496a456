"""Who may ask the HTTP server what: the token, the loopback rule, and the Host/Origin check.

The token comes from ``$RUNWATCH_HTTP_TOKEN``, the systemd credential ``runwatch_http_token``, or the file
``[http] token_file`` names, in that order; never from the config text. Every write needs it. Reads need it too
unless the server listens on a loopback address only. A server listening beyond loopback without a token is a
configuration error: anyone on the network could read every request's prompt and spend.

A page on another site can make a browser send requests to ``127.0.0.1`` (and, by DNS rebinding, read the
answers): every request must name one of the server's own hosts in ``Host``, and in ``Origin`` when it has one.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from runwatch.config import HTTP_CREDENTIAL_NAME, HTTP_TOKEN_SOURCES, Config, HttpConfig
from runwatch.errors import ConfigError, Problem

__all__ = ["Security", "is_loopback", "load_token"]

TOKEN_ENV = "RUNWATCH_HTTP_TOKEN"  # noqa: S105 - the name of a variable, not a token
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - names of "every address", compared, not bound


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) reaches this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_token(config: Config, env: Mapping[str, str] = os.environ) -> str | None:
    """The HTTP token from the first source that has one (surrounding whitespace stripped), or None.

    Raises :class:`ConfigError` naming the key when a source is unreadable, or when the server listens beyond
    loopback without a token.
    """
    label = str(config.path) if config.path else "runwatch"
    sources: list[tuple[str, Path | None]] = []
    folder = env.get("CREDENTIALS_DIRECTORY")
    sources.append(
        (f"$CREDENTIALS_DIRECTORY/{HTTP_CREDENTIAL_NAME}", Path(folder) / HTTP_CREDENTIAL_NAME if folder else None)
    )
    sources.append(("http.token_file", config.http.token_file))
    token = (env.get(TOKEN_ENV) or "").strip() or None
    for key, file in sources:
        if token is not None or file is None:
            continue
        try:
            token = file.read_text("utf-8").strip() or None
        except FileNotFoundError as exc:
            if key == "http.token_file":
                raise ConfigError(label, [Problem(key, f"{file}: no such file")]) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(label, [Problem(key, f"{file}: cannot read: {exc}")]) from exc
    if token is not None and any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(label, [Problem("http.token_file", "the token has whitespace or control characters")])
    http = config.http
    if http.enabled and token is None and not is_loopback(http.host):
        raise ConfigError(
            label,
            [
                Problem(
                    "http.listen",
                    f"{http.listen} is not a loopback address, and no token is set: give one through "
                    f"{HTTP_TOKEN_SOURCES}, or listen on 127.0.0.1",
                )
            ],
        )
    return token


@dataclass(frozen=True)
class Security:
    """The server's rules, once its port is known."""

    token: str | None
    loopback: bool  # listening on a loopback address only: reads need no token
    hosts: frozenset[str]  # lower-case HOST[:PORT] values a request may name

    @classmethod
    def of(cls, http: HttpConfig, port: int, token: str | None) -> Security:
        names = {http.host.lower()}
        if is_loopback(http.host):
            names |= {"localhost", "127.0.0.1", "[::1]"}
        elif http.host in _WILDCARDS:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower(), "localhost", "127.0.0.1", "[::1]"}
        if ":" in http.host:  # an IPv6 address is written in brackets in Host
            names.add(f"[{http.host.lower()}]")
        hosts = {f"{name}:{port}" for name in names}
        for entry in http.allowed_hosts:  # a proxy's name, with or without a port of its own
            hosts.add(entry)
            if ":" not in entry.rsplit("]", 1)[-1]:
                hosts.add(f"{entry}:{port}")
        return cls(token=token, loopback=is_loopback(http.host), hosts=frozenset(hosts))

    def host_allowed(self, host: str | None) -> bool:
        return host is not None and host.lower() in self.hosts

    def origin_allowed(self, origin: str | None) -> bool:
        """No Origin (curl, scripts, same-origin GETs) is fine; one that names another site is not."""
        if origin is None:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" (a sandboxed page, a file:// page) included
        netloc = parts.netloc.lower()
        default = {"http": 80, "https": 443}[parts.scheme]
        return netloc in self.hosts or f"{netloc}:{default}" in self.hosts

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the token (compared in constant time)."""
        if self.token is None or header is None:
            return False
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())
