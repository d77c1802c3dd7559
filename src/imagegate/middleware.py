"""FastMCP glue for authorization and audit. The decisions live in `acl`; this only
applies them to each call and writes the audit line.

Order (outermost first): AuditMiddleware, AclMiddleware, then the tool.
"""

import logging
import time
from collections.abc import Sequence
from typing import Any

import mcp_types as mt
from fastmcp.exceptions import AuthorizationError, ToolError
from fastmcp.exceptions import ValidationError as ArgumentsInvalid
from fastmcp.server.context import Context
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import Tool, ToolResult
from fastmcp.tools.base import InputRequiredToolResult
from pydantic import ValidationError as PydanticValidationError

from imagegate.acl import RELAY_TOOLS, AccessPolicy, Caller, decide
from imagegate.audit import AuditLog, AuditRecord
from imagegate.auth.subject import current_identity
from imagegate.clock import Clock

log = logging.getLogger("imagegate.access")


class Forbidden(ToolError):
    """The ACL said no."""

    def __init__(self, message: str) -> None:
        # Logged once by us, with the subject; FastMCP's own line only at debug level.
        super().__init__(message, log_level=logging.DEBUG)


class Refused(ToolError):
    """A domain error: the request was understood and declined (bad argument, not found)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, log_level=logging.DEBUG)


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


def requested_relay(tool: str, arguments: dict[str, Any], default: str) -> str | None:
    if tool not in RELAY_TOOLS:
        return None
    relay = arguments.get("relay")
    return relay if isinstance(relay, str) and relay else default


def _caller(policy: AccessPolicy, ctx: Context | None) -> Caller:
    if ctx is None:
        raise Forbidden("forbidden: no request context")
    return policy.caller(current_identity(ctx))


class AclMiddleware(Middleware):
    def __init__(self, policy: AccessPolicy, default_relay: str) -> None:
        self._policy = policy
        self._default_relay = default_relay

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        caller = _caller(self._policy, context.fastmcp_context)
        name = context.message.name
        relay = requested_relay(name, context.message.arguments or {}, self._default_relay)
        decision = decide(caller.scopes, name, relay)
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
        return [tool for tool in tools if decide(caller.scopes, tool.name, None).allowed]


class AuditMiddleware(Middleware):
    def __init__(
        self,
        audit: AuditLog,
        policy: AccessPolicy,
        default_relay: str,
        clock: Clock,
        record_prompts: bool,
    ) -> None:
        self._audit = audit
        self._policy = policy
        self._default_relay = default_relay
        self._clock = clock
        self._record_prompts = record_prompts

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        started = time.perf_counter()
        outcome, detail, images = "error", None, 0
        structured: dict[str, Any] = {}
        try:
            result = await call_next(context)
            structured = result.structured_content or {}
            outcome = _outcome(structured)
            if isinstance(result, InputRequiredToolResult):
                outcome, structured = "input_required", {"confirmation": "asked"}
            images = _images_made(context.message.name, result)
            return result
        except Forbidden as err:
            outcome, detail = "denied", str(err)
            raise
        except Refused as err:
            outcome, detail = "refused", str(err)
            raise
        except ArgumentsInvalid as err:
            refusal = arguments_refusal(err)
            outcome, detail = "refused", str(refusal)
            raise refusal from None
        finally:
            self._write(context, outcome, detail, images, started, structured)

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
        try:
            subject = _caller(self._policy, context.fastmcp_context).subject
        except (ToolError, AuthorizationError):
            subject = "(unauthenticated)"
        prompt = arguments.get("prompt") if self._record_prompts else None
        self._audit.write(
            AuditRecord(
                time=self._clock.now(),
                subject=subject,
                tool=context.message.name,
                relay=requested_relay(context.message.name, arguments, self._default_relay),
                outcome=outcome,
                images=images,
                estimated_cost=structured.get("estimated_cost"),
                confirmation=structured.get("confirmation"),
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
                detail=detail,
                prompt=prompt if isinstance(prompt, str) else None,
            )
        )


def _outcome(structured: dict[str, Any]) -> str:
    if structured.get("confirmation") in ("declined", "cancelled", "unsupported"):
        return "not_confirmed"
    return "ok"


def _images_made(tool: str, result: ToolResult) -> int:
    if tool not in RELAY_TOOLS:
        return 0
    images = (result.structured_content or {}).get("images")
    return len(images) if isinstance(images, list) else 0
