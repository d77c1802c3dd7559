"""ASGI wrappers around the MCP app."""

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

NO_TOKEN_HELP = "no bearer token: send the header 'Authorization: Bearer <token>'"  # noqa: S105 - help text
REJECTED_HELP = (
    "the bearer token was not accepted: unknown, expired or revoked. Check the token "
    "your client sends: a mapped token from 'imagegate token new', the server's static "
    "token, or an access token from your OIDC provider for this server's audience"
)
_DESCRIPTION = re.compile(rb'error_description="[^"]*"')


def _body(error: str, description: str) -> bytes:
    return json.dumps({"error": error, "error_description": description}).encode()


class ExplainUnauthorized:
    """Give every 401 a JSON body with an error code and a description that fits how
    this server authenticates. Without an Authorization header the challenge stays bare,
    as RFC 6750 wants it. A rejected token gets our description instead of the SDK's,
    which tells OAuth clients to re-register, unless the server offers interactive login,
    where that advice is right."""

    def __init__(self, app: ASGIApp, oauth_wording: bool = False) -> None:
        self.app = app
        self._oauth_wording = oauth_wording

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        has_token = any(name.lower() == b"authorization" for name, _ in scope["headers"])
        if has_token and self._oauth_wording:
            await self.app(scope, receive, send)
            return
        body = (
            _body("invalid_token", REJECTED_HELP)
            if has_token
            else _body("invalid_request", NO_TOKEN_HELP)
        )
        replacing = False

        async def send_explained(message: Message) -> None:
            nonlocal replacing
            if message["type"] == "http.response.start" and message["status"] == 401:
                replacing = True
                headers = [
                    (
                        name,
                        _explained_challenge(value)
                        if name.lower() == b"www-authenticate"
                        else value,
                    )
                    for name, value in message.get("headers", [])
                    if name.lower() not in (b"content-length", b"content-type")
                ]
                headers += [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                await send({**message, "headers": headers})
            elif message["type"] == "http.response.body" and replacing:
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": body})
            else:
                await send(message)

        await self.app(scope, receive, send_explained)


def _explained_challenge(value: bytes) -> bytes:
    return _DESCRIPTION.sub(b'error_description="' + REJECTED_HELP.encode() + b'"', value)
