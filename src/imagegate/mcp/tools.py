"""MCP tools: parse arguments, call the ImageService, shape the result. Nothing more.
Each is declared, with its scope and annotations, in `specs.TOOLS`."""

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastmcp import Context
from fastmcp.tools import ToolResult
from mcp_types import InputRequiredResult
from pydantic import Field

from imagegate import __version__
from imagegate.access.policy import AccessPolicy, Caller, may_link, may_use_relay
from imagegate.core.errors import InvalidRequest, NotConfirmed
from imagegate.mcp.auth import current_identity
from imagegate.mcp.elicit import Confirmer, NeedsInput
from imagegate.mcp.results import Failure, ImagesResult, image_content, image_record
from imagegate.relays.base import ProgressFn
from imagegate.service.generation import GenerateArgs, Stopwatch
from imagegate.service.images import ImageService, Made
from imagegate.web.too_large import MCP_MAX_REQUEST_BYTES

SERVICE_KEY = "imagegate.service"
POLICY_KEY = "imagegate.policy"

Prompt = Annotated[str, Field(description="What to draw, in plain words.")]
AssetIdArg = Annotated[str, Field(description="One of your asset ids (img_...).")]


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


SizeArg = Annotated[
    str | None, Field(description="WIDTHxHEIGHT; default: the relay's (edits: the input's).")
]
FormatArg = Annotated[
    Literal["png", "jpeg", "webp"] | None, Field(description="Default: the relay's (png).")
]
QualityArg = Annotated[
    Literal["low", "medium", "high", "auto"] | None,
    Field(description="Rendering quality, if the relay has it (list_relays: qualities)."),
]
BackgroundArg = Annotated[
    Literal["transparent", "opaque", "auto"] | None,
    Field(description="transparent needs png or webp (list_relays: backgrounds)."),
]
CompressionArg = Annotated[int | None, Field(description="0-100, for jpeg and webp.")]
SeedArg = Annotated[int | None, Field(description="Same seed, same image (if supported).")]
NegativeArg = Annotated[str | None, Field(description="What to avoid (if supported).")]
RelayArg = Annotated[str | None, Field(description="A relay name from list_relays.")]
ThumbnailArg = Annotated[bool, Field(description="Also inline a small preview.")]
CountArg = Annotated[int, Field(description="How many images.", ge=1, le=10)]


async def generate_image(
    prompt: Prompt,
    ctx: Context,
    size: SizeArg = None,
    n: CountArg = 1,
    output_format: FormatArg = None,
    quality: QualityArg = None,
    background: BackgroundArg = None,
    compression: CompressionArg = None,
    seed: SeedArg = None,
    negative_prompt: NegativeArg = None,
    partial_images: Annotated[
        int,
        Field(description="Partial images to stream as progress (list_relays).", ge=0, le=3),
    ] = 0,
    relay: RelayArg = None,
    thumbnail: ThumbnailArg = False,
) -> ToolResult | InputRequiredResult:
    """Generate images from a prompt; each is stored for you and returned with a link.
    Options a relay does not support are refused with what it does support."""
    args = GenerateArgs(
        prompt,
        size=size,
        n=n,
        output_format=output_format,
        seed=seed,
        relay=relay,
        quality=quality,
        background=background,
        compression=compression,
        negative_prompt=negative_prompt,
        partial_images=partial_images,
    )
    caller = caller_of(ctx)

    async def make(service: ImageService, progress: ProgressFn, confirm: Confirmer) -> Made:
        return Made(await service.generate(caller, args, progress, confirm))

    return await _making(ctx, make, thumbnail, "Generated")


