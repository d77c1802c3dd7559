"""The job runner on the embedded ledger: each way a job ends, exactly once; waiting with
progress; a cancel from another process; the bound of a wait."""

import asyncio
import math
from typing import Any

import anyio
import pytest

from imagegate.core.cpu import acting_subject
from imagegate.core.errors import InvalidRequest, NotFound, QuotaExceeded, RelayError, StorageError
from imagegate.core.ids import Subject
from imagegate.core.metrics import Metrics
from imagegate.relays.base import ProgressFn
from imagegate.service.jobs import JobRunner, wait_bound
from imagegate.storage.interfaces import JobLedger, JobState, Storage
from tests.conftest import ManualClock

ALICE = Subject("token:alice")
BOB = Subject("token:bob")


def runner(storage: Storage, clock: ManualClock, **options: Any) -> JobRunner:
    return JobRunner(storage.jobs, clock, retention_seconds=3600, **options)


class Work:
    """Work that reports progress, then waits until released, and says how it ended."""

    def __init__(self, result: dict[str, Any] | BaseException | None = None) -> None:
        self.release = anyio.Event()
        self.started = anyio.Event()
        self.result = {"assets": ["img_x"]} if result is None else result
        self.cancelled = False
        self.stopped = anyio.Event()
        self.acting_for = ""

    async def __call__(self, progress: ProgressFn) -> dict[str, Any]:
        self.acting_for = acting_subject()
        await progress(0.25, "drawing")
        self.started.set()
        try:
            await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            self.stopped.set()
            raise
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


async def noted(fraction: float | None, message: str) -> None:
    return None


async def test_a_job_that_completes_keeps_its_outcome(storage: Storage, clock: ManualClock) -> None:
    jobs = runner(storage, clock)
    async with jobs.running():
        work = Work()
        job = await jobs.start(ALICE, "generate_image", {"thumbnail": True}, work)
        await work.started.wait()
        seen = await jobs.get(ALICE, job.id)
        assert (seen.state, seen.progress, seen.message) == (JobState.RUNNING, 25.0, "drawing")
        work.release.set()
        done = await jobs.wait(ALICE, job.id, 5, 5, noted)
    assert done.state is JobState.COMPLETED
    stored = await storage.jobs.get(ALICE, job.id)
    assert (stored.state, stored.outcome, stored.request) == (
        JobState.COMPLETED,
        {"assets": ["img_x"]},
        {"thumbnail": True},
    )


@pytest.mark.parametrize(
    ("raised", "error"),
    [
        (RelayError("upstream timed out"), {"kind": "RelayError", "message": "upstream timed out"}),
        (
            ValueError("secret prompt text"),
            {
                "kind": "ImagegateError",
                "message": "internal error: the job failed; the server's log says where",
            },
        ),
    ],
)
async def test_a_job_that_fails_keeps_a_message_fit_for_its_caller(
    storage: Storage,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
    raised: Exception,
    error: dict[str, str],
) -> None:
    jobs = runner(storage, clock)
    async with jobs.running():
        work = Work(raised)
        job = await jobs.start(ALICE, "generate_image", {}, work)
        work.release.set()
        done = await jobs.wait(ALICE, job.id, 5, 5, noted)
    assert (done.state, done.error) == (JobState.FAILED, error)
    assert (await storage.jobs.get(ALICE, job.id)).error == error
    assert "secret prompt text" not in caplog.text


async def test_a_cancel_stops_the_work_and_ends_the_job_once(
    storage: Storage, clock: ManualClock
) -> None:
    jobs = runner(storage, clock)
    async with jobs.running():
        work = Work()
        job = await jobs.start(ALICE, "generate_image", {}, work)
        await work.started.wait()
        with pytest.raises(NotFound):
            await jobs.cancel(BOB, job.id)  # not bob's to cancel
        cancelled = await jobs.cancel(ALICE, job.id)
        assert work.cancelled
        assert cancelled.state is JobState.CANCELLED
        again = await jobs.cancel(ALICE, job.id)  # a finished job stays as it ended
    assert again.state is JobState.CANCELLED
    assert (await storage.jobs.get(ALICE, job.id)).state is JobState.CANCELLED


