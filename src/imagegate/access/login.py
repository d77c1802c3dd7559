"""Logging a person in at the team's OpenID provider: the authorization code flow with
PKCE (S256), as a confidential client.

imagegate asks for an access token for its own audience (`resource`), and checks it
with the same OIDCVerifier as a tool call's bearer token: a person gets the same
subject and groups in the gallery as their client gets over MCP, and the ACL applies
alike. An ID token's `sub` may differ per client at some providers (pairwise
subjects), so it is not used. The state parameter and the PKCE verifier travel in a
short-lived sealed cookie (web/gallery.py); `state` binds the answer to this browser,
PKCE the code to this login.
"""

import base64
import hashlib
import logging
import secrets
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import httpx

from imagegate.access.identity import Verified
from imagegate.access.oidc import OIDCVerifier, discover, endpoint_of
from imagegate.config import GallerySettings, OIDCSettings

log = logging.getLogger("imagegate.auth")

LOGIN_SECONDS = 600
"""How long a person may take at the provider's login page."""


class LoginFailed(Exception):
    """The login can't finish; the message is for the person, and holds no secret."""


@dataclass(frozen=True)
class Attempt:
    """One login under way: where to send the browser, and what to keep until it is
    back (state and verifier never leave the server's cookie unsigned)."""

    url: str
    state: str
    verifier: str


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorization_url(
    endpoint: str,
    client_id: str,
    redirect_uri: str,
    scopes: tuple[str, ...],
    resource: str,
    state: str,
    verifier: str,
) -> str:
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(scopes),
            "resource": resource,
            "state": state,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"


def basic_auth(client_id: str, secret: str) -> str:
    """client_secret_basic (RFC 6749 2.3.1): each part form-encoded, then Basic."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


class Login:
    def __init__(
        self,
        oidc: OIDCSettings,
        gallery: GallerySettings,
        client_secret: str,
        redirect_uri: str,
        http: httpx.AsyncClient,
        verifier: OIDCVerifier,
    ) -> None:
        self._oidc = oidc
        self._gallery = gallery
        self._secret = client_secret
        self.redirect_uri = redirect_uri
        self._http = http
        self._verifier = verifier
        self._endpoints: dict[str, str] = {}

    async def _endpoint(self, name: str) -> str:
        if name not in self._endpoints:
            try:
                document = await discover(self._http, self._oidc.issuer)
            except (httpx.HTTPError, ValueError) as err:
                log.error("cannot read the OIDC provider's discovery document: %s", err)
                raise LoginFailed("the login provider can't be reached; try again later") from None
            for key in ("authorization_endpoint", "token_endpoint"):
                url = endpoint_of(document, key, self._oidc.issuer)
                if url is None:
                    log.error("the OIDC discovery document has no usable %s", key)
                    raise LoginFailed("the login provider is not set up for browser logins")
                self._endpoints[key] = url
        return self._endpoints[name]

    async def begin(self) -> Attempt:
        state = secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        url = authorization_url(
            await self._endpoint("authorization_endpoint"),
            self._gallery.client_id,
            self.redirect_uri,
            self._gallery.scopes,
            self._oidc.audience,
            state,
            verifier,
        )
        return Attempt(url, state, verifier)

    async def finish(self, code: str, verifier: str) -> Verified:
        """Trade the code for an access token, and check it as a bearer token is."""
        endpoint = await self._endpoint("token_endpoint")
        try:
            response = await self._http.post(
                endpoint,
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self.redirect_uri,
                    "code_verifier": verifier,
                    "resource": self._oidc.audience,
                },
                headers={
                    "Authorization": basic_auth(self._gallery.client_id, self._secret),
                    "Accept": "application/json",
                },
            )
        except httpx.HTTPError as err:
            log.error("the OIDC token endpoint failed: %s", type(err).__name__)
            raise LoginFailed("the login provider can't be reached; try again later") from None
        if response.status_code != 200:
            # The provider's error code only (invalid_grant, invalid_client): no secret.
            error = _error_code(response)
            log.warning("the OIDC token endpoint refused the code: %s", error)
            raise LoginFailed(f"the login provider refused the login ({error}); sign in again")
        try:
            token = response.json().get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str):
            raise LoginFailed("the login provider sent no access token")
        verified = await self._verifier.verify(token)
        if verified is None:
            raise LoginFailed(
                "the login provider's access token was not accepted: it must be a signed "
                f"JWT for the audience {self._oidc.audience}, as for MCP clients"
            )
        return verified


def _error_code(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, str) and error.replace("_", "").isalnum() and len(error) <= 40:
        return error
    return f"HTTP {response.status_code}"
