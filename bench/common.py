"""Shared pieces of the benchmarks: processes, RSS readings, load levels, percentiles."""

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
from fastmcp import Client
from fastmcp.client.auth import BearerAuth


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status_kib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib(pid: int) -> float:
    return _status_kib(pid, "VmRSS")


def peak_rss_mib(pid: int) -> float:
    return _status_kib(pid, "VmHWM")


def reset_peak_rss(pid: int) -> None:
    """Linux: writing 5 to clear_refs resets VmHWM to the current RSS (needs the right)."""
    with suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (user + system) so far of the process's main thread (an asyncio
    server's event loop) and of the whole process."""

    def used(stat: str) -> float:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    return used(f"/proc/{pid}/task/{pid}/stat"), used(f"/proc/{pid}/stat")


def wait_healthy(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout} s")


@contextmanager
def imagegate_server(
    state: str, source: Path | None = None, **settings: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`imagegate serve` as a real process; yields (base URL, process). `source`: run the
    package from that `src` directory instead of the installed one (another version)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    env.update(
        IMAGEGATE_STATE_DIR=state,
        IMAGEGATE_PORT=str(port),
        IMAGEGATE_LOG_LEVEL="warning",
        IMAGEGATE_AUDIT_LOG="off",
        **settings,
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "imagegate", "serve"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(f"{base}/healthz")
        yield base, server
    finally:
        server.terminate()
        server.wait(timeout=15)


async def _worker(
    url: str, token: str, calls: int, arguments: dict[str, Any], out: list[float]
) -> None:
    async with Client(url, auth=BearerAuth(token)) as client:
        for _ in range(calls):
            started = time.perf_counter()
            await client.call_tool("generate_image", arguments)
            out.append((time.perf_counter() - started) * 1000)


def run_level(
    url: str, token: str, concurrency: int, calls: int, arguments: dict[str, Any]
) -> tuple[list[float], float]:
    """(latencies in ms, elapsed seconds) for `calls` calls over `concurrency` clients."""
    latencies: list[float] = []
    per_worker = max(1, calls // concurrency)

    async def level() -> None:
        await asyncio.gather(
            *(_worker(url, token, per_worker, arguments, latencies) for _ in range(concurrency))
        )

    started = time.perf_counter()
    asyncio.run(level())
    return latencies, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def print_row(cells: tuple[object, ...], widths: tuple[int, ...]) -> None:
    print(" ".join(f"{cell:>{width}}" for cell, width in zip(cells, widths, strict=True)))
