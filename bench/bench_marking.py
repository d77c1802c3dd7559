"""Marking (issue 18): added latency and bytes per image for `xmp` and `c2pa`, beside
`off`, in one run.

1. End to end: three `imagegate serve` processes (marking off, xmp, and both with a
   test CA's certificate), the placeholder relay, 1024x1024 PNG; sequential
   generate_image calls in alternating rounds; p50 per call, and the stored image's
   bytes.
2. The marking step alone, on a noisy (barely compressible) 1024x1024 image in each
   format, as the service runs it (mark, then copy into a staged blob):
   `off` is nothing, `xmp`, `c2pa` and `both`.

    .venv/bin/python bench/bench_marking.py [--rounds 4] [--calls 10]
"""

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx
from fastmcp import Client
from fastmcp.client.auth import BearerAuth
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import imagegate_server, median, print_row

from imagegate.core.c2pa import SigningConfig, load_signer
from imagegate.core.images import ImageFormat
from imagegate.service.marking import Marker
from tests.fakes.c2pa_ca import make_credentials

TOKEN = "bench-marking-token-0123456789abcdef"  # noqa: S105 - a test token
POLICIES = ("off", "xmp", "both")


async def calls(base: str, count: int) -> tuple[list[float], int]:
    """`count` generations; their times (ms) and the last image's size in bytes."""
    times: list[float] = []
    size = 0
    async with Client(f"{base}/mcp", auth=BearerAuth(TOKEN)) as client:
        for _ in range(count):
            started = time.perf_counter()
            # One seed: the same image under each policy, so the sizes compare.
            arguments = {"prompt": "a lighthouse", "seed": 7}
            result = await client.call_tool("generate_image", arguments)
            times.append((time.perf_counter() - started) * 1000)
            assert result.structured_content is not None
            size = result.structured_content["images"][0]["bytes"]
    async with httpx.AsyncClient() as http:
        await http.get(f"{base}/healthz")
    return times, size


def end_to_end(folder: Path, rounds: int, count: int) -> None:
    credentials = make_credentials(folder / "ca")
    config = folder / "imagegate.toml"
    config.write_text(
        f'[c2pa]\ncertificate_chain = "{credentials.chain}"\nprivate_key = "{credentials.key}"\n'
    )
    times: dict[str, list[float]] = {policy: [] for policy in POLICIES}
    sizes: dict[str, int] = {}
    servers = {}
    contexts = []
    for policy in POLICIES:
        settings = {"IMAGEGATE_BEARER_TOKEN": TOKEN, "IMAGEGATE_MARKING": policy}
        if policy == "both":
            settings["IMAGEGATE_CONFIG"] = str(config)
        context = imagegate_server(str(folder / f"state-{policy}"), **settings)
        servers[policy] = context.__enter__()[0]
        contexts.append(context)
    try:
        for policy in POLICIES:  # warm up: imports, the SDK, the database
            asyncio.run(calls(servers[policy], 2))
        for _ in range(rounds):
            for policy in POLICIES:
                measured, size = asyncio.run(calls(servers[policy], count))
                times[policy].extend(measured)
                sizes[policy] = size
    finally:
        for context in contexts:
            context.__exit__(None, None, None)
    print("end to end: generate_image, placeholder relay, 1024x1024 PNG, sequential")
    widths = (8, 10, 12, 10, 12)
    print_row(("marking", "p50 ms", "added ms", "bytes", "added B"), widths)
    for policy in POLICIES:
        p50 = median(times[policy])
        print_row(
            (
                policy,
                f"{p50:.1f}",
                f"{p50 - median(times['off']):+.1f}",
                sizes[policy],
                f"{sizes[policy] - sizes['off']:+d}",
            ),
            widths,
        )


def step_alone(folder: Path, rounds: int) -> None:
    credentials = make_credentials(folder / "ca-step")
    signer = load_signer(SigningConfig(credentials.chain, credentials.key))
    markers = {
        "xmp": Marker(xmp=True),
        "c2pa": Marker(xmp=False, signer=signer),
        "both": Marker(xmp=True, signer=signer),
    }
    noisy = Image.effect_noise((1024, 1024), 64).convert("RGB")
    print("\nthe marking step alone, noisy 1024x1024 image (ms: p50 of mark + copy)")
    widths = (6, 10, 10, 10, 10, 10)
    print_row(("format", "bytes", "xmp ms", "c2pa ms", "both ms", "added B"), widths)
    for fmt, pil_name in (
        (ImageFormat.PNG, "PNG"),
        (ImageFormat.JPEG, "JPEG"),
        (ImageFormat.WEBP, "WEBP"),
    ):
        src = folder / f"noisy.{fmt.extension}"
        noisy.save(src, pil_name)
        row: list[object] = [pil_name, src.stat().st_size]
        added = 0
        for marker in markers.values():
            took: list[float] = []
            for _ in range(rounds):
                started = time.perf_counter()
                marked = marker.mark(src, fmt, action="created", software_agent="bench")
                copy = folder / "copy"
                copy.write_bytes(marked.path.read_bytes())
                took.append((time.perf_counter() - started) * 1000)
                added = marked.path.stat().st_size - src.stat().st_size
                marked.path.unlink()
            row.append(f"{median(took):.1f}")
        row.append(f"+{added}")
        print_row(tuple(row), widths)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        end_to_end(Path(tmp), args.rounds, args.calls)
        step_alone(Path(tmp), max(args.rounds * 3, 9))


if __name__ == "__main__":
    main()
