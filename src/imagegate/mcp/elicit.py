"""Asking the user to confirm a paid call, over MCP, in both protocol eras.

Handshake era (2025-11-25 and older): a server-initiated elicitation request
(`ctx.elicit`) that the client answers while the call waits.
2026-07-28: the tool answers the call with an input-required result carrying the
question and a request state; the client answers and sends the call again with the
response, and the state, sealed by the server's key, proves the answer belongs to
this very question (any replica with the key can check it, after a restart too). The
state carries a nonce, and a yes is spent with it: the same sealed yes sent again is
asked anew, so one confirmation pays for one call.

A client that can't answer elicitation gets a clear refusal telling how an operator
can grant `paid:auto`; it is never taken as a yes.
"""

import json
import logging
import secrets
from collections.abc import Awaitable, Callable

import mcp_types
from fastmcp import Context
from fastmcp.server.elicitation import (
    AcceptedElicitation,
    handle_elicit_accept,
    parse_elicit_response_type,
)
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from imagegate.core.errors import NotConfirmed
from imagegate.core.tracing import span
from imagegate.service.confirm import PaidCall

log = logging.getLogger("imagegate.confirm")

NO_ELICITATION = (
    "not confirmed: relay {relay!r} costs money and your MCP client cannot answer a "
    "confirmation question (elicitation); no request was made. An operator can let this "
    "caller spend without asking by granting the scope paid:auto in the ACL."
)


SpendOnce = Callable[[str, float], Awaitable[bool]]
"""Use a nonce, valid for the given seconds: True the first time only."""

QUESTION_TTL_SECONDS = 600.0
"""How long a sealed question can be answered (the request state's TTL)."""


class Confirmer:
    """Asks through the MCP connection of one tool call and remembers the outcome, for
    the result and the audit log: paid:auto, accepted, declined (a "no" or a decline),
    cancelled or unsupported (the client can't be asked)."""

    def __init__(self, ctx: Context, spend_once: SpendOnce) -> None:
        self._ctx = ctx
        self._spend_once = spend_once
        self.outcome: str | None = None
        self.call: PaidCall | None = None

    @property
    def estimate(self) -> float | None:
        """The estimated cost of the paid call asked about, if there was one."""
        return self.call.estimate if self.call else None

    async def __call__(self, call: PaidCall, ask: bool) -> None:
        with span("confirm", relay=call.relay) as step:
            try:
                await self._confirm(call, ask)
            finally:
                # None: a 2026-07-28 client was asked, and answers with the next call.
                step.set("outcome", self.outcome or "asked")

    async def _confirm(self, call: PaidCall, ask: bool) -> None:
        self.call = call
        if not ask:
            self.outcome = "paid:auto"
            return
        if not _client_can_elicit(self._ctx):
            self.outcome = "unsupported"
            raise NotConfirmed(NO_ELICITATION.format(relay=call.relay))
        if _modern(self._ctx):
            self.outcome = await self._answer_from_retry(call)
        else:
            self.outcome = await self._ask_now(call)
        if self.outcome != "accepted":
            raise NotConfirmed(
                f"not confirmed ({self.outcome}): no image was made and nothing was spent"
            )

    async def _ask_now(self, call: PaidCall) -> str:
        """Handshake era: ask over the back-channel while the call waits. An answer
        that is not a clear yes or no is a no; a client that fails to answer
        (its handler raised) has cancelled."""
        try:
            answer = await self._ctx.elicit(call.question(), bool, response_title="Confirm")
        except ValidationError:
            log.info("a confirmation answer without a yes or no value; not confirmed")
            return "declined"
        except MCPError as err:
            log.info("the client could not answer the confirmation question: %s", err.error.code)
            self.outcome = "cancelled"
            raise NotConfirmed(
                "not confirmed (cancelled): your client could not answer the confirmation "
                "question; no image was made and nothing was spent"
            ) from None
        if isinstance(answer, AcceptedElicitation):
            return "accepted" if answer.data is True else "declined"
        return _OUTCOMES[answer.action]

    async def _answer_from_retry(self, call: PaidCall) -> str:
        """2026-07-28: the answer comes with the call sent again. Without one, when
        the sealed state belongs to another question, or when its yes was already
        spent, ask (raise NeedsInput)."""
        answers = self._ctx.input_responses or {}
        answer = answers.get(_ANSWER_KEY)
        state = self._ctx.request_state  # unsealed by the server; None if absent
        asked, nonce = _asked_about(state) if state is not None else (None, None)
        if answer is None or asked != call.fingerprint() or nonce is None:
            raise NeedsInput(_question(call))
        if not isinstance(answer, mcp_types.ElicitResult):
            raise NeedsInput(_question(call))
        if answer.action != "accept":
            return _OUTCOMES.get(answer.action, "declined")
        try:
            accepted = handle_elicit_accept(_CONFIRM, answer.content)
        except ValidationError:
            return "declined"  # an accept without a yes or no value is not a yes
        if accepted.data is not True:
            return "declined"
        if not await self._spend_once(nonce, QUESTION_TTL_SECONDS):
            raise NeedsInput(_question(call))
        return "accepted"


class NeedsInput(Exception):
    """The tool must answer with this input-required result (2026-07-28 era)."""

    def __init__(self, result: mcp_types.InputRequiredResult) -> None:
        super().__init__("input required")
        self.result = result


_ANSWER_KEY = "confirm_paid_call"
_OUTCOMES = {"decline": "declined", "cancel": "cancelled"}
_CONFIRM = parse_elicit_response_type(bool, response_title="Confirm")


def _question(call: PaidCall) -> mcp_types.InputRequiredResult:
    return mcp_types.InputRequiredResult(
        input_requests={
            _ANSWER_KEY: mcp_types.ElicitRequest(
                params=mcp_types.ElicitRequestFormParams(
                    message=call.question(), requested_schema=_CONFIRM.schema
                )
            )
        },
        # Sealed by the server (RequestStateSecurity): the answer that comes back with
        # it is bound to this question, this caller and these arguments.
        request_state=json.dumps({"asked": call.fingerprint(), "nonce": secrets.token_urlsafe(18)}),
    )


def _asked_about(state: str) -> tuple[str | None, str | None]:
    """The question's fingerprint and nonce from a sealed state."""
    try:
        data = json.loads(state)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    asked, nonce = data.get("asked"), data.get("nonce")
    return (
        asked if isinstance(asked, str) else None,
        nonce if isinstance(nonce, str) and nonce else None,
    )


def _modern(ctx: Context) -> bool:
    context = ctx.request_context
    return context is not None and context.protocol_version in MODERN_PROTOCOL_VERSIONS


def _client_can_elicit(ctx: Context) -> bool:
    """The client declared elicitation and, in the handshake era, the transport has a
    back-channel for the question (not so with stateless or JSON-response HTTP)."""
    capabilities = ctx.session.client_capabilities
    if capabilities is None or capabilities.elicitation is None:
        return False
    return _modern(ctx) or bool(ctx.session.can_send_request)
