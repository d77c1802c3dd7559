"""Traces end to end: a paid call over HTTP, confirmed by elicitation, is one trace
from the token check to the upstream request, joined with FastMCP's span; nothing
secret is in it; and its audit line names it.

Spans go to an in-memory exporter installed by `setup_tracing`, the function
`imagegate serve` calls, so the redaction a collector would see is the one tested."""

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from fastmcp.client.auth import BearerAuth
from fastmcp.client.transports import StreamableHttpTransport
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from imagegate.config import Settings
from imagegate.relays.config import PriceTable
from imagegate.relays.openai_images import OpenAIImagesRelayConfig
from imagegate.server import setup_tracing
from tests.e2e.harness import RunningServer, running_server
from tests.e2e.test_paid import Answers
from tests.fakes.upstream import FakeUpstream, images_reply, png_bytes, running_upstream

KEY = "sk-traced-relay-key-0123456789"
PATH = "/v1/images/generations"
PROMPT = "a lighthouse painted by a very secret prompt"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    # OpenTelemetry's provider is one per process: installed once for this module.
    memory = InMemorySpanExporter()
    tracing = setup_tracing(Settings(), exporter=memory)
    assert tracing is not None
    yield memory
    tracing.shutdown()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with running_upstream() as fake:
        fake.defaults[PATH] = images_reply(png_bytes((1024, 1024)))
        yield fake


@pytest.fixture
async def server(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningServer]:
    monkeypatch.setenv("FAKE_TRACED_KEY", KEY)
    common: dict[str, Any] = {
        "kind": "openai-images",
        "base_url": f"{upstream.base_url}/v1",
        "api_key_env": "FAKE_TRACED_KEY",
        "model": "gpt-image-test",
    }
    relays = {
        "paid": OpenAIImagesRelayConfig(
            **common, paid=True, price=PriceTable(per_image={"*": 0.04})
        ),
        "free": OpenAIImagesRelayConfig(**common, paid=False),
    }
    async with running_server(
        tmp_path / "state",
        relays=relays,
        default_relay="paid",
        audit_log=str(tmp_path / "audit.log"),
    ) as running:
        yield running


def audit_lines(server: RunningServer) -> list[dict[str, Any]]:
    text = Path(server.settings.audit_log).read_text()
    return [json.loads(line) for line in text.splitlines()]


async def finished(exporter: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    """The trace's spans once its root has ended (just after the client has the
    answer: the root ends with the HTTP response)."""
    for _ in range(200):
        spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
        if any(s.parent is None for s in spans):
            return spans
        await asyncio.sleep(0.01)
    raise AssertionError("the trace's root span never ended")


def tool_call_span(exporter: InMemorySpanExporter, tool: str) -> ReadableSpan:
    (span,) = [
        s
        for s in exporter.get_finished_spans()
        if s.name == f"tools/call {tool}" and s.kind == SpanKind.SERVER
    ]
    return span


def texts(span: ReadableSpan) -> list[str]:
    """Every string a collector would get from a span."""
    values = [str(v) for v in (span.attributes or {}).values()]
    values += [str(v) for event in span.events for v in (event.attributes or {}).values()]
    return [span.name, *values, span.status.description or ""]


async def test_a_confirmed_paid_call_is_one_trace(
    server: RunningServer, upstream: FakeUpstream, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    async with server.client(mode="legacy", elicitation_handler=Answers(True)) as client:
        result = await client.call_tool("generate_image", {"prompt": PROMPT})
    assert result.structured_content is not None
    assert result.structured_content["confirmation"] == "accepted"

    call = tool_call_span(exporter, "generate_image")
    assert call.context is not None
    spans = await finished(exporter, call.context.trace_id)
    by_name = {span.name: span for span in spans}
    assert {
        "POST /mcp",
        "auth",
        "tools/call generate_image",
        "acl",
        "quota.check",
        "confirm",
        "quota.reserve",
        "relay",
        "upstream",
    } <= by_name.keys()

    def parent(name: str) -> str | None:
        span = by_name[name]
        if span.parent is None:
            return None
        (found,) = [s.name for s in spans if s.context.span_id == span.parent.span_id]
        return found

    assert parent("POST /mcp") is None
    assert parent("auth") == "POST /mcp"
    assert parent("tools/call generate_image") == "POST /mcp"
    for step in ("acl", "quota.check", "confirm", "quota.reserve", "relay"):
        assert parent(step) == "tools/call generate_image", step
    assert parent("upstream") == "relay"

    # One trace: every step of ours, whichever request or task it ran in, is in it.
    ours = {"acl", "quota.check", "confirm", "quota.reserve", "relay", "upstream"}
    assert {s.context.trace_id for s in exporter.get_finished_spans() if s.name in ours} == {
        call.context.trace_id
    }

    assert by_name["relay"].attributes == {
        "imagegate.relay": "paid",
        "imagegate.kind": "openai-images",
        "imagegate.images": 1,
    }
    assert by_name["upstream"].attributes is not None
    assert by_name["upstream"].attributes["imagegate.status_class"] == "2xx"
    assert by_name["confirm"].attributes == {
        "imagegate.relay": "paid",
        "imagegate.outcome": "accepted",
    }
    assert by_name["acl"].attributes == {
        "imagegate.tool": "generate_image",
        "imagegate.outcome": "allowed",
    }
    assert by_name["auth"].attributes == {"imagegate.outcome": "ok"}
    assert by_name["POST /mcp"].attributes == {
        "http.request.method": "POST",
        "http.response.status_code": 200,
    }

    # Nothing secret, in any span of the server's: not the prompt, the token, the
    # subject, the relay's key, the upstream's URL or the session.
    secrets = [PROMPT, server.token, "token:dev", KEY, upstream.base_url, "lighthouse"]
    for span in exporter.get_finished_spans():
        for text in texts(span):
            for secret in secrets:
                assert secret not in text, (span.name, text)
        assert not any(k.startswith(("enduser.", "mcp.session")) for k in span.attributes or {})

    (line,) = [line for line in audit_lines(server) if line["tool"] == "generate_image"]
    assert line["trace_id"] == format(call.context.trace_id, "032x")


async def test_each_call_is_its_own_trace(
    server: RunningServer, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    async with server.client() as client:  # 2026-07-28
        for _ in range(2):
            await client.call_tool("generate_image", {"prompt": PROMPT, "relay": "free"})
    calls = [
        s
        for s in exporter.get_finished_spans()
        if s.name == "tools/call generate_image" and s.kind == SpanKind.SERVER
    ]
    trace_ids = {format(s.context.trace_id, "032x") for s in calls}
    assert len(trace_ids) == 2
    logged = {line["trace_id"] for line in audit_lines(server)}
    assert logged == trace_ids


async def test_a_callers_traceparent_is_continued(
    server: RunningServer, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    transport = StreamableHttpTransport(
        server.mcp_url, headers={"traceparent": parent}, auth=BearerAuth(server.token)
    )
    async with Client(transport) as client:
        await client.call_tool("list_relays", {})
    call = tool_call_span(exporter, "list_relays")
    assert format(call.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
