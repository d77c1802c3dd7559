"""The Prometheus series of one server, in one registry of its own.

Every layer records into the `Metrics` object the composition root hands it; what is
served at /metrics (web.metrics) is this registry and nothing else. A registry per
server, not prometheus_client's global one: tests and several servers in one process
must not count into each other's series.

Label values come from closed sets only: names from the configuration (relays, their
currencies), from the code (tools, outcomes, limits, sources) or fixed words. Never a
subject, token, prompt, asset or job id, or URL: each of those would make a new series
per value, without bound, and publish who did what to anyone who may scrape.

prometheus_client is imported when a `Metrics` is made, not with this module: the
relays' modules import this one, and `check-config` needs them, not the series.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

Source = Literal["generated", "edited", "uploaded"]
Direction = Literal["download", "upload"]

_GENERATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600)
"""Seconds: a placeholder image takes milliseconds, an upstream's a few seconds to
minutes (timeouts end them at 300 s by default)."""
_UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


def status_class(status: int | None) -> str:
    """'2xx' .. '5xx' for an HTTP status, 'error' for no answer (refused connection,
    timeout, broken stream): five values whatever the upstream sends."""
    if status is None or not 100 <= status <= 599:
        return "error"
    return f"{status // 100}xx"


class Metrics:
    """The series; each method records one kind of event with its (bounded) labels."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._tool_calls = Counter(
            "imagegate_tool_calls",
            "MCP tool calls, by tool and outcome (the audit log's outcome).",
            ["tool", "outcome"],
            registry=registry,
        )
        self._tool_calls_in_flight = Gauge(
            "imagegate_tool_calls_in_flight",
            "MCP tool calls being answered now.",
            registry=registry,
        )
        self._quota_refusals = Counter(
            "imagegate_quota_refusals",
            "Calls and uploads refused by a quota, by the limit that refused them.",
            ["limit"],
            registry=registry,
        )
        self._generation_seconds = Histogram(
            "imagegate_generation_seconds",
            "Seconds from a generation's relay call to its images made, successful ones.",
            ["relay"],
            buckets=_GENERATION_BUCKETS,
            registry=registry,
        )
        self._upstream_seconds = Histogram(
            "imagegate_upstream_request_seconds",
            "Seconds of one upstream HTTP request (each try), to the end of its response.",
            ["relay"],
            buckets=_UPSTREAM_BUCKETS,
            registry=registry,
        )
        self._upstream_requests = Counter(
            "imagegate_upstream_requests",
            "Upstream HTTP requests (each try), by relay and status class.",
            ["relay", "status_class"],
            registry=registry,
        )
        self._upstream_retries = Counter(
            "imagegate_upstream_retries",
            "Upstream requests sent again after a retryable failure, by relay.",
            ["relay"],
            registry=registry,
        )
        self._images_stored = Counter(
            "imagegate_images_stored",
            "Images stored, by source (generated, edited, uploaded).",
            ["source"],
            registry=registry,
        )
        self._bytes_stored = Counter(
            "imagegate_image_bytes_stored",
            "Bytes of the images stored, by source.",
            ["source"],
            registry=registry,
        )
        self._spend_estimated = Counter(
            "imagegate_spend_estimated",
            "Estimated cost of the generations upstreams answered, from the price "
            "tables, by relay and currency.",
            ["relay", "currency"],
            registry=registry,
        )
        self._spend_reported = Counter(
            "imagegate_spend_reported",
            "Cost upstreams reported for their generations (OpenRouter), by relay and currency.",
            ["relay", "currency"],
            registry=registry,
        )
        self._jobs_running = Gauge(
            "imagegate_jobs_running",
            "Generation jobs running in this process.",
            registry=registry,
        )
        self._transfer_bytes = Counter(
            "imagegate_transfer_bytes",
            "Image bytes sent by download links and received by upload links.",
            ["direction"],
            registry=registry,
        )

    def exposition(self) -> bytes:
        """The text format a Prometheus server scrapes."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def tool_call(self, tool: str, outcome: str) -> None:
        self._tool_calls.labels(tool, outcome).inc()

    @contextmanager
    def tool_call_in_flight(self) -> Iterator[None]:
        with self._tool_calls_in_flight.track_inprogress():
            yield

    def quota_refused(self, limit: str) -> None:
        self._quota_refusals.labels(limit).inc()

    def generated(self, relay: str, seconds: float) -> None:
        self._generation_seconds.labels(relay).observe(seconds)

    def upstream_request(self, relay: str, status: int | None, seconds: float) -> None:
        """One try of an upstream request ended: its status (None: no answer)."""
        self._upstream_requests.labels(relay, status_class(status)).inc()
        self._upstream_seconds.labels(relay).observe(seconds)

    def upstream_retry(self, relay: str) -> None:
        self._upstream_retries.labels(relay).inc()

    def stored(self, source: Source, byte_size: int) -> None:
        self._images_stored.labels(source).inc()
        self._bytes_stored.labels(source).inc(byte_size)

    def spent(
        self, relay: str, currency: str, estimated: float | None, reported: float | None
    ) -> None:
        """A generation's cost; a figure that is unknown adds nothing."""
        if estimated is not None:
            self._spend_estimated.labels(relay, currency).inc(estimated)
        if reported is not None:
            self._spend_reported.labels(relay, currency).inc(reported)

    @contextmanager
    def job_running(self) -> Iterator[None]:
        with self._jobs_running.track_inprogress():
            yield

    def transferred(self, direction: Direction, byte_count: int) -> None:
        self._transfer_bytes.labels(direction).inc(byte_count)
