"""Pulling a leaked link: revoke_links ends every link of an image made so far, over
real HTTP, without deleting the image; links made after it work."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp.exceptions import ToolError

from tests.conftest import ManualClock
from tests.e2e.harness import RunningServer, http_get, running_server, structured, team_files

SCOPES = '["images:generate", "images:read", "images:share", "images:delete", "relay:*"]'
ACL = (
    f'[subjects."token:alice"]\nscopes = {SCOPES}\n'
    f'[subjects."token:bob"]\nscopes = {SCOPES}\n'
    '[subjects."token:admin"]\nscopes = ["admin", "images:read", "images:share"]\n'
    '[subjects."token:viewer"]\nscopes = ["images:read", "images:generate", "relay:*"]\n'
)
TOKENS = {name: f"{name}-token-0123456789abcdef" for name in ("alice", "bob", "admin", "viewer")}


@pytest.fixture
async def server(
    state_dir: Path, clock: ManualClock, tmp_path: Path
) -> AsyncIterator[RunningServer]:
    files = team_files(tmp_path, ACL, TOKENS)
    async with running_server(state_dir, clock, **files) as running:
        yield running


async def call(server: RunningServer, who: str, tool: str, **arguments: Any) -> dict[str, Any]:
    return await structured(server, TOKENS[who], tool, **arguments)


async def link(server: RunningServer, who: str, asset_id: str, **view: Any) -> str:
    made = await call(server, who, "create_download_link", asset_id=asset_id, **view)
    url: str = made["images"][0]["url"]
    return url


REVOKED = (
    "gone: this link was revoked (revoke_links); ask the image's owner for a new one with "
    "create_download_link\n"
)


async def test_revoking_ends_the_links_made_so_far_and_only_those(server: RunningServer) -> None:
    (image,) = (await call(server, "alice", "generate_image", prompt="x", size="64x64"))["images"]
    first, view = image["url"], await link(server, "alice", image["asset_id"], width=32)
    assert (await http_get(first)).status_code == 200
    assert await call(server, "alice", "revoke_links", asset_id=image["asset_id"]) == {
        "revoked": image["asset_id"]
    }
    for old in (first, view):
        gone = await http_get(old)
        assert (gone.status_code, gone.text) == (410, REVOKED)
    fresh = await link(server, "alice", image["asset_id"])
    assert "&g=1&" in fresh
    assert (await http_get(fresh)).status_code == 200
    assert (
        await http_get(await link(server, "alice", image["asset_id"], width=32))
    ).status_code == 200
    # The generation is signed in: a link can't be moved past a revocation.
    assert (await http_get(first.replace("&sig=", "&g=1&sig="))).status_code == 403
    assert (await http_get(fresh.replace("&g=1&", "&g=2&"))).status_code == 403
    assert (await http_get(fresh.replace("&g=1&", "&g=01x&"))).status_code == 403
    # A second revocation ends the links of the first generation too.
    await call(server, "alice", "revoke_links", asset_id=image["asset_id"])
    assert (await http_get(fresh)).status_code == 410
    still = await call(server, "alice", "get_image", asset_id=image["asset_id"])
    assert still["images"][0]["asset_id"] == image["asset_id"]  # the image stays


async def test_only_the_owner_or_an_admin_revokes(server: RunningServer) -> None:
    (image,) = (await call(server, "alice", "generate_image", prompt="x", size="64x64"))["images"]
    with pytest.raises(ToolError, match=f"image not found: {image['asset_id']}"):
        await call(server, "bob", "revoke_links", asset_id=image["asset_id"])
    assert (await http_get(image["url"])).status_code == 200
    await call(server, "admin", "revoke_links", asset_id=image["asset_id"])
    assert (await http_get(image["url"])).status_code == 410


async def test_revoking_needs_the_share_scope(server: RunningServer) -> None:
    """Who may make links may end them; a caller without images:share may do neither."""
    (image,) = (await call(server, "viewer", "generate_image", prompt="x", size="64x64"))["images"]
    with pytest.raises(ToolError, match="forbidden: needs scope images:share"):
        await call(server, "viewer", "revoke_links", asset_id=image["asset_id"])
