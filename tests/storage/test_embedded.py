"""What only the embedded backend (SQLite + blob files) promises: its files on disk."""

import io
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

from imagegate.core.errors import ImageRejected, SchemaError, StorageError
from imagegate.core.ids import AssetId, Subject, new_job_id, parse_job_id
from imagegate.core.images import inspect_image
from imagegate.core.staging import StagedBlob
from imagegate.storage.assets import AssetStore
from imagegate.storage.embedded import DATABASE_FILE, open_embedded, upgrade_embedded
from imagegate.storage.files import STALE_TEMP_SECONDS, FileBlobStore
from imagegate.storage.interfaces import Asset, AssetMeta, BlobKey, Job, JobState, UsageRow
from imagegate.storage.sqlite import schema
from imagegate.storage.sqlite.database import Database
from imagegate.storage.sqlite.schema import LATEST

ALICE = Subject("token:alice")


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, format="PNG")
    return out.getvalue()


async def stored_png(store: AssetStore) -> Asset:
    """A small PNG of ALICE's, staged, checked and added."""
    with store.stage() as staged:
        staged.write(png())
        staged.finish()
        info = inspect_image(staged.path, max_bytes=10**7, max_pixels=10**7)
        return await store.add(ALICE, staged, info, AssetMeta(relay="r", prompt="p"), 1.0)


async def test_blobs_are_read_only_files_named_by_content(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700)
    storage = open_embedded(state_dir, 10**7)
    store = AssetStore(storage.index, storage.blobs)
    asset = await stored_png(store)
    path = store.local_path(asset)
    assert path == state_dir / "blobs" / asset.sha256[:2] / f"{asset.sha256}.png"
    assert path.read_bytes() == png()
    assert path.stat().st_mode & 0o777 == 0o440
    assert list((state_dir / "tmp").iterdir()) == []
    assert await store.ready()
    await storage.aclose()
    assert not await storage.index.ready()


@pytest.fixture
def disk_steps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each fsync (of what) and rename, in order."""
    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        steps.append("fsync " + Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        steps.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return steps


def finished(blobs: FileBlobStore, data: bytes) -> StagedBlob:
    staged = blobs.stage()
    staged.write(data)
    staged.finish()
    return staged


async def test_a_commit_fsyncs_the_file_before_its_rename_then_the_folder(
    tmp_path: Path, disk_steps: list[str]
) -> None:
    """Staging doesn't fsync (core.staging): the store is what makes a blob durable.
    A rename before the data is on the disk could leave a named but empty file."""
    blobs = FileBlobStore(tmp_path, max_bytes=1000)
    staged = finished(blobs, png())
    await blobs.commit(staged, BlobKey("ab" * 32, "png"))
    # A new folder: its entry in blobs/ too, or a power loss could drop it whole.
    assert disk_steps == ["fsync blobs", f"fsync {staged.path.name}", "rename", "fsync ab"]
    disk_steps.clear()
    again = finished(blobs, png() + b"another")
    await blobs.prepare(again)  # the file's fsync, done before (outside any lock)
    assert disk_steps == [f"fsync {again.path.name}"]
    await blobs.commit(again, BlobKey("ab" + "cd" * 31, "png"))
    assert disk_steps == [f"fsync {again.path.name}", "rename", "fsync ab"]


async def test_an_add_fsyncs_the_image_before_it_holds_the_index(
    state_dir: Path, disk_steps: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Others' turns at the database must not wait for this image's fsync."""
    state_dir.mkdir(mode=0o700)
    storage = open_embedded(state_dir, 10**7)
    store = AssetStore(storage.index, storage.blobs)
    references = storage.index.references

    def held(key: BlobKey) -> Any:
        disk_steps.append("references held")
        return references(key)

    monkeypatch.setattr(storage.index, "references", held)
    with store.stage() as staged:
        staged.write(png())
        staged.finish()
        info = inspect_image(staged.path, max_bytes=10**7, max_pixels=10**7)
        await store.add(ALICE, staged, info, AssetMeta(relay="r", prompt="p"), 1.0)
    assert disk_steps[:3] == [f"fsync {staged.path.name}", "references held", "fsync blobs"]
    assert disk_steps[3] == "rename"
    await storage.aclose()


