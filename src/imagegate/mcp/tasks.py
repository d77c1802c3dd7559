"""MCP tasks, backed by imagegate's jobs, in both protocol eras.

- 2026-07-28: the `io.modelcontextprotocol/tasks` extension (SEP-2663). A client that
  declares it in a call's `_meta` gets `{"resultType": "task", ...}` from
  `generate_image` and `edit_image`, then polls `tasks/get` (the result or error
  inline once done) and may send `tasks/cancel`.
- 2025-11-25: the `tasks` capability. A `tools/call` with `params.task` gets
  `{"task": {...}}`; then `tasks/get`, `tasks/result` (waits for the end),
  `tasks/list` and `tasks/cancel`.

A task is a job (service.jobs): its id is the job id, its record is in the database
(any process sharing it answers for it), and the paid-call question is asked in the
call that creates it, before the job exists. The tool itself starts the job and returns
a marker result, which passes FastMCP's middleware (ACL, audit) like any result; an
outermost low-level middleware (`TaskCreatedReply`) turns it into the era's reply.
FastMCP 4.1 has no tasks of its own without the `fastmcp-tasks` package, whose tasks
live in its own queue (docket) and only in the 2026-07-28 era.
"""

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import mcp_types
from fastmcp import Context, FastMCP
from fastmcp.server.extensions import MethodBinding, ServerExtension
from fastmcp.tools import ToolResult
from fastmcp.utilities.tasks import TASKS_EXTENSION_ID
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ConfigDict, Field

from imagegate.access.policy import AccessPolicy, Caller, ToolRule, decide
from imagegate.access.scopes import JOBS
from imagegate.core.errors import ImagegateError, InvalidRequest, NotFound, where
from imagegate.mcp.auth import request_identity
from imagegate.mcp.jobs import finished_result
from imagegate.mcp.results import iso
from imagegate.service.images import ImageService
from imagegate.service.jobs import JobRunner
from imagegate.storage.interfaces import Job, JobState

log = logging.getLogger("imagegate.tasks")

CREATED = "imagegate/task-created"
"""The `_meta` key of the marker result that `TaskCreatedReply` replaces."""

POLL_INTERVAL_MS = 2000
LEGACY = frozenset({"2025-11-25"})
_STATUS = {
    JobState.RUNNING: "working",
    JobState.COMPLETED: "completed",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}


def _modern(version: str | None) -> bool:
    return version in MODERN_PROTOCOL_VERSIONS


def task_requested(ctx: Context) -> bool:
    """Does this call want a task: a 2026-07-28 client that declared the extension, or
    a 2025-11-25 `tools/call` with `params.task`?"""
    context = ctx.request_context
    if context is None:
        return False
    if _modern(context.protocol_version):
        return ctx.client_extension_settings(TASKS_EXTENSION_ID) is not None
    # FastMCP rebuilds the params without `task`; the SDK's context has them raw.
    params = context._srctx.params
    return isinstance(params, Mapping) and params.get("task") is not None


def task_created(ctx: Context, job: Job, ttl_seconds: int) -> ToolResult:
    """The marker result of a call that became a task."""
    context = ctx.request_context
    modern = context is not None and _modern(context.protocol_version)
    task = task_fields(job, modern, ttl_seconds)
    reply = {"resultType": "task", **task} if modern else {"task": task}
    return ToolResult(
        content=f"Started job {job.id}.",
        structured_content={"job_id": job.id, "status": job.state.value},
        meta={CREATED: reply},
    )


def task_fields(job: Job, modern: bool, ttl_seconds: int) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "taskId": job.id,
        "status": _STATUS[job.state],
        "createdAt": iso(job.created_at),
        "lastUpdatedAt": iso(job.updated_at),
    }
    message = _status_message(job)
    if message:
        fields["statusMessage"] = message
    ttl, poll = ttl_seconds * 1000, POLL_INTERVAL_MS
    fields |= (
        {"ttlMs": ttl, "pollIntervalMs": poll} if modern else {"ttl": ttl, "pollInterval": poll}
    )
    return fields


def _status_message(job: Job) -> str:
    if job.state is JobState.FAILED and job.error:
        return job.error.get("message", "")
    if job.state is JobState.RUNNING and job.progress is not None:
        return f"{job.progress:g}% {job.message}".strip()
    return job.message if job.state is not JobState.COMPLETED else ""


class TaskCreatedReply:
    """Outermost low-level middleware: a `tools/call` answered with the marker result
    goes out as the era's task-created reply instead."""

    async def __call__(
        self,
        ctx: ServerRequestContext[Any, Any],
        call_next: Callable[[ServerRequestContext[Any, Any]], Awaitable[Any]],
    ) -> Any:
        result = await call_next(ctx)
        if ctx.method != "tools/call" or not isinstance(result, dict):
            return result
        meta = result.get("_meta")
        if not isinstance(meta, dict) or CREATED not in meta:
            return result
        return meta[CREATED]


class TaskIdParams(mcp_types.RequestParams):
    model_config = ConfigDict(populate_by_name=True)
    task_id: str = Field(alias="taskId")


