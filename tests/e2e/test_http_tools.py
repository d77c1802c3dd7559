"""The MCP tools over real streamable HTTP, as a client sees them."""

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastmcp.exceptions import ToolError
from mcp_types import ImageContent, ResourceLink, TextContent
from PIL import Image

from imagegate.relays.placeholder import PlaceholderRelayConfig
from tests.conftest import ManualClock
from tests.e2e.harness import RunningServer, http_get, http_post, running_server
from tests.fakes.upstream import png_bytes


async def generate(server: RunningServer, **arguments: Any) -> dict[str, Any]:
    async with server.client() as client:
        result = await client.call_tool("generate_image", arguments)
    assert not result.is_error
    assert result.structured_content is not None
    return result.structured_content


async def test_generate_image_returns_everything_a_client_needs(server: RunningServer) -> None:
    async with server.client() as client:
        result = await client.call_tool(
            "generate_image",
            {"prompt": "a lighthouse at dusk", "size": "640x480", "output_format": "webp"},
        )
    data = result.structured_content
    assert data is not None
    (image,) = data["images"]
    assert re.fullmatch(r"img_[0-9a-f]{24}", image["asset_id"])
    assert (image["width"], image["height"]) == (640, 480)
    assert image["mime_type"] == "image/webp"
    assert image["relay"] == "placeholder"
    assert image["expires_at"].endswith("Z")
    assert image["url"].startswith(f"{server.base_url}/files/{image['asset_id']}.webp?")
    assert image["bytes"] > 0
    assert image["params"]["requested_size"] == "640x480"
    # Compact: what is unknown is left out, not sent as null.
    assert "revised_prompt" not in image
    assert "path" not in image
    assert None not in data.values()
    assert "failures" not in data
    # The text is a fallback for clients without structured content: the link once.
    (text,) = [block.text for block in result.content if isinstance(block, TextContent)]
    assert text.count(image["url"]) == 1
    assert f"![a lighthouse at dusk]({image['url']})" in text
    assert not any(isinstance(block, ImageContent) for block in result.content)
    # And a resource link the client can read (mcp.resources).
    (link,) = [block for block in result.content if isinstance(block, ResourceLink)]
    assert (str(link.uri), link.mime_type) == (f"image://{image['asset_id']}", "image/webp")

    download = await http_get(image["url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/webp"
    assert int(download.headers["content-length"]) == image["bytes"] == len(download.content)
    with Image.open(io.BytesIO(download.content)) as picture:
        assert picture.format == "WEBP"
        assert picture.size == (640, 480)


async def test_download_headers_are_safe(server: RunningServer) -> None:
    (image,) = (await generate(server, prompt="headers", size="128x128"))["images"]
    response = await http_get(image["url"])
    assert response.headers["cache-control"].startswith("private")
    assert response.headers["etag"].startswith('"')
    assert len(response.headers["etag"]) == 66
    assert response.headers["content-disposition"] == (
        f'inline; filename="imagegate-{image["asset_id"]}.png"'
    )
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    again = await http_get(image["url"], headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


async def test_thumbnail_is_inlined_only_when_asked(server: RunningServer) -> None:
    async with server.client() as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "thumb", "size": "1024x512", "thumbnail": True}
        )
    (thumb,) = [block for block in result.content if isinstance(block, ImageContent)]
    with Image.open(io.BytesIO(base64.b64decode(thumb.data))) as picture:
        assert max(picture.size) == server.settings.thumbnail_px
        assert picture.size == (256, 128)


async def test_several_images_in_one_call(server: RunningServer) -> None:
    data = await generate(server, prompt="four of them", n=3, size="96x96", seed=10)
    images = data["images"]
    assert len(images) == 3
    assert len({image["asset_id"] for image in images}) == 3
    assert [image["params"]["seed"] for image in images] == [10, 11, 12]
    bodies = [(await http_get(image["url"])).content for image in images]
    assert len(set(bodies)) == 3


async def test_same_seed_gives_same_bytes(server: RunningServer) -> None:
    first = (await generate(server, prompt="repeatable", size="200x100", seed=42))["images"][0]
    second = (await generate(server, prompt="repeatable", size="200x100", seed=42))["images"][0]
    assert first["asset_id"] != second["asset_id"]
    assert (await http_get(first["url"])).content == (await http_get(second["url"])).content


async def test_progress_notifications_arrive(server: RunningServer) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with server.client(progress_handler=on_progress) as client:
        await client.call_tool("generate_image", {"prompt": "progress", "size": "64x64", "n": 2})
    messages = [message or "" for _, _, message in seen]
    assert any(m.startswith("drawing image 2 of 2") for m in messages)
    assert seen[-1][0] == 100
    assert all(re.search(r"\(\d+\.\ds\)$", m) for m in messages)


async def test_progress_only_goes_forward(tmp_path: Path) -> None:
    """MCP wants every progress value above the one before: through a simulated delay
    (0 to 50 %), the drawing of each image, a batch of edits, and the end."""
    relays = {"slow": PlaceholderRelayConfig(kind="placeholder", delay_seconds=0.6)}
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with (
        running_server(tmp_path / "state", relays=relays) as server,
        server.client(progress_handler=on_progress) as client,
    ):
        await client.call_tool("generate_image", {"prompt": "wait", "size": "64x64", "n": 2})
        assert len(seen) > 3
        assert seen == sorted(set(seen)), seen
        assert seen[-1] == 100
        seen.clear()
        image = "data:image/png;base64," + base64.b64encode(png_bytes((64, 64))).decode()
        await client.call_tool(
            "edit_image", {"prompt": "each", "images": [image] * 3, "batch": True}
        )
        assert len(seen) > 6
        assert seen == sorted(set(seen)), seen


async def test_list_images_newest_first_and_paginated(
    server: RunningServer, clock: ManualClock
) -> None:
    made = []
    for index in range(5):
        made.append((await generate(server, prompt=f"number {index}", size="64x64"))["images"][0])
        clock.advance(1)
    async with server.client() as client:
        first = (await client.call_tool("list_images", {"limit": 2})).structured_content
        assert first is not None
        second = (
            await client.call_tool("list_images", {"limit": 2, "cursor": first["next_cursor"]})
        ).structured_content
        assert second is not None
        third = (
            await client.call_tool("list_images", {"limit": 2, "cursor": second["next_cursor"]})
        ).structured_content
        assert third is not None
    listed = [image["asset_id"] for page in (first, second, third) for image in page["images"]]
    assert listed == [image["asset_id"] for image in reversed(made)]
    assert "next_cursor" not in third
    assert first["images"][0]["prompt"] == "number 4"
    assert "url" not in first["images"][0]  # listings carry no links


async def test_get_image_gives_a_fresh_working_link(
    server: RunningServer, clock: ManualClock
) -> None:
    (image,) = (await generate(server, prompt="fresh", size="64x64"))["images"]
    clock.advance(3000)
    async with server.client() as client:
        result = await client.call_tool("get_image", {"asset_id": image["asset_id"]})
    assert result.structured_content is not None
    (again,) = result.structured_content["images"]
    assert again["url"] != image["url"]
    assert again["expires_at"] > image["expires_at"]
    assert (await http_get(again["url"])).status_code == 200


async def test_link_expires_with_410(server: RunningServer, clock: ManualClock) -> None:
    (image,) = (await generate(server, prompt="short-lived", size="64x64"))["images"]
    async with server.client() as client:
        result = await client.call_tool(
            "create_download_link", {"asset_id": image["asset_id"], "ttl_seconds": 60}
        )
    assert result.structured_content is not None
    url = result.structured_content["images"][0]["url"]
    clock.advance(59)
    assert (await http_get(url)).status_code == 200
    clock.advance(1)
    gone = await http_get(url)
    assert gone.status_code == 410
    assert "expired" in gone.text
    assert "create_download_link" in gone.text


async def test_link_ttl_is_capped(server: RunningServer) -> None:
    (image,) = (await generate(server, prompt="ttl", size="64x64"))["images"]
    maximum = server.settings.link_ttl_max_seconds
    async with server.client() as client:
        ok = await client.call_tool(
            "create_download_link", {"asset_id": image["asset_id"], "ttl_seconds": maximum}
        )
        assert ok.structured_content is not None
        with pytest.raises(ToolError, match=f"ttl_seconds must be between 1 and {maximum}"):
            await client.call_tool(
                "create_download_link", {"asset_id": image["asset_id"], "ttl_seconds": maximum + 1}
            )


def _other_last_digit(match: re.Match[str]) -> str:
    return f"img_{match[1]}{'0' if match[2] != '0' else '1'}"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url: url.replace("exp=", "exp=9"),
        lambda url: url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB"),
        lambda url: re.sub(r"img_([0-9a-f]{23})([0-9a-f])", _other_last_digit, url),
        lambda url: url.split("&sig=")[0],
        lambda url: url.split("?")[0],
        lambda url: re.sub(r"exp=[0-9]+", "exp=%C2%B2", url),
    ],
    ids=["expiry", "signature", "asset-id", "no-signature", "no-query", "unicode-digit"],
)
async def test_tampered_link_is_403(server: RunningServer, tamper: Any) -> None:
    (image,) = (await generate(server, prompt="tamper", size="64x64"))["images"]
    response = await http_get(tamper(image["url"]))
    assert response.status_code == 403
    assert "not valid" in response.text
    assert "image/" not in response.headers["content-type"]


