"""Keyset paging, newest first: a cursor is the (time, id) of the last row shown. The
same cursor for every backend, so a page continues on any replica."""

import base64
import binascii
from collections.abc import Callable

from imagegate.core.errors import InvalidRequest


def encode_cursor(created_us: int, last_id: str) -> str:
    raw = f"{created_us}:{last_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, is_id: Callable[[str], bool]) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, last_id = raw.split(":", 1)
        if not is_id(last_id):
            raise ValueError(last_id)
        return int(created), last_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("invalid cursor; pass the next_cursor of a previous page") from None