def test_an_oversize_write_leaves_nothing(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path, max_bytes=1000)
    staged = blobs.stage()
    staged.write(b"x" * 600)
    with pytest.raises(ImageRejected, match="larger than the limit of 1000 bytes"), staged:
        staged.write(b"x" * 600)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_write_interrupted_by_an_error_leaves_nothing(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path, max_bytes=10**7)

    def interrupted_stream() -> None:
        with blobs.stage() as staged:
            staged.write(png()[:20])
            raise ConnectionError("upstream went away mid-stream")

    with pytest.raises(ConnectionError):
        interrupted_stream()
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list((tmp_path / "blobs").rglob("*.*")) == []


def test_a_process_killed_mid_write_leaves_no_asset(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700)
    writer = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("crash_writer.py")), str(state_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "WROTE"
    (partial,) = (state_dir / "tmp").iterdir()
    assert partial.name.endswith(".part")  # a temp file, never under a real name
    # While its writer lives, another process opening the store leaves it alone.
    FileBlobStore(state_dir, 10**7)
    assert partial.exists()
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=10)

    async def listed() -> int:
        storage = open_embedded(state_dir, 10**7)
        page = await storage.index.list(Subject("local"), 10, None)
        await storage.aclose()
        return len(page.assets)

    assert anyio.run(listed) == 0
    assert list((state_dir / "blobs").rglob("*.*")) == []
    assert list((state_dir / "tmp").iterdir()) == []  # the dead writer's file is swept


@pytest.mark.parametrize(
    "name",
    [
        "stage-abc.part",  # written before staging files had owners
        "stage-0123456789ab.1.42-x.part",  # another machine or container: not ours to judge
    ],
)
def test_files_of_unknown_writers_are_swept_after_an_hour(tmp_path: Path, name: str) -> None:
    blobs = FileBlobStore(tmp_path, 10**7)
    other = tmp_path / "tmp" / name
    other.write_bytes(b"x")
    mine = blobs.stage()
    FileBlobStore(tmp_path, 10**7)  # another start: a fresh file of unknown owner stays
    assert other.exists()
    assert blobs.staging.sweep_stale_temp(now=other.stat().st_mtime + 1) == 0
    later = other.stat().st_mtime + STALE_TEMP_SECONDS + 1
    assert blobs.staging.sweep_stale_temp(now=later) == 1
    assert not other.exists()
    assert mine.path.exists()  # a live process's file, however old
    mine.discard()


def test_a_killed_process_releases_its_reservations_at_the_next_start(state_dir: Path) -> None:
    """A call's process dies mid-call: its slot comes back when the store opens again,
    not an hour later, and its job is failed; a live process's reservation stays."""
    now = 1_800_014_400.0
    state_dir.mkdir(mode=0o700)

    async def reserve_here() -> None:
        storage = open_embedded(state_dir, 10**7)
        await storage.quotas.reserve("token:bot", 1, 0.25, now, lambda usage: None)
        await storage.aclose()

    anyio.run(reserve_here)
    holder = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("crash_reserver.py")),
            str(state_dir),
            str(now),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    said, job_id = holder.stdout.readline().split()
    assert said == "RESERVED"

    async def running() -> tuple[int, float, JobState]:
        storage = open_embedded(state_dir, 10**7)
        usage = await storage.quotas.usage("token:bot", now)
        job = await storage.jobs.get(Subject("token:bot"), parse_job_id(job_id))
        await storage.aclose()
        return usage.in_flight, usage.spend_today, job.state

    # The other process lives: its slot and its job are held.
    assert anyio.run(running) == (2, 0.75, JobState.RUNNING)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    assert anyio.run(running) == (1, 0.25, JobState.FAILED)  # only this live process's own remains


