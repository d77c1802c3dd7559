"""What the shared backends cost, and what a second replica buys, in one run.

Starts a zero-latency fake Responses API upstream (bench/fake_upstream.py, a 256 px
noisy PNG), a real PostgreSQL server and a real S3 server (Swift with s3api, the same
ones the tests start; `make test` installs them), and haproxy; then these servers in
front of the upstream:

- embedded: one `imagegate serve` on SQLite and files (the default);
- pg+s3: one on PostgreSQL and the bucket (downloads redirect to the bucket);
- 1 replica / 2 replicas behind haproxy, on PostgreSQL and the bucket.

It drives generate_image at concurrency 1 (latency p50/p99) and 16 (throughput), in
alternating rounds, and prints a table with the ratio of two replicas to one. Every
process shares this machine's cores, the client's included: on a 2-core machine a
second replica has little idle CPU to use, so read the ratio as a floor.

    .venv/bin/python bench/bench_replicas.py [--calls 160] [--rounds 2]
"""

import argparse
import io
import os
import random
import secrets
import subprocess
import sys
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_relay import wait_for_upstream
from common import free_port, imagegate_server, median, percentile, print_row, run_level

from tests.services.haproxy import balancer_config, running_haproxy
from tests.services.postgres import running_postgres
from tests.services.s3 import running_s3

KEYS = {
    "IMAGEGATE_LINK_KEY": secrets.token_hex(32),
    "IMAGEGATE_REQUEST_STATE_KEY": secrets.token_hex(32),
}
TOKEN = secrets.token_urlsafe(24)


def noisy_png() -> bytes:
    rng = random.Random(7)
    image = Image.frombytes("RGB", (256, 256), rng.randbytes(256 * 256 * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


GROUPS = ("imagegate", "swift", "postgres", "haproxy", "fake_upstream", "memcached")


def cpu_seconds_by_group() -> dict[str, float]:
    """CPU time (user + system) of every process on the machine so far, by what it is:
    one of GROUPS, this benchmark's client, or other."""
    tick = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        used = (int(fields[11]) + int(fields[12])) / tick
        if int(stat.parent.name) == os.getpid():
            group = "client (this bench)"
        else:
            group = next((name for name in GROUPS if name in command), "other")
        totals[group] = totals.get(group, 0.0) + used
    return totals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work, ExitStack() as running:
        root = Path(work)
        image = root / "image.png"
        image.write_bytes(noisy_png())
        upstream_port = free_port()
        upstream = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("fake_upstream.py")),
             str(upstream_port), str(image)],
        )  # fmt: skip
        running.callback(upstream.wait, 10)
        running.callback(upstream.terminate)
        wait_for_upstream(upstream_port)
        postgres = running.enter_context(running_postgres())
        s3 = running.enter_context(running_s3(root / "s3"))
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        s3.make_bucket(bucket)
        database = postgres.create_database_now("bench")

        relay = (
            'default_relay = "bench"\n[relays.bench]\nkind = "openai-responses"\n'
            f'base_url = "http://127.0.0.1:{upstream_port}/v1"\napi_key_env = "BENCH_KEY"\n'
            "paid = false\n"
        )
        embedded_config = root / "embedded.toml"
        embedded_config.write_text(relay)
        shared_config = root / "shared.toml"
        shared_config.write_text(
            f'database_url = "{postgres.url(database)}"\n'
            "max_connections_per_peer = 0\n"
            + relay
            + f'[storage]\nkind = "s3"\nendpoint = "{s3.endpoint}"\nbucket = "{bucket}"\n'
            f'region = "{s3.region}"\naccess_key_env = "BENCH_S3_KEY"\n'
            'secret_key_env = "BENCH_S3_SECRET"\n'
        )
        os.environ.update(BENCH_KEY="sk-bench-0123456789", BENCH_S3_KEY=s3.access_key,
                          BENCH_S3_SECRET=s3.secret_key)  # fmt: skip
        shared = {
            "IMAGEGATE_CONFIG": str(shared_config),
            "IMAGEGATE_DATABASE_PASSWORD": postgres.password,
            "IMAGEGATE_BEARER_TOKEN": TOKEN,
            **KEYS,
        }

        def serve(name: str, **settings: str) -> str:
            base, _ = running.enter_context(imagegate_server(str(root / name), **settings))
            return base

        embedded = serve("embedded", IMAGEGATE_CONFIG=str(embedded_config),
                         IMAGEGATE_BEARER_TOKEN=TOKEN)  # fmt: skip
        replicas = [serve(f"replica-{index}", **shared) for index in range(2)]
        balancers = {}
        for count in (1, 2):
            port = free_port()
            backends = [base.removeprefix("http://") for base in replicas[:count]]
            config = balancer_config(port, backends, sticky_header="mcp-session-id")
            running.enter_context(running_haproxy(root / f"haproxy-{count}", config, port))
            balancers[count] = f"http://127.0.0.1:{port}"

        token = TOKEN
        servers = {
            "embedded": embedded,
            "pg+s3": replicas[0],
            "haproxy, 1 replica": balancers[1],
            "haproxy, 2 replicas": balancers[2],
        }
        arguments = {"prompt": "bench", "size": "1024x1024"}
        for base in servers.values():
            run_level(f"{base}/mcp", token, 4, 16, arguments)  # warm-up
        latencies: dict[str, list[float]] = {name: [] for name in servers}
        rates: dict[str, list[float]] = {name: [] for name in servers}
        spent: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, base in servers.items():
                calls = args.calls // args.rounds
                latencies[name] += run_level(f"{base}/mcp", token, 1, calls // 2, arguments)[0]
                before = cpu_seconds_by_group()
                done, elapsed = run_level(f"{base}/mcp", token, 16, calls, arguments)
                rates[name].append(len(done) / elapsed)
                if name == "haproxy, 2 replicas":
                    after = cpu_seconds_by_group()
                    for group, used in after.items():
                        spent[group] = spent.get(group, 0.0) + used - before.get(group, 0.0)
        print(
            f"imagegate replica bench: zero-latency upstream, {image.stat().st_size // 1024} KiB "
            f"PNG, {os.cpu_count()} CPUs shared by every process, {args.rounds} alternating "
            "rounds"
        )
        widths = (20, 10, 10, 14)
        print_row(("server", "c=1 p50 ms", "c=1 p99 ms", "c=16 images/s"), widths)
        for name in servers:
            print_row(
                (
                    name,
                    f"{median(latencies[name]):.1f}",
                    f"{percentile(latencies[name], 0.99):.1f}",
                    f"{median(rates[name]):.1f}",
                ),
                widths,
            )
        ratio = median(rates["haproxy, 2 replicas"]) / median(rates["haproxy, 1 replica"])
        print(f"two replicas / one: {ratio:.2f}x throughput at concurrency 16 (goal: 1.6x)")
        total = sum(spent.values())
        shares = ", ".join(
            f"{group} {100 * used / total:.0f}%"
            for group, used in sorted(spent.items(), key=lambda item: -item[1])
            if used / total >= 0.01
        )
        print(f"CPU used during the two-replica runs ({total:.1f} CPU-s): {shares}")


if __name__ == "__main__":
    main()
