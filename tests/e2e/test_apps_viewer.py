"""The MCP Apps image viewer over real HTTP: what a host that renders apps is offered
(the `ui://` page, its CSP, the tools that name it), what every other client is not,
and the page itself in headless Chromium, driven by a stand-in host as the spec
describes one (a sandboxed iframe, a CSP built from the page's `_meta.ui.csp`, JSON-RPC
over postMessage)."""

import asyncio
import json
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import mcp_types
import pytest
from fastmcp import Client
from fastmcp.client.auth import BearerAuth
from fastmcp.client.client import CallToolResult
from fastmcp.client.transports import StdioTransport
from mcp.client.extension import advertise

from tests.conftest import ManualClock
from tests.e2e.browser import new_page
from tests.e2e.harness import RunningServer, running_server
from tests.e2e.processes import clean_env, serving

UI = "io.modelcontextprotocol/ui"
APP_TYPE = "text/html;profile=mcp-app"
VIEWER = "ui://imagegate/viewer.html"
SHOWS_IMAGES = {
    "generate_image",
    "edit_image",
    "get_job",
    "list_images",
    "get_image",
    "create_download_link",
}


def app_host(url: str, token: str, mode: str = "auto") -> Client[Any]:
    """A client that declares it renders MCP Apps, as Claude Desktop and claude.ai do."""
    host = advertise(UI, {"mimeTypes": [APP_TYPE]})
    return Client(url, auth=BearerAuth(token), extensions=[host], mode=mode)


class _Parsed(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def _linked(tools: list[mcp_types.Tool]) -> set[str]:
    names = set()
    for tool in tools:
        meta = tool.meta or {}
        if meta.get("ui") == {"resourceUri": VIEWER}:
            assert meta.get("ui/resourceUri") == VIEWER  # hosts of the older drafts
            names.add(tool.name)
        else:
            assert "ui" not in meta
            assert "ui/resourceUri" not in meta
    return names


async def test_a_served_imagegate_offers_app_hosts_the_viewer(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with serving(state) as (base_url, _):
        token = (state / "bearer-token").read_text().strip()
        for mode in ("legacy", "auto"):
            async with app_host(f"{base_url}/mcp", token, mode) as client:
                tools = await client.list_tools()
                (page,) = await client.read_resource(VIEWER)
            assert _linked(tools) == SHOWS_IMAGES, mode
            assert isinstance(page, mcp_types.TextResourceContents)
            assert page.mime_type == APP_TYPE
            # Images from where the links lead, nothing else; no network access.
            assert page.meta == {
                "ui": {"csp": {"resourceDomains": [base_url]}, "prefersBorder": True}
            }
            parsed = _Parsed()
            parsed.feed(page.text)
            parsed.close()
            assert parsed.tags.count("script") == 1
            assert "main" in parsed.tags
            for method in ("ui/initialize", "ui/notifications/tool-result", "ui/open-link"):
                assert f'"{method}"' in page.text
        async with httpx.AsyncClient() as http:
            capabilities = await _discover(http, f"{base_url}/mcp", token)
        assert UI in capabilities["extensions"]


def _stdio_host(state: Path) -> Client[Any]:
    """Claude Desktop's way: the host starts imagegate over stdio (no download links)."""
    transport = StdioTransport(
        command=sys.executable,
        args=["-m", "imagegate", "serve", "--transport", "stdio"],
        env=clean_env(IMAGEGATE_STATE_DIR=str(state)),
    )
    return Client(transport, extensions=[advertise(UI, {"mimeTypes": [APP_TYPE]})])


async def test_over_stdio_the_viewer_loads_no_image_origin(tmp_path: Path) -> None:
    async with _stdio_host(tmp_path / "state") as client:
        tools = await client.list_tools()
        (page,) = await client.read_resource(VIEWER)
    assert _linked(tools) == SHOWS_IMAGES
    assert page.meta == {"ui": {"prefersBorder": True}}  # no links, no origin: no csp


async def _discover(http: httpx.AsyncClient, url: str, token: str) -> dict[str, Any]:
    """The server's capabilities as a 2026-07-28 client learns them."""
    version = "2026-07-28"
    response = await http.post(
        url,
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "server/discover",
            "params": {
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": version,
                    "io.modelcontextprotocol/clientCapabilities": {},
                }
            },
        },
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": version,
            "Mcp-Method": "server/discover",
        },
    )
    capabilities: dict[str, Any] = response.json()["result"]["capabilities"]
    return capabilities


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_other_clients_get_the_tools_as_without_the_viewer(
    tmp_path: Path, clock: ManualClock, mode: str
) -> None:
    listings = []
    for viewer in (True, False):
        async with running_server(
            tmp_path / f"state-{viewer}", clock, apps_viewer=viewer
        ) as server:
            async with server.client(mode=mode) as client:
                tools = await client.list_tools()
            listings.append([tool.model_dump(mode="json", by_alias=True) for tool in tools])
    assert listings[0] == listings[1]
    assert _linked([mcp_types.Tool.model_validate(tool) for tool in listings[0]]) == set()