async def test_a_cancel_recorded_by_another_process_stops_the_work(
    storage: Storage, clock: ManualClock
) -> None:
    jobs = runner(storage, clock, save_progress_every=0.05)
    async with jobs.running():
        work = Work()
        job = await jobs.start(ALICE, "generate_image", {}, work)
        await work.started.wait()
        # Another process shares the database: its cancel is all it can do.
        elsewhere = runner(storage, clock)
        assert (await elsewhere.cancel(ALICE, job.id)).state is JobState.CANCELLED
        with anyio.fail_after(5):
            await work.stopped.wait()
        done = await jobs.wait(ALICE, job.id, 5, 5, noted)
    assert done.state is JobState.CANCELLED


async def test_leaving_the_runner_fails_the_jobs_it_still_runs(
    storage: Storage, clock: ManualClock
) -> None:
    jobs = runner(storage, clock)
    async with jobs.running():
        work = Work()
        job = await jobs.start(ALICE, "generate_image", {}, work)
        await work.started.wait()
    stored = await storage.jobs.get(ALICE, job.id)
    assert stored.state is JobState.FAILED
    assert stored.error is not None
    assert "imagegate stopped" in stored.error["message"]
    assert work.cancelled


async def test_a_wait_passes_on_every_report_and_a_heartbeat(
    storage: Storage, clock: ManualClock
) -> None:
    jobs = runner(storage, clock)
    seen: list[tuple[float | None, str]] = []

    async def record(fraction: float | None, message: str) -> None:
        seen.append((fraction, message))

    reports: list[ProgressFn] = []

    async def work(progress: ProgressFn) -> dict[str, Any]:
        reports.append(progress)
        await anyio.sleep(10)
        return {}

    async with jobs.running():
        job = await jobs.start(ALICE, "generate_image", {}, work)

        async def report() -> None:
            await anyio.sleep(0.05)
            await reports[0](0.1, "one")
            await reports[0](0.2, "two")  # in the same instant: both are passed on

        async with anyio.create_task_group() as group:
            group.start_soon(report)
            last = await jobs.wait(ALICE, job.id, 0.5, 0.15, record)
        await jobs.cancel(ALICE, job.id)
    assert last.state is JobState.RUNNING
    assert seen[:2] == [(0.1, "one"), (0.2, "two")]
    assert len(seen) >= 3  # then heartbeats with the progress so far
    assert set(seen[2:]) == {(0.2, "two")}


async def test_a_job_of_another_process_is_waited_for_through_the_ledger(
    storage: Storage, clock: ManualClock
) -> None:
    here = runner(storage, clock)
    there = runner(storage, clock, poll_seconds=0.02)
    async with here.running(), there.running():
        work = Work()
        job = await here.start(ALICE, "generate_image", {}, work)
        await work.started.wait()

        async def finish_soon() -> None:
            await anyio.sleep(0.1)
            work.release.set()

        async with anyio.create_task_group() as group:
            group.start_soon(finish_soon)
            done = await there.wait(ALICE, job.id, 5, 1, noted)
    assert done.state is JobState.COMPLETED
    assert done.outcome == {"assets": ["img_x"]}


async def test_finished_jobs_are_forgotten_after_the_retention(
    storage: Storage, clock: ManualClock
) -> None:
    jobs = JobRunner(storage.jobs, clock, retention_seconds=60)
    async with jobs.running():
        work = Work()
        job = await jobs.start(ALICE, "generate_image", {}, work)
        work.release.set()
        await jobs.wait(ALICE, job.id, 5, 5, noted)
    clock.advance(61)
    async with jobs.running():  # a sweep runs as the runner starts
        await anyio.sleep(0.05)
    with pytest.raises(NotFound):
        await jobs.get(ALICE, job.id)


class FlakyLedger:
    """The embedded ledger, but progress can't be written (a busy or full disk)."""

    def __init__(self, ledger: JobLedger) -> None:
        self._ledger = ledger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    async def progress(self, *args: Any) -> bool:
        raise StorageError("the database failed: disk I/O error")


async def test_a_failed_progress_write_stops_neither_the_job_nor_the_runner(
    storage: Storage, clock: ManualClock
) -> None:
    jobs = JobRunner(FlakyLedger(storage.jobs), clock, 3600, save_progress_every=0.01)
    async with jobs.running():
        work = Work()
        job = await jobs.start(ALICE, "generate_image", {}, work)
        await anyio.sleep(0.1)  # several failed writes
        work.release.set()
        assert (await jobs.wait(ALICE, job.id, 5, 5, noted)).state is JobState.COMPLETED
        after = Work()
        second = await jobs.start(ALICE, "generate_image", {}, after)
        after.release.set()
        assert (await jobs.wait(ALICE, second.id, 5, 5, noted)).state is JobState.COMPLETED


