"""The caller's Subject, from the transport and the verified access token only."""

from fastmcp import Context
from fastmcp.exceptions import AuthorizationError
from fastmcp.server.dependencies import get_access_token

from imagegate.ids import LOCAL_SUBJECT, Subject


def current_subject(ctx: Context) -> Subject:
    """stdio is the local user; over HTTP the verified token decides. Fail closed."""
    if ctx.transport == "stdio":
        return LOCAL_SUBJECT
    token = get_access_token()
    subject = token.claims.get("sub") if token is not None else None
    if not isinstance(subject, str) or not subject:
        raise AuthorizationError("not authenticated")
    return Subject(subject)
