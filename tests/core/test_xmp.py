"""The XMP marking: written for PNG, JPEG and WebP without touching pixel data, read back
by this module, by Pillow's container parsers and by exiftool; an existing AI source type
and other metadata kept, any other source type replaced in place; C2PA manifests seen;
damaged files and hostile packets refused with a clear MarkingError, and nothing else."""

import io
import random
import shutil
import struct
import subprocess
import tracemalloc
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageCms, PngImagePlugin

from imagegate.core.images import ImageFormat
from imagegate.core.xmp import (
    AI_SOURCE_TYPES,
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    MAX_PACKET,
    TRAINED_ALGORITHMIC_MEDIA,
    MarkingError,
    MarkResult,
    carries_c2pa,
    mark,
    read_source_type,
    source_type_in,
    source_type_packet,
)

PNG, JPEG, WEBP = ImageFormat.PNG, ImageFormat.JPEG, ImageFormat.WEBP
FORMATS = [PNG, JPEG, WEBP]
PIL_NAME = {PNG: "PNG", JPEG: "JPEG", WEBP: "WEBP"}
DIGITAL_CAPTURE = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
COMPOSITE_SYNTHETIC = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeSynthetic"
IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
ODD = "http://example.com/type?a=1&b=\"2\"'3'<x>"
"""A source type (printable, no spaces) with every character XML escapes."""
EXIF = Image.Exif()
EXIF[0x010F] = "A camera maker"
EXIF[0x0112] = 6
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def picture(mode: str, size: tuple[int, int] = (37, 23)) -> Image.Image:
    """Noise over a gradient: nothing an encoder can squeeze to a trivial stream."""
    rng = random.Random(7)
    width, height = size
    rgba = Image.new("RGBA", size)
    rgba.putdata(
        [
            (x * 6 % 256, y * 11 % 256, rng.randrange(256), (x * y + 40) % 256)
            for y in range(height)
            for x in range(width)
        ]
    )
    if mode == "P":
        return rgba.convert("RGB").quantize(16)
    return rgba.convert(mode)


def encode(image: Image.Image, fmt: ImageFormat, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=PIL_NAME[fmt], **options)
    return out.getvalue()


@dataclass(frozen=True)
class Source:
    name: str
    fmt: ImageFormat
    data: bytes
    webp_flags: int | None = None
    """The VP8X flags a marked WebP must carry."""


def sources() -> list[Source]:
    frames = [picture("RGBA"), picture("RGBA").rotate(180)]
    animated = io.BytesIO()
    frames[0].save(animated, "WEBP", save_all=True, append_images=frames[1:], duration=100)
    return [
        Source("png-rgb", PNG, encode(picture("RGB"), PNG)),
        Source("png-rgba", PNG, encode(picture("RGBA"), PNG)),
        Source("png-palette", PNG, encode(picture("P"), PNG)),
        Source("png-gray", PNG, encode(picture("L"), PNG)),
        Source("png-exif-icc", PNG, encode(picture("RGB"), PNG, exif=EXIF, icc_profile=ICC)),
        Source("jpeg-baseline", JPEG, encode(picture("RGB"), JPEG, quality=90)),
        Source("jpeg-progressive", JPEG, encode(picture("RGB"), JPEG, progressive=True)),
        Source("jpeg-gray", JPEG, encode(picture("L"), JPEG)),
        Source("jpeg-exif-icc", JPEG, encode(picture("RGB"), JPEG, exif=EXIF, icc_profile=ICC)),
        # Simple files (one VP8 or VP8L chunk) get a VP8X header; extended ones a flag.
        Source("webp-lossy", WEBP, encode(picture("RGB"), WEBP), 0x04),
        Source("webp-lossless", WEBP, encode(picture("RGB"), WEBP, lossless=True), 0x04),
        Source("webp-lossless-alpha", WEBP, encode(picture("RGBA"), WEBP, lossless=True), 0x14),
        Source("webp-lossy-alpha", WEBP, encode(picture("RGBA"), WEBP), 0x14),
        Source(
            "webp-exif-icc", WEBP, encode(picture("RGB"), WEBP, exif=EXIF, icc_profile=ICC), 0x2C
        ),
        Source("webp-animated", WEBP, animated.getvalue(), 0x16),
    ]


SOURCES = sources()
SOURCE_IDS = [source.name for source in SOURCES]


def write(tmp_path: Path, data: bytes, name: str = "in") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def marked(
    tmp_path: Path, data: bytes, fmt: ImageFormat, source_type: str = TRAINED_ALGORITHMIC_MEDIA
) -> tuple[MarkResult, bytes]:
    dst = tmp_path / "out"
    result = mark(write(tmp_path, data), dst, fmt, source_type)
    return result, dst.read_bytes()


# --- Independent readers of the three containers ---------------------------------------


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(kind, the whole chunk) for each chunk, CRCs checked."""
    chunks = []
    position = 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        whole = data[position : position + 12 + length]
        assert struct.unpack(">I", whole[-4:])[0] == zlib.crc32(whole[4:-4])
        chunks.append((kind, whole))
        position += 12 + length
    return chunks


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, the whole segment) up to the first scan; the scan and the rest last."""
    segments = []
    position = 2
    while data[position + 1] != 0xDA:
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        segments.append((data[position + 1], data[position : position + 2 + length]))
        position += 2 + length
    return [*segments, (0xDA, data[position:])]


def webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
    chunks = []
    position = 12
    while position < len(data):
        kind, length = struct.unpack("<4sI", data[position : position + 8])
        chunks.append((kind, data[position : position + 8 + length + (length & 1)]))
        position += 8 + length + (length & 1)
    return chunks


def pixel_data(fmt: ImageFormat, data: bytes) -> list[bytes]:
    if fmt is PNG:
        return [whole for kind, whole in png_chunks(data) if kind in (b"IDAT", b"fdAT")]
    if fmt is JPEG:
        return [jpeg_segments(data)[-1][1]]
    pixels = (b"VP8 ", b"VP8L", b"ALPH", b"ANIM", b"ANMF")
    return [whole for kind, whole in webp_chunks(data) if kind in pixels]


def xmp_containers(fmt: ImageFormat, data: bytes) -> list[bytes]:
    if fmt is PNG:
        return [w for k, w in png_chunks(data) if w[8:].startswith(b"XML:com.adobe.xmp\x00")]
    if fmt is JPEG:
        return [w for _, w in jpeg_segments(data) if w[4:].startswith(b"http://ns.adobe.com/xap")]
    return [whole for kind, whole in webp_chunks(data) if kind == b"XMP "]


