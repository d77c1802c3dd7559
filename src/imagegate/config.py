"""Settings: `IMAGEGATE_*` environment variables over an optional TOML file over defaults.

This is the only module that reads the environment. `load_settings` returns one frozen
`Settings` or raises `ConfigError` naming the file (or variable), the key and the reason.
Secrets (bearer token, link key) are accepted from the environment or from files with
restricted modes, never from the TOML file, which is usually world-readable.
"""

import ipaddress
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from imagegate.core.errors import ConfigError
from imagegate.core.tomlfile import describe, key_lines, line_of, read_toml
from imagegate.core.tracing import parse_headers
from imagegate.relays.config import AUTO, RelayConfig
from imagegate.relays.registry import KINDS
from imagegate.relays.wire.fetch import is_loopback_host

ENV_PREFIX = "IMAGEGATE_"
CONFIG_ENV = "IMAGEGATE_CONFIG"
SECRET_KEYS = frozenset(
    {
        "bearer_token",
        "link_key",
        "request_state_key",
        "database_password",
        "metrics_token",
        "gallery_client_secret",
    }
)
_RELAY_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_ACCEL_PREFIX = re.compile(r"/([A-Za-z0-9_-][A-Za-z0-9._-]*/)+")
_OWN_PATHS = (
    "/files/",
    "/uploads/",
    "/gallery",
    "/healthz",
    "/readyz",
    "/metrics",
    "/.well-known/",
)
"""Where imagegate answers, besides mcp_path: an nginx location must not take them."""


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "imagegate"


class Limits(BaseModel):
    """Per-subject limits; a missing limit is no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    images_per_day: int | None = Field(default=None, ge=0)
    cooldown_seconds: float | None = Field(default=None, ge=0)
    max_concurrent: int | None = Field(default=None, ge=1)
    spend_per_day: float | None = Field(default=None, ge=0)
    spend_per_month: float | None = Field(default=None, ge=0)
    max_stored_bytes: int | None = Field(default=None, ge=0)
    """The bytes of all one's images together, uploaded and generated."""
    retention_days: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Images are deleted this many days after they are stored (the top-level
    retention_days when unset here)."""


class QuotaSettings(BaseModel):
    """`[quotas]`: `default`, then groups (the most generous wins, per limit), then the
    subject's own entry (wins outright)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Limits = Limits()
    subjects: dict[str, Limits] = Field(default_factory=dict)
    groups: dict[str, Limits] = Field(default_factory=dict)


PRESET_SLOT = "{prompt}"
"""Where a preset's template takes the caller's prompt (a plain replacement)."""
PRESET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # not \t \n \r


class PresetSettings(BaseModel):
    """`[presets.NAME]`, a house style: `prompt` is a template whose `{prompt}` the
    caller's prompt replaces; the other keys are defaults that a call's own arguments
    override. Presets that callers save for themselves are checked by this model too."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(max_length=2000)
    negative_prompt: str | None = Field(default=None, min_length=1, max_length=1000)
    size: str | None = Field(default=None, pattern=r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$")
    quality: Literal["low", "medium", "high", "auto"] | None = None
    relay: str | None = Field(default=None, min_length=1, max_length=40)
    description: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("prompt")
    @classmethod
    def _has_the_slot(cls, value: str) -> str:
        if PRESET_SLOT not in value:
            raise ValueError(
                "must contain {prompt}, where the caller's prompt goes, such as "
                '"a watercolour of {prompt}, soft light"'
            )
        return value

    @field_validator("prompt", "negative_prompt", "description")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL.search(value):
            raise ValueError("must not contain control characters (only newlines and tabs)")
        return value


def preset_problem(
    preset: PresetSettings, max_prompt_chars: int, max_image_pixels: int
) -> str | None:
    """Why every call with `preset` would fail under these limits, as "key ...": a
    mistake to report when the preset is configured or saved, not at each call."""
    own = len(preset.prompt) - preset.prompt.count(PRESET_SLOT) * len(PRESET_SLOT)
    if own >= max_prompt_chars:
        return (
            f"prompt is {own} characters besides {PRESET_SLOT}, which leaves no room for a "
            f"prompt under max_prompt_chars ({max_prompt_chars})"
        )
    if preset.size is not None:
        width, height = (int(side) for side in preset.size.split("x"))
        if width * height > max_image_pixels:
            return f"size {preset.size} exceeds max_image_pixels ({max_image_pixels})"
    return None


if TYPE_CHECKING:
    AnyRelayConfig = RelayConfig
else:
    # Every kind's config model, told apart by `kind`: the registry found them.
    AnyRelayConfig = Annotated[
        Union[tuple(kind.config for kind in KINDS.values())],  # noqa: UP007
        Field(discriminator="kind"),
    ]

_DEFAULT_RELAYS: dict[str, RelayConfig] = {
    "placeholder": KINDS["placeholder"].config(kind="placeholder"),
}


def read_secret_env(name: str) -> str | None:
    """The value of a secret environment variable named in the config (a relay key);
    relays get this function, so that only this module reads the environment."""
    value = os.environ.get(name)
    return value.strip() if value and value.strip() else None


def loopback_address(text: str) -> tuple[str, int]:
    """(host, port) of 'host:port' (IPv6 in brackets) where host is a loopback IP
    address; a name is refused, as it may resolve to anything."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([0-9.]+):(\d{1,5})", text.strip())
    host = (match[1] or match[3]) if match else ""
    port = int(match[2] or match[4]) if match else 0
    if not (host and ip_is_loopback(host) and 1 <= port <= 65535):
        raise ValueError(
            "must be a loopback IP address and a port, such as 127.0.0.1:9464 or "
            "[::1]:9464: it serves /metrics without the main port's protections"
        )
    return host, port


