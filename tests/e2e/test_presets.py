"""Style presets and prompts over real HTTP, against a real `imagegate serve` with a
config file, an ACL and mapped tokens, with clients of both protocol eras: the
server's presets and one's own, used, listed, saved and deleted; prompts offered as
the ACL allows; nothing of one subject's visible to another."""

import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import mcp_types
import pytest
from fastmcp import Client
from fastmcp.client.auth import BearerAuth
from fastmcp.client.transports import StdioTransport
from fastmcp.exceptions import ToolError
from mcp.shared.exceptions import MCPError

from tests.e2e.harness import team_files
from tests.e2e.processes import clean_env, serving

TOKENS = {
    "alice": "alice-token-0123456789abcdefghijkl",
    "bob": "bob-token-0123456789abcdefghijklmn",
    "reader": "reader-token-0123456789abcdefghijk",
    "carol": "carol-token-0123456789abcdefghijkl",
    "dave": "dave-token-0123456789abcdefghijklm",
}
ACL = """
[subjects."token:alice"]
scopes = ["images:generate", "images:read", "relay:placeholder"]
[subjects."token:bob"]
scopes = ["images:generate", "images:read", "relay:*"]
[subjects."token:reader"]
scopes = ["images:read"]
[subjects."token:carol"]
scopes = ["images:generate", "relay:studio"]
[subjects."token:dave"]
scopes = ["images:generate", "images:edit", "relay:placeholder"]
"""
CONFIG = """
default_relay = "placeholder"
max_presets_per_subject = 2

[relays.placeholder]
kind = "placeholder"
[relays.studio]
kind = "placeholder"

[presets.poster]
prompt = "A bold poster of {prompt}, flat colours"
size = "96x64"
relay = "studio"
description = "Bold flat poster"

[presets.plain]
prompt = "{prompt}, plainly"
size = "80x80"
"""
MODES = ["legacy", "auto"]
"""2025-11-25 (a session begun with initialize) and 2026-07-28 (sessionless)."""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "imagegate.toml"
    config.write_text(CONFIG)
    files = {key.upper(): str(path) for key, path in team_files(tmp_path, ACL, TOKENS).items()}
    settings = {f"IMAGEGATE_{key}": value for key, value in files.items()}
    settings["IMAGEGATE_AUDIT_LOG"] = str(tmp_path / "audit.jsonl")
    with serving(tmp_path / "state", "--config", str(config), **settings) as (base_url, _):
        yield f"{base_url}/mcp"


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    chosen: str = request.param
    return chosen


def client(url: str, who: str, mode: str) -> Client[Any]:
    return Client(url, auth=BearerAuth(TOKENS[who]), mode=mode)


async def call(session: Client[Any], tool: str, **arguments: Any) -> dict[str, Any]:
    result = await session.call_tool(tool, arguments)
    assert result.structured_content is not None
    structured: dict[str, Any] = result.structured_content
    return structured


@pytest.fixture
async def alice(server: str, mode: str) -> AsyncIterator[Client[Any]]:
    async with client(server, "alice", mode) as session:
        yield session


@pytest.fixture
async def bob(server: str, mode: str) -> AsyncIterator[Client[Any]]:
    async with client(server, "bob", mode) as session:
        yield session