async def test_a_completion_that_beats_a_cancel_from_elsewhere_is_what_is_recorded(
    storage: Storage, clock: ManualClock
) -> None:
    """Another process asks to cancel; the job finishes before its process notices:
    its images exist, so the job says completed (nothing is hidden as "cancelled")."""
    jobs = runner(storage, clock, save_progress_every=60)
    async with jobs.running():
        work = Work()
        job = await jobs.start(ALICE, "generate_image", {}, work)
        await work.started.wait()
        elsewhere = runner(storage, clock, cancel_wait_seconds=0.1, poll_seconds=0.02)
        assert (await elsewhere.cancel(ALICE, job.id)).state is JobState.RUNNING
        work.release.set()
        done = await jobs.wait(ALICE, job.id, 5, 5, noted)
    assert not work.cancelled
    assert done.state is JobState.COMPLETED
    stored = await storage.jobs.get(ALICE, job.id)
    assert (stored.state, stored.outcome) == (JobState.COMPLETED, {"assets": ["img_x"]})


async def test_one_owner_may_run_only_so_many_jobs(storage: Storage, clock: ManualClock) -> None:
    jobs = runner(storage, clock, max_running_per_owner=2)
    async with jobs.running():
        works = [Work() for _ in range(3)]
        first = await jobs.start(ALICE, "generate_image", {}, works[0])
        await jobs.start(ALICE, "generate_image", {}, works[1])
        with pytest.raises(QuotaExceeded, match="max_running_jobs"):
            await jobs.start(ALICE, "generate_image", {}, works[2])
        await jobs.start(BOB, "generate_image", {}, works[2])  # each owner counts alone
        works[0].release.set()
        await jobs.wait(ALICE, first.id, 5, 5, noted)
        jobs.check_room(ALICE)  # one ended: room again
        for work in works:
            work.release.set()


async def test_a_job_acts_for_its_owner(storage: Storage, clock: ManualClock) -> None:
    """Its database turns and CPU steps are then taken among its owner's."""
    jobs = runner(storage, clock)
    async with jobs.running():
        work = Work()
        job = await jobs.start(ALICE, "generate_image", {}, work)
        await work.started.wait()
        work.release.set()
        await jobs.wait(ALICE, job.id, 5, 5, noted)
    assert work.acting_for == ALICE


async def test_starts_made_at_once_cannot_run_more_jobs_than_allowed(
    storage: Storage, clock: ManualClock
) -> None:
    """Each start awaits the ledger: the ones waiting there must already be counted."""
    jobs = runner(storage, clock, max_running_per_owner=2)
    async with jobs.running():
        works = [Work() for _ in range(6)]
        started = await asyncio.gather(
            *(jobs.start(ALICE, "generate_image", {}, work) for work in works),
            return_exceptions=True,
        )
        refused = [s for s in started if isinstance(s, QuotaExceeded)]
        assert (len(started) - len(refused), len(refused)) == (2, 4)
        for work in works:
            work.release.set()


@pytest.mark.parametrize(
    ("asked", "bound"),
    [(None, 40.0), (0, 0.0), (5, 5.0), (40, 40.0), (3600, 40.0)],
)
def test_wait_bound(asked: float | None, bound: float) -> None:
    assert wait_bound(asked, 40.0) == bound


@pytest.mark.parametrize("asked", [-1.0, math.nan])
def test_wait_bound_refuses_nonsense(asked: float) -> None:
    with pytest.raises(InvalidRequest, match="wait_seconds must be between 0 and 40"):
        wait_bound(asked, 40.0)


async def test_running_jobs_and_their_quota_refusals_are_counted_once(
    storage: Storage, clock: ManualClock
) -> None:
    metrics = Metrics()
    jobs = runner(storage, clock, metrics=metrics)

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    async with jobs.running():
        work = Work(QuotaExceeded("max_stored_bytes", "full", None))
        job = await jobs.start(ALICE, "generate_image", {}, work)
        await work.started.wait()
        assert sample("imagegate_jobs_running") == 1
        work.release.set()
        for _ in range(2):  # read twice, refused once
            await jobs.wait(ALICE, job.id, 5, 5, noted)
    assert sample("imagegate_jobs_running") == 0
    assert sample("imagegate_quota_refusals_total", limit="max_stored_bytes") == 1
