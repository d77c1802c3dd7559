"""Download links: imagegate's own sending, and nginx's with accel_redirect, beside
nginx sending the same file as a plain static file.

Makes a 3.15 MB and a 50 MB noisy PNG (they barely compress), uploads both through
upload links to one `imagegate serve`, then starts a second one on the same state
directory with `[storage] accel_redirect` behind nginx, configured from
packaging/examples/nginx.conf (its internal location uncommented; the test's nginx:
one worker, no access to anything but loopback). Three ways to fetch each file:

- nginx direct: a plain static location (`alias` to the blob folder, sendfile on);
- imagegate: a signed link to imagegate itself (it sends the file);
- nginx + accel: the same link through nginx; imagegate checks it and names the file.

The client is curl (to /dev/null): the 3.15 MB file over 1 connection (one curl, the
downloads one after another on a kept-alive connection; MB/s from curl's own transfer
times), the 50 MB file over 4 connections (4 curls at once; MB/s from the wall time).
The rounds alternate the three ways. Client, nginx and imagegate share this machine's
cores; the client is the same for all three, so the ratios compare like with like.

    .venv/bin/python bench/bench_downloads.py [--rounds 7]
"""

import argparse
import asyncio
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from fastmcp import Client
from fastmcp.client.auth import BearerAuth
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import free_port, imagegate_server, median, print_row

from tests.e2e.test_downloads_nginx import PREFIX, shipped_example
from tests.services.nginx import running_nginx

SMALL_SIDE = 1024  # 3.15 MB
LARGE_SIDE = 4083  # 50.0 MB, under the default pixel cap
SMALL_DOWNLOADS = 100
LARGE_DOWNLOADS = 3  # per connection
CONNECTIONS = 4
WAYS = ("nginx direct", "imagegate", "nginx + accel")


def noisy_png(path: Path, side: int) -> None:
    pixels = random.Random(side).randbytes(side * side * 3)
    Image.frombytes("RGB", (side, side), pixels).save(path, compress_level=1)


async def upload(url: str, token: str, data: bytes) -> str:
    """Upload an image through an upload link; a signed download link to it."""
    async with Client(url, auth=BearerAuth(token)) as client:
        made = await client.call_tool("create_upload_link", {})
        assert made.structured_content is not None
        async with httpx.AsyncClient(timeout=300) as http:
            put = await http.put(made.structured_content["upload_url"], content=data)
            put.raise_for_status()
        asset_id = put.json()["asset_id"]
        link = await client.call_tool(
            "create_download_link", {"asset_id": asset_id, "ttl_seconds": 86400}
        )
        assert link.structured_content is not None
        download: str = link.structured_content["images"][0]["url"]
        return download


def curl(url: str, count: int, write_out: str) -> list[str]:
    """One curl that downloads `url` `count` times over one connection, to /dev/null,
    writing `write_out` (curl's variables) after each."""
    arguments = ["curl", "--silent", "--show-error", "--write-out", write_out]
    for _ in range(count):
        arguments += ["--output", "/dev/null", url]
    return arguments


def one_connection(url: str, count: int) -> tuple[int, float]:
    """(bytes, seconds) of `count` downloads one after another over one connection,
    as curl times the transfers."""
    arguments = curl(url, count, "%{http_code} %{size_download} %{time_total}\\n")
    lines = subprocess.run(arguments, capture_output=True, text=True, check=True).stdout.split()
    codes, sizes, times = lines[0::3], lines[1::3], lines[2::3]
    assert set(codes) == {"200"}, codes
    return sum(int(size) for size in sizes), sum(float(each) for each in times)


def connections(url: str, count: int, each: int) -> tuple[int, float]:
    """(bytes, wall seconds) of `count` curls at once, `each` downloads apiece."""
    arguments = curl(url, each, "%{http_code} %{size_download}\\n")
    started = time.perf_counter()
    running = [subprocess.Popen(arguments, stdout=subprocess.PIPE, text=True) for _ in range(count)]
    outputs = [process.communicate()[0].split() for process in running]
    elapsed = time.perf_counter() - started
    assert all(process.returncode == 0 for process in running)
    assert {code for out in outputs for code in out[0::2]} == {"200"}
    return sum(int(size) for out in outputs for size in out[1::2]), elapsed