async def test_presets_shape_calls_and_stay_their_owners(
    alice: Client[Any], bob: Client[Any]
) -> None:
    # Alice may not use the studio relay, so the poster preset isn't offered to her.
    listed = await call(alice, "list_presets")
    assert listed == {
        "presets": [
            {
                "name": "plain",
                "owner": "server",
                "prompt": "{prompt}, plainly",
                "defaults": {"size": "80x80"},
            }
        ]
    }
    # The server's preset: its template around the prompt, its size; braces are text.
    (image,) = (await call(alice, "generate_image", prompt="a {fox}", preset="plain"))["images"]
    assert (image["prompt"], image["width"], image["height"]) == ("a {fox}, plainly", 80, 80)
    # Her own arguments win over the preset's.
    (image,) = (await call(alice, "generate_image", prompt="x", preset="plain", size="64x96"))[
        "images"
    ]
    assert (image["width"], image["height"]) == (64, 96)

    saved = await call(
        alice, "save_preset", name="ink", prompt="ink sketch of {prompt}", size="72x72"
    )
    assert saved == {
        "preset": {
            "name": "ink",
            "owner": "own",
            "prompt": "ink sketch of {prompt}",
            "defaults": {"size": "72x72"},
        },
        "outcome": "created",
    }
    (image,) = (await call(alice, "generate_image", prompt="an owl", preset="ink"))["images"]
    assert (image["prompt"], image["width"]) == ("ink sketch of an owl", 72)
    assert [p["name"] for p in (await call(alice, "list_presets"))["presets"]] == ["plain", "ink"]

    # Bob sees the server's presets (the poster too: he may use its relay), not Alice's.
    assert [(p["name"], p["owner"]) for p in (await call(bob, "list_presets"))["presets"]] == [
        ("plain", "server"),
        ("poster", "server"),
    ]
    with pytest.raises(ToolError, match=r"^unknown preset 'ink'; list_presets shows"):
        await bob.call_tool("generate_image", {"prompt": "x", "preset": "ink"})
    with pytest.raises(ToolError, match=r"^you have no preset named 'ink'$"):
        await bob.call_tool("delete_preset", {"name": "ink"})
    (image,) = (await call(bob, "generate_image", prompt="a fox", preset="poster"))["images"]
    assert (image["relay"], image["prompt"], image["width"], image["height"]) == (
        "studio",
        "A bold poster of a fox, flat colours",
        96,
        64,
    )

    # A preset naming a relay Alice lacks is refused by the service, not only hidden.
    with pytest.raises(ToolError, match=r"^forbidden: needs scope relay:studio$"):
        await alice.call_tool("generate_image", {"prompt": "x", "preset": "poster"})
    # The server's names are taken; the count per caller is bounded.
    with pytest.raises(ToolError, match="'poster' is the name of a server preset"):
        await alice.call_tool("save_preset", {"name": "poster", "prompt": "{prompt}"})
    with pytest.raises(ToolError, match=r"^forbidden: needs scope relay:studio$"):
        await alice.call_tool("save_preset", {"name": "s", "prompt": "{prompt}", "relay": "studio"})
    await call(alice, "save_preset", name="two", prompt="{prompt}")
    with pytest.raises(ToolError, match="you have 2 presets, the most"):
        await alice.call_tool("save_preset", {"name": "three", "prompt": "{prompt}"})

    assert await call(alice, "delete_preset", name="ink") == {"deleted": "ink"}
    with pytest.raises(ToolError, match=r"^unknown preset 'ink'"):
        await alice.call_tool("generate_image", {"prompt": "x", "preset": "ink"})


async def test_the_audit_log_records_the_relay_a_preset_resolved_to(
    bob: Client[Any], tmp_path: Path
) -> None:
    await call(bob, "generate_image", prompt="a fox", preset="poster")  # its relay: studio
    await call(bob, "generate_image", prompt="a fox", preset="plain")  # none: the default
    await call(bob, "generate_image", prompt="a fox", preset="poster", relay="placeholder")
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [line["relay"] for line in audit if line["tool"] == "generate_image"] == [
        "studio",
        "placeholder",
        "placeholder",
    ]


async def test_a_prompt_too_long_once_wrapped_is_refused_clearly(alice: Client[Any]) -> None:
    with pytest.raises(ToolError, match=r"^prompt is 4010 characters with preset 'plain'"):
        await alice.call_tool("generate_image", {"prompt": "x" * 4001, "preset": "plain"})


async def test_the_relay_checked_is_the_one_the_preset_resolves_to(server: str, mode: str) -> None:
    """Carol may use the studio relay only, not the default: a preset naming the studio
    works for her, one that leaves the default in place is refused."""
    async with client(server, "carol", mode) as carol:
        (image,) = (await call(carol, "generate_image", prompt="a fox", preset="poster"))["images"]
        assert image["relay"] == "studio"
        with pytest.raises(ToolError, match=r"^forbidden: needs scope relay:placeholder$"):
            await carol.call_tool("generate_image", {"prompt": "x", "preset": "plain"})
        with pytest.raises(ToolError, match=r"^forbidden: needs scope relay:placeholder$"):
            await carol.call_tool("generate_image", {"prompt": "x"})


async def test_a_batch_edit_on_a_presets_forbidden_relay_is_refused_before_any_job(
    server: str, mode: str
) -> None:
    async with client(server, "dave", mode) as dave:
        (image,) = (await call(dave, "generate_image", prompt="a fox"))["images"]
        with pytest.raises(ToolError, match=r"^forbidden: needs scope relay:studio$"):
            await dave.call_tool(
                "edit_image",
                {
                    "prompt": "make it night",
                    "images": [image["asset_id"]] * 2,
                    "batch": True,
                    "preset": "poster",
                },
            )
        jobs = (await call(dave, "list_jobs"))["jobs"]
        assert [job["tool"] for job in jobs] == ["generate_image"]


