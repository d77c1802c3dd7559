"""Keyset paging in PostgreSQL's placeholders; the cursor is the embedded backend's."""

from collections.abc import Callable
from typing import Any

from imagegate.storage.cursors import decode_cursor


def after_cursor(cursor: str, is_id: Callable[[str], bool], args: list[Any]) -> str:
    """The condition for rows after `cursor`, its values appended to `args`."""
    created_us, last_id = decode_cursor(cursor, is_id)
    args += [created_us, last_id]
    first, second = len(args) - 1, len(args)
    return f" AND (created_us, id) < (${first}, ${second})"
