"""Usage reports from the database: the admin tool and `imagegate usage report`, with
figures equal to the quota counters that get_usage shows."""

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp.exceptions import ToolError

from imagegate.relays.placeholder import PlaceholderRelayConfig
from tests.conftest import ManualClock
from tests.e2e.harness import RunningServer, running_server, structured, team_files
from tests.e2e.processes import clean_env, run

SCOPES = '["images:generate", "images:read", "relay:*"]'
ACL = (
    f'[subjects."token:alice"]\nscopes = {SCOPES}\n'
    f'[subjects."token:bob"]\nscopes = {SCOPES}\n'
    '[subjects."token:admin"]\nscopes = ["admin"]\n'
)
TOKENS = {name: f"{name}-token-0123456789abcdef" for name in ("alice", "bob", "admin")}
DAY = "2027-01-15"  # the ManualClock's day (1_800_000_000 s)


@pytest.fixture
async def server(
    state_dir: Path, clock: ManualClock, tmp_path: Path
) -> AsyncIterator[RunningServer]:
    relays = {name: PlaceholderRelayConfig(kind="placeholder") for name in ("one", "two")}
    files = team_files(tmp_path, ACL, TOKENS)
    async with running_server(
        state_dir, clock, relays=relays, default_relay="one", **files
    ) as running:
        yield running


async def call(server: RunningServer, who: str, tool: str, **arguments: Any) -> dict[str, Any]:
    return await structured(server, TOKENS[who], tool, **arguments)


async def made(server: RunningServer, clock: ManualClock) -> None:
    for who, relay, n in [("alice", "one", 2), ("alice", "two", 1), ("bob", "one", 3)]:
        await call(server, who, "generate_image", prompt="x", size="64x64", n=n, relay=relay)
    clock.advance(86_400)
    await call(server, "bob", "generate_image", prompt="x", size="64x64", relay="two")


async def test_the_admin_report_equals_the_counters(
    server: RunningServer, clock: ManualClock
) -> None:
    await made(server, clock)
    by_subject = await call(server, "admin", "usage_report", since=DAY, until="2027-01-17")
    assert by_subject["rows"] == [
        {"subject": "token:alice", "images": 3, "spend": 0.0, "calls": 2},
        {"subject": "token:bob", "images": 4, "spend": 0.0, "calls": 2},
    ]
    assert by_subject["total"] == {"images": 7, "spend": 0.0, "calls": 4}
    by_relay = await call(
        server, "admin", "usage_report", since=DAY, until="2027-01-17", by="relay"
    )
    assert [(r["relay"], r["images"]) for r in by_relay["rows"]] == [("one", 5), ("two", 2)]
    by_day = await call(server, "admin", "usage_report", since=DAY, by="day")
    assert [(r["day"], r["images"]) for r in by_day["rows"]] == [(DAY, 6), ("2027-01-16", 1)]
    assert by_day["until"] == "2027-01-17"  # through today by default
    # The counters the limits are checked against say the same.
    bob = await call(server, "admin", "get_usage", subject="token:bob")
    assert bob["usage"]["images_today"] == 1  # today is the 16th
    with pytest.raises(ToolError, match=r"not allowed|admin"):
        await call(server, "alice", "usage_report", since=DAY)
    with pytest.raises(ToolError, match="since must be a day as YYYY-MM-DD"):
        await call(server, "admin", "usage_report", since="last week")
    with pytest.raises(ToolError, match="until must be after since"):
        await call(server, "admin", "usage_report", since=DAY, until=DAY)


async def test_the_command_line_prints_the_same_report(
    server: RunningServer, clock: ManualClock, state_dir: Path
) -> None:
    await made(server, clock)
    tool = await call(server, "admin", "usage_report", since=DAY, until="2027-01-17", by="relay")
    env = clean_env(IMAGEGATE_STATE_DIR=str(state_dir))
    args = ("usage", "report", "--since", DAY, "--until", "2027-01-17", "--by", "relay")
    as_json = run(*args, "--format", "json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == tool
    as_csv = run(*args, "--format", "csv", env=env)
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [
        ["relay", "images", "spend", "calls"],
        ["one", "5", "0", "2"],
        ["two", "2", "0", "2"],
    ]
    table = run(*args, env=env).stdout.splitlines()
    assert table[0] == "2027-01-15 to 2027-01-17 (UTC; the last day not included)"
    assert table[-1].split() == ["total", "7", "0", "4"]
    wrong = run("usage", "report", "--since", "yesterday", env=env)
    assert wrong.returncode == 1
    assert "since must be a day as YYYY-MM-DD, not 'yesterday'" in wrong.stderr
