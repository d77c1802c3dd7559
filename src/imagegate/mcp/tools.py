"""MCP tools: parse arguments, call the ImageService, shape the result. Nothing more.
Each is declared, with its scope and annotations, in `specs.TOOLS`."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from fastmcp import Context
from fastmcp.tools import ToolResult
from mcp_types import InputRequiredResult
from pydantic import Field

from imagegate import __version__
from imagegate.access.policy import AccessPolicy, Caller, may_link, may_use_relay
from imagegate.core.errors import InvalidRequest, NotConfirmed
from imagegate.core.views import View
from imagegate.mcp.auth import current_identity
from imagegate.mcp.elicit import Confirmer, NeedsInput
from imagegate.mcp.jobs import job_record, start_job, wait_for
from imagegate.mcp.results import ImagesResult, image_content, image_record, iso
from imagegate.mcp.tasks import task_created, task_requested
from imagegate.relays.config import AUTO, Trait
from imagegate.service.generation import GenerateArgs
from imagegate.service.images import Admitted, ImageService
from imagegate.service.jobs import JobRunner, wait_bound
from imagegate.service.presets import Preset
from imagegate.service.saving import SavePlan, extension_format, plan_save
from imagegate.service.uploads import Uploads
from imagegate.web.too_large import MCP_MAX_REQUEST_BYTES

SERVICE_KEY = "imagegate.service"
UPLOADS_KEY = "imagegate.uploads"
POLICY_KEY = "imagegate.policy"
JOBS_KEY = "imagegate.jobs"

Prompt = Annotated[str, Field(description="What to draw, in plain words.")]
AssetIdArg = Annotated[str, Field(description="One of your asset ids (img_...).")]


def service_of(ctx: Context) -> ImageService:
    service = ctx.lifespan_context.get(SERVICE_KEY)
    if not isinstance(service, ImageService):
        raise RuntimeError("imagegate service missing from the server lifespan")
    return service


def runner_of(ctx: Context) -> JobRunner:
    runner = ctx.lifespan_context.get(JOBS_KEY)
    if not isinstance(runner, JobRunner):
        raise RuntimeError("imagegate job runner missing from the server lifespan")
    return runner


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
RelayArg = Annotated[
    str | None, Field(description="A relay from list_relays, or auto: the cheapest that fits.")
]
NeedsArg = Annotated[list[Trait] | None, Field(description="relay=auto: traits it must have.")]
PresetArg = Annotated[
    str | None, Field(description="From list_presets: wraps the prompt, sets defaults.")
]
ThumbnailArg = Annotated[bool, Field(description="Also inline a small preview.")]
CountArg = Annotated[int, Field(description="How many images.", ge=1, le=10)]
SaveToArg = Annotated[
    str | None, Field(description="stdio: also save under output_root, e.g. assets/hero.png.")
]
OverwriteArg = Annotated[bool, Field(description="Replace an existing save_to file.")]
WaitArg = Annotated[
    float | None,
    Field(description="Most seconds to wait (default, maximum: server_info).", ge=0),
]


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
    needs: NeedsArg = None,
    preset: PresetArg = None,
    thumbnail: ThumbnailArg = False,
    wait_seconds: WaitArg = None,
    save_to: SaveToArg = None,
    overwrite: OverwriteArg = False,
) -> ToolResult | InputRequiredResult:
    """Generate images from a prompt; each is stored for you and returned with a link.
    Options a relay does not support are refused with what it does support. If not
    done in time, answers status running and a job_id for get_job."""
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
        needs=tuple(needs or ()),
        preset=preset,
    )
    caller = caller_of(ctx)

    async def admit(service: ImageService, confirm: Confirmer, args: GenerateArgs) -> Admitted:
        return await service.admit(caller, args, confirm)

    return await _making(
        ctx, "generate_image", admit, thumbnail, wait_seconds, args, SaveTo(save_to, overwrite)
    )


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
    needs: NeedsArg = None,
    preset: PresetArg = None,
    thumbnail: ThumbnailArg = False,
    wait_seconds: WaitArg = None,
    save_to: SaveToArg = None,
    overwrite: OverwriteArg = False,
) -> ToolResult | InputRequiredResult:
    """Edit images with a prompt, optionally inside a mask; or combine several reference
    images into new ones; or (batch) apply one prompt to each image separately. Results
    are stored for you like generated images; a batch reports failures per image. If
    not done in time, answers status running and a job_id for get_job."""
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
        needs=tuple(needs or ()),
        preset=preset,
    )
    caller = caller_of(ctx)

    async def admit(service: ImageService, confirm: Confirmer, args: GenerateArgs) -> Admitted:
        return await service.admit(caller, args, confirm, images, mask, batch)

    return await _making(
        ctx, "edit_image", admit, thumbnail, wait_seconds, args, SaveTo(save_to, overwrite)
    )


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


async def usage_report(
    since: Annotated[str, Field(description="First day, YYYY-MM-DD (UTC).")],
    ctx: Context,
    until: Annotated[str | None, Field(description="Day after the last; default tomorrow.")] = None,
    by: Literal["subject", "relay", "day"] = "subject",
) -> ToolResult:
    """Admin: images, spend and calls per subject, relay or day over a period."""
    report = await service_of(ctx).usage_report(since, until, by)
    total = report.total
    return ToolResult(
        content=f"{len(report.rows)} rows; total {total.images} images, {total.spend} spent.",
        structured_content=report.as_dict(),
    )


AdmitFn = Callable[[ImageService, Confirmer, GenerateArgs], Awaitable[Admitted]]


@dataclass(frozen=True)
class SaveTo:
    """Where a caller asked for copies (stdio): `save_to`, and whether to overwrite."""

    path: str | None
    overwrite: bool


async def _making(
    ctx: Context,
    tool: str,
    admit: AdmitFn,
    thumbnail: bool,
    wait_seconds: float | None,
    args: GenerateArgs,
    save_to: SaveTo,
) -> ToolResult | InputRequiredResult:
    """Admit a generation or edit in this call (checks, and a paid call's question:
    its answer, or the question a 2026-07-28 client must answer, or the user's no),
    then run it as a job and wait for it a bounded time (or, as a task, not at all)."""
    service = service_of(ctx)
    runner = runner_of(ctx)
    caller = caller_of(ctx)
    wait = wait_bound(wait_seconds, service.settings.sync_wait_seconds)
    args = await service.presets.applied(caller, args)  # its relay decides a save's format
    args = _save_format(args, save_to)
    save_plan = _save_plan(ctx, service, args, save_to)
    runner.check_room(caller.subject)  # before anyone is asked to pay for a job
    confirm = Confirmer(ctx, service.spend_once)
    try:
        admitted = await admit(service, confirm, args)
    except NotConfirmed as refusal:
        return _not_confirmed(refusal, confirm)
    except NeedsInput as question:
        return question.result
    job = await start_job(service, runner, caller, tool, admitted, confirm, thumbnail, save_plan)
    if task_requested(ctx):
        return task_created(ctx, job, service.settings.job_retention_seconds)
    return await wait_for(
        ctx, service, runner, caller, job.id, wait, started_here=True, stored=admitted.made.assets
    )


def _save_format(args: GenerateArgs, save_to: SaveTo) -> GenerateArgs:
    """relay="auto" saving to "hero.png" without an output_format: the name's format.
    Auto then chooses among the relays that make PNG (never WebP bytes in hero.png),
    and the save is fully checked (an existing file too) before anything is paid."""
    if save_to.path is None or args.relay != AUTO or args.output_format is not None:
        return args
    return replace(args, output_format=extension_format(save_to.path))


def _save_plan(
    ctx: Context, service: ImageService, args: GenerateArgs, save_to: SaveTo
) -> SavePlan | None:
    """Check `save_to` before anything is made."""
    if save_to.path is None:
        return None
    output_format = args.output_format
    if output_format is None and args.relay != AUTO:  # auto: not chosen yet
        output_format = service.relays.get(args.relay).defaults.output_format.value
    return plan_save(
        service.settings.output_root,
        save_to.path,
        local=ctx.transport == "stdio",
        output_format=output_format,
        count=args.n,
        overwrite=save_to.overwrite,
    )


def _not_confirmed(refusal: NotConfirmed, confirm: Confirmer) -> ToolResult:
    """A paid call the user didn't confirm: a plain result saying so, not an error."""
    result = ImagesResult(
        images=[],
        confirmation=confirm.outcome,
        estimated_cost=confirm.estimate,
    )
    return ToolResult(content=str(refusal), structured_content=result.structured())


JobIdArg = Annotated[str, Field(description="From generate_image or edit_image.")]


async def get_job(
    job_id: JobIdArg,
    ctx: Context,
    wait_seconds: WaitArg = None,
) -> ToolResult:
    """Wait for one of your jobs; return its result as its call would have, or its
    status if still running."""
    service = service_of(ctx)
    wait = wait_bound(wait_seconds, service.settings.sync_wait_seconds)
    return await wait_for(
        ctx, service, runner_of(ctx), caller_of(ctx), job_id, wait, started_here=False
    )


async def cancel_job(job_id: JobIdArg, ctx: Context) -> ToolResult:
    """Stop one of your running jobs: its upstream request is aborted; nothing is
    stored or charged."""
    job = await runner_of(ctx).cancel(caller_of(ctx).subject, job_id)
    return ToolResult(
        content=f"Job {job.id}: {job.state.value}.", structured_content=job_record(job)
    )


async def list_jobs(
    ctx: Context,
    limit: Annotated[int, Field(description="Page size.", ge=1)] = 20,
    cursor: Annotated[str | None, Field(description="next_cursor of the previous page.")] = None,
) -> ToolResult:
    """Your jobs, newest first: status, progress, asset ids made or error. Finished
    jobs are kept a while (server_info)."""
    service = service_of(ctx)
    if not 1 <= limit <= service.settings.max_page_size:
        raise InvalidRequest(f"limit must be between 1 and {service.settings.max_page_size}")
    page = await runner_of(ctx).list(caller_of(ctx).subject, limit, cursor)
    records = [job_record(job) for job in page.jobs]
    structured: dict[str, Any] = {"jobs": records}
    if page.next_cursor:
        structured["next_cursor"] = page.next_cursor
    text = f"{len(records)} job(s): " + "; ".join(
        f"{record['job_id']} {record['tool']} {record['status']}" for record in records
    )
    return ToolResult(content=text, structured_content=structured)


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
    return _images_result(result, heading + ":", caller_of(ctx))


async def get_image(asset_id: AssetIdArg, ctx: Context) -> ToolResult:
    """Metadata of one of your images with a fresh download link."""
    service = service_of(ctx)
    caller = caller_of(ctx)
    asset = await service.get(caller, asset_id)
    if not may_link(caller, asset.owner):
        result = ImagesResult(images=[image_record(asset, None)])
        return _images_result(
            result,
            f"Image {asset.id} of {asset.owner} (no link: needs scope images:share):",
            caller,
        )
    result = ImagesResult(images=[image_record(asset, service.publish(asset))])
    return _images_result(result, f"Image {asset.id}:", caller)


async def create_download_link(
    asset_id: AssetIdArg,
    ctx: Context,
    ttl_seconds: Annotated[
        int | None, Field(description="Link lifetime; default and maximum in server_info.")
    ] = None,
    width: Annotated[int | None, Field(description="View: at most this wide.")] = None,
    height: Annotated[int | None, Field(description="View: at most this high.")] = None,
    fit: Annotated[
        Literal["contain", "cover", "crop"] | None, Field(description="View: into the box.")
    ] = None,
    format: Annotated[
        Literal["png", "jpeg", "webp"] | None, Field(description="View: convert to this.")
    ] = None,
    quality: Annotated[int | None, Field(description="View: 1-100, jpeg and webp.")] = None,
) -> ToolResult:
    """A signed download link to one of your images that works without a token until it
    expires; with view options, to a resized or converted copy. Anyone holding the link
    can download it."""
    service = service_of(ctx)
    if not service.links_enabled:
        raise InvalidRequest(
            "download links need the HTTP server; in stdio mode images are local files "
            "(see 'path'), or set public_url to an imagegate HTTP server sharing this state"
        )
    view = View.of(width, height, fit, format, quality, service.settings.max_image_pixels)
    caller = caller_of(ctx)
    asset = await service.get(caller, asset_id)
    published = service.publish(asset, ttl_seconds, view)
    result = ImagesResult(images=[image_record(asset, published)])
    return _images_result(result, f"Download link for {asset.id}:", caller)


async def create_upload_link(
    ctx: Context,
    filename: Annotated[
        str | None, Field(description="A label (the file's name).", max_length=255)
    ] = None,
    ttl_seconds: Annotated[
        int | None, Field(description="Link lifetime; default and maximum in server_info.")
    ] = None,
) -> ToolResult:
    """A single-use URL to upload one image file (the curl line given); the upload
    answers its asset_id, for edit_image. For files over about 3 MB."""
    uploads = ctx.lifespan_context.get(UPLOADS_KEY)
    if not isinstance(uploads, Uploads):
        raise InvalidRequest(
            "upload links need the HTTP server; over stdio, name files under input_root"
        )
    link = await uploads.create_link(caller_of(ctx), filename, ttl_seconds)
    structured = {
        "upload_url": link.url,
        "method": "PUT",
        "expires_at": iso(link.expires_at),
        "max_bytes": link.max_bytes,
        "curl": link.curl,
    }
    text = f"Upload one image (at most {link.max_bytes} bytes) with: {link.curl}"
    return ToolResult(content=text, structured_content=structured)


async def revoke_links(asset_id: AssetIdArg, ctx: Context) -> ToolResult:
    """End every download link of one of your images made so far (one leaked); the image
    stays, and links made after this work."""
    asset = await service_of(ctx).revoke_links(caller_of(ctx), asset_id)
    return ToolResult(
        content=f"Revoked the links of {asset.id} made so far.",
        structured_content={"revoked": asset.id},
    )


async def delete_image(asset_id: AssetIdArg, ctx: Context) -> ToolResult:
    """Delete one of your images; its download links stop working."""
    asset = await service_of(ctx).delete(caller_of(ctx), asset_id)
    return ToolResult(content=f"Deleted {asset.id}.", structured_content={"deleted": asset.id})


async def verify_image(asset_id: AssetIdArg, ctx: Context) -> ToolResult:
    """What marks one of your images carries: its XMP source type, and its C2PA
    manifest (valid, trusted, signer, actions, ingredients)."""
    found = await service_of(ctx).verify(caller_of(ctx), asset_id)
    manifest = _MANIFEST_STATES[found.manifest]
    said = "marked as AI-generated" if found.ai_generated else "not marked as AI-generated"
    return ToolResult(
        content=f"{asset_id}: {said}; {manifest}.",
        structured_content={"asset_id": asset_id, **found.as_dict()},
    )


_MANIFEST_STATES = {
    "none": "no C2PA manifest",
    "invalid": "an INVALID C2PA manifest",
    "untrusted": "a valid C2PA manifest, signer not trusted",
    "trusted": "a valid C2PA manifest, signer trusted",
}


async def list_relays(ctx: Context) -> ToolResult:
    """The relays you may use: name, kind, model, whether they cost money (with their
    price table), traits, their defaults, and what they support (an option not listed
    is not)."""
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
                "traits": sorted(relay.traits) or None,
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
        f"{'paid' if relay.paid else 'free'}{''.join(', ' + t for t in sorted(relay.traits))})"
        for relay in usable
    )
    return ToolResult(
        content=text, structured_content={"default": relays.default, "relays": listed}
    )


