"""Upload tickets in PostgreSQL: claiming one is a conditional UPDATE, so it works once."""

from imagegate.core.ids import Subject, UploadId
from imagegate.storage.interfaces import UploadTicket
from imagegate.storage.postgres.database import PgDatabase


class PgUploadLedger:
    def __init__(self, database: PgDatabase) -> None:
        self._db = database

    async def create(self, ticket: UploadTicket, now: float) -> None:
        async with self._db.transaction() as db:
            await db.execute("DELETE FROM uploads WHERE expires < $1", now)
            await db.execute(
                "INSERT INTO uploads (id, owner, filename, expires, stored_limit, retention_days) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                ticket.id,
                ticket.owner,
                ticket.filename,
                ticket.expires_at,
                ticket.stored_limit,
                ticket.retention_days,
            )

    async def claim(self, upload_id: UploadId, now: float) -> UploadTicket | None:
        row = await self._db.run(
            lambda db: db.fetchrow(
                "UPDATE uploads SET used = $2 WHERE id = $1 AND used IS NULL AND expires > $2 "
                "RETURNING owner, filename, expires, stored_limit, retention_days",
                upload_id,
                now,
            )
        )
        if row is None:
            return None
        return UploadTicket(
            upload_id,
            Subject(row["owner"]),
            row["expires"],
            row["filename"],
            row["stored_limit"],
            row["retention_days"],
        )

    async def release(self, upload_id: UploadId) -> None:
        await self._db.run(
            lambda db: db.execute("UPDATE uploads SET used = NULL WHERE id = $1", upload_id)
        )
