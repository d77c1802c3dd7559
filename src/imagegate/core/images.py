"""Image checks: the real format from magic bytes, byte and pixel caps, full decode.

Everything stored or sent upstream passes `inspect_image` first. The pixel cap is
checked from the header before any decode, which is the decompression-bomb guard. A PNG
is checked whole without holding its pixels (core.pngcheck); a JPEG is decoded at an
eighth of its size; WebP and GIF are decoded in full.
"""

import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from imagegate.core.errors import ImageRejected, TooLarge
from imagegate.core.pngcheck import DamagedPng, check_png


class ImageFormat(Enum):
    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"
    GIF = "gif"

    @property
    def mime_type(self) -> str:
        return f"image/{self.value}"

    @property
    def extension(self) -> str:
        return "jpg" if self is ImageFormat.JPEG else self.value


OUTPUT_FORMATS = (ImageFormat.PNG, ImageFormat.JPEG, ImageFormat.WEBP)


def sniff_format(head: bytes) -> ImageFormat | None:
    """The format the bytes really are, whatever a label or file name claims."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ImageFormat.PNG
    if head.startswith(b"\xff\xd8\xff"):
        return ImageFormat.JPEG
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ImageFormat.WEBP
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return ImageFormat.GIF
    return None


@dataclass(frozen=True)
class ImageInfo:
    format: ImageFormat
    width: int
    height: int
    byte_size: int


def inspect_image(
    path: Path, *, max_bytes: int, max_pixels: int, png_whole: bool = False
) -> ImageInfo:
    """Check a file is a complete PNG, JPEG, WebP or GIF within the caps; say why not.
    `png_whole`: the file was found a whole PNG as it was written (core.staging), so
    the PNG check is not run again; the caps and Pillow's header check still are."""
    byte_size = path.stat().st_size
    if byte_size > max_bytes:
        raise TooLarge(f"image is {byte_size} bytes; the limit is {max_bytes}")
    with path.open("rb") as fh:
        head = fh.read(16)
    fmt = sniff_format(head)
    if fmt is None:
        raise ImageRejected("not a PNG, JPEG, WebP or GIF image (unrecognised magic bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as probe:
                width, height = probe.size
                if width * height > max_pixels:
                    raise ImageRejected(
                        f"image is {width}x{height} = {width * height} pixels; "
                        f"the limit is {max_pixels}"
                    )
                if fmt is not ImageFormat.PNG:
                    probe.verify()
            if fmt is not ImageFormat.PNG:
                _decode(path, fmt)
            elif not png_whole:
                check_png(path)
    except ImageRejected:
        raise
    except DamagedPng as err:
        raise ImageRejected(f"png image is damaged or truncated ({err})") from None
    except Image.DecompressionBombError:
        raise ImageRejected(
            f"image claims far more pixels than the limit of {max_pixels} (decompression bomb)"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Warning) as err:
        raise ImageRejected(
            f"{fmt.value} image is damaged or truncated ({type(err).__name__})"
        ) from None
    return ImageInfo(format=fmt, width=width, height=height, byte_size=byte_size)


def _decode(path: Path, fmt: ImageFormat) -> None:
    """Decode every byte of the image data. A JPEG is decoded at an eighth of its size:
    all of its data is still read and entropy-decoded (a cut or corrupt stream fails
    alike), but its pixels take 1/64 of the memory."""
    with Image.open(path) as full:
        if fmt is ImageFormat.JPEG:
            full.draft(full.mode, (max(1, full.width // 8), max(1, full.height // 8)))
        full.load()
