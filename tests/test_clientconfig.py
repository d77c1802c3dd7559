"""`imagegate client-config`: each client's entry, and the merge into its config file."""

import json
import os
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest

from imagegate import cli
from imagegate.clientconfig import (
    CLIENTS,
    Local,
    PerUserOpenID,
    Remote,
    check_name,
    check_token_env,
    check_url,
    default_path,
    entry,
    merge,
    snippet,
    write_merged,
)
from imagegate.core.errors import InvalidRequest

LOCAL = Local(("/opt/imagegate/bin/imagegate",))
REMOTE = Remote("https://images.example.com/mcp", "IMAGEGATE_TOKEN")
STDIO = {"command": "/opt/imagegate/bin/imagegate", "args": ["serve", "--transport", "stdio"]}
URL = "https://images.example.com/mcp"


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [
        ("claude-code", LOCAL, {"type": "stdio", **STDIO}),
        (
            "claude-code",
            REMOTE,
            {"type": "http", "url": URL, "headers": {"Authorization": "Bearer ${IMAGEGATE_TOKEN}"}},
        ),
        ("codex", LOCAL, STDIO),
        ("codex", REMOTE, {"url": URL, "bearer_token_env_var": "IMAGEGATE_TOKEN"}),
        ("claude-desktop", LOCAL, STDIO),
        ("cursor", LOCAL, STDIO),
        (
            "cursor",
            REMOTE,
            {"url": URL, "headers": {"Authorization": "Bearer ${env:IMAGEGATE_TOKEN}"}},
        ),
        (
            "librechat",
            REMOTE,
            {
                "type": "streamable-http",
                "url": URL,
                "headers": {"Authorization": "Bearer ${IMAGEGATE_TOKEN}"},
            },
        ),
    ],
)
def test_each_client_gets_its_documented_entry(
    client: str, server: Local | Remote, expected: dict[str, Any]
) -> None:
    assert entry(client, server) == expected


def test_python_dash_m_keeps_its_arguments_before_serve() -> None:
    made = entry("cursor", Local(("/usr/bin/python3", "-m", "imagegate")))
    assert made == {
        "command": "/usr/bin/python3",
        "args": ["-m", "imagegate", "serve", "--transport", "stdio"],
    }


@pytest.mark.parametrize(
    ("client", "server", "refusal"),
    [
        ("claude-desktop", REMOTE, "Settings > Connectors"),
        ("librechat", LOCAL, "--server URL"),
    ],
)
def test_unsupported_transports_are_refused(
    client: str, server: Local | Remote, refusal: str
) -> None:
    with pytest.raises(InvalidRequest, match=refusal):
        entry(client, server)


@pytest.mark.parametrize("client", ["claude-code", "codex", "cursor", "librechat"])
def test_the_snippet_names_the_variable_never_a_token(
    client: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_TOKEN", "s3cret-token-value")
    text = snippet(client, "imagegate", entry(client, Remote(URL, "MY_TOKEN")))
    assert "MY_TOKEN" in text
    assert "s3cret-token-value" not in text


def test_snippets_are_whole_fragments_of_each_format() -> None:
    assert json.loads(snippet("cursor", "img", entry("cursor", LOCAL))) == {
        "mcpServers": {"img": STDIO}
    }
    assert tomllib.loads(snippet("codex", "img", entry("codex", REMOTE))) == {
        "mcp_servers": {"img": {"url": URL, "bearer_token_env_var": "IMAGEGATE_TOKEN"}}
    }
    assert snippet("librechat", "img", entry("librechat", REMOTE)) == (
        "mcpServers:\n"
        "  img:\n"
        '    type: "streamable-http"\n'
        '    url: "https://images.example.com/mcp"\n'
        "    headers:\n"
        '      Authorization: "Bearer ${IMAGEGATE_TOKEN}"\n'
    )


LIBRECHAT_OPENID = (
    "mcpServers:\n"
    "  img:\n"
    '    type: "streamable-http"\n'
    '    url: "https://images.example.com/mcp"\n'
    "    headers:\n"
    '      Authorization: "Bearer {{LIBRECHAT_OPENID_ACCESS_TOKEN}}"\n'
    "    requiresOAuth: false\n"
)


def test_librechat_can_send_each_users_own_openid_token() -> None:
    """LibreChat fills the placeholder with the logged-in user's access token; without
    requiresOAuth: false it may take imagegate for a server with its own OAuth login."""
    assert snippet("librechat", "img", entry("librechat", PerUserOpenID(URL))) == LIBRECHAT_OPENID


@pytest.mark.parametrize("client", ["claude-code", "codex", "claude-desktop", "cursor"])
def test_only_librechat_forwards_its_users_openid_tokens(client: str) -> None:
    with pytest.raises(InvalidRequest, match="--openid is for librechat only"):
        entry(client, PerUserOpenID(URL))


def test_the_command_prints_the_librechat_openid_entry(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["client-config", "librechat", "--server", URL, "--name", "img", "--openid"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    assert printed.out == LIBRECHAT_OPENID
    assert "OPENID_REUSE_TOKENS=true" in printed.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["librechat", "--openid"], "--openid goes with --server URL"),
        (["codex", "--server", URL, "--openid"], "--openid is for librechat only"),
        (["librechat", "--server", URL, "--openid", "--write"], "--write is not supported"),
    ],
)
def test_the_command_refuses_openid_elsewhere(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["client-config", *argv]) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    assert message in printed.err


