"""The embedded SQLite database: one connection behind a lock, WAL, IMMEDIATE writes.

Shared by the asset index and the quota counters. IMMEDIATE transactions take the
write lock at BEGIN, so a check-then-write inside one is atomic, also across
processes that share the file.
"""

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imagegate.errors import StorageError


class Database:
    def __init__(self, path: Path, schema: str) -> None:
        self.lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(schema)
        except sqlite3.Error as err:
            raise StorageError(f"cannot open the database {path}: {err}") from None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def read(self, query: str, args: Any = ()) -> list[Any]:
        with self.lock:
            return self._db.execute(query, args).fetchall()

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """Several reads under the lock (no transaction)."""
        with self.lock:
            yield self._db

    def close(self) -> None:
        with self.lock:
            self._db.close()
