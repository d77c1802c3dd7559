"""Input images by asset id, data and (stdio) local path: what is refused, and why."""

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from imagegate.core.errors import ImageRejected, InvalidRequest
from imagegate.service.inputs import InputResolver
from imagegate.storage.assets import AssetStore
from imagegate.storage.embedded import open_embedded


def png(size: tuple[int, int] = (8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "red").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
async def resolver(tmp_path: Path) -> AsyncIterator[InputResolver]:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    root = tmp_path / "inputs"
    root.mkdir()
    (root / "ok.png").write_bytes(png())
    (root / "fake.png").write_bytes(b"not an image at all")
    (tmp_path / "outside.png").write_bytes(png())
    storage = open_embedded(state, 10**7)
    yield InputResolver(
        AssetStore(storage.index, storage.blobs),
        max_bytes=10**6,
        max_pixels=10**6,
        input_root=root,
        local=True,
    )
    await storage.aclose()


@pytest.mark.parametrize(
    ("source", "error", "message"),
    [
        ("ok.png\x00.txt", InvalidRequest, r"images\[0\]: a file path can't contain a NUL"),
        ("../outside.png", InvalidRequest, r"images\[0\]: no such file under input_root"),
        ("missing.png", InvalidRequest, "no such file under input_root"),
        ("fake.png", ImageRejected, r"images\[0\]: not a PNG, JPEG, WebP or GIF"),
        ("data:text/plain;base64,aGVsbG8=", InvalidRequest, "data:image/<type>;base64"),
        ("data:image/png;base64," + "A" * 5, InvalidRequest, "not valid base64"),
        ("img_" + "0" * 24, Exception, "image not found"),
    ],
)
async def test_refusals_say_which_input_and_why(
    resolver: InputResolver, source: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        await resolver.resolve(None, [source], None)


async def test_files_and_data_are_checked_copies(resolver: InputResolver) -> None:
    data = "data:image/png;base64," + base64.b64encode(png((16, 8))).decode()
    inputs = await resolver.resolve(None, ["ok.png", data], None)
    assert [(i.width, i.height) for i in inputs.images] == [(8, 8), (16, 8)]
    paths = [image.path for image in inputs.images]
    assert all(path.exists() for path in paths)
    await inputs.aclose()
    assert not any(path.exists() for path in paths)  # staged copies are gone
