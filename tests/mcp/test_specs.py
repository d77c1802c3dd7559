"""The tool table: every tool declared once, with the scopes its calls need."""

import inspect

import pytest

from imagegate.access.policy import decide
from imagegate.mcp import tools
from imagegate.mcp.specs import RULES, TOOLS


@pytest.mark.parametrize(
    ("granted", "tool", "relay", "allowed", "missing"),
    [
        ({"images:generate", "relay:placeholder"}, "generate_image", "placeholder", True, None),
        ({"images:generate"}, "generate_image", "placeholder", False, "relay:placeholder"),
        ({"relay:placeholder"}, "generate_image", "placeholder", False, "images:generate"),
        ({"images:generate", "relay:*"}, "generate_image", "openai", True, None),
        (
            {"images:generate", "relay:openai"},
            "generate_image",
            "placeholder",
            False,
            "relay:placeholder",
        ),
        ({"*"}, "generate_image", "openai", True, None),
        ({"*"}, "delete_image", None, True, None),
        ({"images:read"}, "list_images", None, True, None),
        ({"images:read"}, "get_image", None, True, None),
        ({"images:read"}, "create_download_link", None, False, "images:share"),
        ({"images:read"}, "delete_image", None, False, "images:delete"),
        ({"images:edit"}, "edit_image", None, True, None),
        ({"admin"}, "list_images", None, False, "images:read"),
        (set(), "server_info", None, True, None),
        (set(), "list_relays", None, True, None),
        (set(), "list_images", None, False, "images:read"),
        ({"images:read"}, "some_new_tool", None, False, "*"),
        ({"images:generate"}, "get_job", None, True, None),
        ({"images:edit"}, "cancel_job", None, True, None),
        ({"images:read"}, "list_jobs", None, False, "images:generate or images:edit"),
        (set(), "list_presets", None, True, None),
        ({"images:edit"}, "save_preset", None, True, None),
        ({"images:generate"}, "delete_preset", None, True, None),
        ({"images:read"}, "save_preset", None, False, "images:generate or images:edit"),
        ({"images:read"}, "delete_preset", None, False, "images:generate or images:edit"),
    ],
)
def test_the_tool_table_decides(
    granted: set[str], tool: str, relay: str | None, allowed: bool, missing: str | None
) -> None:
    decision = decide(frozenset(granted), RULES.get(tool), relay)
    assert decision.allowed is allowed
    assert decision.missing == missing
    if not allowed:
        assert decision.message == f"forbidden: needs scope {missing}"


def test_every_relay_tool_is_relay_scoped() -> None:
    """A tool whose function takes a relay must need that relay's scope: holding the
    tool's own scope is not enough."""
    takers = {spec.name for spec in TOOLS if "relay" in inspect.signature(spec.function).parameters}
    # save_preset's relay is for later calls, not this one (the service checks that the
    # caller may use it): a preset without one must not need the default relay's scope.
    takers -= {"save_preset"}
    assert takers == {"generate_image", "edit_image"}
    for spec in TOOLS:
        assert spec.takes_relay is (spec.name in takers), spec.name
        granted = frozenset(RULES[spec.name].any_of)
        decision = decide(granted, RULES[spec.name], "somewhere")
        assert decision.allowed is (spec.name not in takers), spec.name
        if spec.name in takers:
            assert decision.missing == "relay:somewhere"


def test_every_tool_function_is_in_the_table_once() -> None:
    functions = {
        name
        for name, value in vars(tools).items()
        if inspect.iscoroutinefunction(value)
        and not name.startswith("_")
        and value.__module__ == tools.__name__
    }
    names = [spec.name for spec in TOOLS]
    assert sorted(names) == sorted(set(names)) == sorted(functions)
