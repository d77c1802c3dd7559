"""The Codex plugin: packaging/claude-code-plugin is also a Codex plugin, by its
`.codex-plugin/plugin.json`, and the repository's marketplace
(`.agents/plugins/marketplace.json`) offers it to `codex plugin add`.

Codex itself is no test dependency (its npm package is 400 MB). The rules checked here
are those of Codex's own plugin-creator skill, whose validator "mirrors the workspace
plugin ingestion schema": openai/codex, codex-rs/skills/src/assets/samples/plugin-creator,
references/plugin-json-spec.md and scripts/validate_plugin.py. Codex 0.171.0 was seen
to install this plugin from the marketplace and list its MCP server and skill.
"""

import json
import re
from pathlib import Path
from typing import Any

import pytest

from imagegate import __version__
from imagegate.clientconfig import Local, entry

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "packaging" / "claude-code-plugin"
MARKETPLACE = ROOT / ".agents" / "plugins" / "marketplace.json"
NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(-(0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(\.(0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*)?"
    r"(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?"
)
FIELDS = {
    "id",
    "name",
    "version",
    "description",
    "agents",
    "skills",
    "apps",
    "mcpServers",
    "interface",
    "author",
    "homepage",
    "repository",
    "license",
    "keywords",
}
"""What the validator accepts at the top level; `hooks` and anything else it refuses."""
INTERFACE_FIELDS = {
    "displayName",
    "shortDescription",
    "longDescription",
    "developerName",
    "category",
    "capabilities",
    "websiteURL",
    "privacyPolicyURL",
    "termsOfServiceURL",
    "brandColor",
    "composerIcon",
    "logo",
    "logoDark",
    "screenshots",
    "defaultPrompt",
    "default_prompt",
}
REQUIRED_TEXTS = ("displayName", "shortDescription", "longDescription", "developerName", "category")
MAX_PROMPTS = 3
MAX_PROMPT_CHARS = 128
INSTALLATION = {"NOT_AVAILABLE", "AVAILABLE", "INSTALLED_BY_DEFAULT"}
AUTHENTICATION = {"ON_INSTALL", "ON_USE"}


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def manifest() -> dict[str, Any]:
    return load(PLUGIN / ".codex-plugin" / "plugin.json")


def problems(plugin: dict[str, Any]) -> list[str]:
    """The plugin-creator validator's rules for plugin.json, as far as they apply here."""
    found = [f"unknown field {key}" for key in sorted(set(plugin) - FIELDS)]
    for key in ("name", "version", "description"):
        if not isinstance(plugin.get(key), str) or not plugin[key].strip():
            found.append(f"{key} must be a non-empty string")
    if isinstance(plugin.get("version"), str) and not SEMVER.fullmatch(plugin["version"]):
        found.append("version must be strict semver")
    author = plugin.get("author")
    if not isinstance(author, dict) or not str(author.get("name", "")).strip():
        found.append("author.name must be a non-empty string")
    if plugin.get("skills") not in (None, "./skills", "./skills/"):
        found.append("skills must be ./skills/")
    servers = plugin.get("mcpServers", {})
    inline = isinstance(servers, dict) and all(isinstance(v, dict) for v in servers.values())
    if not inline and servers != "./.mcp.json":
        found.append("mcpServers must be ./.mcp.json or an object of server objects")
    interface = plugin.get("interface")
    if not isinstance(interface, dict):
        return [*found, "interface must be an object"]
    found += [f"unknown field interface.{key}" for key in sorted(set(interface) - INTERFACE_FIELDS)]
    for key in REQUIRED_TEXTS:
        if not isinstance(interface.get(key), str) or not interface[key].strip():
            found.append(f"interface.{key} must be a non-empty string")
    capabilities = interface.get("capabilities")
    if not isinstance(capabilities, list) or not all(
        isinstance(c, str) and c.strip() for c in capabilities
    ):
        found.append("interface.capabilities must be an array of strings")
    prompts = interface.get("defaultPrompt")
    if not isinstance(prompts, list) or not prompts:
        found.append("interface.defaultPrompt is required")
    elif len(prompts) > MAX_PROMPTS or not all(
        isinstance(p, str) and 0 < len(p.strip()) <= MAX_PROMPT_CHARS for p in prompts
    ):
        found.append("interface.defaultPrompt: at most 3 prompts of 1-128 characters")
    return found


def test_the_codex_manifest_follows_codexs_rules() -> None:
    assert problems(manifest()) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda m: m.update(hooks="./hooks.json"), "unknown field hooks"),
        (lambda m: m.update(version="0.1"), "version must be strict semver"),
        (lambda m: m.pop("author"), "author.name must be a non-empty string"),
        (lambda m: m.update(skills="../skills"), "skills must be ./skills/"),
        (lambda m: m.update(mcpServers=["imagegate"]), "mcpServers must be ./.mcp.json or an"),
        (lambda m: m["interface"].pop("developerName"), "interface.developerName must be"),
        (lambda m: m["interface"].update(capabilities="Write"), "interface.capabilities must"),
        (lambda m: m["interface"]["defaultPrompt"].append("x" * 129), "interface.defaultPrompt:"),
        (lambda m: m["interface"].update(color="#000000"), "unknown field interface.color"),
    ],
)
def test_each_rule_catches_its_mistake(change: Any, problem: str) -> None:
    broken = manifest()
    change(broken)
    assert [p for p in problems(broken) if p.startswith(problem)], problems(broken)


def test_it_is_the_same_plugin_as_claude_codes_at_this_version() -> None:
    claude = load(PLUGIN / ".claude-plugin" / "plugin.json")
    codex = manifest()
    assert NAME.fullmatch(codex["name"])
    assert codex["name"] == claude["name"]
    assert codex["version"] == __version__
    assert sorted(p.name for p in (PLUGIN / ".codex-plugin").iterdir()) == ["plugin.json"]


def test_it_starts_imagegate_from_path_over_stdio_as_client_config_prints_for_codex() -> None:
    servers = manifest()["mcpServers"]
    assert servers == {"imagegate": entry("codex", Local(command=("imagegate",)))}
    assert servers["imagegate"]["args"] == ["serve", "--transport", "stdio"]


def test_its_skills_are_the_claude_code_plugins_skill() -> None:
    skills = PLUGIN / manifest()["skills"]
    assert skills.resolve() == (PLUGIN / "skills").resolve()
    assert (skills / "imagegate" / "SKILL.md").is_file()


def test_the_repository_marketplace_offers_the_plugin() -> None:
    marketplace = load(MARKETPLACE)
    assert NAME.fullmatch(marketplace["name"])
    (listed,) = marketplace["plugins"]
    assert listed["source"]["source"] == "local"
    # Relative to the marketplace's root: the directory that holds .agents/.
    path = listed["source"]["path"]
    assert path.startswith("./")
    assert (MARKETPLACE.parents[2] / path).resolve() == PLUGIN.resolve()
    assert listed["name"] == manifest()["name"]
    assert listed["policy"]["installation"] in INSTALLATION
    assert listed["policy"]["authentication"] in AUTHENTICATION
    assert listed["category"]
