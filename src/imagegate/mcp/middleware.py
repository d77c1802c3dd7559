"""FastMCP glue for authorization, audit and errors. The decisions live in
`access.policy`; this only applies them to each call and writes the audit line.

Order (outermost first): AuditMiddleware, AclMiddleware, then the tool, whose domain
errors `domain_errors` turns into MCP tool errors.
"""

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import mcp_types as mt
from fastmcp.exceptions import AuthorizationError, FastMCPError, ToolError
from fastmcp.exceptions import ValidationError as ArgumentsInvalid
from fastmcp.server.context import Context
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import Tool, ToolResult
from fastmcp.tools.base import InputRequiredToolResult
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError as PydanticValidationError

from imagegate.access.audit import AuditLog, AuditRecord
from imagegate.access.policy import AccessPolicy, Caller, ToolRule, decide
from imagegate.core.clock import Clock
from imagegate.core.errors import (
    ContentRefused,
    ImagegateError,
    PermissionDenied,
    QuotaExceeded,
    RelayError,
    where,
)
from imagegate.core.metrics import Metrics
from imagegate.core.tracing import current_trace_id, span
from imagegate.mcp.auth import current_identity
from imagegate.relays.config import AUTO

log = logging.getLogger("imagegate.access")
refusals = logging.getLogger("imagegate")


class Forbidden(ToolError):
    """The ACL said no."""

    def __init__(self, message: str) -> None:
        # Logged once by us, with the subject; FastMCP's own line only at debug level.
        super().__init__(message, log_level=logging.DEBUG)


class Refused(ToolError):
    """A domain error: the request was understood and declined (bad argument, not found).
    `summary` is what logs keep of it when the message quotes an upstream."""

    def __init__(self, message: str, summary: str | None = None, limit: str | None = None) -> None:
        super().__init__(message, log_level=logging.DEBUG)
        self.summary = summary or message
        self.limit = limit
        """The quota limit that refused the call, if one did (for metrics)."""


class UpstreamFailed(Refused):
    """The relay's upstream failed or turned the request down."""


class Failed(ToolError):
    """A bug or an unforeseen failure: logged once by us, without its message."""

    def __init__(self) -> None:
        super().__init__(
            "internal error: the server could not complete this call; its log says where",
            log_level=logging.DEBUG,
        )


ToolFn = TypeVar("ToolFn", bound=Callable[..., Awaitable[Any]])


def domain_errors(fn: ToolFn) -> ToolFn:
    """The one place where errors become MCP tool errors.

    Applied to every tool at registration. A domain error keeps its message, written
    for the caller; an upstream failure is told apart from a refusal (for the audit
    log); anything unexpected is one log line with its type and place but not its
    message, and a generic error for the caller.
    """

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except PermissionDenied as err:
            raise Forbidden(str(err)) from None
        except RelayError as err:
            # The caller gets the whole message; logs only our part of it: the
            # upstream's text after it may quote the prompt back.
            ours = str(err).split(": ", 1)[0]
            if isinstance(err, ContentRefused):
                refusals.info("tool %s refused: %s", fn.__name__, ours)
                raise Refused(str(err), ours) from None
            refusals.warning("tool %s: upstream failed: %s", fn.__name__, ours)
            raise UpstreamFailed(str(err), ours) from None
        except ImagegateError as err:
            refusals.info("tool %s refused: %s", fn.__name__, err)
            # A job's error raised again for its caller (core.errors.from_record) has no
            # limit: the job runner counted that refusal, once, however often it is read.
            limit = getattr(err, "limit", None) if isinstance(err, QuotaExceeded) else None
            raise Refused(str(err), limit=limit) from None
        except (FastMCPError, MCPError):
            raise  # FastMCP's own, raised on purpose (and mapped by it)
        except Exception as err:
            refusals.error("tool %s failed: %s", fn.__name__, where(err))
            raise Failed() from None

    return cast(ToolFn, wrapper)


def arguments_refusal(err: ArgumentsInvalid) -> Refused:
    """Arguments the tool's schema rejects, one short clause per field: no pydantic
    boilerplate or documentation links for the caller."""
    cause = err.__cause__
    if not isinstance(cause, PydanticValidationError):
        return Refused(f"invalid arguments: {err}")
    problems = [
        f"{'.'.join(str(part) for part in problem['loc']) or 'arguments'}: {problem['msg']}"
        for problem in cause.errors()
    ]
    return Refused("invalid arguments: " + "; ".join(problems))


def requested_relay(rule: ToolRule | None, arguments: dict[str, Any], default: str) -> str | None:
    """The relay a call would use, for tools that take one: `auto` when the service is
    to choose it."""
    if rule is None or not rule.takes_relay:
        return None
    relay = arguments.get("relay")
    if isinstance(relay, str) and relay:
        return relay
    # A preset may name the relay: the service checks the one the call resolves to.
    return None if arguments.get("preset") else default


def acl_relay(relay: str | None) -> str | None:
    """The relay whose scope the ACL checks: none for `auto`, which names no relay;
    the service checks the scope of the relay it chooses (and chooses only those)."""
    return None if relay == AUTO else relay


