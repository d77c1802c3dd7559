"""Upload tickets in SQLite: claiming one is a conditional UPDATE, so it works once."""

import sqlite3

from imagegate.core.ids import Subject, UploadId
from imagegate.storage.interfaces import UploadTicket
from imagegate.storage.sqlite.database import Database, run_script

SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    filename TEXT,
    expires REAL NOT NULL,
    stored_limit INTEGER,
    used REAL
);
CREATE INDEX IF NOT EXISTS uploads_by_expiry ON uploads (expires);
"""


def create(db: sqlite3.Connection) -> None:
    run_script(db, SCHEMA)


class SqliteUploadLedger:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def create(self, ticket: UploadTicket, now: float) -> None:
        def create(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM uploads WHERE expires < ?", (now,))
            db.execute(
                "INSERT INTO uploads (id, owner, filename, expires, stored_limit, retention_days) "
                "VALUES (?,?,?,?,?,?)",
                (
                    ticket.id,
                    ticket.owner,
                    ticket.filename,
                    ticket.expires_at,
                    ticket.stored_limit,
                    ticket.retention_days,
                ),
            )

        await self._db.write(create)

    async def claim(self, upload_id: UploadId, now: float) -> UploadTicket | None:
        def claim(db: sqlite3.Connection) -> UploadTicket | None:
            claimed = db.execute(
                "UPDATE uploads SET used = ? WHERE id = ? AND used IS NULL AND expires > ?",
                (now, upload_id, now),
            )
            if claimed.rowcount != 1:
                return None
            owner, filename, expires, limit, days = db.execute(
                "SELECT owner, filename, expires, stored_limit, retention_days FROM uploads "
                "WHERE id = ?",
                (upload_id,),
            ).fetchone()
            return UploadTicket(upload_id, Subject(owner), expires, filename, limit, days)

        return await self._db.write(claim)

    async def release(self, upload_id: UploadId) -> None:
        await self._db.write(
            lambda db: db.execute("UPDATE uploads SET used = NULL WHERE id = ?", (upload_id,))
        )
