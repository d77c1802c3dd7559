"""The generation pipeline: check the request, call the relay, inspect every image.

Shared by the MCP tools and the `imagegate generate` command. It ends with inspected
staged blobs; what happens to them (stored as assets, or moved to a file) is the
caller's business. Any failure discards everything staged: nothing half-made survives.
"""

import functools
import re
import time
from dataclasses import dataclass

from imagegate.config import Settings
from imagegate.core.cpu import run_cpu
from imagegate.core.errors import InvalidRequest
from imagegate.core.images import OUTPUT_FORMATS, ImageFormat, ImageInfo, inspect_image
from imagegate.core.staging import StagedBlob
from imagegate.core.tracing import span
from imagegate.relays.base import (
    ImageRequest,
    InputImage,
    ProgressFn,
    Relay,
    RelayImage,
    Size,
    StageFn,
)


@dataclass(frozen=True)
class GenerateArgs:
    """Raw caller input, before validation; None means "the relay's default"."""

    prompt: str
    size: str | None = None
    n: int = 1
    output_format: str | None = None
    seed: int | None = None
    relay: str | None = None
    quality: str | None = None
    background: str | None = None
    compression: int | None = None
    negative_prompt: str | None = None
    partial_images: int = 0
    input_fidelity: str | None = None
    preset: str | None = None
    """A style preset's name (service.presets): applied before anything else."""
    needs: tuple[str, ...] = ()
    """With relay="auto": the traits the chosen relay must have (service.choice)."""


@dataclass
class Produced:
    image: RelayImage
    info: ImageInfo


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # not \t \n \r


def build_request(
    args: GenerateArgs,
    relay: Relay,
    settings: Settings,
    images: tuple[InputImage, ...] = (),
    mask: InputImage | None = None,
    user: str | None = None,
) -> ImageRequest:
    """Validate caller input against server limits and fill in the relay's defaults.
    What the relay itself supports is checked by its Capabilities in `produce`."""
    prompt = args.prompt.strip()
    if not prompt:
        raise InvalidRequest("prompt must not be empty")
    if _CONTROL.search(prompt):
        raise InvalidRequest("prompt contains control characters (only newlines and tabs)")
    if len(prompt) > settings.max_prompt_chars:
        raise InvalidRequest(
            f"prompt is {len(prompt)} characters; the limit is {settings.max_prompt_chars}"
        )
    if not 1 <= args.n <= settings.max_images_per_call:
        raise InvalidRequest(f"n must be between 1 and {settings.max_images_per_call}")
    defaults = relay.defaults
    if args.size:
        size = Size.parse(args.size)
    elif images:
        size = _nearest_allowed(Size(images[0].width, images[0].height), relay)
    else:
        size = defaults.size
    if size.width * size.height > settings.max_image_pixels:
        raise InvalidRequest(
            f"size {size} exceeds the server's limit of {settings.max_image_pixels} pixels"
        )
    fmt = parse_output_format(args.output_format) if args.output_format else defaults.output_format
    if args.seed is not None and not 0 <= args.seed < 2**31:
        raise InvalidRequest("seed must be between 0 and 2147483647")
    if args.compression is not None and not 0 <= args.compression <= 100:
        raise InvalidRequest("compression must be between 0 and 100")
    if not 0 <= args.partial_images <= 3:
        raise InvalidRequest("partial_images must be between 0 and 3")
    negative = (args.negative_prompt or "").strip() or None
    return ImageRequest(
        prompt=relay.render_prompt(prompt),
        size=size,
        n=args.n,
        output_format=fmt,
        quality=args.quality or defaults.quality,
        background=args.background or defaults.background,
        compression=args.compression if args.compression is not None else defaults.compression,
        seed=args.seed,
        negative_prompt=negative,
        partial_images=args.partial_images,
        images=images,
        mask=mask,
        input_fidelity=args.input_fidelity,
        user=user,
    )


def _nearest_allowed(size: Size, relay: Relay) -> Size:
    """An edit keeps its input's size, or the relay's allowed size closest in shape."""
    allowed = relay.capabilities.sizes
    if allowed is None or size in allowed:
        return size
    ratio = size.width / size.height
    return min(allowed, key=lambda s: abs(s.width / s.height - ratio))


def parse_output_format(value: str) -> ImageFormat:
    name = value.strip().lower()
    name = "jpeg" if name == "jpg" else name
    for fmt in OUTPUT_FORMATS:
        if fmt.value == name:
            return fmt
    allowed = ", ".join(f.value for f in OUTPUT_FORMATS)
    raise InvalidRequest(f"output_format must be one of {allowed}; got {value!r}")


async def produce(
    relay: Relay,
    request: ImageRequest,
    settings: Settings,
    stage: StageFn,
    progress: ProgressFn,
) -> list[Produced]:
    """Run the relay and inspect what it made; on any failure nothing stays staged, and
    nothing the relay staged but did not return (an answer's extra images) either."""
    relay.capabilities.check(request, relay.name)
    staged: list[StagedBlob] = []

    def tracked() -> StagedBlob:
        blob = stage()
        staged.append(blob)
        return blob

    images: list[RelayImage] = []
    try:
        with span("relay", relay=relay.name, kind=relay.kind) as step:
            images = await relay.generate(request, tracked, progress)
            step.set("images", len(images))
    finally:
        returned = {id(image.staged) for image in images}
        for blob in staged:
            if id(blob) not in returned:
                blob.discard()
    produced: list[Produced] = []
    try:
        for image in images:
            info = await run_cpu(
                functools.partial(
                    inspect_image,
                    image.staged.path,
                    # The cap is the upstream's: a chunk the marking inserted is not.
                    max_bytes=settings.max_image_bytes + image.staged.inserted,
                    max_pixels=settings.max_image_pixels,
                    png_whole=image.staged.png_whole,
                )
            )
            produced.append(Produced(image, info))
    except BaseException:
        for image in images:
            image.staged.discard()
        raise
    return produced


class Stopwatch:
    """Elapsed seconds since creation, for progress messages and results."""

    def __init__(self) -> None:
        self._started = time.monotonic()

    def elapsed(self) -> float:
        return round(time.monotonic() - self._started, 3)