def ip_is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


SIGNING_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class StorageSettings(BaseModel):
    """Where image bytes live: files under the state directory (the default), or an
    S3-compatible bucket that several replicas share."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["files", "s3"] = "files"
    endpoint: str | None = None
    """The S3 endpoint, such as https://s3.eu-central-1.amazonaws.com."""
    bucket: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    region: str = "us-east-1"
    prefix: str = Field(default="imagegate/", pattern=r"^([A-Za-z0-9_-][A-Za-z0-9._-]*/)*$")
    """Keys of blobs start with this (empty, or folder names each ending in '/', none
    starting with a dot)."""
    access_key_env: str = "AWS_ACCESS_KEY_ID"
    secret_key_env: str = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 - a name, not a key
    """The names of the environment variables that hold the keys (never the keys)."""
    serve: Literal["redirect", "proxy"] = "redirect"
    """Downloads: redirect to a short-lived presigned URL, or stream through imagegate."""
    presign_seconds: int = Field(default=60, ge=5, le=3600)
    allow_http: bool = False
    """Talk to a non-loopback endpoint over plain http (keys and images in clear)."""
    accel_redirect: str | None = None
    """With kind = "files" behind nginx: the URL prefix of an nginx `internal` location
    whose `alias` is `<state_dir>/blobs/`. A download that passes every check is then
    answered with an empty body and `X-Accel-Redirect: <prefix><aa>/<sha256>.<ext>`,
    and nginx sends the file."""

    @field_validator("accel_redirect")
    @classmethod
    def _accel_redirect_is_a_prefix(cls, value: str | None) -> str | None:
        # Names of letters, digits, '_', '-' and dots, none starting with a dot: no
        # '.' or '..', no '//', nothing nginx would decode or normalise.
        if value is not None and not _ACCEL_PREFIX.fullmatch(value):
            raise ValueError(
                'must be a URL path that starts and ends with "/", such as '
                '"/_imagegate_blobs/": names of letters, digits, "_", "-" and ".", none '
                'starting with "."'
            )
        return value

    @model_validator(mode="after")
    def _s3_needs(self) -> "StorageSettings":
        if self.kind != "s3":
            return self
        if self.accel_redirect is not None:
            raise ValueError(
                'accel_redirect works with kind = "files" only: nginx reads the image '
                'files from this machine\'s disk; with a bucket, serve = "redirect" '
                "sends the bytes from the bucket"
            )
        if not self.endpoint or not self.bucket:
            raise ValueError('kind = "s3" needs endpoint and bucket')
        if not re.fullmatch(r"https?://[^/?#\s]+/?", self.endpoint):
            raise ValueError(
                "endpoint must be an http(s) URL with no path, such as https://s3.example.com"
            )
        host = urlsplit(self.endpoint).hostname or ""
        if self.endpoint.startswith("http://") and not (is_loopback_host(host) or self.allow_http):
            raise ValueError(
                "endpoint is plain http: keys and images would travel in clear; use https, "
                "or set allow_http = true for a private network"
            )
        return self