def test_a_database_from_before_versions_is_refused_then_upgraded_in_place(
    state_dir: Path,
) -> None:
    """A release before schema versions: no user_version, no holder column. Serving is
    refused with the command to run; after it, the old reservation is still there."""
    state_dir.mkdir(mode=0o700)
    old = sqlite3.connect(state_dir / DATABASE_FILE)
    old.executescript(
        "CREATE TABLE reservations (id TEXT PRIMARY KEY, subject TEXT NOT NULL, "
        "day TEXT NOT NULL, images INTEGER NOT NULL, spend REAL NOT NULL, expires REAL NOT NULL);"
        "INSERT INTO reservations VALUES ('r1', 'token:bot', '2027-01-15', 1, 0.5, 1800018000.0);"
    )
    old.commit()
    old.close()
    with pytest.raises(
        SchemaError, match=rf"schema version 0; this imagegate needs {LATEST}.*upgrade"
    ):
        open_embedded(state_dir, 10**7)
    assert upgrade_embedded(state_dir) == (0, LATEST)
    assert upgrade_embedded(state_dir) == (LATEST, LATEST)  # again: nothing to do

    async def usage() -> int:
        storage = open_embedded(state_dir, 10**7)
        reservation = await storage.quotas.reserve("token:bot", 1, 0, 1_800_014_400, lambda u: None)
        held = (await storage.quotas.usage("token:bot", 1_800_014_400)).in_flight
        await storage.quotas.release(reservation)
        await storage.aclose()
        return held

    assert anyio.run(usage) == 2  # the old reservation is kept until its lease ends


def test_a_new_database_is_made_at_the_latest_schema(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700)
    assert upgrade_embedded(state_dir) is None  # nothing there yet
    anyio.run(open_embedded(state_dir, 10**7).aclose)
    version = sqlite3.connect(state_dir / DATABASE_FILE).execute("PRAGMA user_version")
    assert version.fetchone() == (LATEST,)


def test_a_database_from_a_newer_imagegate_is_refused(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700)
    anyio.run(open_embedded(state_dir, 10**7).aclose)
    newer = sqlite3.connect(state_dir / DATABASE_FILE)
    newer.execute(f"PRAGMA user_version = {LATEST + 1}")
    newer.close()
    with pytest.raises(SchemaError, match="newer than this imagegate knows"):
        open_embedded(state_dir, 10**7)


def test_a_failed_migration_leaves_the_version_before(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir.mkdir(mode=0o700)
    path = state_dir / DATABASE_FILE
    sqlite3.connect(path).executescript("CREATE TABLE notes (x TEXT);")  # not a new database

    def broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x)")
        raise sqlite3.OperationalError("disk I/O error")

    broken_migration = schema.Migration(2, "jobs", (broken,))
    monkeypatch.setattr(schema, "MIGRATIONS", (schema.MIGRATIONS[0], broken_migration))
    with pytest.raises(StorageError, match="could not upgrade"):
        upgrade_embedded(state_dir)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (1,)
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "half_done" not in tables


async def test_a_database_failure_is_a_storage_error(state_dir: Path) -> None:
    """Driver errors stop at the backend: the caller gets a StorageError it can report."""
    state_dir.mkdir(mode=0o700)
    storage = open_embedded(state_dir, 10**7)
    database = storage.index._db  # type: ignore[attr-defined]
    with pytest.raises(StorageError, match="the database failed: no such table"):
        await database.read(lambda db: db.execute("SELECT * FROM nowhere"))
    with pytest.raises(StorageError, match="the database failed"):
        await database.write(lambda db: db.execute("INSERT INTO nowhere VALUES (1)"))
    await storage.aclose()
    with pytest.raises(StorageError, match="the database is closed"):
        await storage.quotas.usage("token:bot", 0)


