"""Run a real imagegate HTTP server inside the test session, on an ephemeral port."""

import asyncio
import hashlib
import io
import socket
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastmcp import Client
from fastmcp.client.auth import BearerAuth

from imagegate.config import Settings
from imagegate.core.clock import Clock
from imagegate.server import App, build_app, http_asgi_app


@dataclass
class RunningServer:
    app: App
    base_url: str
    settings: Settings

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}{self.settings.mcp_path}"

    @property
    def token(self) -> str:
        assert self.app.bearer_token is not None
        return self.app.bearer_token

    def client(self, token: str | None = None, **kwargs: Any) -> Client[Any]:
        return Client(self.mcp_url, auth=BearerAuth(token or self.token), **kwargs)


def free_port() -> int:
    """A port nobody listens on now (for a setting that names one, such as
    metrics_listen; the harness binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def free_socket() -> socket.socket:
    # TCP named, as the command's own listener (cli._listen) does: asyncio then sets
    # TCP_NODELAY on accepted connections.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def running_server(
    state_dir: Path, clock: Clock | None = None, public: bool = False, **overrides: Any
) -> AsyncIterator[RunningServer]:
    """`public`: public_url is this server's own address (its port is known only here)."""
    sock = free_socket()
    port = sock.getsockname()[1]
    if public:
        overrides["public_url"] = f"http://127.0.0.1:{port}"
    settings = Settings(state_dir=state_dir, port=port, **overrides)
    sockets = [sock]
    metrics_at = settings.metrics_address() if settings.metrics else None
    if metrics_at is not None:  # a second socket of the same server, as `serve` does
        sockets.append(socket.create_server(metrics_at))
    app = build_app(settings, "http", clock)
    config = uvicorn.Config(
        http_asgi_app(app, settings),
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=sockets))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield RunningServer(app=app, base_url=f"http://127.0.0.1:{port}", settings=settings)
    finally:
        server.should_exit = True
        await task
        for each in sockets:
            each.close()
        await app.aclose()


def team_files(directory: Path, acl: str, tokens: Mapping[str, str]) -> dict[str, Path]:
    """An ACL file and a 0600 tokens file mapping each name (subject `token:name`) to
    its token's hash: the `acl_file` and `tokens_file` settings of a small team."""
    acl_file = directory / "acl.toml"
    acl_file.write_text(acl)
    tokens_file = directory / "tokens.toml"
    tokens_file.write_text(
        "\n".join(
            f'[[tokens]]\nsubject = "{name}"\n'
            f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
            for name, token in tokens.items()
        )
    )
    tokens_file.chmod(0o600)
    return {"acl_file": acl_file, "tokens_file": tokens_file}


async def http_get(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """A plain GET, as curl would do it: no token, no MCP."""
    async with httpx.AsyncClient() as client:
        return await client.get(url, headers=headers)


async def http_post(url: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(url, **kwargs)


async def structured(
    server: RunningServer, token: str, tool: str, **arguments: Any
) -> dict[str, Any]:
    """One tool call as the token's subject; its structured content."""
    async with server.client(token) as client:
        result = await client.call_tool(tool, arguments)
    assert result.structured_content is not None
    answer: dict[str, Any] = result.structured_content
    return answer


def stored_as_sent(stored: bytes, sent: bytes) -> bool:
    """The image imagegate stored is the one the upstream sent, marked (issue 18): the
    same pixels, the same format, and XMP naming it AI-generated."""
    from PIL import Image

    from imagegate.core import xmp
    from imagegate.core.images import sniff_format

    fmt = sniff_format(stored[:32])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "stored"
        path.write_bytes(stored)
        marked = xmp.read_source_type(path, fmt) in xmp.AI_SOURCE_TYPES if fmt else False
    with Image.open(io.BytesIO(stored)) as got, Image.open(io.BytesIO(sent)) as want:
        same = got.format == want.format and got.tobytes() == want.tobytes()
    return marked and same
