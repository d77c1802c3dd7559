"""Jobs over MCP: every generation and edit runs as a job (service.jobs).

The call that starts one waits for it a bounded time (`sync_wait_seconds`, or less if
the caller asks) with progress at least every few seconds, then answers with the images
or, when they are not ready, with a normal result saying "running", the job id and what
to do next. `get_job` waits again the same way; a finished job's result is exactly what
the starting call would have returned, with fresh links. A task-augmented call (MCP
tasks, mcp.tasks) answers at once with the job as its task.

A client that hangs up does not stop its job; a cancel does: `notifications/cancelled`
for the starting call (handshake era), `tasks/cancel`, or `cancel_job`. In the
2026-07-28 era a call ends by closing its stream, which looks exactly like a dropped
connection, so it leaves the job running: those clients cancel with `tasks/cancel` or
`cancel_job`.
"""

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import anyio
from fastmcp import Context
from fastmcp.tools import ToolResult

from imagegate.access.policy import Caller
from imagegate.core.errors import ImagegateError, NotFound, from_record
from imagegate.mcp.elicit import Confirmer
from imagegate.mcp.results import Failure, ImagesResult, image_content, image_record, iso
from imagegate.relays.base import ProgressFn
from imagegate.relays.config import AUTO
from imagegate.service.generation import Stopwatch
from imagegate.service.images import Admitted, ImageService, Made
from imagegate.service.jobs import JobRunner
from imagegate.service.saving import SavePlan
from imagegate.storage.interfaces import Asset, Job, JobState

PROGRESS_STEP = 0.1

VERBS = {"generate_image": "Generated", "edit_image": "Edited"}


