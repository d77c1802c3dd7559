import base64
import io
import json
import socket
import threading
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import respx
from PIL import Image

from imagegate.config import read_secret_env
from imagegate.core.errors import ConfigError, ContentRefused, RelayError
from imagegate.core.images import ImageFormat
from imagegate.core.staging import StagedBlob
from imagegate.relays.base import ImageRequest, InputImage, Size
from imagegate.relays.openrouter import OpenRouterRelay, OpenRouterRelayConfig
from imagegate.storage.files import FileBlobStore

KEY = "sk-or-v1-TESTKEY0123456789abcdef"
BASE = "https://openrouter.test/api/v1"
ENDPOINT = f"{BASE}/chat/completions"
MODEL = "google/gemini-2.5-flash-image"


def png(color: str = "red", size: tuple[int, int] = (32, 24), fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def completion(
    *urls: str,
    content: str | None = "",
    finish: str = "stop",
    native: str = "STOP",
    **extra: Any,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if urls:
        message["images"] = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return {
        "id": "gen-1",
        "provider": "Google AI Studio",
        "model": MODEL,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "finish_reason": finish,
                "native_finish_reason": native,
                "message": message,
            }
        ],
        **extra,
    }


class Progress:
    def __init__(self) -> None:
        self.messages: list[tuple[float | None, str]] = []

    async def __call__(self, fraction: float | None, message: str) -> None:
        self.messages.append((fraction, message))


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Image-link hosts resolve to a public address unless a test says otherwise; no test
    touches the network."""
    answers: dict[str, str] = {}

    async def getaddrinfo(host: str, port: int, **_: object) -> list[object]:
        address = answers.get(host, "93.184.215.14")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(anyio, "getaddrinfo", getaddrinfo)
    return answers


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(assert_all_called=False)


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path, max_bytes=10**7)


def make_relay(
    router: respx.Router, monkeypatch: pytest.MonkeyPatch, **overrides: Any
) -> OpenRouterRelay:
    monkeypatch.setenv("TEST_OPENROUTER_KEY", KEY)
    settings: dict[str, Any] = {
        "kind": "openrouter",
        "base_url": BASE,
        "api_key_env": "TEST_OPENROUTER_KEY",
        "max_retries": 3,
        "retry_budget_seconds": 5,
        **overrides,
    }
    client = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
    return OpenRouterRelay("or", OpenRouterRelayConfig(**settings), read_secret_env, client)


@pytest.fixture
def relay(router: respx.Router, monkeypatch: pytest.MonkeyPatch) -> OpenRouterRelay:
    return make_relay(router, monkeypatch)


def leftovers(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "tmp").iterdir())


def sent(route: respx.Route, index: int = 0) -> Any:
    return json.loads(route.calls[index].request.content)


def simple(n: int = 1) -> ImageRequest:
    return ImageRequest("x", Size(1024, 1024), n, ImageFormat.PNG)


async def test_generates_with_the_exact_request_and_records_usage_with_cost(
    relay: OpenRouterRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    picture = png()
    usage = {"prompt_tokens": 9, "completion_tokens": 1290, "total_tokens": 1299, "cost": 0.0387}
    route = router.post(ENDPOINT).respond(
        json=completion(data_url(picture), content="A fox.", usage=usage)
    )
    progress = Progress()

    request = ImageRequest(
        "a fox in snow", Size(1024, 1536), 1, ImageFormat.PNG, user="hash-of-subject"
    )
    [image] = await relay.generate(request, blobs.stage, progress)

    assert sent(route) == {
        "model": MODEL,
        "modalities": ["image", "text"],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a fox in snow"}]}],
        "image_config": {"aspect_ratio": "2:3"},
        "stream": False,
        "user": "hash-of-subject",
    }
    http_request = route.calls[0].request
    assert http_request.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in str(http_request.url)
    assert image.staged.path.read_bytes() == picture
    assert image.usage == usage
    assert image.usage["cost"] == 0.0387
    assert image.params == {"aspect_ratio": "2:3", "provider": "Google AI Studio"}
    assert image.revised_prompt is None
    assert progress.messages == [(0.0, "generating"), (1.0, "image received")]


async def test_without_a_user_no_user_field_is_sent(
    relay: OpenRouterRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    route = router.post(ENDPOINT).respond(json=completion(data_url(png())))
    await relay.generate(simple(), blobs.stage, Progress())
    assert "user" not in sent(route)


async def test_edit_sends_reference_images_as_data_urls_of_the_files(
    relay: OpenRouterRelay, router: respx.Router, blobs: FileBlobStore, tmp_path: Path
) -> None:
    first, second = tmp_path / "first.png", tmp_path / "second.webp"
    first.write_bytes(png("blue", (60, 40)))
    second.write_bytes(png("green", (40, 60), fmt="WEBP"))
    inputs = (
        InputImage(first, ImageFormat.PNG, 60, 40),
        InputImage(second, ImageFormat.WEBP, 40, 60),
    )
    result = png("yellow")
    route = router.post(ENDPOINT).respond(json=completion(data_url(result)))

    request = ImageRequest("make it night", Size(60, 40), 1, ImageFormat.PNG, images=inputs)
    [image] = await relay.generate(request, blobs.stage, Progress())

    assert sent(route)["messages"][0]["content"] == [
        {"type": "text", "text": "make it night"},
        {"type": "image_url", "image_url": {"url": data_url(first.read_bytes())}},
        {
            "type": "image_url",
            "image_url": {"url": data_url(second.read_bytes(), "image/webp")},
        },
    ]
    assert sent(route)["image_config"] == {"aspect_ratio": "3:2"}
    assert image.staged.path.read_bytes() == result


async def test_https_image_link_is_fetched_without_the_key(
    relay: OpenRouterRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    picture = png("orange")
    router.post(ENDPOINT).respond(json=completion("https://cdn.images.test/out/1.png"))
    fetch = router.get("https://cdn.images.test/out/1.png").respond(
        content=picture, headers={"content-type": "image/png"}
    )
    [image] = await relay.generate(simple(), blobs.stage, Progress())
    assert image.staged.path.read_bytes() == picture
    assert fetch.call_count == 1
    headers = fetch.calls[0].request.headers
    assert "authorization" not in headers
    assert KEY not in str(headers)


async def test_a_fetched_image_is_written_and_checked_in_a_worker_thread(
    relay: OpenRouterRelay,
    router: respx.Router,
    blobs: FileBlobStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not on the event loop (this test's thread), and checked as a PNG as it is
    written, so that the service's inspection makes no second pass over it."""
    writers: set[bool] = set()
    write = StagedBlob.write

    def recorded(staged: StagedBlob, chunk: bytes) -> None:
        writers.add(threading.current_thread() is threading.main_thread())
        write(staged, chunk)

    def stage() -> StagedBlob:
        staged = blobs.stage()
        staged.pixel_cap = 10_000  # as the service sets it: the check runs under one
        return staged

    monkeypatch.setattr(StagedBlob, "write", recorded)
    picture = png("orange")
    router.post(ENDPOINT).respond(json=completion("https://cdn.images.test/out/1.png"))
    router.get("https://cdn.images.test/out/1.png").respond(content=picture)
    [image] = await relay.generate(simple(), stage, Progress())
    assert image.staged.path.read_bytes() == picture
    assert writers == {False}
    assert image.staged.png_whole


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.images.test/1.png",
        "ftp://cdn.images.test/1.png",
        "file:///etc/passwd",
        "https://localhost/1.png",
        "https://127.0.0.1/1.png",
        "https://[::1]/1.png",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.5/1.png",
        "https://user:pass@cdn.images.test/1.png",
    ],
)
async def test_other_image_links_are_never_fetched(
    relay: OpenRouterRelay, router: respx.Router, blobs: FileBlobStore, tmp_path: Path, url: str
) -> None:
    router.post(ENDPOINT).respond(json=completion(url))
    anything_else = router.route(method="GET").respond(content=png())
    with pytest.raises(RelayError, match="image URL that is not allowed"):
        await relay.generate(simple(), blobs.stage, Progress())
    assert not anything_else.called
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(404, text="gone"),
        httpx.Response(302, headers={"location": "https://127.0.0.1/secret"}),
    ],
)
async def test_image_link_that_fails_is_a_relay_error(
    relay: OpenRouterRelay,
    router: respx.Router,
    blobs: FileBlobStore,
    tmp_path: Path,
    response: httpx.Response,
) -> None:
    router.post(ENDPOINT).respond(json=completion("https://cdn.images.test/1.png"))
    router.get("https://cdn.images.test/1.png").mock(return_value=response)
    redirected = router.get("https://127.0.0.1/secret").respond(content=png())
    with pytest.raises(RelayError, match=rf"could not be fetched \(HTTP {response.status_code}\)"):
        await relay.generate(simple(), blobs.stage, Progress())
    assert not redirected.called
    assert leftovers(tmp_path) == []


