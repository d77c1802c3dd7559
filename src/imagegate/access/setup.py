"""Choose token checks and the ACL from settings, failing fast on a bad setup.

- Token checks, tried in order: the single static token (IMAGEGATE_BEARER_TOKEN or
  bearer_token_file), mapped tokens (tokens_file), OIDC JWTs ([oidc]). When none is
  configured, a development token is generated once into the state directory.
- The ACL: acl_file when set. Without one, a server that can see several callers
  (mapped tokens or OIDC) refuses to start unless acl_open says everyone gets
  everything; a single-token server has one caller, its operator, and is open.
"""

import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from imagegate.access.acl import OPEN_ACL, TEAM_OPEN_ACL, Acl, load_acl
from imagegate.access.bearer import TOKEN_SUBJECT_PREFIX, StaticBearerVerifier
from imagegate.access.identity import TokenCheck
from imagegate.access.tokens import MappedTokensVerifier
from imagegate.access.verifiers import FirstMatch
from imagegate.config import Settings
from imagegate.core.clock import Clock
from imagegate.core.errors import ConfigError
from imagegate.core.ids import Subject
from imagegate.core.secrets import configured_secret, load_or_create_secret

if TYPE_CHECKING:
    from imagegate.access.oidc import OIDCVerifier

log = logging.getLogger("imagegate.access")

DEV_TOKEN_FILE = "bearer-token"  # noqa: S105 - a file name


def team_auth(settings: Settings) -> bool:
    """Can this server see more than one caller?"""
    return settings.tokens_file is not None or settings.oidc is not None


def build_acl(settings: Settings, relays: Collection[str], http: bool) -> Acl:
    if settings.acl_file is not None:
        return load_acl(settings.acl_file, relays)
    if not http or not team_auth(settings):
        # stdio, or one static token: a single caller, who could read the state anyway.
        return OPEN_ACL
    if settings.acl_open:
        log.warning(
            "acl_open is set: every authenticated caller may use every tool and relay "
            "(but not admin or paid:auto)"
        )
        return TEAM_OPEN_ACL
    raise ConfigError(
        "acl_file: not set, but tokens_file or [oidc] lets several callers in; "
        "set acl_file (see acl.example.toml) or, to let every authenticated caller use "
        "every tool and relay, acl_open = true"
    )


def static_token(settings: Settings) -> str | None:
    token = configured_secret("bearer_token", settings.bearer_token, settings.bearer_token_file)
    return None if token is None else token.strip()


def metrics_token(settings: Settings) -> str | None:
    """The scraper's bearer token for /metrics, when one is set (not an MCP token)."""
    return configured_secret("metrics_token", settings.metrics_token, settings.metrics_token_file)


@dataclass
class TokenChecks:
    check: FirstMatch
    dev_token: str | None
    """The generated development token, when no other authentication is configured."""
    oidc: "OIDCVerifier | None" = None
    """The JWT check, when [oidc] is set: the gallery's logins go through it too."""


def build_token_checks(
    settings: Settings, relays: Collection[str], clock: Clock, http: httpx.AsyncClient
) -> TokenChecks:
    """The token checks of an HTTP server, in order; without any configured, a
    development token generated once into the state directory."""
    checks: list[TokenCheck] = []
    dev_token = None
    oidc = None
    bearer_subject = Subject(TOKEN_SUBJECT_PREFIX + settings.bearer_subject)
    token = static_token(settings)
    if token is not None:
        checks.append(StaticBearerVerifier(token, bearer_subject))
    if settings.tokens_file is not None:
        mapped = MappedTokensVerifier(
            settings.tokens_file, relays, settings.strict_permissions, clock.now
        )
        checks.append(mapped)
        if token is not None and any(e.subject == bearer_subject for e in mapped.entries()):
            # Two credentials with one subject are one tenant: rarely meant.
            log.warning(
                "tokens_file %s maps a token to %s, the static bearer token's subject "
                "(bearer_subject): both reach the same images and quotas",
                settings.tokens_file,
                bearer_subject,
            )
    if settings.oidc is not None:
        # JOSE and its cryptography load only for a server that checks JWTs.
        from imagegate.access.oidc import OIDCVerifier

        oidc = OIDCVerifier(settings.oidc, http, clock.now)
        checks.append(oidc)
    if not checks:
        dev_token = load_or_create_secret(settings.state_dir / DEV_TOKEN_FILE)
        checks.append(StaticBearerVerifier(dev_token, bearer_subject))
    return TokenChecks(check=FirstMatch(checks), dev_token=dev_token, oidc=oidc)
