"""Start the real OpenID provider (tests/oidc, npm oidc-provider) on 127.0.0.1.

Two kinds of callers get tokens from it, both for `AUDIENCE`:
- CLIENTS, with the client_credentials grant (`Provider.token`): `sub` is the client id;
- people in ACCOUNTS, who log in through the provider's form with the authorization code
  flow and PKCE, as a browser does (`Provider.user_token` does it over plain HTTP, the
  browser tests in Chromium): `sub` is the account name.
An account has the name, groups and email of the client of that name, so both kinds of
token for "alice" name the same subject, `oidc:alice` (or `oidc:alice@example.test`).
"""

import base64
import hashlib
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
from joserfc.jwk import RSAKey

OIDC_DIR = Path(__file__).parents[1] / "oidc"
AUDIENCE = "https://imagegate.test/mcp"
LIBRECHAT_AUDIENCE = "librechat"
"""The audience of LibreChat's own tokens (its client id, as Keycloak's audience mapper
puts it)."""


@dataclass
class Client:
    client_id: str
    secret: str
    groups: list[str]

    @property
    def email(self) -> str:
        return f"{self.client_id}@example.test"


CLIENTS = {
    "alice": Client("alice", "alice-secret-0123456789", ["designers"]),
    "dave": Client("dave", "dave-secret-0123456789", ["designers"]),
    "root": Client("root", "root-secret-0123456789", ["imagegate-admins"]),
    "nobody": Client("nobody", "nobody-secret-0123456789", []),
}

ACCOUNTS = {name: f"{name}-password-0123" for name in CLIENTS}
"""Who can log in at the provider's form, and their passwords; groups and email are
those of the client of the same name."""


@dataclass(frozen=True)
class LoginClient:
    """A confidential client of the authorization code flow (PKCE S256 required).

    Its loopback redirect URI matches on any port (RFC 8252), so an app on a random
    port registers `http://127.0.0.1/path` and sends `http://127.0.0.1:PORT/path`."""

    client_id: str
    secret: str
    redirect_uri: str
    extra_audiences: tuple[str, ...] = ()
    """Added to its access tokens' aud, after AUDIENCE."""
    audience_only: str | None = None
    """Its access tokens' aud instead of AUDIENCE."""


GALLERY = LoginClient(
    "imagegate-gallery", "gallery-secret-0123456789", "http://127.0.0.1/gallery/callback"
)
LIBRECHAT = LoginClient(
    "librechat",
    "librechat-secret-0123456789",
    "http://127.0.0.1/oauth/openid/callback",
    extra_audiences=(LIBRECHAT_AUDIENCE,),
)
"""LibreChat with the provider's audience mapper adding imagegate's audience."""
LIBRECHAT_ALONE = LoginClient(
    "librechat-alone",
    "librechat-alone-secret-0123456789",
    "http://127.0.0.1/oauth/openid/callback",
    audience_only=LIBRECHAT_AUDIENCE,
)
"""LibreChat without that mapper: its users' tokens are for LibreChat only."""
LOGIN_CLIENTS = {c.client_id: c for c in (GALLERY, LIBRECHAT, LIBRECHAT_ALONE)}


