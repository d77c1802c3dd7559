"""haproxy in the foreground on loopback, in front of several replicas of the server."""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.services._process import port_open, require, supervised


def balancer_config(port: int, backends: Sequence[str], sticky_header: str | None = None) -> str:
    """Round-robin over `host:port` backends; optionally sticky on a response header.

    Handshake-era MCP sessions live in one replica, so they need stickiness on
    mcp-session-id; stateless clients work with plain round-robin.
    """
    servers = "".join(
        f"    server s{index} {address} check inter 500ms\n"
        for index, address in enumerate(backends)
    )
    sticky = ""
    if sticky_header:
        sticky = (
            "    stick-table type string len 128 size 10k expire 1h\n"
            f"    stick on req.hdr({sticky_header})\n"
            f"    stick store-response res.hdr({sticky_header})\n"
        )
    return (
        "global\n"
        "    log stderr format short local0 notice\n"
        "defaults\n"
        "    mode http\n"
        "    log global\n"
        "    timeout connect 5s\n"
        # Long enough for streamed (SSE) responses in the tests.
        "    timeout client 120s\n"
        "    timeout server 120s\n"
        "frontend front\n"
        f"    bind 127.0.0.1:{port}\n"
        "    default_backend replicas\n"
        "backend replicas\n"
        "    balance roundrobin\n"
        f"{sticky}{servers}"
    )


@contextmanager
def running_haproxy(tmp_dir: Path, config_text: str, port: int) -> Iterator[int]:
    """Run `haproxy -db` with config_text, whose frontend binds 127.0.0.1:port; yield port."""
    haproxy = require("haproxy")["haproxy"]
    tmp_dir.mkdir(parents=True, exist_ok=True)
    config = tmp_dir / "haproxy.cfg"
    config.write_text(config_text)
    with supervised(tmp_dir / "logs") as processes:
        processes.start("haproxy", [haproxy, "-db", "-f", str(config)])
        processes.wait_until(lambda: port_open(port), "haproxy", timeout=20)
        yield port