def decoded(data: bytes) -> list[tuple[str, tuple[int, int], bytes]]:
    """Every frame's mode, size and pixels."""
    frames = []
    with Image.open(io.BytesIO(data)) as image:
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            frames.append((image.mode, image.size, image.tobytes()))
    return frames


def pillow_xmp(data: bytes) -> bytes:
    """The packet as Pillow's own container parser finds it (no XML parsing)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        packet = image.info.get("xmp", b"")
    return packet.encode() if isinstance(packet, str) else packet


def exiftool(path: Path, tag: str = "XMP-iptcExt:DigitalSourceType") -> str:
    run = subprocess.run(
        ["exiftool", f"-{tag}", "-s3", str(path)], capture_output=True, text=True, check=True
    )
    return run.stdout.strip()


needs_exiftool = pytest.mark.skipif(
    shutil.which("exiftool") is None,
    reason="exiftool is missing (apt-get install libimage-exiftool-perl, or `make test`)",
)


def with_xmp(source: Source, packet: bytes, *, after_idat: bool = False) -> bytes:
    """The source image with an existing XMP packet, written by Pillow where it can."""
    if after_idat:
        return insert_png_chunk(source.data, b"iTXt", png_xmp_body(packet), before=b"IEND")
    with Image.open(io.BytesIO(source.data)) as image:
        if source.fmt is PNG:
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", packet.decode())
            return encode(image, PNG, pnginfo=info)
        return encode(image, source.fmt, xmp=packet)


def png_xmp_body(packet: bytes) -> bytes:
    return b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + packet


def insert_png_chunk(data: bytes, kind: bytes, body: bytes, *, before: bytes) -> bytes:
    chunk = struct.pack(">I4s", len(body), kind) + body + struct.pack(">I", zlib.crc32(kind + body))
    at = data.index(before) - 4
    return data[:at] + chunk + data[at:]


def insert_jpeg_segment(data: bytes, marker: int, body: bytes) -> bytes:
    """After SOI and the APP0 that follows it."""
    at = 2 + 2 + struct.unpack(">H", data[4:6])[0] if data[3] == 0xE0 else 2
    segment = bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body
    return data[:at] + segment + data[at:]


def append_webp_chunk(data: bytes, kind: bytes, body: bytes) -> bytes:
    out = data + kind + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) & 1)
    return out[:4] + struct.pack("<I", len(out) - 8) + out[8:]


def packet(*properties: str, rdf: str = "rdf", about: str = "") -> bytes:
    """An XMP packet with these rdf:Description contents (attributes then elements)."""
    attributes = " ".join(p for p in properties if not p.startswith("<"))
    elements = "".join(p for p in properties if p.startswith("<"))
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="a test">\n'
        f'<{rdf}:RDF xmlns:{rdf}="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        f'<{rdf}:Description {rdf}:about="{about}" xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
        ' xmlns:ext="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        f" {attributes}>{elements}</{rdf}:Description>\n"
        f"</{rdf}:RDF>\n</x:xmpmeta>\n" + " " * 200 + '\n<?xpacket end="w"?>'
    ).encode()


TITLED = packet(
    'xmp:CreatorTool="an upstream"',
    '<dc:title><rdf:Alt><rdf:li xml:lang="x-default">A title</rdf:li></rdf:Alt></dc:title>',
)


def one_source(fmt: ImageFormat) -> Source:
    return next(s for s in SOURCES if s.fmt is fmt and "exif" in s.name)


# --- Marking a fresh image ----------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES, ids=SOURCE_IDS)
def test_marking_changes_only_metadata(tmp_path: Path, source: Source) -> None:
    result, out = marked(tmp_path, source.data, source.fmt)
    assert result is MarkResult.ADDED
    assert decoded(out) == decoded(source.data)
    assert pixel_data(source.fmt, out) == pixel_data(source.fmt, source.data)
    assert read_source_type(tmp_path / "out", source.fmt) == TRAINED_ALGORITHMIC_MEDIA
    assert TRAINED_ALGORITHMIC_MEDIA.encode() in pillow_xmp(out)
    assert len(xmp_containers(source.fmt, out)) == 1
    # Everything else stays: EXIF, ICC profile, every other chunk or segment.
    with Image.open(io.BytesIO(source.data)) as before, Image.open(io.BytesIO(out)) as after:
        assert after.info.get("exif") == before.info.get("exif")
        assert after.info.get("icc_profile") == before.info.get("icc_profile")


@pytest.mark.parametrize("source", SOURCES, ids=SOURCE_IDS)
def test_the_marking_adds_only_its_container(tmp_path: Path, source: Source) -> None:
    _, out = marked(tmp_path, source.data, source.fmt)
    (container,) = xmp_containers(source.fmt, out)
    at = out.index(container)
    rest = out[:at] + out[at + len(container) :]
    if source.fmt is WEBP:  # and a VP8X header or flag, and the RIFF size
        chunks = webp_chunks(out)
        vp8x = chunks[0][1]
        assert vp8x[:4] == b"VP8X"
        assert vp8x[8] == source.webp_flags
        with Image.open(io.BytesIO(source.data)) as image:
            width, height = image.size
        assert int.from_bytes(vp8x[12:15], "little") + 1 == width
        assert int.from_bytes(vp8x[15:18], "little") + 1 == height
        original = webp_chunks(source.data)
        assert [k for k, _ in chunks if k not in (b"VP8X", b"XMP ")] == [
            k for k, _ in original if k != b"VP8X"
        ]
        assert chunks[-1][0] == b"XMP "
        return
    assert rest == source.data


@pytest.mark.parametrize("source", SOURCES, ids=SOURCE_IDS)
@needs_exiftool
def test_exiftool_reads_the_marking(tmp_path: Path, source: Source) -> None:
    marked(tmp_path, source.data, source.fmt)
    assert exiftool(tmp_path / "out") == TRAINED_ALGORITHMIC_MEDIA


def webp_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) & 1)


@pytest.mark.parametrize(
    ("extra", "before", "flags"),
    [
        (webp_chunk(b"EXIF", EXIF.tobytes()), False, 0x0C),
        (webp_chunk(b"ICCP", ICC), True, 0x24),
    ],
    ids=["exif-after", "icc-before"],
)
def test_a_simple_webp_with_stray_chunks_gets_their_flags(
    tmp_path: Path, extra: bytes, before: bool, flags: int
) -> None:
    """Some writers add metadata to a simple file without the VP8X header it needs."""
    simple = encode(picture("RGB"), WEBP)
    assert simple[12:16] == b"VP8 "
    body = extra + simple[12:] if before else simple[12:] + extra
    source = simple[:4] + struct.pack("<I", 4 + len(body)) + b"WEBP" + body
    _, out = marked(tmp_path, source, WEBP)
    assert webp_chunks(out)[0][1][8] == flags
    assert decoded(out) == decoded(simple)
    with Image.open(io.BytesIO(out)) as image:
        assert image.info.get("icc_profile") == (ICC if before else None)
        assert (image.info.get("exif") is None) is before


def test_png_marking_is_an_uncompressed_itxt_right_after_ihdr(tmp_path: Path) -> None:
    _, out = marked(tmp_path, SOURCES[0].data, PNG)
    kinds = [kind for kind, _ in png_chunks(out)]
    assert kinds[:2] == [b"IHDR", b"iTXt"]
    body = png_chunks(out)[1][1][8:-4]
    assert body == png_xmp_body(source_type_packet(TRAINED_ALGORITHMIC_MEDIA))


def test_jpeg_marking_follows_jfif_and_exif(tmp_path: Path) -> None:
    source = one_source(JPEG)
    _, out = marked(tmp_path, source.data, JPEG)
    segments = jpeg_segments(out)
    assert segments[0][0] == 0xE0
    assert segments[1][1][4:].startswith(b"Exif\x00\x00")
    assert segments[2][1][4:] == b"http://ns.adobe.com/xap/1.0/\x00" + source_type_packet(
        TRAINED_ALGORITHMIC_MEDIA
    )


def test_the_packet_is_a_complete_xpacket() -> None:
    data = source_type_packet(COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA)
    assert data.startswith(b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>')
    assert data.endswith(b'<?xpacket end="w"?>')
    assert b'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"' in data
    assert (
        b'Iptc4xmpExt:DigitalSourceType="'
        + COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA.encode()
        + b'"'
    ) in data


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_source_type_with_xml_characters_reads_back(tmp_path: Path, fmt: ImageFormat) -> None:
    odd = 'http://example.com/type?a=1&b="2"<x>'
    marked(tmp_path, one_source(fmt).data, fmt, odd)
    assert read_source_type(tmp_path / "out", fmt) == odd


@pytest.mark.parametrize("source_type", ["", "two words", "line\nbreak", "caf\u00e9"])
def test_a_source_type_must_be_a_uri(tmp_path: Path, source_type: str) -> None:
    with pytest.raises(MarkingError, match="must be a URI"):
        mark(write(tmp_path, SOURCES[0].data), tmp_path / "out", PNG, source_type)
    with pytest.raises(MarkingError, match="must be a URI"):
        source_type_packet(source_type)


def test_the_copy_never_overwrites_its_source(tmp_path: Path) -> None:
    src = write(tmp_path, SOURCES[0].data)
    (tmp_path / "link").symlink_to(src)
    for dst in (src, tmp_path / "link"):
        with pytest.raises(MarkingError, match="another file than the source"):
            mark(src, dst, PNG, TRAINED_ALGORITHMIC_MEDIA)
    assert src.read_bytes() == SOURCES[0].data


# --- Existing XMP -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "existing",
    [
        TITLED,
        packet('xmp:CreatorTool="an upstream"', rdf="r", about="uuid:1234"),
        # Exactly as exiftool writes one (prefixes on the root, attribute and element).
        (
            b"<?xpacket begin='\xef\xbb\xbf' id='W5M0MpCehiHzreSzNTczkc9d'?>\n"
            b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF "
            b"xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>"
            b"<rdf:Description rdf:about='' xmlns:dc='http://purl.org/dc/elements/1.1/'>"
            b"<dc:creator><rdf:Seq><rdf:li>Someone</rdf:li></rdf:Seq></dc:creator>"
            b"</rdf:Description></rdf:RDF></x:xmpmeta>\n<?xpacket end='w'?>"
        ),
        # No wrapper at all, just the document.
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
        b'02/22-rdf-syntax-ns#"><rdf:Description rdf:about=""/></rdf:RDF></x:xmpmeta>',
    ],
    ids=["titled", "other-prefix-and-about", "exiftool-style", "bare"],
)
def test_an_existing_packet_keeps_every_byte_and_gains_the_type(
    tmp_path: Path, fmt: ImageFormat, existing: bytes
) -> None:
    source = with_xmp(one_source(fmt), existing)
    result, out = marked(tmp_path, source, fmt)
    assert result is MarkResult.ADDED
    assert read_source_type(tmp_path / "out", fmt) == TRAINED_ALGORITHMIC_MEDIA
    assert len(xmp_containers(fmt, out)) == 1
    new = pillow_xmp(out)
    # The packet is the old one with a description inserted before </...:RDF>.
    start = new.index(b"<rdf:Description xmlns:rdf=")
    end = new.index(b"/>\n", start) + 3
    assert new[:start] + new[end:] == existing
    assert new[end:].lstrip().startswith((b"</rdf:RDF>", b"</r:RDF>"))
    about = b'rdf:about="uuid:1234"' if b"uuid:1234" in existing else b'rdf:about=""'
    assert about in new[start:end]
    assert decoded(out) == decoded(source)
    assert pixel_data(fmt, out) == pixel_data(fmt, source)


@pytest.mark.parametrize("fmt", FORMATS)
@needs_exiftool
def test_exiftool_reads_old_and_new_properties(tmp_path: Path, fmt: ImageFormat) -> None:
    source = with_xmp(one_source(fmt), packet('xmp:CreatorTool="an upstream"', rdf="r"))
    marked(tmp_path, source, fmt)
    assert exiftool(tmp_path / "out") == TRAINED_ALGORITHMIC_MEDIA
    assert exiftool(tmp_path / "out", "XMP-xmp:CreatorTool") == "an upstream"


@needs_exiftool
def test_a_packet_written_by_exiftool_is_extended(tmp_path: Path) -> None:
    path = write(tmp_path, one_source(JPEG).data, "in.jpg")
    subprocess.run(
        ["exiftool", "-q", "-overwrite_original", "-XMP-dc:Title=Upstream", str(path)],
        check=True,
    )
    assert mark(path, tmp_path / "out.jpg", JPEG, TRAINED_ALGORITHMIC_MEDIA) is MarkResult.ADDED
    assert exiftool(tmp_path / "out.jpg") == TRAINED_ALGORITHMIC_MEDIA
    assert exiftool(tmp_path / "out.jpg", "XMP-dc:Title") == "Upstream"


# (packet, the bytes of its source type's value): each form a writer may use.
DC = DIGITAL_CAPTURE
FORMS = {
    "attribute": (packet(f'ext:DigitalSourceType="{DC}"'), DC),
    "attribute-single-quotes": (packet(f"ext:DigitalSourceType='{DC}'"), DC),
    "element": (packet(f"<ext:DigitalSourceType>{DC}</ext:DigitalSourceType>"), DC),
    "element-spaced": (
        packet(f"<ext:DigitalSourceType>\n  {DC}\n </ext:DigitalSourceType>"),
        f"\n  {DC}\n ",
    ),
    "element-empty": (packet("<ext:DigitalSourceType></ext:DigitalSourceType>"), ""),
    "resource": (packet(f'<ext:DigitalSourceType rdf:resource="{DC}"/>'), DC),
    "other-prefix": (
        packet(
            'xmp:CreatorTool="x"', f"<ext:DigitalSourceType>{DC}</ext:DigitalSourceType>", rdf="r"
        ),
        DC,
    ),
    "beside-another-namespace": (
        packet(
            f'ext:DigitalSourceType="{DC}" xmlns:o="http://example.com/o/" o:DigitalSourceType="x"'
        ),
        DC,
    ),
    "own-namespace-declaration": (
        packet(f'<i:DigitalSourceType xmlns:i="{IPTC_EXT}" rdf:resource="{DC}"/>'),
        DC,
    ),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("form", ["attribute", "element", "resource"])
def test_an_upstream_ai_source_type_is_kept(tmp_path: Path, fmt: ImageFormat, form: str) -> None:
    existing = FORMS[form][0].replace(DC.encode(), COMPOSITE_SYNTHETIC.encode())
    source = with_xmp(one_source(fmt), existing)
    result, out = marked(tmp_path, source, fmt)
    assert result is MarkResult.KEPT
    assert out == source
    assert read_source_type(tmp_path / "out", fmt) == COMPOSITE_SYNTHETIC


@pytest.mark.parametrize("kept", sorted(AI_SOURCE_TYPES))
def test_each_ai_source_type_is_kept(tmp_path: Path, kept: str) -> None:
    source = with_xmp(one_source(PNG), packet(f'ext:DigitalSourceType="{kept}"'))
    assert marked(tmp_path, source, PNG) == (MarkResult.KEPT, source)


def test_the_ai_source_types_are_iptcs_generated_ones() -> None:
    iptc = "http://cv.iptc.org/newscodes/digitalsourcetype/"
    assert {TRAINED_ALGORITHMIC_MEDIA, COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA} < AI_SOURCE_TYPES
    assert {
        iptc + name
        for name in (
            "trainedAlgorithmicMedia",
            "compositeWithTrainedAlgorithmicMedia",
            "algorithmicMedia",
            "compositeSynthetic",
        )
    } == AI_SOURCE_TYPES


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("form", list(FORMS))
def test_another_source_type_is_replaced_in_place(
    tmp_path: Path, fmt: ImageFormat, form: str
) -> None:
    """A camera's (or any non-AI) source type would have a generated image claim to be a
    photograph: ours takes its place, and only the value's bytes change."""
    existing, value = FORMS[form]
    source = with_xmp(one_source(fmt), existing)
    assert read_source_type(write(tmp_path, source, "src"), fmt) == value.strip()
    result, out = marked(tmp_path, source, fmt)
    assert result is MarkResult.REPLACED
    assert read_source_type(tmp_path / "out", fmt) == TRAINED_ALGORITHMIC_MEDIA
    assert len(xmp_containers(fmt, out)) == 1
    ours = TRAINED_ALGORITHMIC_MEDIA.encode()
    if value:
        assert existing.count(value.encode()) == 1
        assert pillow_xmp(out) == existing.replace(value.encode(), ours)
    else:
        assert pillow_xmp(out) == existing.replace(b"Type></", b"Type>" + ours + b"</", 1)
    assert decoded(out) == decoded(source)
    assert pixel_data(fmt, out) == pixel_data(fmt, source)


