"""What the job layer costs: added latency of generate_image with jobs, beside the same
server without them, in one run.

Every generation became a job (recorded in the database, run in the server's task
group, waited for by its call). This starts a zero-latency fake Responses API upstream
(bench/fake_upstream.py) answering with a small image, and two `imagegate serve`
processes in front of it: this tree, and the tree of `--baseline` (default: the last
commit before jobs; any other commit compares with that one), taken with `git archive`
and run on the same virtualenv. It
drives generate_image one call at a time, in alternating rounds, and prints p50/p99
per server and the difference of the p50s (goal: under 5 ms).

    .venv/bin/python bench/bench_jobs.py [--calls 200] [--rounds 4] [--baseline REF]
"""

import argparse
import io
import os
import random
import subprocess
import sys
import tarfile
import tempfile
from contextlib import ExitStack
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from bench_relay import wait_for_upstream
from common import free_port, imagegate_server, median, percentile, print_row, run_level

BEFORE_JOBS = "80d1a94"
"""The last commit whose generations were not jobs."""

ROOT = Path(__file__).resolve().parent.parent


def small_png() -> bytes:
    rng = random.Random(7)
    image = Image.frombytes("RGB", (256, 256), rng.randbytes(256 * 256 * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def unpack(ref: str, into: Path) -> Path:
    """The `src` directory of `ref`, from git."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--baseline", default=BEFORE_JOBS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work, ExitStack() as running:
        root = Path(work)
        image = root / "image.png"
        image.write_bytes(small_png())
        upstream_port = free_port()
        upstream = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("fake_upstream.py")),
                str(upstream_port),
                str(image),
            ],
        )
        running.callback(upstream.wait, 10)
        running.callback(upstream.terminate)
        config = root / "imagegate.toml"
        config.write_text(
            'default_relay = "bench"\n[relays.bench]\nkind = "openai-responses"\n'
            f'base_url = "http://127.0.0.1:{upstream_port}/v1"\napi_key_env = "BENCH_KEY"\n'
            "paid = false\n"
        )
        os.environ["BENCH_KEY"] = "sk-bench-0123456789"
        wait_for_upstream(upstream_port)
        sources = {
            "this tree": None,
            args.baseline: unpack(args.baseline, root / "base"),
        }
        servers = {}
        for name, source in sources.items():
            state = root / f"state-{len(servers)}"
            base, _ = running.enter_context(
                imagegate_server(str(state), source, IMAGEGATE_CONFIG=str(config))
            )
            token = (state / "bearer-token").read_text().strip()
            servers[name] = (f"{base}/mcp", token)
        arguments = {"prompt": "bench", "size": "1024x1024"}
        for url, token in servers.values():
            run_level(url, token, 1, 5, arguments)  # warm-up
        latencies: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, (url, token) in servers.items():
                latencies[name] += run_level(url, token, 1, args.calls // args.rounds, arguments)[0]
        print(
            f"imagegate job layer bench: zero-latency upstream, {image.stat().st_size // 1024} KiB "
            f"PNG, one call at a time, {args.calls} calls per server in {args.rounds} "
            "alternating rounds"
        )
        widths = (24, 8, 8)
        print_row(("server", "p50 ms", "p99 ms"), widths)
        for name, values in latencies.items():
            print_row((name, f"{median(values):.2f}", f"{percentile(values, 0.99):.2f}"), widths)
        this, baseline = (median(values) for values in latencies.values())
        print(
            f"this tree adds {this - baseline:+.2f} ms at p50 over {args.baseline} "
            "(goal, over the last commit before jobs: under 5 ms)"
        )


if __name__ == "__main__":
    main()
