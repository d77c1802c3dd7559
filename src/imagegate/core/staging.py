"""Staging files: an image being written, hashed and size-capped on the way in (the
hash can wait: `defer_hash`), and checked too when it is to be a PNG (`check_as_png`).

Relays write what upstreams send into one, callers' inputs are copied into one, and a
blob store commits a finished one under its content name. Until then it is a temp file
that `discard()` removes: a failure anywhere leaves nothing half-written behind.

Finishing does not fsync: the blob store that commits a staged file makes it durable
then (storage.files), and most staged files are never committed (an upstream's extra
copy of an image, an unmarked original once marked, a caller's input image).
"""

import hashlib
import os
import struct
import tempfile
from pathlib import Path
from types import TracebackType

from imagegate.core.errors import TooLarge
from imagegate.core.pngcheck import DamagedPng, PngCheck, Seen

_PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"
_PNG_HEAD_SIZE = 33
"""The signature and a 13-byte IHDR chunk: where `insert_after_ihdr` writes."""
_HOLD = 1 << 20
"""The most held back while `insert_after_ihdr` waits for the first IDAT."""


class StagedBlob:
    """A blob being written. Write chunks, then `finish()`; or `discard()` on failure.
    `owner` goes into the file's name, so that a sweep can tell whose it is."""

    def __init__(self, directory: Path, max_bytes: int, owner: str = "") -> None:
        prefix = f"stage-{owner}-" if owner else "stage-"
        fd, name = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".part")
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._hash: hashlib._Hash | None = hashlib.sha256()
        self._max_bytes = max_bytes
        self.size = 0
        self.sha256 = ""
        self.synced = False
        """Its bytes are on the disk (a blob store's `prepare` did it)."""
        self.pixel_cap: int | None = None
        """The pixel cap of the image to come, set by whoever knows it: a PNG check as
        it is written (`check_as_png`) runs only under one."""
        self._png: PngCheck | None = None
        self.png_whole = False
        """Checked as it was written (`check_as_png`): a whole PNG. False says nothing:
        not checked, not a PNG, or damaged (inspect_image finds out which)."""
        self.png_seen: Seen | None = None
        """What the check saw of a whole PNG's chunks (`check_as_png`)."""
        self._insert: bytes | None = None
        self._held = bytearray()
        self._scanned = 0
        """Where the scan of `_held` for the first IDAT goes on (0: not started)."""
        self.inserted = 0
        """Bytes that `insert_after_ihdr` put into the file (0: none); `size` counts
        the writer's bytes only, which the cap holds."""

    def defer_hash(self) -> None:
        """Before the first write: don't hash the bytes as they are written; `sha256`
        stays empty until `hash_file`. For a blob that is most likely replaced (an
        upstream's image that the marking copies): its hash would be CPU for nothing
        in the thread that decodes the answer."""
        if self.size == 0:
            self._hash = None

    def hash_file(self) -> None:
        """Blocking: set `sha256` of a finished blob whose hash was deferred."""
        with self.path.open("rb") as fh:
            self.sha256 = hashlib.file_digest(fh, "sha256").hexdigest()

    def insert_after_ihdr(self, chunk: bytes) -> None:
        """Before the first write: put `chunk` into the file right after the IHDR of
        the PNG to come (the XMP marking, service.marking: written as the image arrives,
        it needs no copy of the image). The bytes are held back until the first IDAT
        (at most _HOLD): a PNG with a text chunk (iTXt, where XMP goes) or a C2PA
        manifest (caBX) before it is written as it comes, and so is anything that is
        not a PNG with a 13-byte IHDR; `inserted` says which."""
        if self.size == 0:
            self._insert = chunk

    @property
    def inserted_span(self) -> tuple[int, int]:
        """Where the inserted chunk is in the file (start, end)."""
        return _PNG_HEAD_SIZE, _PNG_HEAD_SIZE + self.inserted

    def check_as_png(self) -> None:
        """Run core.pngcheck on the bytes as they are written, before the first: the
        writer's thread (which decodes base64 while more arrives) does the check, and
        inspect_image makes no pass of its own over a PNG found whole. Only under a
        `pixel_cap`: an image over it is refused at its header, before any inflating."""
        if self.size == 0 and self.pixel_cap is not None:
            self._png = PngCheck(self.pixel_cap)

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._max_bytes:
            raise TooLarge(f"image is larger than the limit of {self._max_bytes} bytes")
        if self._insert is None:
            self._put(chunk)
            return
        self._held += chunk
        # From where the last write's scan stopped: a scan from the start at each
        # write would be quadratic in what is held (an upstream sets the pieces).
        takes, self._scanned = _takes_chunk(self._held, self._scanned)
        if takes is not None or len(self._held) > _HOLD:
            self._let_go(insert=bool(takes))

    def write_all(self, pieces: list[bytes]) -> None:
        """`write` a batch of a stream's pieces at once, in a worker thread (core.cpu):
        one pass of the hash and the check over it, not one per piece."""
        self.write(b"".join(pieces))

    def _let_go(self, insert: bool) -> None:
        held, chunk = bytes(self._held), self._insert
        self._held, self._insert = bytearray(), None
        if not held.startswith(_PNG_HEAD[:8]):
            # Not a PNG: the marking copies it, and the copy is what is stored.
            self._hash = None
        if insert and chunk:
            self._put(held[:_PNG_HEAD_SIZE])
            self._put(chunk)
            self.inserted = len(chunk)
            held = held[_PNG_HEAD_SIZE:]
        if held:
            self._put(held)

    def _put(self, chunk: bytes) -> None:
        if self._hash is not None:
            self._hash.update(chunk)
        self._file.write(chunk)
        if self._png is not None:
            try:
                self._png.feed(chunk)
            except DamagedPng:  # not a PNG, or damaged: inspect_image says why
                self._png = None

    def finish(self) -> None:
        """Close the file (a flush of at most one buffer: cheap enough for the event
        loop); after this it can be inspected and committed."""
        if self._insert is not None:  # too short to be a PNG
            self._let_go(insert=False)
        self._file.close()
        if self._hash is not None:
            self.sha256 = self._hash.hexdigest()
        if self._png is not None:
            try:
                self._png.close()
            except DamagedPng:
                pass
            else:
                self.png_whole = True
                self.png_seen = self._png.seen
            self._png = None

    def discard(self) -> None:
        """Remove the file; a no-op once a blob store has committed (moved) it."""
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "StagedBlob":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.discard()


def _takes_chunk(head: bytearray, position: int) -> tuple[bool | None, int]:
    """Whether the PNG that starts with `head` takes the XMP chunk after its IHDR: True
    once its first IDAT is reached with no iTXt or caBX chunk before it; False when
    one comes first, or when it is no PNG with a 13-byte IHDR; None: more bytes are
    needed to tell. With where the scan of the chunks stopped, to go on from there
    (0: it hasn't started)."""
    if not position:
        if len(head) < len(_PNG_HEAD):
            return (None if _PNG_HEAD.startswith(head) else False), 0
        if not head.startswith(_PNG_HEAD):
            return False, 0
        position = _PNG_HEAD_SIZE
    while position + 8 <= len(head):
        length, kind = struct.unpack_from(">I4s", head, position)
        if kind == b"IDAT":
            return True, position
        if kind in (b"iTXt", b"caBX", b"IEND"):  # IEND first: damaged, inspect says so
            return False, position
        position += 12 + length
    return None, position
