"""ASGI wrappers around the MCP app."""

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MISSING_TOKEN_BODY = json.dumps(
    {
        "error": "invalid_request",
        "error_description": "no bearer token: send the header 'Authorization: Bearer <token>'",
    }
).encode()


class ExplainMissingToken:
    """Give a 401 for a request without an Authorization header a JSON body with an
    error code. The WWW-Authenticate challenge itself is left as RFC 6750 wants it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(
            name.lower() == b"authorization" for name, _ in scope["headers"]
        ):
            await self.app(scope, receive, send)
            return
        replacing = False

        async def send_explained(message: Message) -> None:
            nonlocal replacing
            if message["type"] == "http.response.start" and message["status"] == 401:
                replacing = True
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() not in (b"content-length", b"content-type")
                ]
                headers += [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(MISSING_TOKEN_BODY)).encode()),
                ]
                await send({**message, "headers": headers})
            elif message["type"] == "http.response.body" and replacing:
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": MISSING_TOKEN_BODY})
            else:
                await send(message)

        await self.app(scope, receive, send_explained)
