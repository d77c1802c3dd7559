"""The asset index in PostgreSQL: metadata of every image, by owner, newest first."""

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from imagegate.core.errors import NotFound, StorageError
from imagegate.core.ids import AssetId, Subject, is_asset_id
from imagegate.storage.interfaces import Asset, BlobKey, Page
from imagegate.storage.postgres.database import Connection, Lock, PgDatabase, lock
from imagegate.storage.postgres.paging import newest_first
from imagegate.storage.rows import asset_from_row


class _References:
    """The assets of one blob, changed inside the transaction that holds its lock."""

    def __init__(self, connection: Connection, sha256: str) -> None:
        self._connection = connection
        self._sha256 = sha256

    async def add(self, asset: Asset) -> None:
        try:
            await self._connection.execute(
                "INSERT INTO assets (id, owner, sha256, format, width, height, byte_size, "
                "relay, prompt, revised_prompt, params, created_us, link_generation, "
                "keep_until) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
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
        except asyncpg.PostgresError as err:
            raise StorageError(f"could not record the image: {err.sqlstate}") from None

    async def owned_bytes(self, owner: Subject) -> int:
        # The owner's lock too: two adds of different blobs for one owner must not
        # both take the last room. Always taken after a blob's lock, never before.
        await lock(self._connection, Lock.OWNER_BYTES, owner)
        return await _owned_bytes(self._connection, owner)

    async def users(self) -> int:
        return await _users(self._connection, self._sha256)

    async def remove(self, asset: Asset) -> int:
        await self._connection.execute("DELETE FROM assets WHERE id = $1", asset.id)
        return await _users(self._connection, asset.sha256)


class PgAssetIndex:
    def __init__(self, database: PgDatabase) -> None:
        self._db = database

    @asynccontextmanager
    async def references(self, key: BlobKey) -> AsyncIterator[_References]:
        async with self._db.transaction() as connection:
            await lock(connection, Lock.BLOB, key.sha256)
            yield _References(connection, key.sha256)

    async def get(self, owner: Subject | None, asset_id: AssetId) -> Asset:
        query = "SELECT * FROM assets WHERE id = $1"
        args: list[Any] = [asset_id]
        if owner is not None:
            query += " AND owner = $2"
            args.append(owner)
        row = await self._db.run(lambda db: db.fetchrow(query, *args))
        if row is None:
            raise NotFound(f"image not found: {asset_id}")
        return asset_from_row(row)

    async def list(self, owner: Subject | None, limit: int, cursor: str | None = None) -> Page:
        query, args = "SELECT * FROM assets WHERE true", []
        if owner is not None:
            query, args = "SELECT * FROM assets WHERE owner = $1", [owner]
        rows, next_cursor = await newest_first(self._db, query, args, limit, cursor, is_asset_id)
        return Page([asset_from_row(row) for row in rows], next_cursor)

    async def stored_bytes(self, owner: Subject) -> int:
        return await self._db.run(lambda db: _owned_bytes(db, owner))

    async def used(self, sha256s: Sequence[str]) -> set[str]:
        rows = await self._db.run(
            lambda db: db.fetch(
                "SELECT DISTINCT sha256 FROM assets WHERE sha256 = ANY($1)", list(sha256s)
            )
        )
        return {row["sha256"] for row in rows}

    async def revoke_links(self, owner: Subject | None, asset_id: AssetId) -> Asset:
        query = "UPDATE assets SET link_generation = link_generation + 1 WHERE id = $1"
        args: list[Any] = [asset_id]
        if owner is not None:
            query += " AND owner = $2"
            args.append(owner)
        row = await self._db.run(lambda db: db.fetchrow(query + " RETURNING *", *args))
        if row is None:
            raise NotFound(f"image not found: {asset_id}")
        return asset_from_row(row)

    async def expired(
        self, now: float, unrecorded_before: float | None, limit: int
    ) -> Sequence[Asset]:
        rows = await self._db.run(
            lambda db: db.fetch(
                "SELECT * FROM assets WHERE keep_until <= $1 "
                "OR (keep_until IS NULL AND created_us < $2) ORDER BY created_us LIMIT $3",
                now,
                None if unrecorded_before is None else int(unrecorded_before * 1_000_000),
                limit,
            )
        )
        return [asset_from_row(row) for row in rows]

    async def ready(self) -> bool:
        try:
            await self._db.run(lambda db: db.fetchval("SELECT 1 FROM assets LIMIT 1"))
        except StorageError:
            return False
        return True


async def _users(connection: Connection, sha256: str) -> int:
    return int(await connection.fetchval("SELECT count(*) FROM assets WHERE sha256 = $1", sha256))


async def _owned_bytes(connection: Connection, owner: Subject) -> int:
    total = await connection.fetchval(
        "SELECT COALESCE(SUM(byte_size), 0) FROM assets WHERE owner = $1", owner
    )
    return int(total)
