"""JSON answers read as they arrive, each image in them decoded straight to disk.

An upstream's JSON answer carries its images as base64 strings of many megabytes.
Read whole, one image costs the JSON text, the parsed string and the decoded bytes in
memory at once, and a long `json.loads` on the event loop. `JsonSpool` takes the
answer in pieces instead: a string that grows past `threshold` and starts like image
data (`data:image/...;base64,` or the base64 of a PNG, JPEG, WebP or GIF signature) is
decoded slice by slice into a staged blob, hashed and size-capped on the way. The rest
of the document, now small, is parsed at the end, with a `Spooled` in each such
string's place.

A `Spooled` is a `str` (the first characters of the original, then "…"), so relay
code that checks types and prefixes works unchanged; `staged_from_base64` takes its
blob instead of decoding. A blob that no relay takes (an extra image, an answer that
reports an error) is removed by `service.generation.produce`, which removes whatever a
relay staged and did not return.
"""

import binascii
import json
import re
import secrets
from collections.abc import Callable
from typing import Any

from imagegate.core.base64data import DATA_URL, Base64Error, decode_strict
from imagegate.core.errors import ImagegateError
from imagegate.core.staging import StagedBlob

THRESHOLD = 64 * 1024
"""A string this long is image data or text worth keeping whole; shorter ones stay."""

_IMAGE_PREFIX = re.compile(f"(?:{DATA_URL})?(?:iVBORw0KGg|/9j/|UklGR|R0lGOD)".encode())
"""Base64 of the PNG, JPEG, RIFF (WebP) and GIF signatures, maybe in a data: URL."""
_DATA_URL = re.compile(DATA_URL.encode())
# What an escape stands for inside base64: a slash some encoders escape, and line breaks
# (MIME-style base64), which are dropped. Besides u00XX, any other escape is damage.
_TWO_BYTE_ESCAPES = {b"/": b"/", b"n": b"", b"r": b"", b"t": b""}
_HEX4 = re.compile(rb"[0-9a-fA-F]{4}")
_TEXT_RUN = re.compile(rb'(?:[^"\\]+|\\.)*', re.DOTALL)
"""A string's content up to its closing quote (or a backslash that ends the piece)."""


class Spooled(str):
    """A long string of the answer, decoded into `staged` (or `error`, why not)."""

    staged: StagedBlob | None
    error: ImagegateError | Base64Error | None

    def claim(self) -> StagedBlob:
        """The finished blob, which the caller now owns; raises what decoding hit."""
        if self.error is not None:
            raise self.error
        staged, self.staged = self.staged, None
        if staged is None:
            raise RuntimeError("a spooled image can be claimed once")
        return staged


def discard_spooled(value: object) -> None:
    """Remove the blob of a spooled string nobody will claim (a partial image)."""
    if isinstance(value, Spooled) and value.staged is not None:
        value.staged.discard()
        value.staged = None


def _spooled(
    text: str, staged: StagedBlob | None, error: ImagegateError | Base64Error | None
) -> Spooled:
    value = Spooled(text)
    value.staged, value.error = staged, error
    return value