def used_relay(
    requested: str | None, structured: dict[str, Any], takes_relay: bool = False
) -> str | None:
    """The relay a call used, for the audit log: the one `auto` chose, when known; for
    a tool that takes a relay but was told none (a preset's chose it), the one its
    images were made on (a call that made none, or answered running, records none)."""
    choice = structured.get("relay_choice")
    chosen = choice.get("relay") if isinstance(choice, dict) else None
    if isinstance(chosen, str):
        return chosen
    images = structured.get("images")
    if requested is None and takes_relay and isinstance(images, list):
        made = {image.get("relay") for image in images if isinstance(image, dict)}
        if len(made) == 1 and isinstance(relay := made.pop(), str):
            return relay
    return requested


def _caller(policy: AccessPolicy, ctx: Context | None) -> Caller:
    if ctx is None:
        raise Forbidden("forbidden: no request context")
    return policy.caller(current_identity(ctx))


class AclMiddleware(Middleware):
    def __init__(
        self, policy: AccessPolicy, rules: Mapping[str, ToolRule], default_relay: str
    ) -> None:
        self._policy = policy
        self._rules = rules
        self._default_relay = default_relay

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        name = context.message.name
        # Only this server's tool names: the client's string could be anything.
        with span("acl", tool=name if name in self._rules else "unknown") as step:
            caller = _caller(self._policy, context.fastmcp_context)
            rule = self._rules.get(name)
            relay = requested_relay(rule, context.message.arguments or {}, self._default_relay)
            decision = decide(caller.scopes, rule, acl_relay(relay))
            step.set("outcome", "allowed" if decision.allowed else "denied")
        if not decision.allowed:
            # %r: the tool and relay names come from the client and may hold newlines.
            log.warning("denied %r to %s: needs %r", name, caller.subject, decision.missing)
            raise Forbidden(decision.message)
        return await call_next(context)

    async def on_list_tools(
        self,
        context: MiddlewareContext[mt.ListToolsRequest],
        call_next: CallNext[mt.ListToolsRequest, Sequence[Tool]],
    ) -> Sequence[Tool]:
        tools = await call_next(context)
        caller = _caller(self._policy, context.fastmcp_context)
        return [
            tool
            for tool in tools
            if decide(caller.scopes, self._rules.get(tool.name), None).allowed
        ]


class AuditMiddleware(Middleware):
    def __init__(
        self,
        audit: AuditLog,
        policy: AccessPolicy,
        rules: Mapping[str, ToolRule],
        default_relay: str,
        clock: Clock,
        record_prompts: bool,
        metrics: Metrics | None = None,
    ) -> None:
        self._audit = audit
        self._policy = policy
        self._rules = rules
        self._default_relay = default_relay
        self._clock = clock
        self._record_prompts = record_prompts
        self._metrics = metrics or Metrics()

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        with self._metrics.tool_call_in_flight():
            return await self._audited(context, call_next)

    async def _audited(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        started = time.perf_counter()
        outcome, detail, images, limit = "error", None, 0, None
        structured: dict[str, Any] = {}
        try:
            result = await call_next(context)
            structured = result.structured_content or {}
            outcome = _outcome(structured)
            if isinstance(result, InputRequiredToolResult):
                outcome, structured = "input_required", {"confirmation": "asked"}
            images = _images_made(self._rules.get(context.message.name), result)
            return result
        except Forbidden as err:
            outcome, detail = "denied", str(err)
            raise
        except UpstreamFailed as err:
            outcome, detail = "upstream_error", err.summary
            raise
        except Refused as err:
            outcome, detail, limit = "refused", err.summary, err.limit
            raise
        except ArgumentsInvalid as err:
            refusal = arguments_refusal(err)
            outcome, detail = "refused", str(refusal)
            raise refusal from None
        finally:
            self._write(context, outcome, detail, images, started, structured)
            self._count(context.message.name, outcome, limit)

    def _count(self, tool: str, outcome: str, limit: str | None) -> None:
        # The name is the client's: any string. Only the tools this server has become
        # a label, or every made-up name would be a series of its own.
        self._metrics.tool_call(tool if tool in self._rules else "unknown", outcome)
        if limit is not None:
            self._metrics.quota_refused(limit)

    def _write(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        outcome: str,
        detail: str | None,
        images: int,
        started: float,
        structured: dict[str, Any],
    ) -> None:
        arguments = context.message.arguments or {}
        subject: str
        try:
            subject = _caller(self._policy, context.fastmcp_context).subject
        except (ToolError, AuthorizationError):
            subject = "(unauthenticated)"
        prompt = arguments.get("prompt") if self._record_prompts else None
        rule = self._rules.get(context.message.name)
        requested = requested_relay(rule, arguments, self._default_relay)
        takes_relay = rule is not None and rule.takes_relay
        self._audit.write(
            AuditRecord(
                time=self._clock.now(),
                subject=subject,
                tool=context.message.name,
                relay=used_relay(requested, structured, takes_relay),
                outcome=outcome,
                images=images,
                estimated_cost=structured.get("estimated_cost"),
                confirmation=structured.get("confirmation"),
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
                detail=detail,
                prompt=prompt if isinstance(prompt, str) else None,
                trace_id=current_trace_id(),
            )
        )


def _outcome(structured: dict[str, Any]) -> str:
    if structured.get("confirmation") in ("declined", "cancelled", "unsupported"):
        return "not_confirmed"
    return "ok"


def _images_made(rule: ToolRule | None, result: ToolResult) -> int:
    """Images a call made: the relay tools' results; listing images makes none."""
    if rule is None or not rule.takes_relay:
        return 0
    images = (result.structured_content or {}).get("images")
    return len(images) if isinstance(images, list) else 0
