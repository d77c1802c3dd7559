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
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

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
    with path.open("rb") as fh:
        if fh.read(8) != _SIGNATURE:
            raise DamagedPng("no PNG signature")
        _check_chunks(fh)


def _check_chunks(fh: BinaryIO) -> None:
    header: tuple[int, int, int, int, int] | None = None
    palette = False
    rows: _Rows | None = None
    idat_ended = False
    while True:
        kind, length = _chunk_head(fh)
        if header is None and kind != b"IHDR":
            raise DamagedPng("the first chunk is not IHDR")
        if kind == b"IDAT":
            if header is None or idat_ended:
                raise DamagedPng("IDAT chunks are not together")
            if rows is None:
                if header[3] == 3 and not palette:
                    raise DamagedPng("a palette image without PLTE")
                rows = _Rows(*header)
            crc = zlib.crc32(kind)
            for piece in _pieces(fh, length):
                crc = zlib.crc32(piece, crc)
                rows.feed(piece)
            _check_crc(fh, crc, kind)
            continue
        if rows is not None:
            idat_ended = True
        data = _read(fh, length)
        _check_crc(fh, zlib.crc32(data, zlib.crc32(kind)), kind)
        if kind == b"IHDR":
            header = _header(data)
        elif kind == b"PLTE":
            palette = True
        elif kind == b"IEND":
            if rows is None:
                raise DamagedPng("no image data (IDAT)")
            rows.close()
            return


def _chunk_head(fh: BinaryIO) -> tuple[bytes, int]:
    head = fh.read(8)
    if len(head) < 8:
        raise DamagedPng("truncated: the file ends before IEND")
    length, kind = struct.unpack(">I4s", head)
    if length > 0x7FFFFFFF:
        raise DamagedPng("a chunk's length is out of range")
    return kind, length


def _pieces(fh: BinaryIO, length: int) -> Iterator[bytes]:
    while length:
        piece = fh.read(min(length, _SLICE))
        if not piece:
            raise DamagedPng("truncated: the file ends inside a chunk")
        length -= len(piece)
        yield piece


def _read(fh: BinaryIO, length: int) -> bytes:
    return b"".join(_pieces(fh, length))


def _check_crc(fh: BinaryIO, crc: int, kind: bytes) -> None:
    stored = fh.read(4)
    if len(stored) < 4:
        raise DamagedPng("truncated: the file ends inside a chunk")
    if struct.unpack(">I", stored)[0] != crc:
        raise DamagedPng(f"the CRC of a {kind.decode('latin-1')!r} chunk is wrong")


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

    def feed(self, data: bytes) -> None:
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
