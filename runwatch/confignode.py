"""Where this machine keeps its state and who it is among others: ``[state]`` (the state folder, the journal's
PostgreSQL URL and its check) and ``[node]`` (the node's name and lease).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from runwatch.configsecrets import _DB_PASSWORD_REFUSED
from runwatch.configtable import _MISSING, _found, _Table

DEFAULT_STATE_DIR: Final = Path("/var/lib/runwatch")
_DB_URL = "a PostgreSQL URL, postgresql://USER@HOST/DATABASE"
NODE_NAME_MAX = 63
_NODE_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{NODE_NAME_MAX - 1}}}")


@dataclass(frozen=True)
class StateConfig:
    dir: Path
    database: str | None = None
    """A PostgreSQL URL: the journal lives there instead of in ``dir`` (which keeps the node's local state)."""


@dataclass(frozen=True)
class NodeConfig:
    """This machine among the nodes sharing a PostgreSQL journal (``[node]``); with SQLite, the one node."""

    name: str = field(default_factory=lambda: default_node_name())
    lease: float = 10.0  # seconds a node owns its jobs without renewing (the database's clock)


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
