"""The openai-images relay end to end: generations (JSON and streamed) and multipart
edits, through MCP over HTTP to a fake Images API on 127.0.0.1."""

import base64
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp.exceptions import ToolError
from PIL import Image

from imagegate.relays.openai_images import OpenAIImagesRelayConfig
from tests.e2e.harness import RunningServer, http_get, running_server, stored_as_sent
from tests.fakes.upstream import (
    FakeUpstream,
    b64,
    error_reply,
    images_reply,
    json_reply,
    noisy_png,
    png_bytes,
    running_upstream,
    sse,
)

KEY = "sk-fake-images-key-0123456789"
GENERATIONS = "/v1/images/generations"
EDITS = "/v1/images/edits"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with running_upstream() as fake:
        yield fake


def relays(fake: FakeUpstream) -> dict[str, OpenAIImagesRelayConfig]:
    common: dict[str, Any] = {
        "kind": "openai-images",
        "base_url": f"{fake.base_url}/v1",
        "api_key_env": "FAKE_IMAGES_KEY",
        "model": "gpt-image-test",
        "paid": False,
        "retry_budget_seconds": 5.0,
    }
    return {
        "images": OpenAIImagesRelayConfig(**common),
        "streamed": OpenAIImagesRelayConfig(**common, stream=True),
    }


@pytest.fixture
async def server(
    state_dir: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningServer]:
    monkeypatch.setenv("FAKE_IMAGES_KEY", KEY)
    async with running_server(
        state_dir, relays=relays(upstream), default_relay="images"
    ) as running:
        yield running


def nothing_stored(server: RunningServer) -> bool:
    state = server.settings.state_dir
    return not [*(state / "blobs").rglob("*.*"), *(state / "tmp").iterdir()]


async def test_generations(server: RunningServer, upstream: FakeUpstream) -> None:
    first, second = png_bytes((1024, 1024), "red"), png_bytes((1024, 1024), "blue")
    upstream.script(GENERATIONS, images_reply(first, second))
    async with server.client() as client:
        result = await client.call_tool(
            "generate_image",
            {"prompt": "two squares", "n": 2, "quality": "high", "relay": "images"},
        )
    assert result.structured_content is not None
    urls = [image["url"] for image in result.structured_content["images"]]
    downloaded = [(await http_get(url)).content for url in urls]
    assert [
        stored_as_sent(got, sent) for got, sent in zip(downloaded, [first, second], strict=True)
    ] == [True, True]
    (call,) = upstream.calls(GENERATIONS)
    assert call.headers["authorization"] == f"Bearer {KEY}"
    body = call.json()
    assert body["model"] == "gpt-image-test"
    assert body["n"] == 2
    assert body["size"] == "1024x1024"
    assert body["quality"] == "high"
    assert body["output_format"] == "png"
    assert "output_compression" not in body


async def test_streamed_generation_reports_partials(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    final = png_bytes((1024, 1024), "green")
    partial = b64(png_bytes((16, 16)))
    upstream.script(
        GENERATIONS,
        sse(
            [
                {
                    "type": "image_generation.partial_image",
                    "b64_json": partial,
                    "partial_image_index": 0,
                },
                {
                    "type": "image_generation.partial_image",
                    "b64_json": partial,
                    "partial_image_index": 1,
                },
                {
                    "type": "image_generation.completed",
                    "b64_json": b64(final),
                    "usage": {"total_tokens": 7},
                },
            ]
        ),
    )
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    async with server.client(progress_handler=on_progress) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "green", "relay": "streamed", "partial_images": 2}
        )
    assert result.structured_content is not None
    downloaded = (await http_get(result.structured_content["images"][0]["url"])).content
    assert stored_as_sent(downloaded, final)
    assert sum(m.startswith("partial image") for m in messages) == 2
    body = upstream.calls(GENERATIONS)[0].json()
    assert body["stream"] is True
    assert body["partial_images"] == 2


