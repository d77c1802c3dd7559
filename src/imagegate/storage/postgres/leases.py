"""Named leases in PostgreSQL: taking one is a single conditional upsert."""

from imagegate.storage.postgres.database import PgDatabase


class PgLeases:
    def __init__(self, database: PgDatabase) -> None:
        self._db = database

    async def take(self, name: str, holder: str, now: float, seconds: float) -> bool:
        taken = await self._db.run(
            lambda db: db.fetchval(
                "INSERT INTO leases VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET "
                "holder = excluded.holder, until = excluded.until "
                "WHERE leases.until < $4 OR leases.holder = excluded.holder RETURNING 1",
                name,
                holder,
                now + seconds,
                now,
            )
        )
        return taken is not None

    async def release(self, name: str, holder: str) -> None:
        await self._db.run(
            lambda db: db.execute(
                "DELETE FROM leases WHERE name = $1 AND holder = $2", name, holder
            )
        )