@pytest.mark.parametrize("form", ["attribute", "attribute-single-quotes", "element"])
def test_a_replacement_with_xml_characters_reads_back(tmp_path: Path, form: str) -> None:
    marked(tmp_path, with_xmp(one_source(JPEG), FORMS[form][0]), JPEG, ODD)
    assert read_source_type(tmp_path / "out", JPEG) == ODD


@needs_exiftool
def test_exiftool_reads_the_replacement(tmp_path: Path) -> None:
    path = write(tmp_path, one_source(JPEG).data, "in.jpg")
    subprocess.run(
        [
            "exiftool",
            "-q",
            "-overwrite_original",
            f"-XMP-iptcExt:DigitalSourceType={DC}",
            str(path),
        ],
        check=True,
    )
    assert mark(path, tmp_path / "out.jpg", JPEG, TRAINED_ALGORITHMIC_MEDIA) is MarkResult.REPLACED
    assert exiftool(tmp_path / "out.jpg") == TRAINED_ALGORITHMIC_MEDIA


def test_only_the_non_ai_values_are_replaced(tmp_path: Path) -> None:
    """Three descriptions (a writer may split its properties) naming three source types."""
    three = packet(f'ext:DigitalSourceType="{DC}"').replace(
        b"</rdf:RDF>",
        f'<rdf:Description rdf:about="" xmlns:e="{IPTC_EXT}">'
        f"<e:DigitalSourceType>{COMPOSITE_SYNTHETIC}</e:DigitalSourceType></rdf:Description>"
        f'<rdf:Description rdf:about="" xmlns:e="{IPTC_EXT}">'
        f'<e:DigitalSourceType rdf:resource="{DC}"/></rdf:Description></rdf:RDF>'.encode(),
    )
    assert source_type_in(three) == DC
    result, out = marked(tmp_path, with_xmp(one_source(WEBP), three), WEBP, ODD)
    assert result is MarkResult.REPLACED
    escaped = b"http://example.com/type?a=1&amp;b=&quot;2&quot;&apos;3&apos;&lt;x&gt;"
    assert pillow_xmp(out) == three.replace(DC.encode(), escaped)
    assert read_source_type(tmp_path / "out", WEBP) == ODD


