"""The OIDC verifier against hostile and honest tokens, with an injected HTTP client
serving discovery and a JWKS the test controls."""

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from imagegate.access.identity import Verified
from imagegate.access.oidc import OIDCVerifier
from imagegate.config import OIDCSettings

ISSUER = "https://idp.example.test"
AUDIENCE = "https://images.example.test/mcp"


class FakeIdP:
    """Discovery + JWKS over httpx.MockTransport; counts JWKS fetches."""

    def __init__(self) -> None:
        self.keys = [RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256"})]
        self.jwks_fetches = 0
        self.issuer_in_discovery = ISSUER
        self.jwks_uri = f"{ISSUER}/jwks"

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(
                200, json={"issuer": self.issuer_in_discovery, "jwks_uri": self.jwks_uri}
            )
        if request.url.path == "/jwks":
            self.jwks_fetches += 1
            return httpx.Response(200, json={"keys": [k.as_dict(private=False) for k in self.keys]})
        return httpx.Response(404)

    def token(
        self, key: RSAKey | None = None, header: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 300, "iat": now}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode({"alg": "RS256", "kid": key.kid, **(header or {})}, body, key)


@pytest.fixture
def idp() -> FakeIdP:
    return FakeIdP()


def verifier(idp: FakeIdP, **overrides: Any) -> OIDCVerifier:
    settings = OIDCSettings(issuer=ISSUER, audience=AUDIENCE, **overrides)
    client = httpx.AsyncClient(transport=httpx.MockTransport(idp.handler))
    return OIDCVerifier(settings, client)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_valid_token(idp: FakeIdP) -> None:
    caller = await verifier(idp).verify(idp.token(groups=["designers", "ops"]))
    assert isinstance(caller, Verified)
    assert caller.identity.subject == "oidc:alice"
    assert caller.identity.groups == {"designers", "ops"}
    assert caller.identity.token_scopes == frozenset()
    assert caller.expires_at is not None


async def test_subject_and_groups_claims_are_configurable(idp: FakeIdP) -> None:
    v = verifier(idp, subject_claim="email", groups_claim="roles")
    caller = await v.verify(idp.token(email="alice@example.com", roles="a b"))
    assert caller is not None
    assert caller.identity.subject == "oidc:alice@example.com"
    assert caller.identity.groups == {"a", "b"}
    assert await v.verify(idp.token()) is None  # no email claim: refused
    # An address the provider marks unverified could be anyone's.
    unverified = idp.token(email="alice@example.com", email_verified=False)
    assert await v.verify(unverified) is None
    verified = idp.token(email="alice@example.com", email_verified=True)
    assert await v.verify(verified) is not None


def hs256_with_public_key(idp: FakeIdP) -> str:
    """The classic confusion attack: sign HS256 with the RSA public key as the secret."""
    public_pem = idp.keys[0].as_pem(private=False)
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now + 300}
    signing_input = b64({"alg": "HS256", "kid": "k1"}) + "." + b64(claims)
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


HOSTILE = {
    "expired": lambda idp: idp.token(exp=int(time.time()) - 120),
    "not-yet-valid": lambda idp: idp.token(nbf=int(time.time()) + 600),
    "no-exp": lambda idp: idp.token(exp=None),
    "wrong-issuer": lambda idp: idp.token(iss="https://evil.example.test"),
    "wrong-audience": lambda idp: idp.token(aud="https://other.example.test"),
    "no-audience": lambda idp: idp.token(aud=None),
    "alg-none": lambda idp: b64({"alg": "none", "kid": "k1"}) + "." + b64({"sub": "x"}) + ".",
    "hs256-public-key": hs256_with_public_key,
    "unknown-kid": lambda idp: idp.token(
        key=RSAKey.generate_key(2048, parameters={"kid": "rogue"})
    ),
    "known-kid-wrong-key": lambda idp: idp.token(
        key=RSAKey.generate_key(2048, parameters={"kid": "k1"})
    ),
    "garbage": lambda idp: "not.a.jwt",
    "not-a-jwt": lambda idp: "plain-opaque-token",
    "empty-subject": lambda idp: idp.token(sub=" "),
}


@pytest.mark.parametrize("name", HOSTILE)
async def test_hostile_tokens_are_refused(idp: FakeIdP, name: str) -> None:
    assert await verifier(idp).verify(HOSTILE[name](idp)) is None


async def test_leeway_accepts_slight_clock_skew(idp: FakeIdP) -> None:
    token = idp.token(nbf=int(time.time()) + 10)
    assert await verifier(idp, leeway_seconds=30).verify(token) is not None
    assert await verifier(idp, leeway_seconds=0).verify(token) is None


async def test_algorithm_outside_the_allow_list(idp: FakeIdP) -> None:
    token = idp.token()
    assert await verifier(idp, algorithms=["ES256"]).verify(token) is None


async def test_key_rotation_refreshes_once(idp: FakeIdP) -> None:
    v = verifier(idp)
    assert await v.verify(idp.token()) is not None
    assert idp.jwks_fetches == 1
    new_key = RSAKey.generate_key(2048, parameters={"kid": "k2", "alg": "RS256"})
    idp.keys.append(new_key)
    assert await v.verify(idp.token(key=new_key)) is not None
    assert idp.jwks_fetches == 2
    assert await v.verify(idp.token(key=new_key)) is not None
    assert idp.jwks_fetches == 2  # cached now


async def test_unknown_kids_cannot_hammer_the_provider(idp: FakeIdP) -> None:
    v = verifier(idp)
    assert await v.verify(idp.token()) is not None
    for index in range(5):
        rogue = RSAKey.generate_key(2048, parameters={"kid": f"rogue-{index}"})
        assert await v.verify(idp.token(key=rogue)) is None
    assert idp.jwks_fetches == 2  # one refresh, then rate-limited


async def test_discovery_naming_another_issuer_is_refused(idp: FakeIdP) -> None:
    idp.issuer_in_discovery = "https://evil.example.test"
    assert await verifier(idp).verify(idp.token()) is None
    assert idp.jwks_fetches == 0


async def test_an_https_issuer_with_a_plain_http_key_set_is_refused(idp: FakeIdP) -> None:
    # Keys fetched over plain http could be swapped on the way: every token would pass.
    idp.jwks_uri = "http://idp.example.test/jwks"
    assert await verifier(idp).verify(idp.token()) is None
    assert idp.jwks_fetches == 0


async def test_unreachable_provider_refuses_and_is_not_hammered() -> None:
    attempts = []

    def down(request: httpx.Request) -> httpx.Response:
        attempts.append(request.url)
        raise httpx.ConnectError("connection refused", request=request)

    settings = OIDCSettings(issuer=ISSUER, audience=AUDIENCE)
    v = OIDCVerifier(settings, httpx.AsyncClient(transport=httpx.MockTransport(down)))
    token = FakeIdP().token()
    assert await v.verify(token) is None
    assert await v.verify(token) is None
    assert len(attempts) == 1