@pytest.mark.parametrize(
    ("url", "warning"),
    [
        ("https://images.example.com/mcp", None),
        ("http://127.0.0.1:8765/mcp", None),
        ("http://[::1]:8765/mcp", None),
        ("http://localhost:8765/mcp", None),
        ("http://images.example.com/mcp", "plain http"),
        ("https://images.example.com", "no path"),
    ],
)
def test_server_urls_warn_about_plain_http_elsewhere(url: str, warning: str | None) -> None:
    warnings = check_url(url)
    if warning is None:
        assert warnings == []
    else:
        assert any(warning in w for w in warnings)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://images.example.com/mcp",
        "images.example.com/mcp",
        "https:///mcp",
        "https://user:pw@images.example.com/mcp",
        'https://images.example.com/mcp"x',
    ],
)
def test_bad_server_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequest, match="--server"):
        check_url(url)


@pytest.mark.parametrize("name", ["1TOKEN", "MY-TOKEN", "", "A B", "${X}"])
def test_token_env_must_be_a_variable_name(name: str) -> None:
    with pytest.raises(InvalidRequest, match="--token-env"):
        check_token_env(name)


@pytest.mark.parametrize("name", ["", "a.b", "a b", "x" * 65, 'a"'])
def test_server_names_are_plain(name: str) -> None:
    with pytest.raises(InvalidRequest, match="--name"):
        check_name(name)


@pytest.mark.parametrize(
    ("client", "macos", "expected"),
    [
        ("claude-code", False, "/proj/.mcp.json"),
        ("codex", False, "/home/u/.codex/config.toml"),
        ("claude-desktop", False, "/home/u/.config/Claude/claude_desktop_config.json"),
        (
            "claude-desktop",
            True,
            "/home/u/Library/Application Support/Claude/claude_desktop_config.json",
        ),
        ("cursor", True, "/home/u/.cursor/mcp.json"),
    ],
)
def test_default_paths(client: str, macos: bool, expected: str) -> None:
    assert str(default_path(client, Path("/home/u"), Path("/proj"), macos, None)) == expected


def test_codex_home_moves_codex_config() -> None:
    path = default_path("codex", Path("/home/u"), Path("/p"), False, "/srv/codex")
    assert path == Path("/srv/codex/config.toml")


# Merging: JSON clients


JSON_BEFORE = """{
  "theme": "dark",
  "mcpServers": {
    "other": {"command": "other-server", "args": []}
  },
  "zeta": [1, 2]
}
"""


@pytest.mark.parametrize("client", ["claude-code", "claude-desktop", "cursor"])
def test_json_merge_keeps_other_servers_and_keys(client: str) -> None:
    merged = merge(client, JSON_BEFORE, "imagegate", STDIO)
    assert merged.change == "added"
    document = json.loads(merged.text)
    assert document == {
        "theme": "dark",
        "mcpServers": {"other": {"command": "other-server", "args": []}, "imagegate": STDIO},
        "zeta": [1, 2],
    }
    assert list(document) == ["theme", "mcpServers", "zeta"]


