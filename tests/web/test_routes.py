"""The download route over a store whose blobs are not local files: it streams them."""

import io
from collections.abc import AsyncIterator
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
from imagegate.relays.placeholder import PlaceholderRelay, PlaceholderRelayConfig
from imagegate.relays.registry import Relays
from imagegate.service.images import ImageService
from imagegate.service.inputs import InputResolver
from imagegate.service.links import LinkSigner
from imagegate.storage.assets import AssetStore
from imagegate.storage.interfaces import Asset, AssetMeta
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
    assets = AssetStore(storage.index, storage.blobs)
    settings = Settings(state_dir=state_dir)
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
