"""Two `imagegate serve` processes on one PostgreSQL database, behind haproxy (and
nginx), behave as one server: links, quotas, deletions and jobs of one are those of the
other; a paid call's confirmation asked by one is answered on the other, once; a job
running on one is cancelled from the other; an upload link made by one is used on the
other; a replica killed mid-generation leaves nothing held; 2026-07-28 clients
round-robin and handshake-era sessions work through the shipped sticky examples.

The replicas start once for the module (each test has its own subject, so their
images, quotas and jobs don't meet); only the kill test restarts one, and it runs last.
"""

import asyncio
import hashlib
import json
import re
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import obstore
import pytest
import pytest_asyncio
from fastmcp import Client
from fastmcp.client.auth import BearerAuth
from fastmcp.exceptions import ToolError
from mcp.shared.exceptions import MCPError

from tests.e2e.harness import team_files
from tests.e2e.processes import COMMAND, clean_env
from tests.e2e.wire import MODERN, Wire
from tests.fakes.upstream import (
    FakeUpstream,
    images_reply,
    png_bytes,
    running_upstream,
    watched,
)
from tests.services._process import ServiceUnavailable, free_port, require
from tests.services.haproxy import balancer_config, running_haproxy
from tests.services.nginx import running_nginx
from tests.services.postgres import Postgres, shared_postgres
from tests.services.s3 import S3Server, shared_s3

pytestmark = pytest.mark.asyncio(loop_scope="module")

EXAMPLES = Path(__file__).parents[2] / "packaging" / "examples"
UPSTREAM_PATH = "/v1/images/generations"
UPSTREAM_KEY = "sk-upstream-key-0123456789"
# One subject per test: the replicas are shared, what each test counts is its own.
SUBJECTS = (
    "fetcher",
    "racer",
    "deleter",
    "jobber",
    "tasker",
    "roundrobin",
    "legacy",
    "nginx",
    "payer",
    "canceller",
    "uploader",
    "logger",
    "killer",
)
TOKENS = {
    name: f"{name}-token-{hashlib.sha256(name.encode()).hexdigest()[:24]}" for name in SUBJECTS
}
SCOPES = ["images:generate", "images:read", "images:delete", "relay:*"]
EXTRA_SCOPES = {"uploader": ["images:upload"]}
DAILY_LIMIT = 5
PRICE = 0.04  # the paid relay's, per image


PREFIX = "replicas/"

# Replicas -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaSettings:
    """What every replica shares (the config file, secrets, where blobs live) and what
    a test may inspect of that shared state."""

    config: Path
    env: dict[str, str]
    postgres: Postgres
    database: str
    root: Path
    s3: S3Server
    bucket: str

    def state_dir(self, name: str) -> Path:
        # Each its own, as on separate machines: nothing is shared through the disk.
        return self.root / name

    async def sql(self, query: str, *args: object) -> Any:
        connection = await asyncpg.connect(
            host=self.postgres.host,
            port=self.postgres.port,
            user=self.postgres.user,
            password=self.postgres.password,
            database=self.database,
        )
        try:
            return await connection.fetchval(query, *args)
        finally:
            await connection.close()

    async def stored_blobs(self) -> set[str]:
        """The content hashes of every object in the shared bucket (S3 lists only
        complete objects: an upload cut short is never one)."""
        listed = await obstore.list(self.s3.store(self.bucket), prefix=PREFIX).collect_async()
        return {item["path"].rsplit("/", 1)[1].split(".")[0] for item in listed}

    def staging_leftovers(self, *names: str) -> list[Path]:
        """Staged blobs (always on the local disk) that no process is writing."""
        return [path for name in names for path in (self.state_dir(name) / "tmp").glob("stage-*")]


