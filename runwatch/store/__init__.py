"""Where jobs are kept: the protocol the engine needs, and its backends (SQLite today)."""

from runwatch.store.protocol import Store
from runwatch.store.sqlite import Command, Journal, StateLock

__all__ = ["Command", "Journal", "StateLock", "Store"]
