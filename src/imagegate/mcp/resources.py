"""Every image is an MCP resource, `image://{asset_id}`, readable by its owner.

- `resources/read`: the image's bytes with its MIME type. Another owner's image, or an
  unknown id, answers the same "Resource not found" (raised from middleware, which
  FastMCP maps cleanly; raised inside a template it would be a masked internal error).
- `resources/list`: the caller's images, newest first, a page at a time with the MCP
  cursor. FastMCP pages resources by offset over a full listing and never hands a
  cursor on, so this one method has its own handler (it bypasses FastMCP middleware).

Reading needs the scope `images:read`, as `get_image` does; without it every image
answers "not found" and the list is empty.
"""

from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import mcp_types
from fastmcp import FastMCP
from fastmcp.exceptions import NotFoundError, ValidationError
from fastmcp.resources import ResourceContent, ResourceResult
from fastmcp.server.dependencies import bind_request_context
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError

from imagegate.access.policy import AccessPolicy, Caller, ToolRule, decide
from imagegate.access.scopes import READ
from imagegate.core.errors import ImagegateError, InvalidRequest, NotFound
from imagegate.core.ids import parse_asset_id
from imagegate.core.views import View
from imagegate.mcp.auth import request_identity
from imagegate.service.images import ImageService
from imagegate.storage.interfaces import Asset

SCHEME = "image://"
PAGE_SIZE = 50
"""A page of resources/list (or max_page_size, if smaller)."""


def image_uri(asset_id: str) -> str:
    return f"{SCHEME}{asset_id}"


def asset_id_of(uri: str) -> str:
    """The asset id an `image://` URI names (its views too), or '' for another URI."""
    if not uri.startswith(SCHEME):
        return ""
    return uri.removeprefix(SCHEME).split("/", 1)[0].split("?", 1)[0]


class ImageResources:
    def __init__(self, service: ImageService, policy: AccessPolicy, local: bool) -> None:
        self._service = service
        self._policy = policy
        self._local = local

    def _caller(self) -> Caller | None:
        """stdio is the local user; over HTTP the verified token; None: nobody (or
        someone who may not read images)."""
        identity = request_identity(self._local)
        if identity is None:
            return None
        caller = self._policy.caller(identity)
        return caller if decide(caller.scopes, ToolRule(READ), None).allowed else None

    async def owned(self, uri: str) -> Asset:
        """The caller's own image that `uri` names; NotFoundError, worded as FastMCP
        words an unknown URI, for anything else."""
        caller = self._caller()
        try:
            if caller is None:
                raise NotFound(uri)
            return await self._service.assets.get(caller.subject, parse_asset_id(asset_id_of(uri)))
        except NotFound:
            raise NotFoundError(f"Unknown resource: {uri}") from None

    async def read(self, asset_id: str) -> ResourceResult:
        asset = await self.owned(image_uri(asset_id))
        async with self._service.assets.as_file(asset) as path:
            data = await anyio.to_thread.run_sync(path.read_bytes)
        return ResourceResult([ResourceContent(data, mime_type=asset.format.mime_type)])

    def view_of(self, uri: str) -> View:
        """The view an `image://{id}/view?...` URI asks for; fastmcp's ValidationError
        (a clean invalid-params answer) says what is wrong."""
        query = {name: values[0] for name, values in parse_qs(urlsplit(uri).query).items()}
        try:
            return View.parsed(query, self._service.settings.max_image_pixels)
        except InvalidRequest as err:
            raise ValidationError(str(err)) from None

    def view(
        self,
        width: int | None,
        height: int | None,
        fit: str | None,
        format: str | None,
        quality: int | None,
    ) -> View:
        try:
            return View.of(
                width, height, fit, format, quality, self._service.settings.max_image_pixels
            )
        except InvalidRequest as err:
            raise ValidationError(str(err)) from None

    async def read_view(self, asset_id: str, view: View) -> ResourceResult:
        asset = await self.owned(image_uri(asset_id))
        data = await self._service.view(asset, view)
        mime_type = view.output_format(asset.format).mime_type
        return ResourceResult([ResourceContent(data, mime_type=mime_type)])

    async def list_page(
        self, ctx: ServerRequestContext[Any, Any], params: mcp_types.PaginatedRequestParams
    ) -> mcp_types.ListResourcesResult:
        with bind_request_context(ctx):
            caller = self._caller()
            if caller is None:
                return mcp_types.ListResourcesResult(resources=[])
            try:
                size = min(PAGE_SIZE, self._service.settings.max_page_size)
                page = await self._service.assets.list(caller.subject, size, params.cursor)
            except InvalidRequest as err:
                raise MCPError(code=mcp_types.INVALID_PARAMS, message=str(err)) from None
            except ImagegateError as err:
                raise MCPError(code=mcp_types.INTERNAL_ERROR, message=str(err)) from None
        return mcp_types.ListResourcesResult(
            resources=[resource_of(asset) for asset in page.assets],
            next_cursor=page.next_cursor,
        )


def resource_of(asset: Asset) -> mcp_types.Resource:
    return mcp_types.Resource(
        uri=image_uri(asset.id),
        name=asset.id,
        mime_type=asset.format.mime_type,
        size=asset.byte_size,
        description=f"{asset.width}x{asset.height}, {asset.relay}",
    )


class ImageOwnership(Middleware):
    """Reads of `image://` resources only for their owner; checked before FastMCP
    finds the template, so a refusal is the plain "not found"."""

    def __init__(self, resources: ImageResources) -> None:
        self._resources = resources

    async def on_read_resource(
        self, context: MiddlewareContext[Any], call_next: CallNext[Any, Any]
    ) -> Any:
        uri = str(getattr(context.message, "uri", ""))
        if uri.startswith(SCHEME):
            await self._resources.owned(uri)
            if urlsplit(uri).path.startswith("/view"):
                self._resources.view_of(uri)
        return await call_next(context)


def serve_resources(mcp: FastMCP[Any], resources: ImageResources) -> None:
    """Register the image template, the ownership check and the paged listing."""
    mcp.add_middleware(ImageOwnership(resources))

    async def read_image(asset_id: str) -> ResourceResult:
        return await resources.read(asset_id)

    mcp.resource(
        "image://{asset_id}",
        name="image",
        description="One of your images (asset id img_...), as stored.",
        mime_type="image/png",
    )(read_image)

    async def read_view(
        asset_id: str,
        width: int | None = None,
        height: int | None = None,
        fit: str | None = None,
        format: str | None = None,
        quality: int | None = None,
    ) -> ResourceResult:
        view = resources.view(width, height, fit, format, quality)  # checked in middleware
        return await resources.read_view(asset_id, view)

    mcp.resource(
        "image://{asset_id}/view{?width,height,fit,format,quality}",
        name="image_view",
        description=(
            "A resized or converted copy of one of your images: width, height (at most), "
            "fit (contain, cover, crop), format (png, jpeg, webp), quality (1-100)."
        ),
        mime_type="image/webp",
    )(read_view)
    mcp._mcp_server.add_request_handler(
        "resources/list", mcp_types.PaginatedRequestParams, resources.list_page
    )
