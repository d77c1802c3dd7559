"""Added latency and memory of imagegate in front of a zero-latency upstream.

Starts a fake Responses API (bench/fake_upstream.py) that answers at once with a ~4 MB
image, and `imagegate serve` with an openai-responses relay pointing at it, both as
real processes on 127.0.0.1. Drives generate_image with 1, 4 and 16 concurrent MCP
clients and prints, per level: latency p50/p99 in ms (all of it is imagegate's, the
upstream takes ~0), calls per second, and the server's peak RSS and peak minus idle.

    .venv/bin/python bench/bench_relay.py [--calls 64]
"""

import argparse
import io
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from common import (
    free_port,
    imagegate_server,
    median,
    peak_rss_mib,
    percentile,
    print_row,
    reset_peak_rss,
    rss_mib,
    run_level,
)


def noise_png(width: int, height: int) -> bytes:
    """Random pixels barely compress: a realistic multi-megabyte PNG."""
    rng = random.Random(7)
    image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=64)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        image = Path(work) / "image.png"
        image.write_bytes(noise_png(1024, 1536))
        upstream_port = free_port()
        upstream = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("fake_upstream.py")),
                str(upstream_port),
                str(image),
            ],
        )
        config = Path(work) / "imagegate.toml"
        config.write_text(
            'default_relay = "bench"\n[relays.bench]\nkind = "openai-responses"\n'
            f'base_url = "http://127.0.0.1:{upstream_port}/v1"\napi_key_env = "BENCH_KEY"\n'
            "paid = false\n"
        )
        os.environ["BENCH_KEY"] = "sk-bench-0123456789"
        try:
            wait_for_upstream(upstream_port)
            state = str(Path(work) / "state")
            with imagegate_server(state, IMAGEGATE_CONFIG=str(config)) as (base, server):
                token = (Path(state) / "bearer-token").read_text().strip()
                arguments = {"prompt": "bench", "size": "1024x1536"}
                # Warm up (imports, first connections) so that idle means "ready".
                run_level(f"{base}/mcp", token, 1, 2, arguments)
                idle = rss_mib(server.pid)
                size_mb = image.stat().st_size / 1e6
                print(
                    f"imagegate relay bench: zero-latency upstream, {size_mb:.1f} MB PNG per "
                    f"call, {args.calls} calls per level, "
                    f"idle server RSS after warm-up {idle:.1f} MiB"
                )
                widths = (11, 8, 8, 8, 13, 18)
                print_row(
                    (
                        "concurrency",
                        "p50 ms",
                        "p99 ms",
                        "calls/s",
                        "peak RSS MiB",
                        "peak - idle MiB",
                    ),
                    widths,
                )
                for concurrency in (1, 4, 16):
                    reset_peak_rss(server.pid)
                    latencies, elapsed = run_level(
                        f"{base}/mcp", token, concurrency, args.calls, arguments
                    )
                    peak = peak_rss_mib(server.pid)
                    print_row(
                        (
                            concurrency,
                            f"{median(latencies):.1f}",
                            f"{percentile(latencies, 0.99):.1f}",
                            f"{len(latencies) / elapsed:.1f}",
                            f"{peak:.1f}",
                            f"{peak - idle:.1f}",
                        ),
                        widths,
                    )
        finally:
            upstream.terminate()
            upstream.wait(timeout=10)


def wait_for_upstream(port: int) -> None:
    for _ in range(100):
        try:
            httpx.post(f"http://127.0.0.1:{port}/v1/responses", content=b"{}", timeout=5)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("fake upstream did not start")


if __name__ == "__main__":
    main()
