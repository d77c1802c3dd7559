"""A zero-latency Responses API upstream for benchmarks: every POST /v1/responses gets
the same pre-encoded SSE stream carrying one image. Run: python bench/fake_upstream.py
PORT IMAGE.png"""

import base64
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


def sse_payload(image: bytes) -> list[bytes]:
    events = [
        {"type": "response.created"},
        {"type": "response.image_generation_call.in_progress"},
        {"type": "response.image_generation_call.generating"},
        {
            "type": "response.output_item.done",
            "item": {
                "type": "image_generation_call",
                "status": "completed",
                "result": base64.b64encode(image).decode(),
            },
        },
        {"type": "response.completed", "response": {"output": []}},
    ]
    return [f"data: {json.dumps(event)}\n\n".encode() for event in events]


def main() -> None:
    port, image_path = int(sys.argv[1]), Path(sys.argv[2])
    chunks = sse_payload(image_path.read_bytes())

    async def responses(request: Request) -> Response:
        await request.body()

        async def stream() -> AsyncIterator[bytes]:
            for chunk in chunks:
                for start in range(0, len(chunk), 65536):
                    yield chunk[start : start + 65536]

        return StreamingResponse(stream(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/responses", responses, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
