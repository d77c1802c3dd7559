"""Location metadata goes, pixels and everything else stay: PNG, JPEG and WebP."""

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from imagegate.core.images import ImageFormat, sniff_format
from imagegate.core.metadata import apply_edits, location_edits

GPS = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 0.0)}
XMP_WITH_PLACE = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
    b'exif:GPSLatitude="52,31.2N" photoshop:City="Berlin"/></rdf:RDF></x:xmpmeta>'
)
XMP_WITHOUT_PLACE = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
    b'Iptc4xmpExt:DigitalSourceType="trainedAlgorithmicMedia"/></rdf:RDF></x:xmpmeta>'
)


def photo(fmt: str, *, orientation: int | None = 6, gps: bool = True) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    exif[0x010F] = "A camera maker"
    if gps:
        exif[0x8825] = GPS
    image = Image.new("RGB", (64, 48))
    image.putdata([(x * 4, y * 5, (x + y) % 256) for y in range(48) for x in range(64)])
    out = io.BytesIO()
    image.save(out, format=fmt, exif=exif.tobytes(), quality=90)
    return out.getvalue()


def cleaned(tmp_path: Path, data: bytes) -> bytes:
    source = tmp_path / "in"
    source.write_bytes(data)
    fmt = sniff_format(data[:16])
    assert fmt is not None
    out = io.BytesIO()
    apply_edits(source, location_edits(source, fmt), out.write)
    return out.getvalue()


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").tobytes()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_gps_goes_orientation_and_pixels_stay(tmp_path: Path, fmt: str) -> None:
    original = photo(fmt)
    result = cleaned(tmp_path, original)
    with Image.open(io.BytesIO(result)) as image:
        image.load()  # a complete, valid file
        exif = image.getexif()
    assert 0x8825 not in exif
    assert exif.get(0x0112) == 6
    assert pixels(result) == pixels(original)
    assert b"52.0" not in result


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_without_gps_is_left_alone(tmp_path: Path, fmt: str) -> None:
    original = photo(fmt, gps=False)
    assert cleaned(tmp_path, original) == original


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_gps_without_orientation_drops_the_exif(tmp_path: Path, fmt: str) -> None:
    result = cleaned(tmp_path, photo(fmt, orientation=None))
    with Image.open(io.BytesIO(result)) as image:
        image.load()
        assert dict(image.getexif()) == {}


def with_jpeg_segments(data: bytes, *segments: bytes) -> bytes:
    return data[:2] + b"".join(segments) + data[2:]


def app(kind: int, payload: bytes) -> bytes:
    return bytes([0xFF, kind]) + struct.pack(">H", len(payload) + 2) + payload


def test_jpeg_xmp_with_a_place_and_iptc_go_other_xmp_stays(tmp_path: Path) -> None:
    base = photo("JPEG", gps=False)
    place = app(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + XMP_WITH_PLACE)
    marking = app(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + XMP_WITHOUT_PLACE)
    iptc = app(
        0xED, b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x06\x1c\x02Z\x00\x02Berlin"
    )
    result = cleaned(tmp_path, with_jpeg_segments(base, place, iptc, marking))
    assert b"Berlin" not in result
    assert b"GPSLatitude" not in result
    assert b"trainedAlgorithmicMedia" in result
    assert pixels(result) == pixels(base)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_png_xmp_with_a_place_and_raw_profiles_go(tmp_path: Path) -> None:
    base = photo("PNG", gps=False)
    head, rest = base[:33], base[33:]  # after the signature and IHDR
    xmp = png_chunk(
        b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + zlib.compress(XMP_WITH_PLACE)
    )
    raw = png_chunk(b"tEXt", b"Raw profile type exif\x00\nexif\n      10\n4578696600")
    keep = png_chunk(b"tEXt", b"Comment\x00made by a test")
    result = cleaned(tmp_path, head + xmp + raw + keep + rest)
    assert b"XML:com.adobe.xmp" not in result
    assert b"Raw profile" not in result
    assert b"made by a test" in result
    assert pixels(result) == pixels(base)


def test_webp_flags_follow_the_chunks_that_went(tmp_path: Path) -> None:
    original = photo("WEBP", orientation=None)
    assert original[20] & 0x08  # VP8X says: EXIF present
    result = cleaned(tmp_path, original)
    assert not result[20] & 0x08
    assert struct.unpack("<I", result[4:8])[0] == len(result) - 8
    assert pixels(result) == pixels(original)


def test_a_file_with_nothing_to_remove_needs_no_edit(tmp_path: Path) -> None:
    source = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(source)
    assert location_edits(source, ImageFormat.PNG) == []


def test_a_stray_byte_before_the_exif_does_not_hide_it(tmp_path: Path) -> None:
    original = photo("JPEG")
    at = original.index(b"\xff\xe1")  # right before the EXIF segment
    stray = original[:at] + b"\x00" + original[at:]
    result = cleaned(tmp_path, stray)
    assert b"52.0" not in result
    assert 0x8825 not in Image.open(io.BytesIO(result)).getexif()


def test_a_second_frame_with_gps_goes_and_the_first_stays(tmp_path: Path) -> None:
    """An MPO-like file: a second JPEG after the first one's end, with its own GPS."""
    first, second = photo("JPEG", gps=False), photo("JPEG")
    result = cleaned(tmp_path, first + second)
    assert result == first
    plain = photo("JPEG", gps=False)
    assert cleaned(tmp_path, plain + b"\x00\x00") == plain + b"\x00\x00"  # nothing to hide


def test_xmp_with_a_place_under_any_prefix_goes(tmp_path: Path) -> None:
    base = photo("JPEG", gps=False)
    other_prefix = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
        b'xmlns:ps="http://ns.adobe.com/photoshop/1.0/" ps:City="Berlin"/></rdf:RDF></x:xmpmeta>'
    )
    segment = app(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + other_prefix)
    assert b"Berlin" not in cleaned(tmp_path, with_jpeg_segments(base, segment))


def test_a_compressed_text_bomb_is_removed_unread(tmp_path: Path) -> None:
    base = photo("PNG", gps=False)
    bomb = zlib.compress(b"\x00" * (64 << 20), 9)  # 64 MiB of nothing, ~64 KiB packed
    chunk = png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + bomb)
    odd_method = png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x01\x07\x00\x00" + b"junk")
    result = cleaned(tmp_path, base[:33] + chunk + odd_method + base[33:])
    assert b"XML:com.adobe.xmp" not in result
    assert pixels(result) == pixels(base)


def test_webp_bytes_after_the_container_go(tmp_path: Path) -> None:
    original = photo("WEBP", orientation=None)
    result = cleaned(tmp_path, original + b"trailer")
    assert b"trailer" not in result
    assert struct.unpack("<I", result[4:8])[0] == len(result) - 8
    assert pixels(result) == pixels(original)
