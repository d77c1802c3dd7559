"""The shared PostgreSQL database: a connection pool, transactions, one error type.

The pool opens on first use, in the event loop that uses it, and runs the opening
steps (the schema check, the clean-up after processes that are gone) once, before any
other statement. Every driver or network failure becomes a StorageError, which the
layers above report without a trace; no message carries the password.

Checks that must hold across every process (a quota's last slot, a blob's last
reference) take a transaction-scoped advisory lock on what they protect, so that
two replicas deciding at once are serialised by the database, and the lock ends with
the transaction, also when a process dies holding it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from enum import IntEnum
from typing import Any, TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from imagegate.core.errors import ImagegateError, StorageError

log = logging.getLogger("imagegate.storage")

T = TypeVar("T")
# A string: asyncpg's classes are generic only to the type checker.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
Prepare = Callable[[Connection], Awaitable[None]]
"""Run once when the pool opens, before anything else (check the schema, clean up), or
once as it closes."""
Background = Callable[["PgDatabase"], Coroutine[Any, Any, None]]
"""Runs while the pool is open (a heartbeat)."""

CONNECT_SECONDS = 10.0
STATEMENT_SECONDS = 30.0


class Lock(IntEnum):
    """The first key of an advisory lock: what the second (a hash) names."""

    SCHEMA = 1
    QUOTA = 2
    BLOB = 3
    OWNER_BYTES = 4
    PRESETS = 5


DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


def failure(err: BaseException) -> StorageError:
    """A driver failure as the error the layers above report: what failed, not how."""
    if isinstance(err, asyncpg.PostgresError):
        detail = f"{err.sqlstate} {err.__class__.__name__}"
    elif isinstance(err, asyncio.TimeoutError):
        detail = "timed out"
    else:
        detail = err.__class__.__name__
    return StorageError(f"the database failed: {detail}")


async def lock(connection: Connection, kind: Lock, name: str) -> None:
    """Hold the advisory lock on (`kind`, `name`) until the transaction ends."""
    await connection.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", int(kind), name)


class PgDatabase:
    def __init__(
        self,
        url: str,
        password: str | None,
        pool_size: int,
        prepare: Sequence[Prepare],
        background: Sequence[Background] = (),
        closing: Sequence[Prepare] = (),
    ) -> None:
        self._url = url
        self._password = password
        self._pool_size = pool_size
        self._prepare = prepare
        self._background = background
        self._closing = closing
        self._tasks: list[asyncio.Task[None]] = []
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def connect(self) -> Connection:
        """One connection outside the pool (schema upgrades)."""
        try:
            return await asyncpg.connect(
                self._url, password=self._password, timeout=CONNECT_SECONDS
            )
        except DRIVER_ERRORS as err:
            raise failure(err) from None
        except ValueError:  # asyncpg's message may quote the URL, password and all
            raise StorageError("database_url is not a valid PostgreSQL URL") from None

    async def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        """The pool, opened (and prepared) on the first call."""
        if self._closed:
            raise StorageError("the database is closed")
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                first = await self.connect()
                try:
                    for step in self._prepare:
                        await step(first)
                except DRIVER_ERRORS as err:
                    raise failure(err) from None
                finally:
                    await first.close()
                try:
                    self._pool = await asyncpg.create_pool(
                        self._url,
                        password=self._password,
                        min_size=1,
                        max_size=self._pool_size,
                        timeout=CONNECT_SECONDS,
                        command_timeout=STATEMENT_SECONDS,
                    )
                except DRIVER_ERRORS as err:
                    raise failure(err) from None
                self._tasks = [asyncio.create_task(work(self)) for work in self._background]
        return self._pool

    async def open(self) -> None:
        """Open the pool now: a wrong schema or an unreachable server stops the start."""
        await self.pool()

    async def run(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `work` on a pooled connection, outside a transaction (one statement)."""
        pool = await self.pool()
        try:
            async with pool.acquire(timeout=STATEMENT_SECONDS) as connection:
                return await work(connection)
        except DRIVER_ERRORS as err:
            raise failure(err) from None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection inside one transaction, committed when the block ends without
        error and rolled back otherwise (also when the caller is cancelled)."""
        pool = await self.pool()
        try:
            async with (
                pool.acquire(timeout=STATEMENT_SECONDS) as connection,
                connection.transaction(),
            ):
                yield connection
        except ImagegateError:
            raise
        except DRIVER_ERRORS as err:
            raise failure(err) from None

    async def aclose(self) -> None:
        """Close the pool; later calls fail with StorageError."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                async with pool.acquire() as connection:
                    for step in self._closing:
                        await step(connection)
            except DRIVER_ERRORS as err:
                log.warning("could not close the database cleanly: %s", failure(err))
            try:
                await asyncio.wait_for(pool.close(), CONNECT_SECONDS)
            except (*DRIVER_ERRORS, TimeoutError):
                pool.terminate()
