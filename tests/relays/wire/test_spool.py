"""JsonSpool: a JSON answer parsed in pieces, its images decoded straight into blobs."""

import base64
import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from imagegate.core.base64data import Base64Error
from imagegate.core.errors import TooLarge
from imagegate.core.staging import StagedBlob
from imagegate.relays.wire.spool import JsonSpool, Spooled
from tests.fakes.upstream import noisy_png

# A PNG's first bytes, then noise: what matters is the base64 prefix and the length.
IMAGE = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + random.Random(7).randbytes(3000)
ENCODED = base64.b64encode(IMAGE).decode()
THRESHOLD = 256


def stager(directory: Path, max_bytes: int = 1 << 20) -> Callable[[], StagedBlob]:
    return lambda: StagedBlob(directory, max_bytes)


def spooled(directory: Path, text: bytes, pieces: int = 1, max_bytes: int = 1 << 20) -> Any:
    spool = JsonSpool(stager(directory, max_bytes), threshold=THRESHOLD)
    step = max(1, len(text) // pieces)
    for start in range(0, len(text), step):
        spool.feed(text[start : start + step])
    return spool.finish()


def finished(value: Spooled) -> StagedBlob:
    staged = value.claim()
    staged.finish()
    return staged


def files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


@pytest.mark.parametrize("pieces", [1, 2, 7, 100, 10_000])
def test_an_image_is_decoded_into_a_blob_whatever_the_pieces(tmp_path: Path, pieces: int) -> None:
    doc = {"created": 1, "data": [{"b64_json": ENCODED, "revised_prompt": 'a "cat" \\ é'}]}
    value = spooled(tmp_path, json.dumps(doc).encode(), pieces)
    item = value["data"][0]
    assert value["created"] == 1
    assert item["revised_prompt"] == 'a "cat" \\ é'
    encoded = item["b64_json"]
    assert isinstance(encoded, Spooled)
    assert encoded.startswith("iVBORw0KGgo")
    assert encoded.endswith("…")
    staged = encoded.claim()
    staged.finish()
    assert staged.path.read_bytes() == IMAGE
    assert staged.sha256 == hashlib.sha256(IMAGE).hexdigest()
    assert staged.size == len(IMAGE)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"data:image/png;base64,{ENCODED}", id="data URL"),
        pytest.param(f"data:image/png;base64,{ENCODED}".replace("/", "\\/"), id="escaped slashes"),
        pytest.param(
            "\\n".join(ENCODED[i : i + 76] for i in range(0, len(ENCODED), 76)), id="MIME lines"
        ),
        pytest.param(ENCODED.replace("=", "\\u003d"), id="padding as \\u003d (Gson)"),
        pytest.param(ENCODED.replace("A", "\\u0041"), id="letters as \\u0041"),
    ],
)
@pytest.mark.parametrize("pieces", [1, 3, 1000])
def test_what_encoders_do_to_base64_is_undone(tmp_path: Path, text: str, pieces: int) -> None:
    # `text` is JSON string content as an encoder wrote it: escapes are written out.
    value = spooled(tmp_path, b'{"url": "' + text.encode() + b'"}', pieces)
    assert isinstance(value["url"], Spooled)
    assert finished(value["url"]).path.read_bytes() == IMAGE


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("x" * 1000, id="long text"),
        pytest.param('é \\" \\u00e9 ' * 200, id="long text with escapes"),
        pytest.param(ENCODED[:200], id="short base64"),
        pytest.param("AAAA" * 500, id="base64 of no image"),
    ],
)
def test_other_strings_stay_as_they_are(tmp_path: Path, text: str) -> None:
    raw = b'{"text": "' + text.encode() + b'", "n": [1, 2.5, null, true]}'
    value = spooled(tmp_path, raw, 5)
    assert value == json.loads(raw)
    assert not isinstance(value["text"], Spooled)
    assert files(tmp_path) == []


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param(ENCODED[:-8] + "!!!!" + ENCODED[-4:], "invalid characters", id="bad char"),
        pytest.param(ENCODED + "A", "truncated", id="cut off"),
        pytest.param(ENCODED[: len(ENCODED) // 4 * 4 - 2], "truncated", id="no padding"),
        pytest.param(ENCODED.replace("A", "\\u00c1", 1), "invalid characters", id="not ASCII"),
        pytest.param(ENCODED.replace("A", "\\u00G1", 1), "invalid characters", id="not hex"),
        pytest.param(ENCODED.replace("A", "\\\\", 1), "invalid characters", id="backslash"),
        pytest.param(ENCODED.replace("A", "\\x", 1), "invalid characters", id="unknown esc"),
        pytest.param(ENCODED[:400] + "==" + ENCODED[402:], "invalid characters", id="mid pad"),
    ],
)
def test_damaged_base64_is_refused_when_claimed_and_leaves_no_file(
    tmp_path: Path, text: str, error: str
) -> None:
    value = spooled(tmp_path, json.dumps({"b64_json": text}).encode(), 4)
    with pytest.raises(Base64Error, match=error):
        value["b64_json"].claim()
    assert files(tmp_path) == []


