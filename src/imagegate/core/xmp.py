"""The plain AI-generated marking: IPTC DigitalSourceType in an image's XMP packet.

`mark` copies a PNG, JPEG or WebP file with an XMP packet that says how the image was
made (`Iptc4xmpExt:DigitalSourceType`), changing metadata only: the compressed pixel
data (PNG IDAT, JPEG scans, WebP VP8/VP8L/ALPH/ANIM/ANMF chunks) is copied byte for
byte, never decoded, and the file is streamed, never held whole. Only the chunk or
segment headers are read, plus the XMP packet itself.

Markings already there are never removed. An existing packet keeps every byte of what
it holds: the source type goes in as one more rdf:Description, inserted as text, so
nothing is re-serialised. When the packet already names a source type (an upstream
marked the image), that value wins and the file is copied unchanged. EXIF, ICC
profiles, C2PA manifests (JPEG APP11, PNG caBX) and any other chunk stay as they are.

Packets are parsed with expat (the parser under xml.etree) with DTDs refused, so no
entity can expand or load anything; a packet over 1 MiB is refused before it is read.
Anything that can't be handled raises MarkingError (a ValueError) with a message that
says why; the caller decides what to do with the image.
"""

import re
import struct
import zlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO
from xml.parsers import expat
from xml.sax.saxutils import quoteattr

from imagegate.core.edits import Edit, apply_edits
from imagegate.core.images import ImageFormat

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
)
MAX_PACKET = 1 << 20
"""The largest XMP packet read; a larger one is refused unread."""

_IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
# expat joins a namespace and a local name with this separator.
_SOURCE_TYPE = f"{_IPTC_EXT} DigitalSourceType"
_RDF_RDF = f"{_RDF} RDF"
_RDF_DESCRIPTION = f"{_RDF} Description"
_RDF_ABOUT = f"{_RDF} about"
_RDF_RESOURCE = f"{_RDF} resource"
_URI = re.compile(r"[!-~]+")
"""Printable ASCII without spaces: a URI, which an attribute holds unchanged."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_XMP_KEYWORD = b"XML:com.adobe.xmp"
_JPEG_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_JPEG_EXIF = b"Exif\x00\x00"
_JPEG_MAX_PACKET = 0xFFFF - 2 - len(_JPEG_XMP)
"""An APP1 segment holds at most this much XMP (larger needs "extended XMP")."""
_VP8X_ICC = 0x20
_VP8X_ALPHA = 0x10
_VP8X_EXIF = 0x08
_VP8X_XMP = 0x04
_VP8X_ANIMATION = 0x02


class MarkingError(ValueError):
    """The image or its XMP can't be marked or read; the message says why."""


class MarkResult(StrEnum):
    ADDED = "added"
    """The source type was written."""
    KEPT = "kept"
    """The image already named a source type; it was left as it was."""


def source_type_packet(source_type: str) -> bytes:
    """A complete XMP packet (with its xpacket wrapper) that holds only the source type."""
    _check_source_type(source_type)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        f' <rdf:RDF xmlns:rdf="{_RDF}">\n'
        '  <rdf:Description rdf:about=""\n'
        f'    xmlns:Iptc4xmpExt="{_IPTC_EXT}"\n'
        f"    Iptc4xmpExt:DigitalSourceType={quoteattr(source_type)}/>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode()


def mark(src: Path, dst: Path, fmt: ImageFormat, source_type: str) -> MarkResult:
    """Write `src` to `dst` with `source_type` in its XMP, or unchanged (KEPT) when its
    XMP already names one. Raises MarkingError for a damaged or unsupported file or an
    XMP packet that can't be read (too large, not well-formed, a DTD)."""
    _check_source_type(source_type)
    if dst.exists() and dst.samefile(src):  # opening dst would empty src before its copy
        raise MarkingError("the marked copy must go to another file than the source")
    layout = _layout(src, fmt)
    parsed = [_parse(packet.data) for packet in layout.packets]
    if any(xmp.source_type is not None for xmp in parsed):
        edits: list[Edit] = []
        result = MarkResult.KEPT
    else:
        if layout.packets:
            new = _with_source_type(layout.packets[0].data, parsed[0], source_type)
        else:
            new = source_type_packet(source_type)
        edits = _edits(layout, fmt, new)
        result = MarkResult.ADDED
    with dst.open("wb") as out:

        def write(piece: bytes) -> None:
            out.write(piece)

        apply_edits(src, edits, write)
    return result


