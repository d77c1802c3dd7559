"""Content-addressed blob files with crash-safe writes.

A blob is written to `tmp/`, fsynced, then renamed to `blobs/<aa>/<sha256>.<ext>` and
the directory fsynced. A crash at any point leaves at most a stray temp file (swept on
open), never a partial file under a real name. Blobs are made read-only (0440).
"""

import hashlib
import os
import re
import tempfile
import time
from pathlib import Path
from types import TracebackType

from imagegate.errors import ImageRejected, StorageError

_SHA256 = re.compile(r"[0-9a-f]{64}")
_EXT = re.compile(r"[a-z]{2,4}")
STALE_TEMP_SECONDS = 3600


class StagedBlob:
    """A blob being written. Write chunks, then `finish()`; or `discard()` on failure."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        fd, name = tempfile.mkstemp(dir=directory, prefix="stage-", suffix=".part")
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._max_bytes = max_bytes
        self.size = 0
        self.sha256 = ""

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._max_bytes:
            raise ImageRejected(f"image is larger than the limit of {self._max_bytes} bytes")
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self) -> None:
        """Make the bytes durable; after this the file can be inspected and committed."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self.sha256 = self._hash.hexdigest()

    def discard(self) -> None:
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


class BlobStore:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self._blobs = root / "blobs"
        self._tmp = root / "tmp"
        self._max_bytes = max_bytes
        for directory in (root, self._blobs, self._tmp):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def stage(self) -> StagedBlob:
        return StagedBlob(self._tmp, self._max_bytes)

    def path_for(self, sha256: str, extension: str) -> Path:
        """The only way a blob path is made: from a validated digest and extension."""
        if not _SHA256.fullmatch(sha256) or not _EXT.fullmatch(extension):
            raise StorageError("invalid blob reference")
        return self._blobs / sha256[:2] / f"{sha256}.{extension}"

    def commit(self, staged: StagedBlob, extension: str) -> Path:
        """Move a finished blob under its content name (idempotent for equal content)."""
        target = self.path_for(staged.sha256, extension)
        try:
            target.parent.mkdir(exist_ok=True, mode=0o700)
            os.chmod(staged.path, 0o440)
            os.replace(staged.path, target)
            _fsync_directory(target.parent)
        except OSError as err:
            staged.discard()
            raise StorageError(f"could not store image: {err.strerror}") from None
        return target

    def remove(self, sha256: str, extension: str) -> None:
        self.path_for(sha256, extension).unlink(missing_ok=True)

    def sweep_stale_temp(self, now: float | None = None) -> int:
        """Remove temp files left by a crash; recent ones may belong to a live writer."""
        cutoff = (now if now is not None else time.time()) - STALE_TEMP_SECONDS
        removed = 0
        for entry in self._tmp.iterdir():
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                entry.unlink(missing_ok=True)
                removed += 1
        return removed

    def writable(self) -> bool:
        return os.access(self._tmp, os.W_OK) and os.access(self._blobs, os.W_OK)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
