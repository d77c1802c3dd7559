"""SSE of JSON data: lines split anywhere, any line ending, each event's data parsed as
it arrives (and an image in it decoded on the way)."""

import base64
import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from imagegate.core.errors import RelayError
from imagegate.core.staging import StagedBlob
from imagegate.relays.wire.spool import Spooled
from imagegate.relays.wire.sse import SSEEvent, SSEParser


@pytest.fixture
def stage(tmp_path: Path) -> Callable[[], StagedBlob]:
    return lambda: StagedBlob(tmp_path, 1 << 24)


def feed_all(stage: Callable[[], StagedBlob], chunks: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser(stage)
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    parser.close()
    return events


def test_events_comments_and_multiline_data(stage: Callable[[], StagedBlob]) -> None:
    stream = b': keep-alive\n\nevent: a\ndata: [1,\ndata: 2]\n\ndata: {"x": 1}\n\n'
    assert feed_all(stage, [stream]) == [SSEEvent("a", [1, 2]), SSEEvent(None, {"x": 1})]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_any_line_ending_and_any_split(stage: Callable[[], StagedBlob], newline: bytes) -> None:
    stream = b'data: "hello"' + newline + newline + b'data:"world"' + newline + newline
    for cut in range(1, len(stream)):
        assert feed_all(stage, [stream[:cut], stream[cut:]]) == [
            SSEEvent(None, "hello"),
            SSEEvent(None, "world"),
        ], cut


def test_named_events_with_crlf_split_anywhere(stage: Callable[[], StagedBlob]) -> None:
    """`event:` lines with CRLF endings, the stream cut at every byte (a CR and its LF
    land in different chunks at one of the cuts), and in three pieces."""
    stream = (
        b'event: response.created\r\ndata: {"a": 1}\r\n\r\n'
        b": keep-alive\r\n\r\n"
        b'event: response.completed\r\ndata: ["one",\r\ndata: "two"]\r\n\r\n'
    )
    expected = [
        SSEEvent("response.created", {"a": 1}),
        SSEEvent("response.completed", ["one", "two"]),
    ]
    for cut in range(1, len(stream)):
        assert feed_all(stage, [stream[:cut], stream[cut:]]) == expected, cut
        for second in range(cut + 1, len(stream)):
            pieces = [stream[:cut], stream[cut:second], stream[second:]]
            assert feed_all(stage, pieces) == expected, (cut, second)


def test_an_event_name_does_not_leak_into_the_next_event(
    stage: Callable[[], StagedBlob],
) -> None:
    stream = b"event: first\ndata: 1\n\ndata: 2\n\n"
    assert feed_all(stage, [stream]) == [SSEEvent("first", 1), SSEEvent(None, 2)]


@pytest.mark.parametrize("data", [b"data: [DONE]\n\n", b"data:\n\n", b"event: ping\n\n"])
def test_done_and_empty_events_have_no_value(stage: Callable[[], StagedBlob], data: bytes) -> None:
    (event,) = feed_all(stage, [data])
    assert event.data is None


def test_an_image_in_an_event_is_decoded_on_the_way(
    stage: Callable[[], StagedBlob], tmp_path: Path
) -> None:
    image = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + random.Random(5).randbytes(3_000_000)
    payload = json.dumps({"type": "done", "item": {"result": base64.b64encode(image).decode()}})
    stream = f"event: done\ndata: {payload}\n\n".encode()
    chunks = [stream[i : i + 65536] for i in range(0, len(stream), 65536)]
    (event,) = feed_all(stage, chunks)
    result = event.data["item"]["result"]
    assert isinstance(result, Spooled)
    staged = result.claim()
    staged.finish()
    assert staged.path.read_bytes() == image


IMAGE_EVENT = b'data: {"result": "' + base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(90000))


@pytest.mark.parametrize(
    "stream",
    [b"data: half a li", b'data: {"complete": "line"}\n', IMAGE_EVENT, IMAGE_EVENT + b'"}\n'],
)
def test_a_stream_cut_mid_event_is_an_error_and_leaves_nothing(
    stage: Callable[[], StagedBlob], tmp_path: Path, stream: bytes
) -> None:
    parser = SSEParser(stage)
    parser.feed(stream)
    with pytest.raises(RelayError, match="cut off in the middle of an event"):
        parser.close()
    assert list(tmp_path.iterdir()) == []


def test_data_that_is_not_json_is_an_error(stage: Callable[[], StagedBlob]) -> None:
    with pytest.raises(RelayError, match="not JSON"):
        feed_all(stage, [b"data: not json\n\n"])


def test_line_cap(stage: Callable[[], StagedBlob]) -> None:
    parser = SSEParser(stage, max_line_bytes=100)
    with pytest.raises(RelayError, match="over 100 bytes"):
        parser.feed(b"event: " + b"x" * 200)
