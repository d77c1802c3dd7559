"""One tenant's load against another tenant's small call: is the server shared fairly?

Tenant A keeps 16 generate_image calls of 1024x1024 in flight on the placeholder relay;
tenant B makes 64x64 calls one after another and times them. Runs `imagegate serve`
with its default fair share (cpu_slots = the CPU count) and unshared (cpu_slots = 0),
and prints B's latency idle and under A's load. Asserts nothing.

    .venv/bin/python bench/bench_fairness.py [calls]
"""

import asyncio
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

from common import imagegate_server, median, percentile, print_row
from fastmcp import Client
from fastmcp.client.auth import BearerAuth

TOKENS = {
    "heavy": "heavy-tenant-token-0123456789abcdef",
    "light": "light-tenant-token-0123456789ab",
}
WIDTHS = (28, 10, 10, 10, 10, 8)


def tokens_file(directory: str) -> Path:
    path = Path(directory) / "tokens.toml"
    entries = [
        f'[[tokens]]\nsubject = "{name}"\nsha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
        for name, token in TOKENS.items()
    ]
    path.write_text("\n".join(entries))
    path.chmod(0o600)
    return path


async def light_calls(url: str, calls: int) -> list[float]:
    times = []
    async with Client(url, auth=BearerAuth(TOKENS["light"])) as client:
        for _ in range(calls):
            started = time.perf_counter()
            await client.call_tool("generate_image", {"prompt": "small", "size": "64x64"})
            times.append((time.perf_counter() - started) * 1000)
    return times


async def heavy_load(url: str, stop: asyncio.Event) -> None:
    async def one_client() -> None:
        async with Client(url, auth=BearerAuth(TOKENS["heavy"])) as client:
            while not stop.is_set():
                await client.call_tool("generate_image", {"prompt": "big", "size": "1024x1024"})

    await asyncio.gather(*(one_client() for _ in range(16)))


async def loaded(url: str, calls: int) -> list[float]:
    stop = asyncio.Event()
    load = asyncio.create_task(heavy_load(url, stop))
    await asyncio.sleep(2)  # let the load build up
    times = await light_calls(url, calls)
    stop.set()
    await load
    return times


def measure(label: str, calls: int, settings: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as state:
        settings = {
            "IMAGEGATE_TOKENS_FILE": str(tokens_file(state)),
            "IMAGEGATE_ACL_OPEN": "true",
            **settings,
        }
        with imagegate_server(f"{state}/state", **settings) as (base, _):
            url = f"{base}/mcp"
            idle = asyncio.run(light_calls(url, calls))
            busy = asyncio.run(loaded(url, calls))
    ratio = median(busy) / median(idle)
    print_row(
        (
            label,
            f"{median(idle):.0f}",
            f"{median(busy):.0f}",
            f"{percentile(busy, 0.9):.0f}",
            f"{max(busy):.0f}",
            f"{ratio:.1f}x",
        ),
        WIDTHS,
    )


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    print(f"{os.cpu_count()} CPUs; light tenant: {calls} calls of 64x64, ms")
    print_row(("server", "idle p50", "load p50", "load p90", "load max", "p50"), WIDTHS)
    measure(f"fair share ({os.cpu_count()} slots)", calls, {})
    measure("unshared (cpu_slots = 0)", calls, {"IMAGEGATE_CPU_SLOTS": "0"})


if __name__ == "__main__":
    main()
