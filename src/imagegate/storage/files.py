"""Content-addressed blob files on the local disk, written crash-safe.

A blob is staged in `tmp/`, fsynced, then renamed to `blobs/<aa>/<sha256>.<ext>` and the
directory fsynced. A crash at any point leaves at most a stray temp file, never a
partial file under a real name. Staging files are named after their process: when the
store opens, those of processes of this machine that are gone are removed at once
(live processes sharing the directory keep theirs), and any other after an hour.
Blobs are read-only (0440), in folders of the owner's alone (0700).

A store `readable_by_web_server` (`[storage] accel_redirect`) makes the blob files
0444 and their folders 0711, those found as well as those it makes: nginx reads them,
as one of "others". The state directory around them is what keeps other users out
(core.statedir). Nothing lists a folder but the owner.
"""

import logging
import os
import re
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from imagegate.core.errors import NotFound, StorageError
from imagegate.core.staging import StagedBlob
from imagegate.storage.interfaces import BlobKey
from imagegate.storage.processes import local_tag, local_tag_is_gone, machine

STALE_TEMP_SECONDS = 3600
WEB_FILE_MODE = 0o444
WEB_FOLDER_MODE = 0o711
_OWNED = re.compile(r"stage-([0-9a-f]{12}\.\d+\.\d*)-.*\.part")
CHUNK_BYTES = 1 << 16
log = logging.getLogger("imagegate.storage")


class _FileReader:
    def __init__(self, file: anyio.AsyncFile[bytes], size: int) -> None:
        self._file = file
        self.size = size

    async def chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self._file.read(CHUNK_BYTES):
            yield chunk


class StagingArea:
    """`root/tmp`: where blobs are written before a store commits them. Files left by
    a crash are swept when it opens."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.directory = root / "tmp"
        self._max_bytes = max_bytes
        self._owner = local_tag()
        for directory in (root, self.directory):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.sweep_stale_temp()

    def stage(self) -> StagedBlob:
        return StagedBlob(self.directory, self._max_bytes, self._owner)

    def writable(self) -> bool:
        return os.access(self.directory, os.W_OK)

    def sweep_stale_temp(self, now: float | None = None) -> int:
        """Remove temp files left by a crash: those of a process of this machine that is
        gone, and others older than an hour (a younger one may have a live writer)."""
        cutoff = (now if now is not None else time.time()) - STALE_TEMP_SECONDS
        removed = 0
        for entry in self.directory.iterdir():
            if not entry.is_file():
                continue
            owned = _OWNED.fullmatch(entry.name)
            if owned is not None and owned[1].startswith(machine() + "."):
                stale = local_tag_is_gone(owned[1])  # ours to judge, whatever its age
            else:
                stale = entry.stat().st_mtime < cutoff
            if stale:
                entry.unlink(missing_ok=True)
                removed += 1
        return removed


class FileBlobStore:
    def __init__(self, root: Path, max_bytes: int, readable_by_web_server: bool = False) -> None:
        self.staging = StagingArea(root, max_bytes)
        self._blobs = root / "blobs"
        self._blobs.mkdir(exist_ok=True, mode=0o700)
        self._web = readable_by_web_server
        self._file_mode = WEB_FILE_MODE if self._web else 0o440
        if self._web:
            _open_to_web_server(self._blobs)

    def stage(self) -> StagedBlob:
        return self.staging.stage()

    def _path(self, key: BlobKey) -> Path:
        # BlobKey validated both parts: this is a path under blobs/, and nothing else.
        return self._blobs / key.relative_path

    async def prepare(self, staged: StagedBlob) -> None:
        await anyio.to_thread.run_sync(self._sync, staged)

    @staticmethod
    def _sync(staged: StagedBlob) -> None:
        try:
            _fsync(staged.path)  # staging leaves it to the store (core.staging)
        except OSError as err:
            staged.discard()
            raise StorageError(f"could not store image: {err.strerror}") from None
        staged.synced = True

    async def commit(self, staged: StagedBlob, key: BlobKey) -> None:
        await anyio.to_thread.run_sync(self._commit, staged, key)

    def _commit(self, staged: StagedBlob, key: BlobKey) -> None:
        target = self._path(key)
        try:
            try:
                target.parent.mkdir(mode=0o700)
                _fsync(self._blobs)  # the new folder's own entry
            except FileExistsError:
                pass
            if self._web:  # mkdir's mode passes through the umask
                os.chmod(target.parent, WEB_FOLDER_MODE)
            os.chmod(staged.path, self._file_mode)
            if not staged.synced:  # prepare() didn't
                _fsync(staged.path)
            os.replace(staged.path, target)
            _fsync(target.parent)
        except OSError as err:
            staged.discard()
            raise StorageError(f"could not store image: {err.strerror}") from None

    async def remove(self, key: BlobKey) -> None:
        try:
            await anyio.to_thread.run_sync(lambda: self._path(key).unlink(missing_ok=True))
        except OSError as err:
            raise StorageError(f"could not delete image bytes: {err.strerror}") from None

    @asynccontextmanager
    async def open(self, key: BlobKey) -> AsyncIterator[_FileReader]:
        try:
            file = await anyio.open_file(self._path(key), "rb")
        except FileNotFoundError:
            raise NotFound(f"image bytes not found: {key}") from None
        async with file:
            size = os.fstat(file.wrapped.fileno()).st_size
            yield _FileReader(file, size)

    def local_path(self, key: BlobKey) -> Path:
        return self._path(key)

    async def presigned_url(self, key: BlobKey, max_seconds: int) -> None:
        return None

    def sweep_staging(self) -> int:
        return self.staging.sweep_stale_temp()

    async def stored_before(self, before: float) -> AsyncIterator[BlobKey]:
        def listed() -> list[BlobKey]:
            keys = []
            for path in self._blobs.glob("??/*.*"):
                sha256, _, extension = path.name.partition(".")
                try:
                    if path.stat().st_mtime < before:
                        keys.append(BlobKey(sha256, extension))
                except (OSError, StorageError):
                    continue  # gone meanwhile, or not a name this store writes
            return keys

        for key in await anyio.to_thread.run_sync(listed):
            yield key

    async def ready(self) -> bool:
        return self.staging.writable() and os.access(self._blobs, os.W_OK)


def _open_to_web_server(blobs: Path) -> None:
    """Give the folders and files already there the modes nginx needs (a store not
    readable by the web server made them its owner's alone): each folder's files
    first, then the folder."""
    changed = 0
    try:
        with os.scandir(blobs) as folders:
            for folder in folders:
                if not folder.is_dir(follow_symlinks=False):
                    continue
                with os.scandir(folder.path) as entries:
                    for entry in entries:
                        if entry.is_file(follow_symlinks=False) and _mode(entry) != WEB_FILE_MODE:
                            os.chmod(entry.path, WEB_FILE_MODE)
                            changed += 1
                if _mode(folder) != WEB_FOLDER_MODE:
                    os.chmod(folder.path, WEB_FOLDER_MODE)
        os.chmod(blobs, WEB_FOLDER_MODE)
    except OSError as err:
        raise StorageError(
            f"could not make the blobs readable by the web server: {err.strerror}"
        ) from None
    if changed:
        log.info("made %d blob files readable by the web server (accel_redirect)", changed)


def _mode(entry: os.DirEntry[str]) -> int:
    return stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)


def _fsync(path: Path) -> None:
    """Flush a file's or a directory's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
