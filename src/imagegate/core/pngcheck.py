"""Check that a PNG is whole without decoding its pixels.

A full decode (what `inspect_image` does for other formats) holds every pixel at once,
four bytes each: 16 MiB for a 2048 x 2048 image, the largest share of the memory an
image in flight costs, and most of its CPU. What a full decode refuses in a PNG is
found more cheaply in the file's structure: every chunk's CRC, an IHDR that describes
an image, a PLTE where a palette is needed, the IDAT data inflating without error to
exactly the bytes its rows need (each starting with a filter type 0-4; inflating stops
one byte past them), a zlib stream whose own checksum holds, and an IEND. The data is
inflated 1 MiB at a time and thrown away. tests/core/test_image_corpus.py holds this
check and a full decode to the same verdicts on a corpus of damaged files.
"""

import struct
import zlib
from pathlib import Path
from typing import NamedTuple

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SLICE = 1 << 20
_FILTERS = bytes(range(5))
"""The row filter types: none, sub, up, average, Paeth."""
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
"""Samples per pixel, by colour type."""
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_ADAM7: tuple[tuple[int, int, int, int], ...] = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
"""Each interlace pass: first column, first row, column step, row step."""


class DamagedPng(ValueError):
    pass


def check_png(path: Path) -> None:
    """Raise DamagedPng (saying what is wrong) unless `path` is a whole, valid PNG."""
    check = PngCheck()
    with path.open("rb") as fh:
        while piece := fh.read(_SLICE):
            check.feed(piece)
            if check.ended:
                break
    check.close()


class Seen(NamedTuple):
    """What a marking needs to know of a PNG's chunks."""

    text_chunks: int
    """iTXt chunks (where XMP goes)."""
    c2pa: bool
    """A caBX chunk: a C2PA manifest store."""


class PngCheck:
    """The check, fed a PNG's bytes in order, in pieces of any size: a blob is checked
    as it is written, in the thread that writes it, and the whole-file check is this
    same one. `feed` raises DamagedPng as soon as the damage is seen, `close` when the
    bytes so far are not a whole PNG; bytes after IEND are not looked at.

    `max_pixels`: refuse at IHDR an image over the cap, before inflating anything (a
    small file can claim billions of pixels: inspect_image checks the cap first)."""

    def __init__(self, max_pixels: int | None = None) -> None:
        self._max_pixels = max_pixels
        self._step = _SIGNATURE_STEP
        self._field = bytearray()
        """The fixed-size field being read (signature, chunk head, CRC), so far."""
        self._need = len(_SIGNATURE)
        self._kind = b""
        self._left = 0
        """The current chunk's data bytes still to come."""
        self._crc = 0
        self._data: bytearray | None = None
        """The current chunk's data, kept for IHDR only."""
        self._header: tuple[int, int, int, int, int] | None = None
        self._palette = False
        self._rows: _Rows | None = None
        self._idat_ended = False
        self.ended = False
        """IEND was read and the image is whole."""
        self._text_chunks = 0
        self._c2pa = False

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        position, end = 0, len(view)
        while position < end and not self.ended:
            if self._step == _DATA_STEP:
                piece = view[position : position + self._left]
                position += len(piece)
                self._left -= len(piece)
                self._crc = zlib.crc32(piece, self._crc)
                if self._rows is not None and self._kind == b"IDAT":
                    self._rows.feed(piece)
                elif self._data is not None:
                    self._data += piece
                if not self._left:
                    self._step, self._need = _CRC_STEP, 4
                continue
            take = view[position : position + self._need - len(self._field)]
            position += len(take)
            self._field += take
            if len(self._field) == self._need:
                field = bytes(self._field)
                self._field.clear()
                self._take_field(field)

    @property
    def seen(self) -> Seen:
        return Seen(self._text_chunks, self._c2pa)

    def close(self) -> None:
        if self.ended:
            return
        if self._step == _SIGNATURE_STEP:
            raise DamagedPng("no PNG signature")
        if self._step == _HEAD_STEP:
            raise DamagedPng("truncated: the file ends before IEND")
        raise DamagedPng("truncated: the file ends inside a chunk")

    def _take_field(self, field: bytes) -> None:
        if self._step == _SIGNATURE_STEP:
            if field != _SIGNATURE:
                raise DamagedPng("no PNG signature")
            self._step, self._need = _HEAD_STEP, 8
        elif self._step == _HEAD_STEP:
            self._start_chunk(field)
        else:
            if struct.unpack(">I", field)[0] != self._crc:
                raise DamagedPng(f"the CRC of a {self._kind.decode('latin-1')!r} chunk is wrong")
            self._end_chunk()
            self._step, self._need = _HEAD_STEP, 8

    def _start_chunk(self, head: bytes) -> None:
        length, kind = struct.unpack(">I4s", head)
        if length > 0x7FFFFFFF:
            raise DamagedPng("a chunk's length is out of range")
        if self._header is None and kind != b"IHDR":
            raise DamagedPng("the first chunk is not IHDR")
        if kind == b"IDAT":
            if self._header is None or self._idat_ended:
                raise DamagedPng("IDAT chunks are not together")
            if self._rows is None:
                if self._header[3] == 3 and not self._palette:
                    raise DamagedPng("a palette image without PLTE")
                self._rows = _Rows(*self._header)
        elif self._rows is not None:
            self._idat_ended = True
        if kind == b"iTXt":
            self._text_chunks += 1
        self._c2pa |= kind == b"caBX"
        self._kind, self._left, self._crc = kind, length, zlib.crc32(kind)
        # IHDR is 13 bytes; a longer one is refused once its CRC is read, not buffered.
        self._data = bytearray() if kind == b"IHDR" and length == 13 else None
        self._step, self._need = (_DATA_STEP, 0) if length else (_CRC_STEP, 4)

    def _end_chunk(self) -> None:
        if self._kind == b"IHDR":
            if self._data is None:
                raise DamagedPng("IHDR has the wrong length")
            self._header = _header(bytes(self._data))
            width, height = self._header[:2]
            if self._max_pixels is not None and width * height > self._max_pixels:
                raise DamagedPng(f"more pixels than the limit of {self._max_pixels}")
        elif self._kind == b"PLTE":
            self._palette = True
        elif self._kind == b"IEND":
            if self._rows is None:
                raise DamagedPng("no image data (IDAT)")
            self._rows.close()
            self.ended = True
        self._data = None


