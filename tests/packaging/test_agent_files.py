"""The agent skill and the Claude Code plugin in packaging/claude-code-plugin.

The skill follows the Agent Skills format (agentskills.io/specification), which
Claude Code and Codex both read: YAML front matter with `name` (1-64 lowercase
letters, digits and single hyphens, the same as its directory) and `description`
(1-1024 characters). The skill has one copy, inside the plugin's `skills/`; the
plugin's `plugin.json` declares the stdio server inline under `mcpServers`.
"""

import json
import re
from pathlib import Path
from typing import Any

from imagegate.access.scopes import ADMIN
from imagegate.clientconfig import Local, entry
from imagegate.mcp.specs import TOOLS

PLUGIN = Path(__file__).parents[2] / "packaging" / "claude-code-plugin"
SKILL = PLUGIN / "skills" / "imagegate" / "SKILL.md"
NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
IDENTIFIER = re.compile(r"`([a-z]+(?:_[a-z]+)+)`")
RESULT_FIELDS = {"asset_id", "job_id", "upload_url"}
"""Backticked snake_case words in the skill that name result fields, not tools."""


def front_matter(text: str) -> dict[str, str]:
    """The `key: value` lines between the opening and closing `---`."""
    lines = text.splitlines()
    assert lines[0] == "---", "SKILL.md must start with front matter"
    end = lines.index("---", 1)
    fields: dict[str, str] = {}
    for line in lines[1:end]:
        key, sep, value = line.partition(":")
        assert sep, line
        assert key == key.strip(), line
        assert value.startswith(" "), line
        fields[key] = value.strip()
    return fields


def named_tools(text: str) -> set[str]:
    return set(IDENTIFIER.findall(text)) - RESULT_FIELDS


def test_skill_front_matter_is_within_the_documented_limits() -> None:
    fields = front_matter(SKILL.read_text(encoding="utf-8"))
    assert set(fields) == {"name", "description"}
    assert NAME.fullmatch(fields["name"])
    assert len(fields["name"]) <= 64
    assert fields["name"] == SKILL.parent.name
    assert 1 <= len(fields["description"]) <= 1024
    assert not fields["description"].startswith(("'", '"', ">", "|"))


def test_skill_names_only_real_tools_and_every_non_admin_one() -> None:
    tools = {spec.name for spec in TOOLS}
    user_tools = {spec.name for spec in TOOLS if spec.scope != ADMIN}
    mentioned = named_tools(SKILL.read_text(encoding="utf-8"))
    assert mentioned <= tools, f"not tools: {sorted(mentioned - tools)}"
    assert user_tools <= mentioned, f"not mentioned: {sorted(user_tools - mentioned)}"


def test_a_made_up_tool_name_is_caught() -> None:
    assert named_tools("Call `make_video`, then `get_job` with the `job_id`.") == {
        "make_video",
        "get_job",
    }


def plugin_manifest() -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(
        (PLUGIN / ".claude-plugin" / "plugin.json").read_text(encoding="utf-8")
    )
    return manifest


def test_plugin_manifest_names_the_plugin() -> None:
    manifest = plugin_manifest()
    assert NAME.fullmatch(manifest["name"])
    assert manifest["description"]
    assert sorted(p.name for p in (PLUGIN / ".claude-plugin").iterdir()) == ["plugin.json"]


def test_plugin_starts_imagegate_from_path_over_stdio() -> None:
    servers = plugin_manifest()["mcpServers"]
    assert servers == {"imagegate": entry("claude-code", Local(command=("imagegate",)))}
    assert servers["imagegate"]["args"] == ["serve", "--transport", "stdio"]
