"""Wire the pieces: settings in, a FastMCP server with tools, auth and routes out.

Nothing here is a module-level singleton; `build_app` constructs everything and
passes it down, so tests can build as many independent servers as they need.
"""

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

import httpx
from fastmcp import FastMCP
from fastmcp.tools import FunctionTool
from mcp.server.request_state import RequestStateSecurity
from mcp_types import ToolAnnotations
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.middleware import Middleware as StarletteMiddleware

from imagegate import __version__, tools
from imagegate.access import build_acl, build_authentication
from imagegate.acl import AccessPolicy
from imagegate.asgi import ExplainUnauthorized
from imagegate.audit import AuditLog
from imagegate.clock import Clock, SystemClock
from imagegate.config import Settings
from imagegate.errors import ImagegateError, PermissionDenied
from imagegate.inputs import InputResolver
from imagegate.keys import configured_secret, load_or_create_secret
from imagegate.middleware import AclMiddleware, AuditMiddleware, Forbidden, Refused
from imagegate.quota import QuotaStore
from imagegate.relays.registry import build_relays
from imagegate.routes import Routes
from imagegate.service import ImageService
from imagegate.statedir import prepare_state_dir
from imagegate.store.assets import DATABASE_FILE, AssetStore
from imagegate.store.links import LinkSigner

log = logging.getLogger("imagegate")

Transport = Literal["stdio", "http"]
ToolFn = TypeVar("ToolFn", bound=Callable[..., Awaitable[Any]])

INSTRUCTIONS = (
    "imagegate generates images and keeps them for you. Call generate_image with a "
    "prompt; each result has an asset id, a download URL with an expiry and a Markdown "
    "line to show it. list_relays tells which relays and options exist; list_images, "
    "get_image, create_download_link and delete_image manage your own images."
)

_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)


def domain_errors(fn: ToolFn) -> ToolFn:
    """The one place where domain errors become MCP tool errors carrying their message.

    Applied to every tool at registration. Raising ToolError (rather than letting
    FastMCP mask the exception) keeps the caller's message and keeps expected
    refusals out of the error log; anything else is still masked by FastMCP.
    """

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except PermissionDenied as err:
            raise Forbidden(str(err)) from None
        except ImagegateError as err:
            log.info("tool %s refused: %s", fn.__name__, err)
            raise Refused(str(err)) from None

    return cast(ToolFn, wrapper)


class _ServiceLifespan:
    def __init__(self, context: dict[str, Any]) -> None:
        self._context = context

    @asynccontextmanager
    async def __call__(self, server: FastMCP[Any]) -> AsyncIterator[dict[str, Any]]:
        yield self._context


@dataclass
class App:
    mcp: FastMCP[Any]
    service: ImageService
    store: AssetStore
    audit: AuditLog
    http: httpx.AsyncClient
    bearer_token: str | None
    """The generated development token (HTTP, no other auth configured), to show the
    operator at start; None otherwise."""

    async def aclose(self) -> None:
        await self.service.relays.aclose()
        await self.http.aclose()
        self.audit.close()
        self.service.quotas.close()
        self.store.close()


def resolve_secret(
    name: str, value: SecretStr | None, file: Path | None, settings: Settings, generated: str
) -> bytes:
    """A secret from the environment, else its file, else generated once (0600)."""
    configured = configured_secret(name, value, file)
    if configured is not None:
        return configured.encode()
    return load_or_create_secret(settings.state_dir / generated).encode()


