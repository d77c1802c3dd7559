import pytest

from imagegate.access.identity import Identity
from imagegate.config import Limits, QuotaSettings
from imagegate.core.errors import QuotaExceeded
from imagegate.core.ids import Subject
from imagegate.service.quota import (
    check_limits,
    limits_for,
    reported_cost,
    seconds_to_next_day,
    seconds_to_next_month,
)
from imagegate.storage.interfaces import Usage

NOON = 1_800_014_400.0  # 2027-01-15T12:00:00Z
BOT = "token:bot"


def settings() -> QuotaSettings:
    return QuotaSettings(
        default=Limits(images_per_day=10, cooldown_seconds=5, spend_per_day=1.0),
        groups={
            "designers": Limits(images_per_day=50, cooldown_seconds=2),
            "vip": Limits(images_per_day=None),
            "night": Limits(max_concurrent=2),
        },
        subjects={"token:bot": Limits(images_per_day=1000, spend_per_day=None)},
    )


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        (
            Identity(Subject("oidc:x")),
            Limits(images_per_day=10, cooldown_seconds=5, spend_per_day=1.0),
        ),
        (
            Identity(Subject("oidc:x"), frozenset({"designers"})),
            Limits(images_per_day=50, cooldown_seconds=2, spend_per_day=1.0),
        ),
        (
            Identity(Subject("oidc:x"), frozenset({"designers", "vip"})),
            Limits(images_per_day=None, cooldown_seconds=2, spend_per_day=1.0),
        ),
        (
            Identity(Subject("oidc:x"), frozenset({"night"})),
            Limits(images_per_day=10, cooldown_seconds=5, spend_per_day=1.0, max_concurrent=2),
        ),
        (
            Identity(Subject(BOT), frozenset({"designers"})),
            Limits(images_per_day=1000, cooldown_seconds=2, spend_per_day=None),
        ),
    ],
)
def test_limits_for(identity: Identity, expected: Limits) -> None:
    assert limits_for(identity, settings()) == expected


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        # Two groups set the same limit: the most generous one wins, whatever the order.
        ({"small", "large"}, Limits(images_per_day=40, cooldown_seconds=1, max_concurrent=4)),
        ({"large", "small"}, Limits(images_per_day=40, cooldown_seconds=1, max_concurrent=4)),
        ({"small"}, Limits(images_per_day=10, cooldown_seconds=5, max_concurrent=1)),
        # A group that sets a limit to none lifts it; one that leaves it out does not.
        ({"small", "unlimited"}, Limits(images_per_day=None, cooldown_seconds=5, max_concurrent=1)),
        ({"small", "silent"}, Limits(images_per_day=10, cooldown_seconds=5, max_concurrent=1)),
    ],
)
def test_two_groups_setting_the_same_limit(groups: set[str], expected: Limits) -> None:
    quotas = QuotaSettings(
        default=Limits(images_per_day=1),
        groups={
            "small": Limits(images_per_day=10, cooldown_seconds=5, max_concurrent=1),
            "large": Limits(images_per_day=40, cooldown_seconds=1, max_concurrent=4),
            "unlimited": Limits(images_per_day=None),
            "silent": Limits(),
        },
    )
    assert limits_for(Identity(Subject("oidc:x"), frozenset(groups)), quotas) == expected


@pytest.mark.parametrize(
    ("now", "day", "month"),
    [
        (NOON, 12 * 3600, (31 - 15) * 86400 + 12 * 3600),  # 2027-01-15T12:00Z
        (1_830_254_400.0, 12 * 3600, 12 * 3600),  # 2027-12-31T12:00Z: into January
        (1_830_297_599.0, 1, 1),  # 2027-12-31T23:59:59Z
        (1_830_297_600.0, 86400, 31 * 86400),  # 2028-01-01T00:00Z
        (1_835_481_599.0, 1, 1),  # 2028-02-29T23:59:59Z (a leap day) into March
    ],
)
def test_reset_times(now: float, day: int, month: int) -> None:
    assert seconds_to_next_day(now) == day
    assert seconds_to_next_month(now) == month


def usage(
    images_today: int = 0, spend_today: float = 0.0, spend_month: float = 0.0, in_flight: int = 0
) -> Usage:
    return Usage(images_today, spend_today, spend_month, 0, in_flight)


@pytest.mark.parametrize(
    ("limits", "current", "images", "spend", "refused", "retry_after"),
    [
        (Limits(), usage(images_today=10**6, spend_today=10**6), 10, 100.0, None, None),
        (Limits(max_concurrent=2), usage(in_flight=1), 1, 0.0, None, None),
        (Limits(max_concurrent=2), usage(in_flight=2), 1, 0.0, "max_concurrent", None),
        (Limits(cooldown_seconds=10), Usage(0, 0, 0, 0, 0, NOON - 4), 1, 0, "cooldown_seconds", 6),
        (Limits(cooldown_seconds=10), Usage(0, 0, 0, 0, 0, NOON - 10), 1, 0.0, None, None),
        (Limits(cooldown_seconds=10), usage(), 1, 0.0, None, None),  # never called before
        (Limits(images_per_day=4), usage(images_today=2), 2, 0.0, None, None),
        (Limits(images_per_day=4), usage(images_today=2), 3, 0.0, "images_per_day", 43200),
        (Limits(spend_per_day=1.0), usage(spend_today=0.5), 1, 0.5, None, None),
        (Limits(spend_per_day=1.0), usage(spend_today=0.5), 1, 0.6, "spend_per_day", 43200),
        (Limits(spend_per_month=5.0), usage(spend_month=4.5), 1, 0.6, "spend_per_month", 1425600),
        (Limits(spend_per_month=5.0), usage(spend_month=4.5), 1, 0.5, None, None),
    ],
)
def test_check_limits(
    limits: Limits,
    current: Usage,
    images: int,
    spend: float,
    refused: str | None,
    retry_after: int | None,
) -> None:
    if refused is None:
        check_limits(limits, current, images, spend, NOON)
        return
    with pytest.raises(QuotaExceeded) as error:
        check_limits(limits, current, images, spend, NOON)
    assert error.value.limit == refused
    assert error.value.retry_after == retry_after


@pytest.mark.parametrize(
    ("usages", "expected"),
    [
        ([{"cost": 0.04}, {"cost": 0.06, "total_tokens": 9}], 0.1),
        ([{"total_tokens": 9}], None),  # no cost reported: the estimate is charged
        ([None, {"cost": 0.04}], None),  # one image unreported: not a partial sum
        ([{"cost": -5.0}], None),  # a negative cost would give budget back
        ([{"cost": float("nan")}], None),
        ([{"cost": float("inf")}], None),
        ([{"cost": True}], None),
        ([{"cost": "0.04"}], None),
    ],
)
def test_reported_cost_is_only_taken_when_sane(
    usages: list[dict[str, object] | None], expected: float | None
) -> None:
    assert reported_cost(usages) == (pytest.approx(expected) if expected is not None else None)
