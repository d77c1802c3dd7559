"""`imagegate generate|edit|pull --server URL` as a user runs it: a real process against
a server the test starts, with its token from the environment."""

import asyncio
import json
import os
import pty
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from imagegate.relays.config import PriceTable
from imagegate.relays.openai_images import OpenAIImagesRelayConfig
from imagegate.relays.placeholder import PlaceholderRelayConfig
from tests.conftest import ManualClock
from tests.e2e.harness import RunningServer, running_server
from tests.e2e.processes import COMMAND, clean_env, run
from tests.fakes.upstream import FakeUpstream, images_reply, png_bytes, running_upstream


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with running_upstream() as fake:
        fake.defaults["/v1/images/generations"] = images_reply(png_bytes((1024, 1024)))
        yield fake


@pytest.fixture
async def server(
    state_dir: Path, clock: ManualClock, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningServer]:
    monkeypatch.setenv("PAID_KEY", "sk-paid-0123456789")
    relays = {
        "placeholder": PlaceholderRelayConfig(kind="placeholder"),
        "paid": OpenAIImagesRelayConfig(
            kind="openai-images",
            base_url=f"{upstream.base_url}/v1",
            api_key_env="PAID_KEY",
            paid=True,
            price=PriceTable(per_image={"*": 0.04}),
        ),
    }
    async with running_server(state_dir, clock, relays=relays) as running:
        yield running


async def imagegate(server: RunningServer, cwd: Path, *args: str) -> Any:
    env = clean_env(IMAGEGATE_SERVER=server.base_url, IMAGEGATE_TOKEN=server.token)
    return await asyncio.to_thread(run, *args, env=env, cwd=cwd, timeout=120)


async def test_generate_through_the_server(server: RunningServer, tmp_path: Path) -> None:
    done = await imagegate(
        server, tmp_path, "generate", "a lighthouse", "--size", "96x64", "-n", "2"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["relay"] == "placeholder"
    assert len(report["images"]) == 2
    for image in report["images"]:
        path = Path(image["path"])
        assert path.parent == tmp_path
        with Image.open(path) as picture:
            assert picture.size == (96, 64)
        assert image["bytes"] == path.stat().st_size
        assert image["asset_id"].startswith("img_")
    assert "drawing image" in done.stderr  # the server's progress, with elapsed time
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


async def test_edit_uploads_local_files_first(server: RunningServer, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    Image.new("RGB", (128, 96), "teal").save(photo)
    out = tmp_path / "edited.png"
    done = await imagegate(server, tmp_path, "edit", "a frame", str(photo), "--out", str(out))
    assert done.returncode == 0, done.stderr
    (image,) = json.loads(done.stdout)["images"]
    assert image["path"] == str(out.resolve())
    with Image.open(out) as picture:
        assert picture.size == (128, 96)


async def test_pull_downloads_existing_images(server: RunningServer, tmp_path: Path) -> None:
    async with server.client() as client:
        made = await client.call_tool("generate_image", {"prompt": "x", "size": "64x64"})
    asset_id = made.structured_content["images"][0]["asset_id"]  # type: ignore[index]
    done = await imagegate(server, tmp_path, "pull", asset_id)
    assert done.returncode == 0, done.stderr
    (image,) = json.loads(done.stdout)["images"]
    assert Path(image["path"]).is_file()
    missing = await imagegate(server, tmp_path, "pull", "img_" + "0" * 24)
    assert missing.returncode == 1
    assert "image not found" in missing.stderr
    assert missing.stdout == ""


async def test_a_paid_relay_without_a_terminal_is_refused_with_the_reason(
    server: RunningServer, upstream: FakeUpstream, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    done = await imagegate(server, work, "generate", "x", "--relay", "paid")
    assert done.returncode == 1
    assert "not confirmed" in done.stderr
    assert "paid:auto" in done.stderr
    assert done.stdout == ""
    assert upstream.requests == []
    assert list(work.iterdir()) == []


async def test_a_server_that_is_not_there_is_one_clear_line(tmp_path: Path) -> None:
    env = clean_env(IMAGEGATE_SERVER="http://127.0.0.1:9", IMAGEGATE_TOKEN="t" * 32)
    done = await asyncio.to_thread(run, "generate", "x", env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("imagegate: error: cannot reach http://127.0.0.1:9/mcp")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("answer", "made"), [(b"y\n", 1), (b"n\n", 0)])
async def test_a_paid_relay_asks_on_the_terminal(
    server: RunningServer, upstream: FakeUpstream, tmp_path: Path, answer: bytes, made: int
) -> None:
    """stdin a terminal: the server's question is shown there and the answer goes back."""
    work = tmp_path / "work"
    work.mkdir()
    controller, terminal = pty.openpty()
    env = clean_env(IMAGEGATE_SERVER=server.base_url, IMAGEGATE_TOKEN=server.token)
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        "generate",
        "a costly one",
        "--relay",
        "paid",
        stdin=terminal,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=work,
    )
    os.close(terminal)
    try:
        os.write(controller, answer)  # typed ahead: read once the question is asked
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        os.close(controller)
    assert b"costs money" in err
    assert len(upstream.requests) == made
    if made:
        assert process.returncode == 0, err
        assert len(json.loads(out)["images"]) == 1
    else:
        assert process.returncode == 1
        assert b"not confirmed (declined)" in err