async def test_a_link_with_another_extension_says_so(server: RunningServer) -> None:
    (image,) = (await generate(server, prompt="ext", size="64x64"))["images"]
    response = await http_get(image["url"].replace(".png?", ".jpg?"))
    assert response.status_code == 404
    assert "another file type" in response.text
    assert "deleted" not in response.text


async def test_delete_removes_image_and_its_links(server: RunningServer) -> None:
    (image,) = (await generate(server, prompt="to delete", size="64x64"))["images"]
    asset_id = image["asset_id"]
    async with server.client() as client:
        deleted = await client.call_tool("delete_image", {"asset_id": asset_id})
        assert deleted.structured_content == {"deleted": asset_id}
        listed = (await client.call_tool("list_images", {})).structured_content
        assert listed is not None
        assert asset_id not in [i["asset_id"] for i in listed["images"]]
        with pytest.raises(ToolError, match=f"image not found: {asset_id}"):
            await client.call_tool("get_image", {"asset_id": asset_id})
        with pytest.raises(ToolError, match="image not found"):
            await client.call_tool("delete_image", {"asset_id": asset_id})
    assert (await http_get(image["url"])).status_code == 404
    blobs = list((server.settings.state_dir / "blobs").rglob("*.png"))
    assert blobs == []


async def test_delete_keeps_bytes_another_asset_still_uses(server: RunningServer) -> None:
    first = (await generate(server, prompt="twin", size="64x64", seed=1))["images"][0]
    second = (await generate(server, prompt="twin", size="64x64", seed=1))["images"][0]
    async with server.client() as client:
        await client.call_tool("delete_image", {"asset_id": first["asset_id"]})
    assert (await http_get(first["url"])).status_code == 404
    assert (await http_get(second["url"])).status_code == 200


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"prompt": "   "}, "prompt must not be empty"),
        ({"prompt": "x", "size": "huge"}, "size must look like 1024x1024"),
        ({"prompt": "x", "size": "10x10"}, "sides from 64 to 4096"),
        ({"prompt": "x", "size": "13x7"}, "sides from 64 to 4096 pixels; got 13x7"),
        ({"prompt": "x", "size": "0x64"}, "size must look like 1024x1024"),
        ({"prompt": "x", "size": "5000x5000"}, "exceeds the server's limit"),
        ({"prompt": "x", "n": 5}, "n must be between 1 and 4"),
        ({"prompt": "x", "relay": "nope"}, "unknown relay 'nope'; configured relays: placeholder"),
        ({"prompt": "x" * 4001}, "prompt is 4001 characters; the limit is 4000"),
        ({"prompt": "x", "n": 0}, "invalid arguments: n: Input should be greater than or equal"),
        ({"prompt": "a\x00b"}, "prompt contains control characters"),
        (
            {"prompt": "x", "output_format": "gif", "seed": "seven"},
            "invalid arguments: output_format: Input should be 'png', 'jpeg' or 'webp'; seed: ",
        ),
    ],
)
async def test_bad_arguments_get_clear_errors(
    server: RunningServer, arguments: dict[str, Any], message: str
) -> None:
    async with server.client() as client:
        with pytest.raises(ToolError) as raised:
            await client.call_tool("generate_image", arguments)
    assert message in str(raised.value)
    assert "Traceback" not in str(raised.value)
    assert "pydantic" not in str(raised.value)
    assert "\n" not in str(raised.value)
    assert list((server.settings.state_dir / "blobs").rglob("*.*")) == []


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "img_XYZ", "", "img_" + "0" * 24])
async def test_hostile_asset_ids_answer_not_found(server: RunningServer, bad_id: str) -> None:
    async with server.client() as client:
        for tool in ("get_image", "delete_image", "create_download_link"):
            with pytest.raises(ToolError, match="image not found"):
                await client.call_tool(tool, {"asset_id": bad_id})