class OIDCSettings(BaseModel):
    """Validate JWT access tokens from the team's OpenID provider."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str
    audience: str
    algorithms: tuple[str, ...] = ("RS256",)
    subject_claim: Literal["sub", "email", "preferred_username"] = "sub"
    groups_claim: str = "groups"
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwks_cache_seconds: int = Field(default=3600, ge=60)
    interactive_login: bool = False
    """Serve protected-resource metadata so MCP clients can log in at the issuer."""

    @field_validator("issuer")
    @classmethod
    def _issuer_is_https(cls, value: str) -> str:
        if not re.fullmatch(
            r"https://[^\s?#]+|http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(/[^\s?#]*)?", value
        ):
            raise ValueError("must be an https:// URL (http:// only for localhost)")
        return value.rstrip("/")

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        refused = [alg for alg in value if alg not in SIGNING_ALGORITHMS]
        if refused or not value:
            allowed = ", ".join(sorted(SIGNING_ALGORITHMS))
            raise ValueError(
                f"{', '.join(refused) or 'empty list'} not allowed; use asymmetric algorithms "
                f"only ({allowed}); 'none' and HS* are never accepted"
            )
        return value


class C2PASettings(BaseModel):
    """`[c2pa]`: the certificate that signs what imagegate stores (C2PA manifests), and
    the roots that verify_image trusts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    certificate_chain: Path | None = None
    """PEM: the signing certificate first, then its intermediates."""
    private_key: Path | None = None
    """PEM private key of that certificate, mode 0600 or 0640."""
    sign_command: tuple[str, ...] | None = Field(default=None, min_length=1)
    """Instead of private_key: a program that signs (an HSM's or KMS's tool): the
    bytes on its stdin, the signature on its stdout."""
    algorithm: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = "es256"
    tsa_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    """An RFC 3161 time-stamping service, asked at each signature."""
    trust_anchors: Path | None = None
    """PEM roots whose signatures verify_image and `imagegate verify` call trusted."""

    @model_validator(mode="after")
    def _a_certificate_and_one_way_to_sign(self) -> "C2PASettings":
        signs = (self.private_key is not None) + (self.sign_command is not None)
        if self.certificate_chain is not None and signs != 1:
            raise ValueError("certificate_chain needs private_key or sign_command (one of them)")
        if self.certificate_chain is None and signs:
            raise ValueError("private_key and sign_command need certificate_chain")
        return self

    @property
    def signs(self) -> bool:
        return self.certificate_chain is not None


