"""The embedded database's schema versions: numbered migrations, applied in order.

The version is SQLite's own `user_version`. A new (empty) database is created at the
latest version when it opens. One that is older is refused with the command that
upgrades it (`imagegate db upgrade`), and one that is newer with what to do: serving
from a schema this code does not know could lose data. Each migration runs in one
IMMEDIATE transaction with its version bump, so two processes can't both apply it and
a failed one leaves the previous version whole.

Version 1 is the schema of the releases before versions were recorded: its steps
take an existing database of theirs as it is (tables are created only if missing, the
reservation holder column added only if missing), so an installation upgrades in
place.
"""

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from imagegate.core.errors import SchemaError
from imagegate.storage.sqlite import assets, jobs, leases, nonces, presets, quotas, uploads

UPGRADE_COMMAND = "imagegate db upgrade"


@dataclass(frozen=True)
class Migration:
    number: int
    what: str
    steps: Sequence[Callable[[sqlite3.Connection], None]]


MIGRATIONS = (
    Migration(
        1,
        "assets, quota counters and reservations, spent confirmation nonces",
        (assets.create, quotas.create, nonces.create),
    ),
    Migration(2, "jobs", (jobs.create,)),
    Migration(3, "upload tickets", (uploads.create,)),
    Migration(
        4,
        "link revocation and retention on assets, usage by relay, leases",
        (assets.add_links_and_retention, quotas.create_relays, leases.create),
    ),
    Migration(5, "subjects' own style presets", (presets.create,)),
)
LATEST = MIGRATIONS[-1].number


def version(db: sqlite3.Connection) -> int:
    (number,) = db.execute("PRAGMA user_version").fetchone()
    return int(number)


def _is_empty(db: sqlite3.Connection) -> bool:
    (tables,) = db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").fetchone()
    return int(tables) == 0


def upgrade(db: sqlite3.Connection) -> tuple[int, int]:
    """Apply the migrations the database lacks: (version before, version after)."""
    before = version(db)
    for migration in MIGRATIONS:
        db.execute("BEGIN IMMEDIATE")
        try:
            if version(db) < migration.number:  # not done by another process meanwhile
                for step in migration.steps:
                    step(db)
                db.execute(f"PRAGMA user_version = {migration.number:d}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return before, version(db)


def checked(path: Path) -> Callable[[sqlite3.Connection], None]:
    """The step that opens the database at `path` only at the version this code
    expects: a new one is created at it; another is refused, saying what to do."""

    def check(db: sqlite3.Connection) -> None:
        found = version(db)
        if found == LATEST:
            return
        if found == 0 and _is_empty(db):
            upgrade(db)
            return
        if found < LATEST:
            raise SchemaError(
                f"the database {path} has schema version {found}; this imagegate needs "
                f"{LATEST}. Back it up if you wish, then run: {UPGRADE_COMMAND}"
            )
        raise SchemaError(
            f"the database {path} has schema version {found}, newer than this imagegate "
            f"knows ({LATEST}): a newer imagegate wrote it. Run that version, or restore "
            "a backup taken before the upgrade"
        )

    return check
