"""The test OpenID provider's login side (tests/oidc/provider.mjs), over plain HTTP: the
code flow with PKCE for confidential clients, loopback redirects on any port, the login
form, and the audiences a client's tokens carry."""

import base64
import json
from typing import Any

import httpx
import pytest

from tests.e2e.idp import (
    AUDIENCE,
    GALLERY,
    LIBRECHAT,
    LIBRECHAT_ALONE,
    LIBRECHAT_AUDIENCE,
    LoginClient,
    LoginRefused,
    Provider,
    pkce_pair,
)


def decoded(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A JWT's header and claims, unverified (the e2e tests verify with imagegate)."""
    header, claims, _ = token.split(".")
    parts = [base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in (header, claims)]
    return json.loads(parts[0]), json.loads(parts[1])


def test_a_person_and_the_client_of_that_name_are_the_same_subject(provider: Provider) -> None:
    header, person = decoded(provider.user_token("alice"))
    _, client = decoded(provider.token("alice"))
    assert header["alg"] == "RS256"
    assert header["typ"] == "at+jwt"
    assert (person["sub"], client["sub"]) == ("alice", "alice")
    assert person["groups"] == client["groups"] == ["designers"]
    assert person["email"] == client["email"] == "alice@example.test"
    assert person["client_id"] == GALLERY.client_id
    assert person["scope"] == "images:generate"
    assert person["iss"] == provider.issuer


@pytest.mark.parametrize(
    ("client", "audience"),
    [
        (GALLERY, AUDIENCE),
        (LIBRECHAT, [AUDIENCE, LIBRECHAT_AUDIENCE]),  # extra_audiences
        (LIBRECHAT_ALONE, LIBRECHAT_AUDIENCE),  # audience_only
    ],
)
def test_a_clients_tokens_carry_its_audiences(
    provider: Provider, client: LoginClient, audience: str | list[str]
) -> None:
    _, claims = decoded(provider.user_token("dave", client))
    assert claims["aud"] == audience
    assert claims["sub"] == "dave"


@pytest.mark.parametrize(("account", "password"), [("alice", "dave-password-0123"), ("eve", "x")])
def test_a_wrong_password_or_an_unknown_person_gets_no_code(
    provider: Provider, account: str, password: str
) -> None:
    with pytest.raises(LoginRefused, match="the login form answered 200"):
        provider.user_token(account, password=password)


def authorize(provider: Provider, redirect_uri: str, **changes: str | None) -> httpx.Response:
    _, challenge = pkce_pair()
    url = httpx.URL(provider.authorization_url(GALLERY, redirect_uri, "st", challenge))
    params = dict(url.params)
    for name, value in changes.items():
        if value is None:
            params.pop(name)
        else:
            params[name] = value
    return httpx.get(url.copy_with(params=params))


@pytest.mark.parametrize(
    ("redirect_uri", "accepted"),
    [
        ("http://127.0.0.1/gallery/callback", True),  # as registered
        ("http://127.0.0.1:43117/gallery/callback", True),  # any port on loopback
        ("http://127.0.0.1:43117/gallery/other", False),
        ("http://127.0.0.1:43117/gallery/callback/x", False),
        ("http://localhost:43117/gallery/callback", False),  # another host
        ("https://127.0.0.1:43117/gallery/callback", False),
    ],
)
def test_loopback_redirect_uris_match_on_any_port_only(
    provider: Provider, redirect_uri: str, accepted: bool
) -> None:
    response = authorize(provider, redirect_uri)
    if accepted:
        assert response.status_code == 303
        assert response.headers["location"].startswith("/interaction/")
    else:
        assert response.status_code == 400
        assert "location" not in response.headers


def test_pkce_is_required(provider: Provider) -> None:
    redirect_uri = "http://127.0.0.1:43117/gallery/callback"
    response = authorize(provider, redirect_uri, code_challenge=None, code_challenge_method=None)
    assert response.status_code == 303
    location = httpx.URL(response.headers["location"])
    assert str(location).startswith(redirect_uri)
    assert location.params["error"] == "invalid_request"
    assert "PKCE" in location.params["error_description"]


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({}, 200, None),
        ({"code_verifier": "x" * 43}, 400, "invalid_grant"),
        ({"client_secret": "wrong-secret"}, 401, "invalid_client"),
        ({"redirect_uri": "http://127.0.0.1:1/gallery/callback"}, 400, "invalid_grant"),
        ({"resource": "https://other.test/mcp"}, 400, "invalid_target"),
    ],
)
def test_a_code_buys_a_token_only_with_its_verifier_and_the_clients_secret(
    provider: Provider, change: dict[str, str], status: int, error: str | None
) -> None:
    verifier, challenge = pkce_pair()
    redirect_uri = "http://127.0.0.1:43117/gallery/callback"
    code = provider.login_code("alice", GALLERY, redirect_uri, "st", challenge)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
        "client_id": GALLERY.client_id,
        "client_secret": GALLERY.secret,
        "resource": AUDIENCE,
    }
    response = httpx.post(f"{provider.issuer}/token", data=form | change)
    assert response.status_code == status, response.text
    if error is not None:
        assert response.json()["error"] == error
    else:
        assert decoded(response.json()["access_token"])[1]["sub"] == "alice"


def test_the_interaction_pages_need_the_browsers_cookie(provider: Provider) -> None:
    response = httpx.get(f"{provider.issuer}/interaction/made-up")
    assert response.status_code == 400
    assert "interaction session" in response.text
