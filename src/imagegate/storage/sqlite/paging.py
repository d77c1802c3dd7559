"""Keyset paging in SQLite: the conditions that continue after a cursor."""

AFTER_CURSOR = " AND (created_us < ? OR (created_us = ? AND id < ?))"
NEWEST_FIRST = " ORDER BY created_us DESC, id DESC LIMIT ?"