class _Base64Sink:
    """Base64 text in, decoded bytes out to a staged blob, four characters at a time."""

    def __init__(self, staged: StagedBlob) -> None:
        self.staged = staged
        staged.check_as_png()
        self._carry = b""
        """Characters short of a whole group of four."""
        self._held = b""
        """An escape cut off at the end of the last piece."""
        self._started = False
        self._padded = False
        """Padding has been seen: nothing may follow it."""
        self.error: ImagegateError | Base64Error | None = None

    def write(self, raw: bytes) -> None:
        """Raw JSON string content: escapes still in, maybe cut anywhere."""
        if self.error is not None:
            return
        try:
            self._write(self._unescape(raw))
        except (Base64Error, ImagegateError) as err:
            self.error = err

    def _unescape(self, raw: bytes) -> bytes:
        raw, self._held = self._held + raw, b""
        if b"\\" not in raw:
            return raw
        if b"\\\\" in raw:  # an escaped backslash: never in base64
            raise Base64Error("invalid characters")
        last = raw.rfind(b"\\")
        if last == len(raw) - 1 or (raw[last + 1 : last + 2] == b"u" and len(raw) - last < 6):
            raw, self._held = raw[:last], raw[last:]
        if b"\\u" not in raw:
            # Each backslash starts a two-byte escape: the common ones in C.
            raw = raw.replace(b"\\/", b"/")
            for line_break in (b"\\n", b"\\r", b"\\t"):
                raw = raw.replace(line_break, b"")
            if b"\\" in raw:
                raise Base64Error("invalid characters")
            return raw
        out = bytearray()
        position = 0
        while (slash := raw.find(b"\\", position)) >= 0:
            out += raw[position:slash]
            letter = raw[slash + 1 : slash + 2]
            if letter in _TWO_BYTE_ESCAPES:
                out += _TWO_BYTE_ESCAPES[letter]
                position = slash + 2
                continue
            # \u00XX, as some encoders write "=" (\u003d): ASCII only.
            code = raw[slash + 2 : slash + 6]
            if letter != b"u" or not _HEX4.fullmatch(code) or int(code, 16) >= 0x80:
                raise Base64Error("invalid characters")
            out.append(int(code, 16))
            position = slash + 6
        out += raw[position:]
        return bytes(out)

    def _write(self, text: bytes) -> None:
        if not self._started:
            self._started = True
            match = _DATA_URL.match(text)
            if match:
                text = text[match.end() :]
        if b" " in text:  # raw spaces are valid JSON; line breaks came as escapes
            text = text.replace(b" ", b"")
        if not text:
            return
        if self._padded:
            raise Base64Error("invalid characters")  # data after the padding
        text = self._carry + text
        whole = len(text) - len(text) % 4
        self._carry = text[whole:]
        if whole:
            self._padded = text[whole - 1] == 0x3D  # "="
            try:
                self.staged.write(decode_strict(text[:whole]))
            except (binascii.Error, ValueError):
                raise Base64Error("invalid characters") from None

    def close(self) -> None:
        """The string ended; `staged_from_base64` finishes the blob once claimed."""
        if self.error is None and (self._carry or self._held):
            # From an upstream, missing padding is a sign of a cut-off answer.
            self.error = Base64Error("truncated")
        if self.error is None and self.staged.size == 0:
            self.error = Base64Error("empty")


