"""The Responses relay against respx: the request it builds and each event it handles."""

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from PIL import Image

from imagegate.config import read_secret_env
from imagegate.core.errors import ContentRefused, RelayError
from imagegate.core.images import ImageFormat
from imagegate.relays.base import ImageRequest, InputImage, Size
from imagegate.relays.openai_responses import OpenAIResponsesRelay, OpenAIResponsesRelayConfig
from imagegate.storage.files import FileBlobStore

KEY = "sk-responses-test-0123456789"


def png(colour: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(out, format="PNG")
    return out.getvalue()


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events)


def done(image: bytes, **item: Any) -> dict[str, Any]:
    return {
        "type": "response.output_item.done",
        "item": {
            "type": "image_generation_call",
            "result": base64.b64encode(image).decode(),
            **item,
        },
    }


@pytest.fixture
def relay(monkeypatch: pytest.MonkeyPatch) -> OpenAIResponsesRelay:
    monkeypatch.setenv("TEST_RESPONSES_KEY", KEY)
    config = OpenAIResponsesRelayConfig(
        kind="openai-responses",
        base_url="https://api.test/v1",
        api_key_env="TEST_RESPONSES_KEY",
        image_model="gpt-image-1.5",
        max_retries=1,
    )
    return OpenAIResponsesRelay("oa", config, read_secret_env)


def request(**changes: Any) -> ImageRequest:
    values: dict[str, Any] = {
        "prompt": "a fox",
        "size": Size(1024, 1024),
        "n": 1,
        "output_format": ImageFormat.PNG,
    }
    values.update(changes)
    return ImageRequest(**values)


async def run(
    relay: OpenAIResponsesRelay, tmp_path: Path, body: bytes, req: ImageRequest | None = None
) -> tuple[list[Any], list[str], respx.Route]:
    messages: list[str] = []

    async def progress(fraction: float | None, message: str) -> None:
        messages.append(message)

    blobs = FileBlobStore(tmp_path, max_bytes=10**7)
    async with respx.mock(base_url="https://api.test/v1") as mock:
        route = mock.post("/responses").mock(
            return_value=httpx.Response(
                200, content=body, headers={"content-type": "text/event-stream"}
            )
        )
        images = await relay.generate(req or request(), blobs.stage, progress)
    return images, messages, route


async def test_happy_path(relay: OpenAIResponsesRelay, tmp_path: Path) -> None:
    body = sse(
        {"type": "response.image_generation_call.in_progress"},
        {"type": "response.image_generation_call.generating"},
        {"type": "response.image_generation_call.partial_image", "partial_image_b64": "AAAA"},
        done(png(), revised_prompt="a red fox", size="1024x1024"),
        {"type": "response.completed", "response": {"usage": {"total_tokens": 5}}},
    )
    images, messages, route = await run(
        relay,
        tmp_path,
        body,
        request(quality="high", partial_images=1, compression=50, output_format=ImageFormat.WEBP),
    )
    (image,) = images
    assert image.staged.path.read_bytes() == png()
    assert image.revised_prompt == "a red fox"
    assert image.usage == {"usage": {"total_tokens": 5}}
    assert messages == [
        "upstream accepted the request",
        "generating",
        "partial image 1",
        "image received",
    ]
    sent = json.loads(route.calls[0].request.content)
    assert route.calls[0].request.headers["authorization"] == f"Bearer {KEY}"
    assert sent["tools"][0] == {
        "type": "image_generation",
        "size": "1024x1024",
        "output_format": "webp",
        "model": "gpt-image-1.5",
        "quality": "high",
        "output_compression": 50,
        "partial_images": 1,
    }
    assert sent["tool_choice"] == {"type": "image_generation"}
    assert sent["store"] is False


async def test_edit_request_carries_images_and_mask(
    relay: OpenAIResponsesRelay, tmp_path: Path
) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(png("blue"))
    mask = tmp_path / "mask.png"
    mask.write_bytes(png("black"))
    inputs = (InputImage(source, ImageFormat.PNG, 32, 32),)
    req = request(
        images=inputs, mask=InputImage(mask, ImageFormat.PNG, 32, 32), input_fidelity="high"
    )
    _, _, route = await run(relay, tmp_path, sse(done(png())), req)
    sent = json.loads(route.calls[0].request.content)
    image_url = sent["input"][0]["content"][1]["image_url"]
    assert image_url == "data:image/png;base64," + base64.b64encode(png("blue")).decode()
    assert sent["tools"][0]["input_image_mask"]["image_url"].startswith("data:image/png;base64,")
    assert sent["tools"][0]["input_fidelity"] == "high"


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        (sse({"type": "error", "message": "boom"}), RelayError, "failed: boom"),
        (
            sse({"type": "response.failed", "response": {"error": {"message": "x"}}}),
            RelayError,
            "failed: x",
        ),
        (
            sse(
                done(png(), status="failed", error={"code": "moderation_blocked", "message": "no"})
            ),
            ContentRefused,
            "refused",
        ),
        (
            sse({"type": "response.image_generation_call.generating"}),
            RelayError,
            "ended without a final image",
        ),
        (sse(done(png()))[:-30], RelayError, "cut off"),
        (b"data: not json\n\n", RelayError, "not JSON"),
        (
            sse(
                {
                    "type": "response.output_item.done",
                    "item": {"type": "image_generation_call", "result": "###"},
                }
            ),
            RelayError,
            "damaged base64",
        ),
    ],
)
async def test_failures_leave_nothing(
    relay: OpenAIResponsesRelay, tmp_path: Path, body: bytes, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        await run(relay, tmp_path, body)
    assert list((tmp_path / "tmp").iterdir()) == []


async def test_compression_is_not_sent_for_png(relay: OpenAIResponsesRelay, tmp_path: Path) -> None:
    _, _, route = await run(relay, tmp_path, sse(done(png())), request(compression=80))
    assert "output_compression" not in json.loads(route.calls[0].request.content)["tools"][0]


async def test_an_error_event_that_echoes_the_key_does_not_pass_it_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A gateway key matches none of the well-known key shapes: only the relay's own
    # secrets list can catch it.
    key = "gw-live-ABCDEF0123456789xyz"
    monkeypatch.setenv("GATEWAY_KEY", key)
    config = OpenAIResponsesRelayConfig(
        kind="openai-responses", base_url="https://api.test/v1", api_key_env="GATEWAY_KEY"
    )
    body = sse({"type": "error", "message": f"invalid api key {key} for project"})
    with pytest.raises(RelayError, match="invalid api key") as failure:
        await run(OpenAIResponsesRelay("gw", config, read_secret_env), tmp_path, body)
    assert key not in str(failure.value)
