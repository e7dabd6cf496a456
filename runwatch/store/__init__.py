"""Where jobs are kept: the protocol the engine needs, its backends (SQLite, PostgreSQL), and the one place that
opens the backend a config names."""

from runwatch.store.opening import journal_exists, journal_name, open_store
from runwatch.store.protocol import Command, Store
from runwatch.store.sqlite import Journal, StateLock

__all__ = ["Command", "Journal", "StateLock", "Store", "journal_exists", "journal_name", "open_store"]
