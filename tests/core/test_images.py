import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from imagegate.core.errors import ImageRejected
from imagegate.core.images import ImageFormat, inspect_image, sniff_format


def encoded(fmt: str, size: tuple[int, int] = (32, 16)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "blue").save(out, format=fmt)
    return out.getvalue()


def write(tmp_path: Path, data: bytes, name: str = "img.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("pil", "expected"),
    [
        ("PNG", ImageFormat.PNG),
        ("JPEG", ImageFormat.JPEG),
        ("WEBP", ImageFormat.WEBP),
        ("GIF", ImageFormat.GIF),
    ],
)
def test_real_formats_are_recognised(tmp_path: Path, pil: str, expected: ImageFormat) -> None:
    info = inspect_image(write(tmp_path, encoded(pil)), max_bytes=10**6, max_pixels=10**6)
    assert info.format is expected
    assert (info.width, info.height) == (32, 16)


def test_format_comes_from_bytes_not_name(tmp_path: Path) -> None:
    path = write(tmp_path, encoded("PNG"), "looks-like.webp")
    assert inspect_image(path, max_bytes=10**6, max_pixels=10**6).format is ImageFormat.PNG


@pytest.mark.parametrize(
    "data", [b"", b"hello world, not an image", b"<svg xmlns='http://www.w3.org/2000/svg'/>"]
)
def test_fakes_are_rejected(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(ImageRejected, match="not a PNG, JPEG, WebP or GIF"):
        inspect_image(write(tmp_path, data), max_bytes=10**6, max_pixels=10**6)
    assert sniff_format(data) is None


def test_truncated_image_is_rejected(tmp_path: Path) -> None:
    data = encoded("PNG", (200, 200))
    with pytest.raises(ImageRejected, match="png image is damaged or truncated"):
        inspect_image(write(tmp_path, data[: len(data) // 2]), max_bytes=10**6, max_pixels=10**6)


def test_byte_cap(tmp_path: Path) -> None:
    data = encoded("PNG")
    limit = len(data) - 1
    with pytest.raises(ImageRejected, match=f"image is {len(data)} bytes; the limit is {limit}"):
        inspect_image(write(tmp_path, data), max_bytes=limit, max_pixels=10**6)


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge canvas: the decompression-bomb shape."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def test_pixel_cap_is_checked_before_decoding(tmp_path: Path) -> None:
    path = write(tmp_path, bomb_png(2000, 2000))
    assert path.stat().st_size < 200
    expected = "2000x2000 = 4000000 pixels; the limit is 1000000"
    with pytest.raises(ImageRejected, match=expected):
        inspect_image(path, max_bytes=10**6, max_pixels=10**6)


def test_huge_bomb_is_refused_by_the_header_alone(tmp_path: Path) -> None:
    path = write(tmp_path, bomb_png(50_000, 50_000))
    with pytest.raises(ImageRejected, match="decompression bomb"):
        inspect_image(path, max_bytes=10**6, max_pixels=10**6)
