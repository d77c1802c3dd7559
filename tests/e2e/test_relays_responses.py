"""The openai-responses relay end to end: MCP client -> imagegate over HTTP -> a fake
Responses upstream on 127.0.0.1 speaking SSE."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp.exceptions import ToolError

from imagegate.relays.openai_responses import OpenAIResponsesRelayConfig
from imagegate.relays.placeholder import PlaceholderRelayConfig
from tests.e2e.harness import RunningServer, http_get, running_server, stored_as_sent
from tests.fakes.upstream import (
    FakeUpstream,
    error_reply,
    png_bytes,
    responses_events,
    running_upstream,
    slow,
    sse,
)

KEY = "sk-fake-upstream-key-0123456789"
PATH = "/v1/responses"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with running_upstream() as fake:
        yield fake


def relay_config(fake: FakeUpstream, **overrides: Any) -> OpenAIResponsesRelayConfig:
    values: dict[str, Any] = {
        "kind": "openai-responses",
        "base_url": f"{fake.base_url}/v1",
        "api_key_env": "FAKE_UPSTREAM_KEY",
        "model": "gpt-test",
        "paid": False,
        "first_byte_timeout": 0.5,
        "max_retries": 3,
        "retry_budget_seconds": 5.0,
    }
    values.update(overrides)
    return OpenAIResponsesRelayConfig(**values)


@pytest.fixture
async def server(
    state_dir: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningServer]:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", KEY)
    relays = {
        "oa": relay_config(upstream),
        "slow-oa": relay_config(upstream, base_url=f"{upstream.base_url}/slow/v1"),
        "placeholder": PlaceholderRelayConfig(kind="placeholder"),
    }
    async with running_server(state_dir, relays=relays, default_relay="oa") as running:
        yield running


def stored_files(server: RunningServer) -> list[Path]:
    state = server.settings.state_dir
    return [*(state / "blobs").rglob("*.*"), *(state / "tmp").iterdir()]


async def test_generation_with_partials_and_progress(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    final = png_bytes((1024, 1024), "teal")
    upstream.script(PATH, sse(responses_events(final, partials=2)))
    seen: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message or "")

    async with server.client(progress_handler=on_progress) as client:
        result = await client.call_tool(
            "generate_image",
            {"prompt": "a teal square", "quality": "low", "partial_images": 2},
        )
    assert result.structured_content is not None
    (image,) = result.structured_content["images"]
    assert image["relay"] == "oa"
    assert image["revised_prompt"] == "a revised prompt"
    assert image["params"]["usage"]["usage"]["output_tokens"] == 1500
    download = await http_get(image["url"])
    assert stored_as_sent(download.content, final)
    assert any(m.startswith("partial image 1") for m in seen)
    assert any(m.startswith("partial image 2") for m in seen)
    assert any(m.startswith("generating") for m in seen)

    (call,) = upstream.calls(PATH)
    assert call.headers["authorization"] == f"Bearer {KEY}"
    body = call.json()
    assert body["stream"] is True
    assert body["model"] == "gpt-test"
    (tool,) = body["tools"]
    assert tool == {
        "type": "image_generation",
        "size": "1024x1024",
        "output_format": "png",
        "quality": "low",
        "partial_images": 2,
    }
    assert body["input"][0]["content"] == [{"type": "input_text", "text": "a teal square"}]
    assert len(body["safety_identifier"]) == 32
    assert "token:dev" not in call.body.decode()


async def test_a_prompt_with_a_literal_escape_reaches_the_upstream_as_typed(
    server: RunningServer, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """The six characters backslash-u-0000 in a prompt once broke the streamed body
    and sent a traceback with the request body, prompt included, to the log."""
    upstream.script(PATH, sse(responses_events(png_bytes((1024, 1024)))))
    prompt = "draw \\u0000 as text, and \\u0000 again"
    async with server.client() as client:
        result = await client.call_tool("generate_image", {"prompt": prompt})
    assert len(result.structured_content["images"]) == 1
    (call,) = upstream.calls(PATH)
    assert call.json()["input"][0]["content"] == [{"type": "input_text", "text": prompt}]
    assert "as text" not in caplog.text


async def test_edit_sends_images_as_data_urls(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    upstream.script(PATH, sse(responses_events(png_bytes((1024, 1024)))))
    source = await server_asset(server)
    async with server.client() as client:
        result = await client.call_tool(
            "edit_image", {"prompt": "make it red", "images": [source], "size": "1024x1024"}
        )
    assert result.structured_content is not None
    content = upstream.calls(PATH)[0].json()["input"][0]["content"]
    assert content[0] == {"type": "input_text", "text": "make it red"}
    assert content[1]["type"] == "input_image"
    assert content[1]["image_url"].startswith("data:image/png;base64,iVBOR")


async def server_asset(server: RunningServer) -> str:
    async with server.client() as client:
        made = await client.call_tool(
            "generate_image", {"prompt": "source", "size": "96x96", "relay": "placeholder"}
        )
    assert made.structured_content is not None
    asset_id: str = made.structured_content["images"][0]["asset_id"]
    return asset_id


FAILURES = {
    "truncated-stream": (
        lambda: sse(responses_events(png_bytes()), cut_after=5),
        "cut off in the middle of an event",
    ),
    "ends-without-image": (
        lambda: sse(responses_events(png_bytes())[:4]),
        "stream ended without a final image",
    ),
    "error-event": (
        lambda: sse([{"type": "error", "code": "server_error", "message": "boom"}]),
        "relay 'oa' failed: boom",
    ),
    "response-failed": (
        lambda: sse(
            [{"type": "response.failed", "response": {"error": {"message": "model overloaded"}}}]
        ),
        "model overloaded",
    ),
    "moderation-item": (
        lambda: sse(
            [
                {
                    "type": "response.output_item.done",
                    "item": {
                        "type": "image_generation_call",
                        "status": "failed",
                        "error": {"code": "moderation_blocked", "message": "not allowed"},
                    },
                }
            ]
        ),
        "refused the prompt or image: not allowed",
    ),
    "garbage-base64": (
        lambda: sse(
            [
                {
                    "type": "response.output_item.done",
                    "item": {"type": "image_generation_call", "result": "!!notbase64!!"},
                }
            ]
        ),
        "damaged base64",
    ),
    "not-an-image": (
        lambda: sse(
            [
                {
                    "type": "response.output_item.done",
                    "item": {"type": "image_generation_call", "result": "aGVsbG8gd29ybGQh"},
                }
            ]
        ),
        "not a PNG, JPEG, WebP or GIF",
    ),
    "moderation-400": (
        lambda: error_reply(400, "moderation_blocked", "Your request was rejected"),
        "refused the prompt or image: Your request was rejected",
    ),
    "bad-key-401": (
        lambda: error_reply(401, "invalid_api_key", f"Incorrect API key provided: {KEY}"),
        "rejected its credentials (HTTP 401)",
    ),
}


@pytest.mark.parametrize("name", FAILURES)
async def test_failures_are_clear_and_store_nothing(
    server: RunningServer, upstream: FakeUpstream, name: str
) -> None:
    responder, message = FAILURES[name]
    upstream.script(PATH, responder())
    async with server.client() as client:
        with pytest.raises(ToolError) as raised:
            await client.call_tool("generate_image", {"prompt": "x"})
    assert message in str(raised.value)
    assert KEY not in str(raised.value)
    assert stored_files(server) == []
    assert len(upstream.calls(PATH)) == 1  # none of these is retried


async def test_429_is_retried_after_the_hinted_delay(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    upstream.script(
        PATH,
        error_reply(429, "rate_limit_exceeded", "slow down", {"retry-after-ms": "50"}),
        error_reply(503, "unavailable", "try again", {"retry-after": "0"}),
        sse(responses_events(png_bytes())),
    )
    async with server.client() as client:
        result = await client.call_tool("generate_image", {"prompt": "patience"})
    assert result.structured_content is not None
    assert len(upstream.calls(PATH)) == 3


async def test_persistent_500_gives_up_after_max_retries(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    for _ in range(5):
        upstream.script(PATH, error_reply(500, "server_error", "broken", {"retry-after": "0"}))
    async with server.client() as client:
        with pytest.raises(ToolError, match=r"relay 'oa' failed \(HTTP 500\): broken"):
            await client.call_tool("generate_image", {"prompt": "x"})
    assert len(upstream.calls(PATH)) == 3
    assert stored_files(server) == []


async def test_the_audit_log_tells_upstream_failures_from_refusals(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", KEY)
    audit = tmp_path / "audit.jsonl"
    upstream.script(PATH, error_reply(500, "server_error", "broken", {"retry-after": "0"}))
    upstream.script(PATH, error_reply(400, "moderation_blocked", "no"))
    relays = {"oa": relay_config(upstream, max_retries=1)}
    async with (
        running_server(tmp_path / "state", relays=relays, audit_log=str(audit)) as server,
        server.client() as client,
    ):
        for _ in range(2):
            with pytest.raises(ToolError):
                await client.call_tool("generate_image", {"prompt": "x"})
        with pytest.raises(ToolError):
            await client.call_tool("generate_image", {"prompt": "x", "size": "13x7"})
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [line["outcome"] for line in lines] == ["upstream_error", "refused", "refused"]
    # Our part of the message, not the upstream's text (which may quote the prompt).
    assert lines[0]["detail"] == "relay 'oa' failed (HTTP 500)"
    assert lines[1]["detail"] == "relay 'oa' refused the prompt or image"


async def test_insufficient_quota_is_not_retried(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    upstream.script(PATH, error_reply(429, "insufficient_quota", "You exceeded your quota"))
    async with server.client() as client:
        with pytest.raises(ToolError, match="has no quota left"):
            await client.call_tool("generate_image", {"prompt": "x"})
    assert len(upstream.calls(PATH)) == 1


async def test_slow_first_byte_times_out_without_sending_again(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    upstream.script(PATH, slow(1.5, sse(responses_events(png_bytes()))))
    async with server.client() as client:
        with pytest.raises(ToolError, match=r"sent no response within 0\.5 s"):
            await client.call_tool("generate_image", {"prompt": "x"})
    assert stored_files(server) == []
    # The request went out whole; the upstream may be billing for it: never re-sent.
    assert len(upstream.calls(PATH)) == 1


async def test_unsupported_option_is_refused_before_any_request(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    async with server.client() as client:
        with pytest.raises(ToolError, match="relay 'oa' does not support seed"):
            await client.call_tool("generate_image", {"prompt": "x", "seed": 1})
        with pytest.raises(ToolError, match="relay 'oa' supports sizes 1024x1024, 1024x1536"):
            await client.call_tool("generate_image", {"prompt": "x", "size": "512x512"})
    assert upstream.requests == []


async def test_a_slow_relay_does_not_block_another(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    upstream.script("/slow/v1/responses", sse(responses_events(png_bytes()), delay=0.1))
    upstream.script(PATH, sse(responses_events(png_bytes())))
    finished: dict[str, float] = {}

    async def run(relay: str) -> None:
        async with server.client() as client:
            await client.call_tool("generate_image", {"prompt": "x", "relay": relay})
        finished[relay] = time.monotonic()

    slow_call = asyncio.create_task(run("slow-oa"))
    await asyncio.sleep(0.2)
    await run("oa")
    await slow_call
    assert finished["oa"] < finished["slow-oa"]


async def test_oversize_image_is_refused(
    state_dir: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", KEY)
    upstream.script(PATH, sse(responses_events(png_bytes((1024, 1024), "white"))))
    relays = {"oa": relay_config(upstream)}
    async with running_server(state_dir, relays=relays, max_image_bytes=2048) as server:
        async with server.client() as client:
            with pytest.raises(ToolError, match="larger than the limit of 2048 bytes"):
                await client.call_tool("generate_image", {"prompt": "x"})
        assert stored_files(server) == []
