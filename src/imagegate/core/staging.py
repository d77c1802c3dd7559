"""Staging files: an image being written, hashed and size-capped on the way in.

Relays write what upstreams send into one, callers' inputs are copied into one, and a
blob store commits a finished one under its content name. Until then it is a temp file
that `discard()` removes: a failure anywhere leaves nothing half-written behind.

Finishing does not fsync: the blob store that commits a staged file makes it durable
then (storage.files), and most staged files are never committed (an upstream's extra
copy of an image, an unmarked original once marked, a caller's input image).
"""

import hashlib
import os
import tempfile
from pathlib import Path
from types import TracebackType

from imagegate.core.errors import TooLarge


class StagedBlob:
    """A blob being written. Write chunks, then `finish()`; or `discard()` on failure.
    `owner` goes into the file's name, so that a sweep can tell whose it is."""

    def __init__(self, directory: Path, max_bytes: int, owner: str = "") -> None:
        prefix = f"stage-{owner}-" if owner else "stage-"
        fd, name = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".part")
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._max_bytes = max_bytes
        self.size = 0
        self.sha256 = ""
        self.synced = False
        """Its bytes are on the disk (a blob store's `prepare` did it)."""

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._max_bytes:
            raise TooLarge(f"image is larger than the limit of {self._max_bytes} bytes")
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self) -> None:
        """Close the file (a flush of at most one buffer: cheap enough for the event
        loop); after this it can be inspected and committed."""
        self._file.close()
        self.sha256 = self._hash.hexdigest()

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
