"""haproxy and nginx from the helpers really spread requests over the replicas."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.services._process import ServiceUnavailable, free_port
from tests.services.haproxy import balancer_config, running_haproxy
from tests.services.nginx import running_nginx


class _Replica(ThreadingHTTPServer):
    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _Named)
        self.name = name


class _Named(BaseHTTPRequestHandler):
    server: _Replica

    def do_GET(self) -> None:
        body = self.server.name.encode()
        self.send_response(200)
        if self.path == "/session":
            self.send_header("mcp-session-id", f"session-{self.server.name}")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def replicas() -> Iterator[list[str]]:
    servers = []
    for name in ("a", "b"):
        server = _Replica(name)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield [f"127.0.0.1:{server.server_address[1]}" for server in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def names(port: int, count: int, headers: dict[str, str] | None = None) -> set[str]:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
        return {client.get("/").text for _ in range(count)}


def test_haproxy_round_robin_and_sticky_sessions(tmp_path: Path, replicas: list[str]) -> None:
    port = free_port()
    config = balancer_config(port, replicas, sticky_header="mcp-session-id")
    try:
        with running_haproxy(tmp_path, config, port):
            spread = names(port, 6)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                session = client.get("/session").headers["mcp-session-id"]
            sticky = names(port, 6, headers={"mcp-session-id": session})
    except ServiceUnavailable as missing:
        pytest.skip(str(missing))

    assert spread == {"a", "b"}
    assert sticky == {session.removeprefix("session-")}


def test_nginx_round_robin(tmp_path: Path, replicas: list[str]) -> None:
    port = free_port()
    upstream = "".join(f"server {address};" for address in replicas)
    http_config = (
        f"upstream app {{ {upstream} }}\n"
        f"server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://app; }} }}"
    )
    try:
        with running_nginx(tmp_path, http_config, port):
            spread = names(port, 6)
    except ServiceUnavailable as missing:
        pytest.skip(str(missing))

    assert spread == {"a", "b"}
