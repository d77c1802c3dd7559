"""MCP tools: parse arguments, call the ImageService, shape the result. Nothing more."""

from typing import Annotated, Any, Literal

import anyio
from fastmcp import Context
from fastmcp.tools import ToolResult
from pydantic import Field

from imagegate import __version__
from imagegate.acl import AccessPolicy, Caller
from imagegate.auth.subject import current_identity
from imagegate.errors import InvalidRequest, PermissionDenied
from imagegate.generation import GenerateArgs, Stopwatch
from imagegate.ids import Subject, parse_asset_id
from imagegate.images import thumbnail_png
from imagegate.results import ImagesResult, image_content, image_record
from imagegate.scopes import grants, relay_scope
from imagegate.service import ImageService

SERVICE_KEY = "imagegate.service"
POLICY_KEY = "imagegate.policy"

Prompt = Annotated[str, Field(description="What to draw, in plain words.")]
AssetIdArg = Annotated[str, Field(description="An asset id such as img_0123456789abcdef01234567.")]


def service_of(ctx: Context) -> ImageService:
    service = ctx.lifespan_context.get(SERVICE_KEY)
    if not isinstance(service, ImageService):
        raise RuntimeError("imagegate service missing from the server lifespan")
    return service


def caller_of(ctx: Context) -> Caller:
    policy = ctx.lifespan_context.get(POLICY_KEY)
    if not isinstance(policy, AccessPolicy):
        raise RuntimeError("imagegate access policy missing from the server lifespan")
    return policy.caller(current_identity(ctx))


def reach(caller: Caller) -> Subject | None:
    """Whose images the caller may touch by id: its own, or (admin) anyone's."""
    return None if caller.is_admin else Subject(caller.subject)


async def generate_image(
    prompt: Prompt,
    ctx: Context,
    size: Annotated[str, Field(description="WIDTHxHEIGHT in pixels.")] = "1024x1024",
    n: Annotated[int, Field(description="How many images.", ge=1, le=10)] = 1,
    output_format: Literal["png", "jpeg", "webp"] = "png",
    seed: Annotated[int | None, Field(description="Same seed, same image (if supported).")] = None,
    relay: Annotated[str | None, Field(description="A relay name from list_relays.")] = None,
    thumbnail: Annotated[bool, Field(description="Also inline a small preview.")] = False,
) -> ToolResult:
    """Generate images from a prompt; each is stored for you and returned with a link."""
    service = service_of(ctx)
    owner = Subject(caller_of(ctx).subject)
    watch = Stopwatch()

    async def progress(fraction: float | None, message: str) -> None:
        value = 0.0 if fraction is None else round(fraction * 100, 1)
        await ctx.report_progress(value, 100, f"{message} ({watch.elapsed():.1f}s)")

    args = GenerateArgs(prompt, size, n, output_format, seed, relay)
    assets = await service.generate(owner, args, progress)
    records = [image_record(asset, service.publish(asset)) for asset in assets]
    thumbs = None
    if thumbnail:
        px = service.settings.thumbnail_px
        thumbs = [
            await anyio.to_thread.run_sync(thumbnail_png, service.store.blob_path(a), px)
            for a in assets
        ]
    await ctx.report_progress(100, 100, f"done ({watch.elapsed():.1f}s)")
    result = ImagesResult(images=records, elapsed_seconds=watch.elapsed())
    heading = f"Generated {len(records)} image(s) in {watch.elapsed():.1f}s:"
    return _images_result(result, heading, thumbs)