async def test_switched_off_nothing_hints_at_the_viewer(tmp_path: Path, clock: ManualClock) -> None:
    async with running_server(tmp_path / "state", clock, apps_viewer=False) as server:
        async with app_host(server.mcp_url, server.token) as client:
            assert _linked(await client.list_tools()) == set()
            with pytest.raises(Exception, match=r"(?i)not found"):
                await client.read_resource(VIEWER)
        async with httpx.AsyncClient() as http:
            capabilities = await _discover(http, server.mcp_url, server.token)
    assert UI not in (capabilities.get("extensions") or {})


async def test_results_are_the_same_for_app_hosts(server: RunningServer) -> None:
    arguments = {"prompt": "same", "size": "64x64", "seed": 7}
    async with app_host(server.mcp_url, server.token) as client:
        shown = await client.call_tool("generate_image", arguments)
    async with server.client() as client:
        plain = await client.call_tool("generate_image", arguments)
    assert shown.structured_content is not None
    assert plain.structured_content is not None
    (one,) = shown.structured_content["images"]
    (other,) = plain.structured_content["images"]
    assert one.keys() == other.keys()
    assert [type(block) for block in shown.content] == [type(block) for block in plain.content]


# --- The page in a browser -------------------------------------------------------------

HOST_PAGE = """<!doctype html><html><body><script>
window.opened = []; window.sizes = []; window.answers = {}; window.methods = [];
window.startHost = ({html, domains, result, capabilities}) => {
  // The sandbox a host builds from _meta.ui.csp (the spec's "CSP Construction").
  const csp = ["default-src 'none'", "script-src 'unsafe-inline'",
    "style-src 'unsafe-inline'", "img-src data: " + domains.join(" "),
    "connect-src 'none'", "frame-src 'none'", "object-src 'none'"].join("; ");
  const frame = document.createElement("iframe");
  frame.setAttribute("sandbox", "allow-scripts");
  frame.style.width = "640px";
  frame.style.height = "900px";
  const post = (message) =>
    frame.contentWindow.postMessage(Object.assign({jsonrpc: "2.0"}, message), "*");
  window.ask = (id, method) => post({id: id, method: method, params: {}});
  window.addEventListener("message", async (event) => {
    if (event.source !== frame.contentWindow) return;
    const m = event.data;
    if (m.method === undefined) { window.answers[m.id] = m; return; }
    window.methods.push(m.method);
    if (m.method === "ui/initialize") {
      post({id: m.id, result: {protocolVersion: "2026-01-26",
        hostInfo: {name: "test-host", version: "0"}, hostCapabilities: capabilities,
        hostContext: {theme: "dark", locale: "en-GB", timeZone: "UTC"}}});
    } else if (m.method === "ui/notifications/initialized") {
      post({method: "ui/notifications/tool-input", params: {arguments: {}}});
      post({method: "ui/notifications/tool-result", params: result});
    } else if (m.method === "ui/open-link") {
      window.opened.push(m.params.url);
      post({id: m.id, result: {}});
    } else if (m.method === "resources/read") {
      post({id: m.id, result: await window.readResource(m.params.uri)});
    } else if (m.method === "ui/notifications/size-changed") {
      window.sizes.push(m.params);
    }
  });
  frame.srcdoc = html.replace("<head>",
    '<head><meta http-equiv="Content-Security-Policy" content="' + csp + '">');
  document.body.append(frame);
};
</script></body></html>"""


@pytest.fixture
async def host_page(chromium: Any) -> Any:
    """A page playing the host: the viewer goes into its iframe."""
    page = await new_page(chromium)
    await page.set_content(HOST_PAGE)
    return page


def _wire(result: CallToolResult) -> dict[str, Any]:
    """The CallToolResult as the host hands it on (`params` of tool-result)."""
    return {
        "content": [
            block.model_dump(mode="json", by_alias=True, exclude_none=True)
            for block in result.content
        ],
        "structuredContent": result.structured_content,
        "isError": result.is_error,
    }


async def _show(
    page: Any,
    client: Client[Any],
    result: dict[str, Any],
    capabilities: dict[str, Any],
    csp: bool = True,
) -> Any:
    """Render `result` in the viewer as a host would; with `csp`, allowing what the page
    declares, else what the spec's default allows (no image origin)."""
    (viewer,) = await client.read_resource(VIEWER)
    assert isinstance(viewer, mcp_types.TextResourceContents)
    declared = (viewer.meta or {}).get("ui", {}).get("csp", {}).get("resourceDomains", [])
    domains = declared if csp else []

    async def read_resource(uri: str) -> dict[str, Any]:
        (contents,) = await client.read_resource(uri)
        return {"contents": [contents.model_dump(mode="json", by_alias=True, exclude_none=True)]}

    await page.expose_function("readResource", read_resource)
    await page.evaluate(
        "args => window.startHost(args)",
        {"html": viewer.text, "domains": domains, "result": result, "capabilities": capabilities},
    )
    return page.frame_locator("iframe")


