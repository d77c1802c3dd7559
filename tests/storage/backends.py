"""Every storage backend the contract suite runs against, opened on a directory of the
test's own. A new backend adds one entry here (and what it needs to run).

`embedded` is the shipped default. `sqlite+memory-blobs` is a test backend that stands
in for a remote object store (no blob is a local file), so the suite also covers the
paths that copy or stream bytes instead of handing out a file.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagegate.storage.embedded import DATABASE_FILE, open_embedded, opening
from imagegate.storage.files import FileBlobStore
from imagegate.storage.interfaces import BlobKey, Storage
from imagegate.storage.postgres.backend import open_postgres
from imagegate.storage.processes import this_process
from imagegate.storage.s3 import S3BlobStore
from imagegate.storage.sqlite import assets, jobs, leases, nonces, presets, quotas, uploads
from imagegate.storage.sqlite.database import Database
from tests.services.postgres import shared_postgres
from tests.services.s3 import shared_s3
from tests.storage.memory import MemoryBlobStore

MAX_BLOB_BYTES = 10**7


@dataclass(frozen=True)
class Backend:
    name: str
    open: Callable[[Path], Storage]
    """Open the backend whose state lives under the directory; opening it again gives
    a second handle on the same state (another process or replica)."""


def _embedded(root: Path) -> Storage:
    root.mkdir(mode=0o700, exist_ok=True)
    return open_embedded(root, MAX_BLOB_BYTES)


_MEMORY: dict[Path, dict[BlobKey, bytes]] = {}


def sqlite_with_memory_blobs(root: Path) -> Storage:
    """The SQLite index and ledger with blobs that are never local files."""
    root.mkdir(mode=0o700, exist_ok=True)
    database = Database(root / DATABASE_FILE, opening(root / DATABASE_FILE))
    blobs = MemoryBlobStore(root / "staging", MAX_BLOB_BYTES, _MEMORY.setdefault(root, {}))
    ledger = quotas.SqliteQuotaLedger(database, this_process())
    return Storage(
        assets.SqliteAssetIndex(database),
        ledger,
        nonces.SqliteNonceLedger(database),
        jobs.SqliteJobLedger(database, this_process()),
        uploads.SqliteUploadLedger(database),
        blobs,
        leases.SqliteLeases(database),
        presets.SqlitePresetLedger(database),
        database.aclose,
    )


_DATABASES: dict[Path, str] = {}


def postgres_with_files(root: Path) -> Storage:
    """PostgreSQL (a database of the test's own, on the session's server) with blob
    files under the test's directory."""
    server = shared_postgres()
    if root not in _DATABASES:
        _DATABASES[root] = server.create_database_now()
    blobs = FileBlobStore(root, MAX_BLOB_BYTES)
    return open_postgres(server.url(_DATABASES[root]), server.password, pool_size=4, blobs=blobs)


def postgres_with_s3(root: Path) -> Storage:
    """PostgreSQL with a bucket of the test's own on the session's S3 server: the
    backend of several replicas."""
    server, s3 = shared_postgres(), shared_s3()
    if root not in _DATABASES:
        _DATABASES[root] = server.create_database_now()
        s3.make_bucket(_DATABASES[root].replace("_", "-"))
    blobs = S3BlobStore(
        root,
        MAX_BLOB_BYTES,
        endpoint=s3.endpoint,
        bucket=_DATABASES[root].replace("_", "-"),
        region=s3.region,
        prefix="blobs/",
        access_key=s3.access_key,
        secret_key=s3.secret_key,
    )
    return open_postgres(server.url(_DATABASES[root]), server.password, pool_size=4, blobs=blobs)


BACKENDS = [
    Backend("embedded", _embedded),
    Backend("sqlite+memory-blobs", sqlite_with_memory_blobs),
    Backend("postgresql+files", postgres_with_files),
    Backend("postgresql+s3", postgres_with_s3),
]
