"""Jobs in SQLite: one row per generation, ended by one conditional UPDATE.

Each running job names the process that runs it. When the database opens, the jobs of
processes of this host that are gone (killed, crashed, restarted) are failed, as their
quota reservations are released (quotas.py).
"""

import json
import sqlite3
import time
from typing import Any

from imagegate.core.errors import NotFound
from imagegate.core.ids import JobId, Subject, is_job_id
from imagegate.storage.cursors import decode_cursor, encode_cursor
from imagegate.storage.interfaces import Job, JobPage, JobState
from imagegate.storage.processes import is_gone
from imagegate.storage.rows import job_from_row
from imagegate.storage.rules import ABANDONED
from imagegate.storage.sqlite.database import Database, rows_by_name, run_script
from imagegate.storage.sqlite.paging import AFTER_CURSOR, NEWEST_FIRST

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    tool TEXT NOT NULL,
    state TEXT NOT NULL,
    progress REAL,
    message TEXT NOT NULL,
    request TEXT NOT NULL,
    outcome TEXT,
    error TEXT,
    holder TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created_us DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (holder) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS jobs_by_update ON jobs (updated_us) WHERE state != 'running';
"""


def create(db: sqlite3.Connection) -> None:
    run_script(db, SCHEMA)


def fail_gone(db: sqlite3.Connection) -> None:
    """On open: the running jobs of processes of this host that are gone fail."""
    holders = db.execute("SELECT DISTINCT holder FROM jobs WHERE state = 'running'")
    now_us = int(time.time() * 1_000_000)
    for (holder,) in holders.fetchall():
        if is_gone(holder):
            db.execute(
                "UPDATE jobs SET state = ?, error = ?, updated_us = ? "
                "WHERE holder = ? AND state = 'running'",
                (JobState.FAILED.value, json.dumps(ABANDONED), now_us, holder),
            )


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


class SqliteJobLedger:
    def __init__(self, database: Database, holder: str) -> None:
        self._db = database
        self._holder = holder

    async def create(self, job: Job) -> None:
        row = (
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
        # Not durable, nor are a job's progress and an end other than completed: a
        # power loss takes the job's process with it (the next start fails the job).
        await self._db.write(
            lambda db: db.execute(
                "INSERT INTO jobs (id, owner, tool, state, progress, message, request, "
                "holder, created_us, updated_us) VALUES (?,?,?,?,?,?,?,?,?,?)",
                row,
            ),
            durable=False,
        )

    async def progress(
        self, job_id: JobId, progress: float | None, message: str, now: float
    ) -> bool:
        changed = await self._db.write(
            lambda db: db.execute(
                "UPDATE jobs SET progress = ?, message = ?, updated_us = ? "
                "WHERE id = ? AND state = 'running' AND cancel_requested = 0",
                (progress, message, _us(now), job_id),
            ),
            durable=False,
        )
        return int(changed.rowcount) == 1

    async def request_cancel(self, owner: Subject, job_id: JobId) -> bool:
        changed = await self._db.write(
            lambda db: db.execute(
                "UPDATE jobs SET cancel_requested = 1 "
                "WHERE id = ? AND owner = ? AND state = 'running'",
                (job_id, owner),
            )
        )
        return int(changed.rowcount) == 1

    async def finish(
        self,
        job_id: JobId,
        state: JobState,
        now: float,
        outcome: dict[str, Any] | None = None,
        error: dict[str, str] | None = None,
    ) -> bool:
        values = (
            state.value,
            None if outcome is None else json.dumps(outcome, sort_keys=True),
            None if error is None else json.dumps(error),
            _us(now),
            job_id,
        )

        def finish(db: sqlite3.Connection) -> bool:
            changed = db.execute(
                "UPDATE jobs SET state = ?, outcome = ?, error = ?, updated_us = ? "
                "WHERE id = ? AND state = 'running'",
                values,
            )
            return changed.rowcount == 1

        # A completed job's end is durable: lost, the job would come back failed
        # ("start it again") though its images and their charge were kept.
        return await self._db.write(finish, durable=state is JobState.COMPLETED)

    async def get(self, owner: Subject, job_id: JobId) -> Job:
        rows = await self._db.read(
            lambda db: rows_by_name(
                db, "SELECT * FROM jobs WHERE id = ? AND owner = ?", (job_id, owner)
            ),
            brief=True,
        )
        if not rows:
            raise NotFound(f"job not found: {job_id}")
        return job_from_row(rows[0])

    async def list(self, owner: Subject, limit: int, cursor: str | None) -> JobPage:
        query = "SELECT * FROM jobs WHERE owner = ?"
        args: list[Any] = [owner]
        if cursor:
            created_us, last_id = decode_cursor(cursor, is_job_id)
            query += AFTER_CURSOR
            args += [created_us, created_us, last_id]
        query += NEWEST_FIRST
        args.append(limit + 1)
        rows = await self._db.read(lambda db: rows_by_name(db, query, args))
        jobs = [job_from_row(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor(last["created_us"], last["id"])
        return JobPage(jobs, next_cursor)

    async def sweep(self, finished_before: float) -> int:
        deleted = await self._db.write(
            lambda db: db.execute(
                "DELETE FROM jobs WHERE state != 'running' AND updated_us < ?",
                (_us(finished_before),),
            )
        )
        return int(deleted.rowcount)
