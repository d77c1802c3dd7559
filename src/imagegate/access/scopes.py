"""The scope vocabulary and what a set of granted scopes allows. Pure."""

from collections.abc import Collection, Set

GENERATE = "images:generate"
EDIT = "images:edit"
READ = "images:read"
DELETE = "images:delete"
SHARE = "images:share"
UPLOAD = "images:upload"
IMAGE_SCOPES = (GENERATE, EDIT, READ, DELETE, SHARE, UPLOAD)
JOBS = (GENERATE, EDIT)
"""The scopes that start jobs; either lets a caller follow and cancel its own."""
PAID_AUTO = "paid:auto"
ADMIN = "admin"
EVERYTHING = "*"
ANY_RELAY = "relay:*"
RELAY_PREFIX = "relay:"


def relay_scope(relay: str) -> str:
    return f"{RELAY_PREFIX}{relay}"


def check_scope(scope: str, relays: Collection[str]) -> None:
    """Raise ValueError for a scope that would grant nothing: a typo, or an unknown relay."""
    if scope in (*IMAGE_SCOPES, PAID_AUTO, ADMIN, EVERYTHING, ANY_RELAY):
        return
    if scope.startswith(RELAY_PREFIX):
        relay = scope.removeprefix(RELAY_PREFIX)
        if relay in relays:
            return
        known = ", ".join(sorted(relays))
        raise ValueError(f"scope {scope!r} names no configured relay (relays: {known})")
    known = ", ".join((*IMAGE_SCOPES, PAID_AUTO, ADMIN, EVERYTHING, ANY_RELAY, "relay:<name>"))
    raise ValueError(f"unknown scope {scope!r}; known scopes: {known}")


def grants(granted: Set[str], scope: str) -> bool:
    """Does `granted` include `scope`? `*` is everything; `relay:*` is every relay."""
    if EVERYTHING in granted or scope in granted:
        return True
    return scope.startswith(RELAY_PREFIX) and ANY_RELAY in granted
