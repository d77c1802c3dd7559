"""Turn what a caller names as an input image into a checked InputImage.

A source is one of:
- an asset id (`img_…`): one of the caller's own images (admin: anyone's);
- image data: a `data:image/...;base64,` URL or bare base64, size-capped;
- a local file path: only over stdio, and only under the configured `input_root`
  (after resolving symlinks), so no tool argument can read outside it.

Data and files are copied into staging first and then inspected, so what is checked
is exactly what is sent. `Inputs.aclose()` removes every staged copy.
"""

import re
import shutil
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

from imagegate.core.base64data import Base64Error, decode_into
from imagegate.core.cpu import run_cpu
from imagegate.core.errors import ImageRejected, InvalidRequest
from imagegate.core.ids import Subject, is_asset_id, parse_asset_id
from imagegate.core.images import ImageFormat, inspect_image
from imagegate.core.staging import StagedBlob
from imagegate.relays.base import InputImage
from imagegate.storage.assets import AssetStore

_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")
_URL = re.compile(r"(?i)[a-z][a-z0-9+.-]*://")


@dataclass
class Inputs:
    images: list[InputImage] = field(default_factory=list)
    mask: InputImage | None = None
    held: AsyncExitStack = field(default_factory=AsyncExitStack)
    """Staged copies and stored assets' files, released by `aclose`."""

    async def aclose(self) -> None:
        await self.held.aclose()


class InputResolver:
    def __init__(
        self,
        store: AssetStore,
        *,
        max_bytes: int,
        max_pixels: int,
        input_root: Path | None,
        local: bool,
    ) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._max_pixels = max_pixels
        self._input_root = input_root.resolve() if input_root else None
        self._local = local

    async def resolve(self, reach: Subject | None, sources: list[str], mask: str | None) -> Inputs:
        inputs = Inputs()
        try:
            for index, source in enumerate(sources):
                inputs.images.append(await self.one(reach, source, f"images[{index}]", inputs))
            if mask is not None:
                inputs.mask = await self.one(reach, mask, "mask", inputs)
                check_mask(inputs.images[0], inputs.mask)
        except BaseException:
            await inputs.aclose()
            raise
        return inputs

    async def one(
        self, reach: Subject | None, source: str, label: str, inputs: Inputs
    ) -> InputImage:
        """One source as an InputImage; what it holds is released with `inputs`."""
        source = source.strip()
        if is_asset_id(source):
            asset = await self._store.get(reach, parse_asset_id(source))
            path = await inputs.held.enter_async_context(self._store.as_file(asset))
            return InputImage(path, asset.format, asset.width, asset.height)
        staged = self._store.stage()
        staged.pixel_cap = self._max_pixels
        inputs.held.callback(staged.discard)
        if _URL.match(source):
            raise InvalidRequest(
                f"{label}: image URLs are not fetched; give one of your asset ids "
                "(list_images) or the image as a data:image/...;base64 URL"
            )
        if source.startswith("data:") or (len(source) > 64 and _BASE64.fullmatch(source[:256])):
            await run_cpu(self._decode, staged, source, label)
        else:
            await run_cpu(self._copy_local, staged, source, label)
        try:
            info = await run_cpu(
                lambda: inspect_image(
                    staged.path,
                    max_bytes=self._max_bytes,
                    max_pixels=self._max_pixels,
                    png_whole=staged.png_whole,
                )
            )
        except ImageRejected as err:
            raise ImageRejected(f"{label}: {err}") from None
        return InputImage(staged.path, info.format, info.width, info.height)

    def _decode(self, staged: StagedBlob, source: str, label: str) -> None:
        # base64 is 4/3 of the bytes: refuse oversize data before decoding any of it.
        if len(source) > self._max_bytes * 4 // 3 + 100:
            raise ImageRejected(f"{label}: image data is larger than {self._max_bytes} bytes")
        try:
            decode_into(staged, source, allow_unpadded=True)
        except Base64Error as err:
            raise InvalidRequest(f"{label}: not valid base64 image data ({err})") from None
        staged.finish()

    def _copy_local(self, staged: StagedBlob, source: str, label: str) -> None:
        if not self._local or self._input_root is None:
            raise InvalidRequest(
                f"{label}: not an asset id or image data; local file paths are accepted "
                "only over stdio with input_root set"
            )
        if "\x00" in source:
            raise InvalidRequest(f"{label}: a file path can't contain a NUL character")
        path = Path(source).expanduser()
        if not path.is_absolute():
            path = self._input_root / path
        real = path.resolve()
        if not real.is_relative_to(self._input_root) or not real.is_file():
            raise InvalidRequest(f"{label}: no such file under input_root ({self._input_root})")
        if real.stat().st_size > self._max_bytes:
            raise ImageRejected(f"{label}: file is larger than {self._max_bytes} bytes")
        staged.check_as_png()
        with real.open("rb") as source_file:
            shutil.copyfileobj(source_file, _Writer(staged))
        staged.finish()


class _Writer:
    """File-like adapter so shutil can copy into a StagedBlob (which enforces the cap)."""

    def __init__(self, staged: StagedBlob) -> None:
        self._staged = staged

    def write(self, data: bytes) -> int:
        self._staged.write(data)
        return len(data)


def check_mask(image: InputImage, mask: InputImage) -> None:
    if mask.format is not ImageFormat.PNG:
        raise ImageRejected("mask must be a PNG (its alpha channel marks what to edit)")
    if (mask.width, mask.height) != (image.width, image.height):
        raise ImageRejected(
            f"mask is {mask.width}x{mask.height} but the image is "
            f"{image.width}x{image.height}; they must be the same size"
        )
