"""Jobs in PostgreSQL: one row per generation, ended by one conditional UPDATE.

Each running job names the process that runs it; when that process stops beating
(holders.py), another fails the job, so that no caller waits for it forever.
"""

import json
from typing import Any

from imagegate.core.errors import NotFound
from imagegate.core.ids import JobId, Subject, is_job_id
from imagegate.storage.interfaces import Job, JobPage, JobState
from imagegate.storage.postgres.database import PgDatabase
from imagegate.storage.postgres.paging import newest_first
from imagegate.storage.rows import job_from_row


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


def _changed(status: str) -> bool:
    """Whether an UPDATE's status ('UPDATE n') says it changed one row."""
    return status == "UPDATE 1"


class PgJobLedger:
    def __init__(self, database: PgDatabase, holder: str) -> None:
        self._db = database
        self._holder = holder

    async def create(self, job: Job) -> None:
        await self._db.run(
            lambda db: db.execute(
                "INSERT INTO jobs (id, owner, tool, state, progress, message, request, "
                "holder, created_us, updated_us) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
                job.id,
                job.owner,
                job.tool,
                job.state.value,
                job.progress,
                job.message,
                json.dumps(job.request, sort_keys=True),
                self._holder,
                _us(job.created_at),
                _us(job.updated_at),
            )
        )

    async def progress(
        self, job_id: JobId, progress: float | None, message: str, now: float
    ) -> bool:
        status = await self._db.run(
            lambda db: db.execute(
                "UPDATE jobs SET progress = $2, message = $3, updated_us = $4 "
                "WHERE id = $1 AND state = 'running' AND NOT cancel_requested",
                job_id,
                progress,
                message,
                _us(now),
            )
        )
        return _changed(status)

    async def request_cancel(self, owner: Subject, job_id: JobId) -> bool:
        status = await self._db.run(
            lambda db: db.execute(
                "UPDATE jobs SET cancel_requested = true "
                "WHERE id = $1 AND owner = $2 AND state = 'running'",
                job_id,
                owner,
            )
        )
        return _changed(status)

    async def finish(
        self,
        job_id: JobId,
        state: JobState,
        now: float,
        outcome: dict[str, Any] | None = None,
        error: dict[str, str] | None = None,
    ) -> bool:
        status = await self._db.run(
            lambda db: db.execute(
                "UPDATE jobs SET state = $2, outcome = $3, error = $4, updated_us = $5 "
                "WHERE id = $1 AND state = 'running'",
                job_id,
                state.value,
                None if outcome is None else json.dumps(outcome, sort_keys=True),
                None if error is None else json.dumps(error),
                _us(now),
            )
        )
        return _changed(status)

    async def get(self, owner: Subject, job_id: JobId) -> Job:
        row = await self._db.run(
            lambda db: db.fetchrow("SELECT * FROM jobs WHERE id = $1 AND owner = $2", job_id, owner)
        )
        if row is None:
            raise NotFound(f"job not found: {job_id}")
        return job_from_row(row)

    async def list(self, owner: Subject, limit: int, cursor: str | None) -> JobPage:
        query = "SELECT * FROM jobs WHERE owner = $1"
        rows, next_cursor = await newest_first(self._db, query, [owner], limit, cursor, is_job_id)
        return JobPage([job_from_row(row) for row in rows], next_cursor)

    async def sweep(self, finished_before: float) -> int:
        status = await self._db.run(
            lambda db: db.execute(
                "DELETE FROM jobs WHERE state != 'running' AND updated_us < $1",
                _us(finished_before),
            )
        )
        return int(status.split()[-1])
