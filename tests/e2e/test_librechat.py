"""LibreChat, one tenant per user: LibreChat forwards each logged-in user's own OpenID
access token (`Bearer {{LIBRECHAT_OPENID_ACCESS_TOKEN}}`), and imagegate accepts it only
when the provider put imagegate's audience in it, beside LibreChat's."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from imagegate.config import OIDCSettings
from imagegate.relays.placeholder import PlaceholderRelayConfig
from tests.e2e.harness import RunningServer, http_post, running_server, structured
from tests.e2e.idp import AUDIENCE, LIBRECHAT, LIBRECHAT_ALONE, Provider


@pytest.fixture
async def server(tmp_path: Path, provider: Provider) -> AsyncIterator[RunningServer]:
    settings: dict[str, Any] = {
        "oidc": OIDCSettings(issuer=provider.issuer, audience=AUDIENCE),
        "acl_open": True,
        "relays": {"placeholder": PlaceholderRelayConfig(kind="placeholder")},
        "default_relay": "placeholder",
    }
    async with running_server(tmp_path / "state", **settings) as running:
        yield running


async def initialize(server: RunningServer, token: str) -> Any:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "LibreChat", "version": "1"},
        },
    }
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    return await http_post(server.mcp_url, json=body, headers=headers)


async def test_each_librechat_user_is_a_tenant_of_their_own(
    server: RunningServer, provider: Provider
) -> None:
    alice = provider.user_token("alice", LIBRECHAT)  # aud: imagegate's and LibreChat's
    dave = provider.user_token("dave", LIBRECHAT)
    assert (await structured(server, alice, "server_info"))["subject"] == "oidc:alice"
    assert (await structured(server, dave, "server_info"))["subject"] == "oidc:dave"
    made = await structured(server, alice, "generate_image", prompt="a fox", size="64x64")
    mine = (await structured(server, alice, "list_images"))["images"]
    theirs = (await structured(server, dave, "list_images"))["images"]
    assert [i["asset_id"] for i in mine] == [made["images"][0]["asset_id"]]
    assert theirs == []


async def test_a_token_for_librechat_alone_is_refused(
    server: RunningServer, provider: Provider
) -> None:
    token = provider.user_token("alice", LIBRECHAT_ALONE)  # aud: LibreChat's only
    response = await initialize(server, token)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert (await initialize(server, provider.user_token("alice", LIBRECHAT))).status_code == 200


@pytest.mark.parametrize("header", ["X-User-ID", "X-User-Email", "X-Forwarded-User"])
async def test_a_header_naming_a_user_changes_nothing(
    server: RunningServer, provider: Provider, header: str
) -> None:
    """Anyone who can reach the server could send such a header: only the token counts."""
    dave = provider.user_token("dave", LIBRECHAT)
    transport = StreamableHttpTransport(server.mcp_url, headers={header: "alice"}, auth=dave)
    async with Client(transport) as client:
        info = (await client.call_tool("server_info", {})).structured_content
    assert info is not None
    assert info["subject"] == "oidc:dave"
    response = await http_post(
        server.mcp_url,
        json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
        headers={header: "alice", "Accept": "application/json, text/event-stream"},
    )
    assert response.status_code == 401
