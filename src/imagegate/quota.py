"""Per-subject limits: images per day, cooldown, concurrent calls, spend per day/month.

Limits come from `[quotas]` in the config: `default`, then the caller's groups (the
most generous group wins, per limit), then the caller's subject entry (wins outright).
A missing limit is no limit.

Counters live in SQLite beside the assets and survive restarts. A call first
*reserves* (one IMMEDIATE transaction checks every limit, counting other calls'
reservations too, and records its own), so two parallel calls can't both take the
last slot; then it *commits* what it really made, or *releases* the reservation when
it failed or was declined, which therefore consumes nothing. Days and months are UTC.
Reservations carry a lease, so a crashed process can't hold a slot forever.
"""

import math
import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from imagegate.auth.identity import Identity
from imagegate.errors import QuotaExceeded
from imagegate.store.database import Database

_SCHEMA = """
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
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_by_subject ON reservations (subject);
CREATE TABLE IF NOT EXISTS last_call (
    subject TEXT PRIMARY KEY,
    at REAL NOT NULL
);
"""


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    images_per_day: int | None = Field(default=None, ge=0)
    cooldown_seconds: float | None = Field(default=None, ge=0)
    max_concurrent: int | None = Field(default=None, ge=1)
    spend_per_day: float | None = Field(default=None, ge=0)
    spend_per_month: float | None = Field(default=None, ge=0)


class QuotaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Limits = Limits()
    subjects: dict[str, Limits] = Field(default_factory=dict)
    groups: dict[str, Limits] = Field(default_factory=dict)


_FIELDS = tuple(Limits.model_fields)
_LESS_IS_MORE = frozenset({"cooldown_seconds"})  # for a cooldown, shorter is more generous


def limits_for(identity: Identity, settings: QuotaSettings) -> Limits:
    """The limits that apply to a caller. Pure."""
    values: dict[str, Any] = settings.default.model_dump()
    groups = [settings.groups[g] for g in sorted(identity.groups) if g in settings.groups]
    for name in _FIELDS:
        granted = [getattr(g, name) for g in groups if name in g.model_fields_set]
        if granted:
            values[name] = _most_generous(name, granted)
    subject = settings.subjects.get(identity.subject)
    if subject is not None:
        values.update({name: getattr(subject, name) for name in subject.model_fields_set})
    return Limits(**values)


def _most_generous(name: str, values: list[Any]) -> Any:
    if None in values:
        return None  # a group without that limit lifts it
    return min(values) if name in _LESS_IS_MORE else max(values)


@dataclass(frozen=True)
class Reservation:
    id: str
    subject: str
    images: int
    spend: float


@dataclass(frozen=True)
class Usage:
    images_today: int
    spend_today: float
    spend_month: float
    calls_today: int
    in_flight: int


def day_of(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def seconds_to_next_day(now: float) -> int:
    moment = datetime.fromtimestamp(now, UTC)
    tomorrow = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((tomorrow - moment).total_seconds() + 0.999))


