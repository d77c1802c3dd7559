"""Half-sent request headers from one peer: how many the server holds, for how long,
and what /healthz (asked from another address) takes meanwhile.

One peer (source address 127.0.0.2) opens N connections and sends part of a request's
headers, never the rest. Runs `imagegate serve` twice: with the defaults
(request_header_timeout = 10 s, max_connections_per_peer = 256), and unbounded as
before (a 300 s header timeout, no cap). Prints a table; asserts nothing.

    .venv/bin/python bench/bench_slow_headers.py [N]
"""

import socket
import sys
import tempfile
import time

import httpx
from common import imagegate_server, median, print_row

ATTACKER = "127.0.0.2"
PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def open_half_sent(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((ATTACKER, 0))
        sock.setblocking(True)
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(PARTIAL)
        except OSError:
            sock.close()
            continue
        sockets.append(sock)
    return sockets


def still_open(sockets: list[socket.socket]) -> int:
    alive = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            alive += sock.recv(1) != b""
        except BlockingIOError:
            alive += 1  # nothing to read and not closed
        except OSError:
            pass
    return alive


def healthz_ms(base: str, tries: int = 10) -> float:
    times = []
    with httpx.Client(timeout=30) as client:
        for _ in range(tries):
            started = time.perf_counter()
            client.get(f"{base}/healthz", headers={"connection": "close"})
            times.append((time.perf_counter() - started) * 1000)
    return median(times)


def measure(label: str, count: int, settings: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as state, imagegate_server(state, **settings) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        idle_ms = healthz_ms(base)
        sockets = open_half_sent(port, count)
        time.sleep(0.5)
        held = still_open(sockets)
        during_ms = healthz_ms(base)
        waited = 0.0
        while still_open(sockets) and waited < 15:
            time.sleep(0.5)
            waited += 0.5
        after = still_open(sockets)
        for sock in sockets:
            sock.close()
        print_row(
            (label, count, held, f"{idle_ms:.1f}", f"{during_ms:.1f}", f"{waited:.1f}", after),
            WIDTHS,
        )


WIDTHS = (34, 6, 6, 10, 10, 12, 10)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    print_row(
        ("server", "sent", "held", "idle ms", "during ms", "closed by s", "after 15 s"), WIDTHS
    )
    measure("defaults (10 s, 256 per peer)", count, {})
    measure(
        "unbounded (300 s, no cap)",
        count,
        {"IMAGEGATE_REQUEST_HEADER_TIMEOUT": "300", "IMAGEGATE_MAX_CONNECTIONS_PER_PEER": "0"},
    )


if __name__ == "__main__":
    main()
