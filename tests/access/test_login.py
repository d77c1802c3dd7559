"""The authorization code flow's pure parts: PKCE, the authorization URL, client
authentication. The flow itself runs against the real provider in tests/e2e."""

import base64
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from imagegate.access.identity import Verified, verified
from imagegate.access.login import Login, LoginFailed, authorization_url, basic_auth, pkce_challenge
from imagegate.config import GallerySettings, OIDCSettings
from imagegate.core.ids import Subject


def test_pkce_challenge_is_rfc_7636s_example() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_the_authorization_url_asks_for_a_code_with_pkce_for_the_audience() -> None:
    url = authorization_url(
        "https://idp.test/auth?tenant=a",
        "imagegate-gallery",
        "https://images.example.com/gallery/callback",
        ("openid", "email"),
        "https://images.example.com/mcp",
        "the-state",
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
    )
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    assert (parts.netloc, parts.path) == ("idp.test", "/auth")
    assert query == {
        "tenant": "a",
        "response_type": "code",
        "client_id": "imagegate-gallery",
        "redirect_uri": "https://images.example.com/gallery/callback",
        "scope": "openid email",
        "resource": "https://images.example.com/mcp",
        "state": "the-state",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }


def test_client_secret_basic_form_encodes_each_part() -> None:
    header = basic_auth("gallery:one", "s3cr/t+=")
    decoded = base64.b64decode(header.removeprefix("Basic ")).decode()
    assert decoded == "gallery%3Aone:s3cr%2Ft%2B%3D"


ISSUER = "https://idp.example.test"
AUDIENCE = "https://images.example.com/mcp"


class Verifier:
    """Accepts one token, as the real OIDCVerifier accepts a valid JWT."""

    def __init__(self, good: str) -> None:
        self.good = good

    async def verify(self, token: str) -> Verified | None:
        return verified(Subject("oidc:alice")) if token == self.good else None


def provider(
    token_status: int = 200,
    token_body: dict[str, Any] | None = None,
    token_endpoint: str = f"{ISSUER}/token",
) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(
                200,
                json={
                    "issuer": ISSUER,
                    "authorization_endpoint": f"{ISSUER}/auth",
                    "token_endpoint": token_endpoint,
                },
            )
        body = token_body if token_body is not None else {"access_token": "good"}
        return httpx.Response(token_status, json=body)

    return httpx.MockTransport(handle), seen


def login(transport: httpx.MockTransport) -> Login:
    oidc = OIDCSettings(issuer=ISSUER, audience=AUDIENCE)
    gallery = GallerySettings(client_id="imagegate-gallery")
    http = httpx.AsyncClient(transport=transport)
    verifier: Any = Verifier("good")
    return Login(oidc, gallery, "s3cret" * 4, "https://i.test/gallery/callback", http, verifier)


async def test_a_code_becomes_the_person_the_token_names() -> None:
    transport, seen = provider()
    person = await login(transport).finish("the-code", "the-verifier")
    assert person.identity.subject == "oidc:alice"
    token_request = seen[-1]
    form = parse_qs(token_request.content.decode())
    assert form == {
        "grant_type": ["authorization_code"],
        "code": ["the-code"],
        "redirect_uri": ["https://i.test/gallery/callback"],
        "code_verifier": ["the-verifier"],
        "resource": [AUDIENCE],
    }
    assert token_request.headers["authorization"] == basic_auth("imagegate-gallery", "s3cret" * 4)


@pytest.mark.parametrize(
    ("transport", "said"),
    [
        (provider(token_body={"access_token": "for-someone-else"})[0], "was not accepted"),
        (provider(token_body={"token_type": "Bearer"})[0], "sent no access token"),
        (provider(400, {"error": "invalid_grant"})[0], "refused the login (invalid_grant)"),
        (provider(401, {"error": "<b>bad</b>"})[0], "refused the login (HTTP 401)"),
        (provider(token_endpoint="http://idp.example.test/token")[0], "not set up for browser"),
    ],
)
async def test_a_login_that_cannot_finish_says_why(
    transport: httpx.MockTransport, said: str
) -> None:
    with pytest.raises(LoginFailed, match=re.escape(said)):
        await login(transport).finish("the-code", "the-verifier")
