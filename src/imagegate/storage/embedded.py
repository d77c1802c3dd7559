"""The embedded backend: one SQLite file and blob files under the state directory.

The default: one process (or a few sharing the directory), nothing to install.
"""

from pathlib import Path

from imagegate.storage.files import FileBlobStore
from imagegate.storage.interfaces import Storage
from imagegate.storage.processes import this_process
from imagegate.storage.sqlite import assets, jobs, nonces, quotas, uploads
from imagegate.storage.sqlite.database import Database

DATABASE_FILE = "imagegate.sqlite3"
PREPARE = [assets.prepare, quotas.prepare, nonces.prepare, jobs.prepare, uploads.prepare]
"""Every table of the embedded database, created or upgraded in this order."""


def open_embedded(state_dir: Path, max_blob_bytes: int) -> Storage:
    """The index, ledger and blobs of `state_dir` (which must exist, mode 0700)."""
    blobs = FileBlobStore(state_dir, max_blob_bytes)
    database = Database(state_dir / DATABASE_FILE, PREPARE)
    return Storage(
        index=assets.SqliteAssetIndex(database),
        quotas=quotas.SqliteQuotaLedger(database, this_process()),
        nonces=nonces.SqliteNonceLedger(database),
        jobs=jobs.SqliteJobLedger(database, this_process()),
        uploads=uploads.SqliteUploadLedger(database),
        blobs=blobs,
        closing=database.aclose,
    )