async def edit_image(
    prompt: Prompt,
    images: Annotated[
        list[str],
        Field(
            description=(
                "Images to edit, or several references to combine into one result (up to "
                "the relay's max_inputs, list_relays): your asset ids, or "
                "data:image/...;base64 URLs; over stdio also file paths under input_root."
            ),
            min_length=1,
            max_length=16,
        ),
    ],
    ctx: Context,
    mask: Annotated[
        str | None,
        Field(
            description=(
                "An asset id or data:image/png;base64 URL of a PNG the size of the first "
                "image: its transparent pixels mark where to edit."
            )
        ),
    ] = None,
    batch: Annotated[
        bool,
        Field(description="Edit each image separately with the same prompt, one result each."),
    ] = False,
    size: SizeArg = None,
    n: CountArg = 1,
    output_format: FormatArg = None,
    quality: QualityArg = None,
    background: BackgroundArg = None,
    input_fidelity: Annotated[
        Literal["low", "high"] | None, Field(description="How closely to keep the inputs.")
    ] = None,
    seed: SeedArg = None,
    negative_prompt: NegativeArg = None,
    relay: RelayArg = None,
    thumbnail: ThumbnailArg = False,
) -> ToolResult | InputRequiredResult:
    """Edit images with a prompt, optionally inside a mask; or combine several reference
    images into new ones; or (batch) apply one prompt to each image separately. Results
    are stored for you like generated images; a batch reports failures per image."""
    args = GenerateArgs(
        prompt,
        size=size,
        n=n,
        output_format=output_format,
        seed=seed,
        relay=relay,
        quality=quality,
        background=background,
        negative_prompt=negative_prompt,
        input_fidelity=input_fidelity,
    )
    caller = caller_of(ctx)

    async def make(service: ImageService, progress: ProgressFn, confirm: Confirmer) -> Made:
        return await service.edit(caller, args, images, mask, batch, progress, confirm)

    return await _making(ctx, make, thumbnail, "Edited")


async def get_usage(
    ctx: Context,
    subject: Annotated[
        str | None, Field(description="Admins only: another subject's usage.")
    ] = None,
) -> ToolResult:
    """Your usage today and this month, your limits, and when they reset."""
    return _usage_result(await service_of(ctx).usage(caller_of(ctx), subject))


async def reset_usage(
    subject: Annotated[
        str, Field(description="The subject whose counters to reset.", min_length=1)
    ],
    ctx: Context,
) -> ToolResult:
    """Admin: reset a subject's image and spend counters for today and this month."""
    service = service_of(ctx)
    await service.reset_usage(subject)
    return _usage_result(await service.usage(caller_of(ctx), subject))


PROGRESS_STEP = 0.1


def _progress(ctx: Context, watch: Stopwatch) -> ProgressFn:
    """Progress notifications in percent. MCP wants every value above the one before:
    a relay that goes back, or doesn't know, still moves forward by a step, and its
    message goes out; 100 is kept for the end."""
    last = -PROGRESS_STEP

    async def progress(fraction: float | None, message: str) -> None:
        nonlocal last
        value = -1.0 if fraction is None else round(fraction * 100, 1)
        value = min(max(value, round(last + PROGRESS_STEP, 1)), 99.9)
        if value <= last:
            return
        last = value
        await ctx.report_progress(value, 100, f"{message} ({watch.elapsed():.1f}s)")

    return progress


MakeFn = Callable[[ImageService, ProgressFn, Confirmer], Awaitable[Made]]


async def _making(
    ctx: Context, make: MakeFn, thumbnail: bool, verb: str
) -> ToolResult | InputRequiredResult:
    """Run a generation or edit with progress and paid-call confirmation; shape what
    it made, or the question a 2026-07-28 client must answer, or the user's no."""
    service = service_of(ctx)
    watch = Stopwatch()
    confirm = Confirmer(ctx, service.spend_once)
    try:
        made = await make(service, _progress(ctx, watch), confirm)
    except NotConfirmed as refusal:
        return _not_confirmed(refusal, confirm)
    except NeedsInput as question:
        return question.result
    return await _made(ctx, service, made, watch, thumbnail, verb, confirm)


async def _made(
    ctx: Context,
    service: ImageService,
    made: Made,
    watch: Stopwatch,
    thumbnail: bool,
    verb: str,
    confirm: Confirmer,
) -> ToolResult:
    records = [image_record(asset, service.publish(asset)) for asset in made.assets]
    thumbs = await service.thumbnails(made.assets) if thumbnail else None
    await ctx.report_progress(100, 100, f"done ({watch.elapsed():.1f}s)")
    failures = [Failure(**asdict(failure)) for failure in made.failures]
    result = ImagesResult(
        images=records,
        elapsed_seconds=watch.elapsed(),
        failures=failures,
        confirmation=confirm.outcome,
        estimated_cost=confirm.estimate,
    )
    heading = f"{verb} {len(records)} image(s) in {watch.elapsed():.1f}s:"
    if failures:
        heading += (
            f" ({len(failures)} failed: "
            + "; ".join(f"#{f.index + 1} {f.error}" for f in failures)
            + ")"
        )
    return _images_result(result, heading, thumbs)


def _not_confirmed(refusal: NotConfirmed, confirm: Confirmer) -> ToolResult:
    """A paid call the user didn't confirm: a plain result saying so, not an error."""
    result = ImagesResult(
        images=[],
        confirmation=confirm.outcome,
        estimated_cost=confirm.estimate,
    )
    return ToolResult(content=str(refusal), structured_content=result.structured())


