"""The fair share of CPU-bound steps: slots go round-robin to the subjects that wait."""

import anyio
import pytest

from imagegate.core.cpu import FairShare, run_cpu


async def grants(share: FairShare, waiters: list[tuple[str, str]]) -> list[str]:
    """Hold the only slot, queue `waiters` (subject, name) in order, then let them run
    one by one: the order in which they got the slot."""
    order: list[str] = []
    queued = 0

    async def step(subject: str, name: str) -> None:
        nonlocal queued
        queued += 1
        async with share.slot(subject):
            order.append(name)

    async with anyio.create_task_group() as tasks, share.slot("holder"):
        for subject, name in waiters:
            tasks.start_soon(step, subject, name)
            await anyio.wait_all_tasks_blocked()
    return order


async def test_one_subjects_backlog_does_not_starve_another() -> None:
    share = FairShare(1)
    waiters = [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1"), ("c", "c1"), ("b", "b2")]
    assert await grants(share, waiters) == ["a1", "b1", "c1", "a2", "b2", "a3"]


async def test_a_cancelled_waiter_leaves_no_slot_behind() -> None:
    share = FairShare(1)

    async def wait_for_a_slot() -> None:
        async with share.slot("b"):
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tasks, share.slot("a"):
        tasks.start_soon(wait_for_a_slot)
        await anyio.wait_all_tasks_blocked()
        tasks.cancel_scope.cancel()
    with anyio.fail_after(1):  # the slot is free again: no waiting
        async with share.slot("c"):
            pass


async def test_steps_run_through_the_share_acting_for_their_subject() -> None:
    share = FairShare(2)
    with share.acting_for("a"):
        assert await run_cpu(sum, [1, 2, 3]) == 6
    assert await run_cpu(max, [4, 5]) == 5  # no share acting: a plain worker thread


def test_a_share_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        FairShare(0)
