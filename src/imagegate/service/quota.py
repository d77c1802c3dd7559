"""Quota arithmetic, pure: which limits apply to a caller, whether a call fits them, when
they reset, and what a call is charged.

Limits come from `[quotas]` (see `config.QuotaSettings`): `default`, then the caller's
groups (the most generous group wins, per limit), then the caller's subject entry (wins
outright). A missing limit is no limit. Counting and reserving is the storage's
`QuotaLedger`, which runs `check_limits` atomically with its reservation.
"""

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from imagegate.access.identity import Identity
from imagegate.config import Limits, QuotaSettings
from imagegate.core.errors import QuotaExceeded
from imagegate.storage.interfaces import Usage

_FIELDS = tuple(Limits.model_fields)
_LESS_IS_MORE = frozenset({"cooldown_seconds"})  # for a cooldown, shorter is more generous


def limits_for(identity: Identity, settings: QuotaSettings) -> Limits:
    """The limits that apply to a caller."""
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


def keep_until(retention_days: float | None, now: float) -> float | None:
    """When an image stored now is deleted by retention, if `[quotas]` says (the
    caller's `retention_days`, resolved as other limits: the subject's, else the most
    generous group's, else the default's); None leaves it to the top-level
    retention_days, read at each sweep, so that setting or changing it applies to the
    images already stored."""
    return None if retention_days is None else now + retention_days * 86_400


def stored_bytes_exceeded(stored: int, limit: int, adding: int = 0) -> QuotaExceeded:
    """The refusal when an owner's images would take more than `max_stored_bytes`."""
    usage = f"{stored} of {limit} bytes stored" + (f", {adding} more made" if adding else "")
    return QuotaExceeded(
        "max_stored_bytes",
        usage,
        None,
        hint="delete images you no longer need (delete_image) to make room",
    )


def check_limits(limits: Limits, usage: Usage, images: int, spend: float, now: float) -> None:
    """Raise QuotaExceeded, naming the limit, the usage and when it resets, if a call
    making `images` and costing `spend` does not fit `limits` on top of `usage`."""
    if limits.max_concurrent is not None and usage.in_flight >= limits.max_concurrent:
        raise QuotaExceeded(
            "max_concurrent",
            f"{usage.in_flight} of {limits.max_concurrent} calls running",
            None,
        )
    if limits.cooldown_seconds and usage.last_call_at is not None:
        since = now - usage.last_call_at
        if since < limits.cooldown_seconds:
            raise QuotaExceeded(
                "cooldown_seconds",
                f"last call {since:.1f} s ago, cooldown {limits.cooldown_seconds:g} s",
                max(1, int(limits.cooldown_seconds - since + 0.999)),
            )
    if limits.images_per_day is not None and (usage.images_today + images > limits.images_per_day):
        raise QuotaExceeded(
            "images_per_day",
            f"{usage.images_today} of {limits.images_per_day} images used today, {images} asked",
            seconds_to_next_day(now),
        )
    if limits.spend_per_day is not None and usage.spend_today + spend > limits.spend_per_day:
        raise QuotaExceeded(
            "spend_per_day",
            f"{usage.spend_today:.4f} of {limits.spend_per_day:g} spent today, "
            f"this call ~{spend:.4f}",
            seconds_to_next_day(now),
        )
    if limits.spend_per_month is not None and usage.spend_month + spend > limits.spend_per_month:
        raise QuotaExceeded(
            "spend_per_month",
            f"{usage.spend_month:.4f} of {limits.spend_per_month:g} spent this month, "
            f"this call ~{spend:.4f}",
            seconds_to_next_month(now),
        )


def seconds_to_next_day(now: float) -> int:
    moment = datetime.fromtimestamp(now, UTC)
    tomorrow = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((tomorrow - moment).total_seconds() + 0.999))


def seconds_to_next_month(now: float) -> int:
    moment = datetime.fromtimestamp(now, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    first = datetime(year, month, 1, tzinfo=UTC)
    return max(1, int((first - moment).total_seconds() + 0.999))


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