class JobTasks(ServerExtension):
    """The task methods, answered from the job runner for the caller's own jobs."""

    identifier = TASKS_EXTENSION_ID

    def __init__(
        self,
        service: ImageService,
        runner: JobRunner,
        policy: AccessPolicy,
        local: bool,
    ) -> None:
        self._service = service
        self._runner = runner
        self._policy = policy
        self._local = local

    def methods(self) -> Sequence[MethodBinding]:
        return [
            MethodBinding("tasks/get", TaskIdParams, _answering(self._get)),
            MethodBinding("tasks/cancel", TaskIdParams, _answering(self._cancel)),
            MethodBinding("tasks/result", TaskIdParams, _answering(self._result), LEGACY),
            MethodBinding(
                "tasks/list", mcp_types.PaginatedRequestParams, _answering(self._list), LEGACY
            ),
        ]

    def _caller(self) -> Caller:
        """stdio is the local user; over HTTP the verified token decides, and the
        caller needs a scope that starts jobs, as for get_job. Fail closed."""
        identity = request_identity(self._local)
        if identity is None:
            raise MCPError(code=mcp_types.INVALID_REQUEST, message="not authenticated")
        caller = self._policy.caller(identity)
        decision = decide(caller.scopes, ToolRule(JOBS), None)
        if not decision.allowed:
            raise MCPError(code=mcp_types.INVALID_REQUEST, message=decision.message)
        return caller

    async def _job(self, caller: Caller, task_id: str) -> Job:
        try:
            return await self._runner.get(caller.subject, task_id)
        except NotFound:
            raise MCPError(
                code=mcp_types.INVALID_PARAMS, message=f"task not found: {task_id[:40]!r}"
            ) from None

    @property
    def _ttl(self) -> int:
        return self._service.settings.job_retention_seconds

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> Any:
        caller = self._caller()
        job = await self._job(caller, params.task_id)
        modern = _modern(ctx.protocol_version)
        reply = task_fields(job, modern, self._ttl)
        if not modern:
            return reply
        if job.state is JobState.FAILED:
            # SEP-2663: "failed" is for protocol faults; a tool's error is a completed
            # task whose result has isError, as the call itself would have answered.
            reply["status"] = "completed"
            reply.pop("statusMessage", None)
        if reply["status"] == "completed":
            reply["result"] = await self._call_result(caller, job)
        return reply

    async def _result(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> Any:
        """2025-11-25: the call's result once the task has ended (waits until then)."""
        caller = self._caller()
        job = await self._job(caller, params.task_id)
        while not job.finished:
            job = await self._runner.wait(caller.subject, job.id, 3600.0, 3600.0, _ignore_progress)
        if job.state is JobState.CANCELLED:
            raise MCPError(code=mcp_types.INVALID_PARAMS, message=f"task {job.id} was cancelled")
        result = await self._call_result(caller, job)
        result["_meta"] = {"io.modelcontextprotocol/related-task": {"taskId": job.id}}
        return result

    async def _call_result(self, caller: Caller, job: Job) -> dict[str, Any]:
        """The CallToolResult the starting call would have returned."""
        try:
            tool_result = await finished_result(self._service, caller, job)
        except ImagegateError as err:
            return _error_result(str(err))
        call = mcp_types.CallToolResult(
            content=tool_result.content, structured_content=tool_result.structured_content
        )
        dumped: dict[str, Any] = call.model_dump(by_alias=True, mode="json", exclude_none=True)
        return dumped

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> Any:
        caller = self._caller()
        job = await self._job(caller, params.task_id)
        modern = _modern(ctx.protocol_version)
        if job.finished and not modern:
            raise MCPError(
                code=mcp_types.INVALID_PARAMS,
                message=f"task {job.id} has already ended ({_STATUS[job.state]})",
            )
        job = await self._runner.cancel(caller.subject, job.id)
        return {} if modern else task_fields(job, False, self._ttl)

    async def _list(
        self, ctx: ServerRequestContext[Any, Any], params: mcp_types.PaginatedRequestParams
    ) -> Any:
        caller = self._caller()
        page = await self._runner.list(
            caller.subject, self._service.settings.max_page_size, params.cursor
        )
        reply: dict[str, Any] = {"tasks": [task_fields(job, False, self._ttl) for job in page.jobs]}
        if page.next_cursor:
            reply["nextCursor"] = page.next_cursor
        return reply


async def _ignore_progress(fraction: float | None, message: str) -> None:
    return None


Handler = Callable[[ServerRequestContext[Any, Any], Any], Awaitable[Any]]


def _answering(handler: Handler) -> Handler:
    """The tasks methods' one place for errors, as `middleware.domain_errors` is the
    tools': a domain error keeps its message for the caller; anything else is one
    log line with its type and place, and a generic error."""

    @functools.wraps(handler)
    async def answering(ctx: ServerRequestContext[Any, Any], params: Any) -> Any:
        try:
            return await handler(ctx, params)
        except MCPError:
            raise
        except (NotFound, InvalidRequest) as err:
            raise MCPError(code=mcp_types.INVALID_PARAMS, message=str(err)) from None
        except ImagegateError as err:
            raise MCPError(code=mcp_types.INTERNAL_ERROR, message=str(err)) from None
        except Exception as err:
            log.error("%s failed: %s", ctx.method, where(err))
            raise MCPError(
                code=mcp_types.INTERNAL_ERROR,
                message="internal error: the server could not answer; its log says where",
            ) from None

    return answering


def _error_result(message: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": message}], "isError": True}


def serve_tasks(mcp: FastMCP[Any], tasks: JobTasks) -> None:
    """Register the task methods and the reply rewrite, and advertise tasks for
    `tools/call` to 2025-11-25 clients (the 2026-07-28 extension advertises itself)."""
    mcp.add_extension(tasks)
    mcp._mcp_server.middleware.insert(0, TaskCreatedReply())


def legacy_capability() -> mcp_types.ServerTasksCapability:
    return mcp_types.ServerTasksCapability(
        list=mcp_types.TasksListCapability(),
        cancel=mcp_types.TasksCancelCapability(),
        requests=mcp_types.ServerTasksRequestsCapability(
            tools=mcp_types.TasksToolsCapability(call=mcp_types.TasksCallCapability())
        ),
    )
