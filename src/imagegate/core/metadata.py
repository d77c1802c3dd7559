"""Location metadata out of an image file, without touching its pixels.

An uploaded photo can say where it was taken: EXIF GPS tags, XMP location properties,
IPTC city fields. `location_edits` finds those pieces in a PNG, JPEG or WebP file by
reading its chunk (or segment) headers only, and `apply_edits` copies the file with
them replaced, streaming: the compressed image data is copied byte for byte, never
decoded, and never held in memory whole.

What goes:
- EXIF with GPS tags: replaced by an EXIF that keeps only the orientation (so the
  image still shows upright), or dropped when there is none to keep;
- XMP packets that name a place (GPS, city, state, country, location): dropped; but
  one that names an IPTC DigitalSourceType (a marking such as "made by a model",
  which inputs must keep) is replaced, in the same chunk or segment, by a packet
  holding only that source type. A packet that can't be parsed goes whole;
- JPEG APP13 (Photoshop/IPTC records, which hold city and country fields);
- PNG "Raw profile type ..." text chunks (EXIF, XMP or IPTC written as hex).
Everything else stays, markings such as C2PA manifests or XMP without a place included.

C2PA manifests (JPEG APP11, PNG caBX, WebP "C2PA" chunk) are kept byte for byte and
not looked into, so a place a manifest itself records (say EXIF GPS in a stds.exif
assertion) stays. But the manifest's signature covers a hash of every other byte of
the file and the manifest's own offset: once any edit here applies, the manifest is
still in the file yet no longer validates (assertion.dataHash.mismatch, and a wrong
offset too when an edit before the manifest changes the length). Only a file with
nothing to remove, copied unchanged, keeps a valid manifest.
"""

import re
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from imagegate.core.edits import Edit as Edit
from imagegate.core.edits import apply_edits as apply_edits
from imagegate.core.images import ImageFormat
from imagegate.core.xmp import MarkingError, source_type_in, source_type_packet

_GPS_IFD = 0x8825
_ORIENTATION = 0x0112
_PLACE = re.compile(
    # Any property of these names, whatever prefix its namespace is bound to.
    rb"GPS|[:<\s](City|State|Country|CountryCode|Location|LocationCreated|LocationShown|"
    rb"Sublocation|ProvinceState)[\s=>/]"
)
_TEXT_LIMIT = 1 << 20
"""The most text of one PNG chunk we decompress to check it; more is removed unread."""
_XMP_JPEG = b"http://ns.adobe.com/xap/1.0/\x00"
_PNG_XMP_KEYWORD = b"XML:com.adobe.xmp"
_XMP_EXTENDED_JPEG = b"http://ns.adobe.com/xmp/extension/\x00"
_EXIF_PREFIX = b"Exif\x00\x00"
_CHUNK = 1 << 20
"""How much `_find` reads at a time."""


def location_edits(path: Path, fmt: ImageFormat) -> list[Edit]:
    """The edits that remove location metadata from `path`; none when it has none."""
    with path.open("rb") as fh:
        if fmt is ImageFormat.JPEG:
            return _jpeg(fh)
        if fmt is ImageFormat.PNG:
            return _png(fh)
        if fmt is ImageFormat.WEBP:
            return _webp(fh, path.stat().st_size)
    return []


def _upright_exif(tiff: bytes) -> bytes | None:
    """EXIF without its GPS tags: only the orientation, as EXIF bytes with the
    "Exif\\0\\0" prefix; None when the original has no GPS (keep it as it is), or b""
    when nothing is worth keeping."""
    exif = Image.Exif()
    try:
        exif.load(tiff)
    except (SyntaxError, ValueError, struct.error, OSError):
        return b""  # unreadable: it can't be checked, so it goes
    if _GPS_IFD not in exif:
        return None
    orientation = exif.get(_ORIENTATION)
    if not isinstance(orientation, int) or orientation == 1:
        return b""
    upright = Image.Exif()
    upright[_ORIENTATION] = orientation
    return upright.tobytes()


