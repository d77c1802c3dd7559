"""Which processes are alive, for a database that processes on several machines share.

Every process beats: it writes the database's own clock time into its row of
`holders` every few seconds. A process that has not beaten for a minute is gone
(killed, crashed, cut off): any other process then releases its quota reservations and
fails its running jobs, so that no slot stays taken and no caller waits forever. On
open, the processes of this machine that are gone are reaped at once, as the embedded
backend does. The database's clock, not the machines', decides, so clock skew between
replicas does not matter.
"""

import asyncio
import json
import logging

from imagegate.core.errors import StorageError
from imagegate.storage.interfaces import JobState
from imagegate.storage.postgres.database import Connection, PgDatabase
from imagegate.storage.processes import is_gone
from imagegate.storage.rules import ABANDONED

log = logging.getLogger("imagegate.storage")

BEAT_SECONDS = 10.0
GONE_AFTER_SECONDS = 60.0


async def beat(connection: Connection, holder: str) -> None:
    await connection.execute(
        "INSERT INTO holders VALUES ($1, extract(epoch FROM clock_timestamp())) "
        "ON CONFLICT (holder) DO UPDATE SET seen = excluded.seen",
        holder,
    )


async def reap(connection: Connection, holders: list[str]) -> None:
    """End what the given (gone) processes held."""
    async with connection.transaction():
        await connection.execute("DELETE FROM reservations WHERE holder = ANY($1)", holders)
        await connection.execute(
            "UPDATE jobs SET state = $2, error = $3, "
            "updated_us = (extract(epoch FROM clock_timestamp()) * 1000000)::bigint "
            "WHERE holder = ANY($1) AND state = 'running'",
            holders,
            JobState.FAILED.value,
            json.dumps(ABANDONED),
        )
        await connection.execute("DELETE FROM holders WHERE holder = ANY($1)", holders)


async def reap_silent(connection: Connection, gone_after: float) -> list[str]:
    """Reap the processes that have not beaten for `gone_after` seconds, and those that
    hold something without a heartbeat row (reaped before, or closed)."""
    rows = await connection.fetch(
        "SELECT holder FROM holders WHERE seen < extract(epoch FROM clock_timestamp()) - $1 "
        "UNION SELECT holder FROM reservations WHERE holder NOT IN (SELECT holder FROM holders) "
        "UNION SELECT holder FROM jobs WHERE state = 'running' "
        "AND holder NOT IN (SELECT holder FROM holders)",
        gone_after,
    )
    silent = [row["holder"] for row in rows]
    if silent:
        await reap(connection, silent)
    return silent


async def reap_gone_here(connection: Connection) -> None:
    """On open: reap the processes of this machine that are gone."""
    rows = await connection.fetch(
        "SELECT holder FROM holders UNION SELECT holder FROM reservations "
        "UNION SELECT holder FROM jobs WHERE state = 'running'"
    )
    gone = [row["holder"] for row in rows if is_gone(row["holder"])]
    if gone:
        await reap(connection, gone)


class Heartbeat:
    """This process's beat, and the reaping of others, while the database is open."""

    def __init__(
        self, holder: str, every: float = BEAT_SECONDS, gone_after: float = GONE_AFTER_SECONDS
    ) -> None:
        self._holder = holder
        self._every = every
        self._gone_after = gone_after

    async def first(self, connection: Connection) -> None:
        """The opening step: reap this machine's dead, then beat."""
        await reap_gone_here(connection)
        await beat(connection, self._holder)

    async def forever(self, database: PgDatabase) -> None:
        while True:
            await asyncio.sleep(self._every)
            try:
                await database.run(lambda db: beat(db, self._holder))
                reaped = await database.run(lambda db: reap_silent(db, self._gone_after))
            except StorageError as err:
                log.warning("could not record this process's heartbeat: %s", err)
                continue
            if reaped:
                log.warning(
                    "released the reservations and failed the jobs of %d process(es) that "
                    "stopped answering",
                    len(reaped),
                )

    async def end(self, connection: Connection) -> None:
        """On a clean close: this process holds nothing any more."""
        await connection.execute("DELETE FROM holders WHERE holder = $1", self._holder)
