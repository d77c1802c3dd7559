"""A request body over the MCP SDK's limit gets a JSON-RPC error that says what to do.

The SDK answers 413 with a plain-text body, which clients report as "Server returned
an error response". A JSON-RPC error body at the same status reaches the caller (and
its model) as the error message instead.
"""

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from imagegate.web.rewrite import json_body_for

MCP_MAX_REQUEST_BYTES = 4 * 1024 * 1024
"""The MCP SDK's limit on one request body (streamable HTTP); FastMCP keeps it."""

TOO_LARGE = (
    "request too large: one MCP message to this server can be at most 4 MiB, so an image "
    "sent as base64 in a tool argument can be about 3 MB. Upload it instead: "
    "create_upload_link gives a URL to PUT the file to (curl -T), and the asset id it "
    "answers works in edit_image. Or name a stored image by its asset id; over stdio, a "
    "file under input_root."
)

_BODY = json.dumps(
    {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": TOO_LARGE}}
).encode()


class ExplainTooLarge:
    """Only for the MCP endpoint at `path`: other routes (uploads) say it their way."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.path.rstrip("/"):
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, json_body_for(send, 413, _BODY))
