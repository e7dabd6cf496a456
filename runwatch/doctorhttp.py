"""``runwatch doctor``'s checks of the HTTP server (``[http]``) and the notification targets (``[[notify]]``).

Nothing is sent and nothing is kept: the listen address is bound for an instant and let go, a webhook's host is
resolved but never contacted, and Apprise only parses its URLs. A target is shown by its scheme and host, never
by its path or user (where Slack, Telegram and the like keep their tokens); a token or secret is shown by its
source and length only.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from runwatch.doctor import CheckResult, _fail, _ok, _problems, _warn
from runwatch.errors import ConfigError, RunwatchError
from runwatch.ops import daemon_holder

if TYPE_CHECKING:
    from runwatch.config import Config, NotifyConfig

__all__ = ["check_http_listen", "check_http_token", "check_notify", "http_checks", "port_holder"]

MIN_TOKEN = 16  # characters of an HTTP token below which it is guessable
_LISTEN_STATE = "0A"  # TCP_LISTEN in /proc/net/tcp
_PROC = Path("/proc")


def http_checks(config: Config, env: Mapping[str, str] = os.environ) -> list[CheckResult]:
    """The [http] checks, then one or two per [[notify]] target (none without targets)."""
    results = [check_http_listen(config)]
    if config.http.enabled:
        results.append(check_http_token(config, env))
    for index, target in enumerate(config.notify):
        results += check_notify(config, index, target, env)
    return results


# -- [http] ---------------------------------------------------------------------------------------------


def check_http_listen(config: Config, proc: Path = _PROC) -> CheckResult:
    """The listen address names this machine and its port can be bound (or is held by this config's daemon)."""
    name, http = "http", config.http
    if not http.enabled:
        return _ok(name, 'off ([http] listen = "")')
    # Bound as runwatch.web.server binds it: the same family, the same option.
    sock = socket.socket(socket.AF_INET6 if ":" in http.host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((http.host, http.port))
    except socket.gaierror as exc:
        return _fail(
            name,
            f"http.listen = {http.listen!r}: {http.host} does not resolve ({exc.strerror or exc})",
            'use an address of this machine, such as "127.0.0.1:8765"',
        )
    except OSError as exc:
        return _bind_problem(config, exc, proc)
    finally:
        sock.close()
    if http.port == 0:
        return _ok(name, f"{http.listen}: any free port (the daemon logs the one it takes)")
    return _ok(name, f"{http.listen}: the port is free")


def _bind_problem(config: Config, exc: OSError, proc: Path) -> CheckResult:
    name, http = "http", config.http
    if exc.errno == errno.EADDRINUSE:
        holder = port_holder(http.port, proc)
        daemon = daemon_holder(config.state.dir)
        daemon_pid = re.search(r"pid (\d+)", daemon or "")
        if daemon and (holder is None or (daemon_pid and holder.startswith(f"pid {daemon_pid[1]} "))):
            return _ok(name, f"{http.listen}: in use by this config's running daemon ({daemon})")
        who = f"by {holder}" if holder else "by another program"
        return _fail(
            name,
            f"http.listen = {http.listen!r}: the port is taken {who}",
            f"stop it, or choose another port (ss -ltnp 'sport = :{http.port}' names who holds it); "
            "the daemon would start without its HTTP server",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return _fail(
            name,
            f"http.listen = {http.listen!r}: {http.host} is not an address of this machine",
            'listen on one of its addresses ("127.0.0.1:8765" for this machine only)',
        )
    if exc.errno == errno.EACCES:
        return _fail(
            name,
            f"http.listen = {http.listen!r}: binding port {http.port} is not allowed for uid {os.geteuid()}",
            "use a port above 1023 (ports below need privileges runwatch does not have), or allow it in the "
            "unit's SocketBindAllow=",
        )
    return _fail(name, f"http.listen = {http.listen!r}: cannot bind: {exc.strerror or exc}", "check [http] listen")


def port_holder(port: int, proc: Path = _PROC) -> str | None:
    """Who listens on TCP ``port`` ("pid N (NAME)"), from the kernel's socket tables; None when not knowable
    (another user's process, /proc hidden)."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # A line: slot, local address:port (hex), remote, state, queues, timers, retransmits, uid, timeout, inode
            if len(fields) > 9 and fields[3] == _LISTEN_STATE and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for process in proc.iterdir():
        if not process.name.isdigit():
            continue
        try:
            for fd in (process / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    comm = (process / "comm").read_text().strip()
                    return f"pid {process.name} ({comm})"
        except OSError:  # gone, or not ours to look at
            continue
    return None


def check_http_token(config: Config, env: Mapping[str, str] = os.environ) -> CheckResult:
    """The token loads from its source; a server beyond loopback has one; its file is for runwatch's eyes."""
    from runwatch.config import HTTP_CREDENTIAL_NAME, HTTP_TOKEN_SOURCES
    from runwatch.web.security import TOKEN_ENV, is_loopback, load_token

    name, http = "http-token", config.http
    try:
        token = load_token(config, env)
    except ConfigError as exc:
        return _fail(name, _problems(exc.summary, exc), f"give the token through {HTTP_TOKEN_SOURCES}")
    if token is None:
        assert is_loopback(http.host)  # load_token refuses the rest
        return _ok(name, "none: reads are open on loopback, writes are off (401)")
    if (env.get(TOKEN_ENV) or "").strip():
        source, file = f"${TOKEN_ENV}", None
    elif env.get("CREDENTIALS_DIRECTORY") and (Path(env["CREDENTIALS_DIRECTORY"]) / HTTP_CREDENTIAL_NAME).exists():
        source, file = f"systemd credential {HTTP_CREDENTIAL_NAME}", None  # private to the service by design
    else:
        source, file = f"http.token_file ({http.token_file})", http.token_file
    detail = f"from {source}, {len(token)} characters"
    if file is not None:
        loose = _loose_permissions(name, "http.token_file", file)
        if loose is not None:
            return loose
    if len(token) < MIN_TOKEN:
        return _warn(name, detail + ": short enough to guess", "make one with openssl rand -hex 32")
    return _ok(name, detail)


def _loose_permissions(name: str, key: str, file: Path) -> CheckResult | None:
    """A FAIL when others may read ``file``, a WARN when its group may; None when only its owner may."""
    try:
        mode = file.stat().st_mode
    except OSError as exc:
        return _fail(name, f"{key} = {file}: cannot stat: {exc.strerror or exc}", "check the path")
    shown = f"{key} = {file} is mode {stat.filemode(mode)[1:]}"
    if mode & stat.S_IROTH:
        return _fail(name, shown + ": every user of this machine can read it", f"chmod o-rwx {file}")
    if mode & (stat.S_IRGRP | stat.S_IWGRP):
        return _warn(
            name, shown + ": its group can read it", f"chmod 0600 {file}, unless runwatch alone is in that group"
        )
    return None


# -- [[notify]] -----------------------------------------------------------------------------------------


def _shown(url: str) -> str:
    """A notification URL as doctor shows it: scheme and host for the kinds that start with a host."""
    from runwatch.webhook import APPRISE_HTTP_SCHEMES, WEBHOOK_SCHEMES

    scheme, _, rest = url.partition("://")
    if scheme.lower() not in (*WEBHOOK_SCHEMES, *APPRISE_HTTP_SCHEMES):
        return f"{scheme}://…"
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}"


def check_notify(
    config: Config, index: int, target: NotifyConfig, env: Mapping[str, str] = os.environ
) -> list[CheckResult]:
    """A [[notify]] target: its address allowed and resolving (webhooks and Apprise's json/form/xml), Apprise
    understanding its URL, a webhook's secret readable, long enough and for runwatch's eyes only."""
    from runwatch.webhook import APPRISE_HTTP_SCHEMES

    name, key = f"notify[{index}]", f"notify[{index}].url"
    scheme = target.url.split("://", 1)[0].lower()
    shown = _shown(target.url)
    events = f"events {', '.join(target.events)}"
    address: CheckResult = _ok(name, f"Apprise understands {shown}; {events}")
    if not target.webhook:
        problem = _apprise_problem(target.url)
        if problem is not None:
            address = _fail(name, f"{key} ({shown}): {problem}", _apprise_hint(problem))
    if address.status == "PASS" and (target.webhook or scheme in APPRISE_HTTP_SCHEMES):
        address = _address(name, f"{key} ({shown})", target.url, scheme)
        if address.status == "PASS":
            kind = "webhook" if target.webhook else "Apprise"
            address = _ok(name, f"{kind} to {shown} ({address.detail}); {events}")
    if not target.webhook:
        return [address]
    return [address, _check_secret(config, index, target, env)]


def _address(name: str, where: str, url: str, scheme: str) -> CheckResult:
    """A URL's host allowed and resolving; PASS with the address it resolves to (first) as the detail."""
    from runwatch.webhook import ForbiddenAddress, pinned, url_problem

    problem = url_problem(url, scheme)
    if problem is not None:
        return _fail(name, f"{where}: {problem}", "use the receiver's own address")
    try:
        pin = pinned(url)
    except ForbiddenAddress as exc:
        return _fail(name, f"{where}: {exc}", "use the receiver's own address")
    except RunwatchError as exc:
        return _fail(name, f"{where}: {exc}", "check the host name and this machine's DNS")
    return _ok(name, pin.url.split("://", 1)[1].split("/", 1)[0])


def _apprise_problem(url: str) -> str | None:
    from runwatch.config import _apprise_problem as problem

    return problem(url)


def _apprise_hint(problem: str) -> str:
    if "pip install" in problem:
        return "pip install 'runwatch[notify]' into runwatch's environment (the apprise library)"
    return "see https://github.com/caronc/apprise/wiki for the URL forms"


def _check_secret(config: Config, index: int, target: NotifyConfig, env: Mapping[str, str]) -> CheckResult:
    from runwatch.config import WEBHOOK_CREDENTIAL_NAME
    from runwatch.notifications import load_secret

    name, key = f"notify[{index}]/secret", f"notify[{index}].secret_file"
    try:
        secret = load_secret(target, f"notify[{index}]", env, str(config.path or "runwatch"))
    except ConfigError as exc:
        return _fail(name, _problems(exc.summary, exc), "openssl rand -hex 32 > FILE, readable by runwatch only")
    if secret is None:
        return _warn(
            name,
            "none: the webhook is not signed, so its receiver cannot tell runwatch's messages from anyone's",
            f"set {key} (or the systemd credential {WEBHOOK_CREDENTIAL_NAME}) to a file made with openssl rand -hex 32",
        )
    if target.secret_file is None:
        return _ok(name, f"from the systemd credential {WEBHOOK_CREDENTIAL_NAME}, {len(secret)} characters")
    loose = _loose_permissions(name, key, target.secret_file)
    if loose is not None:
        return loose
    return _ok(name, f"{key} = {target.secret_file}, {len(secret)} characters, readable by its owner only")