def _jpeg(fh: BinaryIO) -> list[Edit]:
    edits: list[Edit] = []
    fh.seek(2)  # after SOI
    while True:
        start = fh.tell()
        marker = fh.read(2)
        if len(marker) < 2:
            return edits
        if marker[0] != 0xFF:  # a stray byte between segments, as decoders skip it
            fh.seek(start + 1)
            continue
        kind = marker[1]
        if kind == 0xFF:  # fill byte
            fh.seek(start + 1)
            continue
        if kind == 0xDA:  # start of scan: the image data, then (maybe) more images
            return edits + _after_image(fh, start)
        if kind == 0xD9:
            return edits
        if 0xD0 <= kind <= 0xD7 or kind == 0x01:
            continue
        (length,) = struct.unpack(">H", fh.read(2))
        end = start + 2 + length
        if kind == 0xE1:
            head = fh.read(max(len(_XMP_EXTENDED_JPEG), len(_EXIF_PREFIX)))
            fh.seek(start + 4)
            if head.startswith(_EXIF_PREFIX):
                upright = _upright_exif(fh.read(length - 2))
                if upright is not None:
                    edits.append(Edit(start, end, _app1(upright) if upright else b""))
            elif head.startswith(_XMP_JPEG):
                packet = fh.read(length - 2)[len(_XMP_JPEG) :]
                if _PLACE.search(packet):
                    kept = _kept_marking(packet)
                    segment = _app1(_XMP_JPEG + kept) if kept else b""
                    edits.append(Edit(start, end, segment))
            elif head.startswith(_XMP_EXTENDED_JPEG) and _PLACE.search(fh.read(length - 2)):
                # A piece of a packet too large for one segment, which can't be parsed
                # on its own: it goes whole.
                edits.append(Edit(start, end))
        elif kind == 0xED:  # APP13: Photoshop image resources, IPTC records
            edits.append(Edit(start, end))
        fh.seek(end)


def _app1(payload: bytes) -> bytes:
    """An APP1 segment; b"" (none) for a payload too large for one, which only a
    source type of some 64 KB could make, and no real one is."""
    if len(payload) + 2 > 0xFFFF:
        return b""
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _after_image(fh: BinaryIO, scan: int) -> list[Edit]:
    """What follows the first image's end: further images (MPO frames, appended
    JPEGs) can carry their own EXIF. If anything there could hold metadata, it goes,
    with the MPF index that points to it; the first image stays as it is. Read in
    pieces, never whole."""
    end = _find(fh, scan, b"\xff\xd9")  # in entropy-coded data an 0xFF is stuffed
    if end is None:
        return []
    fh.seek(0, 2)
    size = fh.tell()
    rest = end + 2
    if rest >= size or _find(fh, rest, _METADATA_AFTER) is None:
        return []
    return [Edit(rest, size), *_mpf_index(fh, scan)]


_METADATA_AFTER = re.compile(rb"Exif|http://ns\.adobe\.com|GPS|8BIM")


def _find(fh: BinaryIO, start: int, needle: bytes | re.Pattern[bytes]) -> int | None:
    """The offset of the first match at or after `start`, reading 1 MiB at a time."""
    overlap = 64
    position = start
    while True:
        fh.seek(position)
        block = fh.read(_CHUNK)
        if not block:
            return None
        if isinstance(needle, bytes):
            found = block.find(needle)
        else:
            match = needle.search(block)
            found = match.start() if match else -1
        if found >= 0:
            return position + found
        if len(block) < _CHUNK:
            return None
        position += len(block) - overlap


def _mpf_index(fh: BinaryIO, scan: int) -> list[Edit]:
    """The APP2 "MPF" segments before `scan` (they index the frames that go)."""
    edits = []
    fh.seek(2)
    while fh.tell() < scan:
        start = fh.tell()
        marker = fh.read(4)
        if len(marker) < 4 or marker[0] != 0xFF or marker[1] in (0xDA, 0xD9):
            break
        (length,) = struct.unpack(">H", marker[2:])
        if marker[1] == 0xE2 and fh.read(4) == b"MPF\x00":
            edits.append(Edit(start, start + 2 + length))
        fh.seek(start + 2 + length)
    return edits


