"""Assets: an index record plus content-addressed bytes, kept consistent.

Built on the Protocols only, so it works the same over every backend. Equal bytes are
stored once; deleting an asset removes its bytes when no other asset uses them, and the
index's `references` make that safe against a concurrent add of the same bytes.
"""

import builtins
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import anyio

from imagegate.core.errors import QuotaExceeded
from imagegate.core.ids import AssetId, Subject, new_asset_id
from imagegate.core.images import ImageInfo
from imagegate.core.staging import StagedBlob
from imagegate.storage.interfaces import (
    Asset,
    AssetIndex,
    AssetMeta,
    BlobKey,
    BlobReader,
    BlobStore,
    Page,
)

ORPHAN_BATCH = 500


class AssetStore:
    def __init__(self, index: AssetIndex, blobs: BlobStore) -> None:
        self._index = index
        self._blobs = blobs

    def stage(self) -> StagedBlob:
        return self._blobs.stage()

    async def add(
        self,
        owner: Subject,
        staged: StagedBlob,
        info: ImageInfo,
        meta: AssetMeta,
        now: float,
        max_owner_bytes: int | None = None,
        keep_until: float | None = None,
    ) -> Asset:
        """Commit a finished, inspected staging file as a new asset of `owner`, if the
        owner's assets stay within `max_owner_bytes` (checked while the references are
        held, so two adds can't both take the last room)."""
        if not staged.sha256:  # deferred (StagedBlob.defer_hash), and needed now
            await anyio.to_thread.run_sync(staged.hash_file)
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
            keep_until=keep_until,
        )
        # Shielded: a cancel between the bytes and their record would leave bytes no
        # asset uses, or (below) a record whose bytes are gone.
        with anyio.CancelScope(shield=True):
            await self._blobs.prepare(staged)  # its slow part, before the lock
            async with self._index.references(asset.blob) as references:
                await self._blobs.commit(staged, asset.blob)
                # After the bytes: the owner's room is held (across processes) only from
                # here to the record, not for a whole upload. The service checked it
                # before the generation began; this settles a race for the last room.
                if max_owner_bytes is not None:
                    held = await references.owned_bytes(owner)
                    if held + asset.byte_size > max_owner_bytes:
                        if await references.users() == 0:
                            await self._blobs.remove(asset.blob)
                        raise QuotaExceeded(
                            "max_stored_bytes",
                            f"{held} of {max_owner_bytes} bytes stored, {asset.byte_size} more",
                            None,
                            hint="delete images you no longer need (delete_image) to make room",
                        )
                await references.add(asset)
        return asset

    async def stored_bytes(self, owner: Subject) -> int:
        return await self._index.stored_bytes(owner)

    async def get(self, owner: Subject | None, asset_id: AssetId) -> Asset:
        """`owner` None: any owner's (admin, or a checked download link)."""
        return await self._index.get(owner, asset_id)

    async def list(self, owner: Subject | None, limit: int, cursor: str | None = None) -> Page:
        return await self._index.list(owner, limit, cursor)

    async def expired(
        self, now: float, unrecorded_before: float | None, limit: int
    ) -> Sequence[Asset]:
        return await self._index.expired(now, unrecorded_before, limit)

    def sweep_staging(self) -> int:
        return self._blobs.sweep_staging()

    async def collect_orphans(self, before: float) -> int:
        """Remove the bytes, written before that time, that no asset uses (a process
        that died between writing bytes and recording them); how many."""
        removed = 0
        batch: builtins.list[BlobKey] = []
        async for key in self._blobs.stored_before(before):
            batch.append(key)
            if len(batch) == ORPHAN_BATCH:
                removed += await self._remove_unused(batch)
                batch = []
        return removed + await self._remove_unused(batch)

    async def _remove_unused(self, keys: Sequence[BlobKey]) -> int:
        # A read first: only the few unused ones take their blob's lock (a write).
        used = await self._index.used([key.sha256 for key in keys])
        removed = 0
        for key in keys:
            if key.sha256 in used:
                continue
            with anyio.CancelScope(shield=True):
                async with self._index.references(key) as references:
                    if await references.users() == 0:  # still, now that it is held
                        await self._blobs.remove(key)
                        removed += 1
        return removed

    async def revoke_links(self, owner: Subject | None, asset_id: AssetId) -> Asset:
        return await self._index.revoke_links(owner, asset_id)

    async def delete(self, owner: Subject | None, asset_id: AssetId) -> Asset:
        """Forget the asset; remove its bytes when no other asset has the same ones."""
        asset = await self._index.get(owner, asset_id)
        with anyio.CancelScope(shield=True):
            async with self._index.references(asset.blob) as references:
                if await references.remove(asset) == 0:
                    await self._blobs.remove(asset.blob)
        return asset

    def open(self, asset: Asset) -> AbstractAsyncContextManager[BlobReader]:
        return self._blobs.open(asset.blob)

    def local_path(self, asset: Asset) -> Path | None:
        return self._blobs.local_path(asset.blob)

    async def presigned_url(self, asset: Asset, max_seconds: int) -> str | None:
        return await self._blobs.presigned_url(asset.blob, max_seconds)

    @asynccontextmanager
    async def as_file(self, asset: Asset) -> AsyncIterator[Path]:
        """The asset's bytes as a local file for work that needs one (Pillow, request
        bodies): the backend's own file where it keeps one, else a staged copy that is
        removed when the block ends."""
        path = self.local_path(asset)
        if path is not None:
            yield path
            return
        with self.stage() as staged:
            await copy_into(self._blobs, asset.blob, staged)
            try:
                yield staged.path
            finally:
                staged.discard()

    async def ready(self) -> bool:
        return await self._index.ready() and await self._blobs.ready()


async def copy_into(blobs: BlobStore, key: BlobKey, staged: StagedBlob) -> None:
    """Copy a blob into a staging file and finish it."""
    async with blobs.open(key) as reader:
        async for chunk in reader.chunks():
            await anyio.to_thread.run_sync(staged.write, chunk)
    staged.finish()
