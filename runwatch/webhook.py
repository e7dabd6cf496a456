"""Webhooks: which addresses a notification may go to, how its body is signed, and how a receiver checks it.

A notification URL never reaches a link-local or cloud metadata address (169.254.0.0/16, fe80::/10, the
metadata names and addresses of the big clouds): such a service hands out credentials to whoever asks from the
machine. A literal one is refused when the config is read (:func:`url_problem`); a name is resolved when the
webhook is sent, every address it resolves to is checked, and the request goes to the checked address itself
(:func:`pinned`), so a name that changes its answer in between (DNS rebinding) cannot slip through.

Signing: ``X-Runwatch-Signature: t=TIMESTAMP,v1=HEX``, HEX the HMAC-SHA256 with the webhook secret of
``TIMESTAMP`` (Unix seconds), a ``.`` and the exact body bytes. A receiver computes the same, compares in constant
time, and refuses a timestamp older than a few minutes, so a captured request cannot be replayed later
(:func:`verify` is that check).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from runwatch.errors import RunwatchError

__all__ = [
    "SIGNATURE_HEADER",
    "TOLERANCE",
    "WEBHOOK_SCHEMES",
    "ForbiddenAddress",
    "Pinned",
    "forbidden_address",
    "pinned",
    "sign",
    "url_problem",
    "verify",
]

SIGNATURE_HEADER: Final = "X-Runwatch-Signature"
TOLERANCE: Final = 300  # seconds a receiver should accept a timestamp for
WEBHOOK_SCHEMES: Final = ("http", "https")
# Apprise URLs that POST to a host named in them: the same literal check applies to their host.
APPRISE_HTTP_SCHEMES: Final = ("json", "jsons", "form", "forms", "xml", "xmls")

_LINK_LOCAL: Final = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_METADATA_ADDRESSES: Final = frozenset(
    {
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    }
)
_METADATA_NAMES: Final = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
        "metadata.tencentyun.com",
    }
)


class ForbiddenAddress(RunwatchError):
    """A notification URL that leads to a link-local or metadata address."""


def forbidden_address(address: str) -> bool:
    """True for a link-local or cloud metadata IP address (IPv4-mapped IPv6 included)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip in _METADATA_ADDRESSES or any(ip in net for net in _LINK_LOCAL)


def _forbidden_host(host: str) -> bool:
    return host.rstrip(".").lower() in _METADATA_NAMES or forbidden_address(host)


def url_problem(url: str, scheme: str) -> str | None:
    """What is wrong with a webhook URL (or an Apprise URL that posts to a host) as written; None when fine."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return "this URL does not parse"
    if scheme in WEBHOOK_SCHEMES and not host:
        return "expected an http:// or https:// URL with a host"
    if host and _forbidden_host(host):
        return (
            f"{host} is a link-local or cloud metadata address: notifications are never sent there "
            "(it would hand out the machine's credentials)"
        )
    return None


@dataclass(frozen=True)
class Pinned:
    """A webhook URL rewritten to one checked address, with what keeps TLS and the Host header right."""

    url: str
    host_header: str
    sni_hostname: str | None


def pinned(url: str) -> Pinned:
    """Resolve the URL's host, refuse it when any address is link-local or metadata, and aim at the first one.

    Raises :class:`ForbiddenAddress` for a refused address and :class:`RunwatchError` when the name does not
    resolve (worth a retry: DNS may be back later).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if _forbidden_host(host):
        raise ForbiddenAddress(f"{host} is a link-local or cloud metadata address")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise RunwatchError(f"{host} does not resolve: {exc}") from exc
    addresses = [str(info[4][0]) for info in infos]
    bad = [a for a in addresses if forbidden_address(a)]
    if bad or not addresses:
        raise ForbiddenAddress(f"{host} resolves to {', '.join(bad) or 'nothing'}, a link-local or metadata address")
    address = addresses[0]
    netloc = f"[{address}]" if ":" in address else address
    if parts.port is not None:
        netloc += f":{parts.port}"
    target = parts._replace(netloc=netloc).geturl()
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    if ":" in host and not host.startswith("["):  # an IPv6 literal keeps its brackets in Host
        host_header = f"[{host}]" + (f":{parts.port}" if parts.port is not None else "")
    return Pinned(target, host_header, host if parts.scheme == "https" else None)


def sign(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Runwatch-Signature`` value for ``body`` sent at ``timestamp`` (now when None)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def verify(secret: bytes, header: str, body: bytes, *, now: float | None = None, tolerance: int = TOLERANCE) -> bool:
    """A receiver's check: the signature matches the body and its timestamp is at most ``tolerance`` s old."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        stamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - stamp) > tolerance:
        return False
    expected = hmac.new(secret, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("v1", ""))