def test_each_packet_naming_another_source_type_is_replaced(tmp_path: Path) -> None:
    second = packet(f'ext:DigitalSourceType="{DC}"')
    source = insert_png_chunk(
        with_xmp(SOURCES[0], TITLED), b"iTXt", png_xmp_body(second), before=b"IEND"
    )
    result, out = marked(tmp_path, source, PNG)
    assert result is MarkResult.REPLACED
    first, last = xmp_containers(PNG, out)
    assert first == xmp_containers(PNG, source)[0]  # named none: left as it was
    assert last[8:-4] == png_xmp_body(
        second.replace(DC.encode(), TRAINED_ALGORITHMIC_MEDIA.encode())
    )


@pytest.mark.parametrize(
    "existing",
    [
        packet(
            '<ext:DigitalSourceType rdf:parseType="Resource">'
            f"<ext:Code>{DC}</ext:Code></ext:DigitalSourceType>"
        ),
        packet(f"<ext:DigitalSourceType>{DC}<ext:Code/></ext:DigitalSourceType>"),
        packet('<ext:DigitalSourceType rdf:parseType="Resource"></ext:DigitalSourceType>'),
        packet("<ext:DigitalSourceType/>"),
    ],
    ids=["struct", "mixed-content", "empty-struct", "empty-element"],
)
def test_a_source_type_that_is_not_a_plain_value_is_not_replaced(
    tmp_path: Path, existing: bytes
) -> None:
    src = write(tmp_path, with_xmp(one_source(JPEG), existing))
    with pytest.raises(MarkingError, match="not a plain value"):
        mark(src, tmp_path / "out", JPEG, TRAINED_ALGORITHMIC_MEDIA)
    assert not (tmp_path / "out").exists()


