"""Stores: the `Store` contract and its implementations."""

from __future__ import annotations

import os

from .base import Changes, Finish, Pending, Store
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = ["Changes", "Finish", "MemoryStore", "Pending", "SQLiteStore", "Store", "is_postgres_url", "open_store"]


def open_store(store: Store | str | os.PathLike[str], *, lock: bool = False, durability: str = "normal") -> Store:
    """A Store from what a user passes: ":memory:", a path to an SQLite file, a PostgreSQL URL
    ("postgresql://..." or "postgres://...": a `PostgresStore`, schema "actors"), or a Store."""
    if isinstance(store, str) and store == ":memory:":
        return MemoryStore()
    if isinstance(store, str) and is_postgres_url(store):
        from .postgres import PostgresStore  # psycopg is imported only for a PostgreSQL store

        return PostgresStore(store)
    if isinstance(store, str | os.PathLike):
        return SQLiteStore(store, lock=lock, durability=durability)
    if isinstance(store, Store):
        return store
    raise TypeError(f"invalid store {store!r}: expected a path, ':memory:', a PostgreSQL URL or a Store")


def is_postgres_url(store: object) -> bool:
    """Whether `store` names a PostgreSQL database ("postgresql://..." or "postgres://...")."""
    return isinstance(store, str) and store.startswith(("postgresql://", "postgres://"))
