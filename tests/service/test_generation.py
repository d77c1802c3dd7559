from pathlib import Path

import pytest

from imagegate.config import Settings
from imagegate.core.errors import ImageRejected, InvalidRequest, RelayError
from imagegate.core.images import OUTPUT_FORMATS, ImageFormat
from imagegate.relays.base import (
    Capabilities,
    ImageRequest,
    ProgressFn,
    RelayDefaults,
    RelayImage,
    StageFn,
)
from imagegate.relays.placeholder import PlaceholderRelay, PlaceholderRelayConfig
from imagegate.service.generation import GenerateArgs, build_request, produce
from imagegate.storage.files import FileBlobStore
from tests.fakes.upstream import png_bytes

PLACEHOLDER = PlaceholderRelay("placeholder", PlaceholderRelayConfig(kind="placeholder"))


def test_valid_request() -> None:
    request = build_request(
        GenerateArgs("  a cat  ", "512x256", 2, "JPG", 7), PLACEHOLDER, Settings()
    )
    assert request.prompt == "a cat"
    assert (request.size.width, request.size.height) == (512, 256)
    assert request.output_format is ImageFormat.JPEG
    assert request.seed == 7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (GenerateArgs(""), "prompt must not be empty"),
        (GenerateArgs("x", n=0), "n must be between 1 and 4"),
        (GenerateArgs("x", size="1024*1024"), "size must look like"),
        (GenerateArgs("x", output_format="tiff"), "output_format must be one of png, jpeg, webp"),
        (GenerateArgs("x", seed=-1), "seed must be between 0 and 2147483647"),
    ],
)
def test_invalid_requests(args: GenerateArgs, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        build_request(args, PLACEHOLDER, Settings())


class GarbageRelay:
    """Returns bytes that are not an image, as a broken upstream might."""

    name = "garbage"
    kind = "test"
    description = "returns garbage"
    paid = False
    model = None
    price = None
    defaults = RelayDefaults()
    capabilities = Capabilities(output_formats=OUTPUT_FORMATS, max_n=4, min_side=1, max_side=9999)

    def render_prompt(self, prompt: str) -> str:
        return prompt

    async def generate(
        self, request: ImageRequest, stage: StageFn, progress: ProgressFn
    ) -> list[RelayImage]:
        images = []
        for _ in range(request.n):
            staged = stage()
            staged.write(b"<html>502 Bad Gateway</html>")
            staged.finish()
            images.append(RelayImage(staged))
        return images


async def test_output_that_is_not_an_image_is_rejected_and_nothing_stays(tmp_path: Path) -> None:
    settings = Settings()
    blobs = FileBlobStore(tmp_path, settings.max_image_bytes)
    request = build_request(GenerateArgs("x", n=2), PLACEHOLDER, settings)

    async def progress(fraction: float | None, message: str) -> None:
        return None

    with pytest.raises(ImageRejected, match="not a PNG, JPEG, WebP or GIF"):
        await produce(GarbageRelay(), request, settings, blobs.stage, progress)
    assert list((tmp_path / "tmp").iterdir()) == []


class ExtraRelay(GarbageRelay):
    """Stages one blob more than it returns (an answer's extra image), or fails after
    staging: produce must leave neither behind."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    async def generate(
        self, request: ImageRequest, stage: StageFn, progress: ProgressFn
    ) -> list[RelayImage]:
        kept, extra = stage(), stage()
        for blob in (kept, extra):
            blob.write(png_bytes())
            blob.finish()
        if self.fail:
            raise RelayError("the upstream failed after sending images")
        return [RelayImage(kept)]


@pytest.mark.parametrize("fail", [False, True])
async def test_what_a_relay_staged_but_did_not_return_is_removed(
    tmp_path: Path, fail: bool
) -> None:
    settings = Settings()
    blobs = FileBlobStore(tmp_path, settings.max_image_bytes)
    request = build_request(GenerateArgs("x"), PLACEHOLDER, settings)

    async def progress(fraction: float | None, message: str) -> None:
        return None

    if fail:
        with pytest.raises(RelayError):
            await produce(ExtraRelay(fail), request, settings, blobs.stage, progress)
        assert list((tmp_path / "tmp").iterdir()) == []
        return
    produced = await produce(ExtraRelay(fail), request, settings, blobs.stage, progress)
    assert list((tmp_path / "tmp").iterdir()) == [produced[0].image.staged.path]
