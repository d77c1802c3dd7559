"""The test S3 server behaves like S3 where our storage code relies on it.

obstore is not a project dependency yet, so these skip without it, as they do
without the server packages (`make test` installs those as root with apt).
"""

import asyncio
import hashlib
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

pytest.importorskip("obstore", reason="obstore is not installed (pip install obstore)")

import obstore
from obstore.exceptions import BaseError

from tests.services.s3 import S3Server, ServiceUnavailable, running_s3

BIG = 12 * 1024 * 1024


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    try:
        with running_s3(tmp_path_factory.mktemp("s3")) as server:
            yield server
    except ServiceUnavailable as missing:
        pytest.skip(str(missing))


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.make_bucket(name)
    return name


def tampered(url: str) -> str:
    # Edit the signature text only, so the rest of the URL keeps its exact encoding.
    head, signature = url.rsplit("X-Amz-Signature=", 1)
    value, sep, rest = signature.partition("&")
    flipped = ("0" if value[0] != "0" else "1") + value[1:]
    return f"{head}X-Amz-Signature={flipped}{sep}{rest}"


async def test_head_and_list_answer_for_readiness(s3: S3Server, bucket: str) -> None:
    store = s3.store(bucket)
    assert await obstore.list(store).collect_async() == []
    await obstore.put_async(store, "ready/probe.txt", b"ok")

    meta = await obstore.head_async(store, "ready/probe.txt")
    listed = await obstore.list(store, prefix="ready").collect_async()

    assert meta["size"] == 2
    assert [item["path"] for item in listed] == ["ready/probe.txt"]


async def test_large_file_round_trips_through_multipart(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    store = s3.store(bucket)
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(BIG))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()

    await obstore.put_async(store, "images/big.bin", source)
    meta = await obstore.head_async(store, "images/big.bin")
    result = await obstore.get_async(store, "images/big.bin")
    streamed = hashlib.sha256()
    chunks = 0
    async for chunk in result.stream(min_chunk_size=1024 * 1024):
        streamed.update(chunk)
        chunks += 1
    await obstore.delete_async(store, "images/big.bin")

    assert meta["size"] == BIG
    # An S3 multipart ETag ends in "-<parts>": 12 MB in 5 MB chunks is three parts.
    assert str(meta["e_tag"]).strip('"').endswith("-3")
    assert streamed.hexdigest() == digest
    assert chunks > 1
    with pytest.raises(FileNotFoundError):
        await obstore.head_async(store, "images/big.bin")


async def test_presigned_get_works_and_tampering_is_refused(s3: S3Server, bucket: str) -> None:
    store = s3.store(bucket)
    await obstore.put_async(store, "a b/photo.png", b"\x89PNG-data")
    url = await obstore.sign_async(store, "GET", "a b/photo.png", timedelta(minutes=5))

    async with httpx.AsyncClient() as client:
        good = await client.get(url)
        forged = await client.get(tampered(url))
        # Overrides added after signing are not covered by the signature.
        unsigned_override = await client.get(f"{url}&response-content-type=text%2Fplain")

    assert good.status_code == 200
    assert good.content == b"\x89PNG-data"
    assert forged.status_code == 403
    assert unsigned_override.status_code == 403


async def test_wrong_secret_is_refused(s3: S3Server, bucket: str) -> None:
    store = s3.store(bucket, secret_key="not-the-secret")

    with pytest.raises(BaseError, match=r"403 Forbidden"):
        await obstore.put_async(store, "x.txt", b"x")


async def test_expired_presigned_url_is_refused(s3: S3Server, bucket: str) -> None:
    store = s3.store(bucket)
    await obstore.put_async(store, "soon-gone.txt", b"x")
    url = await obstore.sign_async(store, "GET", "soon-gone.txt", timedelta(seconds=1))
    await asyncio.sleep(2.1)

    async with httpx.AsyncClient() as client:
        response = await client.get(url)

    assert response.status_code == 403


async def test_signed_response_overrides_are_honoured(s3: S3Server, bucket: str) -> None:
    store = s3.store(bucket)
    await obstore.put_async(store, "out/cat.png", b"png")
    url = s3.presign_get(
        bucket,
        "out/cat.png",
        query={
            # Not what was stored: obstore sends no Content-Type, so Swift says binary/octet-stream.
            "response-content-type": "application/x-override",
            "response-content-disposition": 'attachment; filename="cat.png"',
        },
    )

    async with httpx.AsyncClient() as client:
        response = await client.get(url)
        forged = await client.get(tampered(url))

    assert response.status_code == 200, response.text
    assert response.content == b"png"
    assert response.headers["content-type"] == "application/x-override"
    assert response.headers["content-disposition"] == 'attachment; filename="cat.png"'
    assert forged.status_code == 403