async def _loaded(image: Any) -> str:
    """The image's source once it has loaded."""
    for _ in range(500):
        done, src = await image.evaluate("i => [i.complete && i.naturalWidth > 0, i.currentSrc]")
        if done:
            return str(src)
        await asyncio.sleep(0.02)
    raise AssertionError("the image did not load")


async def test_the_viewer_shows_a_generated_image_and_its_details(
    server: RunningServer, host_page: Any
) -> None:
    async with app_host(server.mcp_url, server.token) as client:
        result = await client.call_tool("generate_image", {"prompt": "a secret", "size": "96x64"})
        (image,) = result.structured_content["images"]
        frame = await _show(host_page, client, _wire(result), {"openLinks": {}})
        shown = frame.locator("img")
        assert await _loaded(shown) == image["url"]
        assert await shown.get_attribute("alt") == "Image 1 of 1"
        assert await shown.evaluate("img => img.naturalWidth") == 96
        card = await frame.locator("li.card").inner_text()
        for text in (image["asset_id"], "placeholder", "96 \u00d7 64", "Link expires", "Created"):
            assert text in card
        assert "secret" not in await frame.locator("body").inner_text()
        await frame.get_by_role("button", name="Download image 1 of 1").click()
        await host_page.wait_for_function("window.opened.length === 1")
        assert await host_page.evaluate("window.opened") == [image["url"]]
        assert (await host_page.evaluate("window.sizes"))[-1]["height"] > 100
        methods = await host_page.evaluate("window.methods")
        assert methods[:2] == ["ui/initialize", "ui/notifications/initialized"]
        # Requests from the host get an answer; an unknown one a JSON-RPC error.
        for request_id, method in enumerate(["ping", "ui/resource-teardown", "ui/nothing"], 100):
            await host_page.evaluate(f"window.ask({request_id}, {json.dumps(method)})")
        await host_page.wait_for_function("Object.keys(window.answers).length >= 3")
        answers = await host_page.evaluate("window.answers")
        assert answers["100"]["result"] == {}
        assert answers["101"]["result"] == {}
        assert answers["102"]["error"]["code"] == -32601


async def test_without_the_declared_origin_the_inline_preview_stands_in(
    server: RunningServer, host_page: Any
) -> None:
    """A host that allows no image origin (the spec's default CSP) blocks the link: the
    page falls back to the result's own thumbnail, a data: URL."""
    async with app_host(server.mcp_url, server.token) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "x", "size": "96x64", "thumbnail": True}
        )
        frame = await _show(host_page, client, _wire(result), {}, csp=False)
        src = await _loaded(frame.locator("img"))
    assert src.startswith("data:image/png;base64,")


async def test_a_listed_image_is_read_through_the_host(
    server: RunningServer, host_page: Any
) -> None:
    """list_images has no links: a host that proxies resources/read gets a view."""
    async with app_host(server.mcp_url, server.token) as client:
        await client.call_tool("generate_image", {"prompt": "x", "size": "96x64"})
        result = await client.call_tool("list_images", {})
        capabilities: dict[str, Any] = {"serverResources": {}, "openLinks": {}}
        frame = await _show(host_page, client, _wire(result), capabilities, csp=False)
        src = await _loaded(frame.locator("img"))
        assert src.startswith("data:image/webp;base64,")
        assert await frame.get_by_role("button").count() == 0  # nothing to download


async def test_over_stdio_a_preview_is_read_through_the_host(
    tmp_path: Path, host_page: Any
) -> None:
    async with _stdio_host(tmp_path / "state") as client:
        result = await client.call_tool("generate_image", {"prompt": "x", "size": "96x64"})
        frame = await _show(host_page, client, _wire(result), {"serverResources": {}})
        src = await _loaded(frame.locator("img"))
        assert src.startswith("data:image/webp;base64,")
        assert "File" in await frame.locator("li.card").inner_text()  # the local path
        assert await frame.get_by_role("button").count() == 0  # a file:// URL is no link


@pytest.mark.parametrize(
    ("result", "shown"),
    [
        (
            {"isError": True, "content": [{"type": "text", "text": "forbidden: needs scope x"}]},
            "forbidden: needs scope x",
        ),
        (
            {
                "content": [{"type": "text", "text": "Job job_1 is running."}],
                "structuredContent": {"job_id": "job_1", "status": "running", "progress": 40},
            },
            "Job job_1 is still running (40%)",
        ),
        (
            {
                "content": [{"type": "text", "text": "declined"}],
                "structuredContent": {"images": [], "confirmation": "declined"},
            },
            "No images (declined).",
        ),
    ],
)
async def test_what_is_not_an_image_is_said_in_words(
    server: RunningServer, host_page: Any, result: dict[str, Any], shown: str
) -> None:
    async with app_host(server.mcp_url, server.token) as client:
        frame = await _show(host_page, client, result, {})
        await frame.locator("main").get_by_text(shown).wait_for()
        assert await frame.locator("img").count() == 0
