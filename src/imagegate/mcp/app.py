"""Build the FastMCP server: tools from the table, middleware, auth and HTTP routes."""

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import mcp_types
from fastmcp import FastMCP
from fastmcp.apps.config import UI_EXTENSION_ID
from fastmcp.server.auth import AuthProvider
from fastmcp.tools import FunctionTool
from fastmcp.utilities.tasks import TaskConfig
from mcp.server.request_state import RequestStateSecurity
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.applications import Starlette
from starlette.middleware import Middleware as StarletteMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from imagegate import __version__
from imagegate.access.audit import AuditLog
from imagegate.access.policy import AccessPolicy
from imagegate.config import Settings
from imagegate.core.clock import Clock
from imagegate.core.metrics import Metrics
from imagegate.mcp import tools
from imagegate.mcp.apps import serve_viewer, viewer_meta
from imagegate.mcp.elicit import QUESTION_TTL_SECONDS
from imagegate.mcp.middleware import AclMiddleware, AuditMiddleware, domain_errors
from imagegate.mcp.prompts import Prompts, serve_prompts
from imagegate.mcp.resources import ImageResources, serve_resources
from imagegate.mcp.sessions import SessionGuard, SessionRegistry
from imagegate.mcp.specs import RULES, TOOLS
from imagegate.mcp.tasks import JobTasks, legacy_capability, serve_tasks
from imagegate.relays.registry import Relays
from imagegate.service.housekeeping import Housekeeping
from imagegate.service.images import ImageService
from imagegate.service.jobs import JobRunner
from imagegate.service.uploads import Uploads
from imagegate.web.too_large import ExplainTooLarge
from imagegate.web.traced import TracedRequests
from imagegate.web.unauthorized import ExplainUnauthorized

INSTRUCTIONS = (
    "imagegate generates images and keeps them for you. Call generate_image with a "
    "prompt; each result has an asset id, a download URL with an expiry and a Markdown "
    "line to show it. list_relays tells which relays and options exist; list_images, "
    "get_image, create_download_link and delete_image manage your own images. A slow "
    "generation answers status running with a job_id: call get_job to wait for it."
)

Handler = Callable[[Request], Awaitable[Response]]
Route = tuple[str, list[str], Handler]
"""An HTTP route outside MCP: path, methods, handler."""


class _ServiceLifespan:
    """What the tools find in their context, and the job runner and the housekeeping
    running meanwhile."""

    def __init__(
        self, context: dict[str, Any], runner: JobRunner, housekeeping: Housekeeping | None
    ) -> None:
        self._context = context
        self._runner = runner
        self._housekeeping = housekeeping

    @asynccontextmanager
    async def __call__(self, server: FastMCP[Any]) -> AsyncIterator[dict[str, Any]]:
        async with self._runner.running():
            if self._housekeeping is None:
                yield self._context
                return
            async with self._housekeeping.running():
                yield self._context


def build_mcp(
    settings: Settings,
    service: ImageService,
    policy: AccessPolicy,
    audit: AuditLog,
    clock: Clock,
    auth: AuthProvider | None,
    request_state_key: bytes,
    runner: JobRunner,
    local: bool,
    routes: Sequence[Route] = (),
    uploads: Uploads | None = None,
    metrics: Metrics | None = None,
    housekeeping: Housekeeping | None = None,
) -> FastMCP[Any]:
    default_relay = service.relays.default
    mcp: FastMCP[Any] = FastMCP(
        "imagegate",
        instructions=INSTRUCTIONS,
        version=__version__,
        auth=auth,
        middleware=[
            AuditMiddleware(
                audit, policy, RULES, default_relay, clock, settings.audit_prompts, metrics
            ),
            AclMiddleware(policy, RULES, default_relay),
        ],
        lifespan=_ServiceLifespan(
            {
                tools.SERVICE_KEY: service,
                tools.POLICY_KEY: policy,
                tools.JOBS_KEY: runner,
                tools.UPLOADS_KEY: uploads,
            },
            runner,
            housekeeping,
        ),
        mask_error_details=True,
        # The confirmation state of 2026-07-28 calls is sealed with a key that survives
        # restarts and that replicas share (with the same server name, "imagegate").
        request_state_security=RequestStateSecurity(
            keys=[request_state_key], ttl=QUESTION_TTL_SECONDS
        ),
    )
    serve_tasks(mcp, JobTasks(service, runner, policy, local))
    serve_resources(mcp, ImageResources(service, policy, local))
    serve_prompts(mcp, Prompts(service, policy, local))
    if settings.apps_viewer:
        serve_viewer(mcp, settings, service.links_enabled)
    _register_tools(mcp, schema_bounds(settings, service.relays), settings.apps_viewer)
    _advertise_only_tools(mcp, settings.apps_viewer)
    for path, methods, handler in routes:
        mcp.custom_route(path, methods=methods)(handler)
    return mcp