async def test_list_relays_and_server_info(server: RunningServer) -> None:
    async with server.client() as client:
        relays = (await client.call_tool("list_relays", {})).structured_content
        info = (await client.call_tool("server_info", {})).structured_content
    assert relays is not None
    assert info is not None
    assert relays["default"] == "placeholder"
    (placeholder,) = relays["relays"]
    assert placeholder["name"] == "placeholder"
    assert placeholder["paid"] is False
    assert "png" in placeholder["capabilities"]["output_formats"]
    assert info["subject"] == "token:dev"
    assert info["limits"]["max_images_per_call"] == 4
    key = (server.settings.state_dir / "link-signing.key").read_text().strip()
    dumped = repr(info) + repr(relays)
    assert server.token not in dumped
    assert key not in dumped


async def test_tools_need_a_bearer_token(server: RunningServer) -> None:
    no_token = await http_post(
        server.mcp_url,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Accept": "application/json, text/event-stream"},
    )
    assert no_token.status_code == 401
    assert no_token.headers["www-authenticate"].startswith("Bearer")
    assert no_token.json()["error"] == "invalid_request"
    assert int(no_token.headers["content-length"]) == len(no_token.content)
    wrong = await http_post(
        server.mcp_url,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={
            "Accept": "application/json, text/event-stream",
            "Authorization": "Bearer not-the-token",
        },
    )
    assert wrong.status_code == 401
    assert "invalid_token" in wrong.headers["www-authenticate"]
    assert "not-the-token" not in wrong.text
    # Advice for this server's tokens, not the SDK's "re-register your OAuth client".
    assert wrong.json()["error"] == "invalid_token"
    assert "imagegate token new" in wrong.json()["error_description"]
    assert "imagegate token new" in wrong.headers["www-authenticate"]
    assert "re-register" not in wrong.text + wrong.headers["www-authenticate"]
    assert int(wrong.headers["content-length"]) == len(wrong.content)


