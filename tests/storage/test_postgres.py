"""What only the shared backend (PostgreSQL) promises: schema versions, heartbeats
across machines, and failures reported without secrets. The contract suite covers the
rest on it too (tests/storage/backends.py)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from imagegate.config import Limits
from imagegate.core.errors import SchemaError, StorageError
from imagegate.core.ids import Subject, new_job_id
from imagegate.service.quota import check_limits
from imagegate.storage.files import FileBlobStore
from imagegate.storage.interfaces import Job, JobState, Storage, Usage
from imagegate.storage.postgres import schema
from imagegate.storage.postgres.backend import database_name, open_postgres, upgrade_postgres
from imagegate.storage.postgres.holders import beat
from tests.services.postgres import Postgres, shared_postgres

ALICE = Subject("token:alice")
NOON = 1_800_014_400.0


@pytest.fixture
def server() -> Postgres:
    return shared_postgres()


@pytest.fixture
async def database(server: Postgres) -> str:
    return await server.create_database()


def opened(server: Postgres, name: str, root: Path, **kwargs: object) -> Storage:
    blobs = FileBlobStore(root, 10**7)
    return open_postgres(server.url(name), server.password, 2, blobs, **kwargs)  # type: ignore[arg-type]


@asynccontextmanager
async def connected(server: Postgres, name: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(server.url(name), password=server.password)
    try:
        yield connection
    finally:
        await connection.close()


async def set_version(
    server: Postgres, name: str, number: int, readable_from: int | None = None
) -> None:
    async with connected(server, name) as connection:
        await connection.execute(
            "UPDATE imagegate_schema SET version = $1, readable_from = $2",
            number,
            min(number, schema.LATEST) if readable_from is None else readable_from,
        )


async def test_a_new_database_is_made_at_the_latest_schema(
    server: Postgres, database: str, tmp_path: Path
) -> None:
    await made(server, database, tmp_path)
    async with connected(server, database) as connection:
        assert await schema.version(connection) == schema.LATEST


async def test_replicas_starting_together_create_the_schema_once(
    server: Postgres, database: str, tmp_path: Path
) -> None:
    handles = [opened(server, database, tmp_path) for _ in range(4)]
    await asyncio.gather(*(handle.open() for handle in handles))
    for handle in handles:
        assert await handle.index.ready()
        await handle.aclose()


NEXT = schema.Migration(
    schema.LATEST + 1, "a test's own", "CREATE TABLE next_feature (id integer PRIMARY KEY)"
)


def upgrade_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, this imagegate expects one more migration."""
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, NEXT))
    monkeypatch.setattr(schema, "LATEST", NEXT.number)


async def made(server: Postgres, database: str, root: Path) -> None:
    storage = opened(server, database, root)
    await storage.open()
    await storage.aclose()


