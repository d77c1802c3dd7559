import io
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from imagegate.errors import ImageRejected, InvalidRequest, NotFound
from imagegate.ids import AssetId, Subject
from imagegate.images import inspect_image
from imagegate.store.assets import Asset, AssetMeta, AssetStore
from imagegate.store.blobs import STALE_TEMP_SECONDS

ALICE = Subject("token:alice")
BOB = Subject("token:bob")


def png(colour: str = "red", size: tuple[int, int] = (8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def add(store: AssetStore, owner: Subject, data: bytes, now: float = 1000.0) -> Asset:
    with store.blobs.stage() as staged:
        staged.write(data)
        staged.finish()
        info = inspect_image(staged.path, max_bytes=10**7, max_pixels=10**7)
        return store.add(owner, staged, info, AssetMeta(relay="placeholder", prompt="p"), now)


@pytest.fixture
def store(state_dir: Path) -> AssetStore:
    return AssetStore(state_dir, max_bytes=10**7)


def test_add_get_and_content_addressing(store: AssetStore, state_dir: Path) -> None:
    asset = add(store, ALICE, png())
    assert store.get(ALICE, asset.id) == asset
    path = store.blob_path(asset)
    assert path == state_dir / "blobs" / asset.sha256[:2] / f"{asset.sha256}.png"
    assert path.read_bytes() == png()
    assert path.stat().st_mode & 0o777 == 0o440
    assert list((state_dir / "tmp").iterdir()) == []


def test_other_owner_sees_nothing(store: AssetStore) -> None:
    asset = add(store, ALICE, png())
    with pytest.raises(NotFound, match=f"image not found: {asset.id}"):
        store.get(BOB, asset.id)
    with pytest.raises(NotFound):
        store.delete(BOB, asset.id)
    assert store.list(BOB, 10).assets == []
    assert store.get(None, asset.id) == asset


def test_list_pages_newest_first(store: AssetStore) -> None:
    made = [add(store, ALICE, png(c), now=float(i)) for i, c in enumerate(["red", "blue", "green"])]
    add(store, BOB, png("white"))
    first = store.list(ALICE, 2)
    assert [a.id for a in first.assets] == [made[2].id, made[1].id]
    assert first.next_cursor is not None
    second = store.list(ALICE, 2, first.next_cursor)
    assert [a.id for a in second.assets] == [made[0].id]
    assert second.next_cursor is None


def test_same_timestamp_pages_without_loss(store: AssetStore) -> None:
    made = {add(store, ALICE, png(c), now=5.0).id for c in ["red", "blue", "green", "black"]}
    seen: list[AssetId] = []
    cursor = None
    while True:
        page = store.list(ALICE, 1, cursor)
        seen += [a.id for a in page.assets]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(made)


@pytest.mark.parametrize("cursor", ["garbage!", "AAAA", "MTox"])
def test_bad_cursor(store: AssetStore, cursor: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid cursor"):
        store.list(ALICE, 1, cursor)


def test_delete_keeps_shared_blob_until_last_reference(store: AssetStore) -> None:
    first = add(store, ALICE, png())
    second = add(store, BOB, png())
    assert first.sha256 == second.sha256
    store.delete(ALICE, first.id)
    assert store.blob_path(second).exists()
    store.delete(BOB, second.id)
    assert not store.blob_path(second).exists()


def test_oversize_write_is_refused_and_leaves_nothing(state_dir: Path) -> None:
    store = AssetStore(state_dir, max_bytes=1000)
    staged = store.blobs.stage()
    staged.write(b"x" * 600)
    with pytest.raises(ImageRejected, match="larger than the limit of 1000 bytes"), staged:
        staged.write(b"x" * 600)
    assert list((state_dir / "tmp").iterdir()) == []


def test_write_interrupted_by_an_error_leaves_nothing(store: AssetStore, state_dir: Path) -> None:
    def interrupted_stream() -> None:
        with store.blobs.stage() as staged:
            staged.write(png()[:20])
            raise ConnectionError("upstream went away mid-stream")

    with pytest.raises(ConnectionError):
        interrupted_stream()
    assert list((state_dir / "tmp").iterdir()) == []
    assert list((state_dir / "blobs").rglob("*.*")) == []


def test_process_killed_mid_write_leaves_no_asset(state_dir: Path) -> None:
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

    store = AssetStore(state_dir, max_bytes=10**7)
    assert store.list(Subject("local"), 10).assets == []
    assert list((state_dir / "blobs").rglob("*.*")) == []
    leftovers = list((state_dir / "tmp").iterdir())
    assert len(leftovers) == 1  # the partial temp file, never under a real name
    assert leftovers[0].name.endswith(".part")
    assert store.blobs.sweep_stale_temp(now=leftovers[0].stat().st_mtime + 1) == 0
    later = leftovers[0].stat().st_mtime + STALE_TEMP_SECONDS + 1
    assert store.blobs.sweep_stale_temp(now=later) == 1
    assert list((state_dir / "tmp").iterdir()) == []


def test_ready_and_reopen(store: AssetStore, state_dir: Path) -> None:
    asset = add(store, ALICE, png())
    assert store.ready()
    store.close()
    reopened = AssetStore(state_dir, max_bytes=10**7)
    assert reopened.get(ALICE, asset.id) == asset