def read_source_type(path: Path, fmt: ImageFormat) -> str | None:
    """The DigitalSourceType the image's XMP names (attribute or element form), or None.
    Raises MarkingError as `mark` does."""
    for packet in _layout(path, fmt).packets:
        found = _parse(packet.data).source_type
        if found is not None:
            return found
    return None


def source_type_in(packet: bytes) -> str | None:
    """The DigitalSourceType one XMP packet names (attribute, element or rdf:resource
    form), or None. Raises MarkingError for a packet that can't be read (over 1 MiB,
    not UTF-8, not well-formed XML, a DTD, no rdf:RDF)."""
    return _parse(packet).source_type


def _check_source_type(source_type: str) -> None:
    if not _URI.fullmatch(source_type):
        raise MarkingError("the digital source type must be a URI (printable, no spaces)")


# --- The XMP packet -------------------------------------------------------------------


@dataclass(frozen=True)
class _Xmp:
    source_type: str | None
    about: str
    """The rdf:about of the packet's descriptions, which a new one must repeat."""
    rdf_end: int | None
    """Where `</rdf:RDF>` starts; None when rdf:RDF is an empty element (`<rdf:RDF/>`)."""


class _Reader:
    """Expat handlers that note the source type, rdf:about and where rdf:RDF ends."""

    def __init__(self, parser: expat.XMLParserType, packet: bytes) -> None:
        self.parser = parser
        self.packet = packet
        self.depth = 0
        self.source_type: str | None = None
        self.about: str | None = None
        self.rdf_depth: int | None = None
        self.rdf_start = 0
        self.rdf_has_content = False
        self.rdf_end: int | None = None
        self.value_depth: int | None = None
        """While inside a DigitalSourceType element: its depth."""
        self.value: list[str] = []

    def start(self, name: str, attributes: dict[str, str]) -> None:
        self.depth += 1
        self.rdf_has_content = True
        if name == _RDF_RDF and self.rdf_depth is None:
            self.rdf_depth = self.depth
            self.rdf_start = self.parser.CurrentByteIndex
            self.rdf_has_content = False
        if name == _RDF_DESCRIPTION and self.about is None:
            self.about = attributes.get(_RDF_ABOUT, "")
        if self.source_type is None and self.value_depth is None:
            if _SOURCE_TYPE in attributes:
                self.source_type = attributes[_SOURCE_TYPE]
            elif name == _SOURCE_TYPE:
                self.value_depth = self.depth
                self.value = [attributes.get(_RDF_RESOURCE, "")]

    def end(self, name: str) -> None:
        if self.depth == self.value_depth:
            self.source_type = "".join(self.value).strip()
            self.value_depth = None
        if name == _RDF_RDF and self.depth == self.rdf_depth and self.rdf_end is None:
            here = self.parser.CurrentByteIndex
            # For an empty element expat reports the end just after its tag.
            empty = not self.rdf_has_content and self.packet[self.rdf_start : here].endswith(b"/>")
            self.rdf_end = None if empty else here
        self.depth -= 1

    def text(self, data: str) -> None:
        self.rdf_has_content = True
        if self.value_depth is not None:
            self.value.append(data)


def _refuse_dtd(*_: object) -> None:
    raise MarkingError("the XMP packet declares a DTD, which XMP never needs; refused")


def _parse(packet: bytes) -> _Xmp:
    if len(packet) > MAX_PACKET:
        raise MarkingError(f"the XMP packet is larger than {MAX_PACKET} bytes; refused")
    try:
        packet.decode("utf-8")
    except UnicodeDecodeError:
        raise MarkingError("the XMP packet is not UTF-8") from None
    parser = expat.ParserCreate(namespace_separator=" ")
    reader = _Reader(parser, packet)
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.text
    try:
        # Some writers pad the packet with NUL bytes, which are not XML.
        parser.Parse(packet.rstrip(b"\x00"), True)
    except expat.ExpatError as err:
        raise MarkingError(f"the XMP packet is not well-formed XML ({err})") from None
    if reader.rdf_depth is None:
        raise MarkingError("the XMP packet has no rdf:RDF element")
    return _Xmp(reader.source_type, reader.about or "", reader.rdf_end)


