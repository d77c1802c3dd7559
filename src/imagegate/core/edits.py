"""Byte-range edits of a file, applied while streaming it to a copy.

Both metadata cleaning (core.metadata) and the XMP marking (core.xmp) change a few
chunks or segments of an image and copy the rest byte for byte; this is the shared
part, in a module of its own so that neither of those imports the other's internals
in a cycle.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Edit:
    """Bytes `start`..`end` of the file become `replacement`."""

    start: int
    end: int
    replacement: bytes = b""


def apply_edits(path: Path, edits: list[Edit], write: Callable[[bytes], object]) -> None:
    """Write `path` with `edits` applied, in pieces of at most 1 MiB."""
    with path.open("rb") as fh:
        position = 0
        for edit in sorted(edits, key=lambda e: e.start):
            _copy(fh, position, edit.start, write)
            if edit.replacement:
                write(edit.replacement)
            position = edit.end
        _copy(fh, position, None, write)


def _copy(fh: BinaryIO, start: int, end: int | None, write: Callable[[bytes], object]) -> None:
    fh.seek(start)
    left = None if end is None else end - start
    while left is None or left > 0:
        chunk = fh.read(_CHUNK if left is None else min(_CHUNK, left))
        if not chunk:
            return
        write(chunk)
        if left is not None:
            left -= len(chunk)
