"""The cheap checks (a PNG's structure, a JPEG decoded at 1/8) refuse what a full
decode refuses: the same verdict on every file of a corpus of whole and damaged images.

The full decode is what `inspect_image` did before: Pillow's verify(), then load() at
full size. Where the cheap check is stricter, the case says so (STRICTER)."""

import io
import random
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from imagegate.core.errors import ImageRejected
from imagegate.core.images import inspect_image
from imagegate.core.pngcheck import DamagedPng, PngCheck, check_png
from tests.fakes.upstream import png_chunk

Corpus = Iterator[tuple[str, bytes]]


def full_decode_refuses(path: Path) -> bool:
    try:
        with Image.open(path) as probe:
            probe.verify()
        with Image.open(path) as full:
            full.load()
    except Exception:  # whatever Pillow raises is a refusal
        return True
    return False


def cheap_check_refuses(path: Path) -> bool:
    try:
        inspect_image(path, max_bytes=1 << 30, max_pixels=1 << 30)
    except ImageRejected:
        return True
    return False


def png(
    width: int,
    height: int,
    raw: bytes,
    colour: int = 2,
    depth: int = 8,
    interlace: int = 0,
    palette: bool = False,
    stream: Callable[[bytes], bytes] = zlib.compress,
    end: bool = True,
) -> bytes:
    """A PNG from raw (filtered) scanlines, to damage in ways no encoder would."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    parts = [b"\x89PNG\r\n\x1a\n", png_chunk(b"IHDR", header)]
    if palette:
        parts.append(png_chunk(b"PLTE", bytes(range(48))))
    parts.append(png_chunk(b"IDAT", stream(raw)))
    if end:
        parts.append(png_chunk(b"IEND", b""))
    return b"".join(parts)


def rows(rng: random.Random, sizes: list[tuple[int, int]], filters: bytes = b"\x00") -> bytes:
    """Scanlines of random samples: `sizes` is (bytes per row, rows) per pass."""
    out = bytearray()
    for size, count in sizes:
        for index in range(count):
            out += filters[index % len(filters)].to_bytes(1, "big") + rng.randbytes(size)
    return bytes(out)


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
ADAM7 += ((0, 1, 1, 2),)


def adam7_pixels(width: int, height: int) -> list[tuple[int, int]]:
    """Columns and rows of each interlace pass that has any."""
    return [
        (-(-(width - x) // dx), -(-(height - y) // dy))
        for x, y, dx, dy in ADAM7
        if width > x and height > y
    ]


def adam7_sizes(width: int, height: int, bytes_per_pixel: int) -> list[tuple[int, int]]:
    return [(cols * bytes_per_pixel, count) for cols, count in adam7_pixels(width, height)]


def saved(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def noise(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    return Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))


def cuts(name: str, data: bytes, end_crc: int = 0) -> Corpus:
    """`data` cut short at many places. A cut inside the last `end_crc` bytes (a PNG's
    IEND CRC) is STRICTER: Pillow stops at IEND's type, and takes a file without
    IEND's CRC for whole."""
    kept = [int(len(data) * fraction) for fraction in (0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99)]
    kept += [len(data) - short for short in (1, 4, 12, 13)]
    for length in kept:
        stricter = "STRICTER: " if len(data) - end_crc <= length < len(data) else ""
        yield f"{stricter}{name} cut to {length} of {len(data)} bytes", data[:length]


def flips(name: str, data: bytes, rng: random.Random) -> Corpus:
    for _ in range(6):
        at = rng.randrange(8, len(data))
        damaged = bytearray(data)
        damaged[at] ^= 0x55
        yield f"{name} flipped at {at}", bytes(damaged)


def png_corpus() -> Corpus:
    rng = random.Random(16)
    whole = {
        "rgb": saved(noise(rng, (64, 48)), "PNG"),
        "rgb stored": saved(noise(rng, (40, 30)), "PNG", compress_level=0),
        "rgba": saved(noise(rng, (33, 17)).convert("RGBA"), "PNG"),
        "palette": saved(noise(rng, (31, 9)).convert("P"), "PNG"),
        "grey 16": saved(noise(rng, (20, 20)).convert("I;16"), "PNG"),
        "bilevel": saved(noise(rng, (37, 11)).convert("1"), "PNG"),
        "interlaced": png(21, 13, rows(rng, adam7_sizes(21, 13, 3)), interlace=1),
        "interlaced 1 px": png(1, 1, rows(rng, adam7_sizes(1, 1, 3)), interlace=1),
        "all filters": png(16, 10, rows(rng, [(48, 10)], b"\x00\x01\x02\x03\x04")),
    }
    for name, data in whole.items():
        yield name, data
        yield from cuts(name, data, end_crc=4)
        yield from flips(name, data, rng)
    good = rows(rng, [(48, 10)])
    text = png_chunk(b"tEXt", b"Comment\x00made by a test")
    with_text = png(16, 10, good)
    with_text = with_text[:33] + text + with_text[33:]
    yield "an ancillary chunk", with_text
    yield "an ancillary chunk's CRC wrong", with_text[:33] + text[:-1] + b"!" + with_text[33:]
    idat_crc = with_text.index(b"IEND") - 8
    yield "IDAT's CRC wrong", with_text[:idat_crc] + b"!!!!" + with_text[idat_crc + 4 :]
    yield "unknown filter type", png(16, 10, rows(rng, [(48, 10)], b"\x00\x05"))
    # STRICTER: Pillow leaves the missing rows black.
    yield "STRICTER: fewer rows than IHDR says", png(16, 10, good[: 49 * 7])
    yield "half a row short", png(16, 10, good[:-20])
    # STRICTER: Pillow stops reading when its rows are full; this check refuses more, so
    # that a small file of deflated zeros cannot keep it inflating.
    yield "STRICTER: more data than IHDR says", png(16, 10, good + bytes(49))
    yield "no IEND", png(16, 10, good, end=False)
    # STRICTER: the PNG standard requires PLTE there; Pillow makes up a palette.
    yield "STRICTER: palette image without PLTE", png(8, 8, rows(rng, [(8, 8)]), colour=3)
    yield "palette image with PLTE", png(8, 8, rows(rng, [(8, 8)]), colour=3, palette=True)
    yield "not zlib", png(16, 10, good, stream=lambda raw: b"\x00\x01" + raw)
    yield "stream cut", png(16, 10, good, stream=lambda raw: zlib.compress(raw)[:-30])
    yield "bad depth", png(16, 10, good, depth=3)
    yield "zero width", png(0, 10, good)
    yield (
        "wrong zlib checksum",
        png(16, 10, good, stream=lambda raw: zlib.compress(raw)[:-4] + b"\x00\x00\x00\x00"),
    )


