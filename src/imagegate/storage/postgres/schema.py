"""The shared database's schema versions: numbered migrations, applied in order.

The version is the one row of `imagegate_schema`. An empty database is created at the
latest version when the first process opens it; one that is older is refused with the
command that upgrades it (`imagegate db upgrade`). Upgrades hold a session advisory
lock, so replicas starting together apply each migration once; each migration runs in
one transaction with its version bump.

Replicas are upgraded one at a time, so a database may be newer than some of the
processes using it. The row also says which schema version a process must know at
least to use the database (`readable_from`): an additive migration (tables, columns
with defaults, indexes) leaves it, so replicas of the version before keep working and
restarting until they are replaced; a migration that is not additive raises it to its
own number, and older processes are refused with what to do.
"""

import logging
from dataclasses import dataclass

from imagegate.core.errors import SchemaError
from imagegate.storage.postgres.database import Connection, Lock

log = logging.getLogger("imagegate.storage")

UPGRADE_COMMAND = "imagegate db upgrade"


@dataclass(frozen=True)
class Migration:
    number: int
    what: str
    sql: str
    additive: bool = True
    """Processes that know only the versions before can still use the database."""


MIGRATIONS = (
    Migration(
        1,
        "assets, quota counters and reservations, spent nonces, jobs, upload tickets, "
        "process heartbeats",
        """
        CREATE TABLE assets (
            id text PRIMARY KEY,
            owner text NOT NULL,
            sha256 text NOT NULL,
            format text NOT NULL,
            width integer NOT NULL,
            height integer NOT NULL,
            byte_size bigint NOT NULL,
            relay text NOT NULL,
            prompt text NOT NULL,
            revised_prompt text,
            params text NOT NULL,
            created_us bigint NOT NULL
        );
        CREATE INDEX assets_by_owner ON assets (owner, created_us DESC, id DESC);
        CREATE INDEX assets_by_time ON assets (created_us DESC, id DESC);
        CREATE INDEX assets_by_blob ON assets (sha256);

        CREATE TABLE usage_daily (
            subject text NOT NULL,
            day text NOT NULL,
            images bigint NOT NULL DEFAULT 0,
            spend double precision NOT NULL DEFAULT 0,
            calls bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (subject, day)
        );
        CREATE TABLE reservations (
            id text PRIMARY KEY,
            subject text NOT NULL,
            day text NOT NULL,
            images integer NOT NULL,
            spend double precision NOT NULL,
            expires double precision NOT NULL,
            holder text NOT NULL
        );
        CREATE INDEX reservations_by_subject ON reservations (subject);
        CREATE INDEX reservations_by_holder ON reservations (holder);
        CREATE TABLE last_call (
            subject text PRIMARY KEY,
            at double precision NOT NULL
        );

        CREATE TABLE spent_nonces (
            nonce text PRIMARY KEY,
            expires double precision NOT NULL
        );
        CREATE INDEX spent_nonces_by_expiry ON spent_nonces (expires);

        CREATE TABLE jobs (
            id text PRIMARY KEY,
            owner text NOT NULL,
            tool text NOT NULL,
            state text NOT NULL,
            progress double precision,
            message text NOT NULL,
            request text NOT NULL,
            outcome text,
            error text,
            holder text NOT NULL,
            created_us bigint NOT NULL,
            updated_us bigint NOT NULL,
            cancel_requested boolean NOT NULL DEFAULT false
        );
        CREATE INDEX jobs_by_owner ON jobs (owner, created_us DESC, id DESC);
        CREATE INDEX jobs_running ON jobs (holder) WHERE state = 'running';
        CREATE INDEX jobs_by_update ON jobs (updated_us) WHERE state != 'running';

        CREATE TABLE uploads (
            id text PRIMARY KEY,
            owner text NOT NULL,
            filename text,
            expires double precision NOT NULL,
            stored_limit bigint,
            used double precision
        );
        CREATE INDEX uploads_by_expiry ON uploads (expires);

        CREATE TABLE holders (
            holder text PRIMARY KEY,
            seen double precision NOT NULL
        );
        """,
    ),
    Migration(
        2,
        "link revocation and retention on assets, usage by relay, leases",
        """
        ALTER TABLE assets ADD COLUMN link_generation integer NOT NULL DEFAULT 0;
        ALTER TABLE assets ADD COLUMN keep_until double precision;
        CREATE INDEX assets_by_keep_until ON assets (keep_until);
        ALTER TABLE uploads ADD COLUMN retention_days double precision;

        CREATE TABLE usage_by_relay (
            subject text NOT NULL,
            day text NOT NULL,
            relay text NOT NULL,
            images bigint NOT NULL DEFAULT 0,
            spend double precision NOT NULL DEFAULT 0,
            calls bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (subject, day, relay)
        );
        CREATE INDEX usage_by_relay_by_day ON usage_by_relay (day);

        CREATE TABLE leases (
            name text PRIMARY KEY,
            holder text NOT NULL,
            until double precision NOT NULL
        );
        """,
    ),
    Migration(
        3,
        "subjects' own style presets",
        """
        CREATE TABLE presets (
            owner text NOT NULL,
            name text NOT NULL,
            prompt text NOT NULL,
            negative_prompt text,
            size text,
            quality text,
            relay text,
            description text,
            updated double precision NOT NULL,
            PRIMARY KEY (owner, name)
        );
        """,
    ),
)
LATEST = MIGRATIONS[-1].number


