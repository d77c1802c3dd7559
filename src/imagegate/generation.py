"""The generation pipeline: check the request, call the relay, inspect every image.

Shared by the MCP tools and the `imagegate generate` command. It ends with inspected
staged blobs; what happens to them (stored as assets, or moved to a file) is the
caller's business. Any failure discards everything staged: nothing half-made survives.
"""

import functools
import time
from dataclasses import dataclass

import anyio

from imagegate.config import Settings
from imagegate.errors import InvalidRequest
from imagegate.images import OUTPUT_FORMATS, ImageFormat, ImageInfo, inspect_image
from imagegate.relays.base import GenerationRequest, ProgressFn, Relay, RelayImage, Size, StageFn


@dataclass(frozen=True)
class GenerateArgs:
    """Raw caller input, before validation."""

    prompt: str
    size: str = "1024x1024"
    n: int = 1
    output_format: str = "png"
    seed: int | None = None
    relay: str | None = None


@dataclass
class Produced:
    image: RelayImage
    info: ImageInfo


def build_request(args: GenerateArgs, settings: Settings) -> GenerationRequest:
    """Validate caller input against server limits; relay limits are checked separately."""
    prompt = args.prompt.strip()
    if not prompt:
        raise InvalidRequest("prompt must not be empty")
    if len(prompt) > settings.max_prompt_chars:
        raise InvalidRequest(
            f"prompt is {len(prompt)} characters; the limit is {settings.max_prompt_chars}"
        )
    if not 1 <= args.n <= settings.max_images_per_call:
        raise InvalidRequest(f"n must be between 1 and {settings.max_images_per_call}")
    size = Size.parse(args.size)
    if size.width * size.height > settings.max_image_pixels:
        raise InvalidRequest(
            f"size {size} exceeds the server's limit of {settings.max_image_pixels} pixels"
        )
    fmt = parse_output_format(args.output_format)
    if args.seed is not None and not 0 <= args.seed < 2**31:
        raise InvalidRequest("seed must be between 0 and 2147483647")
    return GenerationRequest(prompt=prompt, size=size, n=args.n, output_format=fmt, seed=args.seed)


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
    request: GenerationRequest,
    settings: Settings,
    stage: StageFn,
    progress: ProgressFn,
) -> list[Produced]:
    """Run the relay and inspect what it made; on any failure nothing stays staged."""
    relay.capabilities.check(request, relay.name)
    images = await relay.generate(request, stage, progress)
    produced: list[Produced] = []
    try:
        for image in images:
            info = await anyio.to_thread.run_sync(
                functools.partial(
                    inspect_image,
                    image.staged.path,
                    max_bytes=settings.max_image_bytes,
                    max_pixels=settings.max_image_pixels,
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