class LoginRefused(Exception):
    """The provider's login form answered without redirecting (a wrong password)."""


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class Provider:
    issuer: str
    key: RSAKey
    """The provider's private signing key: the tests also sign hostile tokens with it."""

    def token(self, client: str) -> str:
        entry = CLIENTS[client]
        response = httpx.post(
            f"{self.issuer}/token",
            data={
                "grant_type": "client_credentials",
                "client_id": entry.client_id,
                "client_secret": entry.secret,
                "resource": AUDIENCE,
            },
        )
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token

    def authorization_url(
        self,
        client: LoginClient,
        redirect_uri: str,
        state: str,
        code_challenge: str,
        scope: str = "openid images:generate",
    ) -> str:
        """Where a browser starts the login (the provider's authorization endpoint)."""
        query = {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
            "resource": AUDIENCE,
        }
        return f"{self.issuer}/auth?{urlencode(query)}"

    def exchange(
        self, client: LoginClient, code: str, redirect_uri: str, verifier: str
    ) -> dict[str, Any]:
        """The token endpoint's answer for an authorization code (raises on an error)."""
        response = httpx.post(
            f"{self.issuer}/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
                "client_id": client.client_id,
                "client_secret": client.secret,
                "resource": AUDIENCE,
            },
        )
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    def login_code(
        self,
        account: str,
        client: LoginClient,
        redirect_uri: str,
        state: str,
        code_challenge: str,
        password: str | None = None,
    ) -> str:
        """The authorization code for a person who logs in through the provider's form,
        over plain HTTP as a browser would (cookies, redirects, the form's POST)."""
        url = self.authorization_url(client, redirect_uri, state, code_challenge)
        with httpx.Client() as browser:
            response, landed = _follow(browser, browser.get(url), redirect_uri)
            if landed is None:  # the login form
                response.raise_for_status()
                form = {"username": account, "password": password or ACCOUNTS[account]}
                posted = browser.post(f"{response.url}/login", data=form)
                response, landed = _follow(browser, posted, redirect_uri)
        if landed is None:
            raise LoginRefused(f"the login form answered {response.status_code}")
        query = parse_qs(urlsplit(landed).query)
        if query.get("state") != [state] or "code" not in query:
            raise LoginRefused(f"no code in the redirect: {query}")
        return query["code"][0]

    def user_token(
        self, account: str, client: LoginClient = GALLERY, password: str | None = None
    ) -> str:
        """A person's access token: the code flow with PKCE through the login form."""
        verifier, challenge = pkce_pair()
        # Any port: the registered loopback URI matches them all.
        redirect_uri = client.redirect_uri.replace("127.0.0.1/", "127.0.0.1:9/", 1)
        state = secrets.token_urlsafe(16)
        code = self.login_code(account, client, redirect_uri, state, challenge, password)
        token: str = self.exchange(client, code, redirect_uri, verifier)["access_token"]
        return token


def _follow(
    browser: httpx.Client, response: httpx.Response, redirect_uri: str
) -> tuple[httpx.Response, str | None]:
    """Follows the provider's redirects; stops at a page, or at the app's redirect URI
    (returned: nothing listens there)."""
    while response.is_redirect:
        location = urljoin(str(response.url), response.headers["location"])
        if location.startswith(redirect_uri):
            return response, location
        response = browser.get(location)
    return response, None


def provider_config(key: RSAKey) -> dict[str, Any]:
    """The JSON config of the provider (tests/oidc/README.md has its shape)."""
    return {
        "port": 0,
        "resource": AUDIENCE,
        "scopes": ["images:generate"],
        "jwks": {"keys": [key.as_dict(private=True)]},
        "accounts": {
            name: {
                "password": password,
                "groups": CLIENTS[name].groups,
                "email": CLIENTS[name].email,
            }
            for name, password in ACCOUNTS.items()
        },
        "clients": [
            {
                "client_id": c.client_id,
                "client_secret": c.secret,
                "groups": c.groups,
                "email": c.email,
            }
            for c in CLIENTS.values()
        ]
        + [
            {
                "client_id": c.client_id,
                "client_secret": c.secret,
                "redirect_uris": [c.redirect_uri],
                "token_endpoint_auth_method": "client_secret_basic",
                **({"extra_audiences": list(c.extra_audiences)} if c.extra_audiences else {}),
                **({"audience_only": c.audience_only} if c.audience_only else {}),
            }
            for c in LOGIN_CLIENTS.values()
        ],
    }


@contextmanager
def oidc_provider(workdir: Path) -> Iterator[Provider]:
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        raise RuntimeError("the test OpenID provider is not installed: run `make test`")
    key = RSAKey.generate_key(2048, parameters={"kid": "idp-1", "alg": "RS256", "use": "sig"})
    config_path = workdir / "oidc.json"
    config_path.write_text(json.dumps(provider_config(key)))
    process = subprocess.Popen(
        ["node", str(OIDC_DIR / "provider.mjs")],
        env={**os.environ, "OIDC_CONFIG": str(config_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("READY "):
            raise RuntimeError(f"OpenID provider did not start: {line!r}")
        yield Provider(issuer=line.removeprefix("READY "), key=key)
    finally:
        process.terminate()
        process.wait(timeout=10)