class Progress:
    """Progress notifications of one call, in percent. MCP wants every value above the
    one before: a relay that goes back, or doesn't know, still moves forward by a
    step, and its message goes out. Up to 99.9 they count against a total of 100;
    past it (a relay that said it was done, and a job that is not yet) they go on
    without a total, so that a waiting client still hears from the call."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._watch = Stopwatch()
        self._last = -PROGRESS_STEP

    async def __call__(self, fraction: float | None, message: str) -> None:
        value = -1.0 if fraction is None else min(round(fraction * 100, 1), 99.9)
        value = max(value, round(self._last + PROGRESS_STEP, 1))
        self._last = value
        total = 100.0 if value <= 99.9 else None
        await self._ctx.report_progress(value, total, f"{message} ({self._watch.elapsed():.1f}s)")

    async def done(self) -> None:
        final = max(100.0, round(self._last + PROGRESS_STEP, 1))
        await self._ctx.report_progress(final, final, f"done ({self._watch.elapsed():.1f}s)")


async def start_job(
    service: ImageService,
    runner: JobRunner,
    caller: Caller,
    tool: str,
    admitted: Admitted,
    confirm: Confirmer,
    thumbnail: bool,
    save_plan: SavePlan | None = None,
) -> Job:
    """Start an admitted call as a job of the caller; its images are also saved where
    `save_plan` says once they exist (so also when the client has gone)."""
    options: dict[str, Any] = {"thumbnail": thumbnail}
    if confirm.outcome is not None:
        options["confirmation"] = confirm.outcome
    if confirm.estimate is not None:
        options["estimated_cost"] = confirm.estimate
    if admitted.choice is not None:
        options["relay_choice"] = admitted.choice.as_dict()
    watch = Stopwatch()

    async def work(progress: ProgressFn) -> dict[str, Any]:
        made = await admitted.run(progress)
        outcome = _outcome(made, watch)
        if save_plan is not None and made.assets:
            try:
                outcome["saved"] = await service.save_copies(save_plan, made.assets)
            except (ImagegateError, OSError) as err:
                outcome["save_error"] = _save_error(err)
        return outcome

    def finished() -> dict[str, Any] | None:
        """What a stopped job had stored (a batch's first items, say)."""
        return _outcome(admitted.made, watch) if admitted.made.assets else None

    # Shielded: a job recorded must also be started, or it would look running forever.
    with anyio.CancelScope(shield=True):
        try:
            job = await runner.start(caller.subject, tool, options, work, finished)
        except BaseException:
            await admitted.aclose()
            raise
    return job


def _save_error(err: Exception) -> str:
    if isinstance(err, ImagegateError):
        return str(err)
    return f"save_to: could not write the file ({getattr(err, 'strerror', None) or 'I/O error'})"


def _outcome(made: Made, watch: Stopwatch) -> dict[str, Any]:
    return {
        "assets": [asset.id for asset in made.assets],
        "failures": [asdict(failure) for failure in made.failures],
        "elapsed_seconds": watch.elapsed(),
    }


async def wait_for(
    ctx: Context,
    service: ImageService,
    runner: JobRunner,
    caller: Caller,
    job_id: str,
    seconds: float,
    *,
    started_here: bool,
    stored: Sequence[Asset] = (),
) -> ToolResult:
    """Wait up to `seconds` for one of the caller's jobs, with progress; answer with
    its result when it has ended, or with where it is. Only the call that `started`
    the job cancels it when the client cancels the call: a client that gives up on a
    get_job (its own timeout) has not asked to stop the job. `stored`: the images the
    job stored, when this call ran it (see finished_result)."""
    progress = Progress(ctx)
    try:
        job = await runner.wait(
            caller.subject, job_id, seconds, service.settings.progress_seconds, progress
        )
    except anyio.get_cancelled_exc_class():
        if started_here and _cancel_requested(ctx):
            with anyio.CancelScope(shield=True):
                await runner.cancel(caller.subject, job_id)
        raise
    if job.state is JobState.RUNNING:
        return running_result(job, service.settings.sync_wait_seconds)
    if job.state is JobState.COMPLETED:
        await progress.done()
    return await finished_result(service, caller, job, stored)


def _cancel_requested(ctx: Context) -> bool:
    """Did the client send `notifications/cancelled` for this call (not just hang up)?"""
    context = ctx.request_context
    if context is None:
        return False
    # The SDK's per-request dispatch context has the flag; neither FastMCP's context
    # nor the SDK's request context exposes it (a test notices when this moves).
    outbound = getattr(context._srctx.session, "_request_outbound", None)
    flag = getattr(outbound, "cancel_requested", None)
    return isinstance(flag, anyio.Event) and flag.is_set()


async def finished_result(
    service: ImageService, caller: Caller, job: Job, stored: Sequence[Asset] = ()
) -> ToolResult:
    """What the call that started `job` returns once it has ended: its images (with
    fresh links), its error raised again, or that it was cancelled. The images are
    read back from the index, but for those in `stored`, which the call that ran the
    job has in hand (stored a moment ago: a read saved)."""
    if job.state is JobState.FAILED:
        raise from_record(job.error or {})
    if job.state is not JobState.COMPLETED or job.outcome is None:
        record = job_record(job)
        return ToolResult(content=f"Job {job.id} {job.state.value}.", structured_content=record)
    in_hand = {asset.id: asset for asset in stored if asset.owner == caller.subject}
    assets = []
    for asset_id in job.outcome.get("assets", []):
        if asset_id in in_hand:
            assets.append(in_hand[asset_id])
            continue
        try:
            assets.append(await service.get(caller, asset_id))
        except NotFound:
            continue  # deleted by its owner since
    records = [image_record(asset, service.publish(asset)) for asset in assets]
    saved = job.outcome.get("saved", [])
    if len(saved) == len(records):
        records = [
            record.model_copy(update={"saved_to": path})
            for record, path in zip(records, saved, strict=True)
        ]
    thumbs = await service.thumbnails(assets) if job.request.get("thumbnail") else None
    failures = [Failure(**failure) for failure in job.outcome.get("failures", [])]
    elapsed = job.outcome.get("elapsed_seconds")
    result = ImagesResult(
        images=records,
        elapsed_seconds=elapsed,
        failures=failures,
        confirmation=job.request.get("confirmation"),
        estimated_cost=job.request.get("estimated_cost"),
        save_error=job.outcome.get("save_error"),
        relay_choice=job.request.get("relay_choice"),
    )
    heading = f"{VERBS.get(job.tool, 'Made')} {len(records)} image(s) in {elapsed or 0:.1f}s:"
    if result.relay_choice:
        choice = result.relay_choice
        heading += f" (relay={AUTO} chose {choice['relay']}: {choice['reason']})"
    if failures:
        heading += (
            f" ({len(failures)} failed: "
            + "; ".join(f"#{f.index + 1} {f.error}" for f in failures)
            + ")"
        )
    return ToolResult(
        content=image_content(result.images, heading, caller.subject, thumbs),
        structured_content=result.structured(),
    )


def running_result(job: Job, wait_limit: float) -> ToolResult:
    """A job not done yet: a normal result with the job id and the next step."""
    record = job_record(job)
    if "relay_choice" in job.request:
        record["relay_choice"] = job.request["relay_choice"]
    record["next"] = (
        f"Not ready yet. Call get_job with job_id {job.id!r} to wait for the result "
        f"(up to {wait_limit:g} s per call), or cancel_job to stop it."
    )
    done = f", {job.progress:g}%" if job.progress is not None else ""
    return ToolResult(
        content=f"Job {job.id} is running{done}. {record['next']}", structured_content=record
    )


def job_record(job: Job) -> dict[str, Any]:
    """A job as list_jobs and cancel_job show it: compact, empty fields left out."""
    record: dict[str, Any] = {
        "job_id": job.id,
        "tool": job.tool,
        "status": job.state.value,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
    }
    if job.progress is not None and job.state is JobState.RUNNING:
        record["progress"] = job.progress
    if job.message and job.state in (JobState.RUNNING, JobState.CANCELLED):
        record["message"] = job.message
    if job.outcome:
        record["asset_ids"] = job.outcome.get("assets", [])
    if job.error:
        record["error"] = job.error.get("message", "")
    return record
