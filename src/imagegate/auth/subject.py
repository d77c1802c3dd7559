"""The caller's Identity, from the transport and the verified access token only."""

from fastmcp import Context
from fastmcp.exceptions import AuthorizationError
from fastmcp.server.dependencies import get_access_token

from imagegate.auth.identity import LOCAL_IDENTITY, Identity, identity_from_token


def current_identity(ctx: Context) -> Identity:
    """stdio is the local user; over HTTP the verified token decides. Fail closed."""
    if ctx.transport == "stdio":
        return LOCAL_IDENTITY
    identity = identity_from_token(get_access_token())
    if identity is None:
        raise AuthorizationError("not authenticated")
    return identity
