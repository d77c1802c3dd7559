"""Incremental Server-Sent Events parsing for JSON streams: feed bytes as they arrive,
get events with their data parsed.

Follows the WHATWG rules: lines end in LF, CRLF or CR; `:` lines are comments
(keep-alives); `data:` lines of one event are joined with LF; a blank line dispatches.
The upstreams' data is JSON, and one event can carry a whole image in base64: each
event's data goes into a `JsonSpool` as it arrives, so no line is held whole and the
image is decoded to a staged blob on the way (a `Spooled` in the event's value). Other
lines are short: `max_line_bytes` bounds them. `[DONE]` is an event without a value.
At the end, an unfinished line or event is a truncated stream.
"""

from dataclasses import dataclass
from typing import Any

from imagegate.core.errors import RelayError
from imagegate.relays.base import StageFn
from imagegate.relays.wire.spool import JsonSpool

_DONE = b"[DONE]"


@dataclass(frozen=True)
class SSEEvent:
    event: str | None
    data: Any
    """The data's JSON value; None for an event without data, or `[DONE]`."""


class _Data:
    """One event's data: its JSON spool, and its first bytes (to tell `[DONE]`)."""

    def __init__(self, stage: StageFn) -> None:
        self.spool = JsonSpool(stage)
        self.head = b""
        self.blank = True

    def write(self, piece: bytes) -> None:
        if len(self.head) < len(_DONE) + 2:
            self.head += piece[: len(_DONE) + 2]
        if self.blank and piece and not piece.isspace():
            self.blank = False
        self.spool.feed(piece)

    def value(self) -> Any:
        if self.blank or self.head.strip() == _DONE:
            self.spool.discard()
            return None
        try:
            return self.spool.finish()
        except ValueError:
            raise RelayError("upstream sent an event whose data is not JSON") from None


class SSEParser:
    def __init__(self, stage: StageFn, max_line_bytes: int = 64 * 1024) -> None:
        self._stage = stage
        self._max_line_bytes = max_line_bytes
        self._line = bytearray()
        """The line being read, unless it is a data line's value (which streams)."""
        self._streaming = False
        """Inside a data line's value: its bytes go straight to `_data`."""
        self._data: _Data | None = None
        self._event: str | None = None
        self._after_cr = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        position, size = 0, len(chunk)
        if self._after_cr and chunk.startswith(b"\n"):
            position = 1  # the LF of a CRLF split across chunks
        self._after_cr = False
        lf = cr = -1
        while position < size:
            # Each is found again only once passed: many short lines in a large chunk
            # would otherwise each scan the chunk to its end.
            if lf < position:
                lf = _find(chunk, b"\n", position)
            if cr < position:
                cr = _find(chunk, b"\r", position)
            end = min(lf, cr)
            self._take(chunk[position:end])
            if end == size:
                break
            position = end + 1
            if chunk[end] == 0x0D:
                if position == size:
                    self._after_cr = True
                elif chunk[position] == 0x0A:
                    position += 1
            event = self._end_line()
            if event is not None:
                events.append(event)
        return events

    def close(self) -> None:
        """Call at end of stream: raises if the stream stopped mid-line or mid-event."""
        unfinished = self._line or self._streaming or self._data is not None
        self.discard()
        if unfinished:
            raise RelayError("upstream stream was cut off in the middle of an event")

    def discard(self) -> None:
        """Remove what an unfinished event staged (the stream failed)."""
        if self._data is not None:
            self._data.spool.discard()
            self._data = None

    def _take(self, piece: bytes) -> None:
        if self._streaming:
            self._write_data(piece)
            return
        self._line += piece
        if self._line.startswith(b"data:") and len(self._line) > 5:
            value = bytes(self._line[5:])
            self._line.clear()
            self._streaming = True
            self._write_data(value[1:] if value.startswith(b" ") else value, first=True)
        elif len(self._line) > self._max_line_bytes:
            raise RelayError(f"upstream sent an event line over {self._max_line_bytes} bytes")

    def _write_data(self, piece: bytes, first: bool = False) -> None:
        if self._data is None:
            self._data = _Data(self._stage)
        elif first:
            self._data.write(b"\n")  # data lines of one event are joined with LF
        self._data.write(piece)

    def _end_line(self) -> SSEEvent | None:
        if self._streaming:
            self._streaming = False
            return None
        line = self._line.decode("utf-8", "replace")
        self._line.clear()
        if not line:
            if self._data is None and self._event is None:
                return None
            data, self._data = self._data, None
            event = SSEEvent(self._event, data.value() if data is not None else None)
            self._event = None
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":  # "data" or "data:" alone: an empty line of data
            self._write_data(b"", first=True)
        elif name == "event":
            self._event = value
        return None


def _find(chunk: bytes, byte: bytes, start: int) -> int:
    found = chunk.find(byte, start)
    return len(chunk) if found < 0 else found
