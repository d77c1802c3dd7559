"""The download route over a store whose blobs are not local files: it streams them;
and over blob files with `accel_redirect`: it names them to nginx."""

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.routing import Route

from imagegate.access.identity import Identity
from imagegate.access.policy import Caller
from imagegate.config import Settings
from imagegate.core.ids import Subject
from imagegate.core.images import inspect_image
from imagegate.core.views import View
from imagegate.relays.placeholder import PlaceholderRelay, PlaceholderRelayConfig
from imagegate.relays.registry import Relays
from imagegate.service.images import ImageService
from imagegate.service.inputs import InputResolver
from imagegate.service.links import LinkSigner
from imagegate.storage.assets import AssetStore
from imagegate.storage.embedded import open_embedded
from imagegate.storage.interfaces import Asset, AssetMeta, Storage
from imagegate.web.routes import Routes
from tests.conftest import ManualClock
from tests.storage.backends import sqlite_with_memory_blobs

ALICE = Caller(Identity(Subject("oidc:alice")), frozenset({"*"}))


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (300, 200), "navy").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
async def served(
    state_dir: Path, clock: ManualClock
) -> AsyncIterator[tuple[httpx.AsyncClient, ImageService]]:
    storage = sqlite_with_memory_blobs(state_dir)
    async with serving(storage, Settings(state_dir=state_dir), clock) as client_and_service:
        yield client_and_service


ACCEL = "/_imagegate_blobs/"


@pytest.fixture
async def accelerated(
    state_dir: Path, clock: ManualClock
) -> AsyncIterator[tuple[httpx.AsyncClient, ImageService]]:
    """Blob files, and nginx (at public_url) to send them."""
    settings = Settings(
        state_dir=state_dir,
        public_url="https://images.example.com",
        storage={"accel_redirect": ACCEL},
    )
    state_dir.mkdir(mode=0o700)
    storage = open_embedded(state_dir, 10**7)
    async with serving(storage, settings, clock) as client_and_service:
        yield client_and_service


@asynccontextmanager
async def serving(
    storage: Storage, settings: Settings, clock: ManualClock
) -> AsyncIterator[tuple[httpx.AsyncClient, ImageService]]:
    assets = AssetStore(storage.index, storage.blobs)
    relay = PlaceholderRelay("placeholder", PlaceholderRelayConfig(kind="placeholder"))
    inputs = InputResolver(assets, max_bytes=10**7, max_pixels=10**7, input_root=None, local=False)
    signer = LinkSigner(b"k" * 32, "http://imagegate.test")
    relays = Relays({"placeholder": relay}, "placeholder")
    service = ImageService(
        settings, assets, storage.quotas, storage.nonces, relays, signer, clock, inputs
    )
    routes = Routes(service, signer, clock)
    app = Starlette(
        routes=[Route(path, handler, methods=methods) for path, methods, handler in routes.table()]
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://imagegate.test") as client:
        yield client, service
    await storage.aclose()


async def stored(service: ImageService) -> Asset:
    with service.assets.stage() as staged:
        staged.write(png())
        staged.finish()
        info = inspect_image(staged.path, max_bytes=10**7, max_pixels=10**7)
        meta = AssetMeta(relay="placeholder", prompt="p")
        return await service.assets.add(ALICE.subject, staged, info, meta, 1.0)


async def test_a_blob_without_a_local_file_is_streamed(
    served: tuple[httpx.AsyncClient, ImageService],
) -> None:
    client, service = served
    asset = await stored(service)
    assert service.assets.local_path(asset) is None
    url = service.publish(asset).url
    response = await client.get(url)
    assert response.status_code == 200
    assert response.content == png()
    assert response.headers["content-length"] == str(len(png()))
    assert response.headers["content-type"] == "image/png"
    assert response.headers["etag"] == f'"{asset.sha256}"'
    assert response.headers["x-content-type-options"] == "nosniff"
    cached = await client.get(url, headers={"if-none-match": f'"{asset.sha256}"'})
    assert cached.status_code == 304


async def test_missing_bytes_are_a_404_before_any_byte(
    served: tuple[httpx.AsyncClient, ImageService], state_dir: Path
) -> None:
    client, service = served
    asset = await stored(service)
    url = service.publish(asset).url
    # The record stays, the bytes go: the store is opened before the status line.
    other_handle = sqlite_with_memory_blobs(state_dir)
    await other_handle.blobs.remove(asset.blob)
    await other_handle.aclose()
    response = await client.get(url)
    assert response.status_code == 404
    assert "deleted" in response.text
    await service.delete(ALICE, asset.id)
    assert (await client.get(url)).status_code == 404


async def test_a_blob_file_is_named_to_nginx_once_every_check_passed(
    accelerated: tuple[httpx.AsyncClient, ImageService], state_dir: Path
) -> None:
    client, service = accelerated
    asset = await stored(service)
    url = service.publish(asset).url
    sha256 = asset.sha256
    for method, extra in (("GET", {}), ("HEAD", {}), ("GET", {"range": "bytes=0-9"})):
        response = await client.request(method, url, headers=extra)
        assert response.status_code == 200, method  # ranges are nginx's to serve
        assert response.content == b""
        assert response.headers["content-length"] == "0"
        assert response.headers["x-accel-redirect"] == f"{ACCEL}{sha256[:2]}/{sha256}.png"
        assert response.headers["content-type"] == "image/png"
        assert response.headers["content-disposition"] == (
            f'inline; filename="imagegate-{asset.id}.png"'
        )
        assert response.headers["cache-control"] == "private, max-age=3600"
        assert response.headers["etag"] == f'"{sha256}"'
        assert response.headers["x-content-type-options"] == "nosniff"
    # The name is the file below the blob folder that nginx's location maps the prefix to.
    named = response.headers["x-accel-redirect"].removeprefix(ACCEL)
    assert (state_dir / "blobs" / named).read_bytes() == png()
    assert (await client.get(url, headers={"if-none-match": f'"{sha256}"'})).status_code == 304


async def test_nothing_is_named_to_nginx_for_a_refused_link_or_a_view(
    accelerated: tuple[httpx.AsyncClient, ImageService], clock: ManualClock
) -> None:
    client, service = accelerated
    asset = await stored(service)
    url = service.publish(asset).url
    view = await client.get(service.publish(asset, view=View(30, None, "contain", None)).url)
    assert view.status_code == 200
    assert Image.open(io.BytesIO(view.content)).size == (30, 20)  # rendered in memory
    assert "x-accel-redirect" not in view.headers

    refused = [await client.get(url[:-1] + ("A" if url[-1] != "A" else "B"))]
    await service.revoke_links(ALICE, asset.id)
    refused.append(await client.get(url))
    fresh = service.publish(await service.assets.get(None, asset.id)).url
    clock.advance(3600)
    refused.append(await client.get(fresh))
    clock.advance(-3600)
    assert "x-accel-redirect" in (await client.get(fresh)).headers
    await service.delete(ALICE, asset.id)
    refused.append(await client.get(fresh))
    assert [response.status_code for response in refused] == [403, 410, 410, 404]
    assert not any("x-accel-redirect" in response.headers for response in refused)
