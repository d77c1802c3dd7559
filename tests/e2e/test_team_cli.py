"""Team set-up from the command line: token new, check-config and refusals at start."""

import re
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.client.auth import BearerAuth

from imagegate.access.tokens import load_tokens_file
from tests.e2e.processes import clean_env, run, serving


def test_token_new_writes_the_expiry_it_is_asked_for(tmp_path: Path) -> None:
    before = datetime.now(UTC)
    made = run("token", "new", "--subject", "ci-bot", "--expires-in-days", "30", env=clean_env())
    assert made.returncode == 0, made.stderr
    (line,) = [line for line in made.stdout.splitlines() if line.startswith("expires = ")]
    expires = datetime.fromisoformat(line.removeprefix("expires = "))
    assert expires.tzinfo is not None
    assert before + timedelta(days=30, seconds=-2) <= expires
    assert expires <= datetime.now(UTC) + timedelta(days=30)
    # The entry is valid TOML that the tokens file loader takes with that expiry.
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(made.stdout[made.stdout.index("[[tokens]]") :])
    tokens.chmod(0o600)
    (entry,) = load_tokens_file(tokens, ["placeholder"], strict=True)
    assert entry.expires_at == expires.timestamp()


async def test_ci_bot_token_from_token_new_works_end_to_end(tmp_path: Path) -> None:
    made = run("token", "new", "--subject", "ci-bot", "--comment", "nightly", env=clean_env())
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    token = lines[1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{40,}", token)
    entry = made.stdout[made.stdout.index("[[tokens]]") :]
    assert token not in entry
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(entry)
    tokens.chmod(0o640)
    acl = tmp_path / "acl.toml"
    acl.write_text('[subjects."token:ci-bot"]\nscopes = ["images:read"]\n')
    settings = {"IMAGEGATE_TOKENS_FILE": str(tokens), "IMAGEGATE_ACL_FILE": str(acl)}

    check = run("check-config", env=clean_env(**settings))
    assert check.returncode == 0, check.stderr
    assert f"1 mapped token(s) from {tokens}" in check.stdout
    assert f"ACL: {acl} (1 subject(s), 0 group(s))" in check.stdout

    with serving(tmp_path / "state", **settings) as (base_url, _):
        async with Client(f"{base_url}/mcp", auth=BearerAuth(token)) as client:
            info = (await client.call_tool("server_info", {})).structured_content
    assert info is not None
    assert info["subject"] == "token:ci-bot"
    assert info["scopes"] == ["images:read"]
    assert not (tmp_path / "state" / "bearer-token").exists()  # no dev token in team mode


@pytest.mark.parametrize(
    ("acl_text", "expected"),
    [
        ('[subjects."token:x"]\nscopes = ["images:raed"]\n', r"acl.toml:2: .*unknown scope"),
        ('[subjects."token:x"]\nscopes = ["relay:gpt"]\n', r"acl.toml:2: .*no configured relay"),
        ("[groups.g]\nscope = []\n", r"acl.toml:2: groups.g.scope: unknown key"),
    ],
)
def test_malformed_acl_stops_start_up(tmp_path: Path, acl_text: str, expected: str) -> None:
    acl = tmp_path / "acl.toml"
    acl.write_text(acl_text)
    result = run("check-config", env=clean_env(IMAGEGATE_ACL_FILE=str(acl)))
    assert result.returncode == 2
    assert re.search(expected, result.stderr), result.stderr
    serve = run(
        "serve", env=clean_env(IMAGEGATE_ACL_FILE=str(acl), IMAGEGATE_STATE_DIR=str(tmp_path))
    )
    assert serve.returncode == 2
    assert re.search(expected, serve.stderr), serve.stderr
    assert "Traceback" not in serve.stderr


def test_malformed_tokens_file_stops_start_up(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('[[tokens]]\nsubject = "bot"\nsha256 = "not-hex"\n')
    tokens.chmod(0o600)
    acl = tmp_path / "acl.toml"
    acl.write_text("")
    env = clean_env(IMAGEGATE_TOKENS_FILE=str(tokens), IMAGEGATE_ACL_FILE=str(acl))
    result = run("check-config", env=env)
    assert result.returncode == 2
    assert f"{tokens}:3: tokens.0.sha256: String should match pattern" in result.stderr


@pytest.mark.parametrize("token", ["", "   ", "short-token"])
def test_an_empty_or_short_static_token_stops_start_up(tmp_path: Path, token: str) -> None:
    env = clean_env(IMAGEGATE_BEARER_TOKEN=token, IMAGEGATE_STATE_DIR=str(tmp_path / "s"))
    result = run("serve", env=env)
    assert result.returncode == 2
    assert "bearer_token: must be at least 16 characters" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_mapped_token_sharing_the_static_tokens_subject_is_warned_about(
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[tokens]]\nsubject = "dev"\nsha256 = "{"ab" * 32}"\n')
    tokens.chmod(0o600)
    settings = {
        "IMAGEGATE_TOKENS_FILE": str(tokens),
        "IMAGEGATE_ACL_OPEN": "true",
        "IMAGEGATE_BEARER_TOKEN": "static-token-0123456789abcdef",
    }
    with serving(tmp_path / "s", **settings) as (_, process):
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        logs = process.stderr.read() if process.stderr else ""
    assert "maps a token to token:dev, the static bearer token's subject" in logs
    assert "static-token-0123456789abcdef" not in logs


def test_several_callers_without_acl_refuse_to_start(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text("")
    tokens.chmod(0o600)
    env = clean_env(IMAGEGATE_TOKENS_FILE=str(tokens), IMAGEGATE_STATE_DIR=str(tmp_path / "s"))
    result = run("serve", env=env)
    assert result.returncode == 2
    assert "acl_file: not set, but tokens_file or [oidc] lets several callers in" in result.stderr
    assert "acl_open = true" in result.stderr
    with serving(tmp_path / "s", IMAGEGATE_TOKENS_FILE=str(tokens), IMAGEGATE_ACL_OPEN="true"):
        pass  # starts once the operator says so explicitly


def test_world_readable_tokens_file_warns_or_refuses(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text("")
    tokens.chmod(0o644)
    env = clean_env(IMAGEGATE_TOKENS_FILE=str(tokens), IMAGEGATE_ACL_OPEN="true")
    warned = run("check-config", env=env)
    assert warned.returncode == 0
    assert "SECURITY WARNING" in warned.stderr
    strict = run("check-config", env={**env, "IMAGEGATE_STRICT_PERMISSIONS": "true"})
    assert strict.returncode == 2
    assert f"run: chmod 640 {tokens}" in strict.stderr


def test_the_shipped_examples_pass_check_config(tmp_path: Path) -> None:
    root = Path(__file__).parents[2]
    tokens = tmp_path / "tokens.toml"
    tokens.write_text((root / "tokens.example.toml").read_text())
    tokens.chmod(0o640)
    env = clean_env(
        IMAGEGATE_ACL_FILE=str(root / "acl.example.toml"),
        IMAGEGATE_TOKENS_FILE=str(tokens),
        IMAGEGATE_STATE_DIR=str(tmp_path / "state"),
    )
    result = run("--config", str(root / "imagegate.example.toml"), "check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert "ACL: " in result.stdout
    assert "1 mapped token(s)" in result.stdout
