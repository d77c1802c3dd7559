"""The SQLite connection's writes: one transaction each, rolled back on any failure."""

import sqlite3
import threading
from pathlib import Path

import anyio
import pytest

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


async def test_a_write_cancelled_while_its_work_runs_is_rolled_back(tmp_path: Path) -> None:
    database = Database(tmp_path / "db", [create])
    inside, go_on = threading.Event(), threading.Event()

    def slow(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t VALUES (1)")
        inside.set()
        go_on.wait(5)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(database.write, slow)
        await anyio.to_thread.run_sync(inside.wait, 5)
        tasks.cancel_scope.cancel()
        go_on.set()
    assert await rows(database) == []
    await database.write(lambda db: db.execute("INSERT INTO t VALUES (2)"))
    assert await rows(database) == [2]
    await database.aclose()
