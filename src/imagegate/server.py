"""The composition root: settings in, every part built and wired, an App out.

Nothing here is a module-level singleton; `build_app` constructs everything and
passes it down, so tests can build as many independent servers as they need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
from fastmcp import FastMCP
from pydantic import SecretStr
from starlette.types import ASGIApp

from imagegate import __version__
from imagegate.access.audit import AuditLog
from imagegate.access.policy import AccessPolicy
from imagegate.access.setup import build_acl, build_token_checks, metrics_token
from imagegate.config import Settings, otlp_headers, read_secret_env
from imagegate.core.clock import Clock, SystemClock
from imagegate.core.cpu import FairShare
from imagegate.core.errors import ConfigError
from imagegate.core.metrics import Metrics
from imagegate.core.secrets import configured_secret, load_or_create_secret
from imagegate.core.statedir import open_to_web_server, prepare_state_dir
from imagegate.mcp.app import Route, build_mcp, http_app
from imagegate.mcp.auth import auth_provider
from imagegate.relays.registry import build_relays
from imagegate.service.housekeeping import Housekeeping
from imagegate.service.images import ImageService
from imagegate.service.inputs import InputResolver
from imagegate.service.jobs import JobRunner
from imagegate.service.links import LinkSigner
from imagegate.service.marking import build_marker
from imagegate.service.presets import Presets, check_server_presets
from imagegate.service.uploads import Uploads
from imagegate.storage.assets import AssetStore
from imagegate.storage.embedded import open_embedded
from imagegate.storage.files import FileBlobStore
from imagegate.storage.interfaces import BlobStore, Storage
from imagegate.web.metrics import MetricsEndpoint, OwnListener
from imagegate.web.routes import Routes
from imagegate.web.uploads import upload_routes

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from imagegate.access.oidc import OIDCVerifier
    from imagegate.core.spanexport import Tracing

Transport = Literal["stdio", "http"]


@dataclass
class App:
    mcp: FastMCP[Any]
    service: ImageService
    storage: Storage
    audit: AuditLog
    http: httpx.AsyncClient | None
    """The token checks' client (an OIDC provider's keys): HTTP only."""
    bearer_token: str | None
    """The generated development token (HTTP, no other auth configured), to show the
    operator at start; None otherwise."""
    probes: list[Route] = field(default_factory=list)
    """/healthz and /readyz, served outside the Host check (HTTP only); and /metrics
    with its token, when metrics are on without a listener of their own."""
    metrics: Metrics = field(default_factory=Metrics)
    scrape: MetricsEndpoint | None = None
    """/metrics, when metrics are on (HTTP only)."""
    housekeeping: Housekeeping | None = None
    """Retention and staging sweeps, which the server's lifespan runs."""

    async def aclose(self) -> None:
        await self.service.relays.aclose()
        if self.http is not None:
            await self.http.aclose()
        self.audit.close()
        await self.storage.aclose()


def resolve_secret(
    name: str, value: SecretStr | None, file: Path | None, settings: Settings, generated: str
) -> bytes:
    """A secret from the environment, else its file, else generated once (0600)."""
    configured = configured_secret(name, value, file)
    if configured is not None:
        return configured.encode()
    return load_or_create_secret(settings.state_dir / generated).encode()


def database_password(settings: Settings) -> str | None:
    return configured_secret(
        "database_password", settings.database_password, settings.database_password_file
    )


def open_blobs(settings: Settings) -> BlobStore:
    """Files under the state directory, or the configured bucket (staging files stay
    local, under the state directory)."""
    store = settings.storage
    if store.kind == "files":
        return FileBlobStore(
            settings.state_dir,
            settings.max_image_bytes,
            readable_by_web_server=store.accel_redirect is not None,
        )
    assert store.endpoint is not None  # StorageSettings checked both for kind "s3"
    assert store.bucket is not None
    # Imported here: only a server with a bucket loads obstore.
    from imagegate.storage.s3 import S3BlobStore

    return S3BlobStore(
        settings.state_dir,
        settings.max_image_bytes,
        endpoint=store.endpoint,
        bucket=store.bucket,
        region=store.region,
        prefix=store.prefix,
        access_key=_bucket_key(store.access_key_env, "access_key_env"),
        secret_key=_bucket_key(store.secret_key_env, "secret_key_env"),
        presign_seconds=store.presign_seconds,
    )


def _bucket_key(name: str, setting: str) -> str:
    value = read_secret_env(name)
    if value is None:
        raise ConfigError(
            f"storage.{setting}: the environment variable {name} is not set; it must hold "
            "the bucket's key"
        )
    return value


def open_storage(settings: Settings) -> Storage:
    """The backend the settings name: embedded (SQLite and files under the state
    directory), or PostgreSQL that replicas share, with files or an S3 bucket."""
    blobs = open_blobs(settings)
    if settings.database_url is None:
        return open_embedded(settings.state_dir, settings.max_image_bytes, blobs)
    # Imported here: only a server with a database loads asyncpg.
    from imagegate.storage.postgres.backend import open_postgres

    return open_postgres(
        settings.database_url, database_password(settings), settings.database_pool_size, blobs
    )


