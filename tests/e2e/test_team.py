"""A team deployment end to end: people through a real OpenID provider, bots through
mapped tokens, one ACL, isolated tenants, an audit log."""

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp.exceptions import ToolError
from joserfc import jwt
from joserfc.jwk import RSAKey

from imagegate.config import OIDCSettings
from imagegate.relays.placeholder import PlaceholderRelayConfig
from tests.e2e.harness import RunningServer, http_get, http_post, running_server
from tests.e2e.idp import AUDIENCE, Provider

BOT_TOKEN = "ci-bot-token-0123456789abcdefghijkl"
READER_TOKEN = "reader-token-0123456789abcdefghijkl"
EXPIRED_TOKEN = "expired-token-0123456789abcdefghijk"
AUDITOR_TOKEN = "auditor-token-0123456789abcdefghijk"

ACL = """
[subjects."token:ci-bot"]
scopes = ["images:generate", "images:read", "relay:placeholder"]

[subjects."token:reader"]
scopes = ["images:read"]

[subjects."token:auditor"]
scopes = ["admin", "images:read"]

[groups.designers]
scopes = ["images:generate", "images:read", "images:share", "images:delete", "relay:*"]

[groups.imagegate-admins]
scopes = ["admin", "images:read", "images:share", "images:delete"]
"""


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_file_text(*, include_bot: bool = True) -> str:
    entries = []
    if include_bot:
        entries.append(f'[[tokens]]\nsubject = "ci-bot"\nsha256 = "{sha(BOT_TOKEN)}"\n')
    entries.append(f'[[tokens]]\nsubject = "reader"\nsha256 = "{sha(READER_TOKEN)}"\n')
    entries.append(f'[[tokens]]\nsubject = "auditor"\nsha256 = "{sha(AUDITOR_TOKEN)}"\n')
    entries.append(
        f'[[tokens]]\nsubject = "old"\nsha256 = "{sha(EXPIRED_TOKEN)}"\n'
        "expires = 2020-01-01T00:00:00Z\n"
    )
    return "\n".join(entries)


def team_settings(tmp_path: Path, provider: Provider, **overrides: Any) -> dict[str, Any]:
    acl = tmp_path / "acl.toml"
    acl.write_text(ACL)
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(tokens_file_text())
    tokens.chmod(0o600)
    settings: dict[str, Any] = {
        "acl_file": acl,
        "tokens_file": tokens,
        "audit_log": str(tmp_path / "audit.jsonl"),
        "oidc": OIDCSettings(issuer=provider.issuer, audience=AUDIENCE, subject_claim="email"),
        "relays": {
            "placeholder": PlaceholderRelayConfig(kind="placeholder"),
            "second": PlaceholderRelayConfig(kind="placeholder"),
        },
        "default_relay": "placeholder",
    }
    settings.update(overrides)
    return settings


@pytest.fixture
async def team(tmp_path: Path, provider: Provider) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "state", **team_settings(tmp_path, provider)) as server:
        yield server


def audit_lines(server: RunningServer) -> list[dict[str, Any]]:
    path = Path(server.settings.audit_log)
    return [json.loads(line) for line in path.read_text().splitlines()]


async def generate(server: RunningServer, token: str, **arguments: Any) -> dict[str, Any]:
    arguments.setdefault("prompt", "team picture")
    arguments.setdefault("size", "64x64")
    async with server.client(token) as client:
        result = await client.call_tool("generate_image", arguments)
    assert result.structured_content is not None
    image: dict[str, Any] = result.structured_content["images"][0]
    return image


async def test_people_and_bots_share_one_server(team: RunningServer, provider: Provider) -> None:
    alice = provider.token("alice")
    async with team.client(alice) as client:
        info = (await client.call_tool("server_info", {})).structured_content
    assert info is not None
    assert info["subject"] == "oidc:alice@example.test"
    assert "images:delete" in info["scopes"]  # from the designers group in the token
    async with team.client(BOT_TOKEN) as client:
        info = (await client.call_tool("server_info", {})).structured_content
    assert info is not None
    assert info["subject"] == "token:ci-bot"
    assert info["scopes"] == ["images:generate", "images:read", "relay:placeholder"]
    assert (await generate(team, alice))["relay"] == "placeholder"
    assert (await generate(team, BOT_TOKEN))["relay"] == "placeholder"


