"""sd_notify without a library: one datagram per message to the socket systemd names in ``$NOTIFY_SOCKET``.

The protocol is newline-separated ``KEY=VALUE`` lines in a single ``AF_UNIX``/``SOCK_DGRAM`` datagram
(sd_notify(3)). A name starting with ``@`` is in the abstract namespace. Without ``$NOTIFY_SOCKET`` (not
under systemd, or ``Type=`` is not notify) every call is a no-op, and no call ever raises: telling systemd
how things stand must not be what stops the daemon.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

__all__ = ["notify", "ready", "reloading", "status", "stopping", "watchdog", "watchdog_interval"]

_SEND_TIMEOUT = 1.0  # seconds; a full receive queue at PID 1 must not hang the main loop for long


def _address(env: Mapping[str, str]) -> str | None:
    value = env.get("NOTIFY_SOCKET", "")
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # unset, or a kind (vsock:...) this client does not speak


def notify(*fields: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``fields`` (``"READY=1"``...) as one message; True if it was sent, False if unset or it failed."""
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    message = "\n".join(fields).encode("utf-8", "replace")
    try:
        # A fresh socket per message, as libsystemd does: nothing to keep open across fork or reconnect.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(_SEND_TIMEOUT)
            sock.sendto(message, os.fsencode(address))
    except (OSError, ValueError):
        return False
    return True


def ready(env: Mapping[str, str] | None = None) -> bool:
    """Start-up (or a reload) is complete: ``systemctl start`` returns, dependent units go on."""
    return notify("READY=1", env=env)


def status(text: str, env: Mapping[str, str] | None = None) -> bool:
    """A one-line state shown by ``systemctl status``."""
    return notify("STATUS=" + " ".join(text.splitlines()), env=env)


def watchdog(env: Mapping[str, str] | None = None) -> bool:
    """Still alive: resets the ``WatchdogSec=`` timer."""
    return notify("WATCHDOG=1", env=env)


def stopping(env: Mapping[str, str] | None = None) -> bool:
    """Shutting down: systemd stops expecting watchdog pings and waits ``TimeoutStopSec=``."""
    return notify("STOPPING=1", env=env)


def reloading(env: Mapping[str, str] | None = None) -> bool:
    """A reload has begun; send :func:`ready` when it is over.

    systemd 253 and later want ``MONOTONIC_USEC`` with it (to tell this reload from an older one under
    ``Type=notify-reload``); older versions ignore the extra field.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", env=env)


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """``WatchdogSec=`` in seconds, or None when no watchdog is expected of this process.

    ``$WATCHDOG_PID``, when set, names the process the watchdog is meant for: a child that inherited the
    environment must not take the pings on itself. Ping at half the interval, as sd_watchdog_enabled(3) advises.
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 1_000_000