def seconds_to_next_month(now: float) -> int:
    moment = datetime.fromtimestamp(now, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    first = datetime(year, month, 1, tzinfo=UTC)
    return max(1, int((first - moment).total_seconds() + 0.999))


class QuotaStore:
    """Counters in SQLite. One connection behind a lock; IMMEDIATE transactions make the
    reservation check-and-record atomic even across processes sharing the file."""

    def __init__(self, path: Path, lease_seconds: float = 3600.0) -> None:
        self._lease = lease_seconds
        self._db = Database(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def reserve(
        self, subject: str, limits: Limits, images: int, spend: float, now: float
    ) -> Reservation:
        """Check every limit and hold `images` and `spend` for this call, or raise
        QuotaExceeded naming the limit, the usage and when it resets."""
        with self._db.transaction() as db:
            db.execute("DELETE FROM reservations WHERE expires < ?", (now,))
            usage = self._usage(db, subject, now)
            self._check(subject, limits, usage, images, spend, now, db)
            reservation = Reservation(uuid.uuid4().hex, subject, images, spend)
            db.execute(
                "INSERT INTO reservations VALUES (?,?,?,?,?,?)",
                (reservation.id, subject, day_of(now), images, spend, now + self._lease),
            )
            db.execute(
                "INSERT INTO last_call VALUES (?, ?) ON CONFLICT(subject) DO UPDATE SET at = ?",
                (subject, now, now),
            )
        return reservation

    def _check(
        self,
        subject: str,
        limits: Limits,
        usage: Usage,
        images: int,
        spend: float,
        now: float,
        db: sqlite3.Connection,
    ) -> None:
        if limits.max_concurrent is not None and usage.in_flight >= limits.max_concurrent:
            raise QuotaExceeded(
                "max_concurrent",
                f"{usage.in_flight} of {limits.max_concurrent} calls running",
                None,
            )
        if limits.cooldown_seconds:
            row = db.execute("SELECT at FROM last_call WHERE subject = ?", (subject,)).fetchone()
            if row is not None and now - row[0] < limits.cooldown_seconds:
                wait = limits.cooldown_seconds - (now - row[0])
                raise QuotaExceeded(
                    "cooldown_seconds",
                    f"last call {now - row[0]:.1f} s ago, cooldown {limits.cooldown_seconds:g} s",
                    max(1, int(wait + 0.999)),
                )
        if limits.images_per_day is not None and (
            usage.images_today + images > limits.images_per_day
        ):
            raise QuotaExceeded(
                "images_per_day",
                f"{usage.images_today} of {limits.images_per_day} images used today, "
                f"{images} asked",
                seconds_to_next_day(now),
            )
        if limits.spend_per_day is not None and usage.spend_today + spend > limits.spend_per_day:
            raise QuotaExceeded(
                "spend_per_day",
                f"{usage.spend_today:.4f} of {limits.spend_per_day:g} spent today, "
                f"this call ~{spend:.4f}",
                seconds_to_next_day(now),
            )
        if (
            limits.spend_per_month is not None
            and usage.spend_month + spend > limits.spend_per_month
        ):
            raise QuotaExceeded(
                "spend_per_month",
                f"{usage.spend_month:.4f} of {limits.spend_per_month:g} spent this month, "
                f"this call ~{spend:.4f}",
                seconds_to_next_month(now),
            )

    def commit(self, reservation: Reservation, images: int, spend: float, now: float) -> None:
        """Record what the call really made; the reservation ends."""
        with self._db.transaction() as db:
            db.execute("DELETE FROM reservations WHERE id = ?", (reservation.id,))
            db.execute(
                "INSERT INTO usage_daily (subject, day, images, spend, calls) VALUES (?,?,?,?,1) "
                "ON CONFLICT(subject, day) DO UPDATE SET images = images + excluded.images, "
                "spend = spend + excluded.spend, calls = calls + 1",
                (reservation.subject, day_of(now), images, spend),
            )

    def release(self, reservation: Reservation) -> None:
        """The call failed or was declined: it consumes nothing."""
        with self._db.transaction() as db:
            db.execute("DELETE FROM reservations WHERE id = ?", (reservation.id,))

    def usage(self, subject: str, now: float) -> Usage:
        with self._db.reading() as db:
            return self._usage(db, subject, now)

    def _usage(self, db: sqlite3.Connection, subject: str, now: float) -> Usage:
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
        return Usage(
            images_today=images + held_images,
            spend_today=spend + held_spend,
            spend_month=month_spend + held_month,
            calls_today=calls,
            in_flight=in_flight,
        )

    def reset(self, subject: str, now: float) -> None:
        """Admin: forget today's and this month's usage of `subject` (not running calls)."""
        with self._db.transaction() as db:
            db.execute(
                "DELETE FROM usage_daily WHERE subject = ? AND day LIKE ?",
                (subject, day_of(now)[:7] + "-%"),
            )
            db.execute("DELETE FROM last_call WHERE subject = ?", (subject,))


def reported_cost(usages: Sequence[Mapping[str, object] | None]) -> float | None:
    """What the upstream said a call cost (OpenRouter's usage.cost), if it said so for
    every image. Its number is not trusted to lower a budget: NaN, infinity or a
    negative cost counts as unreported, and the estimate is charged instead."""
    costs = [usage.get("cost") if usage else None for usage in usages]
    numbers = [float(c) for c in costs if isinstance(c, int | float) and not isinstance(c, bool)]
    if not numbers or len(numbers) != len(costs):
        return None
    if not all(math.isfinite(cost) and cost >= 0 for cost in numbers):
        return None
    return sum(numbers)