def test_json_merge_into_nothing_and_the_same_entry_again() -> None:
    first = merge("cursor", None, "imagegate", STDIO)
    assert json.loads(first.text) == {"mcpServers": {"imagegate": STDIO}}
    again = merge("cursor", first.text, "imagegate", STDIO)
    assert (again.change, again.text) == ("unchanged", first.text)


def test_json_merge_replaces_a_different_entry_of_that_name() -> None:
    before = json.dumps({"mcpServers": {"imagegate": {"url": "http://old/mcp"}}})
    merged = merge("claude-code", before, "imagegate", STDIO)
    assert merged.change == "replaced"
    assert json.loads(merged.text)["mcpServers"] == {"imagegate": STDIO}


@pytest.mark.parametrize(
    "text", ['{"mcpServers": {,}', "// comment\n{}", "[1, 2]", '{"mcpServers": []}']
)
def test_json_that_cannot_be_merged_is_refused(text: str) -> None:
    with pytest.raises(InvalidRequest, match="left as it is"):
        merge("cursor", text, "imagegate", STDIO)


# Merging: Codex's TOML, edited as text

TOML_BEFORE = """# my Codex settings
model = "gpt-5"  # the default

[mcp_servers.other]
command = "other-server"
args = []

# the profile I use at work
[profiles.work]
model = "o3"
"""

CODEX_REMOTE = {"url": URL, "bearer_token_env_var": "IMAGEGATE_TOKEN"}


def test_toml_merge_appends_and_keeps_comments() -> None:
    merged = merge("codex", TOML_BEFORE, "imagegate", CODEX_REMOTE)
    assert merged.change == "added"
    assert merged.text == TOML_BEFORE + (
        "\n[mcp_servers.imagegate]\n"
        'url = "https://images.example.com/mcp"\n'
        'bearer_token_env_var = "IMAGEGATE_TOKEN"\n'
    )
    again = merge("codex", merged.text, "imagegate", CODEX_REMOTE)
    assert (again.change, again.text) == ("unchanged", merged.text)


def test_toml_merge_replaces_the_table_in_place() -> None:
    before = (
        "# top\n"
        '[mcp_servers."imagegate"]  # ours\n'
        'command = "old"\n'
        "\n"
        "# the other one\n"
        "[mcp_servers.other]\n"
        'command = "x"\n'
    )
    merged = merge("codex", before, "imagegate", CODEX_REMOTE)
    assert merged.change == "replaced"
    assert merged.text == (
        "# top\n"
        "[mcp_servers.imagegate]\n"
        'url = "https://images.example.com/mcp"\n'
        'bearer_token_env_var = "IMAGEGATE_TOKEN"\n'
        "\n"
        "# the other one\n"
        "[mcp_servers.other]\n"
        'command = "x"\n'
    )


@pytest.mark.parametrize(
    ("client", "before"),
    [
        (
            "codex",
            '[mcp_servers.imagegate]\ncommand = "old"\n\n[mcp_servers.imagegate.env]\n'
            'OPENAI_API_KEY = "sk-kept"\n',
        ),
        ("codex", '[mcp_servers.imagegate]\ncommand = "old"\ncwd = "/srv"\n'),
        (
            "cursor",
            json.dumps({"mcpServers": {"imagegate": {"command": "old", "env": {"K": "sk-kept"}}}}),
        ),
        ("claude-code", json.dumps({"mcpServers": {"imagegate": {"url": "u", "disabled": True}}})),
    ],
)
def test_an_entry_with_settings_of_its_own_is_not_replaced(client: str, before: str) -> None:
    """Its env (a key, say) or cwd would be lost: the user edits it by hand."""
    with pytest.raises(InvalidRequest, match="settings of its own"):
        merge(client, before, "imagegate", entry(client, REMOTE))


def test_toml_keeps_characters_beyond_the_basic_plane() -> None:
    odd = {"command": "/home/😀/bin/imagegate", "args": ["serve"]}
    merged = merge("codex", None, "imagegate", odd)
    assert tomllib.loads(merged.text) == {"mcp_servers": {"imagegate": odd}}


def test_a_dangling_symlink_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "mcp.json"
    link.symlink_to(tmp_path / "elsewhere" / "mcp.json")
    with pytest.raises(InvalidRequest, match="does not exist"):
        write_merged(link, "cursor", "imagegate", entry("cursor", REMOTE))
    assert not (tmp_path / "elsewhere").exists()


