"""Handshake-era sessions: a cap per subject, and an early end for unused ones.

The MCP SDK keeps a session (a task and its buffers) for every `initialize`, up to
10,000 for the whole server, each until 30 minutes without a request. Any caller with
a token could open them all and lock every other tenant out. So:

- a subject may hold `max_sessions_per_subject` open sessions (opening ones
  included, so a burst can't slip past). One more ends the subject's oldest unused
  session, a session that made no request after its handshake (anything but
  `notifications/initialized`; a GET stream counts as use); with none unused it is
  refused with a JSON-RPC error (HTTP 429) that says why. No other subject is
  affected;
- an unused session also ends after `unused_session_seconds`. Ending is what a
  DELETE does: its id answers 404, and the client must open a new session.

2026-07-28 requests carry no session and pass untouched. The guard sits inside
authentication (it reads the caller from `scope["user"]`) and ends sessions through
the SDK's session manager, which it finds on the app's MCP route.
"""

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("imagegate.access")

SESSION_HEADER = b"mcp-session-id"
VERSION_HEADER = b"mcp-protocol-version"
_PEEK_BYTES = 4096
"""A POST this small may be the `notifications/initialized` that doesn't count as use."""


@dataclass
class _Session:
    subject: str
    opened: float
    used: bool = False


@dataclass
class SessionRegistry:
    """The open sessions the guard knows of, shared with the reaper."""

    max_per_subject: int
    unused_seconds: float
    path: str = "/mcp"
    """The MCP endpoint's path: other routes are not sessions."""
    clock: Callable[[], float] = time.monotonic
    sessions: dict[str, _Session] = field(default_factory=dict)
    opening: Counter[str] = field(default_factory=Counter)
    manager: Callable[[], StreamableHTTPSessionManager | None] = lambda: None

    def held_by(self, subject: str) -> int:
        """Sessions open or opening for `subject`."""
        self._forget_ended()
        open_ = sum(1 for session in self.sessions.values() if session.subject == subject)
        return open_ + self.opening[subject]

    async def end_oldest_unused(self, subject: str) -> bool:
        """Make room for `subject` by ending its oldest unused session, if it has one."""
        unused = [
            (session.opened, session_id)
            for session_id, session in self.sessions.items()
            if session.subject == subject and not session.used
        ]
        if not unused:
            return False
        await self._end([min(unused)[1]])
        return True

    def _forget_ended(self) -> None:
        manager = self.manager()
        if manager is None:
            return
        live = manager._server_instances  # the SDK's own record of open sessions
        for session_id in [sid for sid in self.sessions if sid not in live]:
            del self.sessions[session_id]

    async def end_unused(self) -> int:
        """End the sessions that made no request since their handshake, in time."""
        self._forget_ended()
        now = self.clock()
        stale = [
            session_id
            for session_id, session in self.sessions.items()
            if not session.used and now - session.opened > self.unused_seconds
        ]
        await self._end(stale)
        if stale:
            log.info("ended %d session(s) unused since their handshake", len(stale))
        return len(stale)

    async def _end(self, session_ids: list[str]) -> None:
        manager = self.manager()
        for session_id in session_ids:
            self.sessions.pop(session_id, None)  # before any await: one end per session
        if manager is None:
            return
        for session_id in session_ids:
            transport = manager._server_instances.get(session_id)
            if transport is not None:
                await manager._discard_session(session_id, transport)

    def attach(self, app: Starlette, mcp_path: str) -> None:
        """Find the session manager on the app's MCP route, once the app runs."""
        endpoint: Any = None
        for route in app.routes:
            if getattr(route, "path", None) == mcp_path:
                endpoint = getattr(route, "app", None)
        while endpoint is not None and not hasattr(endpoint, "session_manager"):
            endpoint = getattr(endpoint, "app", None)
        if endpoint is not None:
            self.manager = lambda: endpoint.session_manager


class SessionGuard:
    """ASGI middleware applying a SessionRegistry; runs its reaper for the app's life."""

    def __init__(self, app: ASGIApp, registry: SessionRegistry) -> None:
        self.app = app
        self._registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._reap)
                await self.app(scope, receive, send)
                tasks.cancel_scope.cancel()
            return
        mcp = scope["type"] == "http" and scope["path"] == self._registry.path
        subject = _subject(scope) if mcp else None
        if subject is None or _modern(scope):
            await self.app(scope, receive, send)
            return
        session_id = _header(scope, SESSION_HEADER)
        if session_id is None and scope["method"] == "POST":
            await self._open(subject, scope, receive, send)
            return
        session = self._registry.sessions.get(session_id or "")
        if session is not None and not session.used:
            if scope["method"] == "POST":
                receive, session.used = await _peek(scope, receive)
            elif scope["method"] == "GET":
                session.used = True  # the client's stream for server messages
        await self.app(scope, receive, send)

    async def _open(self, subject: str, scope: Scope, receive: Receive, send: Send) -> None:
        registry = self._registry
        if registry.held_by(subject) >= registry.max_per_subject and not (
            await registry.end_oldest_unused(subject)
        ):
            log.warning("refused a new session to %s: %d in use", subject, registry.max_per_subject)
            await _refuse(send, registry.max_per_subject)
            return

        async def recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                opened = dict(message.get("headers", [])).get(SESSION_HEADER)
                if opened is not None:
                    registry.sessions[opened.decode("latin-1")] = _Session(
                        subject, registry.clock()
                    )
            await send(message)

        registry.opening[subject] += 1
        try:
            await self.app(scope, receive, recorded)
        finally:
            registry.opening[subject] -= 1
            if registry.opening[subject] <= 0:
                del registry.opening[subject]

    async def _reap(self) -> None:
        period = max(0.2, min(5.0, self._registry.unused_seconds / 2))
        while True:
            await anyio.sleep(period)
            try:
                await self._registry.end_unused()
            except Exception as err:  # the guard must not take the server down
                log.warning("could not end unused sessions: %s", type(err).__name__)


def _subject(scope: Scope) -> str | None:
    user = scope.get("user")
    if isinstance(user, AuthenticatedUser):
        subject = user.access_token.subject or user.access_token.client_id
        return str(subject) if subject else None
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _modern(scope: Scope) -> bool:
    version = _header(scope, VERSION_HEADER)
    return version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS


async def _peek(scope: Scope, receive: Receive) -> tuple[Receive, bool]:
    """Whether a POST is a real use of its session (anything but the handshake's
    `notifications/initialized`), and a receive that replays what was read."""
    length = _header(scope, b"content-length")
    if length is None or not length.isdigit() or int(length) > _PEEK_BYTES:
        return receive, True
    messages: list[Message] = []
    body = b""
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    try:
        method = json.loads(body).get("method")
    except (ValueError, AttributeError):
        method = None

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay, method != "notifications/initialized"


async def _refuse(send: Send, limit: int) -> None:
    message = (
        f"too many open sessions: you already have {limit} in use; end the ones you no "
        "longer need (an MCP client does so when it closes)"
    )
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}})
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"30"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})
