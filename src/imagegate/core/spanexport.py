"""Traces on: OpenTelemetry's SDK provider, every span passed on redacted (`tracing`
says what a span may carry, and why).

A module of its own, apart from `tracing`, which needs only OpenTelemetry's API: the
composition root imports this one only when tracing is configured, so a process that
sends no traces (the usual case, and every command but `serve`) never loads the SDK.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Status

from imagegate.core.tracing import PREFIX

KEPT = frozenset(
    {
        "mcp.method.name",
        "mcp.protocol.version",
        "fastmcp.server.name",
        "fastmcp.span.seam",
        "fastmcp.component.type",
        "fastmcp.provider.type",
        "gen_ai.tool.name",
        "error.type",
        "http.request.method",
        "http.response.status_code",
    }
)
"""Attributes other than ours that reach the collector. Not kept, among FastMCP's:
enduser.id (the subject), enduser.scope, mcp.session.id, mcp.resource.uri and
fastmcp.component.key (an image:// URI names an asset)."""


@dataclass(frozen=True)
class Tracing:
    """What `install` set up: shut it down at exit, so the last spans are sent."""

    processor: SpanProcessor

    def shutdown(self) -> None:
        self.processor.shutdown()


def install(exporter: SpanExporter, service_name: str, version: str, batch: bool = True) -> Tracing:
    """Send every span of this process to `exporter`, redacted, from now on.

    The global provider can be set once per process; a later `install` (tests that
    build several servers) adds its exporter to the provider already there."""
    redacted = _Redacting(exporter)
    processor: SpanProcessor = (
        BatchSpanProcessor(redacted) if batch else SimpleSpanProcessor(redacted)
    )
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(
            resource=Resource.create({"service.name": service_name, "service.version": version})
        )
        trace.set_tracer_provider(provider)
    provider.add_span_processor(processor)
    return Tracing(processor)


class _Redacting(SpanExporter):
    """Passes on copies of the spans with only `KEPT` attributes (and ours), no status
    description and, of exception events, only the exception's type."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([_redacted(each) for each in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _redacted(span: ReadableSpan) -> ReadableSpan:
    attributes = {
        key: value
        for key, value in (span.attributes or {}).items()
        if key in KEPT or key.startswith(PREFIX)
    }
    events = [
        Event(
            event.name,
            {"exception.type": str((event.attributes or {}).get("exception.type", ""))},
            event.timestamp,
        )
        for event in span.events
        if event.name == "exception"
    ]
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
