"""Views: the size, fit and format asked for, never larger than the source, upright,
and every out-of-range value refused with what is allowed."""

import io
from pathlib import Path

import pytest
from PIL import Image

from imagegate.core.errors import InvalidRequest
from imagegate.core.images import ImageFormat
from imagegate.core.views import View, render


def source(tmp_path: Path, size: tuple[int, int] = (400, 200), fmt: str = "PNG") -> Path:
    path = tmp_path / f"source.{fmt.lower()}"
    image = Image.new("RGB", size, "white")
    image.paste((200, 0, 0), (0, 0, size[0] // 2, size[1]))  # left half red
    image.save(path, format=fmt)
    return path


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("width", "height", "fit", "size"),
    [
        (100, None, "contain", (100, 50)),
        (None, 50, "contain", (100, 50)),
        (100, 100, "contain", (100, 50)),
        (100, 100, "cover", (100, 100)),
        (100, 100, "crop", (100, 100)),
        (800, None, "contain", (400, 200)),  # never larger than the source
        (None, None, "contain", (400, 200)),
    ],
)
def test_sizes(
    tmp_path: Path, width: int | None, height: int | None, fit: str, size: tuple[int, int]
) -> None:
    view = View.of(width, height, fit, None, None, 10**7)
    assert opened(render(source(tmp_path), ImageFormat.PNG, view)).size == size


def test_cover_keeps_the_middle_and_crop_does_not_scale(tmp_path: Path) -> None:
    path = source(tmp_path)
    covered = opened(render(path, ImageFormat.PNG, View.of(100, 100, "cover", None, None, 10**7)))
    cropped = opened(render(path, ImageFormat.PNG, View.of(100, 100, "crop", None, None, 10**7)))
    # The middle of a red-left, white-right image: red on the left, white on the right.
    assert covered.getpixel((5, 50))[1] < 50
    assert covered.getpixel((95, 50)) == (255, 255, 255)
    assert cropped.getpixel((5, 50))[1] < 50
    assert cropped.getpixel((95, 50)) == (255, 255, 255)


@pytest.mark.parametrize(("asked", "pillow"), [("webp", "WEBP"), ("jpeg", "JPEG"), ("jpg", "JPEG")])
def test_formats(tmp_path: Path, asked: str, pillow: str) -> None:
    view = View.of(64, None, None, asked, 60, 10**7)
    assert opened(render(source(tmp_path), ImageFormat.PNG, view)).format == pillow


def test_a_gif_becomes_a_png_and_orientation_is_applied(tmp_path: Path) -> None:
    gif = source(tmp_path, (40, 20), "GIF")
    assert opened(render(gif, ImageFormat.GIF, View())).format == "PNG"
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned by 90 degrees
    Image.new("RGB", (40, 20)).save(rotated, exif=exif.tobytes())
    assert opened(render(rotated, ImageFormat.JPEG, View())).size == (20, 40)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, None, None, None, None), "width must be between 1 and 4096"),
        ((None, 5000, None, None, None), "height must be between 1 and 4096"),
        ((4096, 4096, None, None, None), "over the pixel limit"),
        ((10, 10, "stretch", None, None), "fit must be one of contain, cover, crop"),
        ((10, 10, None, "gif", None), "format must be png, jpeg or webp"),
        ((10, 10, None, "webp", 0), "quality must be between 1 and 100"),
        ((10, None, "cover", None, None), "fit=cover needs both width and height"),
    ],
)
def test_refused(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        View.of(*args, max_pixels=4096 * 4095)  # type: ignore[arg-type]


def test_the_key_names_every_choice() -> None:
    assert View.of(512, None, None, "webp", 80, 10**7).key == "w512-h-contain-webp-q80"
    assert View().key == "w-h-contain--q"
