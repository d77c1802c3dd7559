"""Incremental Server-Sent Events parsing: feed bytes as they arrive, get events.

Follows the WHATWG rules: lines end in LF, CRLF or CR; `:` lines are comments
(keep-alives); `data:` lines of one event are joined with LF; a blank line
dispatches. A `data:` line may be many megabytes (a whole base64 image), so there is
no small line cap; `max_line_bytes` bounds it. At the end, an unterminated line is a
truncated stream.
"""

from dataclasses import dataclass

from imagegate.core.errors import RelayError


@dataclass(frozen=True)
class SSEEvent:
    event: str | None
    data: str


class SSEParser:
    def __init__(self, max_line_bytes: int = 64 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self._scan_from = 0
        self._event: str | None = None
        self._data: list[str] = []
        self._max_line_bytes = max_line_bytes
        self._after_cr = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the LF of a CRLF split across chunks
        self._after_cr = False
        self._buffer += chunk
        events: list[SSEEvent] = []
        start = 0
        position = self._scan_from
        while True:
            end = _line_end(self._buffer, position)
            if end < 0:
                break
            # Decode straight from the buffer: a data line can be a whole image in
            # base64, and slicing a bytearray (then bytes()) would copy it twice more.
            with memoryview(self._buffer) as view:
                line = str(view[start:end], "utf-8", "replace")
            terminator = self._buffer[end : end + 2]
            if terminator == b"\r\n":
                step = 2
            elif terminator == b"\r" and end + 1 == len(self._buffer):
                step = 1
                self._after_cr = True
            else:
                step = 1
            start = position = end + step
            event = self._line(line)
            if event is not None:
                events.append(event)
        if start:
            # A new buffer for the (short) rest: del on a bytearray keeps its capacity,
            # and after a multi-megabyte line that capacity is an image's worth.
            self._buffer = self._buffer[start:]
        self._scan_from = len(self._buffer)
        if self._scan_from > self._max_line_bytes:
            raise RelayError(f"upstream sent an event line over {self._max_line_bytes} bytes")
        return events

    def close(self) -> None:
        """Call at end of stream: raises if the stream stopped mid-line."""
        if self._buffer or self._data:
            raise RelayError("upstream stream was cut off in the middle of an event")

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data and self._event is None:
                return None
            event = SSEEvent(self._event, "\n".join(self._data))
            self._event, self._data = None, []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None


def _line_end(buffer: bytearray, start: int) -> int:
    lf = buffer.find(b"\n", start)
    cr = buffer.find(b"\r", start)
    if cr < 0:
        return lf
    if lf < 0:
        return cr
    return min(lf, cr)
