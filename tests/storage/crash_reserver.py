"""Helper process for the crash test: reserves a quota slot, then waits to be killed."""

import sys
from pathlib import Path

import anyio

from imagegate.storage.embedded import open_embedded


async def main() -> None:
    storage = open_embedded(Path(sys.argv[1]), max_blob_bytes=10_000_000)
    await storage.quotas.reserve("token:bot", 1, 0.5, float(sys.argv[2]), lambda usage: None)
    print("RESERVED", flush=True)
    sys.stdin.read()  # blocks until the test kills us


anyio.run(main)
