"""relay="auto" end to end: a real `imagegate serve` with a free relay and two paid
ones (a fake Images API on 127.0.0.1), each call answering which relay it chose and
why, and a caller who may not use the cheap one getting the other."""

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from fastmcp.client.auth import BearerAuth
from fastmcp.client.transports import StdioTransport
from fastmcp.exceptions import ToolError
from mcp_types import TextContent

from tests.e2e.harness import team_files
from tests.e2e.processes import clean_env, serving
from tests.fakes.upstream import FakeUpstream, held, images_reply, png_bytes, running_upstream

DESIGNER = "designer-token-0123456789abcdefghij"
INTERN = "intern-token-0123456789abcdefghijkl"
KEY = "sk-fake-auto-key-0123456789"
GENERATIONS = "/v1/images/generations"

ACL = """
[subjects."token:designer"]
scopes = ["images:generate", "relay:*", "paid:auto"]

[subjects."token:intern"]
scopes = ["images:generate", "relay:draft", "relay:studio", "paid:auto"]
"""


def config(fake: FakeUpstream) -> str:
    def paid(name: str, price: float, traits: str) -> str:
        return (
            f'[relays.{name}]\nkind = "openai-images"\nbase_url = "{fake.base_url}/v1"\n'
            f'api_key_env = "FAKE_AUTO_KEY"\nmodel = "{name}-model"\npaid = true\n'
            f'price = {{ per_image = {{ "*" = {price} }} }}\ntraits = {traits}\n'
            "retry_budget_seconds = 5.0\n"
        )

    return (
        'default_relay = "draft"\n'
        '[relays.draft]\nkind = "placeholder"\ntraits = ["fast", "illustration"]\n'
        + paid("studio", 0.04, '["photoreal", "text"]')
        + paid("budget", 0.02, '["photoreal"]')
    )


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with running_upstream() as fake:
        fake.defaults[GENERATIONS] = images_reply(png_bytes((1024, 1024)))
        yield fake


@pytest.fixture
def server(tmp_path: Path, upstream: FakeUpstream) -> Iterator[str]:
    files = team_files(tmp_path, ACL, {"designer": DESIGNER, "intern": INTERN})
    toml = tmp_path / "imagegate.toml"
    toml.write_text(
        f'acl_file = "{files["acl_file"]}"\ntokens_file = "{files["tokens_file"]}"\n'
        f'audit_log = "{tmp_path / "audit.jsonl"}"\n' + config(upstream)
    )
    with serving(tmp_path / "state", IMAGEGATE_CONFIG=str(toml), FAKE_AUTO_KEY=KEY) as (
        base_url,
        _,
    ):
        yield f"{base_url}/mcp"


async def call(url: str, token: str, **arguments: Any) -> tuple[dict[str, Any], str]:
    """One generate_image call: its structured content and its text."""
    async with Client(url, auth=BearerAuth(token)) as client:
        result = await client.call_tool("generate_image", {"prompt": "a lighthouse", **arguments})
    assert result.structured_content is not None
    (text, *_) = [block.text for block in result.content if isinstance(block, TextContent)]
    return result.structured_content, text


def models_asked(upstream: FakeUpstream) -> list[str]:
    return [request.json()["model"] for request in upstream.calls(GENERATIONS)]


