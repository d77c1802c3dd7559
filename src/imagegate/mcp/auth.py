"""FastMCP's side of authentication: imagegate's token checks as a TokenVerifier, the
protected-resource metadata for interactive login, and the caller of a request."""

import logging

from fastmcp import Context
from fastmcp.exceptions import AuthorizationError
from fastmcp.server.auth import AccessToken, AuthProvider, RemoteAuthProvider, TokenVerifier
from fastmcp.server.dependencies import get_access_token
from pydantic import Field

from imagegate.access.identity import LOCAL_IDENTITY, Identity, TokenCheck
from imagegate.config import Settings
from imagegate.core.ids import Subject
from imagegate.core.tracing import span

log = logging.getLogger("imagegate.access")


class CallerToken(AccessToken):
    """An access token as FastMCP keeps it for the request, with the caller's groups."""

    groups: list[str] = Field(default_factory=list)


class CheckVerifier(TokenVerifier):
    """A TokenVerifier that asks imagegate's token checks."""

    def __init__(self, check: TokenCheck) -> None:
        super().__init__()
        self._check = check

    async def verify_token(self, token: str) -> AccessToken | None:
        with span("auth") as step:
            result = await self._check.verify(token)
            step.set("outcome", "rejected" if result is None else "ok")
        if result is None:
            return None
        identity = result.identity
        return CallerToken(
            token="",  # not kept: logs or results can't leak what isn't there
            client_id=identity.subject,
            subject=identity.subject,
            scopes=sorted(identity.token_scopes),
            groups=sorted(identity.groups),
            expires_at=result.expires_at,
        )


def auth_provider(check: TokenCheck, settings: Settings) -> AuthProvider:
    """The verifier; with interactive OIDC login, wrapped to serve RFC 9728 metadata."""
    verifier = CheckVerifier(check)
    if settings.oidc is None or not settings.oidc.interactive_login:
        return verifier
    # MCP clients learn where to log in (the team's issuer), and ask it for tokens
    # whose audience is this server's MCP URL.
    resource = settings.base_url() + settings.mcp_path
    if settings.oidc.audience != resource:
        log.warning(
            "interactive_login: clients will ask for tokens for %s, but [oidc] audience "
            "is %s; set audience (and public_url) so that they match",
            resource,
            settings.oidc.audience,
        )
    return RemoteAuthProvider(
        token_verifier=verifier,
        authorization_servers=[settings.oidc.issuer],  # type: ignore[list-item]
        base_url=settings.base_url(),
        resource_name="imagegate",
    )


def identity_from_token(token: AccessToken | None) -> Identity | None:
    if not isinstance(token, CallerToken) or not token.subject:
        return None
    return Identity(
        subject=Subject(token.subject),
        groups=frozenset(token.groups),
        token_scopes=frozenset(token.scopes),
    )


def request_identity(local: bool) -> Identity | None:
    """The caller of the request being handled: on stdio (`local`) the local user,
    over HTTP the verified token's; None for no one."""
    return LOCAL_IDENTITY if local else identity_from_token(get_access_token())


def current_identity(ctx: Context) -> Identity:
    """stdio is the local user; over HTTP the verified token decides. Fail closed."""
    identity = request_identity(ctx.transport == "stdio")
    if identity is None:
        raise AuthorizationError("not authenticated")
    return identity
