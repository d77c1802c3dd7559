"""Every access decision of imagegate, as pure functions of a caller and a request.

- `decide`: may the caller call a tool (its scope) on a relay (`relay:<name>`)?
- `reach`, `listing_owner`, `usage_subject`: whose images and usage a caller may name;
  `admin` reaches everyone's, everyone else only their own.
- `may_link`: a link to another owner's image shares it, which needs `images:share`.
- `needs_confirmation`: spending on a paid relay asks the user unless the caller holds
  `paid:auto` by name (`*` does not imply it: spending without a human is explicit).

The MCP middleware and the tools only apply these; tests/access/test_policy.py tables
every branch.
"""

from dataclasses import dataclass

from imagegate.access.acl import Acl
from imagegate.access.identity import Identity
from imagegate.access.scopes import ADMIN, EVERYTHING, PAID_AUTO, SHARE, grants, relay_scope
from imagegate.core.errors import PermissionDenied
from imagegate.core.ids import Subject

ALL_OWNERS = "*"
"""`list_images(owner="*")`: every owner's images (admins only)."""


@dataclass(frozen=True)
class Caller:
    """An identity with its granted scopes: what every decision is made on."""

    identity: Identity
    scopes: frozenset[str]

    @property
    def subject(self) -> Subject:
        return self.identity.subject

    @property
    def is_admin(self) -> bool:
        return grants(self.scopes, ADMIN)


class AccessPolicy:
    """Turns identities into callers. stdio's local user has every scope."""

    def __init__(self, acl: Acl) -> None:
        self._acl = acl

    def caller(self, identity: Identity) -> Caller:
        if identity.local:
            return Caller(identity, frozenset({EVERYTHING}))
        return Caller(identity, self._acl.scopes_for(identity))


@dataclass(frozen=True)
class ToolRule:
    """What calling one tool needs: its scope, or one of several (None: any
    authenticated caller, for tools that touch no image data) and, when it takes a
    relay, that relay's scope."""

    scope: str | tuple[str, ...] | None
    takes_relay: bool = False

    @property
    def any_of(self) -> tuple[str, ...]:
        """The scopes of which the caller needs one; none: any caller."""
        if self.scope is None:
            return ()
        return (self.scope,) if isinstance(self.scope, str) else self.scope


@dataclass(frozen=True)
class Decision:
    allowed: bool
    missing: str | None = None

    @property
    def message(self) -> str:
        return f"forbidden: needs scope {self.missing}"


def decide(granted: frozenset[str], rule: ToolRule | None, relay: str | None) -> Decision:
    """May a caller holding `granted` call a tool with `rule` (on `relay`)? A tool
    without a rule (unknown to imagegate) is refused."""
    if rule is None:
        return Decision(False, EVERYTHING)
    needed = rule.any_of
    if needed and not any(grants(granted, scope) for scope in needed):
        return Decision(False, " or ".join(needed))
    if rule.takes_relay and relay is not None and not grants(granted, relay_scope(relay)):
        return Decision(False, relay_scope(relay))
    return Decision(True)


def may_use_relay(caller: Caller, relay: str) -> bool:
    return grants(caller.scopes, relay_scope(relay))


def check_relay(caller: Caller, relay: str) -> None:
    """Refuse a call on a relay the caller may not use, as the ACL middleware does."""
    if not may_use_relay(caller, relay):
        raise PermissionDenied(Decision(False, relay_scope(relay)).message)


def reach(caller: Caller) -> Subject | None:
    """Whose images the caller may name by id: its own, or (admin) anyone's (None)."""
    return None if caller.is_admin else caller.subject


def listing_owner(caller: Caller, requested: str | None) -> Subject | None:
    """Whose images a listing shows: the caller's own unless an admin names another
    owner, or every owner's (None) with `*`."""
    if requested is None or requested == caller.subject:
        return caller.subject
    if not caller.is_admin:
        raise PermissionDenied(f"forbidden: needs scope {ADMIN} to list others' images")
    return None if requested == ALL_OWNERS else Subject(requested)


def usage_subject(caller: Caller, requested: str | None) -> Subject:
    """Whose usage the caller may see: its own, or (admin) anyone's."""
    if not requested or requested == caller.subject:
        return caller.subject
    if not caller.is_admin:
        raise PermissionDenied(f"forbidden: needs scope {ADMIN} to see others' usage")
    return Subject(requested)


def may_link(caller: Caller, owner: Subject) -> bool:
    """A link to one's own image is how one fetches it; a link to another owner's
    image (an admin's reach) shares it, which needs images:share."""
    return owner == caller.subject or grants(caller.scopes, SHARE)


def needs_confirmation(caller: Caller, paid: bool) -> bool:
    """Must the user confirm a call to a relay that is `paid` or not?"""
    return paid and PAID_AUTO not in caller.scopes
