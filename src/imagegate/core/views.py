"""Views of an image: resized, cropped or converted copies, computed on demand.

A `View` says what to make: a box (`width`, `height`, either or both), how the image
fits it (`contain`: all of it, inside the box; `cover`: the box filled, the overflow cut
evenly; `crop`: the box cut from the middle, unscaled), a format and a quality. A view
is never larger than its source, stays within the pixel cap, and is upright (EXIF
orientation applied). `render` is pure CPU work: run it off the event loop.
"""

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image, ImageOps

from imagegate.core.errors import InvalidRequest
from imagegate.core.images import OUTPUT_FORMATS, ImageFormat

Fit = Literal["contain", "cover", "crop"]
FITS: tuple[Fit, ...] = ("contain", "cover", "crop")
MAX_SIDE = 4096
PARAMETERS = ("width", "height", "fit", "format", "quality")
"""A view's URL parameters."""


@dataclass(frozen=True)
class View:
    width: int | None = None
    height: int | None = None
    fit: Fit = "contain"
    format: ImageFormat | None = None
    """None: the source's (PNG for a GIF)."""
    quality: int | None = None
    """JPEG and WebP, 1-100; None: the encoder's default."""

    @classmethod
    def of(
        cls,
        width: int | None,
        height: int | None,
        fit: str | None,
        format: str | None,
        quality: int | None,
        max_pixels: int,
    ) -> "View":
        """A checked view; InvalidRequest says which value is out of range."""
        for name, side in (("width", width), ("height", height)):
            if side is not None and not 1 <= side <= MAX_SIDE:
                raise InvalidRequest(f"{name} must be between 1 and {MAX_SIDE}")
        if width is not None and height is not None and width * height > max_pixels:
            raise InvalidRequest(
                f"a view of {width}x{height} is over the pixel limit of {max_pixels}"
            )
        if fit is not None and fit not in FITS:
            raise InvalidRequest(f"fit must be one of {', '.join(FITS)}")
        chosen = None
        if format is not None:
            names = {f.value: f for f in OUTPUT_FORMATS} | {"jpg": ImageFormat.JPEG}
            if format.lower() not in names:
                raise InvalidRequest("format must be png, jpeg or webp")
            chosen = names[format.lower()]
        if quality is not None and not 1 <= quality <= 100:
            raise InvalidRequest("quality must be between 1 and 100")
        if fit in ("cover", "crop") and (width is None or height is None):
            raise InvalidRequest(f"fit={fit} needs both width and height")
        return cls(width, height, fit or "contain", chosen, quality)

    @classmethod
    def parsed(cls, query: Mapping[str, str], max_pixels: int) -> "View":
        """A checked view from URL parameters (what `query` writes); InvalidRequest
        for a value that is not a whole number or out of range."""

        def number(name: str) -> int | None:
            value = query.get(name)
            if value is None:
                return None
            if not (value.isascii() and value.isdigit()) or len(value) > 6:
                raise InvalidRequest(f"{name} must be a whole number")
            return int(value)

        return cls.of(
            number("width"),
            number("height"),
            query.get("fit"),
            query.get("format"),
            number("quality"),
            max_pixels,
        )

    @property
    def key(self) -> str:
        """The view as a short canonical string, for caches and link signatures."""
        parts = [
            f"w{self.width or ''}",
            f"h{self.height or ''}",
            self.fit,
            self.format.value if self.format else "",
            f"q{self.quality or ''}",
        ]
        return "-".join(parts)

    @property
    def query(self) -> str:
        """The view as URL parameters (what `of` reads back)."""
        pairs = [
            ("width", self.width),
            ("height", self.height),
            ("fit", self.fit if self.fit != "contain" else None),
            ("format", self.format.value if self.format else None),
            ("quality", self.quality),
        ]
        return "&".join(f"{name}={value}" for name, value in pairs if value is not None)

    @property
    def is_plain(self) -> bool:
        """No change at all: the image as stored."""
        return self == View()

    def output_format(self, source: ImageFormat) -> ImageFormat:
        if self.format is not None:
            return self.format
        return source if source in OUTPUT_FORMATS else ImageFormat.PNG


def render(path: Path, source: ImageFormat, view: View) -> bytes:
    """The view of the (already inspected) image at `path`, encoded."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        image = _fitted(image, view)
        fmt = view.output_format(source)
        if fmt is ImageFormat.JPEG and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        elif image.mode not in ("RGB", "RGBA", "L", "LA"):
            image = image.convert("RGBA")
        out = io.BytesIO()
        options: dict[str, object] = {}
        if view.quality is not None and fmt is not ImageFormat.PNG:
            options["quality"] = view.quality
        image.save(out, format=fmt.value.upper(), **options)
    return out.getvalue()


def _fitted(image: Image.Image, view: View) -> Image.Image:
    width, height = image.size
    box_w = min(view.width or width, width)
    box_h = min(view.height or height, height)
    if view.fit == "crop":
        left, top = (width - box_w) // 2, (height - box_h) // 2
        return image.crop((left, top, left + box_w, top + box_h))
    if view.fit == "cover":
        scale = max(box_w / width, box_h / height)
        resized = image.resize(
            (max(box_w, round(width * scale)), max(box_h, round(height * scale))),
            Image.Resampling.LANCZOS,
        )
        left = (resized.width - box_w) // 2
        top = (resized.height - box_h) // 2
        return resized.crop((left, top, left + box_w, top + box_h))
    if view.width is None and view.height is None:
        return image
    scale = min(box_w / width, box_h / height)
    if view.width is None:
        scale = box_h / height
    elif view.height is None:
        scale = box_w / width
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)
