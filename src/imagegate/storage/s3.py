"""Content-addressed blobs in an S3-compatible bucket, for replicas on several machines.

A blob is written to a local staging file first (hashed, size-capped, inspected),
then uploaded under `<prefix><aa>/<sha256>.<ext>`; obstore switches to a multipart
upload for large files. S3 makes an object visible only once its upload completes,
so a crash mid-upload leaves no half object under a real name (an unfinished
multipart upload is invisible; a bucket lifecycle rule ends it). The object carries
its Content-Type and a Content-Disposition, which S3 sends back on a presigned GET.

Which blobs are still used is the database's business (the index counts references
under a lock); this store only writes, reads and deletes what it is told.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from imagegate.core.errors import NotFound, StorageError
from imagegate.core.images import ImageFormat
from imagegate.core.staging import StagedBlob
from imagegate.storage.files import StagingArea
from imagegate.storage.interfaces import BlobKey

if TYPE_CHECKING:
    from obstore import BytesStream

CHUNK_BYTES = 1 << 16
_MIME = {fmt.extension: fmt.mime_type for fmt in ImageFormat}


class _ObjectReader:
    def __init__(self, stream: BytesStream, size: int) -> None:
        self._stream = stream
        self.size = size

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield bytes(chunk)
        except BaseError as err:
            raise StorageError(f"could not read image bytes: {_reason(err)}") from None


_STATUS = re.compile(r"status code: (\d{3} [A-Za-z ]+?):")
_CODE = re.compile(r"<Code>(\w+)</Code>")


def _reason(err: BaseException) -> str:
    """What failed, in a few words: the bucket's status and error code, never the
    request (its URL, the key id and the string it signed are in obstore's text)."""
    text = str(err)
    status = _STATUS.search(text)
    if status is not None:
        code = _CODE.search(text)
        return f"the bucket answered {status[1]}" + (f" ({code[1]})" if code else "")
    if "error sending request" in text or "kind: Connect" in text:
        return "the bucket could not be reached"
    return err.__class__.__name__


class S3BlobStore:
    def __init__(
        self,
        staging_root: Path,
        max_bytes: int,
        *,
        endpoint: str,
        bucket: str,
        region: str,
        prefix: str,
        access_key: str,
        secret_key: str,
        presign_seconds: int = 60,
    ) -> None:
        self.staging = StagingArea(staging_root, max_bytes)
        self._prefix = prefix
        self._presign = timedelta(seconds=presign_seconds)
        self._store = S3Store(
            bucket,
            endpoint=endpoint.rstrip("/"),
            region=region,
            access_key_id=access_key,
            secret_access_key=secret_key,
            # Path-style: works with every S3-compatible server and needs no DNS name
            # per bucket.
            virtual_hosted_style_request=False,
            client_options={
                "allow_http": endpoint.startswith("http://"),
                "connect_timeout": "5s",
                # The whole request, body included: a proxied download to a slow
                # client streams for as long as it reads.
                "timeout": "300s",
            },
            retry_config={
                "max_retries": 3,
                "retry_timeout": timedelta(seconds=20),
                "backoff": {"init_backoff": timedelta(milliseconds=100), "base": 2},
            },
        )

    def _name(self, key: BlobKey) -> str:
        # BlobKey validated both parts: the name holds no path of the caller's.
        return f"{self._prefix}{key.sha256[:2]}/{key}"

    def stage(self) -> StagedBlob:
        return self.staging.stage()

    async def prepare(self, staged: StagedBlob) -> None:
        """Nothing: the upload is the commit, and the file is never kept here."""

    async def commit(self, staged: StagedBlob, key: BlobKey) -> None:
        try:
            await obstore.put_async(
                self._store,
                self._name(key),
                staged.path,
                attributes={
                    "Content-Type": _MIME.get(key.extension, "application/octet-stream"),
                    "Content-Disposition": f'inline; filename="imagegate-{key.sha256[:16]}.'
                    f'{key.extension}"',
                },
            )
        except (BaseError, OSError, ValueError) as err:
            raise StorageError(f"could not store image: {_reason(err)}") from None
        finally:
            staged.discard()

    async def remove(self, key: BlobKey) -> None:
        try:
            await obstore.delete_async(self._store, self._name(key))
        except FileNotFoundError:
            return
        except (BaseError, ValueError) as err:
            raise StorageError(f"could not delete image bytes: {_reason(err)}") from None

    @asynccontextmanager
    async def open(self, key: BlobKey) -> AsyncIterator[_ObjectReader]:
        try:
            result = await obstore.get_async(self._store, self._name(key))
        except FileNotFoundError:
            raise NotFound(f"image bytes not found: {key}") from None
        except (BaseError, ValueError) as err:
            raise StorageError(f"could not read image bytes: {_reason(err)}") from None
        yield _ObjectReader(result.stream(min_chunk_size=CHUNK_BYTES), result.meta["size"])

    def local_path(self, key: BlobKey) -> Path | None:
        return None

    def sweep_staging(self) -> int:
        return self.staging.sweep_stale_temp()

    async def stored_before(self, before: float) -> AsyncIterator[BlobKey]:
        try:
            async for page in obstore.list(self._store, prefix=self._prefix or None):
                for item in page:
                    name = item["path"].rsplit("/", 1)[-1]
                    sha256, _, extension = name.partition(".")
                    if item["last_modified"].timestamp() >= before:
                        continue
                    try:
                        key = BlobKey(sha256, extension)
                    except StorageError:
                        continue  # an object this store did not write
                    yield key
        except (BaseError, ValueError) as err:
            raise StorageError(f"could not list the bucket: {_reason(err)}") from None

    async def presigned_url(self, key: BlobKey, max_seconds: int) -> str:
        """A short-lived URL that lets its holder GET the object straight from the bucket:
        for presign_seconds, or `max_seconds` if fewer (what is left of a link's life)."""
        lasts = min(self._presign, timedelta(seconds=max(1, max_seconds)))
        try:
            return await obstore.sign_async(self._store, "GET", self._name(key), lasts)
        except (BaseError, ValueError) as err:
            raise StorageError(f"could not sign a bucket URL: {_reason(err)}") from None

    async def ready(self) -> bool:
        if not self.staging.writable():
            return False
        try:
            await obstore.list_with_delimiter_async(self._store, self._prefix or None)
        except (BaseError, OSError, ValueError):
            return False
        return True
