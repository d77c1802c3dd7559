"""OIDC: validate JWT access tokens from the team's OpenID provider.

Checks, in order: compact JWS shape; `alg` in the configured allow-list (asymmetric
only: `none` and HS* are refused by configuration); signature with a key from the
provider's JWKS, found by issuer discovery and cached (an unknown `kid` refreshes the
cache at most once per `MIN_REFRESH_SECONDS`, so a flood of random kids can't hammer the
provider); `iss`, `aud`, `exp` required; `nbf` and `exp` with a small leeway. The
subject comes from the configured claim, prefixed `oidc:`; groups from the groups
claim. Any failure is "not this verifier's token" (401), never an exception.

Written on joserfc (already a FastMCP dependency) rather than FastMCP's JWTVerifier,
which accepts tokens without `exp`, ignores `nbf`, takes one algorithm and does no
discovery.
"""

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from imagegate.access.identity import Verified, verified
from imagegate.config import OIDCSettings
from imagegate.core.ids import Subject

log = logging.getLogger("imagegate.auth")

OIDC_SUBJECT_PREFIX = "oidc:"
MIN_REFRESH_SECONDS = 30.0
MAX_GROUPS = 100


class OIDCVerifier:
    def __init__(
        self,
        settings: OIDCSettings,
        http: httpx.AsyncClient,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._http = http
        self._clock = clock
        self._jwks_uri: str | None = None
        self._keys: KeySet | None = None
        self._keys_fetched_at = -math.inf
        self._last_refresh = -math.inf
        self._last_failure = -math.inf
        self._lock = anyio.Lock()

    async def verify(self, token: str) -> Verified | None:
        if token.count(".") != 2:
            return None  # not a JWT: another verifier's business
        try:
            alg = extract_compact(token.encode()).protected.get("alg")
        except (JoseError, ValueError):
            return None
        if alg not in self._settings.algorithms:
            log.info("refused JWT with algorithm %r (allowed: %s)", alg, self._settings.algorithms)
            return None
        claims = await self._verified_claims(token)
        if claims is None:
            return None
        return self._caller(claims)

    async def _verified_claims(self, token: str) -> dict[str, Any] | None:
        keys = await self._key_set(refresh=False)
        if keys is None:
            return None
        algorithms = list(self._settings.algorithms)
        try:
            decoded = jwt.decode(token, keys, algorithms=algorithms)
        except InvalidKeyIdError:
            keys = await self._key_set(refresh=True)
            if keys is None:
                return None
            try:
                decoded = jwt.decode(token, keys, algorithms=algorithms)
            except JoseError as err:
                log.info("refused JWT: %s", err.error)
                return None
        except (JoseError, ValueError) as err:
            log.info("refused JWT: %s", getattr(err, "error", type(err).__name__))
            return None
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock()),
            leeway=self._settings.leeway_seconds,
            iss={"essential": True, "value": self._settings.issuer},
            aud={"essential": True, "value": self._settings.audience},
            exp={"essential": True},
        )
        try:
            registry.validate(decoded.claims)
        except JoseError as err:
            log.info("refused JWT: %s", err.description or err.error)
            return None
        return decoded.claims

    def _caller(self, claims: dict[str, Any]) -> Verified | None:
        value = claims.get(self._settings.subject_claim)
        if not isinstance(value, str) or not value.strip():
            log.info("refused JWT without a %r claim", self._settings.subject_claim)
            return None
        if self._settings.subject_claim == "email" and claims.get("email_verified") is False:
            # An unverified address could be anyone's: it must not name a tenant.
            log.info("refused JWT whose email is marked unverified")
            return None
        raw_groups = claims.get(self._settings.groups_claim, [])
        if isinstance(raw_groups, str):
            raw_groups = raw_groups.split()
        groups = [g for g in raw_groups if isinstance(g, str)][:MAX_GROUPS]
        return verified(
            Subject(OIDC_SUBJECT_PREFIX + value.strip()),
            groups=groups,
            expires_at=int(claims["exp"]),
        )

    async def _key_set(self, refresh: bool) -> KeySet | None:
        """The cached keys; loaded when missing or stale, re-fetched for an unknown kid.

        Re-fetches for unknown kids, and retries after a failed load, happen at most
        once per MIN_REFRESH_SECONDS each, so neither forged kids nor an unreachable
        provider turn every request into a request to the provider.
        """
        async with self._lock:
            now = time.monotonic()
            stale = now - self._keys_fetched_at > self._settings.jwks_cache_seconds
            if refresh:
                if now - self._last_refresh < MIN_REFRESH_SECONDS:
                    return self._keys
                self._last_refresh = now
            elif (
                not (self._keys is None or stale) or now - self._last_failure < MIN_REFRESH_SECONDS
            ):
                return self._keys
            try:
                self._keys = await self._fetch_keys()
                self._keys_fetched_at = now
            except (httpx.HTTPError, ValueError, JoseError) as err:
                self._last_failure = now
                log.error("cannot load the OIDC provider's keys: %s", _reason(err))
            return self._keys

    async def _fetch_keys(self) -> KeySet:
        if self._jwks_uri is None:
            self._jwks_uri = await self._discover_jwks_uri()
        response = await self._http.get(self._jwks_uri)
        response.raise_for_status()
        return KeySet.import_key_set(response.json())

    async def _discover_jwks_uri(self) -> str:
        document = await discover(self._http, self._settings.issuer)
        jwks_uri = endpoint_of(document, "jwks_uri", self._settings.issuer)
        if jwks_uri is None:
            raise ValueError("discovery document has no usable https jwks_uri")
        return jwks_uri


async def discover(http: httpx.AsyncClient, issuer: str) -> dict[str, Any]:
    """The provider's discovery document, which must name the configured issuer."""
    response = await http.get(f"{issuer}/.well-known/openid-configuration")
    response.raise_for_status()
    document = response.json()
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        named = document.get("issuer") if isinstance(document, dict) else None
        raise ValueError(f"discovery document names issuer {named!r}, expected {issuer!r}")
    return document


def endpoint_of(document: dict[str, Any], key: str, issuer: str) -> str | None:
    """An endpoint the document names, if it is https, as the issuer is (plain http
    only for an issuer that is itself http on loopback, a local test IdP): the keys
    decide who gets in, and the token endpoint receives the client secret."""
    url = document.get(key)
    schemes = ("https://", "http://") if issuer.startswith("http:") else ("https://",)
    if not isinstance(url, str) or not url.startswith(schemes):
        return None
    return url


def _reason(err: Exception) -> str:
    if isinstance(err, httpx.HTTPStatusError):
        return f"HTTP {err.response.status_code} from {err.request.url}"
    if isinstance(err, httpx.HTTPError):
        return f"{type(err).__name__} for {err.request.url}"
    return str(err)