async def test_multipart_edit_with_several_images_and_a_mask(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    def square(colour: str) -> str:
        return "data:image/png;base64," + b64(png_bytes((1024, 1024), colour))

    mask = io.BytesIO()
    Image.new("RGBA", (1024, 1024), (0, 0, 0, 0)).save(mask, format="PNG")
    mask_url = "data:image/png;base64," + base64.b64encode(mask.getvalue()).decode()
    upstream.script(EDITS, images_reply(png_bytes((1024, 1024), "purple"), revised="edited"))
    async with server.client() as client:
        result = await client.call_tool(
            "edit_image",
            {
                "prompt": "blend them",
                "images": [square("red"), square("white")],
                "mask": mask_url,
                "relay": "images",
                "input_fidelity": "high",
            },
        )
    assert result.structured_content is not None
    (image,) = result.structured_content["images"]
    assert image["revised_prompt"] == "edited"
    assert image["params"]["inputs"] == 2
    (call,) = upstream.calls(EDITS)
    assert call.headers["content-type"].startswith("multipart/form-data")
    assert call.headers["authorization"] == f"Bearer {KEY}"
    raw = call.body
    assert len(re.findall(rb'name="image\[\]"', raw)) == 2
    assert len(re.findall(rb'name="mask"', raw)) == 1
    assert re.search(rb'name="prompt"\r\n\r\nblend them\r\n', raw)
    assert re.search(rb'name="input_fidelity"\r\n\r\nhigh\r\n', raw)
    assert png_bytes((1024, 1024), "red") in raw  # the file itself, not a re-encoding


async def test_edit_with_one_image_uses_the_image_field(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    upstream.script(EDITS, images_reply(png_bytes((1024, 1024))))
    source = "data:image/png;base64," + b64(png_bytes((800, 600)))
    async with server.client() as client:
        result = await client.call_tool(
            "edit_image", {"prompt": "x", "images": [source], "relay": "images"}
        )
    assert result.structured_content is not None
    raw = upstream.calls(EDITS)[0].body
    assert re.findall(rb'name="image"', raw)
    assert not re.findall(rb'name="image\[\]"', raw)
    # 800x600 is not an OpenAI size: the edit asks for the allowed size nearest in shape.
    assert re.search(rb'name="size"\r\n\r\n1536x1024\r\n', raw)


async def test_429_then_success(server: RunningServer, upstream: FakeUpstream) -> None:
    upstream.script(
        GENERATIONS,
        error_reply(429, "rate_limit_exceeded", "wait", {"retry-after": "0"}),
        images_reply(png_bytes((1024, 1024))),
    )
    async with server.client() as client:
        result = await client.call_tool("generate_image", {"prompt": "x", "relay": "images"})
    assert result.structured_content is not None
    assert len(upstream.calls(GENERATIONS)) == 2


# Past the spool's threshold (relays.wire): checked as it is decoded.
NOISY = noisy_png(200)
FLIPPED = NOISY[:60_000] + bytes([NOISY[60_000] ^ 0x55]) + NOISY[60_001:]


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (json_reply({"data": [{"b64_json": "%%%"}]}), "damaged base64"),
        (images_reply(NOISY[:-100]), "png image is damaged or truncated"),
        (images_reply(FLIPPED), "png image is damaged or truncated"),
        (json_reply({"data": []}), "relay 'images'"),
        (error_reply(400, "moderation_blocked", "rejected by the safety system"), "refused"),
        (error_reply(500, "server_error", "<html>oops</html>", {"retry-after": "0"}), "HTTP 500"),
    ],
)
async def test_failures_store_nothing(
    server: RunningServer, upstream: FakeUpstream, reply: Any, message: str
) -> None:
    upstream.script(GENERATIONS, reply, reply, reply)
    async with server.client() as client:
        with pytest.raises(ToolError, match=message):
            await client.call_tool("generate_image", {"prompt": "x", "relay": "images"})
    assert nothing_stored(server)


async def test_a_refused_call_never_reaches_the_upstream(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    async with server.client() as client:
        with pytest.raises(ToolError, match="relay 'images' does not support negative_prompt"):
            await client.call_tool(
                "generate_image", {"prompt": "x", "relay": "images", "negative_prompt": "blur"}
            )
    assert upstream.requests == []
