"""``runwatch doctor``'s look at the journal's database (``[state] database``): reachable with the daemon's own
password sources, its schema against this runwatch's, and the clocks of this machine and of the other nodes
against the database's. The database is looked at as it is: never migrated (the daemon does that at its start),
and the password is never shown.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from runwatch.doctor import CheckResult, _fail, _ok, _warn

if TYPE_CHECKING:
    import psycopg

    from runwatch.config import Config

__all__ = ["check_database", "check_database_clock", "check_schema", "database_counts"]

DB_CLOCK_WARN = 3.0  # seconds between a node's clock and the database's worth a warning
DB_CONNECT_TIMEOUT = "5"  # seconds the doctor waits for the database


def _connect_database(config: Config, env: Mapping[str, str]) -> psycopg.Connection[Any]:
    """A plain connection to the configured database, its password from the same sources as the daemon's (the
    systemd credential, PGPASSWORD, the password file), never printed; JournalError when it cannot be made."""
    from runwatch.config import DB_PASSWORD_SOURCES
    from runwatch.errors import JournalError
    from runwatch.store.opening import DRIVER_HINT, credential_password

    try:
        import psycopg
        from psycopg.conninfo import make_conninfo
    except ImportError as exc:
        raise JournalError(f"[state] database is set, but {DRIVER_HINT} ({exc})") from exc

    url = config.state.database or ""
    extra: dict[str, Any] = {"connect_timeout": DB_CONNECT_TIMEOUT, "application_name": "runwatch doctor"}
    password = credential_password(env) or env.get("PGPASSWORD")
    if password:
        extra["password"] = password
    if env.get("PGPASSFILE"):
        extra["passfile"] = env["PGPASSFILE"]
    try:
        return psycopg.connect(make_conninfo(url, **extra), autocommit=True)
    except psycopg.Error as exc:
        message = " ".join(str(exc).split())
        hint = f"; the password comes from {DB_PASSWORD_SOURCES}" if "password" in message else ""
        raise JournalError(f"cannot reach the journal database {url}: {message}{hint}") from exc


def database_counts(config: Config, env: Mapping[str, str]) -> dict[str, int] | None:
    """Jobs by state in the configured database, read without migrating it; None when runwatch never used it."""
    import psycopg

    from runwatch.errors import JournalError
    from runwatch.store.pgschema import schema_version

    with _connect_database(config, env) as conn:
        try:
            if schema_version(conn) == 0:
                return None
            rows = conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        except psycopg.Error as exc:
            raise JournalError(f"journal {config.state.database}: {' '.join(str(exc).split())}") from exc
    return {str(state): int(n) for state, n in rows}


def check_database(config: Config, env: Mapping[str, str] = os.environ) -> Iterator[CheckResult]:
    """With ``[state] database``: the schema against this runwatch's, then the clocks (this machine's and the
    other nodes') against the database's. Nothing when no database is configured or it cannot be reached (the
    state check says why)."""
    from runwatch.errors import JournalError

    if not config.state.database:
        return
    try:
        conn = _connect_database(config, env)
    except JournalError:
        return
    import psycopg

    with conn:
        try:
            yield check_schema(conn, config.state.database)
            yield check_database_clock(conn)
        except psycopg.Error as exc:  # the database went away between two checks
            detail = f"{config.state.database}: {' '.join(str(exc).split())}"
            yield _fail("database", detail, "check the database is up and the role may read runwatch's tables")


def check_schema(conn: psycopg.Connection[Any], url: str) -> CheckResult:
    """The database's schema version against the one this runwatch knows: the same passes; older is migrated
    at the daemon's start; newer is refused (an older runwatch would misread it)."""
    from runwatch.store.pgschema import MIGRATIONS, schema_version

    name, ours = "schema", MIGRATIONS[-1].version
    found = schema_version(conn)
    if found == ours:
        return _ok(name, f"version {found}, this runwatch's")
    if found == 0:
        return _ok(name, f"none yet: runwatch makes version {ours} at the first start")
    if found < ours:
        return _warn(
            name,
            f"version {found}, older than this runwatch's {ours}: migrated at the daemon's start",
            "upgrade every node together: a node with older code refuses a database migrated past it",
        )
    return _fail(
        name,
        f"version {found}, newer than this runwatch knows ({ours}): the daemon refuses to start on {url}",
        "run the runwatch that migrated it (upgrade this machine)",
    )


def check_database_clock(conn: psycopg.Connection[Any], local: datetime | None = None) -> CheckResult:
    """This machine's clock against the database's ``now()``, and each running node's recorded offset
    (``nodes.clock_offset``, when the table exists). Leases use the database's clock, so a skewed clock does not
    break a takeover; it still dates status files, logs and the UTC day a create is counted in."""
    name = "database-clock"
    before = datetime.now(UTC)
    row = conn.execute("SELECT clock_timestamp(), to_regclass('nodes') IS NOT NULL").fetchone()
    after = datetime.now(UTC)
    assert row is not None  # a SELECT without FROM always gives its row
    server, has_nodes = row
    local = local or before + (after - before) / 2  # the server read its clock about halfway through
    skew = (local - server).total_seconds()
    problems = []
    if abs(skew) > DB_CLOCK_WARN:
        problems.append(f"this machine is {abs(skew):.1f} s {'ahead of' if skew > 0 else 'behind'} the database")
    if has_nodes:
        nodes = conn.execute(
            "SELECT name, clock_offset FROM nodes WHERE stopped_at IS NULL AND clock_offset IS NOT NULL ORDER BY name"
        ).fetchall()
        problems += [
            f"node {node} is {abs(offset):.1f} s {'ahead of' if offset > 0 else 'behind'} it"
            for node, offset in nodes
            if abs(offset) > DB_CLOCK_WARN
        ]
    if problems:
        return _warn(
            name,
            "; ".join(problems),
            "sync the clocks with NTP (timedatectl set-ntp true); leases use the database's clock, but status "
            "files, logs and the UTC day a create counts in use each node's own",
        )
    seen = " and every running node" if has_nodes else ""
    return _ok(name, f"this machine{seen} within {DB_CLOCK_WARN:.0f} s of the database's clock")
