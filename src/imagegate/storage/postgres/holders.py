"""Which processes are alive, for a database that processes on several machines share.

Every process beats: it writes the database's own clock time into its row of
`holders` every few seconds, over a connection of its own (a busy pool must not
delay it). A process that has not beaten for a minute is gone (killed, crashed, cut
off): another then releases its quota reservations and fails its running jobs, so that
no slot stays taken and no caller waits forever. On open, the processes of this
machine that are gone are reaped at once, as the embedded backend does. The
database's clock decides, so clock skew between replicas does not matter here.

Reaping is done carefully, because taking a live process for a dead one aborts its
work: a process reaps only after it has itself beaten without a gap for as long as
`gone_after` (one that comes back from an outage would otherwise find everyone
silent), and a holder is judged and removed in one statement (a beat that lands
between a look and a delete can't be lost). A process that finds its own row gone
says so in the log: it was cut off for longer than `gone_after`.
"""

import asyncio
import json
import logging
import time

from imagegate.core.errors import StorageError
from imagegate.storage.interfaces import JobState
from imagegate.storage.postgres.database import DRIVER_ERRORS, Connection, PgDatabase, failure
from imagegate.storage.processes import is_gone
from imagegate.storage.rules import ABANDONED

log = logging.getLogger("imagegate.storage")

BEAT_SECONDS = 10.0
GONE_AFTER_SECONDS = 60.0


async def beat(connection: Connection, holder: str) -> bool:
    """Record that `holder` is alive; True when its row had to be made anew."""
    made = await connection.fetchval(
        "INSERT INTO holders VALUES ($1, extract(epoch FROM clock_timestamp())) "
        "ON CONFLICT (holder) DO UPDATE SET seen = excluded.seen RETURNING xmax = 0",
        holder,
    )
    return bool(made)


async def _end_what_they_held(connection: Connection, holders: list[str]) -> None:
    await connection.execute("DELETE FROM reservations WHERE holder = ANY($1)", holders)
    await connection.execute(
        "UPDATE jobs SET state = $2, error = $3, "
        "updated_us = (extract(epoch FROM clock_timestamp()) * 1000000)::bigint "
        "WHERE holder = ANY($1) AND state = 'running'",
        holders,
        JobState.FAILED.value,
        json.dumps(ABANDONED),
    )


async def reap_silent(connection: Connection, gone_after: float) -> list[str]:
    """Reap the processes that have not beaten for `gone_after` seconds."""
    async with connection.transaction():
        rows = await connection.fetch(
            "DELETE FROM holders "
            "WHERE seen < extract(epoch FROM clock_timestamp()) - $1 RETURNING holder",
            gone_after,
        )
        silent = [row["holder"] for row in rows]
        if silent:
            await _end_what_they_held(connection, silent)
    return silent


async def reap_gone_here(connection: Connection) -> None:
    """On open: reap the processes of this machine that are gone."""
    rows = await connection.fetch(
        "SELECT holder FROM holders UNION SELECT holder FROM reservations "
        "UNION SELECT holder FROM jobs WHERE state = 'running'"
    )
    gone = [row["holder"] for row in rows if is_gone(row["holder"])]
    if gone:
        async with connection.transaction():
            await connection.execute("DELETE FROM holders WHERE holder = ANY($1)", gone)
            await _end_what_they_held(connection, gone)


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
        steady_since: float | None = time.monotonic()  # `first` has just beaten
        connection: Connection | None = None
        while True:
            await asyncio.sleep(self._every)
            try:
                if connection is None or connection.is_closed():
                    connection = await database.connect()
                if await beat(connection, self._holder):
                    log.error(
                        "this process was taken for gone (no heartbeat for %g s): its "
                        "running jobs were failed and its reservations released",
                        self._gone_after,
                    )
                if steady_since is None:
                    steady_since = time.monotonic()
                if time.monotonic() - steady_since >= self._gone_after:
                    reaped = await reap_silent(connection, self._gone_after)
                    if reaped:
                        log.warning(
                            "released the reservations and failed the jobs of %d "
                            "process(es) that stopped answering",
                            len(reaped),
                        )
            except asyncio.CancelledError:
                if connection is not None:
                    connection.terminate()
                raise
            except (StorageError, *DRIVER_ERRORS) as err:
                reason = err if isinstance(err, StorageError) else failure(err)
                log.warning("could not record this process's heartbeat: %s", reason)
                steady_since = None  # a gap: wait for a steady run again before reaping
                if connection is not None:
                    connection.terminate()
                    connection = None
            except Exception:
                log.exception("the heartbeat failed; it goes on")

    async def end(self, connection: Connection) -> None:
        """On a clean close: this process holds nothing any more."""
        await connection.execute("DELETE FROM holders WHERE holder = $1", self._holder)