async def test_tools_list_shows_only_what_the_caller_may_call(
    team: RunningServer, provider: Provider
) -> None:
    async with team.client(READER_TOKEN) as client:
        reader = {tool.name for tool in await client.list_tools()}
    assert reader == {
        "list_images",
        "get_image",
        "verify_image",
        "list_relays",
        "list_presets",
        "server_info",
        "get_usage",
    }
    async with team.client(BOT_TOKEN) as client:
        bot = {tool.name for tool in await client.list_tools()}
    assert bot == reader | {
        "generate_image",
        "get_job",
        "cancel_job",
        "list_jobs",
        "save_preset",
        "delete_preset",
    }
    async with team.client(provider.token("nobody")) as client:
        nobody = {tool.name for tool in await client.list_tools()}
    assert nobody == {"list_relays", "list_presets", "server_info", "get_usage"}


async def test_a_denied_name_cannot_forge_log_lines(
    team: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    forged = "x\nWARNING imagegate.access: denied delete_image to token:admin"
    async with team.client(BOT_TOKEN) as client:
        with pytest.raises(ToolError, match="forbidden"):
            await client.call_tool("generate_image", {"prompt": "x", "relay": forged})
    denials = [r.getMessage() for r in caplog.records if r.getMessage().startswith("denied")]
    assert len(denials) == 1
    assert "\n" not in denials[0]


async def test_denials_name_the_missing_scope_and_are_audited(team: RunningServer) -> None:
    async with team.client(READER_TOKEN) as client:
        with pytest.raises(ToolError, match=r"^forbidden: needs scope images:generate$"):
            await client.call_tool("generate_image", {"prompt": "x"})
    async with team.client(BOT_TOKEN) as client:
        with pytest.raises(ToolError, match=r"^forbidden: needs scope relay:second$"):
            await client.call_tool("generate_image", {"prompt": "x", "relay": "second"})
        relays = (await client.call_tool("list_relays", {})).structured_content
    assert relays is not None
    assert [relay["name"] for relay in relays["relays"]] == ["placeholder"]
    assert list((team.settings.state_dir / "blobs").rglob("*.png")) == []
    denied = [line for line in audit_lines(team) if line["outcome"] == "denied"]
    assert [(d["subject"], d["tool"], d["relay"]) for d in denied] == [
        ("token:reader", "generate_image", "placeholder"),
        ("token:ci-bot", "generate_image", "second"),
    ]
    assert denied[1]["detail"] == "forbidden: needs scope relay:second"


async def test_tenants_are_isolated(team: RunningServer, provider: Provider) -> None:
    alice, dave = provider.token("alice"), provider.token("dave")
    mine = await generate(team, alice, prompt="alice's")
    theirs = await generate(team, dave, prompt="dave's")
    missing = "img_" + "0" * 24
    for caller, other in ((alice, theirs), (dave, mine)):
        async with team.client(caller) as client:
            listed = (await client.call_tool("list_images", {})).structured_content
            assert listed is not None
            assert other["asset_id"] not in [i["asset_id"] for i in listed["images"]]
            assert len(listed["images"]) == 1
            for tool in ("get_image", "create_download_link", "delete_image"):
                with pytest.raises(ToolError) as foreign:
                    await client.call_tool(tool, {"asset_id": other["asset_id"]})
                with pytest.raises(ToolError) as absent:
                    await client.call_tool(tool, {"asset_id": missing})
                # Another tenant's id answers exactly like an id that doesn't exist.
                assert str(foreign.value).replace(other["asset_id"], missing) == str(absent.value)
            with pytest.raises(ToolError, match="forbidden: needs scope admin"):
                await client.call_tool("list_images", {"owner": "*"})
    # Nothing was deleted by the attempts.
    assert (await http_get(mine["url"])).status_code == 200
    assert (await http_get(theirs["url"])).status_code == 200


async def test_admin_reaches_every_tenant(team: RunningServer, provider: Provider) -> None:
    made = await generate(team, provider.token("alice"))
    bot_made = await generate(team, BOT_TOKEN)
    async with team.client(provider.token("root")) as admin:
        everyone = (await admin.call_tool("list_images", {"owner": "*"})).structured_content
        assert everyone is not None
        assert {i["asset_id"] for i in everyone["images"]} == {
            made["asset_id"],
            bot_made["asset_id"],
        }
        only_bot = (
            await admin.call_tool("list_images", {"owner": "token:ci-bot"})
        ).structured_content
        assert only_bot is not None
        assert [i["asset_id"] for i in only_bot["images"]] == [bot_made["asset_id"]]
        got = (
            await admin.call_tool("get_image", {"asset_id": made["asset_id"]})
        ).structured_content
        assert got is not None
        assert got["images"][0]["asset_id"] == made["asset_id"]
        await admin.call_tool("delete_image", {"asset_id": made["asset_id"]})
    assert (await http_get(made["url"])).status_code == 404


async def test_an_admin_without_share_sees_others_images_but_gets_no_link(
    team: RunningServer, provider: Provider
) -> None:
    made = await generate(team, provider.token("alice"))
    async with team.client(AUDITOR_TOKEN) as auditor:
        got = await auditor.call_tool("get_image", {"asset_id": made["asset_id"]})
        with pytest.raises(ToolError, match="forbidden: needs scope images:share"):
            await auditor.call_tool("create_download_link", {"asset_id": made["asset_id"]})
    assert got.structured_content is not None
    (image,) = got.structured_content["images"]
    assert image["asset_id"] == made["asset_id"]
    assert "url" not in image
    assert "expires_at" not in image
    assert "needs scope images:share" in got.content[0].text
    assert not [block for block in got.content if block.type == "resource_link"]
    # An owner without images:share (the bot) still gets a link to its own image:
    # that link is how it fetches what it made.
    own = await generate(team, BOT_TOKEN)
    async with team.client(BOT_TOKEN) as bot:
        mine = await bot.call_tool("get_image", {"asset_id": own["asset_id"]})
    assert mine.structured_content is not None
    assert (await http_get(mine.structured_content["images"][0]["url"])).status_code == 200


async def test_acl_open_lets_everyone_in_but_keeps_tenants_apart(
    tmp_path: Path, provider: Provider
) -> None:
    settings = team_settings(tmp_path, provider, acl_file=None, acl_open=True)
    async with running_server(tmp_path / "state", **settings) as server:
        made = await generate(server, provider.token("alice"), relay="second")
        async with server.client(READER_TOKEN) as other:
            tools = {tool.name for tool in await other.list_tools()}
            assert {"generate_image", "edit_image", "delete_image"} <= tools
            assert "reset_usage" not in tools
            with pytest.raises(ToolError, match="not found"):
                await other.call_tool("delete_image", {"asset_id": made["asset_id"]})
            with pytest.raises(ToolError, match="needs scope admin"):
                await other.call_tool("list_images", {"owner": "*"})
        assert (await http_get(made["url"])).status_code == 200  # still there


async def test_audit_log_has_one_line_per_call_and_no_secrets(
    team: RunningServer, provider: Provider
) -> None:
    alice = provider.token("alice")
    await generate(team, alice, prompt="secret project name", n=2)
    async with team.client(BOT_TOKEN) as client:
        with pytest.raises(ToolError):
            await client.call_tool("get_image", {"asset_id": "img_" + "1" * 24})
        with pytest.raises(ToolError):
            await client.call_tool("generate_image", {"prompt": "x", "n": 0})
    lines = audit_lines(team)
    calls = [(line["subject"], line["tool"], line["outcome"]) for line in lines]
    assert calls == [
        ("oidc:alice@example.test", "generate_image", "ok"),
        ("token:ci-bot", "get_image", "refused"),
        ("token:ci-bot", "generate_image", "refused"),  # a bad argument is a refusal
    ]
    assert lines[2]["detail"].startswith("invalid arguments: n: ")
    assert lines[0]["images"] == 2
    assert lines[0]["relay"] == "placeholder"
    assert lines[0]["duration_ms"] >= 0
    text = Path(team.settings.audit_log).read_text()
    assert "secret project name" not in text  # prompts only with audit_prompts
    assert alice not in text
    assert BOT_TOKEN not in text


async def test_prompts_are_audited_when_allowed(tmp_path: Path, provider: Provider) -> None:
    settings = team_settings(tmp_path, provider, audit_prompts=True)
    async with running_server(tmp_path / "state", **settings) as server:
        await generate(server, BOT_TOKEN, prompt="a blue whale")
        assert audit_lines(server)[0]["prompt"] == "a blue whale"


async def test_revoking_a_mapped_token_needs_no_restart(team: RunningServer) -> None:
    async with team.client(BOT_TOKEN) as client:
        await client.call_tool("server_info", {})
    assert team.settings.tokens_file is not None
    team.settings.tokens_file.write_text(tokens_file_text(include_bot=False))
    response = await mcp_initialize(team, BOT_TOKEN)
    assert response.status_code == 401


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def signed(provider: Provider, key: RSAKey | None = None, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": provider.issuer, "aud": AUDIENCE, "sub": "mallory", "exp": now + 300}
    body |= {"email": "mallory@example.test", "groups": ["imagegate-admins"]}
    body.update(claims)
    key = key or provider.key
    return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "at+jwt"}, body, key)