async def test_prompts_are_offered_as_the_acl_allows(server: str, mode: str) -> None:
    async with client(server, "alice", mode) as alice, client(server, "bob", mode) as bob:
        assert alice.session.server_capabilities is not None
        assert alice.session.server_capabilities.prompts is not None
        listed = {prompt.name: prompt for prompt in await alice.list_prompts()}
        assert sorted(listed) == ["preset_plain", "write_for_placeholder"]
        assert [(a.name, a.required) for a in listed["preset_plain"].arguments or []] == [
            ("idea", True)
        ]
        assert sorted(p.name for p in await bob.list_prompts()) == [
            "preset_plain",
            "preset_poster",
            "write_for_placeholder",
        ]

        poster = await bob.get_prompt("preset_poster", {"idea": "a lighthouse"})
        (message,) = poster.messages
        assert isinstance(message.content, mcp_types.TextContent)
        assert message.content.text.startswith("Make an image of: a lighthouse\n")
        assert 'generate_image with preset="poster"' in message.content.text
        # Hidden from Alice: the same answer as a prompt that doesn't exist.
        for name in ("preset_poster", "preset_nothing"):
            with pytest.raises(MCPError, match=f"^Unknown prompt: '{name}'$"):
                await alice.get_prompt(name, {"idea": "a lighthouse"})
        with pytest.raises(MCPError, match="argument idea is required"):
            await alice.get_prompt("preset_plain", {})

        # A kind's guide lists the relays of that kind the caller may use.
        guide = (await alice.get_prompt("write_for_placeholder", {"idea": "a fox"})).messages[0]
        assert isinstance(guide.content, mcp_types.TextContent)
        assert "\n- placeholder: free;" in guide.content.text
        assert "studio" not in guide.content.text
        guide = (await bob.get_prompt("write_for_placeholder", {"idea": "a fox"})).messages[0]
        assert isinstance(guide.content, mcp_types.TextContent)
        assert "\n- studio: free;" in guide.content.text


async def test_a_reader_gets_no_prompts_and_no_preset_tools(server: str, mode: str) -> None:
    async with client(server, "reader", mode) as reader:
        assert await reader.list_prompts() == []
        tools = {tool.name for tool in await reader.list_tools()}
        assert "list_presets" in tools
        assert not {"save_preset", "delete_preset"} & tools
        with pytest.raises(MCPError, match=r"^Unknown prompt: 'write_for_placeholder'$"):
            await reader.get_prompt("write_for_placeholder", {"idea": "x"})
        with pytest.raises(ToolError, match=r"^forbidden: needs scope images:generate or"):
            await reader.call_tool("save_preset", {"name": "x", "prompt": "{prompt}"})


async def test_over_stdio_the_local_user_has_presets_and_prompts(tmp_path: Path) -> None:
    config = tmp_path / "imagegate.toml"
    config.write_text(CONFIG)
    transport = StdioTransport(
        command=sys.executable,
        args=["-m", "imagegate", "--config", str(config), "serve", "--transport", "stdio"],
        env=clean_env(IMAGEGATE_STATE_DIR=str(tmp_path / "state")),
    )
    async with Client(transport) as local:
        names = sorted(prompt.name for prompt in await local.list_prompts())
        assert names == ["preset_plain", "preset_poster", "write_for_placeholder"]
        await call(local, "save_preset", name="ink", prompt="ink sketch of {prompt}")
        (image,) = (await call(local, "generate_image", prompt="a fox", preset="ink"))["images"]
        assert image["prompt"] == "ink sketch of a fox"


async def test_an_own_preset_the_operator_then_shadows_is_marked_and_deletable(
    tmp_path: Path,
) -> None:
    config = tmp_path / "imagegate.toml"
    config.write_text('default_relay = "placeholder"\n[relays.placeholder]\nkind = "placeholder"\n')

    def local() -> Client[Any]:
        return Client(
            StdioTransport(
                command=sys.executable,
                args=["-m", "imagegate", "--config", str(config), "serve", "--transport", "stdio"],
                env=clean_env(IMAGEGATE_STATE_DIR=str(tmp_path / "state")),
            )
        )

    async with local() as session:
        await call(session, "save_preset", name="poster", prompt="my poster of {prompt}")
    config.write_text(CONFIG)  # the operator adds [presets.poster]
    async with local() as session:
        listed = await session.call_tool("list_presets", {})
        assert listed.structured_content is not None
        presets = listed.structured_content["presets"]
        assert [(p["name"], p["owner"], p.get("shadowed")) for p in presets] == [
            ("plain", "server", None),
            ("poster", "server", None),
            ("poster", "own", True),
        ]
        text = listed.content[0]
        assert isinstance(text, mcp_types.TextContent)
        assert "poster (own, shadowed by the server's: calls use that one)" in text.text
        assert await call(session, "delete_preset", name="poster") == {"deleted": "poster"}
        names = [(p["name"], p["owner"]) for p in (await call(session, "list_presets"))["presets"]]
        assert names == [("plain", "server"), ("poster", "server")]
        with pytest.raises(ToolError, match=r"^'poster' is a server preset"):
            await session.call_tool("delete_preset", {"name": "poster"})