class JsonSpool:
    """Feed the bytes of one JSON document in order, then `finish()` for its value."""

    def __init__(self, stage: Callable[[], StagedBlob], threshold: int = THRESHOLD) -> None:
        self._stage = stage
        self._threshold = threshold
        self._doc = bytearray()
        """The document, each spooled string replaced by a marker string."""
        self._in_string = False
        self._escaped = False
        """The last byte fed was a string's unfinished backslash."""
        self._string = bytearray()
        """The string being read, raw (escapes in), until it is spooled."""
        self._text = False
        """The string being read is past the threshold and not an image: text."""
        self._sink: _Base64Sink | None = None
        self._head = b""
        """The first bytes of the string being spooled, for its `Spooled` text."""
        self._sinks: list[tuple[_Base64Sink, bytes]] = []
        self._nonce = secrets.token_hex(8)

    def feed(self, data: bytes) -> None:
        position, end = 0, len(data)
        quote = -1
        while position < end:
            if not self._in_string:
                quote = data.find(b'"', position)
                if quote < 0:
                    self._doc += data[position:]
                    return
                self._doc += data[position : quote + 1]
                self._in_string, position = True, quote + 1
                continue
            if self._sink is not None:
                # Base64 has no quote and no escaped quote: the next quote ends it (an
                # escaped one would be damage, which the sink refuses all the same).
                # The sink undoes escapes in bulk.
                quote = data.find(b'"', position)
                if quote < 0:
                    self._sink.write(data[position:])
                    return
                self._sink.write(data[position:quote])
                self._end_string()
                position = quote + 1
                continue
            if self._escaped:
                # The byte after a backslash is escaped, whatever it is (a quote too).
                self._take(data[position : position + 1])
                self._escaped, position = False, position + 1
                continue
            if self._text:
                # Long text (no image): runs and escapes in C, not one by one in Python.
                run = _TEXT_RUN.match(data, position)
                assert run is not None  # it matches the empty string
                self._take(data[position : run.end()])
                position = run.end()
                if position == end:
                    return
                if data[position] == 0x5C:  # a backslash whose byte is in the next piece
                    self._take(b"\\")
                    self._escaped, position = True, position + 1
                    continue
                self._end_string()
                position += 1
                continue
            # bytes.find is a memchr; a regex for either byte is fifty times slower. The
            # next quote is found again only once passed: a string of many escapes
            # would otherwise be scanned to its end at each one.
            if quote < position:
                quote = data.find(b'"', position)
                if quote < 0:
                    quote = end
            stop = data.find(b"\\", position, quote)
            if stop >= 0:  # a backslash: keep it with the escaped byte
                self._take(data[position : stop + 1])
                self._escaped, position = True, stop + 1
                continue
            if quote == end:
                self._take(data[position:])
                return
            self._take(data[position:quote])
            self._end_string()
            position = quote + 1

    def feed_all(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            self.feed(piece)

    def finish(self) -> Any:
        """The document's value; raises ValueError when it is not complete JSON (and
        then removes what it spooled)."""
        try:
            if self._in_string:
                raise ValueError("the document ends inside a string")
            value = json.loads(self._doc)
            markers = {self._marker(i): self._spooled(*sink) for i, sink in enumerate(self._sinks)}
            value = _replace(value, markers) if markers else value
        except (ValueError, RecursionError):  # json's own, and nesting too deep for it
            self.discard()
            raise ValueError("not a complete JSON document") from None
        finally:
            self._doc = bytearray()
        self._sinks = []
        return value

    def discard(self) -> None:
        """Remove every blob spooled so far (the answer failed before `finish`)."""
        for sink, _ in self._sinks:
            sink.staged.discard()
        self._sinks = []
        if self._sink is not None:
            self._sink.staged.discard()
            self._sink = None

    def _spooled(self, sink: _Base64Sink, head: bytes) -> Spooled:
        sink.close()
        text = head.decode("ascii", "replace") + "…"
        if sink.error is not None:
            sink.staged.discard()
            return _spooled(text, None, sink.error)
        return _spooled(text, sink.staged, None)

    def _take(self, raw: bytes) -> None:
        if self._sink is not None:
            self._sink.write(raw)
            return
        self._string += raw
        if self._text or len(self._string) < self._threshold:
            return
        if _looks_like_image(self._string):
            self._sink = _Base64Sink(self._stage())
            self._head = bytes(self._string[:40])
            self._sink.write(bytes(self._string))
            self._string = bytearray()
        else:
            self._text = True

    def _end_string(self) -> None:
        # A string that began spooling at an escape leaves it to the sink: the next
        # string must not start escaped.
        self._in_string = self._escaped = self._text = False
        if self._sink is None:
            self._doc += self._string
            self._doc += b'"'
            self._string = bytearray()
            return
        self._sinks.append((self._sink, self._head))
        # The opening quote is in already; the NUL goes in as its JSON escape.
        self._doc += json.dumps(self._marker(len(self._sinks) - 1))[1:].encode()
        self._sink = None

    def _marker(self, index: int) -> str:
        # The nonce keeps an upstream from sending a string that looks like a marker.
        return f"\u0000spooled:{self._nonce}:{index}"


def _looks_like_image(raw: bytearray) -> bool:
    # Some encoders escape every slash: `data:image\/png` and `\/9j\/` are image data too.
    return _IMAGE_PREFIX.match(bytes(raw[:80]).replace(b"\\/", b"/")) is not None


def _replace(value: Any, markers: dict[str, Spooled]) -> Any:
    if isinstance(value, str):
        return markers.get(value, value)
    if isinstance(value, list):
        return [_replace(item, markers) for item in value]
    if isinstance(value, dict):
        return {key: _replace(item, markers) for key, item in value.items()}
    return value
