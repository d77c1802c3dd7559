import base64
import io
import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import respx
from PIL import Image

from imagegate.config import read_secret_env
from imagegate.core.errors import ConfigError, ContentRefused, InvalidRequest, RelayError
from imagegate.core.images import ImageFormat
from imagegate.relays.base import ImageRequest, InputImage, Size
from imagegate.relays.gemini import GeminiRelay, GeminiRelayConfig
from imagegate.storage.files import FileBlobStore

KEY = "AIzaSyTESTKEY-0123456789abcdefghijk"
BASE = "https://gemini.test/v1beta"
ENDPOINT = f"{BASE}/models/gemini-2.5-flash-image:generateContent"


def png(color: str = "red", size: tuple[int, int] = (32, 24), fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


def answer(*parts: dict[str, Any], finish: str = "STOP", **extra: Any) -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": list(parts)}, "finishReason": finish}
        ],
        "modelVersion": "gemini-2.5-flash-image",
        **extra,
    }


def image_part(data: bytes, mime: str = "image/png") -> dict[str, Any]:
    return {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}}


class Progress:
    def __init__(self) -> None:
        self.messages: list[tuple[float | None, str]] = []

    async def __call__(self, fraction: float | None, message: str) -> None:
        self.messages.append((fraction, message))


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(assert_all_called=False)


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path, max_bytes=10**7)


def make_relay(
    router: respx.Router, monkeypatch: pytest.MonkeyPatch, **overrides: Any
) -> GeminiRelay:
    monkeypatch.setenv("TEST_GEMINI_KEY", KEY)
    settings: dict[str, Any] = {
        "kind": "gemini",
        "base_url": BASE,
        "api_key_env": "TEST_GEMINI_KEY",
        "max_retries": 3,
        "retry_budget_seconds": 5,
        **overrides,
    }
    client = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
    return GeminiRelay("gem", GeminiRelayConfig(**settings), read_secret_env, client)


@pytest.fixture
def relay(router: respx.Router, monkeypatch: pytest.MonkeyPatch) -> GeminiRelay:
    return make_relay(router, monkeypatch)


def leftovers(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "tmp").iterdir())


def sent(route: respx.Route, index: int = 0) -> Any:
    return json.loads(route.calls[index].request.content)