def config_file(directory: Path, public_url: str) -> Path:
    path = directory / "accel.toml"
    path.write_text(f'public_url = "{public_url}"\n[storage]\naccel_redirect = "{PREFIX}"\n')
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed (apt-get install curl)")
    with tempfile.TemporaryDirectory() as work:
        run(Path(work), args.rounds)


def run(work: Path, rounds: int) -> None:
    files = {"small": work / "small.png", "large": work / "large.png"}
    noisy_png(files["small"], SMALL_SIDE)
    noisy_png(files["large"], LARGE_SIDE)
    sizes = {name: path.stat().st_size / 1e6 for name, path in files.items()}
    state = work / "state"
    limits: dict[str, Any] = {"IMAGEGATE_MAX_IMAGE_BYTES": str(60 * 10**6)}
    front, direct = free_port(), free_port()
    with imagegate_server(str(state), **limits) as (base, _):
        token = (state / "bearer-token").read_text().strip()
        links = {
            name: asyncio.run(upload(f"{base}/mcp", token, path.read_bytes()))
            for name, path in files.items()
        }
        blobs = {}
        for name, link in links.items():
            sha256 = httpx.head(link).headers["etag"].strip('"')
            blobs[name] = f"{sha256[:2]}/{sha256}.png"
        accel_config = config_file(work, f"http://127.0.0.1:{front}")
        # Started after the uploads: it opens the blob files to nginx as it starts.
        with imagegate_server(str(state), IMAGEGATE_CONFIG=str(accel_config), **limits) as (
            accel_base,
            _,
        ):
            log = work / "nginx" / "access.log"
            http = shipped_example(front, accel_base.removeprefix("http://"), state / "blobs", log)
            http += (
                f"server {{\n    listen 127.0.0.1:{direct};\n"
                f"    access_log {log} imagegate;\n"
                f"    location /direct/ {{ alias {state / 'blobs'}/; sendfile on; }}\n}}\n"
            )
            with running_nginx(work / "nginx", http, front):
                urls = {
                    name: {
                        "nginx direct": f"http://127.0.0.1:{direct}/direct/{blobs[name]}",
                        "imagegate": links[name],
                        "nginx + accel": links[name].replace(base, f"http://127.0.0.1:{front}"),
                    }
                    for name in files
                }
                results = measure(urls, rounds)
    report(results, sizes, rounds)


def measure(urls: dict[str, dict[str, str]], rounds: int) -> dict[str, dict[str, list[float]]]:
    """MB/s of each way, per round, for the small and the large file."""
    for name in urls:  # warm-up: page cache, connections, imagegate's first request
        for url in urls[name].values():
            one_connection(url, 1)
    results: dict[str, dict[str, list[float]]] = {"small": {}, "large": {}}
    for _ in range(rounds):
        for way in WAYS:
            got, seconds = one_connection(urls["small"][way], SMALL_DOWNLOADS)
            results["small"].setdefault(way, []).append(got / 1e6 / seconds)
            got, seconds = connections(urls["large"][way], CONNECTIONS, LARGE_DOWNLOADS)
            results["large"].setdefault(way, []).append(got / 1e6 / seconds)
    return results


def report(
    results: dict[str, dict[str, list[float]]], sizes: dict[str, float], rounds: int
) -> None:
    print(
        f"imagegate download bench: curl to /dev/null; MB/s, the median of {rounds} "
        "alternating rounds (in brackets: the median of each round's ratio to nginx direct)"
    )
    widths = (26, 14, 14, 15)
    print_row(("file", *WAYS), widths)
    cases = (
        ("small", f"{sizes['small']:.2f} MB, 1 connection"),
        ("large", f"{sizes['large']:.1f} MB, {CONNECTIONS} connections"),
    )
    for name, label in cases:
        speeds = results[name]
        direct = speeds["nginx direct"]
        cells = []
        for way in WAYS:
            ratio = median(
                [mine / theirs for mine, theirs in zip(speeds[way], direct, strict=True)]
            )
            cells.append(f"{median(speeds[way]):.0f} ({ratio:.2f}x)")
        print_row((label, *cells), widths)
    size = sizes["small"]
    added = [
        (size / accel - size / direct) * 1000
        for accel, direct in zip(
            results["small"]["nginx + accel"], results["small"]["nginx direct"], strict=True
        )
    ]
    print(
        f"nginx + accel takes {median(added):.2f} ms more per {size:.2f} MB download than nginx "
        "direct: imagegate's check, and the hop to it (median of the rounds)"
    )


if __name__ == "__main__":
    main()
