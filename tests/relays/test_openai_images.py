import base64
import io
import json
import random
import socket
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import respx
from PIL import Image

from imagegate.config import read_secret_env
from imagegate.core.errors import ContentRefused, InvalidRequest, RelayError
from imagegate.core.images import ImageFormat
from imagegate.relays.base import ImageRequest, InputImage, Size
from imagegate.relays.openai_images import OpenAIImagesRelay, OpenAIImagesRelayConfig
from imagegate.storage.files import FileBlobStore

BASE = "https://api.test/v1"
LOCAL_BASE = "http://127.0.0.1:8931/v1"
KEY = "sk-test-secret-value-123456"
USER = "0123456789abcdef0123456789abcdef"


def png(color: str = "red", size: tuple[int, int] = (16, 16), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, "PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(
        f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events
    )


def sse_response(body: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)


def make_relay(base_url: str = BASE, **options: Any) -> OpenAIImagesRelay:
    config = OpenAIImagesRelayConfig(
        kind="openai-images",
        base_url=base_url,
        api_key_env="TEST_OPENAI_KEY",
        max_retries=3,
        retry_budget_seconds=5,
        **options,
    )
    return OpenAIImagesRelay("images", config, read_secret_env)


def make_request(**options: Any) -> ImageRequest:
    fields: dict[str, Any] = {
        "prompt": "a red square",
        "size": Size(1024, 1024),
        "n": 1,
        "output_format": ImageFormat.PNG,
        "user": USER,
    }
    fields.update(options)
    return ImageRequest(**fields)


def input_image(tmp_path: Path, name: str, color: str, mode: str = "RGB") -> InputImage:
    path = tmp_path / name
    path.write_bytes(png(color, (32, 32), mode))
    return InputImage(path, ImageFormat.PNG, 32, 32)


class Progress:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.fractions: list[float | None] = []

    async def __call__(self, fraction: float | None, message: str) -> None:
        self.fractions.append(fraction)
        self.messages.append(message)


def sent_json(route: respx.Route, index: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls[index].request.content)
    return body


