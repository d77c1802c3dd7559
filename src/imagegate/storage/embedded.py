"""The embedded backend: one SQLite file and blob files under the state directory.

The default: one process (or a few sharing the directory), nothing to install.
"""

import sqlite3
from collections.abc import Callable
from pathlib import Path

from imagegate.core.errors import StorageError
from imagegate.storage.files import FileBlobStore
from imagegate.storage.interfaces import BlobStore, Storage
from imagegate.storage.processes import this_process
from imagegate.storage.sqlite import (
    assets,
    jobs,
    leases,
    nonces,
    presets,
    quotas,
    schema,
    uploads,
)
from imagegate.storage.sqlite.database import Database, connect

DATABASE_FILE = "imagegate.sqlite3"


def opening(path: Path) -> list[Callable[[sqlite3.Connection], None]]:
    """What runs as the database at `path` opens: the schema check, then the clean-up
    after processes that are gone."""
    return [schema.checked(path), quotas.release_gone, jobs.fail_gone]


def upgrade_embedded(state_dir: Path) -> tuple[int, int] | None:
    """Bring the database of `state_dir` to the latest schema: (before, after); None
    when there is none yet (it is made at the latest version when a server starts)."""
    path = state_dir / DATABASE_FILE
    if not path.exists():
        return None
    db = connect(path)
    try:
        return schema.upgrade(db)
    except sqlite3.Error as err:
        raise StorageError(f"could not upgrade the database {path}: {err}") from None
    finally:
        db.close()


def open_embedded(state_dir: Path, max_blob_bytes: int, blobs: BlobStore | None = None) -> Storage:
    """The index and ledgers of `state_dir` (which must exist, mode 0700), with its blob
    files unless another store is given."""
    blobs = blobs or FileBlobStore(state_dir, max_blob_bytes)
    database = Database(state_dir / DATABASE_FILE, opening(state_dir / DATABASE_FILE))
    return Storage(
        index=assets.SqliteAssetIndex(database),
        quotas=quotas.SqliteQuotaLedger(database, this_process()),
        nonces=nonces.SqliteNonceLedger(database),
        jobs=jobs.SqliteJobLedger(database, this_process()),
        uploads=uploads.SqliteUploadLedger(database),
        blobs=blobs,
        leases=leases.SqliteLeases(database),
        presets=presets.SqlitePresetLedger(database),
        closing=database.aclose,
    )