_SIGNATURE_STEP, _HEAD_STEP, _DATA_STEP, _CRC_STEP = range(4)


def _header(data: bytes) -> tuple[int, int, int, int, int]:
    if len(data) != 13:
        raise DamagedPng("IHDR has the wrong length")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", data
    )
    if not (width and height) or depth not in _DEPTHS.get(colour, ()):
        raise DamagedPng("IHDR describes no image")
    if compression or filtering or interlace > 1:
        raise DamagedPng("IHDR names an unknown method")
    return width, height, depth, colour, interlace


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


class _Rows:
    """Inflates the IDAT stream, checking each row's filter type byte and the total."""

    def __init__(self, width: int, height: int, depth: int, colour: int, interlace: int) -> None:
        bits = depth * _CHANNELS[colour]
        passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
        self._spans: list[tuple[int, int, int]] = []
        """Each pass's rows: where they start and end in the stream, and a row's size."""
        offset = 0
        for x, y, dx, dy in passes:
            if width > x and height > y:
                size = 1 + _ceil(_ceil(width - x, dx) * bits, 8)
                rows = _ceil(height - y, dy)
                self._spans.append((offset, offset + size * rows, size))
                offset += size * rows
        self._expected = offset
        self._inflater = zlib.decompressobj()
        self._seen = 0
        """Bytes inflated so far."""

    def feed(self, data: bytes | memoryview) -> None:
        try:
            while data and not self._inflater.eof:
                # Never more than one byte past the rows: a small file of deflated zeros
                # would otherwise inflate for as long as it likes.
                room = self._expected - self._seen + 1
                out = self._inflater.decompress(data, min(_SLICE, room))
                data = self._inflater.unconsumed_tail
                self._check(out)
        except zlib.error:
            raise DamagedPng("the image data does not inflate (zlib)") from None

    def _check(self, out: bytes) -> None:
        start, end = self._seen, self._seen + len(out)
        for first, last, size in self._spans:
            stop = min(last, end)
            row = first + _ceil(max(start - first, 0), size) * size
            # Every filter type byte of this pass in `out` at once: a slice in C, not a
            # Python loop per row (an image may have millions of rows).
            if row < stop and out[row - start : stop - start : size].translate(None, _FILTERS):
                raise DamagedPng("a row has an unknown filter type")
        self._seen = end
        if self._seen > self._expected:
            raise DamagedPng("more image data than its rows need")

    def close(self) -> None:
        if not self._inflater.eof:
            try:
                self._check(self._inflater.flush(self._expected - self._seen + 1))
            except zlib.error:
                raise DamagedPng("the image data does not inflate (zlib)") from None
            if not self._inflater.eof:
                raise DamagedPng("truncated: the image data ends early")
        if self._seen < self._expected:
            raise DamagedPng("truncated: the image data is shorter than its rows")
