"""The offline relay: draws the prompt's words on a seeded background with Pillow.

Same prompt, size, format and seed give the same bytes. Costs nothing, needs no network:
it is the embedded default and the relay the test suite and benchmarks run against.
"""

import hashlib
import io
import random
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from secrets import randbelow
from typing import Literal

import anyio
from PIL import Image, ImageDraw, ImageFont
from pydantic import Field

from imagegate.core.cpu import run_cpu
from imagegate.core.images import OUTPUT_FORMATS, ImageFormat
from imagegate.relays.base import (
    Capabilities,
    ImageRequest,
    ProgressFn,
    RelayDefaults,
    RelayImage,
    RelayKind,
    SecretLookup,
    Size,
    StageFn,
    discard_all,
)
from imagegate.relays.config import PriceTable, RelayConfig

_PROGRESS_TICK_SECONDS = 0.25


class PlaceholderRelayConfig(RelayConfig):
    """The offline relay: draws an image locally with Pillow; costs nothing."""

    kind: Literal["placeholder"]
    description: str = "Offline placeholder images drawn locally (free, no network)"
    paid: Literal[False] = False
    delay_seconds: float = Field(default=0.0, ge=0, le=60)
    """Simulated generation time, reported as progress; for demos and benchmarks."""


class PlaceholderRelay:
    """Generates, and edits by drawing the prompt over the first input image."""

    kind = "placeholder"
    paid = False
    model: str | None = None
    price: PriceTable | None = None
    defaults = RelayDefaults(size=Size(1024, 1024), output_format=ImageFormat.PNG)
    capabilities = Capabilities(
        output_formats=OUTPUT_FORMATS,
        max_n=10,
        min_side=64,
        max_side=4096,
        seed=True,
        edit=True,
        max_inputs=10,
        mask=True,
    )

    def __init__(
        self, name: str, config: PlaceholderRelayConfig, secrets: SecretLookup | None = None
    ) -> None:
        self.name = name
        self.description = config.description
        self.traits = frozenset(config.traits)
        self._config = config
        self._delay = config.delay_seconds

    def render_prompt(self, prompt: str) -> str:
        return self._config.render_prompt(prompt)

    async def aclose(self) -> None:
        return None

    async def generate(
        self, request: ImageRequest, stage: StageFn, progress: ProgressFn
    ) -> list[RelayImage]:
        base_seed = request.seed if request.seed is not None else randbelow(2**31)
        inputs = tuple(image.path for image in request.images)
        mask = request.mask.path if request.mask else None
        await self._simulate_work(progress)
        drawn = 0.5 if self._delay > 0 else 0.0  # the simulated work took the first half
        images: list[RelayImage] = []
        try:
            for index in range(request.n):
                seed = base_seed + index
                fraction = drawn + (1 - drawn) * index / request.n
                await progress(fraction, f"drawing image {index + 1} of {request.n}")
                data = await run_cpu(
                    draw_placeholder,
                    request.prompt,
                    request.size,
                    request.output_format,
                    seed,
                    inputs,
                    mask,
                )
                staged = stage()
                images.append(RelayImage(staged, params={"seed": seed}))
                staged.write(data)
                staged.finish()
        except BaseException:
            discard_all(images)
            raise
        return images

    async def _simulate_work(self, progress: ProgressFn) -> None:
        if self._delay <= 0:
            return
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < self._delay:
            await progress(min(elapsed / self._delay, 1.0) * 0.5, "generating")
            await anyio.sleep(min(_PROGRESS_TICK_SECONDS, self._delay - elapsed))


KIND = RelayKind(PlaceholderRelayConfig, PlaceholderRelay)


