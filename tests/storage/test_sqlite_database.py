"""The SQLite connection's writes: one transaction each, rolled back on any failure."""

import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from imagegate.core.cpu import acting_for
from imagegate.core.errors import StorageError
from imagegate.storage.sqlite.database import Database


def create(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER)")


async def rows(database: Database) -> list[int]:
    return await database.read(lambda db: [v for (v,) in db.execute("SELECT v FROM t")])


async def test_a_write_commits(tmp_path: Path) -> None:
    database = Database(tmp_path / "db", [create])
    assert await database.write(lambda db: db.execute("INSERT INTO t VALUES (1)").rowcount) == 1
    assert await rows(database) == [1]
    await database.aclose()


async def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    database = Database(tmp_path / "db", [create])

    def half(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t VALUES (1)")
        db.execute("INSERT INTO nowhere VALUES (2)")

    with pytest.raises(StorageError, match="no such table"):
        await database.write(half)
    assert await rows(database) == []
    await database.aclose()


@pytest.mark.parametrize("shielded", [False, True])
async def test_a_write_cancelled_while_its_work_runs_is_rolled_back_unless_shielded(
    tmp_path: Path, shielded: bool
) -> None:
    """The quota ledger's writes are shielded: a cancel must not undo one."""
    database = Database(tmp_path / "db", [create])
    inside, go_on = threading.Event(), threading.Event()

    def slow(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t VALUES (1)")
        inside.set()
        go_on.wait(5)

    async def write() -> None:
        with anyio.CancelScope(shield=shielded):
            await database.write(slow)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(write)
        await anyio.to_thread.run_sync(inside.wait, 5)
        tasks.cancel_scope.cancel()
        go_on.set()
    assert await rows(database) == ([1] if shielded else [])
    await database.write(lambda db: db.execute("INSERT INTO t VALUES (2)"))
    assert await rows(database) == ([1, 2] if shielded else [2])
    await database.aclose()


async def test_a_transactions_last_call_commits_it(tmp_path: Path) -> None:
    database = Database(tmp_path / "db", [create])
    async with database.transaction() as transaction:
        await transaction.run(lambda db: db.execute("INSERT INTO t VALUES (1)"))
        await transaction.run_last(lambda db: db.execute("INSERT INTO t VALUES (2)"))
        other = sqlite3.connect(tmp_path / "db")
        assert other.execute("SELECT v FROM t").fetchall() == [(1,), (2,)]  # committed
        other.close()
        with pytest.raises(RuntimeError, match="committed"):
            await transaction.run(lambda db: db.execute("INSERT INTO t VALUES (9)"))
    assert await rows(database) == [1, 2]
    await database.write(lambda db: db.execute("INSERT INTO t VALUES (3)"))  # none left open
    assert await rows(database) == [1, 2, 3]
    await database.aclose()


FULL, NORMAL = 2, 1


@pytest.mark.parametrize(("durable", "fails"), [(True, False), (False, False), (False, True)])
async def test_a_write_waits_for_the_disk_unless_told_it_need_not(
    tmp_path: Path, durable: bool, fails: bool
) -> None:
    """Every write is FULL by default (an image's record, a charge); one that need not
    be durable runs at NORMAL, and the connection goes back to FULL after it, also
    when it fails."""
    database = Database(tmp_path / "db", [create])
    seen: list[int] = []

    def work(db: sqlite3.Connection) -> None:
        seen.append(db.execute("PRAGMA synchronous").fetchone()[0])
        if fails:
            raise sqlite3.OperationalError("disk I/O error")

    if fails:
        with pytest.raises(StorageError):
            await database.write(work, durable=durable)
    else:
        await database.write(work, durable=durable)
    assert seen == [FULL if durable else NORMAL]
    assert await database.read(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == FULL
    await database.aclose()


@pytest.mark.parametrize(
    ("call", "on_the_loop"),
    [("durable write", False), ("bookkeeping write", True), ("read", False), ("brief read", True)],
)
async def test_brief_work_runs_on_the_event_loop_and_the_rest_in_a_thread(
    tmp_path: Path, call: str, on_the_loop: bool
) -> None:
    database = Database(tmp_path / "db", [create])
    threads: list[threading.Thread] = []
    checkpoints: list[int] = []

    def work(db: sqlite3.Connection) -> None:
        threads.append(threading.current_thread())
        checkpoints.append(db.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

    calls: dict[str, Callable[[], Awaitable[None]]] = {
        "durable write": lambda: database.write(work),
        "bookkeeping write": lambda: database.write(work, durable=False),
        "read": lambda: database.read(work),
        "brief read": lambda: database.read(work, brief=True),
    }
    await calls[call]()
    assert (threads == [threading.main_thread()]) is on_the_loop
    # On the loop no commit may checkpoint (an fsync); the setting comes back after.
    assert checkpoints == [0 if on_the_loop else 1000]
    await database.read(work)
    assert checkpoints[-1] == 1000
    await database.aclose()


async def test_a_bookkeeping_write_another_process_locks_out_waits_in_a_thread(
    tmp_path: Path,
) -> None:
    """On the event loop it must not wait for the lock: it goes to a thread, which
    waits (busy_timeout) until the other process lets go, instead of failing."""
    database = Database(tmp_path / "db", [create])
    other = sqlite3.connect(tmp_path / "db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threads: list[threading.Thread] = []

    def work(db: sqlite3.Connection) -> int:
        threads.append(threading.current_thread())
        return db.execute("INSERT INTO t VALUES (1)").rowcount

    async def let_go() -> None:
        await anyio.sleep(0.3)
        other.execute("COMMIT")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(let_go)
        assert await database.write(work, durable=False) == 1
    assert threads == [threads[-1]]  # the try on the loop stopped at BEGIN
    assert threads[-1] is not threading.main_thread()
    assert await rows(database) == [1]
    other.close()
    await database.aclose()


async def test_callers_take_turns_round_robin(tmp_path: Path) -> None:
    """One caller with five writes queued does not hold another's one behind all five."""
    database = Database(tmp_path / "db", [create])
    order: list[str] = []
    holding, release = threading.Event(), threading.Event()

    def first(db: sqlite3.Connection) -> None:
        holding.set()
        release.wait(5)

    def insert(who: str) -> Callable[[sqlite3.Connection], None]:
        return lambda db: order.append(who)

    async def write_as(who: str, work: Callable[[sqlite3.Connection], None]) -> None:
        with acting_for(who):
            await database.write(work)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(write_as, "busy", first)
        await anyio.to_thread.run_sync(holding.wait, 5)
        for _ in range(5):
            tasks.start_soon(write_as, "busy", insert("busy"))
        await anyio.wait_all_tasks_blocked()
        tasks.start_soon(write_as, "light", insert("light"))
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert order == ["busy", "light", "busy", "busy", "busy", "busy"]
    await database.aclose()


async def test_a_call_inside_a_transaction_is_refused_not_left_waiting(tmp_path: Path) -> None:
    database = Database(tmp_path / "db", [create])
    async with database.transaction():
        with pytest.raises(RuntimeError, match="holds the database"):
            await rows(database)
    assert await rows(database) == []
    await database.aclose()
