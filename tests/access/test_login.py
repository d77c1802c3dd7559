"""The authorization code flow's pure parts: PKCE, the authorization URL, client
authentication. The flow itself runs against the real provider in tests/e2e."""

import base64
from urllib.parse import parse_qs, urlsplit

from imagegate.access.login import authorization_url, basic_auth, pkce_challenge


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