def hs256_with_public_key(provider: Provider) -> str:
    now = int(time.time())
    claims = {"iss": provider.issuer, "aud": AUDIENCE, "email": "m@x", "exp": now + 300}
    signing_input = b64({"alg": "HS256", "kid": provider.key.kid}) + "." + b64(claims)
    secret = provider.key.as_pem(private=False)
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


HOSTILE = {
    "expired": lambda p: signed(p, exp=int(time.time()) - 600),
    "wrong-issuer": lambda p: signed(p, iss="https://evil.example.test"),
    "wrong-audience": lambda p: signed(p, aud="https://other.example.test/mcp"),
    "alg-none": lambda p: b64({"alg": "none"}) + "." + b64({"email": "m@x"}) + ".",
    "hs256-public-key": hs256_with_public_key,
    "unknown-kid": lambda p: signed(p, key=RSAKey.generate_key(2048, parameters={"kid": "x"})),
    "garbage": lambda p: "garbage",
    "revoked-mapped-token": lambda p: "revoked-token-0123456789abcdefghijk",
    "expired-mapped-token": lambda p: EXPIRED_TOKEN,
}


async def mcp_initialize(server: RunningServer, token: str | None) -> Any:
    headers = {"Accept": "application/json, text/event-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }
    return await http_post(server.mcp_url, json=body, headers=headers)


async def test_a_genuine_provider_token_passes_the_same_door(
    team: RunningServer, provider: Provider
) -> None:
    assert (await mcp_initialize(team, provider.token("alice"))).status_code == 200
    assert (await mcp_initialize(team, signed(provider))).status_code == 200


@pytest.mark.parametrize("name", HOSTILE)
async def test_hostile_tokens_get_401(team: RunningServer, provider: Provider, name: str) -> None:
    token = HOSTILE[name](provider)
    response = await mcp_initialize(team, token)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer")
    assert 'error="invalid_token"' in challenge
    assert token not in response.text
    assert "Traceback" not in response.text


async def test_missing_header_gets_401(team: RunningServer) -> None:
    response = await mcp_initialize(team, None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"] == "invalid_request"
    assert "Authorization: Bearer" in response.json()["error_description"]


async def test_interactive_login_metadata(tmp_path: Path, provider: Provider) -> None:
    oidc = OIDCSettings(
        issuer=provider.issuer, audience=AUDIENCE, subject_claim="email", interactive_login=True
    )
    settings = team_settings(tmp_path, provider, oidc=oidc)
    async with running_server(tmp_path / "state", **settings) as server:
        unauthenticated = await mcp_initialize(server, None)
        assert unauthenticated.status_code == 401
        assert "resource_metadata=" in unauthenticated.headers["www-authenticate"]
        metadata = await http_get(f"{server.base_url}/.well-known/oauth-protected-resource/mcp")
        assert metadata.status_code == 200
        assert metadata.json()["authorization_servers"] == [provider.issuer]
        assert metadata.json()["resource"] == server.mcp_url
        assert (await mcp_initialize(server, provider.token("alice"))).status_code == 200
        # With interactive login, a rejected token keeps the OAuth client's advice.
        rejected = await mcp_initialize(server, "expired-or-foreign-token")
        assert rejected.status_code == 401
        assert "resource_metadata=" in rejected.headers["www-authenticate"]
        assert "imagegate token new" not in rejected.text


async def test_usage_of_another_subject_is_for_admins(
    team: RunningServer, provider: Provider
) -> None:
    await generate(team, BOT_TOKEN, n=2)
    async with team.client(provider.token("root")) as admin:
        seen = (await admin.call_tool("get_usage", {"subject": "token:ci-bot"})).structured_content
        assert seen is not None
        assert (seen["subject"], seen["usage"]["images_today"]) == ("token:ci-bot", 2)
        reset = (
            await admin.call_tool("reset_usage", {"subject": "token:ci-bot"})
        ).structured_content
        assert reset is not None
        assert (reset["subject"], reset["usage"]["images_today"]) == ("token:ci-bot", 0)
    async with team.client(BOT_TOKEN) as bot:
        own = (await bot.call_tool("get_usage", {})).structured_content
        assert own is not None
        assert (own["subject"], own["usage"]["images_today"]) == ("token:ci-bot", 0)
        with pytest.raises(ToolError, match="forbidden: needs scope admin to see others' usage"):
            await bot.call_tool("get_usage", {"subject": "token:auditor"})
        with pytest.raises(ToolError, match="forbidden: needs scope admin"):
            await bot.call_tool("reset_usage", {"subject": "token:ci-bot"})


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "bare", "version": "1"},
    },
}