def _with_source_type(packet: bytes, xmp: _Xmp, source_type: str) -> bytes:
    """`packet` with one more rdf:Description, holding the source type, at the end of
    its rdf:RDF. The new element declares its own prefixes, so it reads the same
    whatever prefixes the packet uses."""
    if xmp.rdf_end is None:
        return source_type_packet(source_type)  # an empty rdf:RDF: nothing to keep
    description = (
        f'<rdf:Description xmlns:rdf="{_RDF}" xmlns:Iptc4xmpExt="{_IPTC_EXT}" '
        f"rdf:about={quoteattr(xmp.about)} "
        f"Iptc4xmpExt:DigitalSourceType={quoteattr(source_type)}/>\n"
    ).encode()
    new = packet[: xmp.rdf_end] + description + packet[xmp.rdf_end :]
    if _parse(new).source_type != source_type:  # a guard: the insertion must read back
        raise MarkingError("the source type could not be added to the existing XMP packet")
    return new


# --- The containers -------------------------------------------------------------------


@dataclass(frozen=True)
class _Packet:
    start: int
    """The chunk or segment that holds the packet: where it starts and ends in the file."""
    end: int
    data: bytes


@dataclass(frozen=True)
class _WebpHeader:
    riff_end: int
    vp8x: Edit
    """The XMP flag set in the VP8X chunk, or a VP8X chunk added to a simple file."""


@dataclass(frozen=True)
class _Layout:
    packets: list[_Packet]
    insert_at: int
    """Where a new XMP chunk or segment goes."""
    webp: _WebpHeader | None = None


def _layout(path: Path, fmt: ImageFormat) -> _Layout:
    # Unbuffered: a scan seeks from chunk header to chunk header, reading a few bytes.
    with path.open("rb", buffering=0) as fh:
        size = path.stat().st_size
        if fmt is ImageFormat.PNG:
            return _png(fh)
        if fmt is ImageFormat.JPEG:
            return _jpeg(fh, size)
        if fmt is ImageFormat.WEBP:
            return _webp(fh, size)
    raise MarkingError(f"{fmt.value} images can't carry the XMP marking")


def _edits(layout: _Layout, fmt: ImageFormat, packet: bytes) -> list[Edit]:
    """The edits that put `packet` in the file: in place of its first XMP packet, or as
    a new chunk or segment."""
    if fmt is ImageFormat.PNG:
        data = _PNG_XMP_KEYWORD + b"\x00\x00\x00\x00\x00" + packet  # uncompressed, no language
        crc = zlib.crc32(b"iTXt" + data)
        container = struct.pack(">I4s", len(data), b"iTXt") + data + struct.pack(">I", crc)
    elif fmt is ImageFormat.JPEG:
        if len(packet) > _JPEG_MAX_PACKET:
            raise MarkingError(
                f"the XMP packet would be {len(packet)} bytes; a JPEG APP1 segment holds "
                f"at most {_JPEG_MAX_PACKET}"
            )
        container = b"\xff\xe1" + struct.pack(">H", 2 + len(_JPEG_XMP) + len(packet))
        container += _JPEG_XMP + packet
    else:
        container = b"XMP " + struct.pack("<I", len(packet)) + packet + b"\x00" * (len(packet) & 1)
    if layout.packets:
        first = layout.packets[0]
        edits = [Edit(first.start, first.end, container)]
    else:
        edits = [Edit(layout.insert_at, layout.insert_at, container)]
    if layout.webp is not None:
        edits += _webp_header_edits(layout.webp, edits)
    return edits


def _exact(fh: BinaryIO, size: int, what: str) -> bytes:
    data = b""
    while len(data) < size:
        piece = fh.read(size - len(data))
        if not piece:
            raise MarkingError(f"{what} image is truncated")
        data += piece
    return data


