"""Jobs: generations that outlive the call that started them.

A job runs in the server's own task group, not in the request that started it, so a
client that hangs up (a timeout, a closed laptop) does not stop it: the user may
already be paying for it. Only a cancel stops it (`cancel`): the work is cancelled,
which aborts the upstream request and releases its quota reservation (service.images
owns that), and the job is recorded as cancelled.

Every job is a row of the job ledger, so that any process sharing the database can
answer for it: state, progress (written every few seconds), and at the end the
outcome or the error, written once, by the process that ran it. Another process
cancels by request; the running one learns of it when it next writes progress, so a
completion that comes first is recorded as what happened. Callers wait for a job
here (`wait`): with progress as it happens for a job of this process, by polling the
ledger for another one's. One owner may have only so many jobs running here.
"""

import asyncio
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
from anyio.abc import TaskGroup

from imagegate.core.clock import Clock
from imagegate.core.cpu import acting_for
from imagegate.core.errors import (
    ImagegateError,
    InvalidRequest,
    QuotaExceeded,
    StorageError,
    recorded,
    where,
)
from imagegate.core.ids import JobId, Subject, new_job_id, parse_job_id
from imagegate.core.metrics import Metrics
from imagegate.relays.base import ProgressFn
from imagegate.storage.interfaces import Job, JobLedger, JobPage, JobState

log = logging.getLogger("imagegate.jobs")

Work = Callable[[ProgressFn], Awaitable[dict[str, Any]]]
"""What a job does: given where to report progress, make something and describe it
(JSON). Cancelling it must leave nothing behind but what it had finished."""

Partial = Callable[[], dict[str, Any] | None]
"""What a job had finished when it was stopped (JSON), or None: kept as its outcome."""

STOPPED = {
    "kind": "Interrupted",
    "message": "imagegate stopped while this job ran; it did not finish and its quota "
    "reservation was released; start it again",
}
CANCELLED_MESSAGE = (
    "cancelled; nothing more is made or charged for it (what it had finished, if "
    "anything, is in asset_ids)"
)
FAILED_UNEXPECTEDLY = {
    "kind": "ImagegateError",
    "message": "internal error: the job failed; the server's log says where",
}


@dataclass
class _Live:
    """A job running in this process: its latest state, and the means to stop it."""

    job: Job
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    saving: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    changed: anyio.Event = field(default_factory=anyio.Event)
    cancelled_by_owner: bool = False
    partial: Partial | None = None
    reports: deque[tuple[float | None, str]] = field(default_factory=lambda: deque(maxlen=256))
    """The latest reports of progress, in order, for the callers following the job."""
    reported: int = 0
    """How many reports there have been."""

    def update(self, job: Job) -> None:
        self.job = job
        self.changed.set()
        self.changed = anyio.Event()


