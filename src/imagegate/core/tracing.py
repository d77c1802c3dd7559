"""Traces: one per tool call, through OpenTelemetry, off unless `spanexport.install`ed.

FastMCP makes its own spans (a `tools/call <tool>` span per call) with OpenTelemetry's
global tracer provider; ours come from the same provider, which is what joins them in
one trace. That provider is the one process-wide thing here, because it is the seam
FastMCP uses: `install` sets it once, from the composition root. Until then every span
is OpenTelemetry's no-op, costing a function call or two.

What a span may carry is decided twice: instrumentation passes only bounded, non-secret
values (tool, relay, outcome, status class), and the exporter keeps only attributes
named in `spanexport.KEPT` (or ours), with no exception messages. So the prompt, a
token, the subject, an asset id or a signed URL reaches the collector neither from our
spans nor from FastMCP's (whose `enduser.id` is the subject, and whose error status
quotes the error message, which can quote an upstream, which can quote the prompt).

This module needs only OpenTelemetry's API. The SDK, which records and sends spans, is
`spanexport`'s, imported only when tracing is on.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import unquote

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

Attribute = str | int | float | bool

PREFIX = "imagegate."

_tracer = trace.get_tracer("imagegate")
"""A proxy: it finds the provider `install` sets, whenever that happens."""
_propagator = TraceContextTextMapPropagator()


class Span:
    """The span of one step, for attributes known only at its end (an outcome)."""

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set(self, key: str, value: Attribute | None) -> None:
        if value is not None:
            self._span.set_attribute(PREFIX + key, value)


@contextmanager
def span(name: str, **attributes: Attribute | None) -> Iterator[Span]:
    """A child of the current span, named `name`, with `imagegate.<key>` attributes.

    An exception marks it failed with the exception's type only: messages can quote
    an upstream's answer, and so the prompt."""
    with _tracer.start_as_current_span(
        name, record_exception=False, set_status_on_exception=False
    ) as current:
        handle = Span(current)
        for key, value in attributes.items():
            handle.set(key, value)
        try:
            yield handle
        except BaseException as err:
            current.set_attribute("error.type", type(err).__name__)
            current.set_status(Status(StatusCode.ERROR))
            raise


@contextmanager
def request_span(method: str, path: str, headers: Mapping[str, str]) -> Iterator[trace.Span]:
    """The root of an HTTP request's trace (a W3C `traceparent` header from the client
    makes it a child of the client's span). It is current while the request is served:
    the token check and FastMCP's spans for the call become its children."""
    with _tracer.start_as_current_span(
        f"{method} {path}",
        context=_propagator.extract(headers),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method},
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        yield current


def current_trace_id() -> str | None:
    """The current trace's id as 32 hex digits, or None outside a (recorded) trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def parse_headers(text: str) -> dict[str, str]:
    """Headers for the collector in OpenTelemetry's format: `key=value,key2=value2`,
    values URL-encoded. Raises ValueError naming the entry's position, not its value
    (it is usually an API key)."""
    headers: dict[str, str] = {}
    for index, entry in enumerate(text.split(","), start=1):
        if not entry.strip():
            continue
        key, sep, value = entry.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"entry {index} is not key=value")
        headers[unquote(key.strip()).lower()] = unquote(value.strip())
    return headers


def flush(timeout_millis: int = 5000) -> None:
    """Send the spans still batched, if tracing is on (blocks: run it in a thread)."""
    # Here, not at the top: the SDK is loaded when tracing is on (`spanexport`) or now,
    # at exit; a provider of its kind is there only if `install` set one.
    from opentelemetry.sdk.trace import TracerProvider

    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush(timeout_millis)
