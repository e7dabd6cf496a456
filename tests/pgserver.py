"""A real PostgreSQL server for the tests, and a fresh database for each test that asks for one.

The server is Debian's ``postgresql`` package (``.ci/run`` installs it): ``initdb`` into a temporary folder,
then ``pg_ctl`` with the Unix socket in that folder and no TCP at all, once per session (about a second), run
as the ``postgres`` user since PostgreSQL refuses to run as root. A database per test costs about 0.2 s.

The server is a throwaway: ``fsync`` is off (speed; nothing here survives a power cut on purpose). The
superuser connects without a password; :data:`PASSWORD_ROLE` must give :data:`PASSWORD`, for the tests of
where a password comes from.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from .conftest import need

__all__ = ["PASSWORD", "PASSWORD_ROLE", "PgServer", "find_bindir"]

SUPERUSER = "postgres"
PASSWORD_ROLE = "runwatch_pw"
PASSWORD = "not-a-secret-9Q7"
_HBA = f"""\
local all {SUPERUSER} trust
local all all scram-sha-256
"""
_SETTINGS = (
    "-c listen_addresses='' -c unix_socket_directories={socket} -c fsync=off -c full_page_writes=off "
    "-c wal_level=minimal -c max_wal_senders=0 -c max_connections=200"
)


def find_bindir() -> Path | None:
    """The newest Debian PostgreSQL server's bin folder, else the one of a pg_ctl on PATH."""
    found = []
    for pg_ctl in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"):
        version = pg_ctl.parent.parent.name
        if re.fullmatch(r"\d+", version):
            found.append((int(version), pg_ctl.parent))
    if found:
        return max(found)[1]
    on_path = shutil.which("pg_ctl")
    return Path(on_path).resolve().parent if on_path else None


class PgServer:
    """One PostgreSQL server on a Unix socket in a temporary folder."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="runwatch-pg-"))
        self.data = self.root / "data"
        self._names = itertools.count(1)
        self._as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses root: its files and processes belong to the postgres user
            account = pwd.getpwnam(SUPERUSER)
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", SUPERUSER, "--"]

    def _run(self, *argv: str) -> None:
        done = subprocess.run([*self._as, *argv], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            log = self.root / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")

    def start(self) -> PgServer:
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
            "--no-locale", "--no-sync",
        )  # fmt: skip
        (self.data / "pg_hba.conf").write_text(_HBA)
        options = _SETTINGS.format(socket=self.root)
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", options,
                  "-w", "-s", "start")  # fmt: skip
        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(PASSWORD_ROLE), sql.Literal(PASSWORD))
            )
        return self

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-s", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str, user: str = SUPERUSER) -> str:
        """A URL as a user writes it in ``[state] database``: the socket folder as the host, no password."""
        return f"postgresql://{user}@/{database}?host={quote(str(self.root), safe='')}"

    def admin(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(database), autocommit=True)

    def create_database(self, owner: str = SUPERUSER, encoding: str = "UTF8") -> str:
        name = f"test{next(self._names)}"
        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} ENCODING {} TEMPLATE template0").format(
                    sql.Identifier(name), sql.Identifier(owner), sql.Literal(encoding)
                )
            )
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _has_account(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL server for the whole session; under CI a missing one is a failure."""
    bindir = find_bindir()
    need(bindir is not None, "no PostgreSQL server found: install the postgresql package (apt-get install postgresql)")
    assert bindir is not None
    if os.geteuid() == 0:
        need(shutil.which("runuser") is not None, "runuser not on PATH: install the util-linux package")
        need(_has_account(SUPERUSER), f"no {SUPERUSER} account: install the postgresql package, which makes it")
    server = PgServer(bindir)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[str]:
    """The name of a fresh, empty database (UTF8), dropped after the test."""
    name = pg_server.create_database()
    yield name
    pg_server.drop_database(name)


@pytest.fixture
def pg_url(pg_server: PgServer, pg_database: str) -> str:
    """A fresh database's URL, as ``[state] database`` takes it."""
    return pg_server.url(pg_database)
