"""The storage contract: what every backend promises the layers above, run against each
backend in tests/storage/backends.py through the Protocols only."""

import hashlib
import io
import math
import time
from pathlib import Path

import anyio
import pytest
from PIL import Image

from imagegate.config import Limits
from imagegate.core.errors import ImageRejected, InvalidRequest, NotFound, QuotaExceeded
from imagegate.core.ids import AssetId, Subject, new_job_id, new_upload_id
from imagegate.core.images import inspect_image
from imagegate.core.staging import StagedBlob
from imagegate.service.quota import check_limits, seconds_to_next_month
from imagegate.storage.assets import AssetStore
from imagegate.storage.interfaces import (
    Asset,
    AssetMeta,
    BlobKey,
    BlobStore,
    Job,
    JobState,
    QuotaLedger,
    Reservation,
    Storage,
    UploadTicket,
    Usage,
)
from tests.storage.backends import Backend

ALICE = Subject("token:alice")
BOB = Subject("token:bob")
NOON = 1_800_014_400.0  # 2027-01-15T12:00:00Z
NEW_YEARS_EVE = 1_830_254_400.0  # 2027-12-31T12:00:00Z
BOT = "token:bot"


def png(colour: str = "red", size: tuple[int, int] = (8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def store(storage: Storage) -> AssetStore:
    return AssetStore(storage.index, storage.blobs)


async def add(
    store: AssetStore, owner: Subject, data: bytes, now: float = 1000.0, deferred: bool = False
) -> Asset:
    with store.stage() as staged:
        if deferred:
            staged.defer_hash()
        staged.write(data)
        staged.finish()
        info = inspect_image(staged.path, max_bytes=10**7, max_pixels=10**7)
        return await store.add(owner, staged, info, AssetMeta(relay="placeholder", prompt="p"), now)


async def read(store: AssetStore, asset: Asset) -> bytes:
    async with store.open(asset) as reader:
        chunks = [chunk async for chunk in reader.chunks()]
        assert reader.size == sum(map(len, chunks))
    return b"".join(chunks)


# --- assets: index and blobs together -------------------------------------------------


async def test_add_get_and_read_back(store: AssetStore) -> None:
    asset = await add(store, ALICE, png())
    assert await store.get(ALICE, asset.id) == asset
    assert (asset.width, asset.height, asset.byte_size) == (8, 8, len(png()))
    assert await read(store, asset) == png()
    path = store.local_path(asset)
    assert path is None or path.read_bytes() == png()
    async with store.as_file(asset) as file:
        assert file.read_bytes() == png()


async def test_a_blob_whose_hash_was_deferred_is_stored_under_its_hash(
    store: AssetStore,
) -> None:
    """StagedBlob.defer_hash: the hash is made when the blob is stored, and it is the
    same content name (shared with equal bytes staged the usual way)."""
    deferred = await add(store, ALICE, png("blue"), deferred=True)
    assert deferred.sha256 == hashlib.sha256(png("blue")).hexdigest()
    hashed = await add(store, BOB, png("blue"))
    assert hashed.blob == deferred.blob
    assert await read(store, deferred) == png("blue")


async def test_other_owner_sees_nothing(store: AssetStore) -> None:
    asset = await add(store, ALICE, png())
    with pytest.raises(NotFound, match=f"image not found: {asset.id}"):
        await store.get(BOB, asset.id)
    with pytest.raises(NotFound):
        await store.delete(BOB, asset.id)
    assert (await store.list(BOB, 10)).assets == []
    assert await store.get(None, asset.id) == asset


async def test_list_pages_newest_first(store: AssetStore) -> None:
    made = [
        await add(store, ALICE, png(c), now=float(i))
        for i, c in enumerate(["red", "blue", "green"])
    ]
    await add(store, BOB, png("white"))
    first = await store.list(ALICE, 2)
    assert [a.id for a in first.assets] == [made[2].id, made[1].id]
    assert first.next_cursor is not None
    second = await store.list(ALICE, 2, first.next_cursor)
    assert [a.id for a in second.assets] == [made[0].id]
    assert second.next_cursor is None
    assert len((await store.list(None, 10)).assets) == 4


async def test_same_timestamp_pages_without_loss(store: AssetStore) -> None:
    colours = ["red", "blue", "green", "black"]
    made = {(await add(store, ALICE, png(c), now=5.0)).id for c in colours}
    seen: list[AssetId] = []
    cursor = None
    while True:
        page = await store.list(ALICE, 1, cursor)
        seen += [a.id for a in page.assets]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(made)


@pytest.mark.parametrize("cursor", ["garbage!", "AAAA", "MTox"])
async def test_bad_cursor(store: AssetStore, cursor: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid cursor"):
        await store.list(ALICE, 1, cursor)


async def test_delete_keeps_shared_bytes_until_the_last_reference(store: AssetStore) -> None:
    first = await add(store, ALICE, png())
    second = await add(store, BOB, png())
    assert first.blob == second.blob
    await store.delete(ALICE, first.id)
    assert await read(store, second) == png()
    await store.delete(BOB, second.id)
    with pytest.raises(NotFound):
        await read(store, second)
    with pytest.raises(NotFound):
        await store.get(BOB, second.id)


async def test_adds_and_deletes_of_equal_bytes_race_safely(store: AssetStore) -> None:
    """A delete of the last asset with some bytes, while another add of the same bytes
    runs, must never leave that add's asset without its bytes."""
    kept: list[Asset] = []

    async def churn() -> None:
        for _ in range(10):
            await store.delete(ALICE, (await add(store, ALICE, png())).id)

    async def keep() -> None:
        for _ in range(10):
            kept.append(await add(store, BOB, png()))

    async with anyio.create_task_group() as tasks:  # connections ready, so the two overlap
        tasks.start_soon(store.stored_bytes, ALICE)
        tasks.start_soon(store.stored_bytes, BOB)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(churn)
        tasks.start_soon(keep)
    for asset in kept:
        assert await read(store, asset) == png()


async def test_the_references_to_a_blob_are_held_across_handles(
    backend: Backend, state_dir: Path
) -> None:
    """While one process holds a blob's references, another waits for them (so that it
    can't count the blob unused between the first one's bytes and their record)."""
    first, second = backend.open(state_dir), backend.open(state_dir)
    key = BlobKey("a" * 64, "png")
    order: list[str] = []

    async def other() -> None:
        async with second.index.references(key):
            order.append("second")

    try:
        async with anyio.create_task_group() as tasks, first.index.references(key):
            tasks.start_soon(other)
            await anyio.sleep(0.5)
            order.append("first")
        assert order == ["first", "second"]
    finally:
        await first.aclose()
        await second.aclose()


async def test_an_oversize_staging_write_is_refused(storage: Storage) -> None:
    staged = storage.blobs.stage()
    with pytest.raises(ImageRejected, match="larger than the limit"), staged:
        staged.write(b"x" * (10**7 + 1))
    assert not staged.path.exists()


async def test_state_survives_a_reopen(backend: Backend, state_dir: Path) -> None:
    first = backend.open(state_dir)
    store = AssetStore(first.index, first.blobs)
    asset = await add(store, ALICE, png())
    assert await store.ready()
    await first.aclose()
    second = backend.open(state_dir)
    try:
        again = AssetStore(second.index, second.blobs)
        assert await again.get(ALICE, asset.id) == asset
        assert await read(again, asset) == png()
    finally:
        await second.aclose()


# --- blobs -----------------------------------------------------------------------------


async def test_blobs_commit_open_and_remove(storage: Storage) -> None:
    blobs = storage.blobs
    data = png("blue")
    for _ in range(2):  # committing equal content again is fine
        with blobs.stage() as staged:
            staged.write(data)
            staged.finish()
            key = BlobKey(staged.sha256, "png")
            await blobs.commit(staged, key)
        assert not staged.path.exists()
    async with blobs.open(key) as reader:
        assert b"".join([chunk async for chunk in reader.chunks()]) == data
    await blobs.remove(key)
    await blobs.remove(key)  # removing what is gone is not an error
    with pytest.raises(NotFound):
        async with blobs.open(key):
            pass


@pytest.mark.parametrize(
    ("sha256", "extension"),
    [("../" * 10 + "etc/passwd", "png"), ("a" * 64, "png/../x"), ("A" * 64, "png"), ("a" * 63, "")],
)
def test_a_blob_key_is_never_a_path(sha256: str, extension: str) -> None:
    with pytest.raises(Exception, match="invalid blob reference"):
        BlobKey(sha256, extension)


# --- quota ledger ---------------------------------------------------------------------


async def reserve(
    ledger: QuotaLedger, limits: Limits, images: int, spend: float, now: float
) -> Reservation:
    return await ledger.reserve(
        BOT, images, spend, now, lambda usage: check_limits(limits, usage, images, spend, now)
    )


async def test_images_per_day_and_reset_at_midnight(storage: Storage) -> None:
    ledger = storage.quotas
    limits = Limits(images_per_day=3)
    await ledger.commit(await reserve(ledger, limits, 2, 0.0, NOON), 2, 0.0, NOON)
    with pytest.raises(QuotaExceeded) as refused:
        await reserve(ledger, limits, 2, 0.0, NOON + 1)
    assert refused.value.limit == "images_per_day"
    assert refused.value.retry_after == 12 * 3600 - 1
    assert "2 of 3 images used today, 2 asked" in str(refused.value)
    await ledger.commit(await reserve(ledger, limits, 1, 0.0, NOON + 2), 1, 0.0, NOON + 2)
    next_day = NOON + 12 * 3600
    assert (await ledger.usage(BOT, next_day)).images_today == 0
    await reserve(ledger, limits, 3, 0.0, next_day)


async def test_a_refused_check_records_nothing(storage: Storage) -> None:
    def refuse(usage: Usage) -> None:
        raise QuotaExceeded("images_per_day", "test", 1)

    with pytest.raises(QuotaExceeded):
        await storage.quotas.reserve(BOT, 1, 0.5, NOON, refuse)
    usage = await storage.quotas.usage(BOT, NOON)
    assert (usage.in_flight, usage.images_today, usage.last_call_at) == (0, 0, None)


async def test_failed_or_declined_calls_consume_nothing(storage: Storage) -> None:
    ledger = storage.quotas
    limits = Limits(images_per_day=1)
    for _ in range(5):
        await ledger.release(await reserve(ledger, limits, 1, 0.0, NOON))
    assert (await ledger.usage(BOT, NOON)).images_today == 0
    await reserve(ledger, limits, 1, 0.0, NOON)


async def test_cooldown(storage: Storage) -> None:
    ledger = storage.quotas
    limits = Limits(cooldown_seconds=10)
    await ledger.release(await reserve(ledger, limits, 1, 0.0, NOON))
    assert (await ledger.usage(BOT, NOON)).last_call_at == NOON
    with pytest.raises(QuotaExceeded, match="cooldown_seconds") as refused:
        await reserve(ledger, limits, 1, 0.0, NOON + 3)
    assert refused.value.retry_after == 7
    await reserve(ledger, limits, 1, 0.0, NOON + 10)


async def test_spend_per_day_and_month(storage: Storage) -> None:
    ledger = storage.quotas
    limits = Limits(spend_per_day=0.5, spend_per_month=0.6)
    await ledger.commit(await reserve(ledger, limits, 1, 0.4, NOON), 1, 0.4, NOON)
    with pytest.raises(QuotaExceeded, match="spend_per_day"):
        await reserve(ledger, limits, 1, 0.2, NOON)
    tomorrow = NOON + 86400
    with pytest.raises(QuotaExceeded, match="spend_per_month") as refused:
        await reserve(ledger, limits, 1, 0.3, tomorrow)
    assert refused.value.retry_after == seconds_to_next_month(tomorrow)


async def test_running_calls_hold_their_spend(storage: Storage) -> None:
    """Reservations not yet committed count against the budgets: two parallel calls
    can't both spend the last of a day's money."""
    ledger = storage.quotas
    limits = Limits(spend_per_day=1.0, spend_per_month=10.0)
    first = await reserve(ledger, limits, 1, 0.4, NOON)
    await reserve(ledger, limits, 1, 0.4, NOON)
    usage = await ledger.usage(BOT, NOON)
    assert (usage.in_flight, usage.spend_today, usage.spend_month) == (2, 0.8, 0.8)
    with pytest.raises(QuotaExceeded, match="spend_per_day"):
        await reserve(ledger, limits, 1, 0.4, NOON)
    await ledger.release(first)
    await reserve(ledger, limits, 1, 0.4, NOON)


async def test_the_month_rolls_over_in_december(storage: Storage) -> None:
    ledger = storage.quotas
    limits = Limits(spend_per_month=1.0)
    reservation = await reserve(ledger, limits, 1, 0.9, NEW_YEARS_EVE)
    await ledger.commit(reservation, 1, 0.9, NEW_YEARS_EVE)
    with pytest.raises(QuotaExceeded, match="spend_per_month") as refused:
        await reserve(ledger, limits, 1, 0.2, NEW_YEARS_EVE)
    assert refused.value.retry_after == 12 * 3600
    new_year = NEW_YEARS_EVE + 12 * 3600
    assert (await ledger.usage(BOT, new_year)).spend_month == 0
    await reserve(ledger, limits, 1, 0.2, new_year)


async def test_concurrency_limit_and_lease(storage: Storage) -> None:
    ledger = storage.quotas
    limits = Limits(max_concurrent=1)
    await reserve(ledger, limits, 1, 0.0, NOON)
    with pytest.raises(QuotaExceeded, match="1 of 1 calls running") as refused:
        await reserve(ledger, limits, 1, 0.0, NOON + 1)
    assert refused.value.retry_after is None
    # A crashed process's reservation expires with its lease.
    await reserve(ledger, limits, 1, 0.0, NOON + 3601)


async def test_handles_race_for_the_last_slot(backend: Backend, state_dir: Path) -> None:
    """Separate handles on one state, like replicas: exactly one call gets the slot."""
    handles = [backend.open(state_dir) for _ in range(4)]
    try:
        for handle in handles:  # connected, so that the calls below start together
            await handle.open()
        setup = handles[0].quotas
        await setup.commit(await reserve(setup, Limits(), 9, 0.0, NOON), 9, 0.0, NOON)
        won: list[int] = []
        refused: list[int] = []

        async def attempt(index: int) -> None:
            try:
                await reserve(handles[index % 4].quotas, Limits(images_per_day=10), 1, 0.0, NOON)
                won.append(index)
            except QuotaExceeded:
                refused.append(index)

        async with anyio.create_task_group() as tasks:
            for index in range(32):
                tasks.start_soon(attempt, index)
        assert (len(won), len(refused)) == (1, 31)
    finally:
        for handle in handles:
            await handle.aclose()


async def test_counters_survive_a_restart(backend: Backend, state_dir: Path) -> None:
    first = backend.open(state_dir)
    ledger = first.quotas
    await ledger.commit(await reserve(ledger, Limits(), 4, 0.25, NOON), 4, 0.25, NOON)
    await first.aclose()
    second = backend.open(state_dir)
    try:
        usage = await second.quotas.usage(BOT, NOON)
    finally:
        await second.aclose()
    assert (usage.images_today, usage.spend_today, usage.calls_today) == (4, 0.25, 1)


async def test_admin_reset_clears_usage_and_cooldown(storage: Storage) -> None:
    ledger = storage.quotas
    await ledger.commit(await reserve(ledger, Limits(), 4, 1.0, NOON), 4, 1.0, NOON)
    running = await reserve(ledger, Limits(), 1, 0.0, NOON)
    await ledger.reset(BOT, NOON)
    usage = await ledger.usage(BOT, NOON)
    assert (usage.images_today, usage.spend_month, usage.last_call_at) == (1, 0, None)
    assert usage.in_flight == 1  # running calls are not forgotten
    await ledger.release(running)


class CancelsAfter:
    """A blob store that cancels its caller right after one operation: the moment
    between the bytes changing and their record changing."""

    def __init__(self, blobs: BlobStore, operation: str, scope: anyio.CancelScope) -> None:
        self._blobs = blobs
        self._operation = operation
        self._scope = scope

    def __getattr__(self, name: str) -> object:
        return getattr(self._blobs, name)

    async def commit(self, staged: StagedBlob, key: BlobKey) -> None:
        await self._blobs.commit(staged, key)
        if self._operation == "commit":
            self._scope.cancel()

    async def remove(self, key: BlobKey) -> None:
        await self._blobs.remove(key)
        if self._operation == "remove":
            self._scope.cancel()


async def test_a_cancelled_add_or_delete_keeps_records_and_bytes_together(
    storage: Storage,
) -> None:
    plain = AssetStore(storage.index, storage.blobs)
    with anyio.CancelScope() as scope:
        store = AssetStore(storage.index, CancelsAfter(storage.blobs, "commit", scope))
        added = await add(store, ALICE, png("red"))
    assert await read(plain, added) == png("red")  # recorded, with its bytes

    kept = await add(plain, ALICE, png("blue"))
    with anyio.CancelScope() as scope:
        store = AssetStore(storage.index, CancelsAfter(storage.blobs, "remove", scope))
        await store.delete(ALICE, kept.id)
    with pytest.raises(NotFound):  # deleted, record and bytes alike
        await plain.get(ALICE, kept.id)
    with pytest.raises(NotFound):
        await read(plain, kept)


def job(owner: Subject, at: float = NOON, tool: str = "generate_image") -> Job:
    return Job(
        id=new_job_id(),
        owner=owner,
        tool=tool,
        state=JobState.RUNNING,
        created_at=at,
        updated_at=at,
        request={"thumbnail": False},
    )


async def test_a_job_runs_reports_progress_and_ends_once(storage: Storage) -> None:
    ledger = storage.jobs
    started = job(ALICE)
    await ledger.create(started)
    assert await ledger.progress(started.id, 40.0, "drawing", NOON + 1)
    seen = await ledger.get(ALICE, started.id)
    assert (seen.state, seen.progress, seen.message, seen.updated_at) == (
        JobState.RUNNING,
        40.0,
        "drawing",
        NOON + 1,
    )
    outcome = {"assets": ["img_0123456789abcdef01234567"]}
    assert await ledger.finish(started.id, JobState.COMPLETED, NOON + 2, outcome=outcome)
    # A cancel that comes after the end changes nothing; nor does late progress.
    assert not await ledger.finish(started.id, JobState.CANCELLED, NOON + 3)
    assert not await ledger.progress(started.id, 99.0, "late", NOON + 4)
    done = await ledger.get(ALICE, started.id)
    assert (done.state, done.outcome, done.error, done.progress) == (
        JobState.COMPLETED,
        outcome,
        None,
        40.0,
    )
    assert done.request == {"thumbnail": False}
    assert done.finished


async def test_a_cancel_request_reaches_the_jobs_process(storage: Storage) -> None:
    started = job(ALICE)
    await storage.jobs.create(started)
    assert not await storage.jobs.request_cancel(BOB, started.id)  # not bob's
    assert await storage.jobs.progress(started.id, 10.0, "drawing", NOON + 1)
    assert await storage.jobs.request_cancel(ALICE, started.id)
    # The process running it learns of it when it next reports progress, and ends it.
    assert not await storage.jobs.progress(started.id, 20.0, "drawing", NOON + 2)
    assert (await storage.jobs.get(ALICE, started.id)).state is JobState.RUNNING
    assert await storage.jobs.finish(started.id, JobState.CANCELLED, NOON + 3)
    assert not await storage.jobs.request_cancel(ALICE, started.id)  # ended


async def test_a_failed_job_keeps_its_error(storage: Storage) -> None:
    started = job(ALICE)
    await storage.jobs.create(started)
    error = {"kind": "RelayError", "message": "upstream timed out"}
    assert await storage.jobs.finish(started.id, JobState.FAILED, NOON + 1, error=error)
    assert (await storage.jobs.get(ALICE, started.id)).error == error


async def test_another_owners_job_looks_missing(storage: Storage) -> None:
    started = job(ALICE)
    await storage.jobs.create(started)
    with pytest.raises(NotFound) as missing:
        await storage.jobs.get(BOB, started.id)
    with pytest.raises(NotFound) as unknown:
        await storage.jobs.get(BOB, new_job_id())
    assert str(missing.value).split(":")[0] == str(unknown.value).split(":")[0]
    assert (await storage.jobs.list(BOB, 10, None)).jobs == []


async def test_jobs_list_newest_first_in_pages(storage: Storage) -> None:
    made = [job(ALICE, NOON + index) for index in range(3)]
    for each in made:
        await storage.jobs.create(each)
    await storage.jobs.create(job(BOB, NOON + 5))
    first = await storage.jobs.list(ALICE, 2, None)
    assert [j.id for j in first.jobs] == [made[2].id, made[1].id]
    second = await storage.jobs.list(ALICE, 2, first.next_cursor)
    assert [j.id for j in second.jobs] == [made[0].id]
    assert second.next_cursor is None
    with pytest.raises(InvalidRequest, match="cursor"):
        await storage.jobs.list(ALICE, 2, "bm90LWEtY3Vyc29y")


async def test_sweep_forgets_only_jobs_that_ended_long_ago(storage: Storage) -> None:
    old, recent, running = job(ALICE), job(ALICE), job(ALICE)
    for each in (old, recent, running):
        await storage.jobs.create(each)
    await storage.jobs.finish(old.id, JobState.COMPLETED, NOON + 10)
    await storage.jobs.finish(recent.id, JobState.CANCELLED, NOON + 100)
    assert await storage.jobs.sweep(NOON + 50) == 1
    with pytest.raises(NotFound):
        await storage.jobs.get(ALICE, old.id)
    assert (await storage.jobs.get(ALICE, recent.id)).state is JobState.CANCELLED
    assert (await storage.jobs.get(ALICE, running.id)).state is JobState.RUNNING


async def test_jobs_survive_a_reopen(backend: Backend, state_dir: Path) -> None:
    first = backend.open(state_dir)
    started = job(ALICE)
    await first.jobs.create(started)
    await first.aclose()
    second = backend.open(state_dir)
    try:  # this process still runs: its job is not taken for abandoned
        assert (await second.jobs.get(ALICE, started.id)).state is JobState.RUNNING
    finally:
        await second.aclose()


async def test_an_upload_ticket_is_claimed_once_before_it_expires(storage: Storage) -> None:
    ticket = UploadTicket(new_upload_id(), ALICE, NOON + 60, "photo.png")
    await storage.uploads.create(ticket, NOON)
    assert await storage.uploads.claim(ticket.id, NOON + 1) == ticket
    assert await storage.uploads.claim(ticket.id, NOON + 2) is None  # used
    late = UploadTicket(new_upload_id(), ALICE, NOON + 60)
    await storage.uploads.create(late, NOON)
    assert await storage.uploads.claim(late.id, NOON + 60) is None  # expired
    assert await storage.uploads.claim(new_upload_id(), NOON) is None  # unknown


async def test_concurrent_claims_of_one_ticket_give_it_once(storage: Storage) -> None:
    ticket = UploadTicket(new_upload_id(), ALICE, NOON + 60)
    await storage.uploads.create(ticket, NOON)
    claimed: list[UploadTicket | None] = []

    async def claim() -> None:
        claimed.append(await storage.uploads.claim(ticket.id, NOON + 1))

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(claim)
    assert claimed.count(ticket) == 1


async def test_a_released_ticket_can_be_claimed_again(storage: Storage) -> None:
    ticket = UploadTicket(new_upload_id(), ALICE, NOON + 60)
    await storage.uploads.create(ticket, NOON)
    assert await storage.uploads.claim(ticket.id, NOON + 1) == ticket
    await storage.uploads.release(ticket.id)
    assert await storage.uploads.claim(ticket.id, NOON + 2) == ticket
    assert await storage.uploads.claim(ticket.id, NOON + 3) is None


COLOURS = ("red", "green", "yellow", "white", "black", "orange", "purple", "pink")


async def test_stored_bytes_hold_against_concurrent_adds(
    store: AssetStore, storage: Storage
) -> None:
    """Adds race for the last room under max_stored_bytes: one gets it."""
    size = len(png("red"))
    await add(store, ALICE, png("blue"))
    limit = await store.stored_bytes(ALICE) + size
    results: list[Asset | QuotaExceeded] = []
    refused_keys: list[BlobKey] = []

    async def attempt(colour: str) -> None:
        data = png(colour)
        with store.stage() as staged:
            staged.write(data)
            staged.finish()
            info = inspect_image(staged.path, max_bytes=10**7, max_pixels=10**7)
            try:
                results.append(
                    await store.add(ALICE, staged, info, AssetMeta("t", "p"), 1.0, limit)
                )
            except QuotaExceeded as refused:
                staged.discard()
                results.append(refused)
                refused_keys.append(BlobKey(staged.sha256, "png"))

    async with anyio.create_task_group() as group:  # connections ready, so the adds overlap
        for _ in COLOURS:
            group.start_soon(store.stored_bytes, ALICE)
    async with anyio.create_task_group() as group:
        for colour in COLOURS:
            group.start_soon(attempt, colour)
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(refused) == len(COLOURS) - 1
    assert "max_stored_bytes" in str(refused[0])
    assert "delete_image" in str(refused[0])
    assert await store.stored_bytes(ALICE) <= limit
    assert await store.stored_bytes(BOB) == 0
    for key in refused_keys:  # a refused add leaves no bytes that nothing uses
        with pytest.raises(NotFound):
            async with storage.blobs.open(key):
                pass


async def test_a_nonce_is_good_once(storage: Storage) -> None:
    assert await storage.nonces.spend("n-1", NOON, 60)
    assert not await storage.nonces.spend("n-1", NOON + 1, 60)
    assert await storage.nonces.spend("n-2", NOON + 1, 60)


async def test_a_spent_nonce_outlives_clocks_that_differ(storage: Storage) -> None:
    """A replica whose clock runs ahead must not forget a nonce that one whose clock runs
    behind would still accept; once no clock can accept it, it is forgotten."""
    assert await storage.nonces.spend("n-1", NOON, 60)
    assert await storage.nonces.spend("other", NOON + 60 + 120, 60)  # purges, ahead
    assert not await storage.nonces.spend("n-1", NOON + 30, 60)  # behind: still spent
    assert await storage.nonces.spend("later", NOON + 60 + 301, 60)  # purges, past margin
    assert await storage.nonces.spend("n-1", NOON + 60 + 302, 60)


async def test_revoking_links_raises_the_generation_for_its_owner_only(
    store: AssetStore, storage: Storage
) -> None:
    asset = await add(store, ALICE, png())
    assert asset.link_generation == 0
    with pytest.raises(NotFound):
        await storage.index.revoke_links(BOB, asset.id)
    revoked = await storage.index.revoke_links(ALICE, asset.id)
    assert revoked.link_generation == 1
    assert (await store.get(ALICE, asset.id)).link_generation == 1
    assert (await storage.index.revoke_links(None, asset.id)).link_generation == 2  # admin
    with pytest.raises(NotFound):
        await storage.index.revoke_links(ALICE, AssetId("img_" + "0" * 26))


async def test_expired_assets_are_those_past_their_keep(
    store: AssetStore, storage: Storage
) -> None:
    async def kept(colour: str, created: float, keep_until: float | None) -> Asset:
        with store.stage() as staged:
            staged.write(png(colour))
            staged.finish()
            info = inspect_image(staged.path, max_bytes=10**7, max_pixels=10**7)
            meta = AssetMeta("t", "p")
            return await store.add(ALICE, staged, info, meta, created, keep_until=keep_until)

    old_forever = await kept("red", 100.0, math.inf)
    old_unrecorded = await kept("green", 200.0, None)
    due = await kept("blue", 300.0, 1000.0)
    later = await kept("white", 400.0, 5000.0)
    new_unrecorded = await kept("black", 3000.0, None)
    listed = await storage.index.expired(2000.0, unrecorded_before=2500.0, limit=10)
    assert [a.id for a in listed] == [old_unrecorded.id, due.id]  # oldest first
    assert [a.id for a in await storage.index.expired(2000.0, None, 10)] == [due.id]
    assert [a.id for a in await storage.index.expired(9000.0, None, 1)] == [due.id]
    assert {old_forever.id, later.id, new_unrecorded.id}.isdisjoint(
        a.id for a in await storage.index.expired(4000.0, 2500.0, 10)
    )


async def test_usage_reports_sum_the_quota_counters(storage: Storage) -> None:
    ledger = storage.quotas
    calls = [
        ("token:a", "gpt", 2, 0.08, NOON),
        ("token:a", "gpt", 1, 0.04, NOON + 60),
        ("token:a", "sd", 1, 0.0, NOON + 86_400),
        ("token:b", "gpt", 4, 0.16, NOON),
    ]
    for subject, relay, images, spend, now in calls:
        held = await ledger.reserve(subject, images, spend, now, lambda usage: None, relay=relay)
        await ledger.commit(held, images, spend, now)
    # A call committed before relays were recorded counts under "".
    await ledger.commit(await ledger.reserve("token:b", 1, 0.0, NOON, lambda u: None), 1, 0.0, NOON)
    since, until = "2027-01-15", "2027-01-17"
    by_subject = await ledger.report(since, until, "subject")
    assert [(r.key, r.images, r.calls) for r in by_subject] == [
        ("token:a", 4, 3),
        ("token:b", 5, 2),
    ]
    by_relay = await ledger.report(since, until, "relay")
    assert [(r.key, r.images, r.calls) for r in by_relay] == [
        ("", 1, 1),
        ("gpt", 7, 3),
        ("sd", 1, 1),
    ]
    assert pytest.approx(sum(r.spend for r in by_relay)) == 0.28
    by_day = await ledger.report(since, until, "day")
    assert [(r.key, r.images) for r in by_day] == [("2027-01-15", 8), ("2027-01-16", 1)]
    assert await ledger.report("2027-01-16", "2027-01-16", "day") == []
    # The same counters the limits read.
    assert (await ledger.usage("token:a", NOON)).images_today == 3
    assert (await ledger.usage("token:b", NOON)).images_today == 5


async def test_a_lease_is_held_by_one_at_a_time(backend: Backend, state_dir: Path) -> None:
    first, second = backend.open(state_dir), backend.open(state_dir)
    try:
        assert await first.leases.take("sweep", "p1", NOON, 60)
        assert not await second.leases.take("sweep", "p2", NOON + 1, 60)
        assert await first.leases.take("sweep", "p1", NOON + 30, 60)  # renewed by its holder
        assert not await second.leases.take("sweep", "p2", NOON + 80, 60)
        assert await second.leases.take("sweep", "p2", NOON + 91, 60)  # expired: taken over
        assert await second.leases.take("other", "p2", NOON + 91, 60)
    finally:
        await first.aclose()
        await second.aclose()


async def test_bytes_no_asset_uses_are_collected_and_only_those(
    store: AssetStore, storage: Storage
) -> None:
    """A process that died between writing bytes and recording them left an orphan."""
    used = await add(store, ALICE, png("red"))
    with store.stage() as staged:
        staged.write(png("blue"))
        staged.finish()
        orphan = BlobKey(staged.sha256, "png")
        await storage.blobs.commit(staged, orphan)
    assert await store.collect_orphans(before=time.time() - 3600) == 0  # too young
    assert await store.collect_orphans(before=time.time() + 60) == 1
    with pytest.raises(NotFound):
        async with storage.blobs.open(orphan):
            pass
    assert await read(store, used) == png("red")


async def test_a_released_lease_is_free_at_once(backend: Backend, state_dir: Path) -> None:
    first, second = backend.open(state_dir), backend.open(state_dir)
    try:
        assert await first.leases.take("sweep", "p1", NOON, 600)
        await second.leases.release("sweep", "p2")  # not its own: nothing happens
        assert not await second.leases.take("sweep", "p2", NOON + 1, 600)
        await first.leases.release("sweep", "p1")  # a clean stop
        assert await second.leases.take("sweep", "p2", NOON + 2, 600)
    finally:
        await first.aclose()
        await second.aclose()


async def test_used_says_which_blobs_some_asset_has(store: AssetStore, storage: Storage) -> None:
    asset = await add(store, ALICE, png("red"))
    other = "f" * 64
    assert await storage.index.used([asset.sha256, other]) == {asset.sha256}
    assert await storage.index.used([]) == set()
