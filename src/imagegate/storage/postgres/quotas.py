"""The quota ledger in PostgreSQL: daily counters per subject, reservations with a lease.

A reservation holds the subject's advisory lock for its transaction, so two checks
can't both pass on the same usage, from any replica: thirty calls at once against a
limit of five make exactly five reservations, wherever they run. The usage is read in
one statement, so it sees a commit or a release whole. Reservations of a process that is gone end
through its heartbeat (holders.py), any other stale one with its lease.
"""

import uuid

from imagegate.storage.interfaces import LimitCheck, Reservation, Usage, UsageRow
from imagegate.storage.postgres.database import Connection, Lock, PgDatabase, lock
from imagegate.storage.reports import REPORTS
from imagegate.storage.rules import LEASE_SECONDS, day_of

USAGE = """
SELECT
    COALESCE((SELECT SUM(images) FROM usage_daily WHERE subject = $1 AND day = $2), 0)
        AS images,
    COALESCE((SELECT SUM(spend) FROM usage_daily WHERE subject = $1 AND day = $2), 0)
        AS spend,
    COALESCE((SELECT SUM(calls) FROM usage_daily WHERE subject = $1 AND day = $2), 0)
        AS calls,
    COALESCE((SELECT SUM(spend) FROM usage_daily WHERE subject = $1 AND day LIKE $3), 0)
        AS month_spend,
    held.images AS held_images, held.spend AS held_spend, held.month AS held_month,
    held.count AS in_flight,
    (SELECT at FROM last_call WHERE subject = $1) AS last_call
FROM (
    SELECT COALESCE(SUM(images) FILTER (WHERE day = $2), 0) AS images,
           COALESCE(SUM(spend) FILTER (WHERE day = $2), 0) AS spend,
           COALESCE(SUM(spend), 0) AS month,
           count(*) AS count
    FROM reservations WHERE subject = $1 AND expires >= $4
) AS held
"""


async def _usage(connection: Connection, subject: str, now: float) -> Usage:
    today = day_of(now)
    row = await connection.fetchrow(USAGE, subject, today, today[:7] + "-%", now)
    assert row is not None  # an aggregate always has its row
    return Usage(
        images_today=int(row["images"] + row["held_images"]),
        spend_today=float(row["spend"] + row["held_spend"]),
        spend_month=float(row["month_spend"] + row["held_month"]),
        calls_today=int(row["calls"]),
        in_flight=int(row["in_flight"]),
        last_call_at=row["last_call"],
    )


class PgQuotaLedger:
    def __init__(
        self, database: PgDatabase, holder: str, lease_seconds: float = LEASE_SECONDS
    ) -> None:
        self._db = database
        self._holder = holder
        self._lease = lease_seconds

    async def reserve(
        self,
        subject: str,
        images: int,
        spend: float,
        now: float,
        check: LimitCheck,
        relay: str = "",
    ) -> Reservation:
        reservation = Reservation(uuid.uuid4().hex, subject, images, spend, relay)
        async with self._db.transaction() as db:
            await lock(db, Lock.QUOTA, subject)
            await db.execute(
                "DELETE FROM reservations WHERE subject = $1 AND expires < $2", subject, now
            )
            check(await _usage(db, subject, now))
            await db.execute(
                "INSERT INTO reservations (id, subject, day, images, spend, expires, holder) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                reservation.id,
                subject,
                day_of(now),
                images,
                spend,
                now + self._lease,
                self._holder,
            )
            await db.execute(
                "INSERT INTO last_call VALUES ($1, $2) "
                "ON CONFLICT (subject) DO UPDATE SET at = excluded.at",
                subject,
                now,
            )
        return reservation

    async def commit(self, reservation: Reservation, images: int, spend: float, now: float) -> None:
        # No lock: a check reads the usage in one statement, which sees this whole
        # transaction (the reservation gone, the counters up) or none of it.
        async with self._db.transaction() as db:
            await db.execute("DELETE FROM reservations WHERE id = $1", reservation.id)
            await db.execute(
                "INSERT INTO usage_daily (subject, day, images, spend, calls) "
                "VALUES ($1, $2, $3, $4, 1) ON CONFLICT (subject, day) DO UPDATE SET "
                "images = usage_daily.images + excluded.images, "
                "spend = usage_daily.spend + excluded.spend, calls = usage_daily.calls + 1",
                reservation.subject,
                day_of(now),
                images,
                spend,
            )
            await db.execute(
                "INSERT INTO usage_by_relay (subject, day, relay, images, spend, calls) "
                "VALUES ($1, $2, $3, $4, $5, 1) ON CONFLICT (subject, day, relay) DO UPDATE "
                "SET images = usage_by_relay.images + excluded.images, "
                "spend = usage_by_relay.spend + excluded.spend, "
                "calls = usage_by_relay.calls + 1",
                reservation.subject,
                day_of(now),
                reservation.relay,
                images,
                spend,
            )

    async def release(self, reservation: Reservation) -> None:
        await self._db.run(
            lambda db: db.execute("DELETE FROM reservations WHERE id = $1", reservation.id)
        )

    async def usage(self, subject: str, now: float) -> Usage:
        return await self._db.run(lambda db: _usage(db, subject, now))

    async def reset(self, subject: str, now: float) -> None:
        month = day_of(now)[:7] + "-%"
        async with self._db.transaction() as db:
            await db.execute(
                "DELETE FROM usage_daily WHERE subject = $1 AND day LIKE $2", subject, month
            )
            await db.execute(
                "DELETE FROM usage_by_relay WHERE subject = $1 AND day LIKE $2", subject, month
            )
            await db.execute("DELETE FROM last_call WHERE subject = $1", subject)

    async def report(self, since: str, until: str, by: str) -> list[UsageRow]:
        query = REPORTS[by].replace("?1", "$1").replace("?2", "$2")
        rows = await self._db.run(lambda db: db.fetch(query, since, until))
        return [UsageRow(row[0], int(row[1]), float(row[2]), int(row[3])) for row in rows]
