"""/metrics: the server's Prometheus series (core.metrics), for a scraper.

Off unless `metrics = true`; then reached in one of two ways (the settings refuse
metrics with neither):

- on the main port with a bearer token of its own (`metrics_token`), never an MCP
  token: a scraper needs no MCP access, and an MCP caller gets no metrics;
- on a listener of its own (`metrics_listen`), loopback only, that serves /metrics and
  nothing else: the MCP app, downloads and uploads don't answer there. A token, when
  one is configured, is asked for there as well.

A missing or wrong token is a bare 401: which of the two it was is not said.
"""

import hashlib
import hmac
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route as StarletteRoute
from starlette.routing import Router
from starlette.types import ASGIApp, Receive, Scope, Send

from imagegate.core.metrics import Metrics

PATH = "/metrics"
Handler = Callable[[Request], Awaitable[Response]]


class MetricsEndpoint:
    def __init__(self, metrics: Metrics, token: str | None) -> None:
        self._metrics = metrics
        # Compared as digests: equal lengths, so the time taken tells nothing of it.
        self._digest = hashlib.sha256(token.encode()).digest() if token is not None else None

    def _allowed(self, request: Request) -> bool:
        if self._digest is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(hashlib.sha256(given.strip().encode()).digest(), self._digest)

    async def scrape(self, request: Request) -> Response:
        if not self._allowed(request):
            return PlainTextResponse(
                "unauthorized\n",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"},
            )
        return Response(
            self._metrics.exposition(),
            media_type=CONTENT_TYPE_LATEST,
            headers={"Cache-Control": "no-store"},
        )

    def route(self) -> tuple[str, list[str], Handler]:
        """(path, methods, handler), for the main app's routes outside the Host check:
        a scraper asks each replica by its own address."""
        return (PATH, ["GET"], self.scrape)


class OwnListener:
    """Requests that arrive on the metrics listener's port (the socket's own address,
    which no header can change) see /metrics and nothing else; all others, and the
    lifespan, go to the app."""

    def __init__(self, app: ASGIApp, port: int, endpoint: MetricsEndpoint) -> None:
        self._app = app
        self._port = port
        # Exactly /metrics: no redirect from '/metrics/' or anything else that answers.
        self._metrics_only = Router(
            routes=[StarletteRoute(PATH, endpoint.scrape)], redirect_slashes=False
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] != "lifespan" and server is not None and server[1] == self._port:
            await self._metrics_only(scope, receive, send)
        else:
            await self._app(scope, receive, send)