async def test_image_link_larger_than_the_cap_is_a_relay_error(
    router: respx.Router, monkeypatch: pytest.MonkeyPatch, blobs: FileBlobStore, tmp_path: Path
) -> None:
    relay = make_relay(router, monkeypatch, max_response_bytes=4096)
    router.post(ENDPOINT).respond(json=completion("https://cdn.images.test/big.png"))
    router.get("https://cdn.images.test/big.png").respond(content=b"\x89PNG" + b"\0" * 10_000)
    with pytest.raises(RelayError, match="exceeds 4096 bytes"):
        await relay.generate(simple(), blobs.stage, Progress())
    assert leftovers(tmp_path) == []


async def test_finish_reason_error_with_http_200_is_a_relay_error(
    relay: OpenRouterRelay, router: respx.Router, blobs: FileBlobStore, tmp_path: Path
) -> None:
    body = completion(finish="error", native="ERROR")
    body["choices"][0]["error"] = {"code": 502, "message": "Provider returned error"}
    route = router.post(ENDPOINT).respond(json=body)
    with pytest.raises(RelayError, match="failed: Provider returned error") as caught:
        await relay.generate(simple(), blobs.stage, Progress())
    assert not isinstance(caught.value, ContentRefused)
    assert route.call_count == 1  # the model had started: not re-sent
    assert leftovers(tmp_path) == []


