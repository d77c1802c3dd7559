"""ASGI wrappers around the MCP app."""

import json
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from imagegate.web.rewrite import json_body_for

NO_TOKEN_HELP = "no bearer token: send the header 'Authorization: Bearer <token>'"  # noqa: S105 - help text
REJECTED_HELP = (
    "the bearer token was not accepted: unknown, expired or revoked. Check the token "
    "your client sends: a mapped token from 'imagegate token new', the server's static "
    "token, or an access token from your OIDC provider for this server's audience"
)
_DESCRIPTION = re.compile(rb'error_description="[^"]*"')


def _body(error: str, description: str) -> bytes:
    return json.dumps({"error": error, "error_description": description}).encode()


_REJECTED_BODY = _body("invalid_token", REJECTED_HELP)
_NO_TOKEN_BODY = _body("invalid_request", NO_TOKEN_HELP)
_REJECTED_DESCRIPTION = b'error_description="' + REJECTED_HELP.encode() + b'"'


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
        body = _REJECTED_BODY if has_token else _NO_TOKEN_BODY
        explained = json_body_for(
            send,
            401,
            body,
            lambda name, value: (
                _explained_challenge(value) if name == b"www-authenticate" else value
            ),
        )
        await self.app(scope, receive, explained)


def _explained_challenge(value: bytes) -> bytes:
    return _DESCRIPTION.sub(_REJECTED_DESCRIPTION, value)
