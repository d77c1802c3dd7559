"""Bounds on what one HTTP peer can hold: a header deadline and a connection cap.

uvicorn's h11 protocol waits for request headers as long as a peer cares to send them
(half-sent headers were held for over a minute; at about 7,800 of them new connections
timed out and /healthz took 5.8 s). This protocol closes a connection that has not
sent complete request headers within `header_timeout` seconds (the first request, and
each later one on a kept-alive connection), and refuses more than `max_per_peer`
connections from one address at a time (0: no cap; behind a reverse proxy every
connection comes from the proxy, which should bound its own peers instead).
"""

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("imagegate.http")

_REFUSAL_LOG_SECONDS = 60.0


@dataclass
class ConnectionLimits:
    header_timeout: float
    max_per_peer: int
    open: Counter[str] = field(default_factory=Counter)
    _logged: dict[str, float] = field(default_factory=dict)

    def admit(self, peer: str) -> bool:
        if self.max_per_peer and self.open[peer] >= self.max_per_peer:
            now = time.monotonic()
            if len(self._logged) > 1000:  # a few lines a minute, not one entry per address
                self._logged.clear()
            if now - self._logged.get(peer, -_REFUSAL_LOG_SECONDS) >= _REFUSAL_LOG_SECONDS:
                self._logged[peer] = now
                log.warning(
                    "refusing connections from %s: %d already open (max_connections_per_peer)",
                    peer,
                    self.max_per_peer,
                )
            return False
        self.open[peer] += 1
        return True

    def leave(self, peer: str) -> None:
        self.open[peer] -= 1
        if self.open[peer] <= 0:
            del self.open[peer]


class GuardedH11Protocol(H11Protocol):
    limits: ClassVar[ConnectionLimits]
    """Shared by every connection of one server; set by `guarded_protocol`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = self.limits
        self._peer: str | None = None
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = self.client[0] if self.client else "unknown"
        if not self._limits.admit(peer):
            transport.abort()
            return
        self._peer = peer
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._stop_waiting()
        if self._peer is not None:
            self._limits.leave(self._peer)
            self._peer = None

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._stop_waiting()  # the request's headers are in

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._await_headers()  # the next request on this connection

    def _await_headers(self) -> None:
        self._stop_waiting()
        self._header_deadline = self.loop.call_later(
            self._limits.header_timeout, self._headers_too_late
        )

    def _stop_waiting(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_late(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(header_timeout: float, max_per_peer: int) -> type[GuardedH11Protocol]:
    """The protocol class for `uvicorn.Config(http=...)`, with these bounds."""

    class Bounded(GuardedH11Protocol):
        limits = ConnectionLimits(header_timeout, max_per_peer)

    return Bounded
