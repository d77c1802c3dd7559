"""The asset index in SQLite: metadata of every image, by owner, newest first."""

import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from imagegate.core.errors import NotFound, StorageError
from imagegate.core.ids import AssetId, Subject, is_asset_id
from imagegate.storage.cursors import decode_cursor, encode_cursor
from imagegate.storage.interfaces import Asset, BlobKey, Page
from imagegate.storage.rows import asset_from_row
from imagegate.storage.sqlite.database import Database, Transaction, rows_by_name, run_script
from imagegate.storage.sqlite.paging import AFTER_CURSOR, NEWEST_FIRST

SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    format TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    byte_size INTEGER NOT NULL,
    relay TEXT NOT NULL,
    prompt TEXT NOT NULL,
    revised_prompt TEXT,
    params TEXT NOT NULL,
    created_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS assets_by_owner ON assets (owner, created_us DESC, id DESC);
CREATE INDEX IF NOT EXISTS assets_by_blob ON assets (sha256);
"""


LINKS_AND_RETENTION = """
ALTER TABLE assets ADD COLUMN link_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE assets ADD COLUMN keep_until REAL;
CREATE INDEX IF NOT EXISTS assets_by_keep_until ON assets (keep_until);
ALTER TABLE uploads ADD COLUMN retention_days REAL;
"""


def create(db: sqlite3.Connection) -> None:
    run_script(db, SCHEMA)


def add_links_and_retention(db: sqlite3.Connection) -> None:
    run_script(db, LINKS_AND_RETENTION)


class _References:
    """The assets of one blob, changed inside the transaction `references` holds."""

    def __init__(self, transaction: Transaction, sha256: str) -> None:
        self._transaction = transaction
        self._sha256 = sha256

    async def add(self, asset: Asset) -> None:
        row = (
            asset.id,
            asset.owner,
            asset.sha256,
            asset.format.value,
            asset.width,
            asset.height,
            asset.byte_size,
            asset.relay,
            asset.prompt,
            asset.revised_prompt,
            json.dumps(asset.params, sort_keys=True),
            int(asset.created_at * 1_000_000),
            asset.link_generation,
            asset.keep_until,
        )
        try:
            # The last statement of an add (storage.assets): its COMMIT comes along.
            await self._transaction.run_last(
                lambda db: db.execute(
                    "INSERT INTO assets (id, owner, sha256, format, width, height, byte_size, "
                    "relay, prompt, revised_prompt, params, created_us, link_generation, "
                    "keep_until) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    row,
                )
            )
        except StorageError as err:
            raise StorageError(f"could not record the image: {err}") from None

    async def owned_bytes(self, owner: Subject) -> int:
        return await self._transaction.run(lambda db: _owned_bytes(db, owner))

    async def users(self) -> int:
        return await self._transaction.run(lambda db: _users(db, self._sha256))

    async def remove(self, asset: Asset) -> int:
        def remove(db: sqlite3.Connection) -> int:
            db.execute("DELETE FROM assets WHERE id = ?", (asset.id,))
            return _users(db, asset.sha256)

        return await self._transaction.run(remove)


class SqliteAssetIndex:
    def __init__(self, database: Database) -> None:
        self._db = database

    @asynccontextmanager
    async def references(self, key: BlobKey) -> AsyncIterator[_References]:
        # One IMMEDIATE transaction holds SQLite's write lock, which is stricter than a
        # lock on this one blob and covers other processes sharing the file.
        async with self._db.transaction() as transaction:
            yield _References(transaction, key.sha256)

    async def get(self, owner: Subject | None, asset_id: AssetId) -> Asset:
        query = "SELECT * FROM assets WHERE id = ?"
        args: tuple[str, ...] = (asset_id,)
        if owner is not None:
            query += " AND owner = ?"
            args += (owner,)
        rows = await self._db.read(lambda db: rows_by_name(db, query, args), brief=True)
        if not rows:
            raise NotFound(f"image not found: {asset_id}")
        return asset_from_row(rows[0])

    async def list(self, owner: Subject | None, limit: int, cursor: str | None = None) -> Page:
        query = "SELECT * FROM assets WHERE 1 = 1"
        args: list[Any] = []
        if owner is not None:
            query += " AND owner = ?"  # keeps the (owner, created_us) index usable
            args.append(owner)
        if cursor:
            created_us, last_id = decode_cursor(cursor, is_asset_id)
            query += AFTER_CURSOR
            args += [created_us, created_us, last_id]
        query += NEWEST_FIRST
        args.append(limit + 1)
        rows = await self._db.read(lambda db: rows_by_name(db, query, args))
        assets = [asset_from_row(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor(rows[limit - 1]["created_us"], rows[limit - 1]["id"])
        return Page(assets, next_cursor)

    async def stored_bytes(self, owner: Subject) -> int:
        return await self._db.read(lambda db: _owned_bytes(db, owner))

    async def used(self, sha256s: Sequence[str]) -> set[str]:
        if not sha256s:
            return set()
        marks = ",".join("?" * len(sha256s))
        query = f"SELECT DISTINCT sha256 FROM assets WHERE sha256 IN ({marks})"  # noqa: S608
        rows = await self._db.read(lambda db: db.execute(query, list(sha256s)).fetchall())
        return {row[0] for row in rows}

    async def revoke_links(self, owner: Subject | None, asset_id: AssetId) -> Asset:
        query = "UPDATE assets SET link_generation = link_generation + 1 WHERE id = ?"
        args: tuple[str, ...] = (asset_id,)
        if owner is not None:
            query += " AND owner = ?"
            args += (owner,)

        def revoke(db: sqlite3.Connection) -> list[sqlite3.Row]:
            if db.execute(query, args).rowcount != 1:
                return []
            return rows_by_name(db, "SELECT * FROM assets WHERE id = ?", (asset_id,))

        rows = await self._db.write(revoke)
        if not rows:
            raise NotFound(f"image not found: {asset_id}")
        return asset_from_row(rows[0])

    async def expired(
        self, now: float, unrecorded_before: float | None, limit: int
    ) -> Sequence[Asset]:
        query = "SELECT * FROM assets WHERE keep_until <= ?"
        args: list[Any] = [now]
        if unrecorded_before is not None:
            query += " OR (keep_until IS NULL AND created_us < ?)"
            args.append(int(unrecorded_before * 1_000_000))
        query += " ORDER BY created_us LIMIT ?"
        args.append(limit)
        rows = await self._db.read(lambda db: rows_by_name(db, query, args))
        return [asset_from_row(row) for row in rows]

    async def ready(self) -> bool:
        try:
            await self._db.read(lambda db: db.execute("SELECT 1 FROM assets LIMIT 1").fetchall())
        except StorageError:
            return False
        return True


def _users(db: sqlite3.Connection, sha256: str) -> int:
    (count,) = db.execute("SELECT COUNT(*) FROM assets WHERE sha256 = ?", (sha256,)).fetchone()
    return int(count)


def _owned_bytes(db: sqlite3.Connection, owner: Subject) -> int:
    (total,) = db.execute(
        "SELECT COALESCE(SUM(byte_size), 0) FROM assets WHERE owner = ?", (owner,)
    ).fetchone()
    return int(total)
