"""Single-use nonces in SQLite: a primary key makes the second use fail, atomically."""

import sqlite3

from imagegate.storage.rules import CLOCK_MARGIN_SECONDS
from imagegate.storage.sqlite.database import Database, run_script

SCHEMA = """
CREATE TABLE IF NOT EXISTS spent_nonces (
    nonce TEXT PRIMARY KEY,
    expires REAL NOT NULL
);
"""


def create(db: sqlite3.Connection) -> None:
    run_script(db, SCHEMA)


class SqliteNonceLedger:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def spend(self, nonce: str, now: float, valid_for: float) -> bool:
        def spend(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM spent_nonces WHERE expires < ?", (now - CLOCK_MARGIN_SECONDS,))
            inserted = db.execute(
                "INSERT OR IGNORE INTO spent_nonces VALUES (?, ?)", (nonce, now + valid_for)
            )
            return inserted.rowcount == 1

        return await self._db.write(spend)
