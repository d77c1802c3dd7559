"""Upload links over real HTTP: a big file streamed in and edited, every refusal
leaving nothing behind, location metadata removed with the pixels kept, and the
scope and storage quota that guard it."""

import io
import random
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastmcp.exceptions import ToolError
from PIL import Image

from imagegate.config import Limits, QuotaSettings
from imagegate.core import images
from imagegate.core.staging import StagedBlob
from tests.conftest import ManualClock
from tests.e2e.harness import RunningServer, running_server, team_files

ALICE_TOKEN = "alice-token-0123456789abcdefghijkl"
READER_TOKEN = "reader-token-0123456789abcdefghijk"
CAROL_TOKEN = "carol-token-0123456789abcdefghijkl"
ACL = """
[subjects."token:alice"]
scopes = ["images:upload", "images:edit", "images:read", "relay:*"]
[subjects."token:reader"]
scopes = ["images:read"]
[subjects."token:carol"]
scopes = ["images:upload", "images:generate", "images:read", "relay:*"]
"""
CAROL_BYTES = 20_000


@pytest.fixture
async def server(
    state_dir: Path, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[RunningServer]:
    team = team_files(
        tmp_path, ACL, {"alice": ALICE_TOKEN, "reader": READER_TOKEN, "carol": CAROL_TOKEN}
    )
    quotas = QuotaSettings(subjects={"token:carol": Limits(max_stored_bytes=CAROL_BYTES)})
    async with running_server(state_dir, clock, quotas=quotas, **team) as running:
        yield running


async def tool(server: RunningServer, name: str, token: str = ALICE_TOKEN, **args: Any) -> Any:
    async with server.client(token) as client:
        return (await client.call_tool(name, args)).structured_content


def _noise(side: int) -> bytes:
    return random.Random(7).randbytes(side * side * 3)


def noisy_png(path: Path, side: int) -> None:
    """Random pixels barely compress: a file of about 3 bytes per pixel."""
    Image.frombytes("RGB", (side, side), _noise(side)).save(path, compress_level=1)


def leftovers(server: RunningServer) -> list[Path]:
    return list((server.settings.state_dir / "tmp").iterdir())


async def test_a_big_png_streams_in_and_can_be_edited(
    server: RunningServer, tmp_path: Path
) -> None:
    big = tmp_path / "photo.png"
    noisy_png(big, 1900)
    assert big.stat().st_size > 10_000_000
    link = await tool(server, "create_upload_link", filename="photo.png")
    assert link["curl"] == f"curl -T photo.png '{link['upload_url']}'"
    assert link["max_bytes"] == server.settings.max_image_bytes

    async def chunks() -> AsyncIterator[bytes]:
        with big.open("rb") as fh:
            while chunk := fh.read(256 * 1024):
                yield chunk

    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.put(link["upload_url"], content=chunks())
    assert response.status_code == 201, response.text
    uploaded = response.json()
    assert (uploaded["width"], uploaded["height"], uploaded["mime_type"]) == (
        1900,
        1900,
        "image/png",
    )
    assert uploaded["bytes"] == big.stat().st_size  # nothing to strip: the same bytes
    (image,) = (await tool(server, "get_image", asset_id=uploaded["asset_id"]))["images"]
    assert image["relay"] == "upload"
    assert image["params"] == {"upload": True, "filename": "photo.png"}
    edited = await tool(
        server, "edit_image", prompt="a frame", images=[uploaded["asset_id"]], size="512x512"
    )
    assert len(edited["images"]) == 1
    assert leftovers(server) == []


async def test_a_browser_form_uploads_too(server: RunningServer) -> None:
    link = await tool(server, "create_upload_link")
    data = io.BytesIO()
    Image.new("RGB", (64, 64), "teal").save(data, format="PNG")
    async with httpx.AsyncClient() as client:
        response = await client.post(
            link["upload_url"],
            data={"note": "a field before the file"},
            files={"file": ("teal.png", data.getvalue(), "image/png")},
        )
    assert response.status_code == 201, response.text
    assert response.json()["width"] == 64


def png(size: tuple[int, int] = (64, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "orange").save(out, format="PNG")
    return out.getvalue()


def tampered(url: str, part: str) -> str:
    base, query = url.split("?")
    exp, sig = query.split("&")
    if part == "sig":  # another first character, whatever the first one is
        first = sig[4]
        return f"{base}?{exp}&sig={'B' if first == 'A' else 'A'}{sig[5:]}"
    if part == "exp":
        return f"{base}?exp={int(exp[4:]) + 3600}&{sig}"
    return f"{base[:-1]}{'0' if base[-1] != '0' else '1'}?{query}"


@pytest.mark.parametrize("part", ["sig", "exp", "id"])
async def test_a_tampered_link_is_forbidden(server: RunningServer, part: str) -> None:
    link = await tool(server, "create_upload_link")
    async with httpx.AsyncClient() as client:
        response = await client.put(tampered(link["upload_url"], part), content=png())
        assert response.status_code == 403
        assert "not valid" in response.json()["error"]
        # The real link was not used up by the forgery.
        assert (await client.put(link["upload_url"], content=png())).status_code == 201


async def test_used_expired_and_oversize_links(server: RunningServer, clock: ManualClock) -> None:
    async with httpx.AsyncClient() as client:
        link = await tool(server, "create_upload_link")
        assert (await client.put(link["upload_url"], content=png())).status_code == 201
        again = await client.put(link["upload_url"], content=png())
        assert again.status_code == 409
        assert "used already" in again.json()["error"]

        late = await tool(server, "create_upload_link", ttl_seconds=60)
        clock.advance(61)
        gone = await client.put(late["upload_url"], content=png())
        assert gone.status_code == 410
        assert "create_upload_link" in gone.json()["error"]

        big = await tool(server, "create_upload_link")
        limit = server.settings.max_image_bytes
        declared = await client.put(big["upload_url"], content=b"\0" * (limit + 70_000))
        assert declared.status_code == 413  # refused by its Content-Length: link kept

        async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: cut as it streams
            for _ in range(limit // 65536 + 2):
                yield b"\0" * 65536

        cut = await client.put(big["upload_url"], content=streamed())
        assert cut.status_code == 413
        assert str(limit) in cut.json()["error"]
        assert (await client.put(big["upload_url"], content=png())).status_code == 409
    images = (await tool(server, "list_images"))["images"]
    assert len(images) == 1
    assert leftovers(server) == []


@pytest.mark.parametrize(
    "body",
    [b"just some text, not an image", b"", b"GIF89a" + b"\0" * 100],
    ids=["text", "empty", "fake-gif"],
)
async def test_a_body_that_is_no_image_is_unsupported(server: RunningServer, body: bytes) -> None:
    link = await tool(server, "create_upload_link")
    async with httpx.AsyncClient() as client:
        response = await client.put(link["upload_url"], content=body)
    assert response.status_code == 415
    assert "unsupported media type" in response.json()["error"]
    assert (await tool(server, "list_images"))["images"] == []
    assert leftovers(server) == []


async def test_uploading_needs_its_scope(server: RunningServer) -> None:
    with pytest.raises(ToolError, match="forbidden: needs scope images:upload"):
        await tool(server, "create_upload_link", READER_TOKEN)


async def test_the_storage_quota_holds_for_uploads_and_generations(server: RunningServer) -> None:
    async with httpx.AsyncClient() as client:
        link = await tool(server, "create_upload_link", CAROL_TOKEN)
        big = io.BytesIO()
        Image.frombytes("RGB", (100, 100), _noise(100)).save(big, format="PNG")
        assert len(big.getvalue()) > CAROL_BYTES
        full = await client.put(link["upload_url"], content=big.getvalue())
        assert full.status_code == 507
        assert "max_stored_bytes" in full.json()["error"]
        assert (await tool(server, "list_images", CAROL_TOKEN))["images"] == []
        assert leftovers(server) == []
        small = await tool(server, "create_upload_link", CAROL_TOKEN)
        assert (await client.put(small["upload_url"], content=png((200, 200)))).status_code == 201
    with pytest.raises(ToolError, match="max_stored_bytes"):
        await tool(server, "generate_image", CAROL_TOKEN, prompt="x", size="1024x1024")
    (image,) = (await tool(server, "list_images", CAROL_TOKEN))["images"]
    usage = await tool(server, "get_usage", CAROL_TOKEN)
    assert usage["usage"]["stored_bytes"] == image["bytes"]
    # The relay ran (an upstream may have billed it): the call counts, with no image.
    assert (usage["usage"]["calls_today"], usage["usage"]["images_today"]) == (1, 0)
    assert usage["limits"]["max_stored_bytes"] == CAROL_BYTES


def gps_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 3
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 0.0)}
    out = io.BytesIO()
    image = Image.frombytes("RGB", (96, 64), _noise(96)[: 96 * 64 * 3])
    image.save(out, format="JPEG", exif=exif.tobytes(), quality=92)
    return out.getvalue()


async def test_location_is_removed_and_the_pixels_kept(server: RunningServer) -> None:
    original = gps_jpeg()
    link = await tool(server, "create_upload_link", filename="../../holiday.jpg")
    async with httpx.AsyncClient() as client:
        uploaded = (await client.put(link["upload_url"], content=original)).json()
        (image,) = (await tool(server, "get_image", asset_id=uploaded["asset_id"]))["images"]
        stored = (await client.get(image["url"])).content
    assert image["params"]["filename"] == "holiday.jpg"
    with Image.open(io.BytesIO(stored)) as after, Image.open(io.BytesIO(original)) as before:
        assert 0x8825 not in after.getexif()
        assert after.getexif().get(0x0112) == 3
        assert after.tobytes() == before.tobytes()
    assert uploaded["bytes"] == len(stored) < len(original)


@pytest.mark.parametrize("side", [64, 1000])  # one piece; several batches (3 MB)
async def test_a_truncated_image_is_unsupported(server: RunningServer, side: int) -> None:
    whole = io.BytesIO()
    Image.frombytes("RGB", (side, side), _noise(side)).save(whole, format="PNG")
    link = await tool(server, "create_upload_link")
    async with httpx.AsyncClient() as client:
        response = await client.put(link["upload_url"], content=whole.getvalue()[:-5000])
    assert response.status_code == 415
    assert "damaged or truncated" in response.json()["error"]
    assert leftovers(server) == []


async def test_a_png_is_written_and_checked_off_the_event_loop(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The body goes to a worker thread in batches while more arrives, where it is
    written, hashed and checked: the event loop (this test's thread) writes none of
    it, and no second pass over the file checks it again."""
    writers: set[bool] = set()
    write = StagedBlob.write

    def recorded(staged: StagedBlob, chunk: bytes) -> None:
        writers.add(threading.current_thread() is threading.main_thread())
        write(staged, chunk)

    whole_file_checks: list[Path] = []
    monkeypatch.setattr(StagedBlob, "write", recorded)
    monkeypatch.setattr(images, "check_png", whole_file_checks.append)
    big = tmp_path / "photo.png"
    noisy_png(big, 1000)
    link = await tool(server, "create_upload_link")
    async with httpx.AsyncClient() as client:
        response = await client.put(link["upload_url"], content=big.read_bytes())
    assert response.status_code == 201, response.text
    assert response.json()["bytes"] == big.stat().st_size
    assert writers == {False}
    assert whole_file_checks == []


async def test_a_form_is_capped_as_a_whole_and_a_bad_one_costs_no_link(
    server: RunningServer,
) -> None:
    link = await tool(server, "create_upload_link")
    limit = server.settings.max_image_bytes

    async def junk_then_file() -> AsyncIterator[bytes]:  # chunked: no Content-Length
        yield b'--b\r\nContent-Disposition: form-data; name="junk"\r\n\r\n'
        for _ in range(limit // 65536 + 4):
            yield b"j" * 65536
        yield b"\r\n--b--\r\n"

    async with httpx.AsyncClient() as client:
        bad = await client.post(
            link["upload_url"],
            content=b"whatever",
            headers={"Content-Type": "multipart/form-data; boundary=" + "b" * 300},
        )
        assert bad.status_code == 400
        assert "malformed" in bad.json()["error"]
        huge = await client.post(
            link["upload_url"],
            content=junk_then_file(),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert huge.status_code == 413
        assert (await client.put(link["upload_url"], content=png())).status_code == 409
    assert leftovers(server) == []
