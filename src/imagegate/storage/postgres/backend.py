"""The shared backend's database parts: PostgreSQL for the index, ledgers and jobs.

Blobs come from the caller (an S3 bucket for replicas on several machines, or files
for processes on one). The pool opens on first use; `Storage.open` opens it at once,
so that `serve` refuses a database of the wrong schema before it listens.
"""

from urllib.parse import urlsplit

from imagegate.storage.interfaces import BlobStore, Storage
from imagegate.storage.postgres import (
    assets,
    jobs,
    leases,
    nonces,
    presets,
    quotas,
    schema,
    uploads,
)
from imagegate.storage.postgres.database import DRIVER_ERRORS, PgDatabase, failure
from imagegate.storage.postgres.holders import BEAT_SECONDS, GONE_AFTER_SECONDS, Heartbeat
from imagegate.storage.processes import this_process


def open_postgres(
    url: str,
    password: str | None,
    pool_size: int,
    blobs: BlobStore,
    holder: str | None = None,
    beat_every: float = BEAT_SECONDS,
    gone_after: float = GONE_AFTER_SECONDS,
) -> Storage:
    """`holder` names this process in what it holds (tests give each handle its own)."""
    holder = holder or this_process()
    beat = Heartbeat(holder, beat_every, gone_after)
    database = PgDatabase(
        url,
        password,
        pool_size,
        prepare=[schema.check, beat.first],
        background=[beat.forever],
        closing=[beat.end],
    )
    return Storage(
        index=assets.PgAssetIndex(database),
        quotas=quotas.PgQuotaLedger(database, holder),
        nonces=nonces.PgNonceLedger(database),
        jobs=jobs.PgJobLedger(database, holder),
        uploads=uploads.PgUploadLedger(database),
        blobs=blobs,
        leases=leases.PgLeases(database),
        presets=presets.PgPresetLedger(database),
        closing=database.aclose,
        opening=database.open,
    )


async def upgrade_postgres(url: str, password: str | None) -> tuple[int, int]:
    """Bring the database to the latest schema: (version before, version after)."""
    database = PgDatabase(url, password, 1, prepare=[])
    connection = await database.connect()
    try:
        return await schema.upgrade(connection)
    except DRIVER_ERRORS as err:
        raise failure(err) from None
    finally:
        await connection.close()


def database_name(url: str) -> str:
    """The database as a log line may name it: host, port and name, no credentials."""
    parts = urlsplit(url)
    return (
        f"postgresql://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"
    )
