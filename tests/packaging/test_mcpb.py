"""The Claude Desktop bundle (.mcpb) that `make package` writes, checked with the official
MCP Bundle tools: npm @anthropic-ai/mcpb, pinned in packaging/mcpb (`make test` installs it).

The bundle holds only a manifest: Claude Desktop starts the imagegate the user installed,
the program and options they choose at install time (`user_config`). Claude Desktop
itself (macOS, Windows) cannot run here, so the command line it would build comes from
the same open-source function, `getMcpConfigForManifest` of that package (which its
README says Claude uses), and is then started for real over stdio.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

from imagegate import __version__

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "packaging" / "build.sh"
TOOLS_DIR = ROOT / "packaging" / "mcpb"
TEMPLATE = TOOLS_DIR / "manifest.json"
MCPB = TOOLS_DIR / "node_modules" / ".bin" / "mcpb"
HOST = Path(__file__).with_name("mcpb_host.mjs")
IMAGEGATE = Path(sys.executable).parent / "imagegate"
EPOCH = "1700000000"
KEY_VARIABLES = ("OPENAI_API_KEY", "GEMINI_API_KEY", "OPENROUTER_API_KEY")


def run(
    *command: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def require_mcpb() -> None:
    if not MCPB.exists() or shutil.which("node") is None:
        pytest.skip(
            "the mcpb CLI is not installed; `make test` installs it "
            "(npm ci --prefix packaging/mcpb, with Node.js)"
        )


def build(out: Path) -> Path:
    """`packaging/build.sh` with FORMATS=mcpb: the step `make package` runs, alone."""
    require_mcpb()
    env = {**os.environ, "FORMATS": "mcpb", "OUT": str(out), "SOURCE_DATE_EPOCH": EPOCH}
    result = run(BUILD_SCRIPT, env=env)
    assert result.returncode == 0, result.stderr
    (bundle,) = out.iterdir()
    return bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def manifest(bundle: Path) -> dict[str, Any]:
    with zipfile.ZipFile(bundle) as archive:
        loaded: dict[str, Any] = json.loads(archive.read("manifest.json"))
    return loaded


def host_config(manifest: dict[str, Any], user_config: dict[str, str]) -> Any:
    """What the host starts for these install-time choices; None: it starts nothing."""
    request = {"manifest": manifest, "userConfig": user_config, "extensionPath": "/ext"}
    result = subprocess.run(
        ["node", str(HOST), str(TOOLS_DIR)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def printed_entry(*args: str) -> dict[str, Any]:
    """The stdio entry `imagegate client-config claude-desktop` prints."""
    if not IMAGEGATE.exists():
        pytest.skip(f"no imagegate script beside {sys.executable}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    result = run(IMAGEGATE, *args, "client-config", "claude-desktop", env=env)
    assert result.returncode == 0, result.stderr
    entry: dict[str, Any] = json.loads(result.stdout)["mcpServers"]["imagegate"]
    return entry


def test_make_package_writes_a_zip_of_the_manifest_with_the_version(
    bundle: Path, manifest: dict[str, Any]
) -> None:
    assert bundle.name == f"imagegate-{__version__}.mcpb"
    with zipfile.ZipFile(bundle) as archive:
        (entry,) = archive.infolist()
    assert entry.filename == "manifest.json"
    assert stat.S_IMODE(entry.external_attr >> 16) == 0o644
    assert entry.date_time == time.gmtime(int(EPOCH))[:6]  # SOURCE_DATE_EPOCH's, not now
    template = json.loads(TEMPLATE.read_text(encoding="utf-8"))
    assert template["version"] == "@VERSION@"
    assert manifest == {**template, "version": __version__}


def test_the_official_cli_unpacks_and_validates_the_bundle(bundle: Path, tmp_path: Path) -> None:
    unpacked = tmp_path / "unpacked"
    result = run(MCPB, "unpack", bundle, unpacked)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run(MCPB, "validate", unpacked / "manifest.json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Manifest schema validation passes!" in result.stdout


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda m: m["server"].update(type="uv"), "uv is not a server type of manifest 0.2"),
        (lambda m: m["server"].pop("entry_point"), "entry_point is required"),
        (lambda m: m["user_config"]["program"].pop("description"), "options need a description"),
        (lambda m: m.update(homepage="not a url"), "homepage must be a URL"),
        (lambda m: m.update(extra=True), "unknown fields are refused"),
    ],
)
def test_the_validator_refuses_what_the_format_forbids(
    manifest: dict[str, Any], tmp_path: Path, change: Any, why: str
) -> None:
    """The validation above means something: the same CLI refuses these manifests."""
    broken = json.loads(json.dumps(manifest))
    change(broken)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(broken), encoding="utf-8")
    result = run(MCPB, "validate", path)
    assert result.returncode == 1, why


def test_claude_desktop_starts_what_client_config_prints(manifest: dict[str, Any]) -> None:
    printed = printed_entry()
    started = host_config(manifest, {"program": printed["command"]})
    assert {"command": started["command"], "args": started["args"]} == printed
    assert started["env"]["IMAGEGATE_CONFIG"] == ""


def test_the_configuration_file_goes_where_client_configs_config_goes(
    manifest: dict[str, Any], tmp_path: Path
) -> None:
    """client-config passes --config FILE; the bundle passes IMAGEGATE_CONFIG=FILE,
    which imagegate reads the same way, because an empty option must stay harmless."""
    config = tmp_path / "imagegate.toml"
    printed = printed_entry("--config", str(config))
    assert printed["args"][:2] == ["--config", str(config)]
    started = host_config(manifest, {"program": printed["command"], "config_file": str(config)})
    assert started["args"] == printed["args"][2:]
    assert started["env"]["IMAGEGATE_CONFIG"] == str(config)


def test_options_left_empty_reach_imagegate_empty_not_as_placeholders(
    manifest: dict[str, Any],
) -> None:
    """A host keeps `${user_config.X}` as it is for an option without a value or default;
    imagegate would read that text as a file name or a key."""
    started = host_config(manifest, {"program": "/opt/bin/imagegate"})
    values = [started["command"], *started["args"], *started["env"].values()]
    assert not [value for value in values if "${" in value]
    keys = {name: started["env"][name] for name in KEY_VARIABLES}
    assert keys == dict.fromkeys(KEY_VARIABLES, "")


def test_api_keys_are_secret_options_passed_as_their_variables(manifest: dict[str, Any]) -> None:
    options = manifest["user_config"]
    chosen = {"program": "/opt/bin/imagegate", "openai_api_key": "sk-1", "gemini_api_key": "g-2"}
    started = host_config(manifest, chosen)
    assert started["env"]["OPENAI_API_KEY"] == "sk-1"
    assert started["env"]["GEMINI_API_KEY"] == "g-2"
    assert all(options[key]["sensitive"] for key in options if key.endswith("_api_key"))
    assert "sk-1" not in json.dumps(started["args"])


def test_without_the_program_claude_desktop_starts_nothing(manifest: dict[str, Any]) -> None:
    assert manifest["user_config"]["program"]["required"] is True
    assert host_config(manifest, {}) is None


async def test_the_started_imagegate_serves_the_tools_the_manifest_lists(
    manifest: dict[str, Any], tmp_path: Path
) -> None:
    if not IMAGEGATE.exists():
        pytest.skip(f"no imagegate script beside {sys.executable}")
    started = host_config(manifest, {"program": str(IMAGEGATE)})
    # The host adds its own environment; a fresh HOME keeps the state in tmp_path.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEGATE_", "XDG_"))}
    transport = StdioTransport(
        command=started["command"],
        args=started["args"],
        env={**base, "HOME": str(tmp_path), **started["env"]},
    )
    async with Client(transport) as client:
        served = {tool.name for tool in await client.list_tools()}
        prompts = await client.list_prompts()
        info = (await client.call_tool("server_info", {})).structured_content
    assert {tool["name"] for tool in manifest["tools"]} == served
    assert manifest.get("tools_generated", False) is False
    assert prompts
    assert manifest["prompts_generated"] is True
    assert info is not None
    assert info["version"] == manifest["version"]
    assert (tmp_path / ".local" / "state" / "imagegate").is_dir()


def test_the_same_sources_give_the_same_bundle(bundle: Path, tmp_path: Path) -> None:
    assert build(tmp_path).read_bytes() == bundle.read_bytes()
