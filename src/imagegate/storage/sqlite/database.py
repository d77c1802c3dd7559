"""The embedded SQLite database: one connection, WAL, IMMEDIATE writes, async access.

Statements that may wait for the disk (an fsync, a WAL checkpoint, another process's
lock) run in worker threads. Brief ones that don't (a few rows read by key, a write
that need not be durable) run on the event loop, where they take tens of
microseconds: a hand-off to a thread costs more, and under load much more. The
connection is used by one caller at a time inside this process; waiting callers hold
no thread, and take turns round-robin by subject (core.cpu.acting_subject), so that a
caller with sixteen calls in flight does not queue another's one behind all of them.
IMMEDIATE transactions take SQLite's write lock at BEGIN, so a check-then-write inside
one is atomic across processes that share the file too.
"""

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import anyio
import anyio.from_thread

from imagegate.core.cpu import FairShare, acting_subject
from imagegate.core.errors import StorageError

T = TypeVar("T")
BUSY_TIMEOUT_MS = 10_000
AUTOCHECKPOINT_PAGES = 1000
"""SQLite's default: a commit that grows the WAL past it checkpoints."""


class Transaction:
    """Statements inside one open IMMEDIATE transaction."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.committed = False

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        self._check_open()
        return await _in_thread(work, self._connection)

    async def run_last(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work`, then COMMIT, in one hand-off to a thread: the block's last call (a
        cancel during the work still rolls back, as the block's end would)."""
        self._check_open()

        def then_commit(db: sqlite3.Connection) -> T:
            result = work(db)
            anyio.from_thread.check_cancelled()
            db.execute("COMMIT")
            self.committed = True
            return result

        return await _in_thread(then_commit, self._connection)

    def _check_open(self) -> None:
        if self.committed:  # a statement now would run outside the transaction
            raise RuntimeError("the transaction was committed by its last call")


async def _in_thread(work: Callable[[sqlite3.Connection], T], connection: sqlite3.Connection) -> T:
    """Run `work` in a worker thread; a database failure is a StorageError (which the
    caller can report), not a driver exception."""
    try:
        return await anyio.to_thread.run_sync(work, connection)
    except sqlite3.Error as err:
        raise StorageError(f"the database failed: {err}") from None


def _in_transaction(
    work: Callable[[sqlite3.Connection], T],
    db: sqlite3.Connection,
    durable: bool,
    in_thread: bool = True,
) -> T:
    """`work` in one IMMEDIATE transaction, committed unless it failed or (in a worker
    thread) the task waiting for the thread was cancelled meanwhile."""
    if not durable:
        db.execute("PRAGMA synchronous=NORMAL")
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(db)
            if in_thread:
                anyio.from_thread.check_cancelled()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    finally:
        if not durable:
            db.execute("PRAGMA synchronous=FULL")
    return result


Prepare = Callable[[sqlite3.Connection], None]
"""Run once when the database opens: check its schema, clean up."""


def run_script(db: sqlite3.Connection, script: str) -> None:
    """Statements separated by ';', inside the caller's transaction (unlike
    `executescript`, which commits first)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def rows_by_name(db: sqlite3.Connection, query: str, args: Sequence[Any]) -> list[sqlite3.Row]:
    """The rows of a query, read by column name: columns grow with migrations."""
    cursor = db.cursor()
    cursor.row_factory = sqlite3.Row
    return cursor.execute(query, args).fetchall()


def connect(path: Path) -> sqlite3.Connection:
    """A connection as every user of the file needs it: WAL, full sync, a busy wait;
    transactions are begun explicitly (IMMEDIATE)."""
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    except sqlite3.Error as err:
        raise StorageError(f"cannot open the database {path}: {err}") from None
    return db


class Database:
    def __init__(self, path: Path, prepare: Sequence[Prepare]) -> None:
        self._turns = FairShare(1)
        self._holder: asyncio.Task[Any] | None = None
        self._db = connect(path)
        try:
            for step in prepare:
                step(self._db)
        except sqlite3.Error as err:
            self._db.close()
            raise StorageError(f"cannot open the database {path}: {err}") from None
        except BaseException:
            self._db.close()
            raise
        self._closed = False

    async def read(self, work: Callable[[sqlite3.Connection], T], *, brief: bool = False) -> T:
        """Run `work` (reads, no transaction) on the connection. `brief`: a few rows
        found by key, which is tried on the event loop first (see `_at_once`)."""
        async with self._turn():
            self._check_open()
            if brief:
                done, result = self._at_once(work)
                if done:
                    return cast(T, result)
            return await _in_thread(work, self._db)

    async def write(self, work: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run `work` inside one IMMEDIATE transaction, all in one hand-off to a thread
        (each costs the event loop, and under load a wait for the GIL). A cancel that
        lands during the work still rolls it back; one that lands during the COMMIT
        comes after it.

        Not `durable`: committed without waiting for the disk (synchronous=NORMAL in
        WAL mode), for what a power loss may take back without harm: bookkeeping of
        calls that die with the machine (a reservation, a job's state). The database
        stays consistent, and the next durable commit (an image's record, a charge)
        makes every commit before it durable too. This saves an fsync per write, and
        such a write (a few rows by key) is tried on the event loop first (`_at_once`).
        """
        async with self._turn():
            self._check_open()
            if not durable:
                done, result = self._at_once(lambda db: _in_transaction(work, db, False, False))
                if done:
                    return cast(T, result)
            return await _in_thread(lambda db: _in_transaction(work, db, durable), self._db)

    def _at_once(self, work: Callable[[sqlite3.Connection], T]) -> tuple[bool, T | None]:
        """`work` run on the event loop, where it takes tens of microseconds: a hand-off
        to a thread costs more than that when idle, and under load (other callers'
        image work holding the GIL) many milliseconds, at each of a call's turns.
        It must not wait for the disk (no fsync: reads, writes that aren't durable)
        nor for a lock: with no busy wait, a lock another process holds fails it at
        once, and (False, None) says to run it in a thread, which may wait."""
        # No busy wait, and no automatic checkpoint (it fsyncs, and copies the WAL):
        # the next commit in a thread checkpoints instead.
        self._db.execute("PRAGMA busy_timeout=0")
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        try:
            return True, work(self._db)
        except sqlite3.OperationalError as err:
            code = getattr(err, "sqlite_errorcode", 0) & 0xFF  # the primary code
            if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return False, None
            raise StorageError(f"the database failed: {err}") from None
        except sqlite3.Error as err:
            raise StorageError(f"the database failed: {err}") from None
        finally:
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._db.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """An IMMEDIATE transaction, committed when the block ends without error and
        rolled back otherwise (also when the caller is cancelled). The lock is not
        re-entrant: make no other call on this database inside the block."""
        async with self._turn():
            self._check_open()
            await _in_thread(lambda db: db.execute("BEGIN IMMEDIATE"), self._db)
            try:
                transaction = Transaction(self._db)
                yield transaction
                if not transaction.committed:
                    await _in_thread(lambda db: db.execute("COMMIT"), self._db)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._rollback)
                raise

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and task is self._holder:
            # A call inside `transaction()` would otherwise wait for itself for ever.
            raise RuntimeError("a database call made while this task holds the database")
        async with self._turns.slot(acting_subject()):
            self._holder = task
            try:
                yield
            finally:
                self._holder = None

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the database is closed")

    async def aclose(self) -> None:
        """Close once no statement runs; later calls fail with StorageError."""
        async with self._turn():
            if not self._closed:
                self._closed = True
                self._db.close()
