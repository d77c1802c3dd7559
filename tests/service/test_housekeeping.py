"""Housekeeping on the embedded backend: a chore that fails, or an image that can't be
deleted now, holds up nothing else; the daily orphan collection runs once a day."""

import logging
from typing import Any

import pytest

from imagegate.config import Settings
from imagegate.core.errors import StorageError
from imagegate.core.ids import AssetId, Subject
from imagegate.core.images import inspect_image
from imagegate.service.housekeeping import Housekeeping
from imagegate.storage.assets import AssetStore
from imagegate.storage.interfaces import Asset, AssetMeta, BlobKey, Storage
from tests.conftest import ManualClock
from tests.fakes.upstream import png_bytes

DAY = 86_400
ALICE = Subject("token:alice")


class Stubborn(AssetStore):
    """A store that can't delete one image (its bucket refuses, say)."""

    refuse: AssetId | None = None

    async def delete(self, owner: Subject | None, asset_id: AssetId) -> Asset:
        if asset_id == self.refuse:
            raise StorageError("could not delete image bytes: the bucket answered 403")
        return await super().delete(owner, asset_id)


async def add(store: AssetStore, size: tuple[int, int], now: float) -> Asset:
    with store.stage() as staged:
        staged.write(png_bytes(size))
        staged.finish()
        info = inspect_image(staged.path, max_bytes=10**7, max_pixels=10**7)
        return await store.add(ALICE, staged, info, AssetMeta("t", "p"), now)


def housekeeping(
    storage: Storage, clock: ManualClock, **settings: Any
) -> tuple[Housekeeping, Stubborn]:
    store = Stubborn(storage.index, storage.blobs)
    made = Housekeeping(Settings(retention_days=1, **settings), store, storage.leases, clock)
    return made, store


async def test_an_image_that_cant_be_deleted_holds_up_no_other(
    storage: Storage, clock: ManualClock
) -> None:
    chores, store = housekeeping(storage, clock)
    stuck = await add(store, (16, 16), clock.now())
    others = [await add(store, (16 + i, 16), clock.now() + 1 + i) for i in range(3)]
    store.refuse = stuck.id
    clock.advance(2 * DAY)
    assert await chores.sweep() == 3
    assert [a.id for a in (await store.list(None, 10)).assets] == [stuck.id]
    store.refuse = None
    assert await chores.sweep() == 1  # the next sweep gets it
    assert others


async def test_a_failing_chore_stops_neither_the_others_nor_the_next_round(
    storage: Storage, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    chores, store = housekeeping(storage, clock)
    await add(store, (16, 16), clock.now())
    clock.advance(2 * DAY)

    async def broken() -> int:
        raise RuntimeError("a bug")

    chores.collect_orphans = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="imagegate.housekeeping"):
        await chores._chores()
    assert "housekeeping (orphans) failed this time" in caplog.text
    assert "housekeeping (retention): 1 removed" in caplog.text
    assert (await store.list(None, 10)).assets == []


async def orphan(storage: Storage, size: tuple[int, int]) -> BlobKey:
    """Bytes no image uses: what a process left that died before recording them."""
    with storage.blobs.stage() as staged:
        staged.write(png_bytes(size))
        staged.finish()
        key = BlobKey(staged.sha256, "png")
        await storage.blobs.commit(staged, key)
    return key


async def test_orphans_are_collected_once_a_day_by_one_process(
    storage: Storage, clock: ManualClock
) -> None:
    # The manual clock is ahead of the files' real times: every orphan is "a day old".
    chores, _ = housekeeping(storage, clock)
    first = await orphan(storage, (20, 20))
    assert await chores.collect_orphans() == 1
    second = await orphan(storage, (21, 20))
    assert await chores.collect_orphans() == 0  # not again the same day
    assert storage.blobs.local_path(second) is not None
    assert storage.blobs.local_path(second).exists()  # type: ignore[union-attr]
    assert not await storage.leases.take("orphans", "another:1:1", clock.now(), 60)
    clock.advance(DAY + 1)
    assert await chores.collect_orphans() == 1
    assert first != second