def _register_tools(
    mcp: FastMCP[Any], bounds: dict[str, dict[str, int]], viewer: bool = False
) -> None:
    for spec in TOOLS:
        registered = FunctionTool.from_function(
            domain_errors(spec.function),
            output_schema=None,
            annotations=spec.annotations,
            task=TaskConfig(mode="optional") if spec.runs_as_job else False,
            meta=viewer_meta() if viewer and spec.shows_images else None,
        )
        properties = registered.parameters.get("properties", {})
        for argument, bound in bounds.items():
            if argument in properties:
                properties[argument].update(bound)
        registered.parameters = compact_schema(registered.parameters)
        mcp.add_tool(registered)


def compact_schema(node: Any) -> Any:
    """A JSON schema without titles, and with `X or null, default null` as just an
    optional `X`: the same contract for a caller, at half the size."""
    if isinstance(node, list):
        return [compact_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: compact_schema(value) for key, value in node.items() if key != "title"}
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options and len(options) == 2:
        (kept,) = [option for option in options if option != {"type": "null"}]
        node = {key: value for key, value in node.items() if key != "anyOf"} | kept
    if "default" in node and node["default"] in (None, []):
        del node["default"]
    return node


def schema_bounds(settings: Settings, relays: Relays) -> dict[str, dict[str, int]]:
    """The signatures' bounds are the most any server allows; clients see this server's
    (which the requests are checked against anyway)."""
    capabilities = [relay.capabilities for relay in relays.all()]
    return {
        "n": {"maximum": settings.max_images_per_call},
        "limit": {"maximum": settings.max_page_size},
        "images": {"maxItems": max(max(c.max_inputs for c in capabilities), 1)},
        "partial_images": {"maximum": max(c.partial_images for c in capabilities)},
    }


def _advertise_only_tools(mcp: FastMCP[Any], viewer: bool = False) -> None:
    """FastMCP advertises the MCP Apps extension whether a server has an app or not;
    clients then ask for it and find nothing. imagegate serves tools, prompts (a fixed
    set, mcp.prompts) and resources (its images, which change without notice), in both
    eras; and tasks for tool calls, which 2025-11-25 clients learn from a capability
    (2026-07-28 ones from the extension). The MCP Apps extension stays when the image
    viewer is served (mcp.apps)."""
    server = mcp._mcp_server
    advertised = server.get_capabilities

    def get_capabilities(*args: Any, **kwargs: Any) -> mcp_types.ServerCapabilities:
        capabilities = advertised(*args, **kwargs)
        extensions = {
            name: value
            for name, value in (capabilities.extensions or {}).items()
            if name != UI_EXTENSION_ID or viewer
        }
        update: dict[str, Any] = {
            "prompts": mcp_types.PromptsCapability(list_changed=False),
            "resources": mcp_types.ResourcesCapability(subscribe=False, list_changed=False),
            "extensions": extensions or None,
        }
        if kwargs.get("protocol_version") not in MODERN_PROTOCOL_VERSIONS:
            update["tasks"] = legacy_capability()
        return capabilities.model_copy(update=update)

    setattr(server, "get_capabilities", get_capabilities)  # noqa: B010 - an instance override


def http_app(mcp: FastMCP[Any], settings: Settings, probes: Sequence[Route] = ()) -> ASGIApp:
    """The ASGI app for uvicorn: MCP at `mcp_path` plus the routes outside MCP.

    Host/Origin checking guards against DNS rebinding when bound to loopback; the
    public_url's host is allowed too, for servers behind a reverse proxy. The probes
    (liveness, readiness) are answered before that check, whatever the Host: a load
    balancer or an orchestrator asks each replica by its own address, and they tell
    nothing but "up" and the version.
    """
    allowed_hosts = None
    if settings.public_url:
        public_host = urlsplit(settings.public_url).netloc
        allowed_hosts = [public_host, public_host.split(":")[0]]
    sessions = SessionRegistry(
        max_per_subject=settings.max_sessions_per_subject,
        unused_seconds=settings.unused_session_seconds,
        path=settings.mcp_path,
    )
    app = mcp.http_app(
        path=settings.mcp_path,
        host_origin_protection="auto",
        allowed_hosts=allowed_hosts,
        middleware=[
            StarletteMiddleware(
                ExplainUnauthorized,
                oauth_wording=settings.oidc is not None and settings.oidc.interactive_login,
            ),
            StarletteMiddleware(ExplainTooLarge, path=settings.mcp_path),
            StarletteMiddleware(SessionGuard, registry=sessions),
        ],
    )
    sessions.attach(app, settings.mcp_path)
    traced = TracedRequests(app, settings.mcp_path)
    if not probes:
        return traced
    answering = Starlette(
        routes=[StarletteRoute(path, handler, methods=methods) for path, methods, handler in probes]
    )
    return _ProbesFirst(traced, answering, {path for path, _, _ in probes})


class _ProbesFirst:
    """Send the probes' exact paths to their own app, everything else to the guarded
    one: '/readyz/', '//readyz' or any other spelling goes through the Host check."""

    def __init__(self, app: ASGIApp, probes: ASGIApp, paths: set[str]) -> None:
        self._app = app
        self._probes = probes
        self._paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self._paths:
            await self._probes(scope, receive, send)
        else:
            await self._app(scope, receive, send)
