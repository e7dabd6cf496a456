"""The journal a config names: PostgreSQL when ``[state] database`` is set, else SQLite in ``[state] dir``.

Every part of runwatch that reads or writes jobs (the daemon, ``status``, ``cancel``/``retry``/``approve``,
``credits``, ``doctor``, ``submit``) opens it here, so they all agree on where the jobs are. The PostgreSQL
driver is imported only when a database is configured: it is an extra (``runwatch[postgres]``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from runwatch.config import DB_CREDENTIAL_NAME
from runwatch.errors import JournalError

if TYPE_CHECKING:
    from runwatch.config import Config
    from runwatch.store.protocol import Store

__all__ = ["JOURNAL_FILE", "credential_password", "journal_exists", "journal_name", "open_store", "sqlite_path"]

JOURNAL_FILE = "journal.sqlite3"
DRIVER_HINT = "the PostgreSQL journal needs runwatch's postgres extra: pip install 'runwatch[postgres]'"


def sqlite_path(config: Config) -> Path:
    """Where the SQLite journal is (or would be) in the state directory."""
    return config.state.dir / JOURNAL_FILE


def journal_name(config: Config) -> str:
    """The journal as messages name it: the SQLite file, or the database URL (which holds no password)."""
    return config.state.database or str(sqlite_path(config))


def journal_exists(config: Config) -> bool:
    """Whether there is a journal to look at without making one: a command that only reads need not create the
    SQLite file. A database is always there to be asked."""
    return config.state.database is not None or sqlite_path(config).exists()


def credential_password(env: Mapping[str, str]) -> str | None:
    """The systemd credential ``runwatch_db_password`` (LoadCredential=), or None when there is none: then
    libpq looks for a password itself (PGPASSWORD, the password file)."""
    folder = env.get("CREDENTIALS_DIRECTORY")
    if not folder:
        return None
    path = Path(folder) / DB_CREDENTIAL_NAME
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise JournalError(f"cannot read the database password from {path}: {exc}") from exc
    return text.rstrip("\r\n") or None  # `echo secret > file` ends it with a newline that is not part of it


def open_store(config: Config, env: Mapping[str, str] = os.environ, *, daemon: bool = False) -> Store:
    """Open (and bring up to date) the configured journal. ``daemon``: the caller is the daemon (it joins a
    shared database as its node afterwards, see ``runwatch.nodes``)."""
    if config.state.database is None:
        from runwatch.store.sqlite import Journal

        return Journal(sqlite_path(config))
    try:
        from runwatch.store.postgres import PostgresJournal
    except ImportError as exc:
        raise JournalError(f"[state] database is set, but {DRIVER_HINT} ({exc})") from exc
    return PostgresJournal(config.state.database, password=credential_password(env))