def test_the_command_line_knows_every_client() -> None:
    assert cli.CLIENTS == CLIENTS


def test_toml_merge_escapes_strings() -> None:
    odd = {"command": '/opt/a "b"\\c\x7f', "args": ["serve"]}
    merged = merge("codex", None, "imagegate", odd)
    assert tomllib.loads(merged.text) == {"mcp_servers": {"imagegate": odd}}


@pytest.mark.parametrize(
    "text",
    [
        "[mcp_servers\n",  # not TOML
        'mcp_servers = "x"\n',
        'mcp_servers.imagegate.command = "old"\n',  # dotted keys: not a table to replace
        'mcp_servers = { imagegate = { command = "old" } }\n',
    ],
)
def test_toml_that_cannot_be_merged_safely_is_refused(text: str) -> None:
    with pytest.raises(InvalidRequest, match="left as it is"):
        merge("codex", text, "imagegate", CODEX_REMOTE)


def test_librechat_is_printed_only() -> None:
    with pytest.raises(InvalidRequest, match="--write is not supported"):
        merge("librechat", None, "imagegate", {})


# Writing


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_backs_up_keeps_the_mode_and_is_idempotent(tmp_path: Path) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(JSON_BEFORE)
    config.chmod(0o640)
    written = write_merged(config, "cursor", "imagegate", STDIO, stamp="20261122-101500")
    assert written.change == "added"
    assert written.backup == tmp_path / "mcp.json.20261122-101500.bak"
    assert written.backup.read_text() == JSON_BEFORE
    assert mode_of(written.backup) == 0o640
    assert mode_of(config) == 0o640
    assert json.loads(config.read_text())["mcpServers"]["imagegate"] == STDIO
    after = config.read_bytes()

    again = write_merged(config, "cursor", "imagegate", STDIO, stamp="20261122-101501")
    assert (again.change, again.backup) == ("unchanged", None)
    assert config.read_bytes() == after
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mcp.json",
        "mcp.json.20261122-101500.bak",
    ]


def test_a_replacement_keeps_the_old_entry_in_a_new_backup(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(TOML_BEFORE)
    write_merged(config, "codex", "imagegate", STDIO, stamp="1")
    stdio_text = config.read_text()
    written = write_merged(config, "codex", "imagegate", CODEX_REMOTE, stamp="1")
    assert written.change == "replaced"
    assert written.backup == tmp_path / "config.toml.1-1.bak"
    assert written.backup.read_text() == stdio_text
    assert (tmp_path / "config.toml.1.bak").read_text() == TOML_BEFORE
    assert tomllib.loads(config.read_text())["mcp_servers"]["imagegate"] == CODEX_REMOTE


def test_a_new_file_is_private_and_has_no_backup(tmp_path: Path) -> None:
    config = tmp_path / ".mcp.json"
    written = write_merged(config, "claude-code", "imagegate", STDIO)
    assert (written.change, written.backup) == ("added", None)
    assert mode_of(config) == 0o600
    assert os.listdir(tmp_path) == [".mcp.json"]


def test_an_unparseable_file_is_left_untouched(tmp_path: Path) -> None:
    config = tmp_path / "mcp.json"
    config.write_text('{"mcpServers": ')
    with pytest.raises(InvalidRequest, match=r"mcp\.json: not valid JSON"):
        write_merged(config, "cursor", "imagegate", STDIO)
    assert config.read_text() == '{"mcpServers": '
    assert os.listdir(tmp_path) == ["mcp.json"]


def test_a_symlinked_config_is_written_through(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "mcp.json"
    real.parent.mkdir()
    real.write_text("{}")
    link = tmp_path / "mcp.json"
    link.symlink_to(real)
    write_merged(link, "cursor", "imagegate", STDIO, stamp="s")
    assert link.is_symlink()
    assert json.loads(real.read_text()) == {"mcpServers": {"imagegate": STDIO}}
    assert (real.parent / "mcp.json.s.bak").read_text() == "{}"


def test_every_client_is_known() -> None:
    assert CLIENTS == ("claude-code", "codex", "claude-desktop", "cursor", "librechat")
