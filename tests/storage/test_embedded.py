"""What only the embedded backend (SQLite + blob files) promises: its files on disk."""

import io
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from PIL import Image

from imagegate.core.errors import ImageRejected
from imagegate.core.ids import Subject
from imagegate.core.images import inspect_image
from imagegate.storage.assets import AssetStore
from imagegate.storage.embedded import open_embedded
from imagegate.storage.files import STALE_TEMP_SECONDS, FileBlobStore
from imagegate.storage.interfaces import AssetMeta

ALICE = Subject("token:alice")


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, format="PNG")
    return out.getvalue()


async def test_blobs_are_read_only_files_named_by_content(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700)
    storage = open_embedded(state_dir, 10**7)
    store = AssetStore(storage.index, storage.blobs)
    with store.stage() as staged:
        staged.write(png())
        staged.finish()
        info = inspect_image(staged.path, max_bytes=10**7, max_pixels=10**7)
        asset = await store.add(ALICE, staged, info, AssetMeta(relay="r", prompt="p"), 1.0)
    path = store.local_path(asset)
    assert path == state_dir / "blobs" / asset.sha256[:2] / f"{asset.sha256}.png"
    assert path.read_bytes() == png()
    assert path.stat().st_mode & 0o777 == 0o440
    assert list((state_dir / "tmp").iterdir()) == []
    assert await store.ready()
    await storage.aclose()
    assert not await storage.index.ready()


def test_an_oversize_write_leaves_nothing(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path, max_bytes=1000)
    staged = blobs.stage()
    staged.write(b"x" * 600)
    with pytest.raises(ImageRejected, match="larger than the limit of 1000 bytes"), staged:
        staged.write(b"x" * 600)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_write_interrupted_by_an_error_leaves_nothing(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path, max_bytes=10**7)

    def interrupted_stream() -> None:
        with blobs.stage() as staged:
            staged.write(png()[:20])
            raise ConnectionError("upstream went away mid-stream")

    with pytest.raises(ConnectionError):
        interrupted_stream()
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list((tmp_path / "blobs").rglob("*.*")) == []


def test_a_process_killed_mid_write_leaves_no_asset(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700)
    writer = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("crash_writer.py")), str(state_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "WROTE"
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=10)

    async def listed() -> int:
        storage = open_embedded(state_dir, 10**7)
        page = await storage.index.list(Subject("local"), 10, None)
        await storage.aclose()
        return len(page.assets)

    assert anyio.run(listed) == 0
    assert list((state_dir / "blobs").rglob("*.*")) == []
    leftovers = list((state_dir / "tmp").iterdir())
    assert len(leftovers) == 1  # the partial temp file, never under a real name
    assert leftovers[0].name.endswith(".part")
    blobs = FileBlobStore(state_dir, 10**7)
    assert blobs.sweep_stale_temp(now=leftovers[0].stat().st_mtime + 1) == 0
    later = leftovers[0].stat().st_mtime + STALE_TEMP_SECONDS + 1
    assert blobs.sweep_stale_temp(now=later) == 1
    assert list((state_dir / "tmp").iterdir()) == []