def build_app(settings: Settings, transport: Transport, clock: Clock | None = None) -> App:
    clock = clock or SystemClock()
    http = transport == "http"
    relays = build_relays(settings)
    relay_names = [relay.name for relay in relays.all()]
    policy = AccessPolicy(build_acl(settings, relay_names, http))
    prepare_state_dir(settings.state_dir)
    http_client = httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)
    authentication = (
        build_authentication(settings, relay_names, clock, http_client) if http else None
    )
    audit = AuditLog(settings.audit_log)
    store = AssetStore(settings.state_dir, settings.max_image_bytes)
    signer = None
    if http or settings.public_url:
        key = resolve_secret(
            "link_key", settings.link_key, settings.link_key_file, settings, "link-signing.key"
        )
        signer = LinkSigner(key, settings.base_url())
    inputs = InputResolver(
        store,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        input_root=settings.input_root,
        local=not http,
    )
    quotas = QuotaStore(settings.state_dir / DATABASE_FILE)
    service = ImageService(settings, store, relays, signer, clock, inputs, quotas)

    mcp: FastMCP[Any] = FastMCP(
        "imagegate",
        instructions=INSTRUCTIONS,
        version=__version__,
        auth=authentication.provider if authentication else None,
        middleware=[
            AuditMiddleware(audit, policy, relays.default, clock, settings.audit_prompts),
            AclMiddleware(policy, relays.default),
        ],
        lifespan=_ServiceLifespan({tools.SERVICE_KEY: service, tools.POLICY_KEY: policy}),
        mask_error_details=True,
        # The confirmation state of 2026-07-28 calls is sealed with a key that survives
        # restarts and that replicas share (with the same server name, "imagegate").
        request_state_security=RequestStateSecurity(
            keys=[
                resolve_secret(
                    "request_state_key",
                    settings.request_state_key,
                    settings.request_state_key_file,
                    settings,
                    "request-state.key",
                )
            ]
        ),
    )
    _register_tools(mcp, settings.max_images_per_call)
    if signer is not None:
        routes = Routes(service, signer, clock)
        mcp.custom_route("/files/{name}", methods=["GET", "HEAD"])(routes.download)
        mcp.custom_route("/healthz", methods=["GET"])(routes.healthz)
        mcp.custom_route("/readyz", methods=["GET"])(routes.readyz)
    return App(
        mcp=mcp,
        service=service,
        store=store,
        audit=audit,
        http=http_client,
        bearer_token=authentication.dev_token if authentication else None,
    )


def http_asgi_app(app: App, settings: Settings) -> Starlette:
    """The ASGI app for uvicorn: MCP at `mcp_path` plus the download and health routes.

    Host/Origin checking guards against DNS rebinding when bound to loopback; the
    public_url's host is allowed too, for servers behind a reverse proxy.
    """
    allowed_hosts = None
    if settings.public_url:
        public_host = urlsplit(settings.public_url).netloc
        allowed_hosts = [public_host, public_host.split(":")[0]]
    return app.mcp.http_app(
        path=settings.mcp_path,
        host_origin_protection="auto",
        allowed_hosts=allowed_hosts,
        middleware=[
            StarletteMiddleware(
                ExplainUnauthorized,
                oauth_wording=settings.oidc is not None and settings.oidc.interactive_login,
            )
        ],
    )


_TOOL_TABLE: list[tuple[Callable[..., Awaitable[Any]], bool, ToolAnnotations]] = [
    # (tool, returns images, annotations)
    (
        tools.generate_image,
        True,
        ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True),
    ),
    (
        tools.edit_image,
        True,
        ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True),
    ),
    (tools.list_images, True, _READ_ONLY),
    (tools.get_image, True, _READ_ONLY),
    (tools.create_download_link, True, _READ_ONLY),
    (tools.delete_image, False, ToolAnnotations(destructive_hint=True, idempotent_hint=True)),
    (tools.get_usage, False, _READ_ONLY),
    (tools.reset_usage, False, ToolAnnotations(destructive_hint=True, idempotent_hint=True)),
    (tools.list_relays, False, _READ_ONLY),
    (tools.server_info, False, _READ_ONLY),
]


def _register_tools(mcp: FastMCP[Any], max_images: int) -> None:
    for tool, returns_images, annotations in _TOOL_TABLE:
        if not returns_images:
            mcp.tool(domain_errors(tool), annotations=annotations)
            continue
        registered = FunctionTool.from_function(
            domain_errors(tool), output_schema=tools.IMAGES_OUTPUT_SCHEMA, annotations=annotations
        )
        # The signature's bound is the most any server allows; clients should see this
        # server's, which the generation step enforces.
        count = registered.parameters.get("properties", {}).get("n")
        if count is not None:
            count["maximum"] = max_images
        mcp.add_tool(registered)
