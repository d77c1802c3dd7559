import base64
import json
from pathlib import Path

import pytest

from imagegate.relays.wire.body import ImageData, json_body


async def collect(body_stream: object) -> bytes:
    out = b""
    async for chunk in body_stream:  # type: ignore[attr-defined]
        out += chunk
    return out


async def test_files_stream_as_base64_with_exact_length(tmp_path: Path) -> None:
    first = tmp_path / "a.png"
    first.write_bytes(bytes(range(256)) * 1000 + b"tail")  # not a multiple of the chunk
    second = tmp_path / "b.jpg"
    second.write_bytes(b"\xff\xd8\xff" + b"j" * 10)
    body = json_body(
        {
            "prompt": 'quotes " and \\ and \x00 nul',
            "images": [ImageData(first, "image/png"), ImageData(second, "image/jpeg", False)],
        }
    )
    raw = await collect(body.stream())
    assert len(raw) == body.length
    decoded = json.loads(raw)
    assert decoded["prompt"] == 'quotes " and \\ and  nul'
    url, bare = decoded["images"]
    assert url == "data:image/png;base64," + base64.b64encode(first.read_bytes()).decode()
    assert bare == base64.b64encode(second.read_bytes()).decode()


async def test_plain_json() -> None:
    body = json_body({"a": [1, 2], "b": None})
    assert json.loads(await collect(body.stream())) == {"a": [1, 2], "b": None}


@pytest.mark.parametrize(
    "prompt",
    [
        "a literal \\u0000 in the prompt",
        "\\u0000",
        '"\\u0000" 0:0 \\u00000\\u0000',
        "nul \x00 and \\u0000 together",
    ],
)
async def test_text_that_looks_like_a_marker_stays_text(tmp_path: Path, prompt: str) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG" + b"p" * 100)
    body = json_body({"prompt": prompt, "images": [ImageData(image, "image/png")], "n": 1})
    raw = await collect(body.stream())
    assert len(raw) == body.length
    decoded = json.loads(raw)
    assert decoded["prompt"] == prompt.replace("\x00", "")
    assert decoded["images"] == [
        "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
    ]