# Where a DigitalSourceType is not the image's own: standard readers don't take these.
NOT_THE_IMAGES = {
    "outside-rdf": TITLED.replace(
        b'x:xmptk="a test"',
        b'x:xmptk="a test" xmlns:ext="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        + f' ext:DigitalSourceType="{DC}"'.encode(),
    ),
    "in-a-struct": packet(
        "<xmpMM:History xmlns:xmpMM='http://ns.adobe.com/xap/1.0/mm/'><rdf:Seq>"
        f"<rdf:li rdf:parseType='Resource'><ext:DigitalSourceType>{DC}</ext:DigitalSourceType>"
        "</rdf:li></rdf:Seq></xmpMM:History>"
    ),
    "in-a-nested-description": packet(
        "<dc:source><rdf:Description>"
        f"<ext:DigitalSourceType rdf:resource='{DC}'/>"
        "</rdf:Description></dc:source>"
    ),
    "on-a-nested-description": packet(
        f"<dc:source><rdf:Description ext:DigitalSourceType='{DC}'/></dc:source>"
    ),
    "after-rdf": TITLED.replace(
        b"</x:xmpmeta>",
        b'<ext:DigitalSourceType xmlns:ext="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
        + DC.encode()
        + b"</ext:DigitalSourceType></x:xmpmeta>",
    ),
    "in-another-namespace": packet(
        f'<o:DigitalSourceType xmlns:o="http://example.com/other/">{DC}</o:DigitalSourceType>'
    ),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("form", list(NOT_THE_IMAGES))
def test_a_source_type_that_is_not_the_images_own_is_not_taken(
    tmp_path: Path, fmt: ImageFormat, form: str
) -> None:
    existing = NOT_THE_IMAGES[form]
    assert source_type_in(existing) is None
    source = with_xmp(one_source(fmt), existing)
    assert read_source_type(write(tmp_path, source, "src"), fmt) is None
    result, out = marked(tmp_path, source, fmt)
    assert result is MarkResult.ADDED
    assert read_source_type(tmp_path / "out", fmt) == TRAINED_ALGORITHMIC_MEDIA
    assert DC.encode() in pillow_xmp(out)  # left where it was


@pytest.mark.parametrize(
    ("existing", "found"),
    [
        (packet(f'ext:DigitalSourceType="{DIGITAL_CAPTURE}"'), DIGITAL_CAPTURE),
        (
            packet(f"<ext:DigitalSourceType>{DIGITAL_CAPTURE}</ext:DigitalSourceType>"),
            DIGITAL_CAPTURE,
        ),
        (packet(f'<ext:DigitalSourceType rdf:resource="{DIGITAL_CAPTURE}"/>'), DIGITAL_CAPTURE),
        (TITLED, None),
        (source_type_packet(TRAINED_ALGORITHMIC_MEDIA), TRAINED_ALGORITHMIC_MEDIA),
        (
            TITLED.replace(
                b"</rdf:RDF>",
                f'<rdf:Description rdf:about="" xmlns:e="{IPTC_EXT}">'
                f"<e:DigitalSourceType>{DC}</e:DigitalSourceType></rdf:Description></rdf:RDF>".encode(),
            ),
            DC,
        ),
        (
            f'<rdf:RDF xmlns:rdf="{RDF}" xmlns:e="{IPTC_EXT}">'
            f'<rdf:Description e:DigitalSourceType="{DC}"/></rdf:RDF>'.encode(),
            DC,
        ),
    ],
    ids=["attribute", "element", "resource", "none", "ours", "second-description", "rdf-root"],
)
def test_the_source_type_in_one_packet(existing: bytes, found: str | None) -> None:
    assert source_type_in(existing) == found


def test_a_packet_that_does_not_parse_has_no_source_type_to_give() -> None:
    with pytest.raises(MarkingError, match="not well-formed"):
        source_type_in(packet(f'ext:DigitalSourceType="{DIGITAL_CAPTURE}"').replace(b"</x:", b""))


def test_png_xmp_after_the_image_data_is_found_and_replaced_in_place(tmp_path: Path) -> None:
    source = with_xmp(SOURCES[0], TITLED, after_idat=True)
    result, out = marked(tmp_path, source, PNG)
    assert result is MarkResult.ADDED
    kinds = [kind for kind, _ in png_chunks(out)]
    assert kinds[-2:] == [b"iTXt", b"IEND"]
    assert kinds.count(b"iTXt") == 1
    assert read_source_type(tmp_path / "out", PNG) == TRAINED_ALGORITHMIC_MEDIA

    upstream = with_xmp(
        SOURCES[0], packet(f'ext:DigitalSourceType="{DIGITAL_CAPTURE}"'), after_idat=True
    )
    result, out = marked(tmp_path, upstream, PNG)
    assert result is MarkResult.REPLACED
    assert [kind for kind, _ in png_chunks(out)][-2:] == [b"iTXt", b"IEND"]
    assert read_source_type(tmp_path / "out", PNG) == TRAINED_ALGORITHMIC_MEDIA


def test_a_compressed_png_packet_is_read_and_rewritten_plain(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", TITLED.decode(), zip=True)
    source = encode(picture("RGB"), PNG, pnginfo=info)
    assert TITLED not in source
    _, out = marked(tmp_path, source, PNG)
    (container,) = xmp_containers(PNG, out)
    assert container[8 + len(b"XML:com.adobe.xmp\x00")] == 0  # not compressed
    assert b"A title" in container
    assert read_source_type(tmp_path / "out", PNG) == TRAINED_ALGORITHMIC_MEDIA


def test_an_empty_rdf_gets_a_fresh_packet(tmp_path: Path) -> None:
    empty = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>'
    )
    _, out = marked(tmp_path, with_xmp(one_source(JPEG), empty), JPEG)
    assert pillow_xmp(out) == source_type_packet(TRAINED_ALGORITHMIC_MEDIA)


# --- Other metadata and C2PA manifests ----------------------------------------------------

JUMBF = b"JP\x00\x01\x00\x00\x00\x01" + b"\x00\x00\x00\x20jumbc2pa" + bytes(range(256)) * 3


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("existing", [None, TITLED], ids=["no-xmp", "with-xmp"])
def test_a_c2pa_manifest_survives_byte_for_byte(
    tmp_path: Path, fmt: ImageFormat, existing: bytes | None
) -> None:
    base = one_source(fmt)
    data = base.data if existing is None else with_xmp(base, existing)
    if fmt is PNG:
        source = insert_png_chunk(data, b"caBX", JUMBF, before=b"IDAT")
        manifest = next(w for k, w in png_chunks(source) if k == b"caBX")
    elif fmt is JPEG:
        source = insert_jpeg_segment(data, 0xEB, JUMBF)  # APP11
        manifest = next(w for m, w in jpeg_segments(source) if m == 0xEB)
    else:
        source = append_webp_chunk(data, b"C2PA", JUMBF + b"\x01")  # odd: padded
        manifest = next(w for k, w in webp_chunks(source) if k == b"C2PA")
    _, out = marked(tmp_path, source, fmt)
    assert out.count(manifest) == 1
    assert decoded(out) == decoded(source)
    assert read_source_type(tmp_path / "out", fmt) == TRAINED_ALGORITHMIC_MEDIA
    assert len(xmp_containers(fmt, out)) == 1  # for WebP: the RIFF size covers it all


C2PA_TYPE = b"c2pa\x00\x11\x00\x10\x80\x00\x00\xaa\x00\x38\x9b\x71"


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[ImageFormat, bytes]:
    """Each format's sample, signed by the C2PA SDK with a test CA's certificate."""
    from imagegate.core.c2pa import SigningConfig, load_signer
    from tests.fakes.c2pa_ca import make_credentials

    folder = tmp_path_factory.mktemp("c2pa")
    credentials = make_credentials(folder / "ca")
    signer = load_signer(SigningConfig(credentials.chain, credentials.key))
    files = {}
    for fmt in FORMATS:
        src, dst = write(folder, one_source(fmt).data, f"in-{fmt.value}"), folder / f"{fmt.value}"
        signer.sign(src, dst, fmt, action="created", software_agent="imagegate tests")
        files[fmt] = dst.read_bytes()
    return files


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_manifest_the_sdk_signed_is_seen(
    tmp_path: Path, fmt: ImageFormat, signed: dict[ImageFormat, bytes]
) -> None:
    assert carries_c2pa(write(tmp_path, signed[fmt], "signed"), fmt)
    assert not carries_c2pa(write(tmp_path, one_source(fmt).data, "unsigned"), fmt)
    marked(tmp_path, one_source(fmt).data, fmt)
    assert not carries_c2pa(tmp_path / "out", fmt)


def app11_jumbf(description_type: bytes, *, extended_length: bool = False) -> bytes:
    """An APP11 payload: the JPEG XT header, then a JUMBF superbox (a jumb box, its
    length in the 8-byte extended field when asked) that starts with its description."""
    description = struct.pack(">I4s", 8 + 16 + 6, b"jumd") + description_type + b"\x03c2pa\x00"
    if extended_length:
        superbox = struct.pack(">I4sQ", 1, b"jumb", 16 + len(description)) + description
    else:
        superbox = struct.pack(">I4s", 8 + len(description), b"jumb") + description
    return b"JP" + struct.pack(">HI", 1, 1) + superbox


@pytest.mark.parametrize(
    ("fmt", "container", "found"),
    [
        (JPEG, (0xEB, app11_jumbf(C2PA_TYPE)), True),
        (JPEG, (0xEB, app11_jumbf(C2PA_TYPE, extended_length=True)), True),
        (JPEG, (0xEB, app11_jumbf(b"json" + C2PA_TYPE[4:])), False),  # another JUMBF type
        (JPEG, (0xEB, b"XX" + app11_jumbf(C2PA_TYPE)[2:]), False),  # not JPEG XT
        (JPEG, (0xEB, b"JP\x00\x01"), False),  # too short to say
        (JPEG, (0xE1, app11_jumbf(C2PA_TYPE)), False),  # not APP11
        (PNG, (b"caBX", JUMBF), True),
        (PNG, (b"tEXt", b"caBX\x00" + JUMBF), False),
        (WEBP, (b"C2PA", JUMBF), True),
        (WEBP, (b"c2pa", JUMBF), False),
    ],
    ids=[
        "jpeg-app11",
        "jpeg-app11-extended-length",
        "jpeg-app11-other-jumbf",
        "jpeg-app11-not-jpeg-xt",
        "jpeg-app11-short",
        "jpeg-app1",
        "png-cabx",
        "png-text",
        "webp-c2pa",
        "webp-lowercase",
    ],
)
def test_the_c2pa_container_of_each_format(
    tmp_path: Path, fmt: ImageFormat, container: tuple[int | bytes, bytes], found: bool
) -> None:
    kind, body = container
    data = one_source(fmt).data
    if isinstance(kind, int):
        source = insert_jpeg_segment(data, kind, body)
    elif fmt is PNG:
        source = insert_png_chunk(data, kind, body, before=b"IDAT")
    else:
        source = append_webp_chunk(data, kind, body)
    assert carries_c2pa(write(tmp_path, source), fmt) is found


# --- Refusals ---------------------------------------------------------------------------


def cut(fmt: ImageFormat, where: float) -> bytes:
    data = one_source(fmt).data
    return data[: int(len(data) * where)]


def sos_cut() -> bytes:
    """Cut inside the header of the first scan."""
    data = one_source(JPEG).data
    return data[: data.index(b"\xff\xda") + 6]


def short_riff() -> bytes:
    """A RIFF size that ends inside the image chunk, the file going on after it."""
    data = SOURCES[SOURCE_IDS.index("webp-lossless")].data
    return data[:4] + struct.pack("<I", 12) + data[8:]


def first_idat_cut() -> bytes:
    data = SOURCES[0].data
    return data[: data.index(b"IDAT") + 10]


def vp8_sized(width: int, height: int) -> bytes:
    """A simple lossy WebP whose VP8 frame header says this size."""
    data = SOURCES[SOURCE_IDS.index("webp-lossy")].data
    assert data[12:16] == b"VP8 "
    assert data[23:26] == b"\x9d\x01\x2a"  # a key frame's start code
    return data[:26] + struct.pack("<HH", width, height) + data[30:]


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        (b"", PNG, "not a PNG image"),
        (b"hello world, not an image", PNG, "not a PNG image"),
        (one_source(JPEG).data, PNG, "not a PNG image"),
        (SOURCES[0].data[:20], PNG, "png image is truncated"),
        (first_idat_cut(), PNG, "png image is truncated"),
        (SOURCES[0].data[:-12], PNG, "png image is truncated"),  # no IEND
        (cut(PNG, 0.5), PNG, "png image is truncated"),
        (b"\x89PNG\r\n\x1a\n" + SOURCES[0].data[33:], PNG, "first chunk is not IHDR"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", JPEG, "not a JPEG image"),
        (SOURCES[0].data, JPEG, "not a JPEG image"),
        (cut(JPEG, 0.05), JPEG, "jpeg image is truncated"),
        (sos_cut(), JPEG, "jpeg image is truncated"),
        (
            b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9",
            JPEG,
            "ends before any image data",
        ),
        (
            b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00ab",
            JPEG,
            "no marker at byte 20",
        ),
        (b"RIFF\x04\x00\x00\x00WAVE", WEBP, "not a WebP image"),
        (cut(WEBP, 0.5), WEBP, "webp image is truncated"),
        (b"RIFF\x0c\x00\x00\x00WEBPJUNK\x00\x00\x00\x00", WEBP, "has no VP8X, VP8 or VP8L"),
        (b"RIFF\x0c\x00\x00\x00WEBPVP8 \x20\x00\x00\x00", WEBP, "webp image is truncated"),
        (short_riff(), WEBP, "a chunk runs past the end"),
        (vp8_sized(0, 23), WEBP, "its VP8 frame has no width or height"),
        (vp8_sized(37, 0x4000), WEBP, "its VP8 frame has no width or height"),  # scale bits only
        (SOURCES[0].data, ImageFormat.GIF, "gif images can't carry"),
    ],
    ids=[
        "png-empty",
        "png-text",
        "png-is-jpeg",
        "png-in-header",
        "png-in-idat",
        "png-no-iend",
        "png-half",
        "png-no-ihdr",
        "jpeg-svg",
        "jpeg-is-png",
        "jpeg-in-header",
        "jpeg-in-sos",
        "jpeg-no-scan",
        "jpeg-junk",
        "webp-wave",
        "webp-half",
        "webp-junk-chunk",
        "webp-chunk-past-file",
        "webp-chunk-past-riff",
        "webp-vp8-width-0",
        "webp-vp8-height-0",
        "gif",
    ],
)
def test_damaged_or_fake_files_are_refused(
    tmp_path: Path, data: bytes, fmt: ImageFormat, message: str
) -> None:
    src = write(tmp_path, data)
    with pytest.raises(MarkingError, match=message):
        mark(src, tmp_path / "out", fmt, TRAINED_ALGORITHMIC_MEDIA)
    assert not (tmp_path / "out").exists()
    with pytest.raises(MarkingError, match=message):
        read_source_type(src, fmt)
    assert issubclass(MarkingError, ValueError)