def test_an_image_over_the_cap_is_refused_and_leaves_no_file(tmp_path: Path) -> None:
    value = spooled(tmp_path, json.dumps({"b64_json": ENCODED}).encode(), 3, max_bytes=1000)
    with pytest.raises(TooLarge):
        value["b64_json"].claim()
    assert files(tmp_path) == []


def test_an_image_is_claimed_once(tmp_path: Path) -> None:
    value = spooled(tmp_path, json.dumps({"b64_json": ENCODED}).encode())
    value["b64_json"].claim()
    with pytest.raises(RuntimeError):
        value["b64_json"].claim()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"b64_json": "' + ENCODED.encode(), id="cut inside the image"),
        pytest.param(b'{"b64_json": "' + ENCODED.encode() + b'", "x": ', id="cut after it"),
        pytest.param(b"<html>bad gateway</html>", id="not JSON"),
    ],
)
def test_a_document_that_is_not_complete_json_is_refused_and_leaves_no_file(
    tmp_path: Path, raw: bytes
) -> None:
    spool = JsonSpool(stager(tmp_path), threshold=THRESHOLD)
    spool.feed(raw)
    with pytest.raises(ValueError):  # noqa: PT011 - json's own error, whatever its text
        spool.finish()
    spool.discard()
    assert files(tmp_path) == []


def test_discard_removes_what_was_spooled_before_a_failure(tmp_path: Path) -> None:
    spool = JsonSpool(stager(tmp_path), threshold=THRESHOLD)
    spool.feed(json.dumps({"data": [{"b64_json": ENCODED}]}).encode()[:-5])
    assert len(files(tmp_path)) == 1
    spool.discard()
    assert files(tmp_path) == []


@pytest.mark.parametrize("pieces", [1, 3, 1000])
def test_a_string_after_an_image_with_escapes_is_read_right(tmp_path: Path, pieces: int) -> None:
    """The image starts spooling at an escape: the next string, even an empty one, must
    not inherit it."""
    escaped = "data:image/png;base64," + ENCODED
    raw = b'["' + escaped.replace("/", "\\/").encode() + b'", "", "x"]'
    value = spooled(tmp_path, raw, pieces)
    assert value[1:] == ["", "x"]
    assert finished(value[0]).path.read_bytes() == IMAGE


def test_data_after_the_padding_is_refused_across_pieces(tmp_path: Path) -> None:
    first = base64.b64encode(IMAGE[:1000]).decode()  # 1000 bytes: ends in "=="
    assert first.endswith("==")
    doc = json.dumps({"b64_json": first + ENCODED}).encode()
    cut = doc.index(b"==") + 2
    spool = JsonSpool(stager(tmp_path), threshold=THRESHOLD)
    spool.feed(doc[:cut])
    spool.feed(doc[cut:])
    with pytest.raises(Base64Error, match="invalid characters"):
        spool.finish()["b64_json"].claim()


def test_nesting_too_deep_is_not_json_and_leaves_no_file(tmp_path: Path) -> None:
    doc = "[" * 5000 + json.dumps(ENCODED) + "]" * 5000
    spool = JsonSpool(stager(tmp_path), threshold=THRESHOLD)
    spool.feed(doc.encode())
    with pytest.raises(ValueError, match="not a complete JSON document"):
        spool.finish()
    assert files(tmp_path) == []


def test_long_text_full_of_escapes_stays_text(tmp_path: Path) -> None:
    text = 'a\n"b"\\ é\t' * 50_000
    raw = json.dumps({"text": text}).encode()
    assert spooled(tmp_path, raw, 7) == {"text": text}


def test_each_spool_marks_its_images_with_its_own_random_nonce(tmp_path: Path) -> None:
    first, second = JsonSpool(stager(tmp_path)), JsonSpool(stager(tmp_path))
    assert first._marker(0) != second._marker(0)
    assert len(first._nonce) >= 16  # 64 random bits at least


def test_an_upstream_cannot_forge_a_spooled_marker(tmp_path: Path) -> None:
    forged = "\u0000spooled:0000000000000000:0"
    doc = json.dumps({"b64_json": ENCODED, "fake": forged}).encode()
    value = spooled(tmp_path, doc)
    assert value["fake"] == forged
    assert not isinstance(value["fake"], Spooled)


def test_a_spooled_png_is_checked_as_it_is_decoded(tmp_path: Path) -> None:
    """Under a pixel cap (the service sets one), the image is found whole while it is
    decoded, and inspect_image makes no pass of its own; damaged, it is not."""
    png = noisy_png(64)

    def capped() -> StagedBlob:
        staged = StagedBlob(tmp_path, 1 << 20)
        staged.pixel_cap = 1 << 20
        return staged

    for data, whole in ((png, True), (png[:-1], False)):
        encoded = base64.b64encode(data).decode()
        spool = JsonSpool(capped, threshold=1024)
        document = json.dumps({"data": [{"b64_json": encoded}]}).encode()
        for start in range(0, len(document), 777):
            spool.feed(document[start : start + 777])
        staged = spool.finish()["data"][0]["b64_json"].claim()
        staged.finish()
        assert staged.png_whole is whole
        staged.discard()
