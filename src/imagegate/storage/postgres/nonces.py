"""Single-use nonces in PostgreSQL: a primary key makes the second use fail, atomically."""

from imagegate.storage.postgres.database import PgDatabase
from imagegate.storage.rules import CLOCK_MARGIN_SECONDS


class PgNonceLedger:
    def __init__(self, database: PgDatabase) -> None:
        self._db = database

    async def spend(self, nonce: str, now: float, valid_for: float) -> bool:
        async with self._db.transaction() as db:
            await db.execute(
                "DELETE FROM spent_nonces WHERE expires < $1", now - CLOCK_MARGIN_SECONDS
            )
            inserted = await db.fetchval(
                "INSERT INTO spent_nonces VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1",
                nonce,
                now + valid_for,
            )
        return inserted is not None
