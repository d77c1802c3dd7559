"""Helper process for the crash test: reserves a quota slot and starts a job, then waits
to be killed."""

import sys
from pathlib import Path

import anyio

from imagegate.core.ids import Subject, new_job_id
from imagegate.storage.embedded import open_embedded
from imagegate.storage.interfaces import Job, JobState


async def main() -> None:
    storage = open_embedded(Path(sys.argv[1]), max_blob_bytes=10_000_000)
    now = float(sys.argv[2])
    await storage.quotas.reserve("token:bot", 1, 0.5, now, lambda usage: None)
    job = Job(new_job_id(), Subject("token:bot"), "generate_image", JobState.RUNNING, now, now)
    await storage.jobs.create(job)
    print("RESERVED", job.id, flush=True)
    sys.stdin.read()  # blocks until the test kills us


anyio.run(main)
