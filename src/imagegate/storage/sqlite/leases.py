"""Named leases in SQLite: taking one is a single conditional upsert."""

import sqlite3

from imagegate.storage.sqlite.database import Database, run_script

SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until REAL NOT NULL
);
"""


def create(db: sqlite3.Connection) -> None:
    run_script(db, SCHEMA)


class SqliteLeases:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def take(self, name: str, holder: str, now: float, seconds: float) -> bool:
        taken = await self._db.write(
            lambda db: db.execute(
                "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "holder = excluded.holder, until = excluded.until "
                "WHERE leases.until < ? OR leases.holder = excluded.holder",
                (name, holder, now + seconds, now),
            )
        )
        return int(taken.rowcount) == 1

    async def release(self, name: str, holder: str) -> None:
        await self._db.write(
            lambda db: db.execute(
                "DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder)
            )
        )
