"""The span helper and the redaction, on a provider of the test's own (the global one
belongs to tests/e2e/test_traces.py)."""

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from imagegate.core.spanexport import _Redacting
from imagegate.core.tracing import current_trace_id, parse_headers


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Iterator[trace.Tracer]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_Redacting(exporter)))
    yield provider.get_tracer("test")
    provider.shutdown()


def test_redaction_keeps_only_known_attributes_and_no_messages(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    attributes = {
        "enduser.id": "token:alice",
        "enduser.scope": "generate",
        "mcp.session.id": "abc",
        "mcp.resource.uri": "image://img_123",
        "gen_ai.tool.name": "generate_image",
        "imagegate.relay": "paid",
    }
    span = tracer.start_as_current_span("tools/call x", attributes=attributes)
    with pytest.raises(ValueError, match="secret prompt"), span:
        raise ValueError("upstream said: the secret prompt")
    (exported,) = exporter.get_finished_spans()
    assert exported.attributes == {"gen_ai.tool.name": "generate_image", "imagegate.relay": "paid"}
    assert exported.status.status_code == StatusCode.ERROR
    assert exported.status.description is None
    (event,) = exported.events
    assert event.attributes == {"exception.type": "ValueError"}


def test_the_trace_id_outside_and_inside_a_span(tracer: trace.Tracer) -> None:
    assert current_trace_id() is None
    with tracer.start_as_current_span("step") as span:
        assert current_trace_id() == format(span.get_span_context().trace_id, "032x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x-api-key=abc", {"x-api-key": "abc"}),
        ("A=1, b=two%20words ,", {"a": "1", "b": "two words"}),
        ("authorization=Basic%20dXNlcjpwYXNz", {"authorization": "Basic dXNlcjpwYXNz"}),
        ("", {}),
    ],
)
def test_parse_headers(text: str, expected: dict[str, str]) -> None:
    assert parse_headers(text) == expected


@pytest.mark.parametrize("text", ["novalue", "=x", "a=", "a=1,broken"])
def test_parse_headers_names_the_entry_not_the_value(text: str) -> None:
    with pytest.raises(ValueError, match=r"entry \d is not key=value") as caught:
        parse_headers(text)
    assert "broken" not in str(caught.value)
    assert "novalue" not in str(caught.value)
