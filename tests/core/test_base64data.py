"""Base64 image data into a staged blob: what is accepted, and what each refusal says."""

import base64
from pathlib import Path

import pytest

from imagegate.core.base64data import Base64Error, decode_into
from imagegate.core.staging import StagedBlob
from tests.fakes.upstream import noisy_png

DATA = bytes(range(256)) * 5 + b"tail!"  # not a multiple of 3: its base64 is padded


def decoded(tmp_path: Path, text: str, allow_unpadded: bool = True) -> bytes:
    staged = StagedBlob(tmp_path, max_bytes=10**6)
    decode_into(staged, text, allow_unpadded)
    staged.finish()
    return staged.path.read_bytes()


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(DATA).decode(),
        "data:image/png;base64," + base64.b64encode(DATA).decode(),
        base64.b64encode(DATA).decode().rstrip("="),  # padding left out
        base64.encodebytes(DATA).decode(),  # MIME line breaks
    ],
    ids=["bare", "data-url", "unpadded", "line-breaks"],
)
def test_accepted_forms(tmp_path: Path, text: str) -> None:
    assert decoded(tmp_path, text) == DATA


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("QUJD" + "Q", "truncated"),
        ("QU!D", "invalid characters"),
        ("data:text/plain;base64,aGVsbG8=", "must start with data:image/<type>;base64,"),
    ],
)
def test_refusals_say_why(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(Base64Error, match=reason):
        decoded(tmp_path, text)


def test_from_an_upstream_missing_padding_is_a_cut_off_answer(tmp_path: Path) -> None:
    with pytest.raises(Base64Error, match="truncated"):
        decoded(tmp_path, base64.b64encode(DATA).decode().rstrip("="), allow_unpadded=False)


def test_padding_is_refused_anywhere_but_the_end_even_at_a_slice_boundary(
    tmp_path: Path,
) -> None:
    """Decoded 1 MiB of text at a time: a slice that ends in "==" must not let more
    data follow."""
    first = base64.b64encode(bytes(786_430)).decode()  # exactly 1 MiB of text, "==" last
    assert len(first) == 1 << 20
    assert first.endswith("==")
    with pytest.raises(Base64Error, match="invalid characters"):
        decoded(tmp_path, first + "QUJD")


def test_decoded_png_is_checked_as_it_is_written_under_a_pixel_cap(tmp_path: Path) -> None:
    png = noisy_png(64)

    staged = StagedBlob(tmp_path, max_bytes=10**6)
    staged.pixel_cap = 1 << 20
    decode_into(staged, base64.b64encode(png).decode())
    staged.finish()
    assert staged.png_whole
