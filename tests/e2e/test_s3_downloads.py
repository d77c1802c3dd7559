"""Images kept in a real S3 bucket (Swift with s3api, started by the tests): a link is
still imagegate's signed link, checked by imagegate, then either redirected to a
short-lived URL the bucket signs or streamed through, with the usual headers."""

import hashlib
import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import obstore
import pytest
from PIL import Image

from imagegate.core.errors import ConfigError
from imagegate.remote import download
from tests.conftest import ManualClock
from tests.e2e.harness import RunningServer, http_get, running_server
from tests.services.s3 import S3Server, shared_s3

KEY_ENV, SECRET_ENV = "TEST_BUCKET_KEY", "TEST_BUCKET_SECRET"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> S3Server:
    server = shared_s3()
    monkeypatch.setenv(KEY_ENV, server.access_key)
    monkeypatch.setenv(SECRET_ENV, server.secret_key)
    return server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = f"dl-{uuid.uuid4().hex[:12]}"
    s3.make_bucket(name)
    return name


def storage(s3: S3Server, bucket: str, **more: Any) -> dict[str, Any]:
    return {
        "kind": "s3",
        "endpoint": s3.endpoint,
        "bucket": bucket,
        "region": s3.region,
        "prefix": "team/",
        "access_key_env": KEY_ENV,
        "secret_key_env": SECRET_ENV,
        **more,
    }