def _png(fh: BinaryIO) -> _Layout:
    """The iTXt XMP packets of a PNG; a new one goes right after IHDR. Every chunk
    header up to IEND is read, so a cut file is refused and XMP after IDAT is found."""
    if fh.read(8) != _PNG_SIGNATURE:
        raise MarkingError("not a PNG image (no PNG signature)")
    packets: list[_Packet] = []
    insert_at = 0
    position = 8
    while True:
        fh.seek(position)
        length, kind = struct.unpack(">I4s", _exact(fh, 8, "png"))
        end = position + 12 + length
        if length > 0x7FFFFFFF:  # the next read past the end says when it is cut
            raise MarkingError("png image is damaged (a chunk length is out of range)")
        if position == 8:
            if kind != b"IHDR":
                raise MarkingError("png image is damaged (the first chunk is not IHDR)")
            insert_at = end
        if kind == b"IEND":
            return _Layout(packets, insert_at)
        if kind == b"iTXt" and length > len(_PNG_XMP_KEYWORD):
            packet = _png_xmp(fh, position, length)
            if packet is not None:
                packets.append(_Packet(position, end, packet))
        position = end


def _png_xmp(fh: BinaryIO, position: int, length: int) -> bytes | None:
    """The XMP packet in the iTXt chunk at `position`, or None when it holds other text.
    The chunk is keyword, compressed flag and method, language tag, translated keyword,
    text; the text is inflated (1 MiB at most) when compressed."""
    if _exact(fh, len(_PNG_XMP_KEYWORD) + 1, "png") != _PNG_XMP_KEYWORD + b"\x00":
        return None
    if length > MAX_PACKET + 1024:  # the packet, plus the chunk's own fields
        raise MarkingError(f"the XMP packet is larger than {MAX_PACKET} bytes; refused")
    fh.seek(position + 4)
    body = _exact(fh, 4 + length + 4, "png")
    if zlib.crc32(body[:-4]) != struct.unpack(">I", body[-4:])[0]:
        raise MarkingError("png image is damaged (its XMP chunk fails its CRC)")
    data = body[4:-4]
    try:
        rest = data.split(b"\x00", 1)[1]
        compressed, method = rest[0], rest[1]
        text = rest[2:].split(b"\x00", 2)[2]
    except IndexError:
        raise MarkingError("png image is damaged (its XMP chunk is malformed)") from None
    if not compressed:
        return text
    if method != 0:
        raise MarkingError("png image's XMP chunk uses an unknown compression method")
    inflater = zlib.decompressobj()
    try:
        return inflater.decompress(text, MAX_PACKET + 1)  # one byte more is refused later
    except zlib.error:
        raise MarkingError("png image's XMP chunk does not inflate") from None


def _jpeg(fh: BinaryIO, size: int) -> _Layout:
    """The APP1 XMP packets before the first scan; a new one goes after SOI and the
    APP0 (JFIF) and APP1 Exif segments that lead the file. The scans are not read."""
    if fh.read(3) != b"\xff\xd8\xff":
        raise MarkingError("not a JPEG image (no SOI marker)")
    packets: list[_Packet] = []
    insert_at = 2
    leading = True
    position = 2
    while True:
        fh.seek(position)
        marker = _exact(fh, 2, "jpeg")
        if marker[0] != 0xFF:
            raise MarkingError(f"jpeg image is damaged (no marker at byte {position})")
        kind = marker[1]
        if kind == 0xFF:  # a fill byte before a marker
            position += 1
            continue
        if kind == 0xD9:
            raise MarkingError("jpeg image is damaged (it ends before any image data)")
        if 0xD0 <= kind <= 0xD8 or kind == 0x01:  # markers without a length
            position += 2
            leading = False
            continue
        (length,) = struct.unpack(">H", _exact(fh, 2, "jpeg"))
        end = position + 2 + length
        if length < 2 or end > size:
            raise MarkingError("jpeg image is truncated or damaged (a segment runs past the end)")
        if kind == 0xDA:  # start of scan: the image data follows
            return _Layout(packets, insert_at)
        head = _exact(fh, min(length - 2, len(_JPEG_XMP)), "jpeg")
        if kind == 0xE1 and head == _JPEG_XMP:
            data = _exact(fh, length - 2 - len(_JPEG_XMP), "jpeg")
            packets.append(_Packet(position, end, data))
            leading = False
        elif leading and (kind == 0xE0 or (kind == 0xE1 and head.startswith(_JPEG_EXIF))):
            insert_at = end
        else:
            leading = False
        position = end


