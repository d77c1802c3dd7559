"""What only the bucket store promises: objects named by content under the prefix,
large images uploaded in parts from their staging file, failures reported plainly and
without secrets. The contract suite covers the rest (tests/storage/backends.py)."""

import os
import uuid
from pathlib import Path

import obstore
import pytest

from imagegate.core.errors import NotFound, StorageError
from imagegate.storage.interfaces import BlobKey
from imagegate.storage.s3 import S3BlobStore
from tests.services.s3 import S3Server, shared_s3

BIG = 12 * 1024 * 1024


@pytest.fixture
def s3() -> S3Server:
    return shared_s3()


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = f"st-{uuid.uuid4().hex[:12]}"
    s3.make_bucket(name)
    return name


def blob_store(s3: S3Server, bucket: str, root: Path, **changed: str) -> S3BlobStore:
    options = {
        "endpoint": s3.endpoint,
        "bucket": bucket,
        "region": s3.region,
        "prefix": "p/q/",
        "access_key": s3.access_key,
        "secret_key": s3.secret_key,
        **changed,
    }
    return S3BlobStore(root, 30 * 1024 * 1024, **options)


async def test_a_large_blob_goes_up_in_parts_and_its_staging_file_goes(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    blobs = blob_store(s3, bucket, tmp_path)
    data = os.urandom(BIG)
    with blobs.stage() as staged:
        staged.write(data)
        staged.finish()
        key = BlobKey(staged.sha256, "png")
        await blobs.commit(staged, key)
    assert list(blobs.staging.directory.iterdir()) == []
    name = f"p/q/{key.sha256[:2]}/{key}"
    meta = await obstore.head_async(s3.store(bucket), name)
    assert str(meta["e_tag"]).strip('"').endswith("-3")  # three parts of 5 MiB at most
    async with blobs.open(key) as reader:
        assert reader.size == BIG
        assert b"".join([chunk async for chunk in reader.chunks()]) == data
    await blobs.remove(key)
    await blobs.remove(key)  # a missing blob is not an error
    with pytest.raises(NotFound):
        async with blobs.open(key):
            pass


async def test_a_refused_upload_is_a_storage_error_without_secrets(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    blobs = blob_store(s3, bucket, tmp_path, secret_key="not-the-secret-key")
    with blobs.stage() as staged:
        staged.write(b"bytes")
        staged.finish()
        with pytest.raises(StorageError) as refused:
            await blobs.commit(staged, BlobKey(staged.sha256, "png"))
    assert str(refused.value) == (
        "could not store image: the bucket answered 403 Forbidden (SignatureDoesNotMatch)"
    )
    assert list(blobs.staging.directory.iterdir()) == []
    assert not await blobs.ready()


async def test_an_unreachable_bucket_is_not_ready(tmp_path: Path, s3: S3Server) -> None:
    blobs = blob_store(s3, "nowhere", tmp_path, endpoint="http://127.0.0.1:1")
    assert not await blobs.ready()
    with pytest.raises(StorageError, match="could not read image bytes: "):
        async with blobs.open(BlobKey("a" * 64, "png")):
            pass


async def test_only_an_existing_bucket_is_ready(tmp_path: Path, s3: S3Server, bucket: str) -> None:
    assert not await blob_store(s3, "never-made", tmp_path).ready()
    assert await blob_store(s3, bucket, tmp_path).ready()
