"""The root span of each MCP request, outside everything else (the token check
included), so that a tool call is one trace; and the last spans sent at shutdown."""

import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegate.core.tracing import flush, request_span


class TracedRequests:
    """A span for each POST to the MCP path, named by method and the configured path.

    Only those: they carry the tool calls. Downloads and uploads are left out, as
    their URLs carry signatures; GET holds a stream open for the session's life.

    At the end of the lifespan it sends the spans still batched: on SIGTERM uvicorn
    stops gracefully and then dies by the signal again, so nothing after `serve`
    (where the exporter would be shut down) runs."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        self._path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, _flushing(send))
            return
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"].rstrip("/") != self._path.rstrip("/")
        ):
            await self.app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in (b"traceparent", b"tracestate")
        }
        with request_span("POST", self._path, headers) as span:

            async def traced_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                await send(message)

            await self.app(scope, receive, traced_send)


def _flushing(send: Send) -> Send:
    async def flushing_send(message: Message) -> None:
        if message["type"] == "lifespan.shutdown.complete":
            await anyio.to_thread.run_sync(flush)
        await send(message)

    return flushing_send
