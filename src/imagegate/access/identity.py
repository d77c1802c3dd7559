"""Who is calling: a verified token reduced to what imagegate decides on.

Every token check returns a `Verified`, so the rest of the code never parses claims:
`subject` is the imagegate Subject (`token:...`, `oidc:...`), `groups` feed the ACL and
`token_scopes` are grants a mapped token adds to the ACL's.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from imagegate.core.ids import LOCAL_SUBJECT, Subject


@dataclass(frozen=True)
class Identity:
    subject: Subject
    groups: frozenset[str] = frozenset()
    token_scopes: frozenset[str] = frozenset()
    local: bool = False
    """stdio: the person who started the process, trusted with everything."""


LOCAL_IDENTITY = Identity(LOCAL_SUBJECT, local=True)


@dataclass(frozen=True)
class Verified:
    """A token that a check accepted: whose it is, and until when it is valid."""

    identity: Identity
    expires_at: int | None = None


def verified(
    subject: Subject,
    *,
    groups: Iterable[str] = (),
    scopes: Iterable[str] = (),
    expires_at: int | None = None,
) -> Verified:
    # The raw token is not kept: nothing downstream needs it, and logs or results
    # can't leak what isn't there.
    return Verified(Identity(subject, frozenset(groups), frozenset(scopes)), expires_at)


class TokenCheck(Protocol):
    async def verify(self, token: str) -> Verified | None:
        """The caller a bearer token belongs to, or None: not this check's token."""
        ...
