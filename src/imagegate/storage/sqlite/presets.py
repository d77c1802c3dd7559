"""Subjects' own presets in SQLite: the count and the write share one IMMEDIATE
transaction, so two saves can't both take the last place."""

import sqlite3

from imagegate.core.ids import Subject
from imagegate.storage.interfaces import PresetSaved, StoredPreset
from imagegate.storage.rows import preset_from_row
from imagegate.storage.sqlite.database import Database, rows_by_name, run_script

SCHEMA = """
CREATE TABLE IF NOT EXISTS presets (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    prompt TEXT NOT NULL,
    negative_prompt TEXT,
    size TEXT,
    quality TEXT,
    relay TEXT,
    description TEXT,
    updated REAL NOT NULL,
    PRIMARY KEY (owner, name)
);
"""


def create(db: sqlite3.Connection) -> None:
    run_script(db, SCHEMA)


class SqlitePresetLedger:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def list(self, owner: Subject) -> list[StoredPreset]:
        rows = await self._db.read(
            lambda db: rows_by_name(
                db,
                "SELECT owner, name, prompt, negative_prompt, size, quality, relay, "
                "description, updated FROM presets WHERE owner = ? ORDER BY name",
                (owner,),
            )
        )
        return [preset_from_row(row) for row in rows]

    async def get(self, owner: Subject, name: str) -> StoredPreset | None:
        rows = await self._db.read(
            lambda db: rows_by_name(
                db,
                "SELECT owner, name, prompt, negative_prompt, size, quality, relay, "
                "description, updated FROM presets WHERE owner = ? AND name = ?",
                (owner, name),
            )
        )
        return preset_from_row(rows[0]) if rows else None

    async def save(self, preset: StoredPreset, max_count: int) -> PresetSaved:
        def save(db: sqlite3.Connection) -> PresetSaved:
            (exists,) = db.execute(
                "SELECT COUNT(*) FROM presets WHERE owner = ? AND name = ?",
                (preset.owner, preset.name),
            ).fetchone()
            if not exists:
                (count,) = db.execute(
                    "SELECT COUNT(*) FROM presets WHERE owner = ?", (preset.owner,)
                ).fetchone()
                if count >= max_count:
                    return PresetSaved.FULL
            db.execute(
                "INSERT OR REPLACE INTO presets (owner, name, prompt, negative_prompt, size, "
                "quality, relay, description, updated) VALUES (?,?,?,?,?,?,?,?,?)",
                preset.values(),
            )
            return PresetSaved.REPLACED if exists else PresetSaved.CREATED

        return await self._db.write(save)

    async def delete(self, owner: Subject, name: str) -> bool:
        deleted = await self._db.write(
            lambda db: (
                db.execute(
                    "DELETE FROM presets WHERE owner = ? AND name = ?", (owner, name)
                ).rowcount
            )
        )
        return bool(deleted)
