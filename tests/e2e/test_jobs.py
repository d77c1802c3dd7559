"""Long generations over HTTP: the bounded wait, get_job, cancel, MCP tasks in both eras,
and tenants kept apart. The upstream is a fake on 127.0.0.1 that answers when a test
lets it, and can tell when its caller hung up."""

import asyncio
import base64
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.auth import BearerAuth
from fastmcp.exceptions import ToolError

from imagegate.config import Limits, QuotaSettings
from imagegate.relays.openai_images import OpenAIImagesRelayConfig
from tests.conftest import ManualClock
from tests.e2e.harness import RunningServer, running_server, team_files
from tests.e2e.processes import serving
from tests.e2e.wire import LEGACY, MODERN, RpcError, Wire
from tests.fakes.upstream import (
    FakeUpstream,
    error_reply,
    images_reply,
    png_bytes,
    running_upstream,
    watched,
)

KEY = "sk-upstream-key-0123456789"
PATH = "/v1/images/generations"
ALICE_TOKEN = "alice-token-0123456789abcdefghijkl"
BOB_TOKEN = "bob-token-0123456789abcdefghijklmn"
CAROL_TOKEN = "carol-token-0123456789abcdefghijkl"
ACL = """
[subjects."token:alice"]
scopes = ["images:generate", "images:edit", "images:read", "relay:*"]
[subjects."token:bob"]
scopes = ["images:generate", "images:read", "relay:*"]
[subjects."token:carol"]
scopes = ["images:read"]
"""


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with running_upstream() as fake:
        fake.defaults[PATH] = images_reply(png_bytes((256, 256)))
        yield fake