async def test_health_and_readiness(server: RunningServer) -> None:
    assert (await http_get(f"{server.base_url}/healthz")).json()["status"] == "ok"
    ready = await http_get(f"{server.base_url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "curl", "version": "1"},
    },
}


@pytest.mark.parametrize(
    ("extra_headers", "allowed"),
    [
        ({}, True),
        ({"Host": "evil.example.com"}, False),
        ({"Origin": "http://evil.example.com"}, False),
    ],
    ids=["same-host", "foreign-host", "foreign-origin"],
)
async def test_dns_rebinding_is_refused(
    server: RunningServer, extra_headers: dict[str, str], allowed: bool
) -> None:
    headers = {
        "Authorization": f"Bearer {server.token}",
        "Accept": "application/json, text/event-stream",
        **extra_headers,
    }
    response = await http_post(server.mcp_url, json=INITIALIZE, headers=headers)
    assert (response.status_code == 200) is allowed, response.text
    if not allowed:
        assert 400 <= response.status_code < 500


@pytest.mark.parametrize("probe", ["/healthz", "/readyz"])
async def test_probes_answer_a_replica_asked_by_its_own_address(
    server: RunningServer, probe: str
) -> None:
    """A balancer's health check names the replica's address (or no Host at all)."""
    foreign = {"Host": "10.0.0.11:8765"}
    assert (await http_get(f"{server.base_url}{probe}", headers=foreign)).status_code == 200
    mcp = await http_post(
        server.mcp_url,
        json=INITIALIZE,
        headers={"Authorization": f"Bearer {server.token}", **foreign},
    )
    assert mcp.status_code == 421  # the Host check still guards everything else
    files = await http_get(f"{server.base_url}/files/img_x.png?exp=1&sig=x", headers=foreign)
    assert files.status_code == 421


async def test_links_say_unavailable_while_the_database_is_down(server: RunningServer) -> None:
    async with server.client() as client:
        made = await client.call_tool("generate_image", {"prompt": "x", "size": "64x64"})
        upload = await client.call_tool("create_upload_link", {})
    assert made.structured_content is not None
    assert upload.structured_content is not None
    await server.app.storage.aclose()  # what a database that stopped answering looks like
    unavailable = "unavailable: the image store can't be reached; try again\n"
    for url in (
        made.structured_content["images"][0]["url"],
        f"{made.structured_content['images'][0]['url']}&w=32",
    ):
        down = await http_get(url)
        assert (down.status_code, down.text) == (503, unavailable)
    async with httpx.AsyncClient() as http:
        put = await http.put(upload.structured_content["upload_url"], content=png_bytes((8, 8)))
    assert put.status_code == 503
    assert put.json()["error"] == "unavailable: the image could not be stored; try again later"