async def test_generates_with_the_exact_request_and_decodes_the_image(
    relay: GeminiRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    picture = png()
    usage = {"promptTokenCount": 7, "candidatesTokenCount": 1290, "totalTokenCount": 1297}
    route = router.post(ENDPOINT).respond(
        json=answer({"text": "Here is a lighthouse."}, image_part(picture), usageMetadata=usage)
    )
    progress = Progress()

    request = ImageRequest("a lighthouse at dusk", Size(1920, 1080), 1, ImageFormat.PNG)
    images = await relay.generate(request, blobs.stage, progress)

    assert sent(route) == {
        "contents": [{"role": "user", "parts": [{"text": "a lighthouse at dusk"}]}],
        "generationConfig": {
            "responseModalities": ["TEXT", "IMAGE"],
            "imageConfig": {"aspectRatio": "16:9"},
        },
    }
    http_request = route.calls[0].request
    assert http_request.headers["x-goog-api-key"] == KEY
    assert KEY not in str(http_request.url)
    assert not http_request.url.params
    assert "authorization" not in http_request.headers
    [image] = images
    assert image.staged.path.read_bytes() == picture
    assert image.staged.sha256
    assert image.usage == usage
    assert image.params == {"aspect_ratio": "16:9", "model_version": "gemini-2.5-flash-image"}
    assert image.revised_prompt is None  # the model's commentary is not a revised prompt
    assert progress.messages == [(0.0, "generating"), (1.0, "image received")]


async def test_edit_inlines_reference_images_as_base64_of_the_files(
    router: respx.Router, monkeypatch: pytest.MonkeyPatch, blobs: FileBlobStore, tmp_path: Path
) -> None:
    relay = make_relay(router, monkeypatch, image_size="2K")
    first, second = tmp_path / "first.png", tmp_path / "second.jpg"
    first.write_bytes(png("blue", (60, 40)))
    second.write_bytes(png("green", (40, 60), fmt="JPEG"))
    inputs = (
        InputImage(first, ImageFormat.PNG, 60, 40),
        InputImage(second, ImageFormat.JPEG, 40, 60),
    )
    result = png("yellow")
    route = router.post(ENDPOINT).respond(json=answer(image_part(result)))

    request = ImageRequest(
        "put the cat in the garden", Size(1536, 1024), 1, ImageFormat.PNG, images=inputs
    )
    [image] = await relay.generate(request, blobs.stage, Progress())

    parts = sent(route)["contents"][0]["parts"]
    assert parts == [
        {"text": "put the cat in the garden"},
        {
            "inlineData": {
                "mimeType": "image/png",
                "data": base64.b64encode(first.read_bytes()).decode(),
            }
        },
        {
            "inlineData": {
                "mimeType": "image/jpeg",
                "data": base64.b64encode(second.read_bytes()).decode(),
            }
        },
    ]
    assert sent(route)["generationConfig"]["imageConfig"] == {
        "aspectRatio": "3:2",
        "imageSize": "2K",
    }
    assert image.staged.path.read_bytes() == result
    assert image.params["image_size"] == "2K"


async def test_gif_inputs_are_refused_before_any_call(
    relay: GeminiRelay, router: respx.Router, blobs: FileBlobStore, tmp_path: Path
) -> None:
    gif = tmp_path / "in.gif"
    gif.write_bytes(png(fmt="GIF"))
    route = router.post(ENDPOINT).respond(json=answer(image_part(png())))
    request = ImageRequest(
        "x",
        Size(1024, 1024),
        1,
        ImageFormat.PNG,
        images=(InputImage(gif, ImageFormat.GIF, 32, 24),),
    )
    with pytest.raises(InvalidRequest, match="png, jpeg, webp input images, not gif"):
        await relay.generate(request, blobs.stage, Progress())
    assert not route.called


async def test_thought_parts_are_skipped(
    relay: GeminiRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    draft, final = png("gray"), png("purple")
    router.post(ENDPOINT).respond(
        json=answer(
            {"text": "Planning the composition", "thought": True},
            {**image_part(draft), "thought": True},
            image_part(final),
        )
    )
    request = ImageRequest("x", Size(1024, 1024), 1, ImageFormat.PNG)
    [image] = await relay.generate(request, blobs.stage, Progress())
    assert image.staged.path.read_bytes() == final


async def test_n_images_are_n_sequential_calls_with_progress_for_each(
    relay: GeminiRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    pictures = [png("red"), png("green")]
    route = router.post(ENDPOINT).mock(
        side_effect=[httpx.Response(200, json=answer(image_part(p))) for p in pictures]
    )
    progress = Progress()
    request = ImageRequest("x", Size(1024, 1024), 2, ImageFormat.PNG)

    images = await relay.generate(request, blobs.stage, progress)

    assert route.call_count == 2
    assert [image.staged.path.read_bytes() for image in images] == pictures
    assert progress.messages == [
        (0.0, "generating image 1 of 2"),
        (0.5, "received image 1 of 2"),
        (0.5, "generating image 2 of 2"),
        (1.0, "received image 2 of 2"),
    ]


async def test_a_failed_later_call_discards_the_images_already_made(
    relay: GeminiRelay, router: respx.Router, blobs: FileBlobStore, tmp_path: Path
) -> None:
    router.post(ENDPOINT).mock(
        side_effect=[
            httpx.Response(200, json=answer(image_part(png()))),
            httpx.Response(200, json=answer(finish="IMAGE_SAFETY")),
        ]
    )
    request = ImageRequest("x", Size(1024, 1024), 2, ImageFormat.PNG)
    with pytest.raises(ContentRefused):
        await relay.generate(request, blobs.stage, Progress())
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("IMAGE_SAFETY", "safety filters blocked the image"),
        ("IMAGE_PROHIBITED_CONTENT", "prohibited content"),
        ("SAFETY", "safety filters blocked the result"),
        ("PROHIBITED_CONTENT", "prohibited content"),
        ("RECITATION", "reproduce existing"),
    ],
)
async def test_safety_finish_reasons_are_content_refused(
    relay: GeminiRelay,
    router: respx.Router,
    blobs: FileBlobStore,
    tmp_path: Path,
    finish: str,
    reason: str,
) -> None:
    router.post(ENDPOINT).respond(json=answer(finish=finish))
    request = ImageRequest("x", Size(1024, 1024), 1, ImageFormat.PNG)
    with pytest.raises(ContentRefused, match=reason):
        await relay.generate(request, blobs.stage, Progress())
    assert leftovers(tmp_path) == []


async def test_blocked_prompt_is_content_refused(
    relay: GeminiRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    router.post(ENDPOINT).respond(json={"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
    request = ImageRequest("x", Size(1024, 1024), 1, ImageFormat.PNG)
    with pytest.raises(ContentRefused, match="prompt asks for prohibited content"):
        await relay.generate(request, blobs.stage, Progress())


async def test_prompt_blocked_for_another_reason_is_a_relay_error(
    relay: GeminiRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    router.post(ENDPOINT).respond(json={"promptFeedback": {"blockReason": "OTHER"}})
    request = ImageRequest("x", Size(1024, 1024), 1, ImageFormat.PNG)
    with pytest.raises(RelayError, match=r"blocked the prompt \(OTHER\)") as caught:
        await relay.generate(request, blobs.stage, Progress())
    assert not isinstance(caught.value, ContentRefused)


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("NO_IMAGE", "made no image; try describing"),
        ("STOP", "returned no image \\(finish reason STOP\\)"),
    ],
)
async def test_no_image_is_a_relay_error_quoting_the_model(
    relay: GeminiRelay, router: respx.Router, blobs: FileBlobStore, finish: str, expected: str
) -> None:
    router.post(ENDPOINT).respond(
        json=answer({"text": "I can only describe\n that scene."}, finish=finish)
    )
    request = ImageRequest("x", Size(1024, 1024), 1, ImageFormat.PNG)
    with pytest.raises(RelayError, match=expected) as caught:
        await relay.generate(request, blobs.stage, Progress())
    assert not isinstance(caught.value, ContentRefused)
    assert "the model said: I can only describe that scene." in str(caught.value)


async def test_rate_limit_is_retried(
    relay: GeminiRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    exhausted = {
        "error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}
    }
    picture = png()
    route = router.post(ENDPOINT).mock(
        side_effect=[
            httpx.Response(429, json=exhausted, headers={"Retry-After": "0"}),
            httpx.Response(200, json=answer(image_part(picture))),
        ]
    )
    request = ImageRequest("x", Size(1024, 1024), 1, ImageFormat.PNG)
    [image] = await relay.generate(request, blobs.stage, Progress())
    assert route.call_count == 2
    assert image.staged.path.read_bytes() == picture
    assert sent(route, 0) == sent(route, 1)  # the streamed body is sent whole again


async def test_server_error_is_retried(
    relay: GeminiRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    failure = {"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}}
    route = router.post(ENDPOINT).mock(
        side_effect=[
            httpx.Response(500, json=failure, headers={"Retry-After": "0"}),
            httpx.Response(200, json=answer(image_part(png()))),
        ]
    )
    request = ImageRequest("x", Size(1024, 1024), 1, ImageFormat.PNG)
    assert len(await relay.generate(request, blobs.stage, Progress())) == 1
    assert route.call_count == 2


async def test_persistent_rate_limit_gives_up_after_max_retries(
    relay: GeminiRelay, router: respx.Router, blobs: FileBlobStore, tmp_path: Path
) -> None:
    route = router.post(ENDPOINT).respond(
        429, json={"error": {"code": 429, "message": "slow down"}}, headers={"Retry-After": "0"}
    )
    request = ImageRequest("x", Size(1024, 1024), 1, ImageFormat.PNG)
    with pytest.raises(RelayError, match="rate limited"):
        await relay.generate(request, blobs.stage, Progress())
    assert route.call_count == 3
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("status", [400, 401, 403])
async def test_rejected_key_is_a_relay_error_without_the_key(
    relay: GeminiRelay, router: respx.Router, blobs: FileBlobStore, status: int
) -> None:
    body = {"error": {"code": status, "message": f"API key {KEY} not valid", "status": "X"}}
    route = router.post(ENDPOINT).respond(status, json=body)
    request = ImageRequest("x", Size(1024, 1024), 1, ImageFormat.PNG)
    with pytest.raises(RelayError) as caught:
        await relay.generate(request, blobs.stage, Progress())
    assert KEY not in str(caught.value)
    assert route.call_count == 1


async def test_damaged_base64_is_a_relay_error_and_leaves_nothing(
    relay: GeminiRelay, router: respx.Router, blobs: FileBlobStore, tmp_path: Path
) -> None:
    broken = {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo*not*base64!"}}
    router.post(ENDPOINT).respond(json=answer(broken))
    request = ImageRequest("x", Size(1024, 1024), 1, ImageFormat.PNG)
    with pytest.raises(RelayError, match="damaged base64"):
        await relay.generate(request, blobs.stage, Progress())
    assert leftovers(tmp_path) == []


async def test_answer_that_is_not_json_is_a_relay_error(
    relay: GeminiRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    router.post(ENDPOINT).respond(200, text="<html>proxy error</html>")
    request = ImageRequest("x", Size(1024, 1024), 1, ImageFormat.PNG)
    with pytest.raises(RelayError, match="not JSON"):
        await relay.generate(request, blobs.stage, Progress())


async def test_total_timeout_is_a_relay_error(
    router: respx.Router, monkeypatch: pytest.MonkeyPatch, blobs: FileBlobStore, tmp_path: Path
) -> None:
    relay = make_relay(router, monkeypatch, total_timeout=0.05)

    async def slow(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(1)
        return httpx.Response(200, json=answer(image_part(png())))

    router.post(ENDPOINT).mock(side_effect=slow)
    request = ImageRequest("x", Size(1024, 1024), 1, ImageFormat.PNG)
    with pytest.raises(RelayError, match=r"did not finish within 0\.05 s"):
        await relay.generate(request, blobs.stage, Progress())
    assert leftovers(tmp_path) == []


def test_missing_key_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_GEMINI_KEY", raising=False)
    config = GeminiRelayConfig(kind="gemini", api_key_env="TEST_GEMINI_KEY")
    with pytest.raises(ConfigError, match="TEST_GEMINI_KEY is not set"):
        GeminiRelay("gem", config, read_secret_env)


def test_model_name_must_be_a_plain_gemini_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_GEMINI_KEY", KEY)
    config = GeminiRelayConfig(kind="gemini", api_key_env="TEST_GEMINI_KEY", model="../x?y")
    with pytest.raises(ConfigError, match=r"relays\.gem\.model"):
        GeminiRelay("gem", config, read_secret_env)


def test_capabilities_describe_an_aspect_ratio_relay(relay: GeminiRelay) -> None:
    caps = relay.capabilities
    assert caps.output_formats == (ImageFormat.PNG,)
    assert caps.sizes is None
    assert (caps.min_side, caps.max_side) == (256, 4096)
    assert (caps.edit, caps.max_inputs, caps.mask, caps.seed) == (True, 3, False, False)
    assert caps.qualities == ()
    assert caps.backgrounds == ()
    with pytest.raises(InvalidRequest, match="cannot produce jpeg"):
        caps.check(ImageRequest("x", Size(1024, 1024), 1, ImageFormat.JPEG), relay.name)
