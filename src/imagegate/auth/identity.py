"""Who is calling: the verified access token, reduced to what imagegate decides on.

Every verifier returns a `CallerToken`, so the rest of the code never parses claims:
`subject` is the imagegate Subject (`token:...`, `oidc:...`), `groups` feed the ACL
and `scopes` are grants a mapped token adds to the ACL's.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from fastmcp.server.auth import AccessToken
from pydantic import Field

from imagegate.ids import LOCAL_SUBJECT, Subject


class CallerToken(AccessToken):
    groups: list[str] = Field(default_factory=list)


def caller_token(
    subject: Subject,
    *,
    groups: Iterable[str] = (),
    scopes: Iterable[str] = (),
    expires_at: int | None = None,
) -> CallerToken:
    # The raw token is not kept: nothing downstream needs it, and logs or results
    # can't leak what isn't there.
    return CallerToken(
        token="",
        client_id=subject,
        subject=subject,
        scopes=sorted(scopes),
        groups=sorted(groups),
        expires_at=expires_at,
    )


@dataclass(frozen=True)
class Identity:
    subject: Subject
    groups: frozenset[str] = frozenset()
    token_scopes: frozenset[str] = frozenset()
    local: bool = False
    """stdio: the person who started the process, trusted with everything."""


LOCAL_IDENTITY = Identity(LOCAL_SUBJECT, local=True)


def identity_from_token(token: AccessToken | None) -> Identity | None:
    if not isinstance(token, CallerToken) or not token.subject:
        return None
    return Identity(
        subject=Subject(token.subject),
        groups=frozenset(token.groups),
        token_scopes=frozenset(token.scopes),
    )