async def test_error_object_with_http_200_is_a_relay_error(
    relay: OpenRouterRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    router.post(ENDPOINT).respond(
        json={"error": {"code": 502, "message": f"upstream said no to {KEY}"}}
    )
    with pytest.raises(RelayError, match="upstream said no") as caught:
        await relay.generate(simple(), blobs.stage, Progress())
    assert KEY not in str(caught.value)


async def test_moderation_error_object_is_content_refused(
    relay: OpenRouterRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    error = {
        "code": 403,
        "message": "Input was flagged",
        "metadata": {"reasons": ["violence"], "flagged_input": "..."},
    }
    router.post(ENDPOINT).respond(json={"error": error})
    with pytest.raises(ContentRefused, match="Input was flagged"):
        await relay.generate(simple(), blobs.stage, Progress())


@pytest.mark.parametrize(
    ("finish", "native"), [("content_filter", "IMAGE_SAFETY"), ("stop", "IMAGE_SAFETY")]
)
async def test_content_filter_is_content_refused(
    relay: OpenRouterRelay,
    router: respx.Router,
    blobs: FileBlobStore,
    tmp_path: Path,
    finish: str,
    native: str,
) -> None:
    router.post(ENDPOINT).respond(json=completion(finish=finish, native=native))
    with pytest.raises(ContentRefused, match="refused the prompt or image"):
        await relay.generate(simple(), blobs.stage, Progress())
    assert leftovers(tmp_path) == []


async def test_no_image_is_a_relay_error_quoting_the_model(
    relay: OpenRouterRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    router.post(ENDPOINT).respond(json=completion(content="I can't draw that, sorry."))
    with pytest.raises(RelayError, match=r"returned no image \(finish reason STOP\)") as caught:
        await relay.generate(simple(), blobs.stage, Progress())
    assert not isinstance(caught.value, ContentRefused)
    assert "the model said: I can't draw that, sorry." in str(caught.value)


async def test_answer_without_choices_is_a_relay_error(
    relay: OpenRouterRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    router.post(ENDPOINT).respond(json={"id": "gen-1", "choices": []})
    with pytest.raises(RelayError, match="answered without a result"):
        await relay.generate(simple(), blobs.stage, Progress())


async def test_whitespace_keep_alives_before_the_json_are_fine(
    relay: OpenRouterRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    picture = png()
    body = b"\n\n\n" + json.dumps(completion(data_url(picture))).encode()
    router.post(ENDPOINT).respond(content=body, headers={"content-type": "application/json"})
    [image] = await relay.generate(simple(), blobs.stage, Progress())
    assert image.staged.path.read_bytes() == picture


async def test_n_images_are_n_sequential_calls(
    relay: OpenRouterRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    pictures = [png("red"), png("green"), png("blue")]
    route = router.post(ENDPOINT).mock(
        side_effect=[
            httpx.Response(200, json=completion(data_url(p), usage={"cost": 0.04}))
            for p in pictures
        ]
    )
    progress = Progress()
    images = await relay.generate(simple(3), blobs.stage, progress)
    assert route.call_count == 3
    assert [image.staged.path.read_bytes() for image in images] == pictures
    assert [image.usage for image in images] == [{"cost": 0.04}] * 3
    assert [message for _, message in progress.messages] == [
        "generating image 1 of 3",
        "received image 1 of 3",
        "generating image 2 of 3",
        "received image 2 of 3",
        "generating image 3 of 3",
        "received image 3 of 3",
    ]


async def test_a_failed_later_call_discards_the_images_already_made(
    relay: OpenRouterRelay, router: respx.Router, blobs: FileBlobStore, tmp_path: Path
) -> None:
    router.post(ENDPOINT).mock(
        side_effect=[
            httpx.Response(200, json=completion(data_url(png()))),
            httpx.Response(400, json={"error": {"code": 400, "message": "bad aspect ratio"}}),
        ]
    )
    with pytest.raises(RelayError, match="bad aspect ratio"):
        await relay.generate(simple(2), blobs.stage, Progress())
    assert leftovers(tmp_path) == []


async def test_rate_limit_is_retried(
    relay: OpenRouterRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    picture = png()
    route = router.post(ENDPOINT).mock(
        side_effect=[
            httpx.Response(
                429,
                json={"error": {"code": 429, "message": "Rate limit exceeded"}},
                headers={"Retry-After": "0"},
            ),
            httpx.Response(200, json=completion(data_url(picture))),
        ]
    )
    [image] = await relay.generate(simple(), blobs.stage, Progress())
    assert route.call_count == 2
    assert image.staged.path.read_bytes() == picture


async def test_server_error_is_retried(
    relay: OpenRouterRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    route = router.post(ENDPOINT).mock(
        side_effect=[
            httpx.Response(502, text="<html>Bad gateway</html>", headers={"Retry-After": "0"}),
            httpx.Response(200, json=completion(data_url(png()))),
        ]
    )
    assert len(await relay.generate(simple(), blobs.stage, Progress())) == 1
    assert route.call_count == 2


async def test_rejected_key_is_a_relay_error_without_the_key(
    relay: OpenRouterRelay, router: respx.Router, blobs: FileBlobStore
) -> None:
    body = {"error": {"code": 401, "message": f"No auth credentials found for {KEY}"}}
    route = router.post(ENDPOINT).respond(401, json=body)
    with pytest.raises(RelayError, match="rejected its credentials") as caught:
        await relay.generate(simple(), blobs.stage, Progress())
    assert KEY not in str(caught.value)
    assert route.call_count == 1


async def test_damaged_base64_is_a_relay_error_and_leaves_nothing(
    relay: OpenRouterRelay, router: respx.Router, blobs: FileBlobStore, tmp_path: Path
) -> None:
    router.post(ENDPOINT).respond(json=completion("data:image/png;base64,iVBOR*garbage*"))
    with pytest.raises(RelayError, match="damaged base64"):
        await relay.generate(simple(), blobs.stage, Progress())
    assert leftovers(tmp_path) == []


def test_missing_key_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_OPENROUTER_KEY", raising=False)
    config = OpenRouterRelayConfig(kind="openrouter", api_key_env="TEST_OPENROUTER_KEY")
    with pytest.raises(ConfigError, match="TEST_OPENROUTER_KEY is not set"):
        OpenRouterRelay("or", config, read_secret_env)


def test_capabilities(relay: OpenRouterRelay) -> None:
    caps = relay.capabilities
    assert caps.output_formats == (ImageFormat.PNG,)
    assert caps.sizes is None
    assert (caps.edit, caps.max_inputs, caps.mask, caps.seed, caps.partial_images) == (
        True,
        3,
        False,
        False,
        0,
    )


async def test_a_name_that_resolves_to_a_private_address_is_refused(
    relay: OpenRouterRelay, router: respx.Router, blobs: FileBlobStore, dns: dict[str, str]
) -> None:
    dns["cdn.sneaky.test"] = "10.0.0.5"
    router.post(ENDPOINT).respond(json=completion("https://cdn.sneaky.test/a.png"))
    fetched = router.get("https://cdn.sneaky.test/a.png").respond(content=png())
    with pytest.raises(RelayError, match="image URL that is not allowed"):
        await relay.generate(simple(), blobs.stage, Progress())
    assert not fetched.called
