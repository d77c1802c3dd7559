"""The MCP prompts: who is offered which (a table), and what their messages say."""

from dataclasses import replace

import pytest

from imagegate.mcp.prompts import (
    Offer,
    guide_message,
    guide_name,
    offered,
    preset_message,
    read_guide,
    relay_line,
)
from imagegate.relays.placeholder import PlaceholderRelay, PlaceholderRelayConfig
from imagegate.relays.registry import KINDS
from imagegate.service.presets import Preset

GENERATES = Offer(("generate_image",), ("studio",))
ANY_RELAY = Offer(("generate_image",), (None,))
A_KIND = Offer(("generate_image", "edit_image"), ("sd-1", "sd-2"))


@pytest.mark.parametrize(
    ("granted", "offer", "expected"),
    [
        ({"images:generate", "relay:studio"}, GENERATES, True),
        ({"images:generate", "relay:*"}, GENERATES, True),
        ({"*"}, GENERATES, True),
        # the tool's scope without the relay's, or the relay's without the tool's
        ({"images:generate", "relay:other"}, GENERATES, False),
        ({"relay:studio"}, GENERATES, False),
        ({"images:edit", "relay:studio"}, GENERATES, False),
        ({"images:read", "admin"}, GENERATES, False),
        (set(), GENERATES, False),
        # "auto" (or no relay): the service checks the relay it chooses
        ({"images:generate"}, ANY_RELAY, True),
        ({"images:read"}, ANY_RELAY, False),
        # a kind's guide: either tool, on any one relay of the kind
        ({"images:edit", "relay:sd-2"}, A_KIND, True),
        ({"images:generate", "relay:sd-1"}, A_KIND, True),
        ({"images:generate", "relay:sd-3"}, A_KIND, False),
        ({"images:read", "relay:sd-1"}, A_KIND, False),
        # a prompt leading to no relay at all is offered to no one
        ({"*"}, Offer(("generate_image", "edit_image"), ()), False),
        # nor one leading to a tool the table doesn't know
        ({"*"}, Offer(("make_video",), (None,)), False),
    ],
)
def test_a_prompt_is_offered_only_to_who_may_make_its_call(
    granted: set[str], offer: Offer, expected: bool
) -> None:
    assert offered(frozenset(granted), offer) is expected


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_relay_kind_has_a_guide(kind: str) -> None:
    guide = read_guide(kind)
    assert guide is not None
    assert guide.title
    assert not guide.body.startswith("#")
    assert 200 < len(guide.body) < 2000  # short and concrete
    assert guide_name(kind) == "write_for_" + kind.replace("-", "_")


def test_a_kind_without_a_guide_has_none() -> None:
    assert read_guide("no-such-kind") is None


def test_a_presets_message_names_the_preset_its_template_and_defaults() -> None:
    preset = Preset("poster", "server", "A poster of {prompt}", size="1024x1536", relay="studio")
    message = preset_message(preset, "  a {cat} on a bike ")
    assert message.startswith("Make an image of: a {cat} on a bike\n")
    assert 'generate_image with preset="poster"' in message
    assert '"A poster of {prompt}"' in message
    assert 'It sets size="1024x1536", relay="studio";' in message
    assert "It sets" not in preset_message(replace(preset, size=None, relay=None), "x")


def placeholder(name: str) -> PlaceholderRelay:
    return PlaceholderRelay(name, PlaceholderRelayConfig(kind="placeholder"))


def test_a_guides_message_lists_the_callers_relays_of_the_kind() -> None:
    guide = read_guide("placeholder")
    assert guide is not None
    message = guide_message(guide, [placeholder("one"), placeholder("two")], "a fox")
    assert message.startswith(guide.body)
    assert "\n- one: free; sizes any from 64 to" in message
    assert "\n- two: " in message
    assert "The image: a fox" in message
    assert 'call generate_image with relay="one"' in message


def test_a_relay_line_says_what_the_relay_takes() -> None:
    relay = placeholder("studio")
    relay.paid = True
    relay.model = "model-x"
    relay.capabilities = replace(
        relay.capabilities, qualities=("low", "high"), negative_prompt=True, mask=False
    )
    line = relay_line(relay)
    assert line.startswith("studio: model model-x; paid; sizes ")
    assert "; quality low, high; negative_prompt; seed; " in line
    assert "mask" not in line
