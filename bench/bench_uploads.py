"""Upload links: throughput beside a raw local copy, and memory under concurrent uploads.

Starts `imagegate serve` as a real process on 127.0.0.1, makes upload links through
MCP, and PUTs a ~20 MB noisy PNG (it barely compresses) streamed from disk with httpx:
one at a time for throughput (MB/s, beside `shutil.copyfile` plus fsync of the same
file on the same disk) and for the server's CPU time per upload (its event loop's, which
every other caller waits on, and all threads'), then 8 at once, reading the server's
peak RSS growth over idle (goal: a few MB per upload, not the file's size: the body
streams to disk).

    .venv/bin/python bench/bench_uploads.py [--rounds 5]
"""

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastmcp import Client
from fastmcp.client.auth import BearerAuth
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from common import (
    cpu_seconds,
    imagegate_server,
    median,
    peak_rss_mib,
    reset_peak_rss,
    rss_mib,
)


def noisy_png(path: Path, side: int) -> None:
    pixels = random.Random(7).randbytes(side * side * 3)
    Image.frombytes("RGB", (side, side), pixels).save(path, compress_level=1)


async def links(url: str, token: str, count: int) -> list[str]:
    async with Client(url, auth=BearerAuth(token)) as client:
        made = []
        for _ in range(count):
            result = await client.call_tool("create_upload_link", {})
            assert result.structured_content is not None
            made.append(result.structured_content["upload_url"])
        return made


async def put(client: httpx.AsyncClient, link: str, path: Path) -> float:
    async def body() -> AsyncIterator[bytes]:
        with path.open("rb") as fh:
            while chunk := fh.read(256 * 1024):
                yield chunk

    started = time.perf_counter()
    response = await client.put(link, content=body())
    response.raise_for_status()
    return time.perf_counter() - started


def local_copy(path: Path, into: Path) -> float:
    started = time.perf_counter()
    shutil.copyfile(path, into)
    with into.open("rb+") as fh:
        os.fsync(fh.fileno())
    elapsed = time.perf_counter() - started
    into.unlink()
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        image = Path(work) / "photo.png"
        noisy_png(image, 2600)
        mb = image.stat().st_size / 1e6
        state = str(Path(work) / "state")
        with imagegate_server(state) as (base, server):
            token = (Path(state) / "bearer-token").read_text().strip()
            url = f"{base}/mcp"
            async with httpx.AsyncClient(timeout=120) as client:
                await put(client, (await links(url, token, 1))[0], image)  # warm-up
                idle = rss_mib(server.pid)
                uploads = []
                copies = []
                loop_cpu = all_cpu = 0.0
                for link in await links(url, token, args.rounds):
                    loop_before, all_before = cpu_seconds(server.pid)
                    uploads.append(await put(client, link, image))
                    loop_after, all_after = cpu_seconds(server.pid)
                    loop_cpu += loop_after - loop_before
                    all_cpu += all_after - all_before
                    copies.append(local_copy(image, Path(work) / "copy.png"))
                reset_peak_rss(server.pid)
                concurrent = await links(url, token, 8)
                started = time.perf_counter()
                await asyncio.gather(*(put(client, link, image) for link in concurrent))
                together = time.perf_counter() - started
                peak = peak_rss_mib(server.pid)
        print(f"imagegate upload bench: {mb:.1f} MB noisy PNG, PUT streamed from disk")
        print(f"one upload:        {mb / median(uploads):7.1f} MB/s (median of {args.rounds})")
        print(
            f"server CPU:        {loop_cpu / args.rounds * 1000:7.1f} ms per upload on the "
            f"event loop, {all_cpu / args.rounds * 1000:.1f} ms in all (mean of {args.rounds})"
        )
        print(f"local copy+fsync:  {mb / median(copies):7.1f} MB/s (same file, same disk)")
        print(
            f"8 at once:         {8 * mb / together:7.1f} MB/s in all; server RSS idle "
            f"{idle:.1f} MiB, peak {peak:.1f} MiB, growth {peak - idle:.1f} MiB "
            f"({(peak - idle) / 8:.1f} MiB per upload)"
        )


if __name__ == "__main__":
    asyncio.run(main())