class GallerySettings(BaseModel):
    """The web gallery at /gallery: people log in at the OpenID provider ([oidc]) as a
    confidential client, with the authorization code flow and PKCE."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str = Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
    scopes: tuple[str, ...] = ("openid",)
    """Asked for at login, besides the audience ([oidc].audience) as `resource`."""
    session_hours: float = Field(default=8.0, gt=0, le=24 * 30)
    """How long a login lasts in the browser; logging out ends it sooner."""

    @field_validator("scopes")
    @classmethod
    def _scope_tokens(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not all(re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", scope) for scope in value):
            raise ValueError("each scope must be one word of printable characters")
        return value


class Settings(BaseSettings):
    """Every setting of imagegate; see the README's table for what each one does."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    state_dir: Path = Field(default_factory=default_state_dir)
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=1, le=65535)
    mcp_path: str = "/mcp"
    public_url: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    """The server log's lines: text, or one JSON object each (with the trace id)."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    bearer_token: SecretStr | None = None
    bearer_token_file: Path | None = None
    bearer_subject: str = Field(default="dev", pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

    tokens_file: Path | None = None
    """Mapped bearer tokens (see tokens.example.toml)."""
    acl_file: Path | None = None
    acl_open: bool = False
    """Without an ACL file, give every authenticated caller every scope. Explicit on purpose."""
    strict_permissions: bool = False
    """Refuse (not just warn about) a tokens file that others can read."""
    oidc: OIDCSettings | None = None
    gallery: GallerySettings | None = None
    marking: Literal["off", "xmp", "c2pa", "both"] | None = None
    """How stored images say they are AI-generated; default xmp, or both with a
    [c2pa] certificate."""
    c2pa: C2PASettings | None = None
    """The web gallery; off unless this section is present."""
    gallery_client_secret: SecretStr | None = None
    """The gallery's client secret at the OpenID provider; or gallery_client_secret_file."""
    gallery_client_secret_file: Path | None = None
    audit_log: str = "-"
    """Audit destination: a file path, '-' for stderr (the journal under systemd), or 'off'."""
    audit_prompts: bool = False
    metrics: bool = False
    """Serve Prometheus metrics at /metrics (HTTP only): on the main port with
    metrics_token, or on metrics_listen; one of the two is required."""
    metrics_token: SecretStr | None = None
    """The scraper's bearer token for /metrics (not an MCP token)."""
    metrics_token_file: Path | None = None
    metrics_listen: str | None = None
    """A loopback address of its own for /metrics, such as 127.0.0.1:9464, serving
    nothing else; the main port then has no /metrics."""
    otlp_endpoint: str | None = None
    """An OpenTelemetry collector's OTLP/HTTP address, such as http://127.0.0.1:4318
    (traces go to its /v1/traces): when set, every tool call is traced."""
    otlp_headers_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The name of an environment variable holding the collector's headers, as
    `key=value,key2=value2` (an API key): never the headers themselves in the file."""
    otlp_service_name: str = Field(default="imagegate", min_length=1, max_length=100)

    database_url: str | None = None
    """A PostgreSQL database that several replicas share, as postgresql://user@host/db;
    the password comes from IMAGEGATE_DATABASE_PASSWORD or database_password_file."""
    database_password: SecretStr | None = None
    database_password_file: Path | None = None
    database_pool_size: int = Field(default=10, ge=1, le=200)
    """Connections to the database this process may hold."""
    storage: StorageSettings = Field(default_factory=StorageSettings)

    link_key: SecretStr | None = None
    link_key_file: Path | None = None
    request_state_key: SecretStr | None = None
    """Seals the state of paid-call confirmations (2026-07-28 clients); replicas share it."""
    request_state_key_file: Path | None = None
    link_ttl_seconds: int = Field(default=3600, ge=1)
    link_ttl_max_seconds: int = Field(default=7 * 86400, ge=1)

    default_relay: str = "placeholder"
    relays: dict[str, AnyRelayConfig] = Field(default_factory=lambda: dict(_DEFAULT_RELAYS))

    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
    """Per-subject limits ([quotas.default], [quotas.subjects."..."], [quotas.groups.*])."""
    presets: dict[str, PresetSettings] = Field(default_factory=dict)
    """Style presets ([presets.NAME]) every caller may use with preset=NAME."""
    max_presets_per_subject: int = Field(default=50, ge=0, le=1000)
    """Presets each caller may save for itself (save_preset); 0: none."""
    input_root: Path | None = None
    output_root: Path | None = None
    """stdio: generate_image and edit_image may save copies below it (save_to)."""
    """stdio only: edit_image may read local files under this directory."""
    max_images_per_call: int = Field(default=4, ge=1, le=10)
    max_image_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=4096 * 4096, ge=64 * 64)
    max_prompt_chars: int = Field(default=4000, ge=1)
    max_page_size: int = Field(default=100, ge=1, le=1000)
    max_sessions_per_subject: int = Field(default=16, ge=1, le=10_000)
    """Open handshake-era MCP sessions one subject may hold."""
    unused_session_seconds: float = Field(default=300.0, gt=0, le=3600)
    """A session that makes no request after its handshake ends after this long."""
    cpu_slots: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=0, le=256)
    """CPU-bound image steps at once, shared round-robin between callers; 0: unshared."""
    request_header_timeout: float = Field(default=10.0, gt=0, le=300)
    """A connection must send complete request headers within this many seconds."""
    max_connections_per_peer: int = Field(default=256, ge=0)
    """Open connections one address may hold; 0: no cap (behind a reverse proxy)."""
    thumbnail_px: int = Field(default=256, ge=16, le=1024)
    apps_viewer: bool = True
    """Offer the image viewer (ui://imagegate/viewer.html) to hosts that render MCP Apps."""
    view_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    """Memory for rendered views (resized or converted copies), least recently used
    first out."""
    sync_wait_seconds: float = Field(default=40.0, ge=0, le=3600)
    """How long a generation's call waits for its images before it answers "running"
    with a job id: below the 45-60 s after which common clients give up."""
    progress_seconds: float = Field(default=4.0, gt=0, le=5)
    """A waiting call (and `imagegate generate`) reports progress at least this often,
    also when the upstream reports none: clients see the call is alive."""
    upload_ttl_seconds: int = Field(default=900, ge=10, le=86400)
    """How long an upload link works (create_upload_link may ask for less)."""
    strip_location: bool = True
    """Remove location metadata (EXIF GPS, XMP and IPTC places) from uploads."""
    max_running_jobs: int = Field(default=16, ge=1, le=1000)
    """Jobs one caller may have running at once (in one process)."""
    retention_days: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Delete images this many days after they are stored; unset: keep them. [quotas]
    may set retention_days for groups and subjects too (the most generous group wins)."""
    retention_sweep_seconds: float = Field(default=600.0, ge=10, le=86400)
    """How often one process deletes the images whose time has come."""
    job_retention_seconds: int = Field(default=86400, ge=60)
    """How long a finished job (its result or its error) can still be fetched."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; the environment wins over it.
        return env_settings, init_settings

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres") or re.search(r"\s", value):
            raise ValueError("must be a postgresql:// URL")
        if parts.password or "password" in parse_qs(parts.query):
            # Config files and process listings are read by others; the URL is also
            # shown in logs and messages (without its user).
            raise ValueError(
                f"holds a password; leave it out and set {ENV_PREFIX}DATABASE_PASSWORD or "
                "database_password_file"
            )
        return value

    @field_validator("mcp_path")
    @classmethod
    def _path_starts_with_slash(cls, value: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9/_-]*", value):
            raise ValueError("must start with '/' and hold only letters, digits, '/', '_', '-'")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url_is_http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError("must be an http:// or https:// URL without query or fragment")
        return value.rstrip("/")

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_listen_is_loopback(cls, value: str | None) -> str | None:
        if value is not None:
            loopback_address(value)
        return value

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_endpoint_is_http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # No user:password@: credentials go in otlp_headers_env, out of the file.
        if not re.fullmatch(r"https?://[^\s/?#@]+(/[^\s?#]*)?", value):
            raise ValueError(
                "must be an http:// or https:// URL without credentials, query or fragment, "
                "such as http://127.0.0.1:4318"
            )
        return value.rstrip("/")

    def otlp_traces_url(self) -> str | None:
        """Where spans are sent: the endpoint's /v1/traces, unless it names that path."""
        if self.otlp_endpoint is None:
            return None
        if self.otlp_endpoint.endswith("/v1/traces"):
            return self.otlp_endpoint
        return self.otlp_endpoint + "/v1/traces"

    @field_validator("relays")
    @classmethod
    def _relay_names(cls, value: dict[str, AnyRelayConfig]) -> dict[str, AnyRelayConfig]:
        for name in value:
            if not _RELAY_NAME.fullmatch(name):
                raise ValueError(
                    f"relay name {name!r} must be 1-40 of a-z, 0-9, '-', '_' "
                    "and start with a letter or digit"
                )
        if AUTO in value:
            raise ValueError(
                f"relay name {AUTO!r} is reserved: relay={AUTO!r} lets imagegate choose"
            )
        if not value:
            raise ValueError("at least one relay must be configured")
        return value

    @field_validator("presets")
    @classmethod
    def _preset_names_and_relays(
        cls, value: dict[str, PresetSettings], info: ValidationInfo
    ) -> dict[str, PresetSettings]:
        relays = info.data.get("relays")  # absent when the relays were wrong
        for name, preset in value.items():
            if not PRESET_NAME.fullmatch(name):
                raise ValueError(
                    f"preset name {name!r} must be 1-40 of a-z, 0-9, '-', '_' and start with "
                    "a letter or digit"
                )
            if relays is not None and preset.relay not in (None, AUTO, *relays):
                raise ValueError(
                    f"preset {name!r}: relay {preset.relay!r} is not a relay; use one of: "
                    f"{', '.join(sorted(relays))}, or {AUTO!r} (imagegate chooses)"
                )
        return value

    @model_validator(mode="before")
    @classmethod
    def _single_relay_is_the_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and "default_relay" not in data:
            relays = data.get("relays")
            if isinstance(relays, dict) and len(relays) == 1:
                return {**data, "default_relay": next(iter(relays))}
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> "Settings":
        if self.default_relay not in self.relays:
            known = ", ".join(sorted(self.relays))
            raise ValueError(
                f"default_relay {self.default_relay!r} is not a relay; set default_relay "
                f"to one of: {known}"
            )
        if self.link_ttl_seconds > self.link_ttl_max_seconds:
            raise ValueError("link_ttl_seconds must not exceed link_ttl_max_seconds")
        if self.database_url is not None:
            self._check_shared()
        if self.metrics:
            self._check_metrics()
        if self.storage.accel_redirect is not None:
            self._check_accel_redirect(self.storage.accel_redirect)
        if self.gallery is not None:
            self._check_gallery()
        for name, preset in self.presets.items():
            self._check_preset(name, preset)
        return self

    def _check_preset(self, name: str, preset: PresetSettings) -> None:
        problem = preset_problem(preset, self.max_prompt_chars, self.max_image_pixels)
        if problem is not None:
            raise ValueError(f"presets.{name}.{problem}")

    def _check_gallery(self) -> None:
        """People log in at the team's provider, whose tokens [oidc] checks; the
        provider sends them back to public_url, the address their browser uses."""
        if self.oidc is None:
            raise ValueError("[gallery] needs [oidc]: people log in at the team's provider")
        if not self.public_url:
            raise ValueError(
                "[gallery] needs public_url: the provider sends people back to "
                "public_url + /gallery/callback, which must be registered there"
            )
        if urlsplit(self.public_url).path not in ("", "/"):
            raise ValueError(
                "[gallery] needs a public_url without a path: the gallery's pages and "
                "cookies live at /gallery of the host"
            )
        if self.gallery_client_secret is None and self.gallery_client_secret_file is None:
            raise ValueError(
                f"[gallery] needs the client secret: {ENV_PREFIX}GALLERY_CLIENT_SECRET or "
                "gallery_client_secret_file"
            )

    def _check_accel_redirect(self, prefix: str) -> None:
        """The links must lead to nginx, and nginx's internal location must not hide
        any of imagegate's own paths (a request there would get nginx's 404)."""
        if not self.public_url:
            raise ValueError(
                "storage.accel_redirect needs public_url, the address of the nginx in "
                "front: a link that reaches imagegate itself gets an empty answer"
            )
        first = "/" + prefix.split("/")[1]
        for own in (self.mcp_path, *_OWN_PATHS):
            if own == first or own.startswith(first + "/"):
                raise ValueError(
                    f"storage.accel_redirect {prefix!r} starts with the same name as "
                    f"imagegate's own path {own}, which nginx's internal location could "
                    'hide; choose another, such as "/_imagegate_blobs/"'
                )

    def _check_metrics(self) -> None:
        """/metrics tells how busy the server is and what it spends: never open to
        whoever reaches the main port."""
        token = self.metrics_token is not None or self.metrics_token_file is not None
        address = self.metrics_address()
        if not token and address is None:
            raise ValueError(
                f"metrics = true needs metrics_token ({ENV_PREFIX}METRICS_TOKEN or "
                "metrics_token_file) for /metrics on the main port, or metrics_listen "
                '(a loopback address such as "127.0.0.1:9464") for a listener of its own'
            )
        if address is not None and address[1] == self.port:
            raise ValueError(f"metrics_listen must use another port than port ({self.port})")

    def metrics_address(self) -> tuple[str, int] | None:
        """(host, port) of the metrics listener, when there is one."""
        return loopback_address(self.metrics_listen) if self.metrics_listen else None

    def _check_shared(self) -> None:
        """Replicas share a database: what each signs, every other must accept."""
        for key in ("link_key", "request_state_key"):
            if getattr(self, key) is None and getattr(self, f"{key}_file") is None:
                raise ValueError(
                    f"with database_url set, {key} must be configured "
                    f"({ENV_PREFIX}{key.upper()} or {key}_file): replicas share it, and a key "
                    "generated by each would make links or confirmations from one fail on "
                    "another. Make one with: openssl rand -hex 32"
                )

    def base_url(self) -> str:
        """Where clients reach this server: `public_url`, else the bind address."""
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self._binds_everywhere() else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def _binds_everywhere(self) -> bool:
        return self.host in ("0.0.0.0", "::", "")  # noqa: S104 - recognising it, not binding

    def warnings(self) -> list[str]:
        """What works, but likely not as the operator means it: said at start and by
        check-config."""
        said = []
        if self._binds_everywhere() and not self.public_url:
            said.append(
                f"host {self.host!r} without public_url: download links name 127.0.0.1, "
                "which other machines can't reach; set public_url to this server's address"
            )
        if self.database_url is not None and self.storage.kind == "files":
            said.append(
                "database_url is set but images are files under state_dir: every process "
                "must share that directory (one machine, or a shared file system); for "
                'replicas on several machines, set [storage] kind = "s3"'
            )
        if not self.metrics and (self.metrics_listen or self.metrics_token_file):
            said.append("metrics_listen or metrics_token_file is set but metrics is off")
        if self.otlp_headers_env and self.otlp_endpoint is None:
            said.append("otlp_headers_env is set but otlp_endpoint is not: no traces are sent")
        if self.otlp_headers_env and _in_clear(self.otlp_endpoint):
            said.append(
                "otlp_headers_env: the collector's headers (an API key) go over plain http:// "
                "to another machine; use https://"
            )
        if self.marking in ("c2pa", "both") and not (self.c2pa and self.c2pa.signs):
            said.append(
                f"marking = {self.marking!r} without a [c2pa] certificate_chain and "
                "private_key: images get no C2PA manifest"
                + (", and no marking at all" if self.marking == "c2pa" else "")
            )
        if self.gallery is not None and _in_clear(self.public_url):
            said.append(
                "[gallery] with a plain http:// public_url: sign-ins and session cookies "
                "cross the network in clear, and the cookies can't be Secure; use https://"
            )
        return said

    def marks(self) -> tuple[bool, bool]:
        """(XMP, C2PA): which markings stored images get."""
        signs = self.c2pa is not None and self.c2pa.signs
        marking = self.marking or ("both" if signs else "xmp")
        return marking in ("xmp", "both"), marking in ("c2pa", "both") and signs


def _in_clear(url: str | None) -> bool:
    """Plain http:// to another machine: what crosses the network can be read."""
    parts = urlsplit(url or "")
    return parts.scheme == "http" and not is_loopback_host(parts.hostname or "")


def config_path_from_env() -> Path | None:
    value = os.environ.get(CONFIG_ENV)
    return Path(value) if value else None


def otlp_headers(settings: Settings) -> dict[str, str]:
    """The collector's headers, from the variable otlp_headers_env names (if any)."""
    if not settings.otlp_headers_env:
        return {}
    text = read_secret_env(settings.otlp_headers_env)
    if text is None:
        raise ConfigError(
            f"otlp_headers_env: the environment variable {settings.otlp_headers_env} is "
            "not set; it must hold the collector's headers, as key=value,key2=value2"
        )
    try:
        return parse_headers(text)
    except ValueError as err:
        raise ConfigError(f"otlp_headers_env {settings.otlp_headers_env}: {err}") from None


def load_settings(config_path: Path | None = None) -> Settings:
    """Build the settings from the environment and an optional TOML file.

    `config_path` wins over `IMAGEGATE_CONFIG`. Raises ConfigError on any problem.
    """
    path = config_path or config_path_from_env()
    file_values: dict[str, Any] = {}
    text = ""
    if path is not None:
        file_values, text = read_toml(path)
    secrets_in_file = sorted(SECRET_KEYS & file_values.keys())
    if secrets_in_file:
        key = secrets_in_file[0]
        line = line_of(key_lines(text), [key])
        raise ConfigError(
            f"{path}:{line}: {key}: secrets are not read from the config file; set "
            f"{ENV_PREFIX}{key.upper()} in the environment or {key}_file to a file "
            "readable only by the service"
        )
    try:
        return Settings(**file_values)
    except ValidationError as err:
        raise ConfigError(
            describe(err, path, text, _env_origin(), union_tags={"relays": frozenset(KINDS)})
        ) from None
    except SettingsError as err:
        # A complex setting (a table) from the environment that is not valid JSON.
        field = re.search(r'field "([^"]+)"', str(err))
        name = f"{ENV_PREFIX}{field[1].upper()}" if field else "an IMAGEGATE_* variable"
        raise ConfigError(
            f"environment {name}: not valid JSON; set tables such as this one in the "
            "config file instead"
        ) from None


def _env_origin() -> Callable[[list[str | int]], str | None]:
    def origin(loc: list[str | int]) -> str | None:
        # The environment wins over the file: when both set a key, the value that
        # failed is the environment's.
        if loc and _from_env(str(loc[0])):
            return f"environment {ENV_PREFIX}{str(loc[0]).upper()}"
        return None

    return origin


def _from_env(key: str) -> bool:
    return f"{ENV_PREFIX}{key.upper()}" in {name.upper() for name in os.environ}