async def open_bare_session(server: RunningServer, token: str) -> Any:
    headers = {
        "authorization": f"Bearer {token}",
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
    }
    return await http_post(server.mcp_url, json=INITIALIZE, headers=headers)


async def session_answers(team: RunningServer, token: str, session_id: str) -> int:
    response = await http_post(
        team.mcp_url,
        json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        headers={
            "authorization": f"Bearer {token}",
            "accept": "application/json, text/event-stream",
            "mcp-session-id": session_id,
            "mcp-protocol-version": "2025-11-25",
        },
    )
    return response.status_code


async def test_one_subject_cannot_hold_every_session(tmp_path: Path, provider: Provider) -> None:
    """Bare initialize calls (no tool call ever) from one token, one by one and all at
    once: that subject never holds more than its cap, and others are unaffected."""
    settings = team_settings(tmp_path, provider, max_sessions_per_subject=3)
    async with running_server(tmp_path / "state", **settings) as team:
        opened = [await open_bare_session(team, READER_TOKEN) for _ in range(3)]
        assert [response.status_code for response in opened] == [200, 200, 200]
        # At the cap, a new one ends the subject's oldest unused session.
        fourth = await open_bare_session(team, READER_TOKEN)
        assert fourth.status_code == 200
        first = opened[0].headers["mcp-session-id"]
        assert await session_answers(team, READER_TOKEN, first) == 404
        # A burst can't slip past the cap while its sessions are opening.
        burst = await asyncio.gather(*(open_bare_session(team, READER_TOKEN) for _ in range(20)))
        ids = [r.headers["mcp-session-id"] for r in burst if r.status_code == 200]
        ids += [fourth.headers["mcp-session-id"]] + [r.headers["mcp-session-id"] for r in opened]
        alive = [sid for sid in ids if await session_answers(team, READER_TOKEN, sid) == 200]
        assert len(alive) <= 3
        # Probing used them: sessions in use are not ended, so with the cap in use one
        # more is refused, for this subject only.
        for _ in range(3 - len(alive)):
            opening = await open_bare_session(team, READER_TOKEN)
            assert await session_answers(team, READER_TOKEN, opening.headers["mcp-session-id"])
        refused = await open_bare_session(team, READER_TOKEN)
        assert refused.status_code == 429
        assert "too many open sessions: you already have 3 in use" in refused.text
        assert (await open_bare_session(team, BOT_TOKEN)).status_code == 200


async def test_unused_sessions_end_after_a_while(tmp_path: Path, provider: Provider) -> None:
    settings = team_settings(tmp_path, provider, unused_session_seconds=1)
    async with running_server(tmp_path / "state", **settings) as team:
        bare = (await open_bare_session(team, READER_TOKEN)).headers["mcp-session-id"]
        async with team.client(BOT_TOKEN, mode="legacy") as busy:
            await busy.call_tool("server_info", {})
            await asyncio.sleep(2.5)  # the reaper ran: the bare session ends, used ones stay
            await busy.call_tool("server_info", {})
        assert await session_answers(team, READER_TOKEN, bare) == 404