def damaged_copies(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    """Copies cut short, or with a few bytes changed: mostly in the first 1 KB, where
    the headers and metadata are, else anywhere."""
    copies = []
    for _ in range(count):
        if rng.random() < 0.25:
            copies.append(data[: rng.randrange(len(data))])
            continue
        copy = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(min(len(copy), 1024) if rng.random() < 0.7 else len(copy))
            copy[at] = rng.choice(
                [0x00, 0xFF, rng.randrange(256), copy[at] ^ (1 << rng.randrange(8))]
            )
        copies.append(bytes(copy))
    return copies


@pytest.mark.parametrize("fmt", FORMATS)
def test_damaged_files_raise_only_marking_errors(tmp_path: Path, fmt: ImageFormat) -> None:
    """Whatever the damage, the caller sees a MarkingError (or an OSError), never a
    stray IndexError, struct.error or OverflowError."""
    rng = random.Random(20240917)
    samples = [s for s in SOURCES if s.fmt is fmt and ("exif" in s.name or s.name == "webp-lossy")]
    sources = [s.data for s in samples]
    sources += [marked(tmp_path, s.data, fmt)[1] for s in samples]
    sources += [with_xmp(samples[0], packet(f'ext:DigitalSourceType="{DC}"', 'xmp:Label="x"'))]
    src, dst = tmp_path / "fuzzed", tmp_path / "fuzzed-out"
    for number, data in enumerate(
        copy for source in sources for copy in damaged_copies(source, rng, 240 // len(sources))
    ):
        src.write_bytes(data)
        for call in (
            lambda: mark(src, dst, fmt, TRAINED_ALGORITHMIC_MEDIA),
            lambda: read_source_type(src, fmt),
            lambda: carries_c2pa(src, fmt),
        ):
            try:
                call()
            except (MarkingError, OSError):
                pass
            except Exception as err:
                pytest.fail(f"damaged copy {number}: {type(err).__name__}: {err}")


BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
    b'22-rdf-syntax-ns#"><rdf:Description rdf:about="&c;"/></rdf:RDF></x:xmpmeta>'
)
EXTERNAL_ENTITY = (
    b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x:xmpmeta xmlns:x="adobe:ns:meta/">'
    b"&e;</x:xmpmeta>"
)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("existing", "message"),
    [
        (b"<x:xmpmeta><rdf:RDF>not closed", "not well-formed XML"),
        (b"just text", "not well-formed XML"),
        (BILLION_LAUGHS, "declares a DTD"),
        (EXTERNAL_ENTITY, "declares a DTD"),
        (
            b'<!DOCTYPE x SYSTEM "http://127.0.0.1:9/x.dtd">' + TITLED[TITLED.index(b"<x:") :],
            "declares a DTD",
        ),
        (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><a>b</a></x:xmpmeta>', "no rdf:RDF element"),
        (packet('xmp:Label="caf\u00e9"').replace("\u00e9".encode(), b"\xe9"), "not UTF-8"),
    ],
    ids=[
        "unclosed",
        "text",
        "billion-laughs",
        "external-entity",
        "external-dtd",
        "no-rdf",
        "latin-1",
    ],
)
def test_unreadable_packets_are_refused(
    tmp_path: Path, fmt: ImageFormat, existing: bytes, message: str
) -> None:
    base = one_source(fmt)
    if fmt is PNG:  # Pillow writes iTXt text as UTF-8 only
        source = insert_png_chunk(base.data, b"iTXt", png_xmp_body(existing), before=b"IDAT")
    else:
        source = with_xmp(base, existing)
    src = write(tmp_path, source)
    with pytest.raises(MarkingError, match=message):
        mark(src, tmp_path / "out", fmt, TRAINED_ALGORITHMIC_MEDIA)
    assert not (tmp_path / "out").exists()
    with pytest.raises(MarkingError, match=message):
        read_source_type(src, fmt)


@pytest.mark.parametrize("fmt", [PNG, WEBP])  # a JPEG segment can't hold that much
def test_a_packet_over_1_mib_is_refused(tmp_path: Path, fmt: ImageFormat) -> None:
    huge = TITLED.replace(b"A title", b"x" * (1 << 20))
    source = with_xmp(one_source(fmt), huge)
    with pytest.raises(MarkingError, match="larger than 1048576 bytes"):
        mark(write(tmp_path, source), tmp_path / "out", fmt, TRAINED_ALGORITHMIC_MEDIA)


def test_a_compressed_png_packet_is_inflated_no_further_than_1_mib(tmp_path: Path) -> None:
    bomb = zlib.compress(TITLED.replace(b"A title", b"x" * (64 << 20)), 9)
    body = b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + bomb
    source = insert_png_chunk(SOURCES[0].data, b"iTXt", body, before=b"IDAT")
    assert len(source) < 200_000
    src = write(tmp_path, source)
    tracemalloc.start()
    try:
        with pytest.raises(MarkingError, match="larger than 1048576 bytes"):
            read_source_type(src, PNG)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_a_compressed_png_packet_cut_short_is_refused(tmp_path: Path) -> None:
    stream = zlib.compress(TITLED, 9)
    body = b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + stream[: len(stream) // 2]
    source = insert_png_chunk(SOURCES[0].data, b"iTXt", body, before=b"IDAT")
    with pytest.raises(MarkingError, match="does not inflate"):
        read_source_type(write(tmp_path, source), PNG)


def with_packets(fmt: ImageFormat, packets: list[bytes], *, compressed: bool = False) -> bytes:
    """One source image with each of `packets` in a container of its own."""
    data = one_source(fmt).data
    for xmp in packets:
        if fmt is PNG:
            body = png_xmp_body(xmp)
            if compressed:
                body = b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + zlib.compress(xmp, 9)
            data = insert_png_chunk(data, b"iTXt", body, before=b"IEND")
        elif fmt is JPEG:
            data = insert_jpeg_segment(data, 0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + xmp)
        else:
            data = append_webp_chunk(data, b"XMP ", xmp)
    return data


def test_many_compressed_png_packets_are_bounded_as_a_whole(tmp_path: Path) -> None:
    """Each packet inflates to 300 KB, well under the limit of one; 300 of them in a file
    of a few hundred KB would be 90 MB held at once if each was inflated and kept."""
    each = TITLED.replace(b"A title", b"x" * 300_000)
    source = with_packets(PNG, [each] * 300, compressed=True)
    assert len(source) < 400_000
    src = write(tmp_path, source)
    tracemalloc.start()
    try:
        with pytest.raises(MarkingError, match="larger than 1048576 bytes"):
            read_source_type(src, PNG)
        with pytest.raises(MarkingError, match="larger than 1048576 bytes"):
            mark(src, tmp_path / "out", PNG, TRAINED_ALGORITHMIC_MEDIA)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_file_holds_at_most_four_xmp_packets(tmp_path: Path, fmt: ImageFormat) -> None:
    four = write(tmp_path, with_packets(fmt, [TITLED] * 4), "four")
    assert read_source_type(four, fmt) is None
    assert mark(four, tmp_path / "out", fmt, TRAINED_ALGORITHMIC_MEDIA) is MarkResult.ADDED
    five = write(tmp_path, with_packets(fmt, [TITLED] * 5), "five")
    with pytest.raises(MarkingError, match="more than 4 XMP packets"):
        read_source_type(five, fmt)
    with pytest.raises(MarkingError, match="more than 4 XMP packets"):
        carries_c2pa(five, fmt)


@pytest.mark.parametrize(
    ("fmt", "compressed"),
    [(PNG, False), (PNG, True), (WEBP, False)],
    ids=["png", "png-zip", "webp"],
)
def test_a_files_packets_are_1_mib_in_all(
    tmp_path: Path, fmt: ImageFormat, compressed: bool
) -> None:
    half = TITLED.replace(b"A title", b"x" * (MAX_PACKET // 2 - len(TITLED) + 7))
    assert len(half) * 2 == MAX_PACKET
    fits = write(tmp_path, with_packets(fmt, [half, half], compressed=compressed), "fits")
    assert read_source_type(fits, fmt) is None
    over = write(tmp_path, with_packets(fmt, [half, half + b" "], compressed=compressed), "over")
    with pytest.raises(MarkingError, match="larger than 1048576 bytes"):
        read_source_type(over, fmt)


def test_a_png_xmp_chunk_with_a_bad_crc_is_refused(tmp_path: Path) -> None:
    source = with_xmp(SOURCES[0], TITLED)
    at = source.index(b"A title")
    damaged = source[:at] + b"B" + source[at + 1 :]
    with pytest.raises(MarkingError, match="fails its CRC"):
        read_source_type(write(tmp_path, damaged), PNG)


def test_a_jpeg_packet_that_outgrows_its_segment_is_refused(tmp_path: Path) -> None:
    full = TITLED.replace(b"A title", b"x" * (0xFFFF - 2 - 29 - len(TITLED)))
    source = with_xmp(one_source(JPEG), full)
    with pytest.raises(MarkingError, match="a JPEG APP1 segment holds at most 65504"):
        mark(write(tmp_path, source), tmp_path / "out", JPEG, TRAINED_ALGORITHMIC_MEDIA)
    assert not (tmp_path / "out").exists()


# --- Streaming --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_large_image_is_streamed(tmp_path: Path, fmt: ImageFormat) -> None:
    noise = Image.frombytes("RGB", (1600, 1600), random.Random(1).randbytes(1600 * 1600 * 3))
    options = {
        PNG: {"compress_level": 0},
        JPEG: {"quality": 100},
        WEBP: {"quality": 100, "method": 0},
    }
    data = encode(noise, fmt, **options[fmt])
    assert len(data) > 5_000_000
    src = write(tmp_path, data)
    tracemalloc.start()
    try:
        mark(src, tmp_path / "out", fmt, TRAINED_ALGORITHMIC_MEDIA)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 << 20  # a piece or two of 1 MiB, never the whole file
    assert pixel_data(fmt, (tmp_path / "out").read_bytes()) == pixel_data(fmt, data)