def form_parts(request: httpx.Request) -> list[EmailMessage]:
    """The parts of a multipart/form-data body, parsed by the standard library."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.content)
    assert isinstance(message, EmailMessage)
    assert message.is_multipart()
    return [part for part in message.iter_parts() if isinstance(part, EmailMessage)]


def form_field(part: EmailMessage) -> str | None:
    name = part.get_param("name", header="content-disposition")
    return name if isinstance(name, str) else None


def form_fields(parts: list[EmailMessage]) -> dict[str, str]:
    return {
        str(form_field(part)): part.get_content() for part in parts if part.get_filename() is None
    }


def leftovers(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "tmp").iterdir())


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", KEY)


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path, max_bytes=10**7)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


# --- generations -------------------------------------------------------------------------


async def test_generation_sends_fields_and_stages_the_decoded_image(
    mock: respx.MockRouter, blobs: FileBlobStore
) -> None:
    image = png("red")
    route = mock.post("/images/generations").respond(
        json={
            "created": 1,
            "data": [{"b64_json": b64(image)}],
            "size": "1536x1024",
            "quality": "high",
            "output_format": "webp",
            "background": "opaque",
            "usage": {"input_tokens": 12, "output_tokens": 4160, "total_tokens": 4172},
        }
    )
    relay = make_relay()
    request = make_request(
        size=Size(1536, 1024),
        output_format=ImageFormat.WEBP,
        quality="high",
        background="opaque",
        compression=80,
    )
    relay.capabilities.check(request, relay.name)
    progress = Progress()

    images = await relay.generate(request, blobs.stage, progress)

    assert route.call_count == 1
    sent = route.calls.last.request
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert sent_json(route) == {
        "prompt": "a red square",
        "model": "gpt-image-1.5",
        "n": 1,
        "size": "1536x1024",
        "quality": "high",
        "output_format": "webp",
        "output_compression": 80,
        "background": "opaque",
        "user": USER,
    }
    assert len(images) == 1
    assert images[0].staged.path.read_bytes() == image
    assert images[0].staged.sha256
    assert images[0].usage == {"input_tokens": 12, "output_tokens": 4160, "total_tokens": 4172}
    assert images[0].params == {
        "size": "1536x1024",
        "quality": "high",
        "output_format": "webp",
        "background": "opaque",
    }
    assert images[0].revised_prompt is None
    assert progress.messages[0] == "sending request"
    assert progress.messages[-1] == "image 1 of 1 received"


async def test_png_leaves_out_compression_and_unset_options(
    mock: respx.MockRouter, blobs: FileBlobStore
) -> None:
    route = mock.post("/images/generations").respond(json={"data": [{"b64_json": b64(png())}]})
    request = make_request(compression=50, user=None)
    await make_relay().generate(request, blobs.stage, Progress())
    assert sent_json(route) == {
        "prompt": "a red square",
        "model": "gpt-image-1.5",
        "n": 1,
        "size": "1024x1024",
        "output_format": "png",
    }


async def test_several_images_in_one_call(mock: respx.MockRouter, blobs: FileBlobStore) -> None:
    first, second = png("red"), png("blue")
    mock.post("/images/generations").respond(
        json={
            "data": [{"b64_json": b64(first)}, {"b64_json": b64(second)}],
            "usage": {"total_tokens": 100},
        }
    )
    progress = Progress()
    images = await make_relay().generate(make_request(n=2), blobs.stage, progress)
    assert [image.staged.path.read_bytes() for image in images] == [first, second]
    assert all(image.usage == {"total_tokens": 100, "images_in_call": 2} for image in images)
    assert "image 1 of 2 received" in progress.messages
    assert progress.messages[-1] == "image 2 of 2 received"


async def test_more_images_than_asked_are_not_kept(
    mock: respx.MockRouter, blobs: FileBlobStore, tmp_path: Path
) -> None:
    items = [{"b64_json": b64(png(color))} for color in ("red", "green", "blue")]
    mock.post("/images/generations").respond(json={"data": items})
    images = await make_relay().generate(make_request(n=2), blobs.stage, Progress())
    assert len(images) == 2
    assert len(leftovers(tmp_path)) == 2


def noise_png(side: int = 256) -> bytes:
    """Large enough (about 200 KB) to be decoded while the answer arrives."""
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), random.Random(side).randbytes(side * side * 3)).save(
        out, "PNG"
    )
    return out.getvalue()


async def test_large_images_are_decoded_as_the_answer_arrives(
    mock: respx.MockRouter, blobs: FileBlobStore
) -> None:
    images = [noise_png(256), noise_png(257), noise_png(258)]
    items = [{"b64_json": b64(image), "revised_prompt": "a cat"} for image in images]
    mock.post("/images/generations").respond(json={"data": items})
    made = await make_relay().generate(make_request(n=2), blobs.stage, Progress())
    assert [image.staged.path.read_bytes() for image in made] == images[:2]
    assert [image.revised_prompt for image in made] == ["a cat", "a cat"]


async def test_damaged_large_image_is_refused_and_nothing_is_kept(
    mock: respx.MockRouter, blobs: FileBlobStore, tmp_path: Path
) -> None:
    good, bad = b64(noise_png()), b64(noise_png(300))
    bad = bad[:1000] + "*" + bad[1001:]
    mock.post("/images/generations").respond(json={"data": [{"b64_json": good}, {"b64_json": bad}]})
    with pytest.raises(RelayError, match="damaged base64 image data"):
        await make_relay().generate(make_request(n=2), blobs.stage, Progress())
    assert leftovers(tmp_path) == []


async def test_revised_prompt_is_recorded(mock: respx.MockRouter, blobs: FileBlobStore) -> None:
    mock.post("/images/generations").respond(
        json={"data": [{"b64_json": b64(png()), "revised_prompt": "a crimson square"}]}
    )
    images = await make_relay().generate(make_request(), blobs.stage, Progress())
    assert images[0].revised_prompt == "a crimson square"
    assert images[0].usage is None


async def test_compat_sends_seed_and_negative_prompt(
    mock: respx.MockRouter, blobs: FileBlobStore
) -> None:
    route = mock.post("/images/generations").respond(json={"data": [{"b64_json": b64(png())}]})
    relay = make_relay(request_policy="compat")
    request = make_request(size=Size(640, 480), seed=7, negative_prompt="blurry")
    relay.capabilities.check(request, relay.name)
    await relay.generate(request, blobs.stage, Progress())
    sent = sent_json(route)
    assert sent["seed"] == 7
    assert sent["negative_prompt"] == "blurry"
    assert sent["size"] == "640x480"


async def test_openai_policy_never_sends_compat_fields(
    mock: respx.MockRouter, blobs: FileBlobStore
) -> None:
    route = mock.post("/images/generations").respond(json={"data": [{"b64_json": b64(png())}]})
    # Past the capability check (which would refuse them), the fields are still not sent.
    request = make_request(seed=7, negative_prompt="blurry")
    await make_relay().generate(request, blobs.stage, Progress())
    assert "seed" not in sent_json(route)
    assert "negative_prompt" not in sent_json(route)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"seed": 3}, "seed"),
        ({"negative_prompt": "blurry"}, "negative_prompt"),
        ({"size": Size(640, 480)}, "sizes"),
        ({"partial_images": 2}, "partial images"),
        ({"n": 11}, "at most 10"),
        ({"output_format": ImageFormat.GIF}, "cannot produce gif"),
    ],
)
def test_openai_policy_rejects_what_it_cannot_send(options: dict[str, Any], message: str) -> None:
    relay = make_relay()
    with pytest.raises(InvalidRequest, match=message):
        relay.capabilities.check(make_request(**options), relay.name)


def test_capabilities_follow_config() -> None:
    plain = make_relay().capabilities
    assert plain.partial_images == 0
    assert plain.sizes is not None
    assert (plain.max_n, plain.max_inputs, plain.edit, plain.mask) == (10, 16, True, True)
    assert (plain.seed, plain.negative_prompt) == (False, False)
    compat = make_relay(request_policy="compat", stream=True).capabilities
    assert compat.partial_images == 3
    assert compat.sizes is None
    assert (compat.min_side, compat.max_side) == (256, 4096)
    assert (compat.seed, compat.negative_prompt) == (True, True)


# --- image URLs --------------------------------------------------------------------------


async def test_url_on_a_loopback_relay_is_fetched_without_the_key(blobs: FileBlobStore) -> None:
    image = png("green")
    with respx.mock(base_url=LOCAL_BASE) as local:
        local.post("/images/generations").respond(
            json={"data": [{"url": "http://127.0.0.1:8931/files/a.png"}]}
        )
        download = local.get("http://127.0.0.1:8931/files/a.png").respond(content=image)
        images = await make_relay(LOCAL_BASE).generate(make_request(), blobs.stage, Progress())
    assert images[0].staged.path.read_bytes() == image
    assert "authorization" not in download.calls.last.request.headers


async def test_https_url_on_a_public_host_is_fetched(
    mock: respx.MockRouter, blobs: FileBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved = fake_resolver(monkeypatch, "93.184.215.14")
    image = png("blue")
    mock.post("/images/generations").respond(
        json={"data": [{"url": "https://cdn.example/img/1.png?sig=abc"}]}
    )
    download = mock.get("https://cdn.example/img/1.png").respond(content=image)
    images = await make_relay().generate(make_request(), blobs.stage, Progress())
    assert images[0].staged.path.read_bytes() == image
    assert resolved == ["cdn.example"]
    assert "authorization" not in download.calls.last.request.headers


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.example/a.png",  # not https
        "https://10.1.2.3/a.png",  # private
        "https://169.254.169.254/latest/meta-data",  # link-local (cloud metadata)
        "https://[::ffff:192.168.0.1]/a.png",  # private, as IPv4-mapped IPv6
        "https://[fe80::1]/a.png",  # link-local IPv6
        "http://127.0.0.1:8931/a.png",  # loopback, from a relay that is not on loopback
        "https://localhost/a.png",
        "file:///etc/passwd",
        "/relative/a.png",
    ],
)
async def test_url_to_a_private_address_is_refused(
    mock: respx.MockRouter, blobs: FileBlobStore, tmp_path: Path, url: str
) -> None:
    mock.post("/images/generations").respond(json={"data": [{"url": url}]})
    # respx refuses any request without a route: a fetch attempt would fail the test.
    with pytest.raises(RelayError, match="image URL that is not allowed"):
        await make_relay().generate(make_request(), blobs.stage, Progress())
    assert leftovers(tmp_path) == []


async def test_hostname_resolving_to_a_private_address_is_refused(
    mock: respx.MockRouter, blobs: FileBlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_resolver(monkeypatch, "93.184.215.14", "10.0.0.5")
    mock.post("/images/generations").respond(
        json={"data": [{"url": "https://rebind.example/a.png"}]}
    )
    with pytest.raises(RelayError, match="not allowed") as caught:
        await make_relay().generate(make_request(), blobs.stage, Progress())
    assert "rebind.example" not in str(caught.value)
    assert leftovers(tmp_path) == []


async def test_oversized_url_download_is_refused(blobs: FileBlobStore, tmp_path: Path) -> None:
    with respx.mock(base_url=LOCAL_BASE) as local:
        local.post("/images/generations").respond(
            json={"data": [{"url": "http://127.0.0.1:8931/files/big.png"}]}
        )
        local.get("http://127.0.0.1:8931/files/big.png").respond(content=b"\x89PNG" + b"x" * 4096)
        relay = make_relay(LOCAL_BASE, max_response_bytes=2048)
        with pytest.raises(RelayError, match="exceeds 2048 bytes"):
            await relay.generate(make_request(), blobs.stage, Progress())
    assert leftovers(tmp_path) == []


async def test_failed_url_download_discards_earlier_images(
    blobs: FileBlobStore, tmp_path: Path
) -> None:
    with respx.mock(base_url=LOCAL_BASE) as local:
        local.post("/images/generations").respond(
            json={
                "data": [
                    {"b64_json": b64(png())},
                    {"url": "http://127.0.0.1:8931/files/gone.png"},
                ]
            }
        )
        local.get("http://127.0.0.1:8931/files/gone.png").respond(404)
        with pytest.raises(RelayError, match="HTTP 404"):
            await make_relay(LOCAL_BASE).generate(make_request(n=2), blobs.stage, Progress())
    assert leftovers(tmp_path) == []


def fake_resolver(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> list[str]:
    """Answer DNS lookups with `addresses`, so no test touches the network."""
    asked: list[str] = []

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        asked.append(host)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in addresses
        ]

    monkeypatch.setattr(anyio, "getaddrinfo", getaddrinfo)
    return asked


# --- streaming ---------------------------------------------------------------------------


async def test_stream_reports_partials_and_keeps_the_completed_image(
    mock: respx.MockRouter, blobs: FileBlobStore
) -> None:
    final = png("purple")
    body = sse(
        {
            "type": "image_generation.partial_image",
            "b64_json": b64(png("gray")),
            "partial_image_index": 0,
        },
        {
            "type": "image_generation.partial_image",
            "b64_json": b64(png("pink")),
            "partial_image_index": 1,
        },
        {
            "type": "image_generation.completed",
            "b64_json": b64(final),
            "size": "1024x1024",
            "output_format": "png",
            "usage": {"input_tokens": 10, "output_tokens": 272, "total_tokens": 282},
        },
    )
    route = mock.post("/images/generations").mock(return_value=sse_response(b": ping\n\n" + body))
    relay = make_relay(stream=True)
    request = make_request(partial_images=2)
    relay.capabilities.check(request, relay.name)
    progress = Progress()

    images = await relay.generate(request, blobs.stage, progress)

    sent = sent_json(route)
    assert sent["stream"] is True
    assert sent["partial_images"] == 2
    assert len(images) == 1
    assert images[0].staged.path.read_bytes() == final
    assert images[0].usage == {"input_tokens": 10, "output_tokens": 272, "total_tokens": 282}
    assert images[0].params == {"size": "1024x1024", "output_format": "png"}
    assert progress.messages == [
        "sending request",
        "partial image 1",
        "partial image 2",
        "image 1 of 1 received",
    ]
    fractions = [f for f in progress.fractions if f is not None]
    assert fractions == sorted(fractions)


async def test_stream_without_partials_sends_no_partial_images(
    mock: respx.MockRouter, blobs: FileBlobStore
) -> None:
    body = sse({"type": "image_generation.completed", "b64_json": b64(png())})
    route = mock.post("/images/generations").mock(return_value=sse_response(body))
    await make_relay(stream=True).generate(make_request(), blobs.stage, Progress())
    assert sent_json(route)["stream"] is True
    assert "partial_images" not in sent_json(route)


async def test_stream_configured_but_answered_with_json(
    mock: respx.MockRouter, blobs: FileBlobStore
) -> None:
    image = png("yellow")
    mock.post("/images/generations").respond(json={"data": [{"b64_json": b64(image)}]})
    images = await make_relay(stream=True).generate(make_request(), blobs.stage, Progress())
    assert images[0].staged.path.read_bytes() == image


async def test_stream_of_several_images(mock: respx.MockRouter, blobs: FileBlobStore) -> None:
    first, second = png("red"), png("blue")
    body = sse(
        {
            "type": "image_generation.completed",
            "b64_json": b64(first),
            "usage": {"total_tokens": 1},
        },
        {
            "type": "image_generation.completed",
            "b64_json": b64(second),
            "usage": {"total_tokens": 2},
        },
    )
    mock.post("/images/generations").mock(return_value=sse_response(body))
    progress = Progress()
    images = await make_relay(stream=True).generate(make_request(n=2), blobs.stage, progress)
    assert [image.staged.path.read_bytes() for image in images] == [first, second]
    assert [image.usage for image in images] == [{"total_tokens": 1}, {"total_tokens": 2}]
    assert progress.messages[-2:] == ["image 1 of 2 received", "image 2 of 2 received"]


async def test_stream_without_completed_event_keeps_nothing(
    mock: respx.MockRouter, blobs: FileBlobStore, tmp_path: Path
) -> None:
    body = sse({"type": "image_generation.partial_image", "b64_json": b64(png())})
    mock.post("/images/generations").mock(return_value=sse_response(body))
    relay = make_relay(stream=True)
    with pytest.raises(RelayError, match="without a completed image"):
        await relay.generate(make_request(partial_images=1), blobs.stage, Progress())
    assert leftovers(tmp_path) == []


async def test_stream_cut_mid_line_discards_what_completed(
    mock: respx.MockRouter, blobs: FileBlobStore, tmp_path: Path
) -> None:
    done = sse({"type": "image_generation.completed", "b64_json": b64(png("red"))})
    cut = b'data: {"type": "image_generation.completed", "b64_json": "iVBOR'
    mock.post("/images/generations").mock(return_value=sse_response(done + cut))
    with pytest.raises(RelayError, match="cut off"):
        await make_relay(stream=True).generate(make_request(n=2), blobs.stage, Progress())
    assert leftovers(tmp_path) == []


async def test_error_event_in_stream(
    mock: respx.MockRouter, blobs: FileBlobStore, tmp_path: Path
) -> None:
    body = sse(
        {"type": "image_generation.partial_image", "b64_json": b64(png())},
        {"type": "error", "error": {"code": "server_error", "message": "The server had an error"}},
    )
    mock.post("/images/generations").mock(return_value=sse_response(body))
    with pytest.raises(RelayError, match="The server had an error") as caught:
        await make_relay(stream=True).generate(make_request(), blobs.stage, Progress())
    assert not isinstance(caught.value, ContentRefused)
    assert leftovers(tmp_path) == []


async def test_moderation_error_event_is_content_refused(
    mock: respx.MockRouter, blobs: FileBlobStore, tmp_path: Path
) -> None:
    body = sse(
        {"type": "image_generation.completed", "b64_json": b64(png())},
        {"type": "error", "error": {"code": "moderation_blocked", "message": "blocked"}},
    )
    mock.post("/images/generations").mock(return_value=sse_response(body))
    with pytest.raises(ContentRefused, match="refused"):
        await make_relay(stream=True).generate(make_request(n=2), blobs.stage, Progress())
    assert leftovers(tmp_path) == []


async def test_total_timeout_discards_everything(
    mock: respx.MockRouter, blobs: FileBlobStore, tmp_path: Path
) -> None:
    async def slow() -> AsyncIterator[bytes]:
        yield sse({"type": "image_generation.completed", "b64_json": b64(png())})
        await anyio.sleep(5)
        yield b""

    mock.post("/images/generations").mock(
        return_value=httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=slow()
        )
    )
    relay = make_relay(stream=True, total_timeout=0.2)
    with pytest.raises(RelayError, match=r"did not finish within 0\.2 s"):
        await relay.generate(make_request(n=2), blobs.stage, Progress())
    assert leftovers(tmp_path) == []


# --- errors ------------------------------------------------------------------------------


async def test_429_with_retry_after_is_retried(
    mock: respx.MockRouter, blobs: FileBlobStore
) -> None:
    route = mock.post("/images/generations")
    route.side_effect = [
        httpx.Response(
            429,
            headers={"retry-after": "0"},
            json={"error": {"code": "rate_limit_exceeded", "message": "slow down"}},
        ),
        httpx.Response(200, json={"data": [{"b64_json": b64(png())}]}),
    ]
    images = await make_relay().generate(make_request(), blobs.stage, Progress())
    assert route.call_count == 2
    assert len(images) == 1


async def test_500_is_retried(mock: respx.MockRouter, blobs: FileBlobStore) -> None:
    route = mock.post("/images/generations")
    route.side_effect = [
        httpx.Response(500, headers={"retry-after-ms": "0"}, json={"error": {"message": "oops"}}),
        httpx.Response(200, json={"data": [{"b64_json": b64(png())}]}),
    ]
    images = await make_relay().generate(make_request(), blobs.stage, Progress())
    assert route.call_count == 2
    assert len(images) == 1


async def test_moderation_block_is_refused_without_retry(
    mock: respx.MockRouter, blobs: FileBlobStore, tmp_path: Path
) -> None:
    route = mock.post("/images/generations").respond(
        400,
        json={
            "error": {
                "message": "Your request was rejected by the safety system.",
                "type": "image_generation_user_error",
                "param": None,
                "code": "moderation_blocked",
            }
        },
    )
    with pytest.raises(ContentRefused, match="safety system"):
        await make_relay().generate(make_request(), blobs.stage, Progress())
    assert route.call_count == 1
    assert leftovers(tmp_path) == []


async def test_moderation_inside_a_200_answer_is_refused(
    mock: respx.MockRouter, blobs: FileBlobStore
) -> None:
    mock.post("/images/generations").respond(
        json={"data": [], "error": {"code": "content_policy_violation", "message": "no"}}
    )
    with pytest.raises(ContentRefused):
        await make_relay().generate(make_request(), blobs.stage, Progress())


async def test_bad_key_error_never_shows_the_key(
    mock: respx.MockRouter, blobs: FileBlobStore
) -> None:
    route = mock.post("/images/generations").respond(
        401,
        json={
            "error": {
                "message": f"Incorrect API key provided: {KEY}.",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
        },
    )
    with pytest.raises(RelayError) as caught:
        await make_relay().generate(make_request(), blobs.stage, Progress())
    assert route.call_count == 1
    assert KEY not in str(caught.value)
    assert "credentials" in str(caught.value)


async def test_error_text_inside_a_200_answer_is_cleaned(
    mock: respx.MockRouter, blobs: FileBlobStore
) -> None:
    mock.post("/images/generations").respond(
        json={"error": {"code": "server_error", "message": f"failed for key {KEY}"}}
    )
    with pytest.raises(RelayError, match="failed for key") as caught:
        await make_relay().generate(make_request(), blobs.stage, Progress())
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"data": [{"b64_json": "not base64 at all!"}]}, "damaged base64"),
        ({"data": [{"b64_json": "iVBORw0KGgo"}]}, "damaged base64"),
        ({"data": []}, "without an image"),
        ({"created": 1}, "without an image"),
        ({"data": [{"revised_prompt": "x"}]}, "without image data"),
        ({"data": ["abc"]}, "malformed"),
        ([1, 2], "unexpected JSON"),
    ],
)
async def test_answer_without_a_usable_image(
    mock: respx.MockRouter,
    blobs: FileBlobStore,
    tmp_path: Path,
    answer: Any,
    message: str,
) -> None:
    mock.post("/images/generations").respond(json=answer)
    with pytest.raises(RelayError, match=message):
        await make_relay().generate(make_request(), blobs.stage, Progress())
    assert leftovers(tmp_path) == []


async def test_garbage_in_the_second_image_discards_the_first(
    mock: respx.MockRouter, blobs: FileBlobStore, tmp_path: Path
) -> None:
    mock.post("/images/generations").respond(
        json={"data": [{"b64_json": b64(png())}, {"b64_json": "@@@@"}]}
    )
    with pytest.raises(RelayError, match="damaged base64"):
        await make_relay().generate(make_request(n=2), blobs.stage, Progress())
    assert leftovers(tmp_path) == []


async def test_answer_that_is_not_json(mock: respx.MockRouter, blobs: FileBlobStore) -> None:
    mock.post("/images/generations").respond(200, text="<html>gateway</html>")
    with pytest.raises(RelayError, match="not JSON"):
        await make_relay().generate(make_request(), blobs.stage, Progress())


async def test_answer_over_the_size_cap(mock: respx.MockRouter, blobs: FileBlobStore) -> None:
    mock.post("/images/generations").respond(json={"data": [{"b64_json": "A" * 4096}]})
    with pytest.raises(RelayError, match="exceeds 2048 bytes"):
        await make_relay(max_response_bytes=2048).generate(make_request(), blobs.stage, Progress())


# --- edits -------------------------------------------------------------------------------


async def test_edit_with_several_images_and_a_mask(
    mock: respx.MockRouter, blobs: FileBlobStore, tmp_path: Path
) -> None:
    inputs = tuple(
        input_image(tmp_path, f"in-{color}.png", color) for color in ("red", "green", "blue")
    )
    mask = input_image(tmp_path, "mask.png", "white", mode="RGBA")
    result = png("orange")
    route = mock.post("/images/edits").respond(json={"data": [{"b64_json": b64(result)}]})
    relay = make_relay()
    request = make_request(
        prompt="make it orange",
        images=inputs,
        mask=mask,
        input_fidelity="high",
        quality="low",
        n=2,
    )
    relay.capabilities.check(request, relay.name)

    images = await relay.generate(request, blobs.stage, Progress())

    assert images[0].staged.path.read_bytes() == result
    sent = route.calls.last.request
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    parts = form_parts(sent)
    files = [part for part in parts if part.get_filename() is not None]
    image_parts = [part for part in files if form_field(part) == "image[]"]
    assert [part.get_filename() for part in image_parts] == [
        "image-1.png",
        "image-2.png",
        "image-3.png",
    ]
    assert all(part.get_content_type() == "image/png" for part in image_parts)
    assert [part.get_payload(decode=True) for part in image_parts] == [
        image.path.read_bytes() for image in inputs
    ]
    assert not any(form_field(part) == "image" for part in parts)
    (mask_part,) = [part for part in files if form_field(part) == "mask"]
    assert mask_part.get_filename() == "mask.png"
    assert mask_part.get_content_type() == "image/png"
    assert mask_part.get_payload(decode=True) == mask.path.read_bytes()
    assert form_fields(parts) == {
        "prompt": "make it orange",
        "model": "gpt-image-1.5",
        "n": "2",
        "size": "1024x1024",
        "quality": "low",
        "output_format": "png",
        "input_fidelity": "high",
        "user": USER,
    }


async def test_edit_of_one_image_uses_the_image_field(
    mock: respx.MockRouter, blobs: FileBlobStore, tmp_path: Path
) -> None:
    source = input_image(tmp_path, "in.png", "red")
    route = mock.post("/images/edits").respond(json={"data": [{"b64_json": b64(png())}]})
    await make_relay().generate(make_request(images=(source,)), blobs.stage, Progress())
    parts = form_parts(route.calls.last.request)
    (image_part,) = [part for part in parts if part.get_filename() is not None]
    assert form_field(image_part) == "image"
    assert image_part.get_filename() == "image.png"
    assert image_part.get_payload(decode=True) == source.path.read_bytes()
    assert "mask" not in form_fields(parts)


async def test_edit_retry_sends_the_files_again(
    mock: respx.MockRouter, blobs: FileBlobStore, tmp_path: Path
) -> None:
    source = input_image(tmp_path, "in.png", "red")
    route = mock.post("/images/edits")
    route.side_effect = [
        httpx.Response(503, headers={"retry-after": "0"}, text="<html>busy</html>"),
        httpx.Response(200, json={"data": [{"b64_json": b64(png())}]}),
    ]
    await make_relay().generate(make_request(images=(source,)), blobs.stage, Progress())
    assert route.call_count == 2
    for call in route.calls:
        (image_part,) = [part for part in form_parts(call.request) if part.get_filename()]
        assert image_part.get_payload(decode=True) == source.path.read_bytes()


async def test_edit_stream_uses_edit_events(
    mock: respx.MockRouter, blobs: FileBlobStore, tmp_path: Path
) -> None:
    source = input_image(tmp_path, "in.png", "red")
    final = png("teal")
    body = sse(
        {"type": "image_edit.partial_image", "b64_json": b64(png()), "partial_image_index": 0},
        {"type": "image_edit.completed", "b64_json": b64(final), "usage": {"total_tokens": 9}},
    )
    route = mock.post("/images/edits").mock(return_value=sse_response(body))
    request = make_request(images=(source,), partial_images=1)
    progress = Progress()
    images = await make_relay(stream=True).generate(request, blobs.stage, progress)
    assert images[0].staged.path.read_bytes() == final
    assert images[0].usage == {"total_tokens": 9}
    assert "partial image 1" in progress.messages
    fields = form_fields(form_parts(route.calls.last.request))
    assert (fields["stream"], fields["partial_images"]) == ("true", "1")


def test_sixteen_inputs_at_most(tmp_path: Path) -> None:
    relay = make_relay()
    source = input_image(tmp_path, "in.png", "red")
    relay.capabilities.check(make_request(images=(source,) * 16), relay.name)
    with pytest.raises(InvalidRequest, match="at most 16"):
        relay.capabilities.check(make_request(images=(source,) * 17), relay.name)
