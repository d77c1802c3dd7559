"""Retention over real HTTP with a moved clock: images go when their time has come,
with their bytes and their links; one process at a time sweeps."""

from pathlib import Path
from typing import Any

import anyio
import httpx

from imagegate.config import Limits, QuotaSettings
from imagegate.storage.embedded import open_embedded
from tests.conftest import ManualClock
from tests.e2e.harness import RunningServer, http_get, running_server, structured, team_files
from tests.fakes.upstream import png_bytes

DAY = 86_400
SCOPES = '["images:generate", "images:read", "images:upload", "images:share", "relay:*"]'
ACL = "".join(f'[subjects."token:{name}"]\nscopes = {SCOPES}\n' for name in ("alice", "keeper"))
TOKENS = {name: f"{name}-token-0123456789abcdef" for name in ("alice", "keeper")}
QUOTAS = QuotaSettings(subjects={"token:keeper": Limits(retention_days=10)})


async def call(server: RunningServer, who: str, tool: str, **arguments: Any) -> dict[str, Any]:
    return await structured(server, TOKENS[who], tool, **arguments)


async def image(server: RunningServer, who: str) -> dict[str, Any]:
    made = await call(server, who, "generate_image", prompt="x", size="64x64")
    first: dict[str, Any] = made["images"][0]
    return first


async def upload(server: RunningServer, who: str) -> str:
    link = await call(server, who, "create_upload_link")
    async with httpx.AsyncClient() as http:
        stored = await http.put(link["upload_url"], content=png_bytes((40, 30)))
    assert stored.status_code == 201, stored.text
    asset_id: str = stored.json()["asset_id"]
    return asset_id


def blobs(state_dir: Path) -> set[str]:
    return {path.name for path in (state_dir / "blobs").rglob("*.*")}


async def test_images_go_when_their_time_has_come(
    state_dir: Path, clock: ManualClock, tmp_path: Path
) -> None:
    files = team_files(tmp_path, ACL, TOKENS)
    settings = {"retention_days": 2, "quotas": QUOTAS, **files}
    async with running_server(state_dir, clock, **settings) as server:
        housekeeping = server.app.housekeeping
        assert housekeeping is not None
        old = await image(server, "alice")
        linked = await call(
            server, "alice", "create_download_link", asset_id=old["asset_id"], ttl_seconds=7 * DAY
        )
        uploaded = await upload(server, "alice")
        kept = await image(server, "keeper")  # 10 days, its own
        clock.advance(1 * DAY)
        young = await image(server, "alice")
        assert await housekeeping.sweep() == 0
        clock.advance(1 * DAY + 1)  # the first two of alice's are 2 days old
        assert await housekeeping.sweep() == 2
        listed = await call(server, "alice", "list_images")
        assert [i["asset_id"] for i in listed["images"]] == [young["asset_id"]]
        gone = await http_get(linked["images"][0]["url"])
        assert (gone.status_code, gone.text) == (404, "not found: this image was deleted\n")
        assert len(blobs(state_dir)) == 2  # young's and keeper's bytes, no more
        assert uploaded not in {i["asset_id"] for i in listed["images"]}
        still = await call(server, "keeper", "get_image", asset_id=kept["asset_id"])
        assert still["images"][0]["asset_id"] == kept["asset_id"]  # keeper's own 10 days
        clock.advance(8 * DAY)
        assert await housekeeping.sweep() == 2  # young (at 2 days), then keeper's (10)
        assert blobs(state_dir) == set()


async def test_setting_retention_applies_to_images_already_stored(
    state_dir: Path, clock: ManualClock
) -> None:
    """Images stored with no retention are judged by the retention of the sweep: the
    sweep at start removes what is already past it."""
    async with running_server(state_dir, clock) as before, before.client() as client:
        await client.call_tool("generate_image", {"prompt": "x", "size": "64x64"})
    clock.advance(3 * DAY)
    async with running_server(state_dir, clock, retention_days=2) as after:
        for _ in range(100):  # the sweep at start runs beside the server
            async with after.client() as client:
                listed = (await client.call_tool("list_images", {})).structured_content
            assert listed is not None
            if not listed["images"]:
                break
            await anyio.sleep(0.05)
        assert listed["images"] == []


async def test_one_process_at_a_time_sweeps(
    state_dir: Path, clock: ManualClock, tmp_path: Path
) -> None:
    async with running_server(state_dir, clock, retention_days=1) as server:
        housekeeping = server.app.housekeeping
        assert housekeeping is not None
        async with server.client() as client:
            await client.call_tool("generate_image", {"prompt": "x", "size": "64x64"})
        clock.advance(1 * DAY + 1)  # due, and past the lease of the sweep at start
        leases = server.app.storage.leases
        assert await leases.take("retention", "another:1:1", clock.now(), 3600)
        assert await housekeeping.sweep() == 0  # the other holds the chore
        clock.advance(3601)
        assert await housekeeping.sweep() == 1  # its lease ran out: taken over


async def test_a_clean_stop_lets_the_next_process_sweep_at_once(
    state_dir: Path, clock: ManualClock
) -> None:
    async with running_server(state_dir, clock, retention_days=1) as first:
        leases = first.app.storage.leases
        assert not await leases.take("retention", "another:1:1", clock.now(), 60)  # held
    reopened = open_embedded(state_dir, 10**7)
    try:
        assert await reopened.leases.take("retention", "another:1:1", clock.now(), 60)
    finally:
        await reopened.aclose()
