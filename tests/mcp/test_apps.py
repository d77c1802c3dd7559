"""The MCP Apps viewer: who is shown it, what its page may load, and the page's side of
the protocol (read as source; tests/e2e/test_apps_viewer.py runs it in a browser)."""

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastmcp.tools import FunctionTool
from mcp_types import ClientCapabilities

from imagegate.config import Settings
from imagegate.mcp.apps import (
    VIEWER_URI,
    image_origins,
    renders_apps,
    viewer_html,
    viewer_meta,
    without_viewer,
)
from imagegate.mcp.specs import TOOLS

UI = "io.modelcontextprotocol/ui"
APP_TYPE = "text/html;profile=mcp-app"


@pytest.mark.parametrize(
    ("capabilities", "renders"),
    [
        (None, False),
        (ClientCapabilities(), False),
        (ClientCapabilities(extensions={}), False),
        (ClientCapabilities(extensions={"io.modelcontextprotocol/tasks": {}}), False),
        (ClientCapabilities(extensions={UI: {}}), False),
        (ClientCapabilities(extensions={UI: {"mimeTypes": ["text/html"]}}), False),
        (ClientCapabilities(extensions={UI: {"mimeTypes": APP_TYPE}}), False),
        (ClientCapabilities(extensions={UI: {"mimeTypes": [APP_TYPE]}}), True),
        (ClientCapabilities(extensions={UI: {"mimeTypes": ["text/html", APP_TYPE]}}), True),
    ],
)
def test_only_clients_that_declare_apps_render_them(
    capabilities: ClientCapabilities | None, renders: bool
) -> None:
    assert renders_apps(capabilities) is renders


@pytest.mark.parametrize(
    ("settings", "links", "origins"),
    [
        ({}, False, []),
        ({"port": 8765}, True, ["http://127.0.0.1:8765"]),
        ({"host": "0.0.0.0", "port": 9000}, True, ["http://127.0.0.1:9000"]),  # noqa: S104
        ({"public_url": "https://images.example.com/gate"}, True, ["https://images.example.com"]),
        (
            {"public_url": "https://images.example.com:8443"},
            True,
            ["https://images.example.com:8443"],
        ),
        (
            {
                "public_url": "https://images.example.com",
                "storage": {"kind": "s3", "endpoint": "https://s3.example.net", "bucket": "imgs"},
            },
            True,
            ["https://images.example.com", "https://s3.example.net"],
        ),
        (
            {
                "public_url": "https://images.example.com",
                "storage": {
                    "kind": "s3",
                    "endpoint": "https://s3.example.net",
                    "bucket": "imgs",
                    "serve": "proxy",
                },
            },
            True,
            ["https://images.example.com"],
        ),
        (
            {
                "public_url": "https://images.example.com",
                "storage": {"kind": "s3", "endpoint": "https://s3.example.net", "bucket": "imgs"},
            },
            False,
            [],
        ),
    ],
)
def test_the_page_loads_images_from_where_links_lead(
    tmp_path: Path, settings: dict[str, Any], links: bool, origins: list[str]
) -> None:
    assert image_origins(Settings(state_dir=tmp_path, **settings), links) == origins


def test_a_client_without_apps_sees_the_tool_as_before() -> None:
    async def f() -> None:
        """A tool."""

    plain = FunctionTool.from_function(f, meta={"other": 1})
    linked = FunctionTool.from_function(f, meta={"other": 1} | viewer_meta())
    assert linked.meta is not None
    assert linked.meta["ui"] == {"resourceUri": VIEWER_URI}
    assert linked.meta["ui/resourceUri"] == VIEWER_URI
    assert without_viewer(linked).meta == plain.meta
    bare = FunctionTool.from_function(f, meta=viewer_meta())
    assert without_viewer(bare).to_mcp_tool() == FunctionTool.from_function(f).to_mcp_tool()


def test_the_tools_that_return_images_name_the_viewer() -> None:
    assert {spec.name for spec in TOOLS if spec.shows_images} == {
        "generate_image",
        "edit_image",
        "get_job",
        "list_images",
        "get_image",
        "create_download_link",
    }


class _Page(HTMLParser):
    """What a host gets: the elements, the inline scripts and styles."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._in = tag

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "script":
            self.scripts.append(data)


def _page() -> _Page:
    page = _Page()
    page.feed(viewer_html())
    page.close()
    return page


def test_the_page_is_one_self_contained_document() -> None:
    html = viewer_html()
    assert html.lower().startswith("<!doctype html>")
    page = _page()
    names = [tag for tag, _ in page.tags]
    assert names[:3] == ["html", "head", "meta"]
    assert dict(page.tags[0][1]).get("lang") == "en"
    # Nothing from elsewhere: no external script, style sheet, frame, font or base.
    assert not {"link", "iframe", "base", "object", "embed"} & set(names)
    for tag, attributes in page.tags:
        assert "src" not in attributes, tag
        assert "href" not in attributes, tag
    assert not re.search(r"@import|url\(|fetch\(|XMLHttpRequest|WebSocket|eval\(", html)
    assert len(page.scripts) == 1


METHODS_ANSWERED = [
    "ui/notifications/tool-input",
    "ui/notifications/tool-input-partial",
    "ui/notifications/tool-result",
    "ui/notifications/tool-cancelled",
    "ui/notifications/host-context-changed",
    "ui/resource-teardown",
    "ping",
]
METHODS_SENT = [
    "ui/initialize",
    "ui/notifications/initialized",
    "ui/notifications/size-changed",
    "ui/open-link",
    "resources/read",
]


@pytest.mark.parametrize("method", METHODS_ANSWERED)
def test_the_page_handles_what_the_host_sends(method: str) -> None:
    (script,) = _page().scripts
    handlers = script[script.index("const handlers = {") :]
    handlers = handlers[: handlers.index("};")]
    assert f'"{method}":' in handlers


@pytest.mark.parametrize("method", METHODS_SENT)
def test_the_page_sends_the_protocols_requests(method: str) -> None:
    (script,) = _page().scripts
    assert re.search(rf'(request|notify)\("{re.escape(method)}"', script)


def test_the_page_speaks_the_stable_protocol_version() -> None:
    (script,) = _page().scripts
    assert 'const PROTOCOL_VERSION = "2026-01-26";' in script


def test_the_page_trusts_only_its_host_and_writes_no_markup() -> None:
    (script,) = _page().scripts
    assert "event.source !== window.parent" in script
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", script)
    # Prompts stay out of the page: no alt text, caption or detail made from them.
    assert "prompt" not in script


def test_every_button_has_a_type_and_a_label() -> None:
    (script,) = _page().scripts
    assert 'button.type = "button"' in script
    assert 'button.setAttribute("aria-label", "Download image "' in script
    assert "img.alt = position" in script
