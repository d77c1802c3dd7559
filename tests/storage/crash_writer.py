"""Helper process for the crash test: starts a blob write, then waits to be killed."""

import sys
from pathlib import Path

from imagegate.storage.embedded import open_embedded

storage = open_embedded(Path(sys.argv[1]), max_blob_bytes=10_000_000)
staged = storage.blobs.stage()
staged.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 100_000)
staged._file.flush()
print("WROTE", flush=True)
sys.stdin.read()  # blocks until the test kills us
