"""A staged blob checked as a PNG while it is written: `png_whole` only for a PNG that
was checked from its first byte and found whole."""

import hashlib
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from imagegate.core import staging, xmp
from imagegate.core.errors import ImageRejected
from imagegate.core.images import inspect_image
from imagegate.core.pngcheck import DamagedPng, PngCheck
from imagegate.core.staging import StagedBlob
from tests.fakes.upstream import noisy_png, png_chunk

PNG = noisy_png(64)


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, "JPEG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "checked", "whole"),
    [
        (PNG, True, True),
        (PNG, False, False),  # not asked: inspect_image checks the file itself
        (PNG[:-1], True, False),  # IEND's CRC cut
        (PNG[:5000] + b"\x00" + PNG[5001:], True, False),  # a byte of IDAT changed
        (PNG + b"trailing", True, True),  # bytes after IEND: not looked at, as before
        (jpeg(), True, False),
        (b"", True, False),
    ],
)
def test_a_blob_is_whole_only_when_checked_and_whole(
    tmp_path: Path, data: bytes, checked: bool, whole: bool
) -> None:
    staged = StagedBlob(tmp_path, 1 << 20)
    staged.pixel_cap = 1 << 20
    if checked:
        staged.check_as_png()
    for start in range(0, len(data), 1000):
        staged.write(data[start : start + 1000])
    staged.finish()
    assert staged.png_whole is whole
    assert staged.path.read_bytes() == data


def test_asked_after_the_first_write_it_checks_nothing(tmp_path: Path) -> None:
    """From the middle of a file the check would refuse a whole PNG, or worse, pass
    what it never saw the start of: it is not started at all."""
    staged = StagedBlob(tmp_path, 1 << 20)
    staged.pixel_cap = 1 << 20
    staged.write(PNG[:10])
    staged.check_as_png()
    staged.write(PNG[10:])
    staged.finish()
    assert not staged.png_whole


def bomb() -> bytes:
    """60000 x 60000 RGBA at 16 bits (28.8 GB of rows) claimed by a 1 MB file of
    deflated zeros: checked without the cap, it would be inflated for seconds."""
    zeros = zlib.compress(bytes(1 << 30), 9)[: 1 << 20]
    header = struct.pack(">IIBBBBB", 60000, 60000, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zeros)


def test_no_check_as_written_without_a_pixel_cap(tmp_path: Path) -> None:
    staged = StagedBlob(tmp_path, 1 << 20)
    staged.check_as_png()
    staged.write(PNG)
    staged.finish()
    assert not staged.png_whole


def test_an_image_over_the_pixel_cap_is_not_inflated_as_it_is_written(tmp_path: Path) -> None:
    """The check stops at IHDR: the IDAT after it is not fed to zlib (inspect_image
    then refuses the image on its pixel cap, as it did before any check)."""
    check = PngCheck(max_pixels=1 << 20)
    data = bomb()
    with pytest.raises(DamagedPng, match="more pixels than the limit of 1048576"):
        check.feed(data[:33])
    staged = StagedBlob(tmp_path, 1 << 22)
    staged.pixel_cap = 1 << 20
    staged.check_as_png()
    staged.write(data)
    staged.finish()
    assert not staged.png_whole
    with pytest.raises(ImageRejected, match="more pixels than the limit of 1048576"):
        inspect_image(staged.path, max_bytes=1 << 22, max_pixels=1 << 20)


def test_inspect_image_skips_only_the_png_check_for_a_whole_blob(tmp_path: Path) -> None:
    """A blob found whole is not checked again (the damage here would be found); the
    pixel cap is still held."""
    path = tmp_path / "damaged.png"
    path.write_bytes(PNG[:-1])
    info = inspect_image(path, max_bytes=1 << 20, max_pixels=1 << 20, png_whole=True)
    assert (info.width, info.height) == (64, 64)
    with pytest.raises(ImageRejected, match="png image is damaged"):
        inspect_image(path, max_bytes=1 << 20, max_pixels=1 << 20)
    with pytest.raises(ImageRejected, match="the limit is 100"):
        inspect_image(path, max_bytes=1 << 20, max_pixels=100, png_whole=True)