class Gate:
    """Holds the upstream's next answer until `open()`; knows if the caller hung up."""

    def __init__(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream
        self.working = asyncio.Event()
        self.hung_up = asyncio.Event()
        upstream.script(PATH, watched(self.working, self.hung_up, images_reply(png_bytes())))

    def open(self) -> None:
        self.working.set()

    async def reached(self) -> None:
        """Until the upstream has the request (a cancel before it would abort nothing)."""
        for _ in range(100):
            if self.upstream.calls(PATH):
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the upstream never got the request")


def tokens(tmp: Path) -> dict[str, Path]:
    return team_files(tmp, ACL, {"alice": ALICE_TOKEN, "bob": BOB_TOKEN, "carol": CAROL_TOKEN})


@pytest.fixture
async def server(
    state_dir: Path,
    tmp_path: Path,
    upstream: FakeUpstream,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[RunningServer]:
    monkeypatch.setenv("FAKE_KEY", KEY)
    relay = OpenAIImagesRelayConfig(
        kind="openai-images",
        base_url=f"{upstream.base_url}/v1",
        api_key_env="FAKE_KEY",
        paid=False,
    )
    async with running_server(
        state_dir,
        clock,
        relays={"slow": relay},
        default_relay="slow",
        sync_wait_seconds=1,
        progress_seconds=0.1,
        quotas=QuotaSettings(default=Limits(max_concurrent=1)),
        **tokens(tmp_path),
    ) as running:
        yield running


async def call(server: RunningServer, tool: str, token: str = ALICE_TOKEN, **arguments: Any) -> Any:
    async with server.client(token) as client:
        result = await client.call_tool(tool, arguments)
    return result.structured_content


async def running(server: RunningServer) -> int:
    count: int = (await call(server, "get_usage"))["usage"]["running"]
    return count


async def test_a_slow_generation_answers_running_then_get_job_gives_the_image(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    """A client that gives up after 2 s, with sync_wait_seconds = 1: the call answers
    in time with status running; get_job then returns what the call would have."""
    gate = Gate(upstream)
    async with server.client(ALICE_TOKEN) as client:
        first = await client.call_tool("generate_image", {"prompt": "slow"}, timeout=2)
        pending = first.structured_content
        assert pending["status"] == "running"
        assert pending["job_id"].startswith("job_")
        assert "get_job" in pending["next"]
        assert pending["job_id"] in first.content[0].text
        gate.open()
        done = await client.call_tool("get_job", {"job_id": pending["job_id"]}, timeout=2)
        direct = await client.call_tool("generate_image", {"prompt": "fast"}, timeout=2)
        listed = await client.call_tool("list_images", {})
    (image,) = done.structured_content["images"]
    assert set(done.structured_content) == set(direct.structured_content)
    assert set(image) == set(direct.structured_content["images"][0])
    assert image["url"].startswith(server.base_url)
    assert image["asset_id"] in [i["asset_id"] for i in listed.structured_content["images"]]
    assert done.content[0].text.startswith("Generated 1 image(s)")
    assert not gate.hung_up.is_set()


async def test_progress_keeps_arriving_and_never_goes_backwards(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    """An upstream that reports nothing for a while: the waiting call still sends
    progress every progress_seconds, always higher than before, in the call and in
    get_job."""
    gate = Gate(upstream)
    seen: list[list[float]] = [[], []]

    async def first(progress: float, total: float | None, message: str | None) -> None:
        seen[0].append(progress)

    async def second(progress: float, total: float | None, message: str | None) -> None:
        seen[1].append(progress)

    async with server.client(ALICE_TOKEN, progress_handler=first) as client:
        pending = await client.call_tool("generate_image", {"prompt": "quiet"})
    job_id = pending.structured_content["job_id"]
    asyncio.get_running_loop().call_later(0.6, gate.open)
    async with server.client(ALICE_TOKEN, progress_handler=second) as client:
        await client.call_tool("get_job", {"job_id": job_id, "wait_seconds": 5})
    for values in seen:
        assert len(values) >= 4  # about 1 s / 0.1 s in the first call
        assert values == sorted(set(values))
    assert seen[1][-1] == 100


async def test_wait_seconds_asks_for_less_and_never_for_more(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    gate = Gate(upstream)
    try:
        pending = await call(server, "generate_image", prompt="x", wait_seconds=0)
        assert pending["status"] == "running"
        started = asyncio.get_running_loop().time()
        again = await call(server, "get_job", job_id=pending["job_id"], wait_seconds=3600)
        assert again["status"] == "running"
        assert asyncio.get_running_loop().time() - started < 2.5  # the server's 1 s bound
    finally:
        gate.open()
    with pytest.raises(ToolError, match="wait_seconds"):
        await call(server, "get_job", job_id=pending["job_id"], wait_seconds=-1)


async def test_cancel_job_aborts_the_upstream_and_frees_the_slot(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    gate = Gate(upstream)
    pending = await call(server, "generate_image", prompt="x", wait_seconds=0)
    assert await running(server) == 1
    await gate.reached()
    cancelled = await call(server, "cancel_job", job_id=pending["job_id"])
    assert cancelled["status"] == "cancelled"
    assert await running(server) == 0  # released at once, not when the upstream ends
    await asyncio.wait_for(gate.hung_up.wait(), 5)
    assert (await call(server, "list_images"))["images"] == []
    assert (await call(server, "get_job", job_id=pending["job_id"]))["status"] == "cancelled"
    again = await call(server, "cancel_job", job_id=pending["job_id"])  # no effect now
    assert again["status"] == "cancelled"
    made = await call(server, "generate_image", prompt="next")  # the slot is free
    assert len(made["images"]) == 1


async def test_a_failed_job_answers_with_its_error(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    upstream.script(PATH, error_reply(400, "invalid_size", "size is not supported"))
    with pytest.raises(ToolError, match="size is not supported") as direct:
        await call(server, "generate_image", prompt="x")
    (job,) = (await call(server, "list_jobs"))["jobs"]
    assert job["status"] == "failed"
    with pytest.raises(ToolError) as later:
        await call(server, "get_job", job_id=job["job_id"])
    assert str(later.value) == str(direct.value)
    assert await running(server) == 0


@pytest.mark.parametrize("tool", ["get_job", "cancel_job"])
async def test_another_tenants_job_looks_missing(
    server: RunningServer, upstream: FakeUpstream, tool: str
) -> None:
    gate = Gate(upstream)
    try:
        pending = await call(server, "generate_image", prompt="alice's", wait_seconds=0)
        with pytest.raises(ToolError) as theirs:
            await call(server, tool, BOB_TOKEN, job_id=pending["job_id"])
        with pytest.raises(ToolError) as unknown:
            await call(server, tool, BOB_TOKEN, job_id="job_" + "0" * 24)
        assert str(theirs.value).split(":")[0] == str(unknown.value).split(":")[0]
        assert "not found" in str(theirs.value)
        assert (await call(server, "list_jobs", BOB_TOKEN))["jobs"] == []
        assert (await call(server, "get_job", job_id=pending["job_id"]))["status"] == "running"
    finally:
        gate.open()


@pytest.mark.parametrize("era", [MODERN, LEGACY])
async def test_another_tenants_task_looks_missing(
    server: RunningServer, upstream: FakeUpstream, era: str
) -> None:
    gate = Gate(upstream)
    alice = Wire(server.mcp_url, ALICE_TOKEN, era)
    bob = Wire(server.mcp_url, BOB_TOKEN, era)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            await alice.open(client)
            await bob.open(client)
            created = await alice.call_as_task(client, "generate_image", {"prompt": "x"})
            task_id = created["taskId"] if alice.modern else created["task"]["taskId"]
            methods = ["tasks/get", "tasks/cancel"] + ([] if bob.modern else ["tasks/result"])
            for method in methods:
                with pytest.raises(RpcError, match="task not found"):
                    await bob.request(client, method, {"taskId": task_id})
            if not bob.modern:
                assert (await bob.request(client, "tasks/list", {}))["tasks"] == []
            mine = await alice.request(client, "tasks/get", {"taskId": task_id})
            assert mine["status"] == "working"
    finally:
        gate.open()


@pytest.mark.parametrize("era", [MODERN, LEGACY])
async def test_tasks_give_the_result_through_the_protocol(
    server: RunningServer, upstream: FakeUpstream, era: str
) -> None:
    gate = Gate(upstream)
    wire = Wire(server.mcp_url, ALICE_TOKEN, era)
    async with httpx.AsyncClient(timeout=10) as client:
        await wire.open(client)
        created = await wire.call_as_task(client, "generate_image", {"prompt": "a task"})
        task = created if wire.modern else created["task"]
        if wire.modern:
            assert created["resultType"] == "task"
            assert {"ttlMs", "pollIntervalMs"} <= set(task)
        else:
            assert {"ttl", "pollInterval"} <= set(task)
        assert task["status"] == "working"
        assert task["ttl" + ("Ms" if wire.modern else "")] == 86_400_000
        working = await wire.request(client, "tasks/get", {"taskId": task["taskId"]})
        assert working["status"] == "working"
        assert "result" not in working
        gate.open()
        if wire.modern:
            for _ in range(100):
                done = await wire.request(client, "tasks/get", {"taskId": task["taskId"]})
                if done["status"] != "working":
                    break
                await asyncio.sleep(0.05)
            assert done["status"] == "completed"
            result = done["result"]
        else:
            result = await wire.request(client, "tasks/result", {"taskId": task["taskId"]})
            related = result["_meta"]["io.modelcontextprotocol/related-task"]
            assert related == {"taskId": task["taskId"]}
            listed = await wire.request(client, "tasks/list", {})
            assert [t["taskId"] for t in listed["tasks"]] == [task["taskId"]]
            assert listed["tasks"][0]["status"] == "completed"
    (image,) = result["structuredContent"]["images"]
    assert image["url"].startswith(server.base_url)
    assert not result.get("isError", False)
    jobs_listed = (await call(server, "list_jobs"))["jobs"]
    assert jobs_listed[0]["job_id"] == task["taskId"]
    assert jobs_listed[0]["asset_ids"] == [image["asset_id"]]


@pytest.mark.parametrize("era", [MODERN, LEGACY])
async def test_tasks_cancel_aborts_the_upstream(
    server: RunningServer, upstream: FakeUpstream, era: str
) -> None:
    gate = Gate(upstream)
    wire = Wire(server.mcp_url, ALICE_TOKEN, era)
    async with httpx.AsyncClient(timeout=10) as client:
        await wire.open(client)
        created = await wire.call_as_task(client, "generate_image", {"prompt": "x"})
        task_id = created["taskId"] if wire.modern else created["task"]["taskId"]
        await gate.reached()
        reply = await wire.request(client, "tasks/cancel", {"taskId": task_id})
        if wire.modern:
            assert reply == {} or set(reply) <= {"_meta", "resultType"}
        else:
            assert (reply["taskId"], reply["status"]) == (task_id, "cancelled")
        assert await running(server) == 0
        await asyncio.wait_for(gate.hung_up.wait(), 5)
        after = await wire.request(client, "tasks/get", {"taskId": task_id})
        assert after["status"] == "cancelled"
        if not wire.modern:
            with pytest.raises(RpcError, match="cancelled"):
                await wire.request(client, "tasks/result", {"taskId": task_id})
            with pytest.raises(RpcError, match="already ended") as ended:
                await wire.request(client, "tasks/cancel", {"taskId": task_id})
            assert ended.value.code == -32602
    assert (await call(server, "list_images"))["images"] == []


async def test_tasks_are_advertised_in_both_eras(server: RunningServer) -> None:
    wire = Wire(server.mcp_url, ALICE_TOKEN, MODERN)
    async with httpx.AsyncClient(timeout=10) as client:
        discovered = await wire.request(client, "server/discover", {})
    assert "io.modelcontextprotocol/tasks" in discovered["capabilities"]["extensions"]
    async with server.client(ALICE_TOKEN, mode="legacy") as client:
        capabilities = client.initialize_result.capabilities
        tools = {tool.name: tool for tool in await client.list_tools()}
    assert capabilities.tasks is not None
    assert capabilities.tasks.requests is not None
    assert capabilities.tasks.requests.tools is not None
    assert tools["generate_image"].execution is not None
    assert tools["generate_image"].execution.task_support == "optional"
    assert tools["list_images"].execution is None or (
        tools["list_images"].execution.task_support in (None, "forbidden")
    )


async def test_a_call_without_a_task_is_answered_in_the_call(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    """A 2026-07-28 client that does not declare the tasks extension waits, as before."""
    wire = Wire(server.mcp_url, ALICE_TOKEN, MODERN, tasks=False)
    async with httpx.AsyncClient(timeout=10) as client:
        result = await wire.request(
            client,
            "tools/call",
            {"name": "generate_image", "arguments": {"prompt": "x"}},
            name="generate_image",
        )
    assert len(result["structuredContent"]["images"]) == 1


@pytest.mark.parametrize(
    ("stop", "said"),
    [
        (signal.SIGKILL, "imagegate stopped (a restart or a crash)"),  # found at the start
        (signal.SIGTERM, "imagegate stopped while this job ran"),  # recorded on the way out
    ],
    ids=["killed", "stopped"],
)
async def test_a_restart_fails_the_running_job_and_frees_its_slot(
    tmp_path: Path, upstream: FakeUpstream, stop: signal.Signals, said: str
) -> None:
    """The process dies (or is stopped) mid-job: on the next start the job says so, and
    its quota slot is free again, not held for the reservation's hour-long lease."""
    gate = Gate(upstream)
    config = tmp_path / "imagegate.toml"
    config.write_text(
        'default_relay = "slow"\n[relays.slow]\nkind = "openai-images"\n'
        f'base_url = "{upstream.base_url}/v1"\napi_key_env = "FAKE_KEY"\npaid = false\n'
        "[quotas.default]\nmax_concurrent = 1\n"
    )
    state = tmp_path / "state"
    settings = {"IMAGEGATE_CONFIG": str(config), "FAKE_KEY": KEY}
    try:
        with serving(state, **settings) as (base_url, process):
            token = (state / "bearer-token").read_text().strip()
            async with Client(f"{base_url}/mcp", auth=BearerAuth(token)) as client:
                pending = await client.call_tool(
                    "generate_image", {"prompt": "x", "wait_seconds": 0}
                )
            await gate.reached()
            process.send_signal(stop)
            process.wait(timeout=15)
        with serving(state, **settings) as (base_url, _):
            async with Client(f"{base_url}/mcp", auth=BearerAuth(token)) as client:
                (job,) = (await client.call_tool("list_jobs", {})).structured_content["jobs"]
                with pytest.raises(ToolError, match=re.escape(said)) as failed:
                    await client.call_tool("get_job", {"job_id": job["job_id"]})
                usage = (await client.call_tool("get_usage", {})).structured_content
    finally:
        gate.open()
    assert job["job_id"] == pending.structured_content["job_id"]
    assert job["status"] == "failed"
    assert "start it again" in str(failed.value)
    assert usage["usage"]["running"] == 0


@pytest.mark.parametrize("era", [MODERN, LEGACY])
async def test_a_failed_task_answers_like_the_failed_call(
    server: RunningServer, upstream: FakeUpstream, era: str
) -> None:
    """The upstream refuses: the call would have answered with an isError result, and
    so does the task (2026-07-28: a completed task with that result; 2025-11-25: a
    failed task whose tasks/result is that result)."""
    upstream.script(PATH, error_reply(400, "invalid_size", "size is not supported"))
    wire = Wire(server.mcp_url, ALICE_TOKEN, era)
    async with httpx.AsyncClient(timeout=10) as client:
        await wire.open(client)
        created = await wire.call_as_task(client, "generate_image", {"prompt": "x"})
        task_id = created["taskId"] if wire.modern else created["task"]["taskId"]
        for _ in range(100):
            task = await wire.request(client, "tasks/get", {"taskId": task_id})
            if task["status"] != "working":
                break
            await asyncio.sleep(0.05)
        if wire.modern:
            assert task["status"] == "completed"
            result = task["result"]
        else:
            assert task["status"] == "failed"
            assert "size is not supported" in task["statusMessage"]
            result = await wire.request(client, "tasks/result", {"taskId": task_id})
    assert result["isError"] is True
    assert "size is not supported" in result["content"][0]["text"]


@pytest.mark.parametrize("era", [MODERN, LEGACY])
async def test_tasks_need_a_scope_that_starts_jobs(
    server: RunningServer, upstream: FakeUpstream, era: str
) -> None:
    """As get_job does: a reader can follow no job, its own or not."""
    wire = Wire(server.mcp_url, CAROL_TOKEN, era)
    async with httpx.AsyncClient(timeout=10) as client:
        await wire.open(client)
        with pytest.raises(RpcError, match="forbidden: needs scope images:generate or"):
            await wire.request(client, "tasks/get", {"taskId": "job_" + "0" * 24})
    with pytest.raises(ToolError, match="forbidden"):
        await call(server, "get_job", CAROL_TOKEN, job_id="job_" + "0" * 24)


async def test_giving_up_on_get_job_leaves_the_job_running(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    """A handshake-era client whose own timeout ends a get_job sends
    notifications/cancelled for that call: the job it was waiting for goes on."""
    gate = Gate(upstream)
    pending = await call(server, "generate_image", prompt="x", wait_seconds=0)
    await gate.reached()
    async with server.client(ALICE_TOKEN, mode="legacy") as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                client.call_tool("get_job", {"job_id": pending["job_id"], "wait_seconds": 5}),
                0.5,
            )
    await asyncio.sleep(0.3)
    assert not gate.hung_up.is_set()
    assert (await call(server, "get_job", job_id=pending["job_id"], wait_seconds=0))[
        "status"
    ] == "running"
    gate.open()
    done = await call(server, "get_job", job_id=pending["job_id"])
    assert len(done["images"]) == 1


async def test_a_cancelled_batch_keeps_what_it_had_finished(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    """The first item of a batch edit is made, the second is being made: a cancel
    stops the second, and the job shows the first as made (it is stored and counted)."""
    edits = "/v1/images/edits"
    working, hung_up = asyncio.Event(), asyncio.Event()
    upstream.script(
        edits,
        images_reply(png_bytes()),
        watched(working, hung_up, images_reply(png_bytes())),
    )
    picture = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    try:
        pending = await call(
            server,
            "edit_image",
            prompt="x",
            images=[picture, picture],
            batch=True,
            wait_seconds=0,
        )
        for _ in range(100):
            if len(upstream.calls(edits)) == 2:
                break
            await asyncio.sleep(0.02)
        cancelled = await call(server, "cancel_job", job_id=pending["job_id"])
        # The upstream notices the hang-up when it next looks (every 20 ms): wait for
        # that before it is let go, or it would answer the closed request instead.
        await asyncio.wait_for(hung_up.wait(), 5)
    finally:
        working.set()
    assert cancelled["status"] == "cancelled"
    (made,) = cancelled["asset_ids"]
    listed = await call(server, "list_images")
    assert [image["asset_id"] for image in listed["images"]] == [made]
    assert (await call(server, "get_usage"))["usage"]["images_today"] == 1