async def version(connection: Connection) -> int | None:
    """The schema version, or None for a database imagegate has not written to."""
    found = await versions(connection)
    return None if found is None else found[0]


async def versions(connection: Connection) -> tuple[int, int] | None:
    """(the schema version, the least version a process must know to use it)."""
    exists = await connection.fetchval("SELECT to_regclass('imagegate_schema') IS NOT NULL")
    if not exists:
        return None
    row = await connection.fetchrow("SELECT version, readable_from FROM imagegate_schema")
    assert row is not None  # made with its one row
    return int(row["version"]), int(row["readable_from"])


async def upgrade(connection: Connection) -> tuple[int, int]:
    """Apply the migrations the database lacks: (version before, version after)."""
    await connection.execute("SELECT pg_advisory_lock($1, 0)", int(Lock.SCHEMA))
    try:
        before = await version(connection)
        if before is None:
            await _refuse_foreign(connection)
            await connection.execute(
                "CREATE TABLE IF NOT EXISTS imagegate_schema "
                "(version integer NOT NULL, readable_from integer NOT NULL);"
                "INSERT INTO imagegate_schema SELECT 0, 0 WHERE NOT EXISTS "
                "(SELECT 1 FROM imagegate_schema)"
            )
        for migration in MIGRATIONS:
            async with connection.transaction():
                current = await version(connection) or 0
                if current < migration.number:
                    await connection.execute(migration.sql)
                    await connection.execute(
                        "UPDATE imagegate_schema SET version = $1, readable_from = "
                        "CASE WHEN $2 THEN readable_from ELSE $1 END",
                        migration.number,
                        migration.additive and current > 0,
                    )
        return before or 0, await version(connection) or 0
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1, 0)", int(Lock.SCHEMA))


async def _refuse_foreign(connection: Connection) -> None:
    """Never create our tables beside another application's."""
    tables = await connection.fetchval(
        "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
    )
    if tables:
        raise SchemaError(
            "the database named by database_url has tables but no imagegate schema "
            "version: give imagegate a database of its own"
        )


async def check(connection: Connection) -> None:
    """Open the database only at a version this code can use: an empty one is created
    at the latest; an older one, or a newer one that is not readable by this version, is
    refused, saying what to do."""
    found = await versions(connection)
    if found is not None and found[0] == LATEST:
        return
    # Judge under the upgrade lock: a process creating the database right now shows
    # every version on its way to the latest, and an older one must not be refused.
    await connection.execute("SELECT pg_advisory_lock($1, 0)", int(Lock.SCHEMA))
    try:
        await _judge(connection)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1, 0)", int(Lock.SCHEMA))


async def _judge(connection: Connection) -> None:
    found = await versions(connection)
    if found is None or found[0] == 0:  # new (or a creation that failed half-way)
        await upgrade(connection)
        return
    number, readable_from = found
    if number < LATEST:
        raise SchemaError(
            f"the database has schema version {number}; this imagegate needs {LATEST}. "
            f"Back it up if you wish, then run: {UPGRADE_COMMAND}"
        )
    if readable_from > LATEST:
        raise SchemaError(
            f"the database has schema version {number}, which imagegate versions before "
            f"schema {readable_from} can't use (this one knows {LATEST}): a newer imagegate "
            "upgraded it. Run that version, or restore a backup taken before the upgrade"
        )
    if number > LATEST:
        log.info(
            "the database has schema version %d, newer than this imagegate knows (%d); "
            "it still uses it (an upgrade in progress)",
            number,
            LATEST,
        )