async def test_an_older_schema_is_refused_then_upgraded_by_db_upgrade(
    server: Postgres, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await made(server, database, tmp_path)
    upgrade_code(monkeypatch)
    again = opened(server, database, tmp_path)
    with pytest.raises(SchemaError) as refused:
        await again.open()
    assert str(refused.value) == (
        f"the database has schema version {NEXT.number - 1}; this imagegate needs "
        f"{NEXT.number}. Back it up if you wish, then run: imagegate db upgrade"
    )
    await again.aclose()
    url = server.url(database)
    assert await upgrade_postgres(url, server.password) == (NEXT.number - 1, NEXT.number)
    assert await upgrade_postgres(url, server.password) == (NEXT.number, NEXT.number)
    await made(server, database, tmp_path)
    async with connected(server, database) as connection:
        assert await connection.fetchval("SELECT to_regclass('next_feature') IS NOT NULL")


async def test_a_newer_schema_is_used_while_this_version_can_read_it(
    server: Postgres, database: str, tmp_path: Path
) -> None:
    """A rolling upgrade: a replica of the version before starts against a database an
    upgraded one has moved on, as long as the migrations since were additive."""
    await made(server, database, tmp_path)
    await set_version(server, database, schema.LATEST + 1, readable_from=schema.LATEST)
    again = opened(server, database, tmp_path)
    await again.open()
    assert await again.index.ready()
    await again.aclose()


async def test_a_newer_schema_this_version_cannot_read_is_refused(
    server: Postgres, database: str, tmp_path: Path
) -> None:
    await made(server, database, tmp_path)
    await set_version(server, database, schema.LATEST + 1, readable_from=schema.LATEST + 1)
    again = opened(server, database, tmp_path)
    with pytest.raises(SchemaError) as refused:
        await again.open()
    assert str(refused.value) == (
        f"the database has schema version {schema.LATEST + 1}, which imagegate versions "
        f"before schema {schema.LATEST + 1} can't use (this one knows {schema.LATEST}): a "
        "newer imagegate upgraded it. Run that version, or restore a backup taken before "
        "the upgrade"
    )
    await again.aclose()


@pytest.mark.parametrize(("additive", "readable_from"), [(True, 1), (False, NEXT.number)])
async def test_only_a_migration_that_is_not_additive_locks_older_versions_out(
    server: Postgres,
    database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    additive: bool,
    readable_from: int,
) -> None:
    await made(server, database, tmp_path)
    monkeypatch.setattr(
        schema, "MIGRATIONS", (*schema.MIGRATIONS, replace(NEXT, additive=additive))
    )
    monkeypatch.setattr(schema, "LATEST", NEXT.number)
    await upgrade_postgres(server.url(database), server.password)
    async with connected(server, database) as connection:
        assert await schema.versions(connection) == (NEXT.number, readable_from)


async def test_db_upgrade_makes_a_new_database(
    server: Postgres, database: str, tmp_path: Path
) -> None:
    assert await upgrade_postgres(server.url(database), server.password) == (0, schema.LATEST)
    await made(server, database, tmp_path)


async def test_a_database_of_another_application_is_refused(
    server: Postgres, database: str, tmp_path: Path
) -> None:
    async with connected(server, database) as connection:
        await connection.execute("CREATE TABLE invoices (id integer)")
    storage = opened(server, database, tmp_path)
    with pytest.raises(SchemaError, match="has tables but no imagegate schema version"):
        await storage.open()
    await storage.aclose()


def running_job() -> Job:
    return Job(new_job_id(), ALICE, "generate_image", JobState.RUNNING, NOON, NOON)


async def test_what_a_silent_process_held_is_released_by_another(
    server: Postgres, database: str, tmp_path: Path
) -> None:
    # "Another machine": a holder whose process can't be checked from here, which
    # stops beating (killed, cut off) without closing.
    lost = opened(server, database, tmp_path, holder="elsewhere:4242:1", beat_every=3600)
    job = running_job()
    await lost.jobs.create(job)
    limits = Limits(max_concurrent=1)

    def check(usage: Usage) -> None:
        check_limits(limits, usage, 1, 0.0, NOON)

    await lost.quotas.reserve(ALICE, 1, 0.0, NOON, check)
    await asyncio.sleep(1.2)  # silent for longer than the survivor's gone_after
    survivor = opened(server, database, tmp_path, beat_every=0.05, gone_after=1.0)
    await survivor.open()
    try:
        # A process reaps only once it has beaten steadily for gone_after itself (one
        # back from an outage would find everyone silent).
        await asyncio.sleep(0.5)
        assert (await survivor.quotas.usage(ALICE, NOON)).in_flight == 1
        assert (await survivor.jobs.get(ALICE, job.id)).state is JobState.RUNNING
        for _ in range(100):
            await asyncio.sleep(0.05)
            if (await survivor.quotas.usage(ALICE, NOON)).in_flight == 0:
                break
        assert (await survivor.quotas.usage(ALICE, NOON)).in_flight == 0
        failed = await survivor.jobs.get(ALICE, job.id)
        assert failed.state is JobState.FAILED
        assert failed.error is not None
        assert failed.error["kind"] == "Interrupted"
        # The survivor itself keeps beating: what it holds stays held.
        await survivor.quotas.reserve(ALICE, 1, 0.0, NOON, check)
        await asyncio.sleep(1.5)
        assert (await survivor.quotas.usage(ALICE, NOON)).in_flight == 1
    finally:
        await survivor.aclose()
        await lost.aclose()


async def test_a_process_learns_that_it_was_taken_for_gone(
    server: Postgres, database: str, tmp_path: Path
) -> None:
    await made(server, database, tmp_path)
    async with connected(server, database) as connection:
        assert await beat(connection, "host:1:1")  # a row made anew: it had been reaped
        assert not await beat(connection, "host:1:1")  # an ordinary beat


async def test_a_clean_close_leaves_nothing_held_to_reap(
    server: Postgres, database: str, tmp_path: Path
) -> None:
    await made(server, database, tmp_path)
    async with connected(server, database) as connection:
        assert await connection.fetchval("SELECT count(*) FROM holders") == 0


async def test_failures_are_storage_errors_without_the_password(
    server: Postgres, database: str, tmp_path: Path
) -> None:
    blobs = FileBlobStore(tmp_path, 10**7)
    wrong = open_postgres(
        server.url(database), "not-the-password", 2, FileBlobStore(tmp_path, 10**7)
    )
    with pytest.raises(StorageError) as refused:
        await wrong.open()
    assert "not-the-password" not in str(refused.value)
    assert "InvalidPasswordError" in str(refused.value)
    assert not await wrong.index.ready()
    closed_port = f"postgresql://postgres@127.0.0.1:1/{database}"
    nowhere = open_postgres(closed_port, server.password, 2, blobs)
    with pytest.raises(StorageError, match="the database failed: ConnectionRefusedError"):
        await nowhere.quotas.usage(ALICE, NOON)


async def test_a_closed_backend_fails_cleanly(
    server: Postgres, database: str, tmp_path: Path
) -> None:
    storage = opened(server, database, tmp_path)
    await storage.open()
    await storage.aclose()
    with pytest.raises(StorageError, match="the database is closed"):
        await storage.quotas.usage(ALICE, NOON)


def test_a_database_is_named_without_its_credentials() -> None:
    url = "postgresql://imagegate:s3cret@db.internal:5433/images?sslmode=require"
    assert database_name(url) == "postgresql://db.internal:5433/images"


async def test_a_replica_waits_for_another_that_is_creating_the_schema(
    server: Postgres, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half-way through creating the database, the first replica shows an older
    version: a second one must wait for it, not refuse the database as old."""
    async with connected(server, database) as creator:
        await creator.execute("SELECT pg_advisory_lock(1, 0)")
        with monkeypatch.context() as first_only:
            first_only.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
            await schema.upgrade(creator)  # version 1 of LATEST, the lock still held
        second = opened(server, database, tmp_path)
        opening = asyncio.create_task(second.open())
        await asyncio.sleep(0.5)
        assert not opening.done()  # waiting, not refusing
        assert await schema.upgrade(creator) == (1, schema.LATEST)
        await creator.execute("SELECT pg_advisory_unlock(1, 0)")
        await asyncio.wait_for(opening, 10)
        assert await second.index.ready()
        await second.aclose()
