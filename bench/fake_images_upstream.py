"""A zero-latency OpenAI Images API upstream for benchmarks.

POST /v1/images/generations answers at once with a JSON body
`{"created", "data": [{"b64_json"}], "size", "output_format", "usage"}` holding one
noisy PNG (random pixels, so it barely compresses) of one of the SIDES below. Which
one: a `[px=N]` tag in the prompt when there is one, else the request's `size` (its
width), else 1024. The tag is there because not every server lets a caller ask for any
size (image-generation-mcp offers 1024x1024, 1920x1920 and 2880x2880 only), and a
comparison needs both servers to get the same bytes.

Every answer is a different image file: a `tEXt` chunk with a serial number sits right
after the PNG header, so a content-addressed store cannot skip writing a copy (real
upstreams never send the same image twice). The chunk and the header are a multiple of
3 bytes long, so the base64 of everything else is encoded once at start and each answer
only encodes its 30-byte chunk: the upstream stays ~free.

GET /v1/models lists a few image models, for servers that discover models at start;
GET /bench/png-bytes gives each side's PNG size in bytes.

    python bench/fake_images_upstream.py PORT
"""

import base64
import io
import itertools
import json
import random
import re
import struct
import sys
import time
import zlib
from collections.abc import AsyncIterator

import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

SIDES = (256, 1024, 2048)
_TAG = re.compile(r"\[px=(\d+)\]")
_MODELS = ("gpt-image-2", "gpt-image-1.5", "gpt-image-1-mini", "gpt-image-1")
_HEADER = 8 + 25  # PNG signature + IHDR chunk: 33 bytes, a multiple of 3
_SERIAL = b"bench\x00%012d"  # tEXt data: 18 bytes, so the chunk is 30
_PIECE = 1 << 20


def noise_png(side: int) -> bytes:
    """Random RGB pixels, PNG at the fastest compression: about 3 bytes per pixel."""
    rng = random.Random(side)
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def serial_chunk(number: int) -> bytes:
    data = _SERIAL % number
    body = b"tEXt" + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


class Answer:
    """One side's JSON answer, split around the part that changes per answer."""

    def __init__(self, png: bytes, side: int) -> None:
        self.png_bytes = len(png) + len(serial_chunk(0))
        marker = "@@IMAGE@@"
        document = json.dumps(
            {
                "created": int(time.time()),
                "data": [{"b64_json": marker}],
                "size": f"{side}x{side}",
                "quality": "low",
                "background": "opaque",
                "output_format": "png",
                "usage": {
                    "input_tokens": 12,
                    "output_tokens": 272,
                    "total_tokens": 284,
                    "input_tokens_details": {"text_tokens": 12, "image_tokens": 0},
                },
            }
        ).encode()
        before, after = document.split(marker.encode())
        self.head = before + base64.b64encode(png[:_HEADER])
        rest = base64.b64encode(png[_HEADER:]) + after
        self.tail = [rest[start : start + _PIECE] for start in range(0, len(rest), _PIECE)]
        self.length = len(self.head) + len(base64.b64encode(serial_chunk(0))) + len(rest)

    def pieces(self, number: int) -> list[bytes]:
        return [self.head + base64.b64encode(serial_chunk(number)), *self.tail]


def side_for(payload: object) -> int:
    if not isinstance(payload, dict):
        return 1024
    tag = _TAG.search(str(payload.get("prompt", "")))
    if tag is not None:
        wanted = int(tag.group(1))
    else:
        try:
            wanted = int(str(payload.get("size", "1024x1024")).split("x")[0])
        except ValueError:
            wanted = 1024
    return min(SIDES, key=lambda side: abs(side - wanted))


def build_app(answers: dict[int, Answer]) -> Starlette:
    serials = itertools.count(1)

    async def generations(request: Request) -> Response:
        try:
            payload = json.loads(await request.body())
        except ValueError:
            payload = None
        answer = answers[side_for(payload)]
        pieces = answer.pieces(next(serials))

        async def body() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece

        return StreamingResponse(
            body(),
            media_type="application/json",
            headers={"content-length": str(answer.length)},
        )

    async def models(request: Request) -> Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "bench"} for m in _MODELS]
        return JSONResponse({"object": "list", "data": data})

    async def png_bytes(request: Request) -> Response:
        return JSONResponse({str(side): answer.png_bytes for side, answer in answers.items()})

    return Starlette(
        routes=[
            Route("/v1/images/generations", generations, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/bench/png-bytes", png_bytes, methods=["GET"]),
        ]
    )


def main() -> None:
    port = int(sys.argv[1])
    answers = {side: Answer(noise_png(side), side) for side in SIDES}
    uvicorn.run(build_app(answers), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