async def test_auto_picks_the_cheapest_relay_that_fits_and_says_so(
    server: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    made, text = await call(server, DESIGNER, relay="auto", size="64x64")
    assert made["relay_choice"] == {
        "relay": "draft",
        "reason": "the only relay you may use that can do this; free",  # 64x64: openai no
    }
    assert made["images"][0]["relay"] == "draft"
    assert "relay=auto chose draft: the only relay" in text

    made, text = await call(server, DESIGNER, relay="auto", needs=["photoreal"])
    assert made["relay_choice"] == {
        "relay": "budget",
        "reason": "cheapest of 2 relays you may use that can do this with photoreal; "
        "about USD 0.020",
    }
    assert made["images"][0]["relay"] == "budget"
    assert (made["confirmation"], made["estimated_cost"]) == ("paid:auto", 0.02)
    assert "relay=auto chose budget" in text

    # The placeholder makes no transparent backgrounds: the cheap paid relay does.
    made, _ = await call(server, DESIGNER, relay="auto", background="transparent")
    assert made["relay_choice"]["relay"] == "budget"
    assert models_asked(upstream) == ["budget-model", "budget-model"]

    # A named relay is no choice: the result says nothing of one.
    made, _ = await call(server, DESIGNER, relay="studio")
    assert "relay_choice" not in made

    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [line["relay"] for line in audit] == ["draft", "budget", "budget", "studio"]


async def test_a_caller_without_the_cheap_relays_scope_gets_the_other(
    server: str, upstream: FakeUpstream
) -> None:
    async with Client(server, auth=BearerAuth(INTERN)) as client:
        listed = (await client.call_tool("list_relays", {})).structured_content
    assert listed is not None
    assert {relay["name"]: relay.get("traits") for relay in listed["relays"]} == {
        "draft": ["fast", "illustration"],
        "studio": ["photoreal", "text"],
    }

    # The choice goes with the job: in the answer that it is running, and in its result.
    answer = asyncio.Event()
    upstream.script(GENERATIONS, held(answer, images_reply(png_bytes((1024, 1024)))))
    running, _ = await call(server, INTERN, relay="auto", needs=["photoreal"], wait_seconds=0)
    choice = {
        "relay": "studio",
        "reason": "the only relay you may use that can do this with photoreal; about USD 0.040",
    }
    assert (running["status"], running["relay_choice"]) == ("running", choice)
    answer.set()
    async with Client(server, auth=BearerAuth(INTERN)) as client:
        result = await client.call_tool("get_job", {"job_id": running["job_id"]})
    assert result.structured_content is not None
    assert result.structured_content["relay_choice"] == choice
    assert result.structured_content["images"][0]["relay"] == "studio"
    assert models_asked(upstream) == ["studio-model"]

    with pytest.raises(ToolError) as refused:
        await call(server, INTERN, relay="auto", size="64x64", needs=["photoreal"])
    assert str(refused.value) == (
        "relay='auto': no relay you may use can do this: draft: lacks photoreal; "
        "studio: supports sizes 1024x1024, 1024x1536, 1536x1024; got 64x64"
    )
    with pytest.raises(ToolError, match="forbidden: needs scope relay:budget"):
        await call(server, INTERN, relay="budget")
    assert models_asked(upstream) == ["studio-model"]


async def test_over_stdio_auto_saves_in_the_format_the_name_asks_for(tmp_path: Path) -> None:
    """save_to "hero.webp" makes WebP although the relay's default is PNG; a name
    already taken is refused before anything is made, also one without an extension."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "taken.png").write_bytes(b"the user's own file")
    transport = StdioTransport(
        command=sys.executable,
        args=["-m", "imagegate", "serve", "--transport", "stdio"],
        env=clean_env(
            IMAGEGATE_STATE_DIR=str(tmp_path / "state"), IMAGEGATE_OUTPUT_ROOT=str(project)
        ),
    )
    async with Client(transport) as local:
        made = await local.call_tool(
            "generate_image",
            {"prompt": "a hero", "size": "64x64", "relay": "auto", "save_to": "hero.webp"},
        )
        for name in ("taken.png", "taken"):
            with pytest.raises(ToolError, match=r"^save_to: taken.png exists in output_root"):
                await local.call_tool(
                    "generate_image", {"prompt": "x", "relay": "auto", "save_to": name}
                )
        listed = await local.call_tool("list_images", {})
    assert made.structured_content is not None
    (image,) = made.structured_content["images"]
    assert image["mime_type"] == "image/webp"
    assert (project / "hero.webp").read_bytes()[8:12] == b"WEBP"
    assert listed.structured_content is not None
    assert len(listed.structured_content["images"]) == 1  # the refused calls made none
    assert (project / "taken.png").read_bytes() == b"the user's own file"