def _png(fh: BinaryIO) -> list[Edit]:
    edits: list[Edit] = []
    fh.seek(8)  # after the signature
    while True:
        start = fh.tell()
        header = fh.read(8)
        if len(header) < 8:
            return edits
        length, kind = struct.unpack(">I4s", header)
        end = start + 12 + length
        if kind == b"IEND":
            return edits
        if kind == b"eXIf":
            upright = _upright_exif(fh.read(length))
            if upright is not None:
                data = upright[len(_EXIF_PREFIX) :]
                edits.append(Edit(start, end, _png_chunk(b"eXIf", data) if data else b""))
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):
            data = fh.read(length)
            keyword = data.split(b"\x00", 1)[0]
            if keyword.startswith(b"Raw profile type"):
                edits.append(Edit(start, end))
            elif keyword == _PNG_XMP_KEYWORD:
                packet = _png_text(kind, data)
                if _PLACE.search(packet):
                    kept = _kept_marking(packet)
                    chunk = b""
                    if kept:  # where a PNG keeps XMP, whatever held the old: iTXt, uncompressed
                        chunk = _png_chunk(b"iTXt", _PNG_XMP_KEYWORD + b"\x00" * 5 + kept)
                    edits.append(Edit(start, end, chunk))
        fh.seek(end)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png_text(kind: bytes, data: bytes) -> bytes:
    """The text of a PNG text chunk, decompressed where it is compressed (1 MiB at
    most: a chunk that inflates to more, or can't be read, reads as a place, so it
    goes)."""
    unreadable = b"GPS"
    try:
        if kind == b"zTXt":
            method, text = data.split(b"\x00", 1)[1][0], data.split(b"\x00", 1)[1][1:]
            return _inflate(text) if method == 0 else unreadable
        if kind == b"iTXt":
            rest = data.split(b"\x00", 1)[1]
            compressed, method = rest[0], rest[1]
            text = rest[2:].split(b"\x00", 2)[2]  # after language tag and translated keyword
            if not compressed:
                return text
            return _inflate(text) if method == 0 else unreadable
    except (zlib.error, IndexError, ValueError):
        return unreadable
    return data.split(b"\x00", 1)[-1]  # tEXt: after the keyword


def _kept_marking(packet: bytes) -> bytes | None:
    """What stays of an XMP packet that goes because it names a place: a new packet with
    only the IPTC DigitalSourceType it names (a marking such as "made by a model", which
    uploads must keep), or None when it names none.

    A packet that can't be parsed (not UTF-8, not well-formed, a DTD, over 1 MiB, no
    rdf:RDF) still goes whole, as before: what it says can't be checked. So does a
    source type that is no URI, or that itself names a place: the new packet must pass
    the same check as the old."""
    try:
        source_type = source_type_in(packet)
        kept = None if source_type is None else source_type_packet(source_type)
    except MarkingError:
        return None
    return None if kept is None or _PLACE.search(kept) else kept


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    text = inflater.decompress(data, _TEXT_LIMIT)
    if inflater.unconsumed_tail:
        return b"GPS"  # more than we read to check: it goes
    return text


_VP8X_EXIF = 0x08
_VP8X_XMP = 0x04


def _webp_chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + b"\x00" * (len(data) & 1)


def _webp(fh: BinaryIO, size: int) -> list[Edit]:
    edits: list[Edit] = []
    vp8x: int | None = None
    flags = 0
    cleared = 0
    xmp_kept = xmp_dropped = False
    fh.seek(4)
    (riff_size,) = struct.unpack("<I", fh.read(4))
    riff_end = min(8 + riff_size, size)
    fh.seek(12)  # after RIFF, size, WEBP
    while True:
        start = fh.tell()
        header = fh.read(8)
        if len(header) < 8 or start + 8 > riff_end:
            break
        kind, length = struct.unpack("<4sI", header)
        end = start + 8 + length + (length & 1)
        if kind == b"VP8X":
            vp8x, flags = start + 8, fh.read(1)[0]
        elif kind == b"EXIF":
            upright = _upright_exif(fh.read(length))
            if upright is not None:
                data = upright[len(_EXIF_PREFIX) :]
                if not data:
                    cleared |= _VP8X_EXIF
                edits.append(Edit(start, end, _webp_chunk(b"EXIF", data) if data else b""))
        elif kind == b"XMP ":
            packet = fh.read(length)
            if _PLACE.search(packet):
                kept = _kept_marking(packet)
                edits.append(Edit(start, end, _webp_chunk(b"XMP ", kept) if kept else b""))
                xmp_kept |= kept is not None
                xmp_dropped |= kept is None
            else:
                xmp_kept = True
        fh.seek(end)
    if not edits:
        return edits
    if xmp_dropped and not xmp_kept:
        cleared |= _VP8X_XMP
    if vp8x is not None and cleared:
        edits.append(Edit(vp8x, vp8x + 1, bytes([flags & ~cleared & 0xFF])))
    if riff_end < size:  # bytes after the RIFF container: not part of the image
        edits.append(Edit(riff_end, size))
    change = sum(len(e.replacement) - (e.end - e.start) for e in edits if e.start < riff_end)
    edits.append(Edit(4, 8, struct.pack("<I", riff_end - 8 + change)))
    return edits
