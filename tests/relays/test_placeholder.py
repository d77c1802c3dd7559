import io
from pathlib import Path

import pytest
from PIL import Image

from imagegate.core.errors import InvalidRequest
from imagegate.core.images import ImageFormat
from imagegate.relays.base import ImageRequest, Size
from imagegate.relays.placeholder import PlaceholderRelay, PlaceholderRelayConfig, draw_placeholder
from imagegate.storage.files import FileBlobStore


def test_draws_requested_size_and_format() -> None:
    for fmt, pil in [
        (ImageFormat.PNG, "PNG"),
        (ImageFormat.JPEG, "JPEG"),
        (ImageFormat.WEBP, "WEBP"),
    ]:
        data = draw_placeholder("a tree", Size(320, 200), fmt, seed=1)
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == pil
            assert image.size == (320, 200)


def test_deterministic_for_a_seed() -> None:
    one = draw_placeholder("a tree", Size(128, 128), ImageFormat.PNG, seed=5)
    assert one == draw_placeholder("a tree", Size(128, 128), ImageFormat.PNG, seed=5)
    assert one != draw_placeholder("a tree", Size(128, 128), ImageFormat.PNG, seed=6)
    assert one != draw_placeholder("a bush", Size(128, 128), ImageFormat.PNG, seed=5)


def test_prompt_words_are_drawn() -> None:
    """The caption box is white: with words in it, dark pixels appear inside it."""
    blank = draw_placeholder(" ", Size(400, 300), ImageFormat.PNG, seed=1)
    worded = draw_placeholder("MMMM WWWW", Size(400, 300), ImageFormat.PNG, seed=1)
    with Image.open(io.BytesIO(blank)) as b, Image.open(io.BytesIO(worded)) as w:
        dark = [sum(1 for p in img.convert("L").get_flattened_data() if p < 60) for img in (b, w)]
    assert dark[1] > dark[0] + 100


def test_long_prompt_is_shortened_to_fit() -> None:
    data = draw_placeholder("word " * 2000, Size(64, 64), ImageFormat.PNG, seed=1)
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (64, 64)


async def test_generate_stages_n_images_and_reports_progress(tmp_path: Path) -> None:
    relay = PlaceholderRelay("placeholder", PlaceholderRelayConfig(kind="placeholder"))
    blobs = FileBlobStore(tmp_path, max_bytes=10**7)
    messages: list[str] = []

    async def progress(fraction: float | None, message: str) -> None:
        messages.append(message)

    request = ImageRequest("hi", Size(64, 64), 3, ImageFormat.PNG, seed=9)
    images = await relay.generate(request, blobs.stage, progress)
    assert [image.params["seed"] for image in images] == [9, 10, 11]
    assert all(image.staged.sha256 and image.staged.path.exists() for image in images)
    assert messages == [f"drawing image {i} of 3" for i in (1, 2, 3)]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (ImageRequest("x", Size(32, 64), 1, ImageFormat.PNG), "sides from 64 to 4096"),
        (ImageRequest("x", Size(64, 64), 11, ImageFormat.PNG), "at most 10 images"),
        (ImageRequest("x", Size(64, 64), 1, ImageFormat.GIF), "cannot produce gif"),
    ],
)
def test_capabilities_reject_with_what_is_supported(request_: ImageRequest, message: str) -> None:
    relay = PlaceholderRelay("placeholder", PlaceholderRelayConfig(kind="placeholder"))
    with pytest.raises(InvalidRequest, match=message):
        relay.capabilities.check(request_, relay.name)
