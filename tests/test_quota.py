import threading
from pathlib import Path

import pytest

from imagegate.auth.identity import Identity
from imagegate.errors import QuotaExceeded
from imagegate.ids import Subject
from imagegate.quota import (
    Limits,
    QuotaSettings,
    QuotaStore,
    limits_for,
    reported_cost,
    seconds_to_next_day,
    seconds_to_next_month,
)

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


def test_reset_times() -> None:
    assert seconds_to_next_day(NOON) == 12 * 3600
    assert seconds_to_next_month(NOON) == (31 - 15) * 86400 + 12 * 3600


@pytest.fixture
def store(tmp_path: Path) -> QuotaStore:
    return QuotaStore(tmp_path / "q.sqlite3")


def test_images_per_day_and_reset_at_midnight(store: QuotaStore) -> None:
    limits = Limits(images_per_day=3)
    reservation = store.reserve(BOT, limits, 2, 0.0, NOON)
    store.commit(reservation, 2, 0.0, NOON)
    with pytest.raises(QuotaExceeded) as refused:
        store.reserve(BOT, limits, 2, 0.0, NOON + 1)
    assert refused.value.limit == "images_per_day"
    assert refused.value.retry_after == 12 * 3600 - 1
    assert "2 of 3 images used today, 2 asked" in str(refused.value)
    store.commit(store.reserve(BOT, limits, 1, 0.0, NOON + 2), 1, 0.0, NOON + 2)
    next_day = NOON + 12 * 3600
    assert store.usage(BOT, next_day).images_today == 0
    store.reserve(BOT, limits, 3, 0.0, next_day)


def test_failed_or_declined_calls_consume_nothing(store: QuotaStore) -> None:
    limits = Limits(images_per_day=1)
    for _ in range(5):
        store.release(store.reserve(BOT, limits, 1, 0.0, NOON))
    assert store.usage(BOT, NOON).images_today == 0
    store.reserve(BOT, limits, 1, 0.0, NOON)


def test_cooldown(store: QuotaStore) -> None:
    limits = Limits(cooldown_seconds=10)
    store.release(store.reserve(BOT, limits, 1, 0.0, NOON))
    with pytest.raises(QuotaExceeded, match="cooldown_seconds") as refused:
        store.reserve(BOT, limits, 1, 0.0, NOON + 3)
    assert refused.value.retry_after == 7
    store.reserve(BOT, limits, 1, 0.0, NOON + 10)


def test_spend_per_day_and_month(store: QuotaStore) -> None:
    limits = Limits(spend_per_day=0.5, spend_per_month=0.6)
    store.commit(store.reserve(BOT, limits, 1, 0.4, NOON), 1, 0.4, NOON)
    with pytest.raises(QuotaExceeded, match="spend_per_day"):
        store.reserve(BOT, limits, 1, 0.2, NOON)
    tomorrow = NOON + 86400
    with pytest.raises(QuotaExceeded, match="spend_per_month") as refused:
        store.reserve(BOT, limits, 1, 0.3, tomorrow)
    assert refused.value.retry_after == seconds_to_next_month(tomorrow)


def test_concurrency_limit_and_lease(store: QuotaStore) -> None:
    limits = Limits(max_concurrent=1)
    store.reserve(BOT, limits, 1, 0.0, NOON)
    with pytest.raises(QuotaExceeded, match="1 of 1 calls running") as refused:
        store.reserve(BOT, limits, 1, 0.0, NOON + 1)
    assert refused.value.retry_after is None
    # A crashed process's reservation expires with its lease.
    store.reserve(BOT, limits, 1, 0.0, NOON + 3601)


def test_many_threads_race_for_the_last_slot(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    setup = QuotaStore(path)
    setup.commit(setup.reserve(BOT, Limits(), 9, 0.0, NOON), 9, 0.0, NOON)
    stores = [QuotaStore(path) for _ in range(4)]  # separate connections, like replicas
    won: list[int] = []
    refused: list[int] = []
    barrier = threading.Barrier(16)

    def attempt(index: int) -> None:
        barrier.wait()
        try:
            stores[index % 4].reserve(BOT, Limits(images_per_day=10), 1, 0.0, NOON)
            won.append(index)
        except QuotaExceeded:
            refused.append(index)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    assert len(refused) == 15


def test_counters_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    first = QuotaStore(path)
    first.commit(first.reserve(BOT, Limits(), 4, 0.25, NOON), 4, 0.25, NOON)
    first.close()
    usage = QuotaStore(path).usage(BOT, NOON)
    assert (usage.images_today, usage.spend_today, usage.calls_today) == (4, 0.25, 1)


def test_admin_reset(store: QuotaStore) -> None:
    store.commit(store.reserve(BOT, Limits(), 4, 1.0, NOON), 4, 1.0, NOON)
    store.reset(BOT, NOON)
    usage = store.usage(BOT, NOON)
    assert (usage.images_today, usage.spend_month) == (0, 0)


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
