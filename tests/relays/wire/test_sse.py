import json

import pytest

from imagegate.core.errors import RelayError
from imagegate.relays.wire.sse import SSEEvent, SSEParser


def feed_all(chunks: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    parser.close()
    return events


def test_events_comments_and_multiline_data() -> None:
    stream = b': keep-alive\n\nevent: a\ndata: one\ndata: two\n\ndata: {"x": 1}\n\n'
    assert feed_all([stream]) == [SSEEvent("a", "one\ntwo"), SSEEvent(None, '{"x": 1}')]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_any_line_ending_and_any_split(newline: bytes) -> None:
    stream = b"data: hello" + newline + newline + b"data: world" + newline + newline
    for cut in range(1, len(stream)):
        assert feed_all([stream[:cut], stream[cut:]]) == [
            SSEEvent(None, "hello"),
            SSEEvent(None, "world"),
        ], cut


def test_named_events_with_crlf_split_anywhere() -> None:
    """`event:` lines with CRLF endings, the stream cut at every byte (a CR and its LF
    land in different chunks at one of the cuts), and in three pieces."""
    stream = (
        b'event: response.created\r\ndata: {"a": 1}\r\n\r\n'
        b": keep-alive\r\n\r\n"
        b"event: response.completed\r\ndata: one\r\ndata: two\r\n\r\n"
    )
    expected = [
        SSEEvent("response.created", '{"a": 1}'),
        SSEEvent("response.completed", "one\ntwo"),
    ]
    for cut in range(1, len(stream)):
        assert feed_all([stream[:cut], stream[cut:]]) == expected, cut
        for second in range(cut + 1, len(stream)):
            pieces = [stream[:cut], stream[cut:second], stream[second:]]
            assert feed_all(pieces) == expected, (cut, second)


def test_an_event_name_does_not_leak_into_the_next_event() -> None:
    stream = b"event: first\ndata: 1\n\ndata: 2\n\n"
    assert feed_all([stream]) == [SSEEvent("first", "1"), SSEEvent(None, "2")]


def test_a_multi_megabyte_line_split_in_small_chunks() -> None:
    payload = json.dumps({"result": "A" * 3_000_000})
    stream = f"data: {payload}\n\n".encode()
    chunks = [stream[i : i + 65536] for i in range(0, len(stream), 65536)]
    (event,) = feed_all(chunks)
    assert event.data == payload


@pytest.mark.parametrize("stream", [b"data: half a li", b"data: complete line\n"])
def test_a_stream_cut_mid_event_is_an_error(stream: bytes) -> None:
    parser = SSEParser()
    parser.feed(stream)
    with pytest.raises(RelayError, match="cut off in the middle of an event"):
        parser.close()


def test_line_cap() -> None:
    parser = SSEParser(max_line_bytes=100)
    with pytest.raises(RelayError, match="over 100 bytes"):
        parser.feed(b"data: " + b"x" * 200)