def jpeg_corpus() -> Corpus:
    rng = random.Random(17)
    whole = {
        "jpeg": saved(noise(rng, (64, 48)), "JPEG", quality=90),
        "jpeg progressive": saved(noise(rng, (64, 48)), "JPEG", progressive=True),
        "jpeg grey": saved(noise(rng, (40, 24)).convert("L"), "JPEG"),
        "jpeg 4:2:0": saved(noise(rng, (50, 30)), "JPEG", subsampling=2),
    }
    for name, data in whole.items():
        yield name, data
        yield from cuts(name, data)
        yield from flips(name, data, rng)


@pytest.mark.parametrize(("case", "data"), [*png_corpus(), *jpeg_corpus()])
def test_the_cheap_check_refuses_what_a_full_decode_refuses(
    tmp_path: Path, case: str, data: bytes
) -> None:
    path = tmp_path / "image"
    path.write_bytes(data)
    if case.startswith("STRICTER"):
        assert not full_decode_refuses(path)
        assert cheap_check_refuses(path)
        return
    assert cheap_check_refuses(path) == full_decode_refuses(path)


def test_the_corpus_has_both_verdicts() -> None:
    """A corpus that every check passes (or fails) would prove nothing."""
    names = [name for name, _ in [*png_corpus(), *jpeg_corpus()]]
    assert len(names) > 200


def test_a_flood_of_image_data_is_refused_without_inflating_it_all(tmp_path: Path) -> None:
    """A 1 x 1 image whose IDAT inflates to 200 MB (a 200 KB file)."""
    flood = zlib.compressobj(9)
    stream = flood.compress(bytes(200_000_000)) + flood.flush()
    path = tmp_path / "flood.png"
    path.write_bytes(png(1, 1, b"", stream=lambda _: stream))
    with pytest.raises(ImageRejected, match="more image data than its rows need"):
        inspect_image(path, max_bytes=1 << 30, max_pixels=1 << 30)


@pytest.mark.parametrize("interlace", [0, 1])
@pytest.mark.parametrize(
    ("colour", "depths"),
    [(0, (1, 2, 4, 8, 16)), (2, (8, 16)), (3, (1, 2, 4, 8)), (4, (8, 16)), (6, (8, 16))],
)
def test_every_layout_of_rows_is_measured_right(
    tmp_path: Path, interlace: int, colour: int, depths: tuple[int, ...]
) -> None:
    """Pillow decodes each (the reference), and the check accepts each, at every depth
    and at widths and heights around the interlace steps."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    rng = random.Random(colour)
    for depth in depths:
        for width, height in ((1, 1), (3, 2), (7, 9), (9, 17), (18, 5)):
            bits = depth * channels
            if interlace:
                sizes = [
                    (-(-cols * bits // 8), count) for cols, count in adam7_pixels(width, height)
                ]
            else:
                sizes = [(-(-width * bits // 8), height)]
            data = png(
                width, height, rows(rng, sizes), colour, depth, interlace, palette=colour == 3
            )
            path = tmp_path / "image.png"
            path.write_bytes(data)
            assert not full_decode_refuses(path), (depth, width, height)
            assert not cheap_check_refuses(path), (depth, width, height)
            path.write_bytes(
                png(
                    width,
                    height,
                    rows(rng, sizes)[:-1],
                    colour,
                    depth,
                    interlace,
                    palette=colour == 3,
                )
            )
            assert cheap_check_refuses(path), ("one byte short", depth, width, height)


@pytest.mark.parametrize(("case", "data"), list(png_corpus()))
def test_the_check_fed_in_pieces_says_what_it_says_of_the_file(
    tmp_path: Path, case: str, data: bytes
) -> None:
    """A blob checked while it is written (PngCheck, in pieces of any size) gets the
    whole file's verdict. The reason may differ: damaged image data can fail as a bad
    filter byte or as bad zlib, depending on how much was inflated before it."""
    path = tmp_path / "image.png"
    path.write_bytes(data)
    try:
        check_png(path)
        refused = False
    except DamagedPng:
        refused = True
    rng = random.Random(case)
    for _ in range(3):
        check, position, verdict = PngCheck(), 0, False
        try:
            while position < len(data):
                size = rng.choice((1, 2, 3, 7, 8, 13, 64, 4096))
                check.feed(data[position : position + size])
                position += size
            check.close()
        except DamagedPng:
            verdict = True
        assert verdict == refused, case