async def list_images(
    ctx: Context,
    limit: Annotated[int, Field(description="Page size.", ge=1)] = 20,
    cursor: Annotated[str | None, Field(description="next_cursor of the previous page.")] = None,
    owner: Annotated[
        str | None, Field(description="Admins only: another subject's images, or '*' for all.")
    ] = None,
) -> ToolResult:
    """List your images, newest first. Use get_image for a download link."""
    service = service_of(ctx)
    caller = caller_of(ctx)
    whose: Subject | None = Subject(caller.subject)
    if owner is not None and owner != caller.subject:
        if not caller.is_admin:
            raise PermissionDenied("forbidden: needs scope admin to list others' images")
        whose = None if owner == "*" else Subject(owner)
    page = service.list(whose, limit, cursor)
    records = [image_record(asset, None) for asset in page.assets]
    lines = [f"{len(records)} image(s)" + (", more with next_cursor" if page.next_cursor else "")]
    lines += [
        f"- {r.asset_id}: {r.width}x{r.height} {r.mime_type}, {r.created_at}, {r.prompt[:60]!r}"
        for r in records
    ]
    result = ImagesResult(images=records, next_cursor=page.next_cursor)
    return ToolResult(content="\n".join(lines), structured_content=result.model_dump(mode="json"))


async def get_image(asset_id: AssetIdArg, ctx: Context) -> ToolResult:
    """Metadata of one of your images with a fresh download link."""
    service = service_of(ctx)
    asset = service.get(reach(caller_of(ctx)), parse_asset_id(asset_id))
    result = ImagesResult(images=[image_record(asset, service.publish(asset))])
    return _images_result(result, f"Image {asset.id}:")


async def create_download_link(
    asset_id: AssetIdArg,
    ctx: Context,
    ttl_seconds: Annotated[
        int | None, Field(description="Link lifetime; default and maximum in server_info.")
    ] = None,
) -> ToolResult:
    """A signed download link to one of your images that works without a token until it
    expires. Anyone holding the link can download the image."""
    service = service_of(ctx)
    if not service.links_enabled:
        raise InvalidRequest(
            "download links need the HTTP server; in stdio mode images are local files "
            "(see 'path'), or set public_url to an imagegate HTTP server sharing this state"
        )
    asset = service.get(reach(caller_of(ctx)), parse_asset_id(asset_id))
    result = ImagesResult(images=[image_record(asset, service.publish(asset, ttl_seconds))])
    return _images_result(result, f"Download link for {asset.id}:")


async def delete_image(asset_id: AssetIdArg, ctx: Context) -> dict[str, str]:
    """Delete one of your images; its download links stop working."""
    service = service_of(ctx)
    asset = await service.delete(reach(caller_of(ctx)), parse_asset_id(asset_id))
    return {"deleted": asset.id}


async def list_relays(ctx: Context) -> dict[str, Any]:
    """The relays you may use: name, kind, what they support, and whether they cost money."""
    relays = service_of(ctx).relays
    caller = caller_of(ctx)
    return {
        "default": relays.default,
        "relays": [
            {
                "name": relay.name,
                "kind": relay.kind,
                "description": relay.description,
                "paid": relay.paid,
                "capabilities": relay.capabilities.describe(),
            }
            for relay in relays.all()
            if grants(caller.scopes, relay_scope(relay.name))
        ],
    }


async def server_info(ctx: Context) -> dict[str, Any]:
    """Version, transports and limits of this server, and who you are to it."""
    service = service_of(ctx)
    settings = service.settings
    caller = caller_of(ctx)
    return {
        "name": "imagegate",
        "version": __version__,
        "transport": ctx.transport,
        "transports": ["stdio", "http"],
        "subject": caller.subject,
        "scopes": sorted(caller.scopes),
        "download_links": service.links_enabled,
        "limits": {
            "max_images_per_call": settings.max_images_per_call,
            "max_image_bytes": settings.max_image_bytes,
            "max_image_pixels": settings.max_image_pixels,
            "max_prompt_chars": settings.max_prompt_chars,
            "max_page_size": settings.max_page_size,
            "link_ttl_seconds": settings.link_ttl_seconds,
            "link_ttl_max_seconds": settings.link_ttl_max_seconds,
        },
    }


def _images_result(
    result: ImagesResult, heading: str, thumbnails: list[bytes] | None = None
) -> ToolResult:
    return ToolResult(
        content=image_content(result.images, heading, thumbnails),
        structured_content=result.model_dump(mode="json"),
    )


IMAGES_OUTPUT_SCHEMA = ImagesResult.model_json_schema()
