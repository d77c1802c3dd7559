"""Usage reports: what was made and spent between two days, summed one way. Pure: the
arithmetic of periods and totals; the figures come from the quota ledger."""

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from imagegate.core.errors import InvalidRequest
from imagegate.storage.interfaces import QuotaLedger, UsageRow

By = Literal["subject", "relay", "day"]
BY: tuple[By, ...] = ("subject", "relay", "day")
UNRECORDED = "(not recorded)"
"""The relay of what was made before relays were counted."""


@dataclass(frozen=True)
class Report:
    since: str
    until: str
    """The first day, and the day after the last (UTC, YYYY-MM-DD)."""
    by: By
    rows: list[UsageRow]

    @property
    def total(self) -> UsageRow:
        return UsageRow(
            "total",
            sum(row.images for row in self.rows),
            round(sum(row.spend for row in self.rows), 6),
            sum(row.calls for row in self.rows),
        )

    def as_dict(self) -> dict[str, object]:
        def line(row: UsageRow) -> dict[str, object]:
            return {
                self.by: row.key,
                "images": row.images,
                "spend": round(row.spend, 6),
                "calls": row.calls,
            }

        return {
            "since": self.since,
            "until": self.until,
            "by": self.by,
            "rows": [line(row) for row in self.rows],
            "total": {k: v for k, v in line(self.total).items() if k != self.by},
        }


def period(since: str, until: str | None, today: date) -> tuple[str, str]:
    """The days of a report: `since` up to (not including) `until`, or up to and
    including today."""
    first = _day(since, "since")
    after = _day(until, "until") if until else today + timedelta(days=1)
    if after <= first:
        raise InvalidRequest("until must be after since")
    return first.isoformat(), after.isoformat()


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be a day as YYYY-MM-DD, not {text[:40]!r}") from None


async def usage_report(
    ledger: QuotaLedger, since: str, until: str | None, by: str, today: date
) -> Report:
    if by not in BY:
        raise InvalidRequest(f"by must be one of: {', '.join(BY)}")
    first, after = period(since, until, today)
    rows = await ledger.report(first, after, by)
    if by == "relay":
        rows = [UsageRow(row.key or UNRECORDED, row.images, row.spend, row.calls) for row in rows]
    return Report(first, after, by, rows)
