"""A fake image upstream: a real HTTP server on 127.0.0.1 whose answers a test scripts.

Each route takes the next scripted responder for its path, or the default one. Every
request is recorded (method, path, headers, body) so a test can assert what the relay
sent, or that nothing was sent at all.
"""

import asyncio
import base64
import io
import json
import random
import struct
import zlib
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

Responder = Callable[[Request, bytes], Awaitable[Response]]


def png_bytes(size: tuple[int, int] = (64, 64), colour: str = "orange") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def noisy_png(side: int) -> bytes:
    """A PNG of noise, which compresses badly: `side` x `side` pixels, about three
    bytes each (its base64 is past the spool's threshold from about 150 px)."""
    out = io.BytesIO()
    pixels = random.Random(side).randbytes(side * side * 3)
    Image.frombytes("RGB", (side, side), pixels).save(out, format="PNG")
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """A PNG chunk with its length and CRC, to build files no encoder would write."""
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeUpstream:
    base_url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    scripts: dict[str, deque[Responder]] = field(default_factory=lambda: defaultdict(deque))
    defaults: dict[str, Responder] = field(default_factory=dict)

    def script(self, path: str, *responders: Responder) -> None:
        self.scripts[path].extend(responders)

    def calls(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        path = request.url.path
        self.requests.append(Recorded(request.method, path, dict(request.headers), body))
        queue = self.scripts.get(path)
        responder = queue.popleft() if queue else self.defaults.get(path)
        if responder is None:
            return JSONResponse({"error": {"message": f"no script for {path}"}}, 404)
        return await responder(request, body)


# Responders -----------------------------------------------------------------------


def sse(
    events: list[dict[str, Any]], *, cut_after: int | None = None, delay: float = 0.0
) -> Responder:
    """An SSE stream of `events`; `cut_after=k` stops mid-way through event k."""

    async def respond(request: Request, body: bytes) -> Response:
        async def stream() -> AsyncIterator[bytes]:
            yield b": keep-alive\n\n"
            for index, event in enumerate(events):
                line = f"event: {event.get('type', 'message')}\ndata: {json.dumps(event)}\n\n"
                if cut_after is not None and index == cut_after:
                    yield line.encode()[: len(line) // 2]
                    return
                yield line.encode()
                if delay:
                    await asyncio.sleep(delay)

        return StreamingResponse(stream(), media_type="text/event-stream")

    return respond


def responses_events(
    image: bytes, *, partials: int = 0, revised: str = "a revised prompt"
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"type": "response.created", "sequence_number": 0},
        {"type": "response.in_progress", "sequence_number": 1},
        {"type": "response.image_generation_call.in_progress", "sequence_number": 2},
        {"type": "response.image_generation_call.generating", "sequence_number": 3},
    ]
    for index in range(partials):
        events.append(
            {
                "type": "response.image_generation_call.partial_image",
                "partial_image_index": index,
                "partial_image_b64": b64(png_bytes((16, 16), "grey")),
            }
        )
    events += [
        {"type": "response.image_generation_call.completed"},
        {
            "type": "response.output_item.done",
            "item": {
                "type": "image_generation_call",
                "status": "completed",
                "result": b64(image),
                "revised_prompt": revised,
                "size": "1024x1024",
                "output_format": "png",
            },
        },
        {
            "type": "response.completed",
            "response": {"output": [], "usage": {"input_tokens": 10, "output_tokens": 1500}},
        },
    ]
    return events


def json_reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Responder:
    async def respond(request: Request, body: bytes) -> Response:
        return JSONResponse(data, status, headers=headers)

    return respond


def error_reply(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Responder:
    return json_reply({"error": {"code": code, "message": message, "type": "x"}}, status, headers)


def slow(seconds: float, then: Responder) -> Responder:
    async def respond(request: Request, body: bytes) -> Response:
        await asyncio.sleep(seconds)
        return await then(request, body)

    return respond


def held(until: asyncio.Event, then: Responder) -> Responder:
    """Answer only once the test sets `until`: an upstream that is still working."""

    async def respond(request: Request, body: bytes) -> Response:
        await until.wait()
        return await then(request, body)

    return respond


def watched(until: asyncio.Event, hung_up: asyncio.Event, then: Responder) -> Responder:
    """`held`, and `hung_up` is set if the client closes the request first: an upstream
    that can tell whether its caller aborted."""

    async def respond(request: Request, body: bytes) -> Response:
        while not until.is_set():
            if await request.is_disconnected():
                hung_up.set()
                return Response(status_code=499)
            await asyncio.sleep(0.02)
        return await then(request, body)

    return respond


def images_reply(*images: bytes, revised: str | None = None) -> Responder:
    data = [
        {"b64_json": b64(image), **({"revised_prompt": revised} if revised else {})}
        for image in images
    ]
    return json_reply({"created": 1, "data": data, "usage": {"total_tokens": 42}})


@asynccontextmanager
async def running_upstream() -> AsyncIterator[FakeUpstream]:
    from tests.e2e.harness import free_socket

    fake = FakeUpstream()
    app = Starlette(routes=[Route("/{path:path}", fake.handle, methods=["GET", "POST"])])
    sock = free_socket()
    fake.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield fake
    finally:
        server.should_exit = True
        await task
        sock.close()