async def http_put(url: str, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.put(url, content=body)


def objects(s3: S3Server, bucket: str) -> list[str]:
    return sorted(item["path"] for item in obstore.list(s3.store(bucket)).collect())


@pytest.fixture
async def redirecting(
    state_dir: Path, clock: ManualClock, s3: S3Server, bucket: str
) -> AsyncIterator[RunningServer]:
    async with running_server(state_dir, clock, storage=storage(s3, bucket)) as running:
        yield running


async def made(server: RunningServer) -> dict[str, Any]:
    async with server.client() as client:
        result = await client.call_tool("generate_image", {"prompt": "a bucket", "size": "64x64"})
    assert result.structured_content is not None
    image: dict[str, Any] = result.structured_content["images"][0]
    return image


async def test_a_link_redirects_to_the_bucket_after_imagegate_checks_it(
    redirecting: RunningServer, s3: S3Server, bucket: str
) -> None:
    image = await made(redirecting)
    [name] = objects(s3, bucket)
    assert name.startswith("team/")
    assert name.endswith(".png")

    moved = await http_get(image["url"])
    assert moved.status_code == 302
    assert moved.headers["cache-control"] == "no-store"
    location = moved.headers["location"]
    assert location.startswith(f"{s3.endpoint}/{bucket}/team/")
    assert "X-Amz-Signature=" in location
    assert "X-Amz-Expires=60" in location

    async with httpx.AsyncClient(follow_redirects=True) as client:
        fetched = await client.get(image["url"])
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/png"
    assert fetched.headers["content-disposition"].startswith('inline; filename="imagegate-')
    assert len(fetched.content) == image["bytes"]

    # imagegate's checks come first: a bad signature never reaches the bucket.
    forged = image["url"].replace("sig=", "sig=0")
    assert (await http_get(forged)).status_code == 403


async def test_head_is_answered_by_imagegate(redirecting: RunningServer) -> None:
    image = await made(redirecting)
    async with httpx.AsyncClient() as client:
        head = await client.head(image["url"])
    assert head.status_code == 200
    assert head.headers["content-length"] == str(image["bytes"])
    assert head.headers["x-content-type-options"] == "nosniff"


async def test_a_deleted_image_is_gone_from_the_bucket_and_its_link(
    redirecting: RunningServer, s3: S3Server, bucket: str
) -> None:
    image = await made(redirecting)
    async with redirecting.client() as client:
        await client.call_tool("delete_image", {"asset_id": image["asset_id"]})
    assert objects(s3, bucket) == []
    gone = await http_get(image["url"])
    assert gone.status_code == 404
    assert gone.text == "not found: this image was deleted\n"


async def test_proxy_mode_streams_with_the_same_headers_as_files(
    state_dir: Path, clock: ManualClock, s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    async with running_server(
        state_dir, clock, storage=storage(s3, bucket, serve="proxy")
    ) as proxied:
        image = await made(proxied)
        through = await http_get(image["url"])
    async with running_server(tmp_path / "files", clock) as files:
        local = await http_get((await made(files))["url"])
    assert through.status_code == 200
    assert len(through.content) == image["bytes"]
    same = ("content-type", "cache-control", "x-content-type-options", "content-security-policy")
    assert {h: through.headers[h] for h in same} == {h: local.headers[h] for h in same}
    assert through.headers["etag"] == f'"{hashlib.sha256(through.content).hexdigest()}"'
    assert through.headers["content-disposition"] == (
        f'inline; filename="imagegate-{image["asset_id"]}.png"'
    )


async def test_an_unreachable_bucket_is_not_ready_and_downloads_say_so(
    state_dir: Path, clock: ManualClock, s3: S3Server, bucket: str
) -> None:
    async with running_server(state_dir, clock, storage=storage(s3, bucket)) as running:
        image = await made(running)
        async with running.client() as client:
            linked = await client.call_tool(
                "create_download_link", {"asset_id": image["asset_id"], "width": 32}
            )
        assert linked.structured_content is not None
        view = linked.structured_content["images"][0]["url"]
        assert (await http_get(f"{running.base_url}/readyz")).status_code == 200
    nowhere = storage(s3, bucket, endpoint="http://127.0.0.1:1", serve="proxy")
    async with running_server(state_dir, clock, storage=nowhere) as broken:
        ready = await http_get(f"{broken.base_url}/readyz")
        assert ready.status_code == 503
        for url in (image["url"], view):
            down = await http_get(url.replace(running.base_url, broken.base_url))
            assert down.status_code == 503
            assert down.text == "unavailable: the image store can't be reached; try again\n"


async def test_the_remote_cli_follows_the_redirect(
    redirecting: RunningServer, tmp_path: Path
) -> None:
    image = await made(redirecting)
    [written] = await download([image], tmp_path, None)
    assert Path(written["path"]).stat().st_size == image["bytes"]


async def test_the_bucket_url_lasts_no_longer_than_the_link(redirecting: RunningServer) -> None:
    image = await made(redirecting)
    async with redirecting.client() as client:
        result = await client.call_tool(
            "create_download_link", {"asset_id": image["asset_id"], "ttl_seconds": 15}
        )
    assert result.structured_content is not None
    moved = await http_get(result.structured_content["images"][0]["url"])
    assert moved.status_code == 302
    assert "X-Amz-Expires=15&" in moved.headers["location"]


async def test_an_upload_the_bucket_refused_keeps_its_link(
    state_dir: Path, clock: ManualClock, s3: S3Server
) -> None:
    """The store was down, not the caller wrong: the same link works once it is back."""
    later = f"up-{uuid.uuid4().hex[:12]}"  # made only after the first try
    async with running_server(state_dir, clock, storage=storage(s3, later)) as running:
        async with running.client() as client:
            link = await client.call_tool("create_upload_link", {"filename": "a.png"})
        assert link.structured_content is not None
        url = link.structured_content["upload_url"]
        png = io.BytesIO()
        Image.new("RGB", (32, 32), "teal").save(png, format="PNG")
        refused = await http_put(url, png.getvalue())
        assert refused.status_code == 503
        assert refused.json()["error"] == (
            "unavailable: the image could not be stored; try again later with the same link"
        )
        s3.make_bucket(later)
        stored = await http_put(url, png.getvalue())
        assert stored.status_code == 201, stored.text
        assert (await http_put(url, png.getvalue())).status_code == 409


async def test_a_bucket_key_missing_from_the_environment_stops_the_start(
    state_dir: Path, clock: ManualClock, s3: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(ConfigError) as refused:
        async with running_server(state_dir, clock, storage=storage(s3, bucket)):
            pass
    assert str(refused.value) == (
        f"storage.secret_key_env: the environment variable {SECRET_ENV} is not set; it "
        "must hold the bucket's key"
    )
