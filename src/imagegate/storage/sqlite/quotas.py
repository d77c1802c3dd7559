"""The quota ledger in SQLite: daily counters per subject, reservations with a lease.

Each reservation names the process that holds it. When the database opens, the
reservations of processes of this host that are gone (killed, crashed) are released at
once; any other stale one ends with its lease.
"""

import sqlite3
import uuid

from imagegate.storage.interfaces import LimitCheck, Reservation, Usage, UsageRow
from imagegate.storage.processes import is_gone
from imagegate.storage.reports import REPORTS
from imagegate.storage.rules import LEASE_SECONDS, day_of
from imagegate.storage.sqlite.database import Database, run_script

SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_daily (
    subject TEXT NOT NULL,
    day TEXT NOT NULL,
    images INTEGER NOT NULL DEFAULT 0,
    spend REAL NOT NULL DEFAULT 0,
    calls INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subject, day)
);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    day TEXT NOT NULL,
    images INTEGER NOT NULL,
    spend REAL NOT NULL,
    expires REAL NOT NULL,
    holder TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS reservations_by_subject ON reservations (subject);
CREATE TABLE IF NOT EXISTS last_call (
    subject TEXT PRIMARY KEY,
    at REAL NOT NULL
);
"""


RELAYS = """
CREATE TABLE IF NOT EXISTS usage_by_relay (
    subject TEXT NOT NULL,
    day TEXT NOT NULL,
    relay TEXT NOT NULL,
    images INTEGER NOT NULL DEFAULT 0,
    spend REAL NOT NULL DEFAULT 0,
    calls INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subject, day, relay)
);
CREATE INDEX IF NOT EXISTS usage_by_relay_by_day ON usage_by_relay (day);
"""


def create_relays(db: sqlite3.Connection) -> None:
    run_script(db, RELAYS)


def create(db: sqlite3.Connection) -> None:
    run_script(db, SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(reservations)")}
    if "holder" not in columns:  # a database from before holders were recorded
        db.execute("ALTER TABLE reservations ADD COLUMN holder TEXT NOT NULL DEFAULT ''")


def release_gone(db: sqlite3.Connection) -> None:
    """On open: the reservations of processes of this host that are gone end."""
    holders = db.execute("SELECT DISTINCT holder FROM reservations WHERE holder != ''")
    for (holder,) in holders.fetchall():
        if is_gone(holder):
            db.execute("DELETE FROM reservations WHERE holder = ?", (holder,))


class SqliteQuotaLedger:
    def __init__(
        self, database: Database, holder: str, lease_seconds: float = LEASE_SECONDS
    ) -> None:
        self._db = database
        self._holder = holder
        self._lease = lease_seconds

    async def reserve(
        self,
        subject: str,
        images: int,
        spend: float,
        now: float,
        check: LimitCheck,
        relay: str = "",
    ) -> Reservation:
        reservation = Reservation(uuid.uuid4().hex, subject, images, spend, relay)

        def reserve(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM reservations WHERE expires < ?", (now,))
            check(_usage(db, subject, now))
            db.execute(
                "INSERT INTO reservations (id, subject, day, images, spend, expires, holder) "
                "VALUES (?,?,?,?,?,?,?)",
                (
                    reservation.id,
                    subject,
                    day_of(now),
                    images,
                    spend,
                    now + self._lease,
                    self._holder,
                ),
            )
            db.execute(
                "INSERT INTO last_call VALUES (?, ?) ON CONFLICT(subject) DO UPDATE SET at = ?",
                (subject, now, now),
            )

        # Not durable: a power loss ends the call the reservation is for (see release).
        await self._db.write(reserve, durable=False)
        return reservation

    async def commit(self, reservation: Reservation, images: int, spend: float, now: float) -> None:
        def commit(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM reservations WHERE id = ?", (reservation.id,))
            db.execute(
                "INSERT INTO usage_daily (subject, day, images, spend, calls) VALUES (?,?,?,?,1) "
                "ON CONFLICT(subject, day) DO UPDATE SET images = images + excluded.images, "
                "spend = spend + excluded.spend, calls = calls + 1",
                (reservation.subject, day_of(now), images, spend),
            )
            db.execute(
                "INSERT INTO usage_by_relay (subject, day, relay, images, spend, calls) "
                "VALUES (?,?,?,?,?,1) ON CONFLICT(subject, day, relay) DO UPDATE SET "
                "images = images + excluded.images, spend = spend + excluded.spend, "
                "calls = calls + 1",
                (reservation.subject, day_of(now), reservation.relay, images, spend),
            )

        await self._db.write(commit)

    async def release(self, reservation: Reservation) -> None:
        await self._db.write(
            lambda db: db.execute("DELETE FROM reservations WHERE id = ?", (reservation.id,)),
            durable=False,
        )

    async def usage(self, subject: str, now: float) -> Usage:
        return await self._db.read(lambda db: _usage(db, subject, now), brief=True)

    async def reset(self, subject: str, now: float) -> None:
        def reset(db: sqlite3.Connection) -> None:
            month = (subject, day_of(now)[:7] + "-%")
            db.execute("DELETE FROM usage_daily WHERE subject = ? AND day LIKE ?", month)
            db.execute("DELETE FROM usage_by_relay WHERE subject = ? AND day LIKE ?", month)
            db.execute("DELETE FROM last_call WHERE subject = ?", (subject,))

        await self._db.write(reset)

    async def report(self, since: str, until: str, by: str) -> list[UsageRow]:
        query = REPORTS[by]
        rows = await self._db.read(lambda db: db.execute(query, (since, until)).fetchall())
        return [
            UsageRow(key, int(images), float(spend), int(calls))
            for key, images, spend, calls in rows
        ]


def _usage(db: sqlite3.Connection, subject: str, now: float) -> Usage:
    today = day_of(now)
    images, spend, calls = db.execute(
        "SELECT COALESCE(SUM(images),0), COALESCE(SUM(spend),0), COALESCE(SUM(calls),0) "
        "FROM usage_daily WHERE subject = ? AND day = ?",
        (subject, today),
    ).fetchone()
    (month_spend,) = db.execute(
        "SELECT COALESCE(SUM(spend),0) FROM usage_daily WHERE subject = ? AND day LIKE ?",
        (subject, today[:7] + "-%"),
    ).fetchone()
    held_images, held_spend, held_month, in_flight = db.execute(
        "SELECT COALESCE(SUM(CASE WHEN day = ? THEN images END),0), "
        "COALESCE(SUM(CASE WHEN day = ? THEN spend END),0), "
        "COALESCE(SUM(spend),0), COUNT(*) FROM reservations "
        "WHERE subject = ? AND expires >= ?",
        (today, today, subject, now),
    ).fetchone()
    last = db.execute("SELECT at FROM last_call WHERE subject = ?", (subject,)).fetchone()
    return Usage(
        images_today=images + held_images,
        spend_today=spend + held_spend,
        spend_month=month_spend + held_month,
        calls_today=calls,
        in_flight=in_flight,
        last_call_at=last[0] if last else None,
    )
