"""End-to-end latency and memory of generate_image on the placeholder relay.

Starts `imagegate serve` as a real process on 127.0.0.1, drives it with N concurrent
MCP clients, and prints per-call latency (p50/p99, milliseconds) and the server's
peak RSS for each concurrency level. Bounded: CALLS calls per level, then it stops.

    .venv/bin/python bench/bench_generate.py [--calls 200] [--size 512x512]
"""

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from fastmcp import Client
from fastmcp.client.auth import BearerAuth


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def current_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def worker(url: str, token: str, calls: int, size: str, out: list[float]) -> None:
    async with Client(url, auth=BearerAuth(token)) as client:
        for _ in range(calls):
            started = time.perf_counter()
            await client.call_tool("generate_image", {"prompt": "benchmark", "size": size})
            out.append((time.perf_counter() - started) * 1000)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_level(url: str, token: str, concurrency: int, calls: int, size: str) -> list[float]:
    latencies: list[float] = []
    per_worker = max(1, calls // concurrency)
    await asyncio.gather(
        *(worker(url, token, per_worker, size, latencies) for _ in range(concurrency))
    )
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--size", default="512x512")
    args = parser.parse_args()

    port = free_port()
    with tempfile.TemporaryDirectory() as state:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
        env.update(
            IMAGEGATE_STATE_DIR=state, IMAGEGATE_PORT=str(port), IMAGEGATE_LOG_LEVEL="warning"
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "imagegate", "serve"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            token = (Path(state) / "bearer-token").read_text().strip()
            print(f"imagegate bench: placeholder relay, {args.size} PNG, {args.calls} calls/level")
            print(f"idle server RSS: {current_rss_mib(server.pid):.1f} MiB")
            header = ("concurrency", "p50 ms", "p99 ms", "calls/s", "peak RSS MiB")
            print(" ".join(f"{h:>{w}}" for h, w in zip(header, (11, 8, 8, 8, 13), strict=True)))
            for concurrency in (1, 4, 16):
                started = time.perf_counter()
                latencies = asyncio.run(
                    run_level(f"{base}/mcp", token, concurrency, args.calls, args.size)
                )
                elapsed = time.perf_counter() - started
                print(
                    f"{concurrency:>11} {statistics.median(latencies):>8.1f} "
                    f"{percentile(latencies, 0.99):>8.1f} {len(latencies) / elapsed:>8.1f} "
                    f"{peak_rss_mib(server.pid):>13.1f}"
                )
        finally:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    main()
