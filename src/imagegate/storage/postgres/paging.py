"""Keyset paging in PostgreSQL, newest first; the cursor is every backend's."""

from collections.abc import Callable
from typing import Any

import asyncpg

from imagegate.storage.cursors import decode_cursor, encode_cursor
from imagegate.storage.postgres.database import PgDatabase


async def newest_first(
    database: PgDatabase,
    query: str,
    args: list[Any],
    limit: int,
    cursor: str | None,
    is_id: Callable[[str], bool],
) -> tuple[list[asyncpg.Record], str | None]:
    """One page of `query`'s rows (it ends in its WHERE conditions), and the cursor of
    the next page, if there is one."""
    if cursor:
        created_us, last_id = decode_cursor(cursor, is_id)
        args = [*args, created_us, last_id]
        query += f" AND (created_us, id) < (${len(args) - 1}, ${len(args)})"
    args = [*args, limit + 1]
    query += f" ORDER BY created_us DESC, id DESC LIMIT ${len(args)}"
    rows = await database.run(lambda db: db.fetch(query, *args))
    if len(rows) <= limit:
        return list(rows), None
    last = rows[limit - 1]
    return list(rows[:limit]), encode_cursor(last["created_us"], last["id"])
