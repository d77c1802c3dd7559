"""Views over real HTTP: a resized or converted copy through image://{id}/view and
through a signed download link, within the caps, from the cache the second time."""

import base64
import io
from typing import Any

import httpx
import mcp_types
import pytest
from PIL import Image

from tests.e2e.harness import RunningServer


async def made(server: RunningServer, size: str = "640x480") -> dict[str, Any]:
    async with server.client() as client:
        result = await client.call_tool("generate_image", {"prompt": "a view", "size": size})
    assert result.structured_content is not None
    image: dict[str, Any] = result.structured_content["images"][0]
    return image


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


async def test_a_resource_view_is_the_size_and_format_asked_and_cached(
    server: RunningServer,
) -> None:
    image = await made(server)
    views = server.app.service.views
    uri = f"image://{image['asset_id']}/view?width=160&format=webp&quality=70"
    async with server.client() as client:
        (first,) = await client.read_resource(uri)
        misses = views.misses
        (again,) = await client.read_resource(uri)
        from_cache = views.misses == misses
        (cover,) = await client.read_resource(
            f"image://{image['asset_id']}/view?width=100&height=100&fit=cover"
        )
    assert isinstance(first, mcp_types.BlobResourceContents)
    assert first.mime_type == "image/webp"
    picture = decoded(base64.b64decode(first.blob))
    assert (picture.format, picture.size) == ("WEBP", (160, 120))
    assert isinstance(again, mcp_types.BlobResourceContents)
    assert again.blob == first.blob
    assert from_cache  # the second read came from the cache
    assert isinstance(cover, mcp_types.BlobResourceContents)
    assert decoded(base64.b64decode(cover.blob)).size == (100, 100)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("width=5000", "width must be between 1 and 4096"),
        ("format=gif", "format must be png, jpeg or webp"),
        ("fit=stretch&width=10&height=10", "fit must be one of"),
        ("width=ten", "width must be a whole number"),
    ],
)
async def test_a_view_out_of_range_is_a_clear_error(
    server: RunningServer, query: str, message: str
) -> None:
    image = await made(server, "64x64")
    async with server.client() as client:
        with pytest.raises(Exception, match=message):
            await client.read_resource(f"image://{image['asset_id']}/view?{query}")


async def test_a_download_link_to_a_view(server: RunningServer) -> None:
    image = await made(server)
    async with server.client() as client:
        result = await client.call_tool(
            "create_download_link",
            {"asset_id": image["asset_id"], "width": 128, "format": "webp"},
        )
    assert result.structured_content is not None
    url = result.structured_content["images"][0]["url"]
    assert ".webp?" in url
    assert "width=128" in url
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
        tampered = await http.get(url.replace("width=128", "width=640"))
        cached = await http.get(url, headers={"If-None-Match": response.headers["etag"]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/webp"
    assert decoded(response.content).size == (128, 96)
    assert tampered.status_code == 403
    assert cached.status_code == 304


async def test_thumbnails_are_views(server: RunningServer) -> None:
    views = server.app.service.views
    before = views.misses + views.hits
    async with server.client() as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "thumb", "size": "512x256", "thumbnail": True}
        )
    (thumb,) = [block for block in result.content if isinstance(block, mcp_types.ImageContent)]
    assert decoded(base64.b64decode(thumb.data)).size == (256, 128)
    assert views.misses + views.hits == before + 1
