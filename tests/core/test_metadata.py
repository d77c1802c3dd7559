"""Location metadata goes, pixels and everything else stay: PNG, JPEG and WebP."""

import io
import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from PIL import Image

from imagegate.core.images import ImageFormat, sniff_format
from imagegate.core.metadata import apply_edits, location_edits
from imagegate.core.xmp import read_source_type, source_type_packet

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


# --- A marking in a packet that goes for its place stays ----------------------------------

AI = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
FORMATS = ["PNG", "JPEG", "WEBP"]
PIL_FORMAT = {"PNG": ImageFormat.PNG, "JPEG": ImageFormat.JPEG, "WEBP": ImageFormat.WEBP}


def located_packet(*marking: str) -> bytes:
    """A well-formed XMP packet that names a place, plus `marking` (attributes of its
    description, or elements when they start with "<")."""
    attributes = " ".join(p for p in marking if not p.startswith("<"))
    elements = "".join(p for p in marking if p.startswith("<"))
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        'rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
        'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" '
        'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        f'exif:GPSLatitude="52,31.2N" photoshop:City="Berlin" {attributes}>{elements}'
        '</rdf:Description></rdf:RDF></x:xmpmeta>\n<?xpacket end="w"?>'
    ).encode()


def with_xmp(data: bytes, fmt: str, packet: bytes) -> bytes:
    """`data` with `packet` where each format keeps XMP: a plain PNG iTXt chunk after
    IHDR, a JPEG APP1 segment after the leading APPn ones, a WebP "XMP " chunk at the
    end with its VP8X flag set."""
    if fmt == "PNG":
        body = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + packet
        return data[:33] + png_chunk(b"iTXt", body) + data[33:]
    if fmt == "JPEG":
        at = 2
        while 0xE0 <= data[at + 1] <= 0xEF:
            at += 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
        return data[:at] + app(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + packet) + data[at:]
    assert data[12:16] == b"VP8X"
    chunk = b"XMP " + struct.pack("<I", len(packet)) + packet + b"\x00" * (len(packet) & 1)
    out = data[:20] + bytes([data[20] | 0x04]) + data[21:] + chunk
    return out[:4] + struct.pack("<I", len(out) - 8) + out[8:]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "marking",
    [
        f'Iptc4xmpExt:DigitalSourceType="{AI}"',
        f"<Iptc4xmpExt:DigitalSourceType> {AI}\n</Iptc4xmpExt:DigitalSourceType>",
        f'<Iptc4xmpExt:DigitalSourceType rdf:resource="{AI}"/>',
    ],
    ids=["attribute", "element", "resource"],
)
def test_a_source_type_stays_in_a_packet_of_its_own(tmp_path: Path, fmt: str, marking: str) -> None:
    original = with_xmp(photo(fmt), fmt, located_packet(marking))
    result = cleaned(tmp_path, original)
    # Byte for byte: the cleaned photo with the new packet in the old one's place, in
    # the format's own XMP container (WebP: flag set, RIFF size right).
    assert result == with_xmp(cleaned(tmp_path, photo(fmt)), fmt, source_type_packet(AI))
    assert b"Berlin" not in result
    assert b"GPSLatitude" not in result
    (tmp_path / "out").write_bytes(result)
    assert read_source_type(tmp_path / "out", PIL_FORMAT[fmt]) == AI
    with Image.open(io.BytesIO(result)) as image:
        image.load()
        assert 0x8825 not in image.getexif()
    assert pixels(result) == pixels(original)


