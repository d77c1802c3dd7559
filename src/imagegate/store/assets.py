"""Assets: blobs plus metadata and a per-owner index in SQLite.

Every read and write names the owner; an asset of another owner is reported exactly
like a missing one. `owner=None` is reserved for the download route (which has
already verified a signed link) and for admin callers.
"""

import base64
import binascii
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagegate.errors import InvalidRequest, NotFound, StorageError
from imagegate.ids import AssetId, Subject, is_asset_id, new_asset_id
from imagegate.images import ImageFormat, ImageInfo
from imagegate.store.blobs import BlobStore, StagedBlob
from imagegate.store.database import Database

DATABASE_FILE = "imagegate.sqlite3"

_SCHEMA = """
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


@dataclass(frozen=True)
class AssetMeta:
    """What the generation pipeline knows about an image besides its bytes."""

    relay: str
    prompt: str
    revised_prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Asset:
    id: AssetId
    owner: Subject
    sha256: str
    format: ImageFormat
    width: int
    height: int
    byte_size: int
    relay: str
    prompt: str
    revised_prompt: str | None
    params: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class Page:
    assets: list[Asset]
    next_cursor: str | None


class AssetStore:
    """The embedded store: local blob files and one SQLite database.

    Thread-safe: one connection behind a lock, so async callers may use worker threads.
    """

    def __init__(self, state_dir: Path, max_bytes: int) -> None:
        self.blobs = BlobStore(state_dir, max_bytes)
        self.blobs.sweep_stale_temp()
        self._db = Database(state_dir / DATABASE_FILE, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add(
        self, owner: Subject, staged: StagedBlob, info: ImageInfo, meta: AssetMeta, now: float
    ) -> Asset:
        """Commit a finished, inspected blob and record it as a new asset of `owner`."""
        asset = Asset(
            id=new_asset_id(),
            owner=owner,
            sha256=staged.sha256,
            format=info.format,
            width=info.width,
            height=info.height,
            byte_size=info.byte_size,
            relay=meta.relay,
            prompt=meta.prompt,
            revised_prompt=meta.revised_prompt,
            params=meta.params,
            created_at=now,
        )
        try:
            # Under the transaction lock, so a concurrent delete of the last asset
            # with the same content can't unlink the blob between rename and insert.
            with self._db.transaction() as db:
                self.blobs.commit(staged, info.format.extension)
                db.execute(
                    "INSERT INTO assets VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
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
                        int(now * 1_000_000),
                    ),
                )
        except sqlite3.Error as err:
            raise StorageError(f"could not record the image: {err}") from None
        return asset

    def get(self, owner: Subject | None, asset_id: AssetId) -> Asset:
        query = "SELECT * FROM assets WHERE id = ?"
        args: tuple[str, ...] = (asset_id,)
        if owner is not None:
            query += " AND owner = ?"
            args += (owner,)
        rows = self._db.read(query, args)
        row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"image not found: {asset_id}")
        return _asset_from_row(row)

    def list(self, owner: Subject | None, limit: int, cursor: str | None = None) -> Page:
        """The owner's assets (None: everyone's), newest first; `cursor` continues a page."""
        query = "SELECT * FROM assets WHERE 1 = 1"
        args: list[Any] = []
        if owner is not None:
            query += " AND owner = ?"  # keeps the (owner, created_us) index usable
            args.append(owner)
        if cursor:
            created_us, last_id = _decode_cursor(cursor)
            query += " AND (created_us < ? OR (created_us = ? AND id < ?))"
            args += [created_us, created_us, last_id]
        query += " ORDER BY created_us DESC, id DESC LIMIT ?"
        args.append(limit + 1)
        rows = self._db.read(query, args)
        assets = [_asset_from_row(row) for row in rows[:limit]]
        next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
        return Page(assets, next_cursor)

    def delete(self, owner: Subject | None, asset_id: AssetId) -> Asset:
        """Forget the asset; remove its blob when no other asset has the same bytes."""
        asset = self.get(owner, asset_id)
        with self._db.transaction() as db:
            db.execute("DELETE FROM assets WHERE id = ?", (asset.id,))
            (remaining,) = db.execute(
                "SELECT COUNT(*) FROM assets WHERE sha256 = ?", (asset.sha256,)
            ).fetchone()
            if remaining == 0:
                self.blobs.remove(asset.sha256, asset.format.extension)
        return asset

    def blob_path(self, asset: Asset) -> Path:
        return self.blobs.path_for(asset.sha256, asset.format.extension)

    def ready(self) -> bool:
        """True when the database answers and the blob directories are writable."""
        try:
            self._db.read("SELECT 1 FROM assets LIMIT 1")
        except sqlite3.Error:
            return False
        return self.blobs.writable()


def _asset_from_row(row: tuple[Any, ...]) -> Asset:
    (asset_id, owner, sha256, fmt, width, height, size, relay, prompt, revised, params, created) = (
        row
    )
    return Asset(
        id=AssetId(asset_id),
        owner=Subject(owner),
        sha256=sha256,
        format=ImageFormat(fmt),
        width=width,
        height=height,
        byte_size=size,
        relay=relay,
        prompt=prompt,
        revised_prompt=revised,
        params=json.loads(params),
        created_at=created / 1_000_000,
    )


def _encode_cursor(row: tuple[Any, ...]) -> str:
    raw = f"{row[11]}:{row[0]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, last_id = raw.split(":", 1)
        if not is_asset_id(last_id):
            raise ValueError(last_id)
        return int(created), last_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("invalid cursor; pass the next_cursor of a previous page") from None