async def test_readiness_fails_when_the_store_does(server: RunningServer) -> None:
    await server.app.storage.aclose()
    response = await http_get(f"{server.base_url}/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "reason": "asset store unavailable"}
    assert (await http_get(f"{server.base_url}/healthz")).status_code == 200


@pytest.mark.parametrize("max_images", [4, 7])
async def test_tool_schemas_show_this_servers_image_limit(tmp_path: Path, max_images: int) -> None:
    async with (
        running_server(tmp_path / "state", max_images_per_call=max_images) as server,
        server.client() as client,
    ):
        schemas = {tool.name: tool.input_schema for tool in await client.list_tools()}
    for name in ("generate_image", "edit_image"):
        assert schemas[name]["properties"]["n"]["maximum"] == max_images


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_only_what_is_served_is_advertised(server: RunningServer, mode: str) -> None:
    async with server.client(mode=mode) as client:
        capabilities = client.session.server_capabilities
    assert capabilities is not None
    assert capabilities.tools is not None
    assert capabilities.prompts is not None  # presets and writing guides (mcp.prompts)
    assert not capabilities.prompts.list_changed
    assert capabilities.resources is not None  # the images, as image:// resources
    assert not capabilities.resources.subscribe
    assert not capabilities.resources.list_changed
    # The MCP Apps extension is advertised while the viewer is served, and only then
    # (tests/e2e/test_apps_viewer.py).


async def test_tools_list_is_compact_and_exact(server: RunningServer) -> None:
    async with server.client() as client:
        tools = {tool.name: tool for tool in await client.list_tools()}
    listed = [
        tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools.values()
    ]
    # 16 tools: the job tools (get_job, cancel_job, list_jobs) took it past 8 KiB,
    # create_upload_link past 9, save_to and the link's view options past 10,
    # revoke_links and usage_report past 11; list_presets, save_preset, delete_preset
    # and preset= past 13.
    assert len(json.dumps(listed, separators=(",", ":"))) <= 14 * 1024
    generate = tools["generate_image"].input_schema["properties"]
    edit = tools["edit_image"].input_schema["properties"]
    for name in ("quality", "background", "size", "relay", "seed"):
        assert generate[name]["description"], name
    assert "asset id or data:image/png;base64" in edit["mask"]["description"]
    assert edit["images"]["maxItems"] == 10  # the placeholder's max_inputs
    assert generate["partial_images"]["maximum"] == 0  # the placeholder streams none
    assert tools["list_images"].input_schema["properties"]["limit"]["maximum"] == 100
    assert all(tool.output_schema is None for tool in tools.values())


@pytest.mark.parametrize(
    ("tool", "arguments", "text"),
    [
        ("server_info", {}, "imagegate 0.1.0 over streamable-http; you are token:dev"),
        ("list_relays", {}, "Relays you may use (default placeholder): placeholder"),
        ("get_usage", {}, "token:dev: 0 image(s) and 0 call(s) today, 0 running"),
    ],
)
async def test_text_is_a_short_fallback_not_a_copy(
    server: RunningServer, tool: str, arguments: dict[str, Any], text: str
) -> None:
    async with server.client() as client:
        result = await client.call_tool(tool, arguments)
    assert result.structured_content is not None
    (block,) = result.content
    assert isinstance(block, TextContent)
    assert block.text.startswith(text)
    assert "{" not in block.text


async def test_a_post_to_a_terminated_session_is_a_clean_404(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with server.client(mode="legacy") as client:
        await client.call_tool("server_info", {})
        session_id = client.transport.get_session_id()  # type: ignore[attr-defined]
    headers = {
        "authorization": f"Bearer {server.token}",
        "accept": "application/json, text/event-stream",
        "mcp-session-id": session_id,
        "mcp-protocol-version": "2025-11-25",
    }
    ended = await http_post(
        server.mcp_url, json={"jsonrpc": "2.0", "id": 9, "method": "tools/list"}, headers=headers
    )
    assert ended.status_code == 404
    assert ended.json()["error"]["message"] == "Session not found"
    assert "Traceback" not in caplog.text
    assert "Unexpected ASGI message" not in caplog.text


async def test_a_call_checks_its_param_headers_against_the_listed_schema(
    server: RunningServer,
) -> None:
    """fastmcp serves the SDK this lookup from its schema cache; without one the SDK
    would run a whole tools/list (every middleware) for each call."""
    lookup = server.app.mcp._mcp_server.get_tool_input_schema
    assert lookup is not None
    async with server.client() as client:
        listed = {tool.name: tool.input_schema for tool in await client.list_tools()}
    assert {name: lookup(name) for name in listed} == listed
    assert lookup("no_such_tool") is None