class JobRunner:
    def __init__(
        self,
        ledger: JobLedger,
        clock: Clock,
        retention_seconds: float,
        max_running_per_owner: int = 16,
        save_progress_every: float = 2.0,
        poll_seconds: float = 0.5,
        cancel_wait_seconds: float = 10.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._ledger = ledger
        self._clock = clock
        self._retention = retention_seconds
        self._max_running = max_running_per_owner
        self._cancel_wait = cancel_wait_seconds
        self._save_every = save_progress_every
        self._poll_every = poll_seconds
        self._live: dict[JobId, _Live] = {}
        self._group: TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Where jobs run, for as long as the server serves. Leaving it stops the jobs
        still running (recorded as failed: the server stopped, not their owner)."""
        # The jobs' task group lives in a task of its own: a server's lifespan may be
        # left in another cancel scope (or task) than the one it was entered in.
        ready = asyncio.Event()
        stop = asyncio.Event()

        async def host() -> None:
            try:
                async with anyio.create_task_group() as group:
                    self._group = group
                    group.start_soon(self._sweep_forever)
                    ready.set()
                    await stop.wait()
                    group.cancel_scope.cancel()
            finally:
                self._group = None
                ready.set()

        hosting = asyncio.create_task(host(), name="imagegate-jobs")
        await ready.wait()
        try:
            yield
        finally:
            stop.set()
            with anyio.CancelScope(shield=True):
                await hosting

    def check_room(self, owner: Subject) -> None:
        """Refuse a new job to an owner who has as many running in this process as
        allowed: a call that does not wait for its job holds no connection, so
        without this one caller could start jobs without end."""
        running = sum(
            1 for live in self._live.values() if live.job.owner == owner and not live.job.finished
        )
        if running >= self._max_running:
            raise QuotaExceeded(
                "max_running_jobs", f"{running} of {self._max_running} running", None
            )

    async def start(
        self,
        owner: Subject,
        tool: str,
        request: dict[str, Any],
        work: Work,
        partial: Partial | None = None,
    ) -> Job:
        """Record a new running job and start `work` in the background; if it stops
        before it ends, `partial` says what it had finished."""
        self.check_room(owner)
        group = self._group
        if group is None:
            raise StorageError("jobs cannot start: the server is stopping")
        now = self._clock.now()
        job = Job(new_job_id(), owner, tool, JobState.RUNNING, now, now, request=request)
        live = _Live(job, partial=partial)
        # Counted before the ledger's await: starts that check meanwhile must see it.
        self._live[job.id] = live
        try:
            with acting_for(owner):
                await self._ledger.create(job)
        except BaseException:
            del self._live[job.id]
            raise
        try:
            group.start_soon(self._run, live, work)
        except RuntimeError:  # the group closed meanwhile: the job never ran
            del self._live[job.id]
            with anyio.CancelScope(shield=True):
                await self._ledger.finish(job.id, JobState.FAILED, now, error=STOPPED)
            raise StorageError("jobs cannot start: the server is stopping") from None
        group.start_soon(self._keep_saved, live)
        return job

    async def _run(self, live: _Live, work: Work) -> None:
        # The job's turns (the database, CPU-bound steps) come round-robin by owner.
        with self._metrics.job_running(), acting_for(live.job.owner):
            await self._run_to_end(live, work)

    async def _run_to_end(self, live: _Live, work: Work) -> None:
        job_id = live.job.id
        outcome: dict[str, Any] | None = None
        error: dict[str, str] | None = None
        try:
            with live.scope:
                outcome = await work(self._reporter(live))
        except ImagegateError as err:
            error = recorded(err)
            if isinstance(err, QuotaExceeded):  # here, not by each call that reads it
                self._metrics.quota_refused(err.limit)
        except Exception as err:
            log.error("job %s failed: %s", job_id, where(err))
            error = FAILED_UNEXPECTEDLY
        finally:
            with anyio.CancelScope(shield=True):
                await self._end(live, outcome, error)

    async def _keep_saved(self, live: _Live) -> None:
        """Write a running job's progress to the ledger every few seconds, for other
        processes to read; and stop it when one of them has cancelled it there."""
        with live.saving:
            await self._save_while_running(live)

    async def _save_while_running(self, live: _Live) -> None:
        while True:
            await anyio.sleep(self._save_every)
            job = live.job
            if job.finished:
                return
            try:
                running = await self._ledger.progress(
                    job.id, job.progress, job.message, job.updated_at
                )
            except ImagegateError as err:  # the job goes on; the next write may work
                log.warning("job %s: could not save its progress: %s", job.id, err)
                continue
            if not running:  # another process asked to cancel it
                live.cancelled_by_owner = True
                live.scope.cancel()
                return

    async def _end(
        self, live: _Live, outcome: dict[str, Any] | None, error: dict[str, str] | None
    ) -> None:
        if outcome is not None:
            state, message = JobState.COMPLETED, "done"
        else:
            outcome = live.partial() if live.partial is not None else None
            if error is not None:
                state, message = JobState.FAILED, error["message"]
            elif live.cancelled_by_owner:
                state, message = JobState.CANCELLED, CANCELLED_MESSAGE
            else:  # cancelled by the server stopping
                state, message, error = JobState.FAILED, STOPPED["message"], STOPPED
        now = self._clock.now()
        ended = replace(
            live.job, state=state, message=message, outcome=outcome, error=error, updated_at=now
        )
        live.saving.cancel()
        recorded_end = await self._record_end(ended)
        if recorded_end is not None:
            ended = recorded_end
            del self._live[live.job.id]
        # Not recorded: this process keeps answering with the end it saw (until it
        # stops; at the next start the job is failed as an interrupted one).
        live.update(ended)

    async def _record_end(self, ended: Job, attempts: int = 3) -> Job | None:
        """Write a job's end to the ledger: the job as it is recorded, or None if the
        ledger can't be written."""
        for attempt in range(attempts):
            try:
                if await self._ledger.finish(
                    ended.id, ended.state, ended.updated_at, ended.outcome, ended.error
                ):
                    return ended
                return await self._ledger.get(ended.owner, ended.id)  # ended elsewhere
            except ImagegateError as err:
                log.error("job %s: could not record its end: %s", ended.id, err)
                if attempt + 1 < attempts:
                    await anyio.sleep(1.0)
        return None

    def _reporter(self, live: _Live) -> ProgressFn:
        async def report(fraction: float | None, message: str) -> None:
            percent = None if fraction is None else round(min(max(fraction, 0.0), 1.0) * 100, 1)
            now = self._clock.now()
            live.reports.append((percent, message))
            live.reported += 1
            live.update(replace(live.job, progress=percent, message=message, updated_at=now))

        return report

    async def get(self, owner: Subject, job_id: str) -> Job:
        """One of the owner's jobs; another's answers as missing."""
        parsed = parse_job_id(job_id)
        live = self._live.get(parsed)
        if live is not None and live.job.owner == owner:
            return live.job
        return await self._ledger.get(owner, parsed)

    async def wait(
        self, owner: Subject, job_id: str, seconds: float, heartbeat: float, seen: ProgressFn
    ) -> Job:
        """The job once it has ended, or as it is after `seconds`. While waiting, `seen`
        hears of every report of progress, and every `heartbeat` seconds at the least
        (with the progress so far), so that a client knows the call is alive."""
        job = await self.get(owner, job_id)
        live = self._live.get(job.id)
        if live is not None:
            with anyio.move_on_after(seconds):
                await self._follow(live, heartbeat, seen)
            return live.job
        # Another process runs it (or ran it): read the ledger until it ends.
        with anyio.move_on_after(seconds):
            while not job.finished:
                job = await self._changed(job, heartbeat)
                if not job.finished:
                    await seen(None if job.progress is None else job.progress / 100, job.message)
        return job

    @staticmethod
    async def _follow(live: _Live, heartbeat: float, seen: ProgressFn) -> None:
        """Pass on each report of a job of this process as it comes."""
        passed = live.reported
        while not live.job.finished:
            with anyio.move_on_after(heartbeat):
                await live.changed.wait()
            if live.job.finished:
                return
            fresh = min(live.reported - passed, len(live.reports))
            reports = (
                list(live.reports)[-fresh:] if fresh else [(live.job.progress, live.job.message)]
            )
            passed = live.reported
            for percent, message in reports:
                await seen(None if percent is None else percent / 100, message)

    async def _changed(self, job: Job, heartbeat: float) -> Job:
        """The job as the ledger has it once it changed, or after `heartbeat` seconds."""
        deadline = anyio.current_time() + heartbeat
        while True:
            await anyio.sleep(max(min(self._poll_every, deadline - anyio.current_time()), 0))
            latest = await self._ledger.get(job.owner, job.id)
            if latest != job or anyio.current_time() >= deadline:
                return latest

    async def cancel(self, owner: Subject, job_id: str) -> Job:
        """Stop one of the owner's running jobs; a finished job is left as it is."""
        job = await self.get(owner, job_id)
        live = self._live.get(job.id)
        if live is not None:
            if not live.job.finished:
                live.cancelled_by_owner = True
                live.scope.cancel()
                with anyio.CancelScope(shield=True):
                    while not live.job.finished:  # its reservation is released by then
                        await live.changed.wait()
            return live.job
        if job.finished or not await self._ledger.request_cancel(owner, job.id):
            return await self._ledger.get(owner, job.id)
        # Another process runs it (sharing the database): it learns of the request
        # within `save_progress_every` and stops the job; wait for that, a while.
        with anyio.move_on_after(self._cancel_wait):
            while not job.finished:
                job = await self._changed(job, self._cancel_wait)
        return job

    async def list(self, owner: Subject, limit: int, cursor: str | None) -> JobPage:
        page = await self._ledger.list(owner, limit, cursor)
        jobs = [self._live[j.id].job if j.id in self._live else j for j in page.jobs]
        return JobPage(jobs, page.next_cursor)

    async def _sweep_forever(self) -> None:
        every = min(max(self._retention / 4, 1.0), 600.0)
        while True:
            try:
                await self._ledger.sweep(self._clock.now() - self._retention)
            except ImagegateError as err:
                log.warning("could not forget old jobs: %s", err)
            await anyio.sleep(every)


def wait_bound(asked: float | None, limit: float) -> float:
    """How long a call waits: what the caller asked, within the server's limit."""
    if asked is None:
        return limit
    if math.isnan(asked) or asked < 0:
        raise InvalidRequest(f"wait_seconds must be between 0 and {limit:g}")
    return min(asked, limit)
