"""JSON request bodies that carry image files as base64 without loading them.

`json_body(obj)` serialises `obj`, in which `ImageData(path, ...)` stands for a file to
embed as base64 (bare, or as a data: URL). The result streams: text parts, then each
file read and encoded 48 KiB at a time. Its exact length is known up front, so the
upstream gets a Content-Length, not chunked encoding.
"""

import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pybase64

_CHUNK = 48 * 1024  # a multiple of 3: base64 of each chunk needs no padding


@dataclass(frozen=True)
class ImageData:
    path: Path
    mime_type: str
    data_url: bool = True

    def encoded_length(self) -> int:
        size = self.path.stat().st_size
        prefix = len(self._prefix())
        return prefix + 4 * ((size + 2) // 3)

    def _prefix(self) -> bytes:
        return f"data:{self.mime_type};base64,".encode() if self.data_url else b""


@dataclass(frozen=True)
class JsonBody:
    parts: list[bytes | ImageData]
    length: int

    async def stream(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            if isinstance(part, bytes):
                yield part
                continue
            yield part._prefix()
            async with await anyio.open_file(part.path, "rb") as source:
                while chunk := await source.read(_CHUNK):
                    yield pybase64.b64encode(chunk)  # SIMD: 50x binascii's speed


def json_body(obj: Any) -> JsonBody:
    """`obj` as a streamed JSON body; each ImageData in it becomes its base64 string.

    Each ImageData is first serialised as a marker string, `NUL nonce:index NUL`, and
    found again in the JSON text by its exact encoding, quotes included. Text from a
    caller can't forge one: real NULs are removed from strings first, and a literal
    backslash-u-0000 typed by a caller is encoded with its backslash escaped.
    """
    images: list[ImageData] = []
    nonce = secrets.token_hex(8)

    def mark(value: Any) -> Any:
        if isinstance(value, ImageData):
            images.append(value)
            return f"\x00{nonce}:{len(images) - 1}\x00"
        if isinstance(value, str):
            return value.replace("\x00", "")
        if isinstance(value, dict):
            return {key: mark(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [mark(item) for item in value]
        return value

    text = json.dumps(mark(obj), separators=(",", ":")).encode()
    marker = re.compile(rb'"\\u0000' + nonce.encode() + rb":(\d+)\\u0000\"")
    parts: list[bytes | ImageData] = []
    start = 0
    for found in marker.finditer(text):
        parts.append(text[start : found.start() + 1])  # up to and with the opening quote
        parts.append(images[int(found[1])])
        start = found.end() - 1  # from the closing quote
    parts.append(text[start:])
    length = sum(len(p) if isinstance(p, bytes) else p.encoded_length() for p in parts)
    return JsonBody(parts, length)
