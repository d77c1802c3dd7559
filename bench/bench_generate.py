"""End-to-end latency and memory of generate_image on the placeholder relay.

Starts `imagegate serve` as a real process on 127.0.0.1, drives it with N concurrent
MCP clients, and prints per-call latency (p50/p99, milliseconds) and the server's
peak RSS for each concurrency level. Bounded: CALLS calls per level, then it stops.

    .venv/bin/python bench/bench_generate.py [--calls 200] [--size 512x512]
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import (
    imagegate_server,
    median,
    peak_rss_mib,
    percentile,
    print_row,
    reset_peak_rss,
    rss_mib,
    run_level,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--size", default="512x512")
    args = parser.parse_args()
    arguments = {"prompt": "benchmark", "size": args.size}
    with tempfile.TemporaryDirectory() as state, imagegate_server(state) as (base, server):
        token = (Path(state) / "bearer-token").read_text().strip()
        run_level(f"{base}/mcp", token, 1, 2, arguments)  # warm-up
        idle = rss_mib(server.pid)
        print(
            f"imagegate bench: placeholder relay, {args.size} PNG, {args.calls} calls/level, "
            f"idle server RSS after warm-up {idle:.1f} MiB"
        )
        widths = (11, 8, 8, 8, 13)
        print_row(("concurrency", "p50 ms", "p99 ms", "calls/s", "peak RSS MiB"), widths)
        for concurrency in (1, 4, 16):
            reset_peak_rss(server.pid)
            latencies, elapsed = run_level(f"{base}/mcp", token, concurrency, args.calls, arguments)
            print_row(
                (
                    concurrency,
                    f"{median(latencies):.1f}",
                    f"{percentile(latencies, 0.99):.1f}",
                    f"{len(latencies) / elapsed:.1f}",
                    f"{peak_rss_mib(server.pid):.1f}",
                ),
                widths,
            )


if __name__ == "__main__":
    main()