def test_a_version_3_database_with_images_and_usage_upgrades_in_place(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Made by the release before link revocation, retention and relay counters."""
    state_dir.mkdir(mode=0o700)
    path = state_dir / DATABASE_FILE
    older = sqlite3.connect(path, isolation_level=None)
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:3])
    assert schema.upgrade(older) == (0, 3)
    monkeypatch.undo()
    older.execute(
        "INSERT INTO assets VALUES ('img_0123456789abcdef01234567', 'token:alice', ?, 'png', "
        "8, 8, 75, 'placeholder', 'p', NULL, '{}', 1800000000000000)",
        ("a" * 64,),
    )
    older.execute("INSERT INTO usage_daily VALUES ('token:alice', '2027-01-15', 2, 0.5, 1)")
    older.close()
    assert upgrade_embedded(state_dir) == (3, LATEST)

    async def read() -> tuple[Asset, list[UsageRow]]:
        storage = open_embedded(state_dir, 10**7)
        try:
            asset = await storage.index.get(None, AssetId("img_0123456789abcdef01234567"))
            return asset, await storage.quotas.report("2027-01-15", "2027-01-16", "relay")
        finally:
            await storage.aclose()

    asset, by_relay = anyio.run(read)
    assert (asset.link_generation, asset.keep_until) == (0, None)
    assert by_relay == [UsageRow("", 2, 0.5, 1)]  # counted before relays were recorded


async def test_blobs_for_the_web_server_are_readable_by_others(state_dir: Path) -> None:
    """accel_redirect: nginx reads blob files as one of "others" (the state directory
    keeps everyone else out): the files are 0444 and their folders 0711, those found as
    well as those made, whatever the umask."""
    state_dir.mkdir(mode=0o700)
    storage = open_embedded(state_dir, 10**7)
    store = AssetStore(storage.index, storage.blobs)
    asset = await stored_png(store)
    await storage.aclose()
    found = state_dir / "blobs" / asset.blob.relative_path
    assert (found.stat().st_mode & 0o777, found.parent.stat().st_mode & 0o777) == (0o440, 0o700)

    shared = FileBlobStore(state_dir, 10**7, readable_by_web_server=True)
    assert found.stat().st_mode & 0o777 == 0o444
    assert found.parent.stat().st_mode & 0o777 == 0o711
    assert (state_dir / "blobs").stat().st_mode & 0o777 == 0o711
    old_umask = os.umask(0o077)  # the packaged unit's
    try:
        with shared.stage() as staged:
            staged.write(b"other bytes")
            staged.finish()
            key = BlobKey(staged.sha256, "png")
            await shared.commit(staged, key)
    finally:
        os.umask(old_umask)
    made = shared.local_path(key)
    assert made.read_bytes() == b"other bytes"
    assert (made.stat().st_mode & 0o777, made.parent.stat().st_mode & 0o777) == (0o444, 0o711)
    assert (state_dir / "tmp").stat().st_mode & 0o777 == 0o700


async def test_only_a_calls_own_bookkeeping_is_written_without_waiting_for_the_disk(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each ledger write, and whether it waits for the disk (Database.write's
    `durable`). A power loss may take back a reservation or a job's state, which die
    with the call's process anyway; never a charge or a cancel asked for. (An image's
    record is a transaction, which always waits. A completed job's end waits too: lost,
    the job would come back failed, "start it again", though its images were kept.)"""
    seen: list[bool] = []
    real_write = Database.write

    async def write(self: Database, work: Any, *, durable: bool = True) -> Any:
        seen.append(durable)
        return await real_write(self, work, durable=durable)

    monkeypatch.setattr(Database, "write", write)
    state_dir.mkdir(mode=0o700)
    storage = open_embedded(state_dir, 10**7)
    job = Job(new_job_id(), ALICE, "generate_image", JobState.RUNNING, 1.0, 1.0)
    failing = Job(new_job_id(), ALICE, "generate_image", JobState.RUNNING, 1.0, 1.0)
    ledgers = storage.quotas, storage.jobs
    steps: list[tuple[str, Callable[[], Awaitable[object]], bool]] = [
        ("reserve", lambda: ledgers[0].reserve(ALICE, 1, 0.5, 1.0, lambda _: None), False),
        ("job created", lambda: ledgers[1].create(job), False),
        ("job progress", lambda: ledgers[1].progress(job.id, 50.0, "half", 2.0), False),
        ("cancel asked", lambda: ledgers[1].request_cancel(ALICE, job.id), True),
        ("job completed", lambda: ledgers[1].finish(job.id, JobState.COMPLETED, 3.0, {}), True),
        ("another job", lambda: ledgers[1].create(failing), False),
        ("job failed", lambda: ledgers[1].finish(failing.id, JobState.FAILED, 3.0), False),
        ("usage reset", lambda: ledgers[0].reset(ALICE, 3.0), True),
    ]
    reservation = await ledgers[0].reserve(ALICE, 1, 0.5, 1.0, lambda _: None)
    steps += [
        ("charge", lambda: ledgers[0].commit(reservation, 1, 0.5, 4.0), True),
        ("release", lambda: ledgers[0].release(reservation), False),
    ]
    for name, step, durable in steps:
        seen.clear()
        await step()
        assert seen == [durable], name
    await storage.aclose()
