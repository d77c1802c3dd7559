"""The plain AI-generated marking: IPTC DigitalSourceType in an image's XMP packet.

`mark` copies a PNG, JPEG or WebP file with an XMP packet that says how the image was
made (`Iptc4xmpExt:DigitalSourceType`), changing metadata only: the compressed pixel
data (PNG IDAT, JPEG scans, WebP VP8/VP8L/ALPH/ANIM/ANMF chunks) is copied byte for
byte, never decoded, and the file is streamed, never held whole. Only the chunk or
segment headers are read, plus the XMP packets themselves.

An existing packet keeps every byte of what it holds but the source type. Only a
top-level property of an rdf:Description directly under rdf:RDF is the image's own
source type, as standard readers see it; one nested in another property (an XMP
history entry, say) or outside rdf:RDF is not. When the image already names a source
type that says it was generated (one of AI_SOURCE_TYPES, as an upstream marks its
images), that value stays and the file is copied unchanged. Any other value (a
camera's digitalCapture, say) would make a generated image claim what it is not: it
is replaced in place, only the value's bytes changing. With none, the source type
goes in as one more rdf:Description, inserted as text, so nothing is re-serialised.
EXIF, ICC profiles, C2PA manifests (JPEG APP11, PNG caBX, WebP C2PA) and any other
chunk stay as they are; `carries_c2pa` tells the caller when a manifest would be
broken by the change.

Packets are parsed with expat (the parser under xml.etree) with DTDs refused, so no
entity can expand or load anything. A file's XMP is bounded as a whole: at most
MAX_PACKETS packets of MAX_PACKET bytes in all (inflated, for a compressed PNG chunk),
refused before more is read or inflated, so that many small compressed packets can't
add up. Anything that can't be handled raises MarkingError (a ValueError) with a
message that says why; the caller decides what to do with the image.
"""

import re
import struct
import zlib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

from imagegate.core.edits import Edit, apply_edits
from imagegate.core.images import ImageFormat

_IPTC_SOURCE_TYPES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TRAINED_ALGORITHMIC_MEDIA = _IPTC_SOURCE_TYPES + "trainedAlgorithmicMedia"
COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA = (
    _IPTC_SOURCE_TYPES + "compositeWithTrainedAlgorithmicMedia"
)
AI_SOURCE_TYPES = frozenset(
    {
        TRAINED_ALGORITHMIC_MEDIA,
        COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
        _IPTC_SOURCE_TYPES + "algorithmicMedia",  # by an algorithm, not from training data
        _IPTC_SOURCE_TYPES + "compositeSynthetic",  # a composite with synthetic elements
    }
)
"""The IPTC source types that say an algorithm or a model made the image: one of these
already in an image stays; any other is replaced by ours."""
MAX_PACKET = 1 << 20
"""The most XMP read from one file, all its packets together (inflated where they are
compressed); more is refused unread."""
MAX_PACKETS = 4
"""The most XMP packets read from one file; a file with more is refused."""

_IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
# expat joins a namespace and a local name with this separator.
_SOURCE_TYPE = f"{_IPTC_EXT} DigitalSourceType"
_RDF_RDF = f"{_RDF} RDF"
_RDF_DESCRIPTION = f"{_RDF} Description"
_RDF_ABOUT = f"{_RDF} about"
_RDF_RESOURCE = f"{_RDF} resource"
_RDF_PARSE_TYPE = f"{_RDF} parseType"
_URI = re.compile(r"[!-~]+")
"""Printable ASCII without spaces: a URI, which an attribute holds unchanged."""
_TAG_NAME = re.compile(rb"<[^\s/>]+")
_TAG_ATTRIBUTE = re.compile(rb"\s+([^\s=/>]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_TAG_END = re.compile(rb"\s*(/?)>")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_XMP_KEYWORD = b"XML:com.adobe.xmp"
_JPEG_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_JPEG_EXIF = b"Exif\x00\x00"
_JPEG_MAX_PACKET = 0xFFFF - 2 - len(_JPEG_XMP)
"""An APP1 segment holds at most this much XMP (larger needs "extended XMP")."""
_JUMBF_C2PA = b"c2pa\x00\x11\x00\x10\x80\x00\x00\xaa\x00\x38\x9b\x71"
"""The type (a UUID) of the JUMBF description box of a C2PA manifest store."""
_VP8X_ICC = 0x20
_VP8X_ALPHA = 0x10
_VP8X_EXIF = 0x08
_VP8X_XMP = 0x04
_VP8X_ANIMATION = 0x02
_WEBP_FLAG_CHUNKS = frozenset({b"VP8X", b"ICCP", b"ALPH", b"EXIF", b"ANIM"})


class MarkingError(ValueError):
    """The image or its XMP can't be marked or read; the message says why."""


class MarkResult(StrEnum):
    ADDED = "added"
    """The source type was written."""
    KEPT = "kept"
    """The image already named an AI source type; it was left as it was."""
    REPLACED = "replaced"
    """The image named another source type; our value took its place."""


def made_source_type(action: str) -> str:
    """The source type of what a model made: trained algorithmic media for what it
    created, a composite for an edit of supplied images."""
    if action == "created":
        return TRAINED_ALGORITHMIC_MEDIA
    return COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA


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


def png_chunk(source_type: str) -> bytes:
    """The iTXt chunk `mark` adds right after a PNG's IHDR when the image has no XMP."""
    return _container(ImageFormat.PNG, source_type_packet(source_type))


def mark(src: Path, dst: Path, fmt: ImageFormat, source_type: str) -> MarkResult:
    """Write `src` to `dst` with `source_type` in its XMP: ADDED where it named none,
    REPLACED where it named another than one of AI_SOURCE_TYPES (each such value
    becomes ours, in place), or KEPT, the file copied unchanged, where every source
    type it names is one of those. Raises MarkingError for a damaged or unsupported
    file, or XMP that can't be read (too large, too many packets, not well-formed, a
    DTD) or changed (a source type that is not a plain value)."""
    if dst.exists() and dst.samefile(src):  # opening dst would empty src before its copy
        raise MarkingError("the marked copy must go to another file than the source")
    result, edits = planned(src, fmt, source_type)
    with dst.open("wb") as out:
        apply_edits(src, edits, out.write)
    return result


def planned(src: Path, fmt: ImageFormat, source_type: str) -> tuple[MarkResult, list[Edit]]:
    """What `mark` would do, and the edits that do it (none when KEPT), to apply
    to `src` with core.edits.apply_edits wherever the marked bytes are to go."""
    _check_source_type(source_type)
    layout = _layout(src, fmt)
    parsed = [_parse(packet.data) for packet in layout.packets]
    named = [value for xmp in parsed for value in xmp.source_types]
    changes: list[Edit] = []
    if not named:
        result = MarkResult.ADDED
        if layout.packets:
            first = layout.packets[0]
            new = _with_source_type(first.data, parsed[0], source_type)
            changes.append(Edit(first.start, first.end, _container(fmt, new)))
        else:
            new = source_type_packet(source_type)
            changes.append(Edit(layout.insert_at, layout.insert_at, _container(fmt, new)))
    elif all(value.text in AI_SOURCE_TYPES for value in named):
        result = MarkResult.KEPT
    else:
        result = MarkResult.REPLACED
        for packet, xmp in zip(layout.packets, parsed, strict=True):
            if any(value.text not in AI_SOURCE_TYPES for value in xmp.source_types):
                new = _with_replaced_source_types(packet.data, xmp, source_type)
                changes.append(Edit(packet.start, packet.end, _container(fmt, new)))
    edits = changes
    if changes and layout.webp is not None:
        edits = changes + _webp_header_edits(layout.webp, changes)
    return result, edits


def alone_after_ihdr(path: Path) -> bool:
    """Whether the PNG at `path` holds one XMP packet, right after its IHDR (where
    `mark` adds one), and no C2PA manifest. Raises MarkingError as `mark` does."""
    layout = _layout(path, ImageFormat.PNG)
    packets = layout.packets
    return not layout.c2pa and len(packets) == 1 and packets[0].start == layout.insert_at


def read_source_type(path: Path, fmt: ImageFormat) -> str | None:
    """The DigitalSourceType the image's XMP names (attribute, element or rdf:resource
    form of a top-level property), or None. Raises MarkingError as `mark` does."""
    for packet in _layout(path, fmt).packets:
        found = _parse(packet.data).source_type
        if found is not None:
            return found
    return None


def carries_c2pa(path: Path, fmt: ImageFormat) -> bool:
    """Whether the image holds a C2PA manifest store: a JPEG APP11 segment with a JUMBF
    box of the C2PA type, a PNG caBX chunk or a WebP C2PA chunk. Any change to the file
    (such as `mark`) invalidates that manifest's hash. Found from the container layout
    alone, the manifest not read nor validated (a manifest stored elsewhere, which the
    file only links to, is not seen). Raises MarkingError as `mark` does."""
    return _layout(path, fmt).c2pa


def source_type_in(packet: bytes) -> str | None:
    """The DigitalSourceType one XMP packet names (attribute, element or rdf:resource
    form of a top-level property), or None. Raises MarkingError for a packet that can't
    be read (over 1 MiB, not UTF-8, not well-formed XML, a DTD, no rdf:RDF)."""
    return _parse(packet).source_type


def _check_source_type(source_type: str) -> None:
    if not _URI.fullmatch(source_type):
        raise MarkingError("the digital source type must be a URI (printable, no spaces)")


# --- The XMP packet -------------------------------------------------------------------


@dataclass(frozen=True)
class _Value:
    """One DigitalSourceType that a packet names."""

    text: str
    span: tuple[int, int] | None
    """Where its bytes are in the packet (inside an attribute's quotes, or between an
    element's tags); None when it is not a plain value that can be replaced there."""


@dataclass(frozen=True)
class _Xmp:
    source_types: list[_Value]
    """The image's own: top-level properties of the top-level rdf:Descriptions."""
    about: str
    """The rdf:about of the packet's descriptions, which a new one must repeat."""
    rdf_end: int | None
    """Where `</rdf:RDF>` starts; None when rdf:RDF is an empty element (`<rdf:RDF/>`)."""

    @property
    def source_type(self) -> str | None:
        return self.source_types[0].text if self.source_types else None


@dataclass
class _Element:
    """A DigitalSourceType property element being read."""

    depth: int
    content_start: int | None
    """Just after its start tag; None for an empty element (`<x/>`)."""
    resource: tuple[str, tuple[int, int] | None] | None
    """Its rdf:resource attribute: the value and where it is."""
    plain: bool
    """No rdf:parseType and no child element: a value, not a struct."""
    text: list[str] = field(default_factory=list)


class _Reader:
    """Expat handlers that note the source types, rdf:about and where rdf:RDF ends.

    RDF/XML nests as rdf:RDF > rdf:Description > property > value; only a property at
    that level (or an attribute of that rdf:Description) describes the image itself."""

    def __init__(self, parser: expat.XMLParserType, packet: bytes) -> None:
        self.parser = parser
        self.packet = packet
        self.depth = 0
        self.namespaces: dict[str, list[str]] = {}
        """The URIs a prefix is bound to, innermost last."""
        self.source_types: list[_Value] = []
        self.about: str | None = None
        self.rdf_depth: int | None = None
        self.in_rdf = False
        self.in_description = False
        """Inside an rdf:Description directly under rdf:RDF."""
        self.rdf_start = 0
        self.rdf_has_content = False
        self.rdf_end: int | None = None
        self.element: _Element | None = None

    def start_namespace(self, prefix: str | None, uri: str) -> None:
        self.namespaces.setdefault(prefix or "", []).append(uri)

    def end_namespace(self, prefix: str | None) -> None:
        self.namespaces[prefix or ""].pop()

    def start(self, name: str, attributes: dict[str, str]) -> None:
        self.depth += 1
        self.rdf_has_content = True
        if self.element is not None:  # a child element: a struct, not a plain value
            self.element.plain = False
        if name == _RDF_RDF and self.rdf_depth is None:
            self.rdf_depth = self.depth
            self.in_rdf = True
            self.rdf_start = self.parser.CurrentByteIndex
            self.rdf_has_content = False
            return
        if not self.in_rdf or self.rdf_depth is None:
            return
        level = self.depth - self.rdf_depth
        if level == 1 and name == _RDF_DESCRIPTION:
            self.in_description = True
            if self.about is None:
                self.about = attributes.get(_RDF_ABOUT, "")
            if _SOURCE_TYPE in attributes:
                spans = self._attribute_spans()[0]
                value = attributes[_SOURCE_TYPE]
                self.source_types.append(_Value(value, spans.get(_SOURCE_TYPE)))
        elif level == 2 and self.in_description and name == _SOURCE_TYPE:
            spans, content_start = self._attribute_spans()
            resource = None
            if _RDF_RESOURCE in attributes:
                resource = attributes[_RDF_RESOURCE], spans.get(_RDF_RESOURCE)
            plain = _RDF_PARSE_TYPE not in attributes
            self.element = _Element(self.depth, content_start, resource, plain)

    def end(self, name: str) -> None:
        element = self.element
        if element is not None and self.depth == element.depth:
            self.source_types.append(self._value(element))
            self.element = None
        if self.rdf_depth is not None and self.in_rdf:
            if self.depth == self.rdf_depth + 1:
                self.in_description = False
            if self.depth == self.rdf_depth:
                self.in_rdf = False
                here = self.parser.CurrentByteIndex
                # For an empty element expat reports the end just after its tag.
                empty = not self.rdf_has_content and self.packet[self.rdf_start : here].endswith(
                    b"/>"
                )
                self.rdf_end = None if empty else here
        self.depth -= 1

    def text(self, data: str) -> None:
        self.rdf_has_content = True
        if self.element is not None and self.depth == self.element.depth:
            self.element.text.append(data)

    def _value(self, element: _Element) -> _Value:
        if element.resource is not None:
            text, span = element.resource
            return _Value(text, span if element.plain else None)
        text = "".join(element.text).strip()
        if not element.plain or element.content_start is None:
            return _Value(text, None)
        return _Value(text, (element.content_start, self.parser.CurrentByteIndex))

    def _attribute_spans(self) -> tuple[dict[str, tuple[int, int]], int | None]:
        """The start tag being read, from its bytes: where each attribute's value is
        (by its expat name), and where the element's content starts (None when the
        element is empty). Expat has checked the tag is well-formed."""
        at = self.parser.CurrentByteIndex
        tag = _TAG_NAME.match(self.packet, at)
        if tag is None:
            raise MarkingError(
                "the XMP packet could not be read (a start tag is not where expat says)"
            )
        spans: dict[str, tuple[int, int]] = {}
        position = tag.end()
        while attribute := _TAG_ATTRIBUTE.match(self.packet, position):
            group = 2 if attribute.group(2) is not None else 3
            name = self._expat_name(attribute.group(1).decode())
            spans[name] = attribute.span(group)
            position = attribute.end()
        end = _TAG_END.match(self.packet, position)
        if end is None:
            raise MarkingError("the XMP packet could not be read (a start tag does not end)")
        return spans, None if end.group(1) else end.end()

    def _expat_name(self, qname: str) -> str:
        """An attribute's name as expat gives it: namespace, a space, local name."""
        prefix, colon, local = qname.rpartition(":")
        if not colon:
            return qname  # an attribute without a prefix has no namespace
        if prefix == "xml":
            return f"http://www.w3.org/XML/1998/namespace {local}"
        bound = self.namespaces.get(prefix)
        return f"{bound[-1]} {local}" if bound else qname


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
    parser.StartNamespaceDeclHandler = reader.start_namespace
    parser.EndNamespaceDeclHandler = reader.end_namespace
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
    return _Xmp(reader.source_types, reader.about or "", reader.rdf_end)


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


def _with_replaced_source_types(packet: bytes, xmp: _Xmp, source_type: str) -> bytes:
    """`packet` with each source type other than an AI one replaced by `source_type`,
    only the bytes of those values changing."""
    # Escaped for either quote, and for element text: it fits wherever a value was.
    escaped = escape(source_type, {'"': "&quot;", "'": "&apos;"}).encode()
    new = packet
    expected = []
    for value in reversed(xmp.source_types):  # from the end: earlier spans stay valid
        if value.text in AI_SOURCE_TYPES:
            expected.append(value.text)
            continue
        if value.span is None:
            raise MarkingError(
                "the XMP packet's DigitalSourceType is not a plain value; it can't be replaced"
            )
        start, end = value.span
        new = new[:start] + escaped + new[end:]
        expected.append(source_type)
    found = [value.text for value in _parse(new).source_types]
    if found != expected[::-1]:  # a guard: the replacement must read back
        raise MarkingError("the source type could not be replaced in the existing XMP packet")
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
    c2pa: bool
    """Whether the file holds a C2PA manifest store."""
    webp: _WebpHeader | None = None


def _layout(path: Path, fmt: ImageFormat) -> _Layout:
    # Buffered: a scan seeks from chunk header to chunk header, and a seek within the
    # buffer makes no system call, which a file of a million tiny chunks would.
    with path.open("rb") as fh:
        size = path.stat().st_size
        if fmt is ImageFormat.PNG:
            return _png(fh)
        if fmt is ImageFormat.JPEG:
            return _jpeg(fh, size)
        if fmt is ImageFormat.WEBP:
            return _webp(fh, size)
    raise MarkingError(f"{fmt.value} images can't carry the XMP marking")


def _room(packets: list[_Packet]) -> int:
    """How many bytes one more XMP packet may take. A file's packets are bounded as a
    whole, in number and in bytes, so that many small (compressed) ones can't add up
    to more than one large one may."""
    if len(packets) >= MAX_PACKETS:
        raise MarkingError(f"the image has more than {MAX_PACKETS} XMP packets; refused")
    return MAX_PACKET - sum(len(packet.data) for packet in packets)


def _too_large() -> MarkingError:
    return MarkingError(f"the image's XMP is larger than {MAX_PACKET} bytes; refused")


def _container(fmt: ImageFormat, packet: bytes) -> bytes:
    """The chunk or segment that holds `packet`."""
    if fmt is ImageFormat.PNG:
        data = _PNG_XMP_KEYWORD + b"\x00\x00\x00\x00\x00" + packet  # uncompressed, no language
        crc = zlib.crc32(b"iTXt" + data)
        return struct.pack(">I4s", len(data), b"iTXt") + data + struct.pack(">I", crc)
    if fmt is ImageFormat.JPEG:
        if len(packet) > _JPEG_MAX_PACKET:
            raise MarkingError(
                f"the XMP packet would be {len(packet)} bytes; a JPEG APP1 segment holds "
                f"at most {_JPEG_MAX_PACKET}"
            )
        segment = b"\xff\xe1" + struct.pack(">H", 2 + len(_JPEG_XMP) + len(packet))
        return segment + _JPEG_XMP + packet
    return b"XMP " + struct.pack("<I", len(packet)) + packet + b"\x00" * (len(packet) & 1)


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
    c2pa = False
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
            return _Layout(packets, insert_at, c2pa)
        c2pa |= kind == b"caBX"
        if kind == b"iTXt" and length > len(_PNG_XMP_KEYWORD):
            packet = _png_xmp(fh, position, length, packets)
            if packet is not None:
                packets.append(_Packet(position, end, packet))
        position = end


def _png_xmp(fh: BinaryIO, position: int, length: int, packets: list[_Packet]) -> bytes | None:
    """The XMP packet in the iTXt chunk at `position`, or None when it holds other text.
    The chunk is keyword, compressed flag and method, language tag, translated keyword,
    text; the text is inflated, no further than the room `packets` leave, when it is
    compressed."""
    if _exact(fh, len(_PNG_XMP_KEYWORD) + 1, "png") != _PNG_XMP_KEYWORD + b"\x00":
        return None
    room = _room(packets)
    if length > room + 1024:  # the packet, plus the chunk's own fields
        raise _too_large()
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
        if len(text) > room:
            raise _too_large()
        return text
    if method != 0:
        raise MarkingError("png image's XMP chunk uses an unknown compression method")
    inflater = zlib.decompressobj()
    try:
        packet = inflater.decompress(text, room + 1)
    except zlib.error:
        raise MarkingError("png image's XMP chunk does not inflate") from None
    if len(packet) > room:
        raise _too_large()
    if not inflater.eof:
        raise MarkingError("png image's XMP chunk does not inflate (it is cut short)")
    return packet


def _jpeg(fh: BinaryIO, size: int) -> _Layout:
    """The APP1 XMP packets before the first scan; a new one goes after SOI and the
    APP0 (JFIF) and APP1 Exif segments that lead the file. The scans are not read."""
    if fh.read(3) != b"\xff\xd8\xff":
        raise MarkingError("not a JPEG image (no SOI marker)")
    packets: list[_Packet] = []
    insert_at = 2
    leading = True
    c2pa = False
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
            return _Layout(packets, insert_at, c2pa)
        head = _exact(fh, min(length - 2, 48), "jpeg")
        if kind == 0xE1 and head[: len(_JPEG_XMP)] == _JPEG_XMP:
            size_of_packet = length - 2 - len(_JPEG_XMP)
            if size_of_packet > _room(packets):
                raise _too_large()
            fh.seek(position + 4 + len(_JPEG_XMP))
            packets.append(_Packet(position, end, _exact(fh, size_of_packet, "jpeg")))
            leading = False
        elif leading and (kind == 0xE0 or (kind == 0xE1 and head.startswith(_JPEG_EXIF))):
            insert_at = end
        else:
            c2pa |= kind == 0xEB and _is_c2pa_jumbf(head)
            leading = False
        position = end


def _is_c2pa_jumbf(head: bytes) -> bool:
    """Whether an APP11 segment's first bytes start a C2PA manifest store: the JPEG XT
    header ("JP", box instance, packet sequence), the JUMBF superbox's length and type
    (jumb, with an 8-byte extended length when its length says 1), then its
    description box (jumd) with the C2PA type."""
    if head[:2] != b"JP" or head[12:16] != b"jumb":
        return False
    at = 24 if head[8:12] == b"\x00\x00\x00\x01" else 16
    return head[at + 4 : at + 8] == b"jumd" and head[at + 8 : at + 24] == _JUMBF_C2PA


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
    """Those of _WEBP_FLAG_CHUNKS that the file has (only those: a set of every kind
    could grow with each chunk of a file of many tiny ones)."""
    c2pa = False
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
        if kind in _WEBP_FLAG_CHUNKS:
            kinds.add(kind)
        c2pa |= kind == b"C2PA"
        if kind == b"XMP ":
            if length > _room(packets):
                raise _too_large()
            packets.append(_Packet(position, end, _exact(fh, length, "webp")))
        position = end
    if b"VP8X" in kinds:
        if len(vp8x_head) < 10:
            raise MarkingError("webp image is damaged (its VP8X chunk is not first, or short)")
        set_flag = Edit(20, 21, bytes([vp8x_head[0] | _VP8X_XMP]))  # VP8X is at 12
        return _Layout(packets, riff_end, c2pa, _WebpHeader(riff_end, set_flag))
    width, height, alpha = _bitstream_size(*bitstream)
    flags = _VP8X_XMP
    flags |= _VP8X_ICC if b"ICCP" in kinds else 0
    flags |= _VP8X_ALPHA if alpha or b"ALPH" in kinds else 0
    flags |= _VP8X_EXIF if b"EXIF" in kinds else 0
    flags |= _VP8X_ANIMATION if b"ANIM" in kinds else 0
    body = bytes([flags, 0, 0, 0]) + (width - 1).to_bytes(3, "little")
    body += (height - 1).to_bytes(3, "little")
    vp8x = Edit(12, 12, b"VP8X" + struct.pack("<I", len(body)) + body)  # after the header
    return _Layout(packets, riff_end, c2pa, _WebpHeader(riff_end, vp8x))


def _bitstream_size(kind: bytes, data: bytes) -> tuple[int, int, bool]:
    """Width, height and whether it has alpha, from the start of a VP8 or VP8L chunk."""
    if kind == b"VP8 " and len(data) >= 10 and data[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[6:10])
        width, height = width & 0x3FFF, height & 0x3FFF
        if width == 0 or height == 0:  # a VP8X header can't say so (it stores size - 1)
            raise MarkingError("webp image is damaged (its VP8 frame has no width or height)")
        return width, height, False
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
