"""Every access decision, branch by branch."""

import pytest

from imagegate.access.acl import Acl
from imagegate.access.identity import LOCAL_IDENTITY, Identity
from imagegate.access.policy import (
    AccessPolicy,
    Caller,
    ToolRule,
    decide,
    listing_owner,
    may_link,
    may_use_relay,
    needs_confirmation,
    reach,
    usage_subject,
)
from imagegate.core.errors import PermissionDenied
from imagegate.core.ids import Subject

ALICE = Subject("oidc:alice")
BOB = Subject("oidc:bob")


def caller(*scopes: str, subject: Subject = ALICE) -> Caller:
    return Caller(Identity(subject), frozenset(scopes))


@pytest.mark.parametrize(
    ("granted", "rule", "relay", "missing"),
    [
        ({"images:generate", "relay:a"}, ToolRule("images:generate", True), "a", None),
        ({"images:generate"}, ToolRule("images:generate", True), "a", "relay:a"),
        ({"relay:a"}, ToolRule("images:generate", True), "a", "images:generate"),
        ({"images:generate", "relay:*"}, ToolRule("images:generate", True), "b", None),
        ({"images:generate", "relay:b"}, ToolRule("images:generate", True), "a", "relay:a"),
        ({"*"}, ToolRule("images:generate", True), "a", None),
        # a rule that takes no relay ignores one
        ({"images:read"}, ToolRule("images:read", False), "a", None),
        # the relay is checked only when the call names or defaults to one
        ({"images:edit"}, ToolRule("images:edit", True), None, None),
        # no scope: any authenticated caller
        (set(), ToolRule(None), None, None),
        # one of several scopes
        ({"images:edit"}, ToolRule(("images:generate", "images:edit")), None, None),
        ({"images:generate"}, ToolRule(("images:generate", "images:edit")), None, None),
        (
            {"images:read", "relay:*"},
            ToolRule(("images:generate", "images:edit")),
            None,
            "images:generate or images:edit",
        ),
        ({"admin"}, ToolRule("images:read"), None, "images:read"),
        ({"admin"}, ToolRule("admin"), None, None),
        # a tool unknown to the table: refused, whatever is granted
        ({"images:read"}, None, None, "*"),
        ({"*"}, None, None, "*"),
    ],
)
def test_decide(
    granted: set[str], rule: ToolRule | None, relay: str | None, missing: str | None
) -> None:
    decision = decide(frozenset(granted), rule, relay)
    assert decision.allowed is (missing is None)
    assert decision.missing == missing


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        ((), ALICE),
        (("images:read", "images:share", "relay:*"), ALICE),
        (("admin",), None),
        (("*",), None),
    ],
)
def test_reach(scopes: tuple[str, ...], expected: Subject | None) -> None:
    assert reach(caller(*scopes)) == expected


@pytest.mark.parametrize(
    ("scopes", "requested", "expected"),
    [
        ((), None, ALICE),
        ((), ALICE, ALICE),
        ((), BOB, PermissionDenied),
        ((), "*", PermissionDenied),
        ((), "", PermissionDenied),
        (("admin",), None, ALICE),
        (("admin",), BOB, BOB),
        (("admin",), "*", None),
        (("*",), "*", None),
    ],
)
def test_listing_owner(
    scopes: tuple[str, ...], requested: str | None, expected: Subject | type | None
) -> None:
    if expected is PermissionDenied:
        with pytest.raises(PermissionDenied, match="needs scope admin to list others' images"):
            listing_owner(caller(*scopes), requested)
    else:
        assert listing_owner(caller(*scopes), requested) == expected


@pytest.mark.parametrize(
    ("scopes", "requested", "expected"),
    [
        ((), None, ALICE),
        ((), "", ALICE),
        ((), ALICE, ALICE),
        ((), BOB, PermissionDenied),
        (("images:read", "images:share"), BOB, PermissionDenied),
        (("admin",), BOB, BOB),
        (("*",), BOB, BOB),
    ],
)
def test_usage_subject(
    scopes: tuple[str, ...], requested: str | None, expected: Subject | type
) -> None:
    if expected is PermissionDenied:
        with pytest.raises(PermissionDenied, match="needs scope admin to see others' usage"):
            usage_subject(caller(*scopes), requested)
    else:
        assert usage_subject(caller(*scopes), requested) == expected


@pytest.mark.parametrize(
    ("scopes", "owner", "allowed"),
    [
        ((), ALICE, True),  # one's own image: fetching it, not sharing
        (("admin",), BOB, False),  # an admin reaches Bob's image but may not share it
        (("admin", "images:share"), BOB, True),
        (("images:share",), BOB, True),
        (("*",), BOB, True),
    ],
)
def test_may_link(scopes: tuple[str, ...], owner: Subject, allowed: bool) -> None:
    assert may_link(caller(*scopes), owner) is allowed


@pytest.mark.parametrize(
    ("scopes", "paid", "asks"),
    [
        ((), True, True),
        (("paid:auto",), True, False),
        (("*",), True, True),  # spending without a human is granted by name only
        (("relay:*", "admin"), True, True),
        ((), False, False),
        (("*",), False, False),
    ],
)
def test_needs_confirmation(scopes: tuple[str, ...], paid: bool, asks: bool) -> None:
    assert needs_confirmation(caller(*scopes), paid) is asks


@pytest.mark.parametrize(
    ("scopes", "relay", "allowed"),
    [
        (("relay:a",), "a", True),
        (("relay:a",), "b", False),
        (("relay:*",), "b", True),
        (("*",), "b", True),
        (("images:generate",), "a", False),
    ],
)
def test_may_use_relay(scopes: tuple[str, ...], relay: str, allowed: bool) -> None:
    assert may_use_relay(caller(*scopes), relay) is allowed


def test_the_local_user_has_every_scope_and_others_what_the_acl_grants() -> None:
    policy = AccessPolicy(Acl(default=frozenset({"images:read"})))
    assert policy.caller(LOCAL_IDENTITY).scopes == {"*"}
    assert policy.caller(LOCAL_IDENTITY).is_admin
    remote = policy.caller(Identity(ALICE, token_scopes=frozenset({"paid:auto"})))
    assert remote.scopes == {"images:read", "paid:auto"}
    assert not remote.is_admin
