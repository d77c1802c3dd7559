"""relay="auto" at the ACL: it names no relay, so the ACL checks none (the service
checks the one it chooses); the audit log records the relay chosen, and the relay a
preset resolved to."""

from typing import Any

import pytest

from imagegate.access.policy import ToolRule, decide
from imagegate.mcp.middleware import acl_relay, requested_relay, used_relay

GENERATE = ToolRule("images:generate", takes_relay=True)
LIST = ToolRule("images:read", takes_relay=False)


@pytest.mark.parametrize(
    ("granted", "arguments", "allowed"),
    [
        ({"images:generate"}, {"relay": "auto"}, True),
        ({"images:generate", "relay:cheap"}, {"relay": "auto"}, True),
        ({"images:read"}, {"relay": "auto"}, False),  # the tool's own scope still counts
        ({"images:generate"}, {"relay": "cheap"}, False),
        ({"images:generate"}, {}, False),  # the default relay's scope
        ({"images:generate", "relay:placeholder"}, {}, True),
    ],
)
def test_auto_needs_no_relay_scope_at_the_acl(
    granted: set[str], arguments: dict[str, Any], allowed: bool
) -> None:
    relay = acl_relay(requested_relay(GENERATE, arguments, "placeholder"))
    assert decide(frozenset(granted), GENERATE, relay).allowed is allowed


@pytest.mark.parametrize(
    ("requested", "structured", "recorded"),
    [
        ("auto", {"relay_choice": {"relay": "cheap", "reason": "free"}}, "cheap"),
        ("auto", {"status": "running"}, "auto"),  # not known yet: as asked
        ("auto", {"relay_choice": "garbage"}, "auto"),
        ("studio", {}, "studio"),
        (None, {}, None),
    ],
)
def test_the_audit_records_the_relay_chosen(
    requested: str | None, structured: dict[str, Any], recorded: str | None
) -> None:
    assert used_relay(requested, structured) == recorded


CHOSEN = {"relay_choice": {"relay": "cheap", "reason": "free"}}


@pytest.mark.parametrize(
    ("rule", "arguments", "structured", "recorded"),
    [
        # a preset names its relay: the call's images were made there
        (GENERATE, {"preset": "poster"}, {"images": [{"relay": "studio"}] * 2}, "studio"),
        (GENERATE, {"preset": "poster"}, {"status": "running"}, None),  # not known yet
        (GENERATE, {"preset": "poster"}, {"images": [], "confirmation": "declined"}, None),
        (GENERATE, {"preset": "poster"}, {"images": [{"relay": "a"}, {"relay": "b"}]}, None),
        (GENERATE, {"preset": "poster"}, {"images": [{"relay": 7}]}, None),
        (GENERATE, {"preset": "poster"}, {"images": "garbage"}, None),
        # the call's own relay wins over the preset's, and auto's choice over both
        (GENERATE, {"preset": "poster", "relay": "mine"}, {"images": [{"relay": "x"}]}, "mine"),
        (GENERATE, {"preset": "auto-poster"}, CHOSEN, "cheap"),
        # a listing's images were made on relays, but the listing used none
        (LIST, {}, {"images": [{"relay": "studio"}]}, None),
    ],
)
def test_the_audit_records_the_relay_a_preset_resolved_to(
    rule: ToolRule, arguments: dict[str, Any], structured: dict[str, Any], recorded: str | None
) -> None:
    requested = requested_relay(rule, arguments, "placeholder")
    assert used_relay(requested, structured, rule.takes_relay) == recorded
