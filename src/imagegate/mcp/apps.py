"""The image viewer for hosts that render MCP Apps (SEP-1865, `io.modelcontextprotocol/ui`).

`ui://imagegate/viewer.html` is one HTML page (package data, `mcp/ui/viewer.html`) served
as `text/html;profile=mcp-app`. The tools that return images name it in their
`_meta.ui.resourceUri` (and in the flat `_meta["ui/resourceUri"]` of earlier drafts,
which the ext-apps SDK still sets for older hosts). A host that renders apps reads the
page, puts it in a sandboxed iframe and hands it the tool's result over postMessage; the
page shows the images from their signed links (or a preview the host reads from
`image://`, or the result's inline thumbnail), their details and a download button.

Advertised only when served, and only to hosts that can use it:

- `apps_viewer` off: no `ui://` resource, no `_meta.ui` on any tool, and the extension
  is left out of the server's capabilities.
- A tools/list answer carries `_meta.ui` only for a client that declared the extension
  with the app MIME type in its capabilities (handshake era: `initialize`; 2026-07-28:
  each request's `_meta`). Every other client gets the tool list it always got.
  Tool results are the same for everyone: the page reads what models read.
- The page's CSP (`_meta.ui.csp` of the resource) lets it load images from where the
  download links point and, when downloads redirect to a bucket, from the bucket; it
  fetches nothing (no `connectDomains`). The page holds no data: any caller may read it.
"""

from collections.abc import Sequence
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from fastmcp import FastMCP
from fastmcp.apps.config import UI_EXTENSION_ID, UI_MIME_TYPE, AppConfig, ResourceCSP
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import Tool
from mcp_types import ClientCapabilities

from imagegate.config import Settings

VIEWER_URI = "ui://imagegate/viewer.html"
LEGACY_URI_KEY = "ui/resourceUri"
"""The flat key of earlier drafts, deprecated by the 2026-01-26 spec."""


def viewer_meta() -> dict[str, Any]:
    """The `_meta` of a tool whose results the viewer shows."""
    return {"ui": {"resourceUri": VIEWER_URI}, LEGACY_URI_KEY: VIEWER_URI}


def viewer_html() -> str:
    return resources.files("imagegate.mcp").joinpath("ui/viewer.html").read_text("utf-8")


def image_origins(settings: Settings, links: bool) -> list[str]:
    """Where the viewer loads images from: the origin of the signed download links
    (when this server signs any), and the bucket's when a download redirects there
    (an image's CSP check follows the redirect)."""
    if not links:
        return []
    origins = [_origin(settings.base_url())]
    storage = settings.storage
    if storage.kind == "s3" and storage.serve == "redirect" and storage.endpoint:
        origins.append(_origin(storage.endpoint))  # path-style URLs: the endpoint's host
    return list(dict.fromkeys(origins))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def renders_apps(capabilities: ClientCapabilities | None) -> bool:
    """Did a client declare it renders MCP Apps: the extension, with the app MIME type
    among its `mimeTypes` (a setting the spec requires)?"""
    extensions = capabilities.extensions if capabilities is not None else None
    settings = (extensions or {}).get(UI_EXTENSION_ID)
    if not isinstance(settings, dict):
        return False
    mime_types = settings.get("mimeTypes")
    return isinstance(mime_types, list) and UI_MIME_TYPE in mime_types


_VIEWER_KEYS = frozenset(viewer_meta())


def without_viewer(tool: Tool) -> Tool:
    """The tool as a client without apps sees it: its `_meta` without the viewer."""
    meta = {key: value for key, value in (tool.meta or {}).items() if key not in _VIEWER_KEYS}
    return tool.model_copy(update={"meta": meta or None})


class ViewerForAppHosts(Middleware):
    """Show the viewer's link on the tools only to clients that render apps."""

    async def on_list_tools(
        self, context: MiddlewareContext[Any], call_next: CallNext[Any, Sequence[Tool]]
    ) -> Sequence[Tool]:
        tools = await call_next(context)
        if renders_apps(_client_capabilities(context)):
            return tools
        return [without_viewer(tool) for tool in tools]


def _client_capabilities(context: MiddlewareContext[Any]) -> ClientCapabilities | None:
    """What the client declared: at `initialize` (handshake era), or in this request's
    `_meta` (2026-07-28); the SDK's session holds either."""
    ctx = context.fastmcp_context
    if ctx is None:
        return None
    try:
        return ctx.session.client_capabilities
    except RuntimeError:  # no session: nobody declared anything
        return None


def serve_viewer(mcp: FastMCP[Any], settings: Settings, links: bool) -> None:
    """Register the viewer page and the middleware that shows it to app hosts only."""
    html = viewer_html()
    origins = image_origins(settings, links)
    app = AppConfig(
        csp=ResourceCSP(resource_domains=origins) if origins else None,
        prefers_border=True,
    )

    def read_viewer() -> str:
        return html

    mcp.resource(
        VIEWER_URI,
        name="image_viewer",
        title="imagegate image viewer",
        description="Shows the images a tool returned, with their details (MCP Apps).",
        mime_type=UI_MIME_TYPE,
        app=app,
    )(read_viewer)
    mcp.add_middleware(ViewerForAppHosts())