async def list_images(
    ctx: Context,
    limit: Annotated[int, Field(description="Page size.", ge=1)] = 20,
    cursor: Annotated[str | None, Field(description="next_cursor of the previous page.")] = None,
    owner: Annotated[
        str | None, Field(description="Admins only: another subject's images, or '*' for all.")
    ] = None,
) -> ToolResult:
    """List your images, newest first. Use get_image for a download link."""
    page = await service_of(ctx).list_page(caller_of(ctx), owner, limit, cursor)
    records = [image_record(asset, None) for asset in page.assets]
    heading = f"{len(records)} image(s)" + (", more with next_cursor" if page.next_cursor else "")
    result = ImagesResult(images=records, next_cursor=page.next_cursor)
    return _images_result(result, heading + ":")


async def get_image(asset_id: AssetIdArg, ctx: Context) -> ToolResult:
    """Metadata of one of your images with a fresh download link."""
    service = service_of(ctx)
    caller = caller_of(ctx)
    asset = await service.get(caller, asset_id)
    if not may_link(caller, asset.owner):
        result = ImagesResult(images=[image_record(asset, None)])
        return _images_result(
            result, f"Image {asset.id} of {asset.owner} (no link: needs scope images:share):"
        )
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
    asset = await service.get(caller_of(ctx), asset_id)
    result = ImagesResult(images=[image_record(asset, service.publish(asset, ttl_seconds))])
    return _images_result(result, f"Download link for {asset.id}:")


async def delete_image(asset_id: AssetIdArg, ctx: Context) -> ToolResult:
    """Delete one of your images; its download links stop working."""
    asset = await service_of(ctx).delete(caller_of(ctx), asset_id)
    return ToolResult(content=f"Deleted {asset.id}.", structured_content={"deleted": asset.id})


async def list_relays(ctx: Context) -> ToolResult:
    """The relays you may use: name, kind, model, whether they cost money (with their
    price table), their defaults, and what they support (an option not listed is not)."""
    relays = service_of(ctx).relays
    caller = caller_of(ctx)
    usable = [relay for relay in relays.all() if may_use_relay(caller, relay.name)]
    listed = [
        _without_none(
            {
                "name": relay.name,
                "kind": relay.kind,
                "description": relay.description or None,
                "paid": relay.paid,
                "model": relay.model,
                "price": relay.price.model_dump() if relay.price else None,
                "defaults": _without_none(
                    {
                        "size": str(relay.defaults.size),
                        "output_format": relay.defaults.output_format.value,
                        "quality": relay.defaults.quality,
                    }
                ),
                "capabilities": relay.capabilities.describe(),
            }
        )
        for relay in usable
    ]
    text = f"Relays you may use (default {relays.default}): " + "; ".join(
        f"{relay.name} ({relay.kind}{', ' + relay.model if relay.model else ''}, "
        f"{'paid' if relay.paid else 'free'})"
        for relay in usable
    )
    return ToolResult(
        content=text, structured_content={"default": relays.default, "relays": listed}
    )


async def server_info(ctx: Context) -> ToolResult:
    """Version, transports and limits of this server, and who you are to it."""
    service = service_of(ctx)
    settings = service.settings
    caller = caller_of(ctx)
    info: dict[str, Any] = {
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
    if ctx.transport != "stdio":
        info["limits"]["max_request_bytes"] = MCP_MAX_REQUEST_BYTES  # base64 images count
    text = (
        f"imagegate {__version__} over {ctx.transport}; you are {caller.subject} "
        f"(scopes: {', '.join(sorted(caller.scopes))}); download links "
        f"{'on' if service.links_enabled else 'off'}"
    )
    return ToolResult(content=text, structured_content=info)


def _usage_result(usage: dict[str, Any]) -> ToolResult:
    counts = usage["usage"]
    text = (
        f"{usage['subject']}: {counts['images_today']} image(s) and {counts['calls_today']} "
        f"call(s) today, {counts['running']} running; spent {counts['spend_today']} today, "
        f"{counts['spend_month']} this month"
    )
    return ToolResult(content=text, structured_content=usage)


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _images_result(
    result: ImagesResult, heading: str, thumbnails: list[bytes] | None = None
) -> ToolResult:
    return ToolResult(
        content=image_content(result.images, heading, thumbnails),
        structured_content=result.structured(),
    )
