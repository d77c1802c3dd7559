"""Assets, jobs and presets from their rows, by column name: the one reading for both
databases (an sqlite3.Row and an asyncpg.Record both answer `row["name"]`), so that a
column added by a migration is read the same way everywhere."""

import json
from typing import Any, Protocol

from imagegate.core.ids import AssetId, JobId, Subject
from imagegate.core.images import ImageFormat
from imagegate.storage.interfaces import Asset, Job, JobState, StoredPreset


class Row(Protocol):
    def __getitem__(self, key: str, /) -> Any: ...


def asset_from_row(row: Row) -> Asset:
    return Asset(
        id=AssetId(row["id"]),
        owner=Subject(row["owner"]),
        sha256=row["sha256"],
        format=ImageFormat(row["format"]),
        width=row["width"],
        height=row["height"],
        byte_size=row["byte_size"],
        relay=row["relay"],
        prompt=row["prompt"],
        revised_prompt=row["revised_prompt"],
        params=json.loads(row["params"]),
        created_at=row["created_us"] / 1_000_000,
        link_generation=row["link_generation"],
        keep_until=row["keep_until"],
    )


def job_from_row(row: Row) -> Job:
    return Job(
        id=JobId(row["id"]),
        owner=Subject(row["owner"]),
        tool=row["tool"],
        state=JobState(row["state"]),
        created_at=row["created_us"] / 1_000_000,
        updated_at=row["updated_us"] / 1_000_000,
        progress=row["progress"],
        message=row["message"],
        request=json.loads(row["request"]),
        outcome=None if row["outcome"] is None else json.loads(row["outcome"]),
        error=None if row["error"] is None else json.loads(row["error"]),
    )


def preset_from_row(row: Row) -> StoredPreset:
    return StoredPreset(
        owner=Subject(row["owner"]),
        name=row["name"],
        prompt=row["prompt"],
        negative_prompt=row["negative_prompt"],
        size=row["size"],
        quality=row["quality"],
        relay=row["relay"],
        description=row["description"],
        updated_at=row["updated"],
    )