def draw_placeholder(
    prompt: str,
    size: Size,
    fmt: ImageFormat,
    seed: int,
    inputs: Sequence[Path] = (),
    mask: Path | None = None,
) -> bytes:
    """Render one image; deterministic in its arguments.

    Without inputs: the caption on a striped canvas. An edit shows every edit
    feature: the first input (resized) with the caption, the other inputs
    (references) as a row of thumbnails, and with a mask the change stays where the
    mask is transparent (tinted there, so the masked area visibly changed)."""
    if not inputs:
        image, draw = _striped_canvas(prompt, size, seed)
    else:
        with Image.open(inputs[0]) as source:
            original = source.convert("RGB").resize((size.width, size.height))
        image = original.copy()
        if mask is not None:
            image = Image.blend(image, Image.new("RGB", image.size, _colour(prompt, seed)), 0.4)
        _draw_references(image, inputs[1:])
        draw = ImageDraw.Draw(image)
    _draw_caption(draw, prompt, size, f"placeholder · seed {seed} · {size}")
    if inputs and mask is not None:
        with Image.open(mask) as mask_image:
            keep = mask_image.convert("RGBA").getchannel("A").resize(image.size)
        image = Image.composite(original, image, keep)  # opaque mask: the original stays
    out = io.BytesIO()
    if fmt is ImageFormat.JPEG:
        image.save(out, format="JPEG", quality=90)
    elif fmt is ImageFormat.WEBP:
        image.save(out, format="WEBP", quality=90)
    else:
        image.save(out, format="PNG")
    return out.getvalue()


def _colour(prompt: str, seed: int) -> tuple[int, int, int]:
    digest = hashlib.sha256(f"{seed}\n{prompt}".encode()).digest()
    return digest[0], digest[1], digest[2]


def _draw_references(image: Image.Image, references: Sequence[Path]) -> None:
    """Each reference as a framed thumbnail, in a row above the footer, from the right."""
    if not references:
        return
    width, height = image.size
    side = max(8, min(height // 4, width // (len(references) + 1)))
    margin = max(2, side // 8)
    bottom = height - max(12, height // 12) - margin
    for number, reference in enumerate(references, 1):
        with Image.open(reference) as source:
            thumb = source.convert("RGB").resize((side, side))
        left = width - number * (side + margin)
        frame = (left - 1, bottom - side - 1, left + side, bottom)
        ImageDraw.Draw(image).rectangle(frame, outline=(255, 255, 255))
        image.paste(thumb, (left, bottom - side))


def _striped_canvas(prompt: str, size: Size, seed: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    digest = hashlib.sha256(f"{seed}\n{prompt}".encode()).digest()
    rng = random.Random(digest)  # noqa: S311 - colours, not secrets
    background = tuple(rng.randrange(40, 200) for _ in range(3))
    accent = tuple(min(255, c + 55) for c in background)
    image = Image.new("RGB", (size.width, size.height), background)
    draw = ImageDraw.Draw(image)
    stripe = max(8, min(size.width, size.height) // 12)
    for offset in range(-size.height, size.width, stripe * 2):
        draw.polygon(
            [
                (offset, 0),
                (offset + stripe, 0),
                (offset + stripe + size.height, size.height),
                (offset + size.height, size.height),
            ],
            fill=accent,
        )
    return image, draw


def _draw_caption(draw: ImageDraw.ImageDraw, prompt: str, size: Size, footer: str) -> None:
    short_side = min(size.width, size.height)
    font_px = max(10, short_side // 14)
    font = ImageFont.load_default(size=font_px)
    small = ImageFont.load_default(size=max(8, font_px // 2))
    margin = max(4, short_side // 16)
    columns = max(8, int((size.width - 2 * margin) / (font_px * 0.55)))
    max_lines = max(1, int((size.height - 3 * margin) / (font_px * 1.25)) - 1)
    lines = textwrap.wrap(" ".join(prompt.split()), width=columns) or [""]
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], textwrap.shorten(lines[max_lines - 1] + " …", columns)]
    text = "\n".join(lines)
    box = draw.multiline_textbbox((margin, margin), text, font=font, spacing=font_px // 4)
    pad = max(2, font_px // 3)
    draw.rectangle((box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad), fill=(255, 255, 255))
    draw.multiline_text((margin, margin), text, font=font, fill=(20, 20, 20), spacing=font_px // 4)
    # The footer on an opaque band: an edit of a placeholder image covers the old one.
    band = max(12, size.height // 12)
    draw.rectangle((0, size.height - band, size.width, size.height), fill=(20, 20, 20))
    draw.text(
        (margin, size.height - band // 2), footer, font=small, fill=(255, 255, 255), anchor="lm"
    )