PresetNameArg = Annotated[str, Field(description="a-z, 0-9, - and _.", max_length=40)]
SHADOWED = "own, shadowed by the server's: calls use that one"


async def list_presets(ctx: Context) -> ToolResult:
    """Style presets for preset=, the server's and yours: each one's template ({prompt}
    is where yours goes) and the defaults it sets."""
    presets = await service_of(ctx).presets.visible(caller_of(ctx))
    text = f"{len(presets)} preset(s): " + "; ".join(
        f"{preset.name} ({SHADOWED if preset.shadowed else preset.owner})"
        f"{': ' + preset.description if preset.description else ''}"
        for preset in presets
    )
    return ToolResult(
        content=text, structured_content={"presets": [_preset_record(p) for p in presets]}
    )


async def save_preset(
    name: PresetNameArg,
    prompt: Annotated[str, Field(description="Template: {prompt} is where a call's goes.")],
    ctx: Context,
    negative_prompt: str | None = None,
    size: str | None = None,
    quality: Literal["low", "medium", "high", "auto"] | None = None,
    relay: str | None = None,
    description: str | None = None,
) -> ToolResult:
    """Save (or replace) a style preset of your own; its options become defaults of
    calls with preset=name."""
    values = {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "size": size,
        "quality": quality,
        "relay": relay,
        "description": description,
    }
    preset, saved = await service_of(ctx).presets.save(caller_of(ctx), name, values)
    return ToolResult(
        content=f"Preset {preset.name} {saved.value}; use it with preset={preset.name!r}.",
        structured_content={"preset": _preset_record(preset), "outcome": saved.value},
    )


async def delete_preset(name: PresetNameArg, ctx: Context) -> ToolResult:
    """Delete one of your own presets."""
    await service_of(ctx).presets.delete(caller_of(ctx), name)
    return ToolResult(content=f"Deleted preset {name}.", structured_content={"deleted": name})


def _preset_record(preset: Preset) -> dict[str, Any]:
    return _without_none(
        {
            "name": preset.name,
            "owner": preset.owner,
            "description": preset.description,
            "prompt": preset.prompt,
            "defaults": preset.defaults() or None,
            "shadowed": preset.shadowed or None,
        }
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
            "upload_ttl_seconds": settings.upload_ttl_seconds,
            "sync_wait_seconds": settings.sync_wait_seconds,
            "job_retention_seconds": settings.job_retention_seconds,
            "max_running_jobs": settings.max_running_jobs,
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


def _images_result(result: ImagesResult, heading: str, caller: Caller) -> ToolResult:
    return ToolResult(
        content=image_content(result.images, heading, caller.subject),
        structured_content=result.structured(),
    )
