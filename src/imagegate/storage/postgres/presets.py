"""Subjects' own presets in PostgreSQL: a save holds the owner's advisory lock while it
counts and writes, so replicas saving at once can't both take the last place."""

from imagegate.core.ids import Subject
from imagegate.storage.interfaces import PresetSaved, StoredPreset
from imagegate.storage.postgres.database import Lock, PgDatabase, lock
from imagegate.storage.rows import preset_from_row


class PgPresetLedger:
    def __init__(self, database: PgDatabase) -> None:
        self._db = database

    async def list(self, owner: Subject) -> list[StoredPreset]:
        rows = await self._db.run(
            lambda db: db.fetch(
                "SELECT owner, name, prompt, negative_prompt, size, quality, relay, "
                "description, updated FROM presets WHERE owner = $1 ORDER BY name",
                owner,
            )
        )
        return [preset_from_row(row) for row in rows]

    async def get(self, owner: Subject, name: str) -> StoredPreset | None:
        row = await self._db.run(
            lambda db: db.fetchrow(
                "SELECT owner, name, prompt, negative_prompt, size, quality, relay, "
                "description, updated FROM presets WHERE owner = $1 AND name = $2",
                owner,
                name,
            )
        )
        return None if row is None else preset_from_row(row)

    async def save(self, preset: StoredPreset, max_count: int) -> PresetSaved:
        async with self._db.transaction() as db:
            await lock(db, Lock.PRESETS, preset.owner)
            exists = await db.fetchval(
                "SELECT 1 FROM presets WHERE owner = $1 AND name = $2", preset.owner, preset.name
            )
            if exists is None:
                count = await db.fetchval(
                    "SELECT count(*) FROM presets WHERE owner = $1", preset.owner
                )
                if count >= max_count:
                    return PresetSaved.FULL
            await db.execute(
                "INSERT INTO presets (owner, name, prompt, negative_prompt, size, quality, "
                "relay, description, updated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
                "ON CONFLICT (owner, name) DO UPDATE SET prompt = EXCLUDED.prompt, "
                "negative_prompt = EXCLUDED.negative_prompt, size = EXCLUDED.size, "
                "quality = EXCLUDED.quality, relay = EXCLUDED.relay, "
                "description = EXCLUDED.description, updated = EXCLUDED.updated",
                *preset.values(),
            )
        return PresetSaved.CREATED if exists is None else PresetSaved.REPLACED

    async def delete(self, owner: Subject, name: str) -> bool:
        deleted = await self._db.run(
            lambda db: db.fetchval(
                "DELETE FROM presets WHERE owner = $1 AND name = $2 RETURNING 1", owner, name
            )
        )
        return deleted is not None
