"""Views: how long a 4096x4096 image takes to become a 512 px WebP, cold and cached.

Starts `imagegate serve` as a real process on 127.0.0.1, uploads a 4096x4096 noisy PNG
through an upload link, then reads `image://{id}/view?width=512&format=webp&quality=Q`
over MCP: each Q once (cold: decode, resize, encode) and the same again (from the
cache), and prints p50 of each in milliseconds.

    .venv/bin/python bench/bench_views.py [--reads 10]
"""

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
from fastmcp import Client
from fastmcp.client.auth import BearerAuth
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from common import imagegate_server, median


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        big = Path(work) / "big.png"
        pixels = random.Random(7).randbytes(4096 * 4096 * 3)
        Image.frombytes("RGB", (4096, 4096), pixels).save(big, compress_level=1)
        state = str(Path(work) / "state")
        limits = {"IMAGEGATE_MAX_IMAGE_BYTES": str(big.stat().st_size + 1_000_000)}
        with imagegate_server(state, **limits) as (base, _):
            token = (Path(state) / "bearer-token").read_text().strip()
            async with Client(f"{base}/mcp", auth=BearerAuth(token)) as client:
                link = (await client.call_tool("create_upload_link", {})).structured_content
                assert link is not None
                async with httpx.AsyncClient(timeout=120) as http:
                    uploaded = (await http.put(link["upload_url"], content=big.read_bytes())).json()
                cold, cached = [], []
                for quality in range(50, 50 + args.reads):
                    uri = (
                        f"image://{uploaded['asset_id']}/view?width=512&format=webp"
                        f"&quality={quality}"
                    )
                    for times in (cold, cached):
                        started = time.perf_counter()
                        await client.read_resource(uri)
                        times.append((time.perf_counter() - started) * 1000)
        size = big.stat().st_size / 1e6
        print(f"imagegate views bench: 4096x4096 PNG ({size:.1f} MB) to a 512 px WebP")
        print(f"cold   p50 {median(cold):8.1f} ms ({args.reads} reads)")
        print(f"cached p50 {median(cached):8.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
