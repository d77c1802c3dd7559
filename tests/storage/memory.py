"""A blob store that keeps bytes in memory and has no local files to hand out, as a
remote object store would be: it runs the contract suite on the paths that stream."""

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from imagegate.core.errors import NotFound
from imagegate.core.staging import StagedBlob
from imagegate.storage.interfaces import BlobKey

CHUNK = 1000


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self.size = len(data)

    async def chunks(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._data), CHUNK):
            yield self._data[start : start + CHUNK]


class MemoryBlobStore:
    def __init__(self, staging: Path, max_bytes: int, blobs: dict[BlobKey, bytes]) -> None:
        staging.mkdir(mode=0o700, exist_ok=True)
        self._staging = staging
        self._max_bytes = max_bytes
        self._blobs = blobs
        self._written: dict[BlobKey, float] = {}

    def stage(self) -> StagedBlob:
        return StagedBlob(self._staging, self._max_bytes)

    async def prepare(self, staged: StagedBlob) -> None:
        pass

    async def commit(self, staged: StagedBlob, key: BlobKey) -> None:
        try:
            self._blobs[key] = staged.path.read_bytes()
            self._written[key] = time.time()
        finally:
            staged.discard()

    async def remove(self, key: BlobKey) -> None:
        self._blobs.pop(key, None)

    @asynccontextmanager
    async def open(self, key: BlobKey) -> AsyncIterator[_Reader]:
        data = self._blobs.get(key)
        if data is None:
            raise NotFound(f"image bytes not found: {key}")
        yield _Reader(data)

    def local_path(self, key: BlobKey) -> None:
        return None

    async def presigned_url(self, key: BlobKey, max_seconds: int) -> None:
        return None

    def sweep_staging(self) -> int:
        return 0

    async def stored_before(self, before: float) -> AsyncIterator[BlobKey]:
        for key in list(self._blobs):
            if self._written.get(key, 0.0) < before:
                yield key

    async def ready(self) -> bool:
        return True
