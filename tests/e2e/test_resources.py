"""Images as MCP resources over real HTTP, with the fastmcp client and the official
MCP SDK clients: read what a tool returned, list one's own in pages, and nothing of
anyone else's."""

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import mcp_types
import pytest
from fastmcp import Client
from fastmcp.client.auth import BearerAuth
from mcp.client.client import Client as SdkClient
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from tests.conftest import ManualClock
from tests.e2e.harness import RunningServer, running_server, team_files

TOKENS = {
    "alice": "alice-token-0123456789abcdefghijkl",
    "bob": "bob-token-0123456789abcdefghijklmn",
    "carol": "carol-token-0123456789abcdefghijkl",
}
ACL = """
[subjects."token:alice"]
scopes = ["images:generate", "images:read", "relay:*"]
[subjects."token:bob"]
scopes = ["images:generate", "images:read", "relay:*"]
[subjects."token:carol"]
scopes = ["images:generate", "relay:*"]
"""


@pytest.fixture
async def server(
    state_dir: Path, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[RunningServer]:
    async with running_server(
        state_dir, clock, max_page_size=3, **team_files(tmp_path, ACL, TOKENS)
    ) as running:
        yield running


async def generate(server: RunningServer, who: str, n: int = 1) -> list[dict[str, Any]]:
    async with server.client(TOKENS[who]) as client:
        result = await client.call_tool("generate_image", {"prompt": who, "size": "64x64", "n": n})
    assert result.structured_content is not None
    images: list[dict[str, Any]] = result.structured_content["images"]
    return images


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_returned_resource_link_reads_as_the_image(
    server: RunningServer, mode: str
) -> None:
    async with Client(server.mcp_url, auth=BearerAuth(TOKENS["alice"]), mode=mode) as client:
        result = await client.call_tool("generate_image", {"prompt": "x", "size": "96x64"})
        (link,) = [b for b in result.content if isinstance(b, mcp_types.ResourceLink)]
        (content,) = await client.read_resource(link.uri)
        templates = await client.list_resource_templates()
    assert isinstance(content, mcp_types.BlobResourceContents)
    assert content.mime_type == "image/png"
    image = result.structured_content["images"][0]  # type: ignore[index]
    async with httpx.AsyncClient() as http:
        assert base64.b64decode(content.blob) == (await http.get(image["url"])).content
    assert sorted(t.uri_template for t in templates) == [
        "image://{asset_id}",
        "image://{asset_id}/view{?width,height,fit,format,quality}",
    ]


async def test_the_list_is_ones_own_newest_first_in_pages(
    server: RunningServer, clock: ManualClock
) -> None:
    made = []
    for _ in range(7):
        made += await generate(server, "alice")
        clock.advance(1)
    theirs = await generate(server, "bob")
    async with Client(server.mcp_url, auth=BearerAuth(TOKENS["alice"])) as client:
        pages = []
        cursor = None
        while True:
            page = await client.list_resources_mcp(cursor=cursor)
            pages.append([str(r.uri) for r in page.resources])
            cursor = page.next_cursor
            if cursor is None:
                break
    assert [len(page) for page in pages] == [3, 3, 1]
    listed = [uri for page in pages for uri in page]
    assert set(listed) == {f"image://{i['asset_id']}" for i in made}
    assert f"image://{theirs[0]['asset_id']}" not in listed
    assert listed == [f"image://{i['asset_id']}" for i in reversed(made)]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_another_owners_image_reads_as_unknown(server: RunningServer, mode: str) -> None:
    (alices,) = await generate(server, "alice")
    errors = []
    async with Client(server.mcp_url, auth=BearerAuth(TOKENS["bob"]), mode=mode) as client:
        for uri in (f"image://{alices['asset_id']}", "image://img_" + "0" * 24, "image://x"):
            with pytest.raises(Exception, match=r"(?i)not found") as refused:
                await client.read_resource(uri)
            errors.append(str(refused.value).replace(uri, "URI"))
    assert len(set(errors)) == 1
    assert "not found" in errors[0].lower()


async def test_without_images_read_nothing_is_listed_or_read(server: RunningServer) -> None:
    (own,) = await generate(server, "carol")
    async with Client(server.mcp_url, auth=BearerAuth(TOKENS["carol"])) as client:
        assert await client.list_resources() == []
        with pytest.raises(Exception, match=r"(?i)not found"):
            await client.read_resource(f"image://{own['asset_id']}")


async def test_the_official_sdk_clients_list_and_read(
    server: RunningServer, clock: ManualClock
) -> None:
    made = await generate(server, "bob")
    clock.advance(1)
    made += await generate(server, "bob")
    headers = {"Authorization": f"Bearer {TOKENS['bob']}"}
    http = create_mcp_http_client(headers=headers)
    async with (
        http,
        streamable_http_client(server.mcp_url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        init = await session.initialize()
        assert init.capabilities.resources is not None
        listed = await session.list_resources()
        read = await session.read_resource(listed.resources[0].uri)
    assert [str(r.uri) for r in listed.resources] == [
        f"image://{i['asset_id']}" for i in reversed(made)
    ]
    assert read.contents[0].mime_type == "image/png"

    http = create_mcp_http_client(headers=headers)
    async with http, SdkClient(streamable_http_client(server.mcp_url, http_client=http)) as sdk:
        modern = await sdk.list_resources()
        with pytest.raises(MCPError) as refused:
            await sdk.read_resource("image://img_" + "1" * 24)
    assert [str(r.uri) for r in modern.resources] == [str(r.uri) for r in listed.resources]
    assert refused.value.error.code == mcp_types.INVALID_PARAMS


async def test_a_bad_cursor_is_a_clear_error(server: RunningServer) -> None:
    async with Client(server.mcp_url, auth=BearerAuth(TOKENS["alice"])) as client:
        with pytest.raises(Exception, match="invalid cursor"):
            await client.list_resources_mcp(cursor="bm90LWEtY3Vyc29y")