def build_app(settings: Settings, transport: Transport, clock: Clock | None = None) -> App:
    clock = clock or SystemClock()
    http = transport == "http"
    # Counted whether or not /metrics is served: one code path, and a few counters.
    metrics = Metrics()
    relays = build_relays(settings.relays, settings.default_relay, read_secret_env, metrics)
    check_server_presets(settings, relays.all())
    relay_names = [relay.name for relay in relays.all()]
    policy = AccessPolicy(build_acl(settings, relay_names, http))
    accel = settings.storage.accel_redirect is not None
    prepare_state_dir(settings.state_dir, web_passage=accel)
    http_client = None
    checks = None
    if http:  # stdio has no token checks, and is spared making a TLS context for them
        http_client = httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)
        checks = build_token_checks(settings, relay_names, clock, http_client)
    audit = AuditLog(settings.audit_log)
    storage = open_storage(settings)
    if accel:  # the database file is there now: it is kept from nginx before the way in
        open_to_web_server(settings.state_dir)
    assets = AssetStore(storage.index, storage.blobs)
    signer = None
    if http or settings.public_url:
        key = resolve_secret(
            "link_key", settings.link_key, settings.link_key_file, settings, "link-signing.key"
        )
        signer = LinkSigner(key, settings.base_url())
    inputs = InputResolver(
        assets,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        input_root=settings.input_root,
        local=not http,
    )
    fair = FairShare(settings.cpu_slots) if settings.cpu_slots else None
    service = ImageService(
        settings,
        assets,
        storage.quotas,
        storage.nonces,
        relays,
        signer,
        clock,
        inputs,
        fair,
        metrics=metrics,
        presets=Presets(settings, relays, storage.presets, clock),
        marker=build_marker(settings),
    )
    request_state_key = resolve_secret(
        "request_state_key",
        settings.request_state_key,
        settings.request_state_key_file,
        settings,
        "request-state.key",
    )
    uploads = None
    routes: list[Route] = []
    probes: list[Route] = []
    if signer is not None:
        uploads = Uploads(settings, assets, storage.uploads, signer, clock, fair, metrics)
        web = Routes(service, signer, clock, metrics)
        routes = [*web.table(), *upload_routes(uploads, metrics)]
        probes = web.probes()
        if checks is not None and checks.oidc is not None and http_client is not None:
            routes += gallery_routes(
                settings, service, policy, checks.oidc, http_client, clock, audit
            )
    scrape = None
    if settings.metrics and http:
        scrape = MetricsEndpoint(metrics, metrics_token(settings))
        if settings.metrics_listen is None:
            probes.append(scrape.route())
    housekeeping = Housekeeping(settings, assets, storage.leases, clock)
    mcp = build_mcp(
        settings,
        service,
        policy,
        audit,
        clock,
        auth_provider(checks.check, settings) if checks else None,
        request_state_key,
        JobRunner(
            storage.jobs,
            clock,
            settings.job_retention_seconds,
            settings.max_running_jobs,
            metrics=metrics,
        ),
        local=not http,
        housekeeping=housekeeping,
        routes=routes,
        uploads=uploads,
        metrics=metrics,
    )
    return App(
        mcp=mcp,
        service=service,
        storage=storage,
        audit=audit,
        http=http_client,
        bearer_token=checks.dev_token if checks else None,
        probes=probes,
        metrics=metrics,
        scrape=scrape,
        housekeeping=housekeeping,
    )


def gallery_routes(
    settings: Settings,
    service: ImageService,
    policy: AccessPolicy,
    oidc: OIDCVerifier,
    http: httpx.AsyncClient,
    clock: Clock,
    audit: AuditLog,
) -> list[Route]:
    """/gallery and its pages, when [gallery] is set (it needs [oidc] and public_url)."""
    if settings.gallery is None or settings.oidc is None or settings.public_url is None:
        return []
    # Imported here: only a server with a gallery loads Jinja2.
    from imagegate.access.login import Login
    from imagegate.access.sessions import Sealer
    from imagegate.web.gallery import Gallery

    secret = configured_secret(
        "gallery_client_secret",
        settings.gallery_client_secret,
        settings.gallery_client_secret_file,
    )
    assert secret is not None  # Settings checked that one of the two is set
    redirect_uri = f"{settings.public_url}/gallery/callback"
    login = Login(settings.oidc, settings.gallery, secret, redirect_uri, http, oidc)
    key = resolve_secret(
        "link_key", settings.link_key, settings.link_key_file, settings, "link-signing.key"
    )
    return Gallery(settings, service, policy, login, Sealer(key), clock, audit).table()


def setup_tracing(settings: Settings, exporter: SpanExporter | None = None) -> Tracing | None:
    """Traces for this process, when otlp_endpoint is set (or an `exporter` is given,
    as tests do): spans batched to the collector over OTLP/HTTP. None when off."""
    url = settings.otlp_traces_url()
    if exporter is None and url is None:
        return None
    # Only now: a process that sends no traces never loads OpenTelemetry's SDK.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from imagegate.core.spanexport import install

    if exporter is not None:
        return install(exporter, settings.otlp_service_name, __version__, batch=False)
    return install(
        OTLPSpanExporter(endpoint=url, headers=otlp_headers(settings), timeout=10),
        settings.otlp_service_name,
        __version__,
    )


def http_asgi_app(app: App, settings: Settings) -> ASGIApp:
    """The ASGI app for uvicorn: MCP at `mcp_path` plus the download and health routes;
    with `metrics_listen`, /metrics alone for requests on that socket, which the entry
    point binds beside the main one."""
    asgi = http_app(app.mcp, settings, app.probes)
    address = settings.metrics_address()
    if app.scrape is not None and address is not None:
        return OwnListener(asgi, address[1], app.scrape)
    return asgi