@dataclass
class Replica:
    """One `imagegate serve` on a fixed port, so a restart comes back where the
    balancers expect it; output goes to a file (a pipe nobody reads would fill)."""

    name: str
    settings: ReplicaSettings
    logs: Path
    port: int = field(default_factory=free_port)
    process: "subprocess.Popen[bytes] | None" = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def audit_log(self) -> Path:
        return self.logs / f"{self.name}-audit.jsonl"

    @property
    def output(self) -> Path:
        return self.logs / f"{self.name}.log"

    def start(self) -> None:
        env = clean_env(
            **self.settings.env,
            IMAGEGATE_CONFIG=str(self.settings.config),
            IMAGEGATE_STATE_DIR=str(self.settings.state_dir(self.name)),
            IMAGEGATE_PORT=str(self.port),
            IMAGEGATE_AUDIT_LOG=str(self.audit_log),
        )
        with self.output.open("ab") as output:
            self.process = subprocess.Popen(
                [*COMMAND, "serve"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"replica {self.name} exited:\n{self.output.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"replica {self.name} not ready:\n{self.output.read_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def audited(self, subject: str) -> list[dict[str, Any]]:
        """The tool calls this replica answered for `subject` (from its audit log)."""
        if not self.audit_log.exists():
            return []
        records = [json.loads(line) for line in self.audit_log.read_text().splitlines()]
        return [record for record in records if record["subject"] == f"token:{subject}"]


@pytest.fixture(scope="module")
def postgres() -> Postgres:
    return shared_postgres()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def upstream() -> AsyncIterator[FakeUpstream]:
    """A fake OpenAI images API, for the tests that need a generation to be slow."""
    async with running_upstream() as fake:
        fake.defaults[UPSTREAM_PATH] = images_reply(png_bytes((64, 64)))
        yield fake


@pytest.fixture(scope="module")
def balancer_port() -> int:
    # Chosen before the replicas start: their public_url names it.
    return free_port()


@pytest.fixture(scope="module")
def replica_settings(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: Postgres,
    upstream: FakeUpstream,
    balancer_port: int,
) -> ReplicaSettings:
    root = tmp_path_factory.mktemp("replicas")
    database = postgres.create_database_now("replicas")
    s3 = shared_s3()
    bucket = database.replace("_", "-")
    s3.make_bucket(bucket)
    acl = "".join(
        f'[subjects."token:{name}"]\nscopes = {json.dumps(SCOPES + EXTRA_SCOPES.get(name, []))}\n'
        for name in SUBJECTS
    )
    files = team_files(root, acl, TOKENS)
    config = root / "imagegate.toml"
    config.write_text(
        f'database_url = "{postgres.url(database)}"\n'
        # Links name the balancer, as in production; tests also fetch them from each
        # replica directly.
        f'public_url = "http://127.0.0.1:{balancer_port}"\n'
        f'acl_file = "{files["acl_file"]}"\n'
        f'tokens_file = "{files["tokens_file"]}"\n'
        # Every connection of a balanced request comes from the balancer.
        "max_connections_per_peer = 0\n"
        'default_relay = "placeholder"\n'
        '[relays.placeholder]\nkind = "placeholder"\n'
        '[relays.slow]\nkind = "openai-images"\n'
        f'base_url = "{upstream.base_url}/v1"\napi_key_env = "FAKE_KEY"\npaid = false\n'
        # The same upstream, asking first: a confirmation that spans replicas.
        '[relays.paid]\nkind = "openai-images"\n'
        f'base_url = "{upstream.base_url}/v1"\napi_key_env = "FAKE_KEY"\npaid = true\n'
        f'price = {{ currency = "USD", per_image = {{ "*" = {PRICE} }} }}\n'
        f'[quotas.subjects."token:racer"]\nimages_per_day = {DAILY_LIMIT}\n'
        f'[storage]\nkind = "s3"\nendpoint = "{s3.endpoint}"\nbucket = "{bucket}"\n'
        f'region = "{s3.region}"\nprefix = "{PREFIX}"\nserve = "redirect"\n'
        'access_key_env = "S3_ACCESS_KEY"\nsecret_key_env = "S3_SECRET_KEY"\n'
    )
    env = {
        "IMAGEGATE_DATABASE_PASSWORD": postgres.password,
        # Shared by every replica: what one signs, the others accept.
        "IMAGEGATE_LINK_KEY": secrets.token_hex(32),
        "IMAGEGATE_REQUEST_STATE_KEY": secrets.token_hex(32),
        "FAKE_KEY": UPSTREAM_KEY,
        "S3_ACCESS_KEY": s3.access_key,
        "S3_SECRET_KEY": s3.secret_key,
    }
    return ReplicaSettings(config, env, postgres, database, root, s3, bucket)


@pytest.fixture(scope="module")
def replicas(
    replica_settings: ReplicaSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Replica, Replica]]:
    logs = tmp_path_factory.mktemp("replica-logs")
    pair = (Replica("a", replica_settings, logs), Replica("b", replica_settings, logs))
    try:
        # Together, as a deployment would: the first to open an empty database makes
        # the schema, under a lock the other waits for.
        for replica in pair:
            replica.start()
        for replica in pair:
            replica.wait_ready()
        yield pair
    finally:
        for replica in pair:
            replica.stop()


# Balancers ------------------------------------------------------------------------


def _haproxy_or_skip() -> None:
    try:
        require("haproxy")
    except ServiceUnavailable as missing:
        pytest.skip(str(missing))


@pytest.fixture(scope="module")
def round_robin(
    replicas: tuple[Replica, Replica],
    balancer_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """haproxy, plain round-robin with no stickiness: the replicas' public_url."""
    _haproxy_or_skip()
    config = balancer_config(balancer_port, [replica.address for replica in replicas])
    with running_haproxy(tmp_path_factory.mktemp("haproxy"), config, balancer_port):
        yield f"http://127.0.0.1:{balancer_port}"


def example_haproxy(port: int, backends: Sequence[str], stats: Path) -> str:
    """packaging/examples/haproxy.cfg, changed only where it names this machine: the
    frontend binds loopback without TLS, logs go to stderr, the servers are ours.
    Added: a stats socket, to see the checks."""
    text = (EXAMPLES / "haproxy.cfg").read_text()
    text, binds = re.subn(r"(?m)^(\s*)bind \S+.*$", rf"\g<1>bind 127.0.0.1:{port}", text)
    text, logs = re.subn(r"(?m)^(\s*)log /dev/log", r"\g<1>log stderr format short", text)
    addresses = iter(backends)
    text, servers = re.subn(r"(?m)^(\s*server \S+ )\S+", lambda m: m[1] + next(addresses), text)
    text, globals_ = re.subn(r"(?m)^global\n", f"global\n    stats socket {stats}\n", text)
    counts = (binds, logs, servers, globals_)
    assert counts == (1, 1, len(backends), 1), f"the example changed shape: {counts}"
    return text


def haproxy_says(stats: Path, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(stats))
        sock.sendall(command.encode() + b"\n")
        return b"".join(iter(lambda: sock.recv(65536), b"")).decode()


def sessions_remembered(stats: Path) -> int:
    """How many session ids the example's stick table holds."""
    header = haproxy_says(stats, "show table imagegate_replicas").splitlines()[0]
    return int(re.search(r"used:(\d+)", header)[1])  # type: ignore[index]


def checked_servers(stats: Path) -> dict[str, str]:
    """The example backend's servers and the result of their last health check."""
    header, *lines = haproxy_says(stats, "show stat").splitlines()
    rows = [
        dict(zip(header.lstrip("# ").split(","), line.split(","), strict=False)) for line in lines
    ]
    return {
        row["svname"]: row["check_status"]
        for row in rows
        if row.get("pxname") == "imagegate_replicas" and row["svname"] != "BACKEND"
    }


def example_nginx(port: int, backends: Sequence[str], log: Path) -> str:
    """packaging/examples/nginx.conf, changed only where it names this machine."""
    text = (EXAMPLES / "nginx.conf").read_text()
    text, listens = re.subn(r"(?m)^(\s*)listen 443 ssl;", rf"\g<1>listen 127.0.0.1:{port};", text)
    text, certificates = re.subn(r"(?m)^\s*ssl_certificate.*\n", "", text)
    text, logs = re.subn(r"access_log /var/log/nginx/\S+", f"access_log {log}", text)
    addresses = iter(backends)
    text, servers = re.subn(r"(?m)^(\s*server )[\d.]+:\d+", lambda m: m[1] + next(addresses), text)
    counts = (listens, certificates, logs, servers)
    assert counts == (1, 2, 1, len(backends)), f"the example changed shape: {counts}"
    return text


@pytest.fixture(scope="module")
def haproxy_example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("haproxy-example")


@pytest.fixture(scope="module")
def nginx_example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nginx-example")


@pytest.fixture(scope="module")
def sticky(replicas: tuple[Replica, Replica], haproxy_example_dir: Path) -> Iterator[str]:
    """haproxy run from the shipped example."""
    _haproxy_or_skip()
    port = free_port()
    directory = haproxy_example_dir
    stats = directory / "stats.sock"
    config = example_haproxy(port, [replica.address for replica in replicas], stats)
    with running_haproxy(directory, config, port):
        # Its own /readyz check must pass on both, or it balances over fewer replicas
        # than the test thinks (haproxy spreads the first checks over `inter`).
        deadline = time.monotonic() + 10
        while set((checks := checked_servers(stats)).values()) != {"L7OK"}:
            assert time.monotonic() < deadline, f"health checks: {checks}"
            time.sleep(0.1)
        assert len(checks) == len(replicas)
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def nginx(replicas: tuple[Replica, Replica], nginx_example_dir: Path) -> Iterator[str]:
    """nginx run from the shipped example."""
    port = free_port()
    log = nginx_example_dir / "access.log"
    config = example_nginx(port, [replica.address for replica in replicas], log)
    try:
        with running_nginx(nginx_example_dir, config, port):
            yield f"http://127.0.0.1:{port}"
    except ServiceUnavailable as missing:
        pytest.skip(str(missing))


# Calls ----------------------------------------------------------------------------


def client(base_url: str, subject: str, **kwargs: Any) -> Client[Any]:
    """A 2026-07-28 client (fastmcp's default); `mode="legacy"` for the handshake era."""
    return Client(f"{base_url}/mcp", auth=BearerAuth(TOKENS[subject]), **kwargs)


async def call(base_url: str, subject: str, tool: str, **arguments: Any) -> dict[str, Any]:
    async with client(base_url, subject) as session:
        result = await session.call_tool(tool, arguments)
    content: dict[str, Any] = result.structured_content or {}
    return content


async def generate(base_url: str, subject: str, **arguments: Any) -> dict[str, Any]:
    arguments = {"prompt": "a replica", **arguments}
    if "relay" not in arguments:
        arguments.setdefault("size", "64x64")  # small and quick: the placeholder draws it
    return await call(base_url, subject, "generate_image", **arguments)


async def handshake_session(base_url: str, subject: str, rounds: int) -> None:
    """One handshake-era (2025-11-25) session: `rounds` times a generation and a listing."""
    async with client(base_url, subject, mode="legacy") as session:
        for _ in range(rounds):
            made = await session.call_tool("generate_image", {"prompt": "x", "size": "64x64"})
            assert len((made.structured_content or {})["images"]) == 1
            await session.call_tool("list_images", {})


def on(replica: Replica, link: str) -> str:
    """The same signed link, asked of one replica directly instead of the balancer."""
    parts = urlsplit(link)
    return f"{replica.url}{parts.path}?{parts.query}"


async def download(url: str) -> httpx.Response:
    # The replica answers 302 to a URL the bucket signs; following it is what a browser
    # does, and the bytes must be the same.
    async with httpx.AsyncClient(follow_redirects=True, timeout=10) as http:
        return await http.get(url)


class Answers:
    """An elicitation handler that says yes and remembers the questions."""

    def __init__(self) -> None:
        self.questions: list[str] = []

    async def __call__(self, message: str, response_type: Any, params: Any, ctx: Any) -> Any:
        self.questions.append(message)
        return True


async def raw_call(replica: Replica, subject: str, tool: str, **params: Any) -> dict[str, Any]:
    """One 2026-07-28 tools/call, as JSON-RPC over plain HTTP, from a client that declares
    elicitation; `params` beside name and arguments (inputResponses, requestState)."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
    }
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, **params, "_meta": meta},
    }
    headers = {
        "Authorization": f"Bearer {TOKENS[subject]}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
    }
    async with httpx.AsyncClient(timeout=20) as http:
        response = await http.post(f"{replica.url}/mcp", json=body, headers=headers)
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        answer = [json.loads(line) for line in data if line.strip()][-1]
    else:
        answer = response.json()
    assert "result" in answer, answer
    result: dict[str, Any] = answer["result"]
    return result


class Gate:
    """The fake upstream holds the next generation until `open()`."""

    def __init__(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream
        self.working = asyncio.Event()
        self.hung_up = asyncio.Event()
        self._before = len(upstream.calls(UPSTREAM_PATH))
        upstream.script(
            UPSTREAM_PATH,
            watched(self.working, self.hung_up, images_reply(png_bytes((64, 64)))),
        )

    def open(self) -> None:
        self.working.set()

    async def reached(self) -> None:
        for _ in range(250):
            if len(self.upstream.calls(UPSTREAM_PATH)) > self._before:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the upstream never got the request")


# Tests ----------------------------------------------------------------------------


async def test_a_link_made_through_the_balancer_works_on_every_replica(
    replicas: tuple[Replica, Replica], round_robin: str
) -> None:
    made = await generate(round_robin, "fetcher")
    (image,) = made["images"]
    assert image["url"].startswith(round_robin)  # public_url: the balancer
    answers = [await download(on(replica, image["url"])) for replica in replicas]
    answers.append(await download(image["url"]))
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert answers[0].content.startswith(b"\x89PNG")
    assert answers[0].content == answers[1].content == answers[2].content


async def test_the_daily_quota_holds_exactly_across_replicas(
    replicas: tuple[Replica, Replica],
) -> None:
    """30 calls at once, 15 on each replica, with 5 images a day: the reservations in
    the shared database let exactly 5 through."""
    calls = [generate(replicas[index % 2].url, "racer") for index in range(30)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    made = [outcome for outcome in outcomes if isinstance(outcome, dict)]
    refused = [outcome for outcome in outcomes if not isinstance(outcome, dict)]
    assert len(made) == DAILY_LIMIT
    assert len(refused) == 30 - DAILY_LIMIT
    for refusal in refused:
        assert isinstance(refusal, ToolError), repr(refusal)
        assert "quota exceeded: images_per_day" in str(refusal)
    for replica in replicas:
        usage = (await call(replica.url, "racer", "get_usage"))["usage"]
        assert (usage["images_today"], usage["running"]) == (DAILY_LIMIT, 0)
        listed = await call(replica.url, "racer", "list_images")
        assert len(listed["images"]) == DAILY_LIMIT
    served = {replica.name for replica in replicas if replica.audited("racer")}
    assert served == {"a", "b"}


async def test_a_deletion_on_one_replica_is_seen_by_the_other(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    (image,) = (await generate(a.url, "deleter"))["images"]
    assert (await download(on(b, image["url"]))).status_code == 200
    await call(a.url, "deleter", "delete_image", asset_id=image["asset_id"])
    assert (await download(on(b, image["url"]))).status_code == 404
    assert (await call(b.url, "deleter", "list_images"))["images"] == []
    with pytest.raises(ToolError, match="not found"):
        await call(b.url, "deleter", "get_image", asset_id=image["asset_id"])


async def test_a_job_started_on_one_replica_is_answered_by_the_other(
    replicas: tuple[Replica, Replica], upstream: FakeUpstream
) -> None:
    a, b = replicas
    gate = Gate(upstream)
    try:
        pending = await generate(a.url, "jobber", relay="slow", wait_seconds=0)
        assert pending["status"] == "running"
        await gate.reached()
        seen = await call(b.url, "jobber", "get_job", job_id=pending["job_id"], wait_seconds=0)
        assert seen["status"] == "running"
        # B waits for a job that runs on A, and wakes when A finishes it.
        waiting = asyncio.create_task(
            call(b.url, "jobber", "get_job", job_id=pending["job_id"], wait_seconds=20)
        )
        await asyncio.sleep(0.5)
        assert not waiting.done()
        gate.open()
        done = await asyncio.wait_for(waiting, 20)
    finally:
        gate.open()
    (image,) = done["images"]
    assert image["relay"] == "slow"
    assert (await download(on(b, image["url"]))).status_code == 200
    (job,) = (await call(b.url, "jobber", "list_jobs"))["jobs"]
    assert (job["status"], job["asset_ids"]) == ("completed", [image["asset_id"]])


async def test_a_task_made_on_one_replica_is_followed_on_the_other(
    replicas: tuple[Replica, Replica], upstream: FakeUpstream
) -> None:
    """The MCP tasks of a 2026-07-28 client: tasks/get on B follows a task that A runs,
    to its result."""
    a, b = replicas
    gate = Gate(upstream)
    made_on = Wire(f"{a.url}/mcp", TOKENS["tasker"], MODERN)
    asked_on = Wire(f"{b.url}/mcp", TOKENS["tasker"], MODERN)
    async with httpx.AsyncClient(timeout=20) as http:
        try:
            created = await made_on.call_as_task(
                http, "generate_image", {"prompt": "a task", "relay": "slow"}
            )
            assert created["status"] == "working"
            await gate.reached()
            working = await asked_on.request(http, "tasks/get", {"taskId": created["taskId"]})
            assert working["status"] == "working"
        finally:
            gate.open()
        for _ in range(200):
            done = await asked_on.request(http, "tasks/get", {"taskId": created["taskId"]})
            if done["status"] != "working":
                break
            await asyncio.sleep(0.05)
    assert done["status"] == "completed"
    (image,) = done["result"]["structuredContent"]["images"]
    assert (await download(on(b, image["url"]))).status_code == 200


async def test_a_2026_client_round_robins_over_both_replicas(
    replicas: tuple[Replica, Replica], round_robin: str
) -> None:
    """No session, no stickiness: any request may go to any replica."""
    async with client(round_robin, "roundrobin") as session:
        for _ in range(3):
            made = await session.call_tool("generate_image", {"prompt": "x", "size": "64x64"})
            assert len((made.structured_content or {})["images"]) == 1
            listed = await session.call_tool("list_images", {})
            assert not listed.is_error
    answered = {replica.name: len(replica.audited("roundrobin")) for replica in replicas}
    assert sum(answered.values()) == 6
    # Not an exact split: the client sends requests of its own (discovery, tools/list).
    assert all(answered.values()), answered


async def test_a_handshake_era_session_works_through_the_shipped_haproxy_example(
    replicas: tuple[Replica, Replica], sticky: str, round_robin: str, haproxy_example_dir: Path
) -> None:
    stats = haproxy_example_dir / "stats.sock"
    before = sessions_remembered(stats)
    await handshake_session(sticky, "legacy", rounds=3)
    assert sessions_remembered(stats) == before + 1  # the id a replica handed out
    # Ids a client makes up are looked up, never stored: nobody can fill the table.
    async with httpx.AsyncClient(timeout=10) as http:
        for index in range(20):
            await http.post(
                f"{sticky}/mcp",
                headers={"Mcp-Session-Id": f"made-up-{index}", "Authorization": "Bearer x"},
                json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            )
    assert sessions_remembered(stats) == before + 1
    answered = {replica.name: len(replica.audited("legacy")) for replica in replicas}
    assert sorted(answered.values()) == [0, 6]  # the whole session on one replica
    # The stick lines leave 2026-07-28 clients (no session id) alone: the same
    # subject's calls from one now reach both replicas.
    async with client(sticky, "legacy") as session:
        for _ in range(4):
            await session.call_tool("list_images", {})
    assert all(len(replica.audited("legacy")) > answered[replica.name] for replica in replicas)
    # Without the stick lines, the request after `initialize` goes to the other replica
    # (haproxy alternates strictly), which has no such session.
    with pytest.raises(MCPError, match="Session not found"):
        await handshake_session(round_robin, "legacy", rounds=1)


async def test_the_shipped_nginx_example_serves_both_eras(
    replicas: tuple[Replica, Replica], nginx: str
) -> None:
    await handshake_session(nginx, "nginx", rounds=3)
    handshake = sorted(len(replica.audited("nginx")) for replica in replicas)
    assert handshake == [0, 6]  # kept on one replica by the client's address
    async with client(nginx, "nginx") as session:
        for _ in range(4):
            await session.call_tool("list_images", {})
    answered = [len(replica.audited("nginx")) for replica in replicas]
    assert sum(answered) == 10
    assert min(answered) >= 1  # 2026-07-28 calls reached the other replica too


async def test_the_shipped_balancer_examples_log_no_link_signatures(
    replicas: tuple[Replica, Replica],
    sticky: str,
    nginx: str,
    haproxy_example_dir: Path,
    nginx_example_dir: Path,
) -> None:
    """Whoever reads a balancer's log must not find links that work."""
    (image,) = (await generate(replicas[0].url, "logger"))["images"]
    query = urlsplit(image["url"]).query
    logs = {
        sticky: haproxy_example_dir / "logs" / "haproxy.log",
        nginx: nginx_example_dir / "access.log",
    }
    for balancer, log in logs.items():
        moved = await http_get_once(f"{balancer}{urlsplit(image['url']).path}?{query}")
        assert moved.status_code == 302  # to the bucket: the request went through
        for _ in range(50):
            if f"/files/{image['asset_id']}" in log.read_text():
                break
            await asyncio.sleep(0.05)
        written = log.read_text()
        assert f"/files/{image['asset_id']}" in written
        assert "sig=" not in written
        assert query.split("sig=")[1] not in written


async def http_get_once(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(url)


async def test_a_paid_confirmation_asked_by_one_replica_is_answered_by_the_other(
    replicas: tuple[Replica, Replica],
    replica_settings: ReplicaSettings,
    round_robin: str,
    upstream: FakeUpstream,
) -> None:
    """2026-07-28: the question comes back sealed with the shared request-state key, so
    the retry that carries the yes may land anywhere; the yes is spent in the shared
    database, so it buys one call on whichever replica, never a second."""
    a, b = replicas
    before = len(upstream.calls(UPSTREAM_PATH))
    answers = Answers()
    async with client(round_robin, "payer", elicitation_handler=answers) as session:
        done = await session.call_tool(
            "generate_image", {"prompt": "a costly one", "relay": "paid"}
        )
    content = done.structured_content or {}
    assert (content["confirmation"], content["estimated_cost"]) == ("accepted", PRICE)
    assert len(content["images"]) == 1
    (question,) = answers.questions
    assert "Relay 'paid'" in question
    assert f"about USD {PRICE:.3f}" in question
    assert len(upstream.calls(UPSTREAM_PATH)) == before + 1
    # The client retries at once, with nothing in between, and haproxy alternates
    # strictly: asked by one replica, confirmed and made by the other.
    outcomes = sorted(
        [(record["outcome"], record["confirmation"]) for record in replica.audited("payer")]
        for replica in replicas
    )
    assert outcomes == [[("input_required", "asked")], [("ok", "accepted")]]

    # The same in raw JSON-RPC, to hold the sealed state: asked by A, answered on B ...
    arguments = {"prompt": "a costly replay", "relay": "paid"}
    asked = await raw_call(a, "payer", "generate_image", arguments=arguments)
    assert asked["resultType"] == "input_required", asked
    (key,) = asked["inputRequests"]
    answer = {
        "arguments": arguments,
        "inputResponses": {key: {"action": "accept", "content": {"value": True}}},
        "requestState": asked["requestState"],
    }
    nonces = "SELECT count(*) FROM spent_nonces"
    unspent = await replica_settings.sql(nonces)
    confirmed = await raw_call(b, "payer", "generate_image", **answer)
    assert confirmed["structuredContent"]["confirmation"] == "accepted", confirmed
    assert len(upstream.calls(UPSTREAM_PATH)) == before + 2
    assert await replica_settings.sql(nonces) == unspent + 1
    # ... then the very same request replayed on A, which asked but never saw the yes
    # spent, and on B: each asks anew, and the upstream gets nothing more.
    for replica in (a, b):
        replayed = await raw_call(replica, "payer", "generate_image", **answer)
        assert replayed["resultType"] == "input_required", replayed
        assert set(replayed["inputRequests"]) == {key}
        assert replayed["requestState"] != asked["requestState"]  # a new question
    assert len(upstream.calls(UPSTREAM_PATH)) == before + 2
    assert await replica_settings.sql(nonces) == unspent + 1
    asked_again = ("input_required", "asked")
    audited = {
        replica.name: [
            (record["outcome"], record["confirmation"]) for record in replica.audited("payer")
        ][-2:]
        for replica in replicas
    }
    assert audited == {"a": [asked_again, asked_again], "b": [("ok", "accepted"), asked_again]}


async def test_a_job_running_on_one_replica_is_cancelled_from_the_other(
    replicas: tuple[Replica, Replica], replica_settings: ReplicaSettings, upstream: FakeUpstream
) -> None:
    """B can't stop A's task: it marks the job in the database, A sees the mark at its
    next progress write (every 2 s), aborts the upstream request and releases the
    reservation, and B, polling, answers cancelled."""
    a, b = replicas
    gate = Gate(upstream)
    held = "SELECT count(*) FROM reservations WHERE subject = 'token:canceller'"
    try:
        pending = await generate(a.url, "canceller", relay="slow", wait_seconds=0)
        assert pending["status"] == "running"
        await gate.reached()
        assert await replica_settings.sql(held) == 1
        started = time.monotonic()
        cancelled = await call(b.url, "canceller", "cancel_job", job_id=pending["job_id"])
        took = time.monotonic() - started
        assert cancelled["status"] == "cancelled", cancelled
        assert took < 5, took  # not B's 10-second give-up
        await asyncio.wait_for(gate.hung_up.wait(), 5)  # A dropped the upstream request
    finally:
        gate.open()
    assert await replica_settings.sql(held) == 0
    seen = await call(a.url, "canceller", "get_job", job_id=pending["job_id"])
    assert seen["status"] == "cancelled"
    usage = (await call(a.url, "canceller", "get_usage"))["usage"]
    assert (usage["running"], usage["images_today"]) == (0, 0)
    assert (await call(b.url, "canceller", "list_images"))["images"] == []


async def test_an_upload_link_made_by_one_replica_is_used_on_the_other(
    replicas: tuple[Replica, Replica],
) -> None:
    """The ticket is a row of the shared database and the bytes go to the shared
    bucket: B takes what A's link promised, once, and A lists it."""
    a, b = replicas
    link = await call(a.url, "uploader", "create_upload_link", filename="teal.png")
    picture = png_bytes((48, 32), "teal")
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.put(on(b, link["upload_url"]), content=picture)
        assert response.status_code == 201, response.text
        uploaded = response.json()
        # Single use, whichever replica is asked next.
        again = await http.put(on(a, link["upload_url"]), content=picture)
        assert again.status_code == 409, again.text
    assert (uploaded["width"], uploaded["height"]) == (48, 32)
    (image,) = (await call(a.url, "uploader", "get_image", asset_id=uploaded["asset_id"]))["images"]
    assert image["relay"] == "upload"
    assert image["params"] == {"upload": True, "filename": "teal.png"}
    listed = (await call(a.url, "uploader", "list_images"))["images"]
    assert [item["asset_id"] for item in listed] == [uploaded["asset_id"]]
    fetched = await download(on(b, image["url"]))
    assert fetched.status_code == 200
    assert fetched.content == picture


async def test_a_replica_killed_mid_generation_leaves_nothing_held(
    replicas: tuple[Replica, Replica], replica_settings: ReplicaSettings, upstream: FakeUpstream
) -> None:
    """kill -9 while the upstream works: the restarted replica reaps the dead process's
    reservation and job at once (same machine), B reports the job failed, and no blob
    or staging file is left that no asset references. Runs last: it restarts A."""
    a, b = replicas
    gate = Gate(upstream)
    held = "SELECT count(*) FROM reservations WHERE subject = 'token:killer'"
    try:
        pending = await generate(a.url, "killer", relay="slow", wait_seconds=0)
        await gate.reached()
        assert await replica_settings.sql(held) == 1
        a.kill()
        await asyncio.wait_for(gate.hung_up.wait(), 10)  # A's request died with it
        a.start()
        await asyncio.to_thread(a.wait_ready)
    finally:
        gate.open()
    assert await replica_settings.sql(held) == 0
    usage = (await call(b.url, "killer", "get_usage"))["usage"]
    assert (usage["running"], usage["images_today"]) == (0, 0)
    (job,) = (await call(b.url, "killer", "list_jobs"))["jobs"]
    assert job["status"] == "failed"
    with pytest.raises(ToolError, match=re.escape("imagegate stopped (a restart or a crash)")):
        await call(b.url, "killer", "get_job", job_id=pending["job_id"])
    referenced = await replica_settings.sql("SELECT array_agg(DISTINCT sha256) FROM assets")
    assert await replica_settings.stored_blobs() <= set(referenced or [])
    assert replica_settings.staging_leftovers(a.name, b.name) == []