def _webp(fh: BinaryIO, size: int) -> _Layout:
    """The "XMP " chunks of a WebP, which has every chunk header read and checked; a
    new one goes at the end of the RIFF container. A simple (VP8 or VP8L only) file
    gets the VP8X header that the extended format, the one with metadata, needs."""
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WEBP":
        raise MarkingError("not a WebP image (no RIFF WEBP header)")
    riff_end = 8 + struct.unpack("<I", head[4:8])[0]
    if riff_end > size:
        raise MarkingError("webp image is truncated (the file is shorter than its RIFF size)")
    packets: list[_Packet] = []
    kinds: set[bytes] = set()
    vp8x_head = b""
    bitstream = (b"", b"")
    """The kind and first bytes of the first VP8 or VP8L chunk."""
    position = 12
    while position < riff_end:
        fh.seek(position)
        kind, length = struct.unpack("<4sI", _exact(fh, 8, "webp"))
        end = position + 8 + length + (length & 1)
        if end > riff_end:
            raise MarkingError("webp image is truncated or damaged (a chunk runs past the end)")
        if position == 12 and kind == b"VP8X":
            vp8x_head = _exact(fh, min(length, 10), "webp")
        if kind in (b"VP8 ", b"VP8L") and not bitstream[0]:
            bitstream = kind, _exact(fh, min(length, 10), "webp")
        kinds.add(kind)
        if kind == b"XMP ":
            if length > MAX_PACKET:
                raise MarkingError(f"the XMP packet is larger than {MAX_PACKET} bytes; refused")
            packets.append(_Packet(position, end, _exact(fh, length, "webp")))
        position = end
    if b"VP8X" in kinds:
        if len(vp8x_head) < 10:
            raise MarkingError("webp image is damaged (its VP8X chunk is not first, or short)")
        set_flag = Edit(20, 21, bytes([vp8x_head[0] | _VP8X_XMP]))  # VP8X is at 12
        return _Layout(packets, riff_end, _WebpHeader(riff_end, set_flag))
    width, height, alpha = _bitstream_size(*bitstream)
    flags = _VP8X_XMP
    flags |= _VP8X_ICC if b"ICCP" in kinds else 0
    flags |= _VP8X_ALPHA if alpha or b"ALPH" in kinds else 0
    flags |= _VP8X_EXIF if b"EXIF" in kinds else 0
    flags |= _VP8X_ANIMATION if b"ANIM" in kinds else 0
    body = bytes([flags, 0, 0, 0]) + (width - 1).to_bytes(3, "little")
    body += (height - 1).to_bytes(3, "little")
    vp8x = Edit(12, 12, b"VP8X" + struct.pack("<I", len(body)) + body)  # after the header
    return _Layout(packets, riff_end, _WebpHeader(riff_end, vp8x))


def _bitstream_size(kind: bytes, data: bytes) -> tuple[int, int, bool]:
    """Width, height and whether it has alpha, from the start of a VP8 or VP8L chunk."""
    if kind == b"VP8 " and len(data) >= 10 and data[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[6:10])
        return width & 0x3FFF, height & 0x3FFF, False
    if kind == b"VP8L" and len(data) >= 5 and data[0] == 0x2F:
        (bits,) = struct.unpack("<I", data[1:5])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1)
    raise MarkingError("webp image is damaged (it has no VP8X, VP8 or VP8L chunk)")


def _webp_header_edits(header: _WebpHeader, edits: list[Edit]) -> list[Edit]:
    """The VP8X edit, and the RIFF size grown by what all the edits add."""
    growth = sum(len(e.replacement) - (e.end - e.start) for e in [*edits, header.vp8x])
    riff_size = header.riff_end - 8 + growth
    if riff_size > 0xFFFFFFFF:
        raise MarkingError("webp image would exceed the RIFF size limit of 4 GiB")
    return [Edit(4, 8, struct.pack("<I", riff_size)), header.vp8x]