def test_a_deferred_hash_is_made_from_the_file(tmp_path: Path) -> None:
    staged = StagedBlob(tmp_path, 1 << 22)
    staged.defer_hash()
    for start in range(0, len(PNG), 1000):
        staged.write(PNG[start : start + 1000])
    staged.finish()
    assert staged.sha256 == ""  # nothing made while it was written
    staged.hash_file()
    assert staged.sha256 == hashlib.sha256(PNG).hexdigest()


def test_a_hash_is_deferred_only_from_the_first_byte(tmp_path: Path) -> None:
    staged = StagedBlob(tmp_path, 1 << 22)
    staged.write(PNG[:10])
    staged.defer_hash()
    staged.write(PNG[10:])
    staged.finish()
    assert staged.sha256 == hashlib.sha256(PNG).hexdigest()


CHUNK = xmp.png_chunk(xmp.TRAINED_ALGORITHMIC_MEDIA)


@pytest.mark.parametrize("piece", [1, 7, 33, 34, 1000, 1 << 20])
def test_a_chunk_goes_in_right_after_the_ihdr_however_the_png_is_written(
    tmp_path: Path, piece: int
) -> None:
    staged = StagedBlob(tmp_path, len(PNG))  # the cap holds the writer's bytes only
    staged.pixel_cap = 1 << 20
    staged.insert_after_ihdr(CHUNK)
    staged.check_as_png()
    for start in range(0, len(PNG), piece):
        staged.write(PNG[start : start + piece])
    staged.finish()
    written = PNG[:33] + CHUNK + PNG[33:]
    assert staged.path.read_bytes() == written
    assert (staged.size, staged.inserted, staged.inserted_span) == (
        len(PNG),
        len(CHUNK),
        (33, 33 + len(CHUNK)),
    )
    assert staged.sha256 == hashlib.sha256(written).hexdigest()
    assert staged.png_whole
    assert staged.png_seen is not None
    assert staged.png_seen.text_chunks == 1


@pytest.mark.parametrize(
    ("data", "hashed"),
    [
        # Not a PNG: the marking copies it, so it is not hashed as it is written.
        (jpeg(), False),
        (b"GIF89a", False),  # shorter than a PNG's head: written at finish
        (PNG[:8] + struct.pack(">I", 14) + PNG[12:], True),  # an IHDR not 13 bytes
    ],
)
def test_what_is_not_a_png_takes_no_chunk(tmp_path: Path, data: bytes, hashed: bool) -> None:
    staged = StagedBlob(tmp_path, 1 << 20)
    staged.insert_after_ihdr(CHUNK)
    for start in range(0, len(data), 5):
        staged.write(data[start : start + 5])
    staged.finish()
    assert staged.path.read_bytes() == data
    assert staged.inserted == 0
    assert (staged.sha256 == "") is not hashed
    if not hashed:
        staged.hash_file()
    assert staged.sha256 == hashlib.sha256(data).hexdigest()


def test_the_scan_for_the_first_idat_goes_on_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PNG of many small chunks before its pixels, written in small pieces (as an
    upstream may send it): each write's scan starts where the last one stopped, never
    from the start again, which would be quadratic in what is held."""
    texts = b"".join(png_chunk(b"tEXt", b"k\x00v") for _ in range(500))
    data = PNG[:33] + texts + PNG[33:]
    starts: list[int] = []
    scan = staging._takes_chunk

    def counted(head: bytearray, position: int) -> tuple[bool | None, int]:
        starts.append(position)
        return scan(head, position)

    monkeypatch.setattr(staging, "_takes_chunk", counted)
    staged = StagedBlob(tmp_path, 1 << 20)
    staged.insert_after_ihdr(CHUNK)
    for start in range(0, len(data), 10):
        staged.write(data[start : start + 10])
    staged.finish()
    assert staged.inserted == len(CHUNK)
    assert staged.path.read_bytes() == data[:33] + CHUNK + data[33:]
    assert starts == sorted(starts)
    assert starts[-1] == 33 + len(texts)  # the last scan began at the last text chunk's end