MARKED = located_packet(f'Iptc4xmpExt:DigitalSourceType="{AI}"')


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + zlib.compress(MARKED)),
        (b"zTXt", b"XML:com.adobe.xmp\x00\x00" + zlib.compress(MARKED)),
        (b"tEXt", b"XML:com.adobe.xmp\x00" + MARKED),
    ],
    ids=["itxt-compressed", "ztxt", "text"],
)
def test_a_png_source_type_comes_back_as_plain_itxt(
    tmp_path: Path, kind: bytes, body: bytes
) -> None:
    base = photo("PNG")
    result = cleaned(tmp_path, base[:33] + png_chunk(kind, body) + base[33:])
    assert result == with_xmp(cleaned(tmp_path, base), "PNG", source_type_packet(AI))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "packet",
    [
        located_packet(),
        located_packet('photoshop:Credit="A photographer"'),
        # Not well-formed (a prefix bound to nothing, or cut): it goes whole, unread.
        located_packet(f'Iptc4xmpExt:DigitalSourceType="{AI}"').replace(b"xmlns:Iptc4", b"xmlns:x"),
        located_packet(f'Iptc4xmpExt:DigitalSourceType="{AI}"')[:-40],
        # A source type that is no URI, or that names a place itself.
        located_packet('Iptc4xmpExt:DigitalSourceType="made by a model"'),
        located_packet("<Iptc4xmpExt:DigitalSourceType/>"),
        located_packet('Iptc4xmpExt:DigitalSourceType="http://example.com/GPS/52.5"'),
    ],
    ids=["bare", "other", "unbound", "cut", "no-uri", "empty", "place-in-value"],
)
def test_a_packet_without_a_usable_source_type_goes_whole(
    tmp_path: Path, fmt: str, packet: bytes
) -> None:
    result = cleaned(tmp_path, with_xmp(photo(fmt), fmt, packet))
    assert result == cleaned(tmp_path, photo(fmt))  # for WebP: the XMP flag cleared too


def test_a_source_type_too_large_for_a_jpeg_segment_goes(tmp_path: Path) -> None:
    """A packet that just fits one APP1 segment, whose source type alone would not once
    wrapped in a packet of its own: dropped, not written as a broken segment."""
    head = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
        '02/22-rdf-syntax-ns#"><rdf:Description xmlns:e="http://iptc.org/std/Iptc4xmpExt/'
        '2008-02-29/" City="Berlin" e:DigitalSourceType="http://a/'
    )
    tail = '"/></rdf:RDF></x:xmpmeta>'
    room = 0xFFFF - 2 - len(b"http://ns.adobe.com/xap/1.0/\x00")
    source_type = "http://a/" + "a" * (room - len(head) - len(tail))
    packet = (head + source_type[len("http://a/") :] + tail).encode()
    assert len(packet) == room < len(source_type_packet(source_type))
    base = photo("JPEG", gps=False)
    assert cleaned(tmp_path, with_xmp(base, "JPEG", packet)) == base


def exiftool_tags(path: Path) -> dict[str, object]:
    run = subprocess.run(
        ["exiftool", "-j", "-a", "-G1", "-all", "-validate", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    tags: dict[str, object] = json.loads(run.stdout)[0]
    return tags


@pytest.mark.skipif(
    shutil.which("exiftool") is None,
    reason="exiftool is missing (apt-get install libimage-exiftool-perl, or `make test`)",
)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("marked", [True, False], ids=["marked", "unmarked"])
def test_exiftool_finds_the_marking_and_no_place(tmp_path: Path, fmt: str, marked: bool) -> None:
    packet = located_packet(f'Iptc4xmpExt:DigitalSourceType="{AI}"' if marked else "")
    original = tmp_path / "original"
    original.write_bytes(with_xmp(photo(fmt), fmt, packet))
    before = exiftool_tags(original)
    assert before["XMP-photoshop:City"] == "Berlin"  # exiftool reads the fixture's place
    without_xmp = tmp_path / "without-xmp"
    without_xmp.write_bytes(cleaned(tmp_path, photo(fmt)))
    out = tmp_path / "out"
    out.write_bytes(cleaned(tmp_path, original.read_bytes()))
    tags = exiftool_tags(out)
    places = ("GPS", "City", "Country", "State", "Location")
    assert [key for key in tags if any(place in key for place in places)] == []
    assert tags.get("XMP-iptcExt:DigitalSourceType") == (AI if marked else None)
    # The new container adds no warning to those of the same photo without XMP.
    assert tags["ExifTool:Validate"] == exiftool_tags(without_xmp)["ExifTool:Validate"]
