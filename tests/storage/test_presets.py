"""The preset ledger's contract, on the embedded database and on PostgreSQL: each
subject's presets by name, invisible to every other subject, counted atomically."""

from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from imagegate.core.ids import Subject
from imagegate.storage.interfaces import PresetSaved, Storage, StoredPreset
from tests.storage.backends import BACKENDS, Backend

ALICE = Subject("token:alice")
BOB = Subject("token:bob")
INK = StoredPreset(
    owner=ALICE,
    name="ink",
    prompt="ink sketch of {prompt}",
    negative_prompt="colour",
    size="512x512",
    quality="high",
    relay="auto",
    description="Black ink, white paper",
    updated_at=1000.5,
)
DATABASES = [backend for backend in BACKENDS if backend.name in ("embedded", "postgresql+files")]
"""The ledger lives in the database alone: where blobs are kept doesn't matter."""


@pytest.fixture(params=DATABASES, ids=lambda backend: backend.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Narrows conftest's: its `storage` fixture opens these only."""
    chosen: Backend = request.param
    return chosen


async def test_a_saved_preset_reads_back_whole(storage: Storage) -> None:
    assert await storage.presets.save(INK, 50) is PresetSaved.CREATED
    assert await storage.presets.get(ALICE, "ink") == INK
    bare = StoredPreset(owner=ALICE, name="bare", prompt="{prompt}")
    await storage.presets.save(bare, 50)
    assert await storage.presets.list(ALICE) == [bare, INK]  # by name


async def test_another_owners_presets_are_out_of_reach(storage: Storage) -> None:
    await storage.presets.save(INK, 50)
    assert await storage.presets.get(BOB, "ink") is None
    assert await storage.presets.list(BOB) == []
    assert await storage.presets.delete(BOB, "ink") is False
    # Bob's own preset of the same name is his, and leaves Alice's alone.
    bobs = replace(INK, owner=BOB, prompt="bob's {prompt}")
    assert await storage.presets.save(bobs, 50) is PresetSaved.CREATED
    assert await storage.presets.get(ALICE, "ink") == INK
    assert await storage.presets.get(BOB, "ink") == bobs


async def test_saving_again_replaces_every_value(storage: Storage) -> None:
    await storage.presets.save(INK, 50)
    again = StoredPreset(owner=ALICE, name="ink", prompt="new {prompt}", updated_at=2000.0)
    assert await storage.presets.save(again, 50) is PresetSaved.REPLACED
    assert await storage.presets.get(ALICE, "ink") == again


async def test_a_delete_forgets_the_preset(storage: Storage) -> None:
    await storage.presets.save(INK, 50)
    assert await storage.presets.delete(ALICE, "ink") is True
    assert await storage.presets.get(ALICE, "ink") is None
    assert await storage.presets.delete(ALICE, "ink") is False


async def test_a_full_owner_may_replace_but_not_add(storage: Storage) -> None:
    for name in ("a", "b"):
        await storage.presets.save(replace(INK, name=name), 2)
    assert await storage.presets.save(replace(INK, name="c"), 2) is PresetSaved.FULL
    assert await storage.presets.get(ALICE, "c") is None
    changed = replace(INK, name="b", prompt="b {prompt}")
    assert await storage.presets.save(changed, 2) is PresetSaved.REPLACED
    assert await storage.presets.save(replace(INK, owner=BOB, name="c"), 2) is PresetSaved.CREATED
    assert await storage.presets.save(replace(INK, name="c"), 0) is PresetSaved.FULL


async def test_handles_racing_for_the_last_places_get_them_once(
    backend: Backend, state_dir: Path
) -> None:
    """Two processes (or replicas) saving at once: the count holds across them."""
    first, second = backend.open(state_dir), backend.open(state_dir)
    outcomes: list[PresetSaved] = []

    async def save(storage: Storage, name: str) -> None:
        outcomes.append(await storage.presets.save(replace(INK, name=name), 3))

    try:
        async with anyio.create_task_group() as group:
            for index in range(8):
                group.start_soon(save, (first, second)[index % 2], f"p{index}")
        assert outcomes.count(PresetSaved.CREATED) == 3
        assert outcomes.count(PresetSaved.FULL) == 5
        assert len(await first.presets.list(ALICE)) == 3
    finally:
        await first.aclose()
        await second.aclose()


async def test_presets_survive_a_reopen(backend: Backend, state_dir: Path) -> None:
    storage = backend.open(state_dir)
    await storage.presets.save(INK, 50)
    await storage.aclose()
    reopened = backend.open(state_dir)
    try:
        assert await reopened.presets.get(ALICE, "ink") == INK
    finally:
        await reopened.aclose()
