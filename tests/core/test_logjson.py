import json
import logging
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from imagegate.core.logjson import JsonLines


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("broke\nacross lines")
        except RuntimeError:
            exc_info = sys.exc_info()
    made = logging.LogRecord(
        "imagegate.test", logging.WARNING, __file__, 1, message, args, exc_info
    )
    made.created = 1_780_000_000.25
    return made


def test_one_json_object_per_record() -> None:
    line = JsonLines().format(record("tool %s refused: %s", "get_image", "not found"))
    assert json.loads(line) == {
        "time": "2026-05-28T20:26:40.250+00:00",
        "level": "WARNING",
        "logger": "imagegate.test",
        "message": "tool get_image refused: not found",
    }


def test_an_exception_is_one_field_on_the_same_line() -> None:
    line = JsonLines().format(record("failed", exc=True))
    assert "\n" not in line
    data = json.loads(line)
    assert data["exception"].startswith("Traceback (most recent call last):")
    assert data["exception"].rstrip().endswith("RuntimeError: broke\nacross lines")


def test_a_message_with_newlines_stays_one_line() -> None:
    line = JsonLines().format(record("first\nsecond"))
    assert "\n" not in line
    assert json.loads(line)["message"] == "first\nsecond"


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    provider = TracerProvider()
    yield provider
    provider.shutdown()


def test_the_trace_id_while_a_span_is_current(provider: TracerProvider) -> None:
    with provider.get_tracer("test").start_as_current_span("call") as span:
        line = JsonLines().format(record("inside"))
    assert json.loads(line)["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "trace_id" not in json.loads(JsonLines().format(record("outside")))
