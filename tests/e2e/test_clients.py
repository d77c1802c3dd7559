"""Other MCP clients in the field: the official SDK client and a handshake-era client."""

from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.e2e.harness import RunningServer, http_get


async def test_official_sdk_client(server: RunningServer) -> None:
    http_client = create_mcp_http_client(headers={"Authorization": f"Bearer {server.token}"})
    async with (
        http_client,
        streamable_http_client(server.mcp_url, http_client=http_client) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert {"generate_image", "list_images", "get_image", "delete_image"} <= tools
        result = await session.call_tool("generate_image", {"prompt": "sdk", "size": "64x64"})
    assert not result.is_error
    assert result.structured_content is not None
    url = result.structured_content["images"][0]["url"]
    response = await http_get(url)
    assert response.status_code == 200


async def test_handshake_era_client(server: RunningServer) -> None:
    async with server.client(mode="legacy") as client:
        assert client.protocol_version == "2025-11-25"
        result = await client.call_tool("generate_image", {"prompt": "legacy", "size": "64x64"})
    assert result.structured_content is not None
    response = await http_get(result.structured_content["images"][0]["url"])
    assert response.status_code == 200


async def test_modern_era_client(server: RunningServer) -> None:
    async with server.client() as client:
        assert client.protocol_version == "2026-07-28"
        result = await client.call_tool("list_images", {})
    assert result.structured_content is not None
    assert result.structured_content["images"] == []
    assert "next_cursor" not in result.structured_content
