"""Settings: `IMAGEGATE_*` environment variables over an optional TOML file over defaults.

This is the only module that reads the environment. `load_settings` returns one frozen
`Settings` or raises `ConfigError` naming the file (or variable), the key and the reason.
Secrets (bearer token, link key) are accepted from the environment or from files with
restricted modes, never from the TOML file, which is usually world-readable.
"""

import os
import re
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from imagegate.errors import ConfigError
from imagegate.quota import QuotaSettings
from imagegate.tomlfile import describe, key_lines, line_of, read_toml

ENV_PREFIX = "IMAGEGATE_"
CONFIG_ENV = "IMAGEGATE_CONFIG"
SECRET_KEYS = frozenset({"bearer_token", "link_key", "request_state_key"})
_RELAY_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "imagegate"


class PriceTable(BaseModel):
    """Estimated price per image, for confirmations and budgets; keys are `*`,
    `<quality>`, `<WxH>` or `<WxH>:<quality>` (most specific wins)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = "USD"
    per_image: dict[str, float] = Field(default_factory=dict)

    def estimate(self, size: str | None, quality: str | None) -> float | None:
        """Price of one image, or None when the table doesn't say."""
        for key in (f"{size}:{quality}", f"{size}", f"{quality}", "*"):
            if key in self.per_image:
                return self.per_image[key]
        return None


class _RelayBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    prompt_template: str = "{prompt}"
    """How the caller's prompt is sent; must contain {prompt}."""
    prompt_prefix: str = ""

    @field_validator("prompt_template")
    @classmethod
    def _has_prompt(cls, value: str) -> str:
        if "{prompt}" not in value:
            raise ValueError("must contain {prompt}")
        return value

    def render_prompt(self, prompt: str) -> str:
        # str.replace, not str.format: a caller's braces must not reach format().
        return self.prompt_prefix + self.prompt_template.replace("{prompt}", prompt)


class PlaceholderRelayConfig(_RelayBase):
    """The offline relay: draws an image locally with Pillow; costs nothing."""

    kind: Literal["placeholder"]
    description: str = "Offline placeholder images drawn locally (free, no network)"
    paid: Literal[False] = False
    delay_seconds: float = Field(default=0.0, ge=0, le=60)
    """Simulated generation time, reported as progress; for demos and benchmarks."""


_ENV_NAME = r"^[A-Z_][A-Z0-9_]{0,127}$"


class HttpRelayConfig(_RelayBase):
    """What every upstream relay has: where it is, its key's variable, limits, price."""

    base_url: str
    api_key_env: str | None = Field(default=None, pattern=_ENV_NAME)
    """The NAME of the environment variable that holds the key, never the key."""
    model: str | None = None
    paid: bool = True
    price: PriceTable | None = None
    request_policy: Literal["openai", "compat"] = "openai"
    """openai: official fields only; compat: also seed, negative_prompt and similar."""
    default_size: str | None = None
    default_quality: Literal["low", "medium", "high", "auto"] | None = None
    default_format: Literal["png", "jpeg", "webp"] | None = None
    default_background: Literal["transparent", "opaque", "auto"] | None = None
    default_compression: int | None = Field(default=None, ge=0, le=100)
    connect_timeout: float = Field(default=10.0, gt=0, le=120)
    first_byte_timeout: float = Field(default=120.0, gt=0, le=1800)
    total_timeout: float = Field(default=300.0, gt=0, le=3600)
    max_retries: int = Field(default=3, ge=1, le=10)
    """Tries in all, for what may be retried (429, 5xx, connection errors)."""
    retry_budget_seconds: float = Field(default=60.0, ge=0, le=600)
    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s?#]+", value):
            raise ValueError("must be an http:// or https:// URL without query or fragment")
        return value.rstrip("/")


class OpenAIResponsesRelayConfig(HttpRelayConfig):
    kind: Literal["openai-responses"]
    model: str | None = "gpt-5"
    image_model: str | None = None
    """The image_generation tool's model (e.g. gpt-image-1.5); None: the upstream's."""


class OpenAIImagesRelayConfig(HttpRelayConfig):
    kind: Literal["openai-images"]
    model: str | None = "gpt-image-1.5"
    stream: bool = False
    """Use the streaming endpoint (partial images, progress)."""


class GeminiRelayConfig(HttpRelayConfig):
    kind: Literal["gemini"]
    base_url: str = "https://generativelanguage.googleapis.com/v1beta"
    model: str | None = "gemini-2.5-flash-image"
    image_size: Literal["1K", "2K", "4K"] | None = None


class SDWebUIRelayConfig(HttpRelayConfig):
    kind: Literal["sd-webui"]
    paid: bool = False
    request_policy: Literal["openai", "compat"] = "compat"
    steps: int = Field(default=30, ge=1, le=150)
    sampler: str | None = None
    cfg_scale: float = Field(default=7.0, ge=1, le=30)
    denoising_strength: float = Field(default=0.75, ge=0, le=1)
    basic_auth_user: str | None = None
    basic_auth_password_env: str | None = Field(default=None, pattern=_ENV_NAME)
    progress_interval: float = Field(default=1.0, ge=0.05, le=30)


class OpenRouterRelayConfig(HttpRelayConfig):
    kind: Literal["openrouter"]
    base_url: str = "https://openrouter.ai/api/v1"
    model: str | None = "google/gemini-2.5-flash-image"


UpstreamRelayConfig = (
    OpenAIResponsesRelayConfig
    | OpenAIImagesRelayConfig
    | GeminiRelayConfig
    | SDWebUIRelayConfig
    | OpenRouterRelayConfig
)
RelayConfig = Annotated[PlaceholderRelayConfig | UpstreamRelayConfig, Field(discriminator="kind")]

RELAY_KINDS = frozenset(
    typing.get_args(cls.model_fields["kind"].annotation)[0]
    for cls in typing.get_args(typing.get_args(RelayConfig)[0])
)

_DEFAULT_RELAYS: dict[str, RelayConfig] = {
    "placeholder": PlaceholderRelayConfig(kind="placeholder"),
}


def read_secret_env(name: str) -> str | None:
    """The value of a secret environment variable named in the config (a relay key)."""
    value = os.environ.get(name)
    return value.strip() if value and value.strip() else None


SIGNING_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


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
    audit_log: str = "-"
    """Audit destination: a file path, '-' for stderr (the journal under systemd), or 'off'."""
    audit_prompts: bool = False

    link_key: SecretStr | None = None
    link_key_file: Path | None = None
    request_state_key: SecretStr | None = None
    """Seals the state of paid-call confirmations (2026-07-28 clients); replicas share it."""
    request_state_key_file: Path | None = None
    link_ttl_seconds: int = Field(default=3600, ge=1)
    link_ttl_max_seconds: int = Field(default=7 * 86400, ge=1)

    default_relay: str = "placeholder"
    relays: dict[str, RelayConfig] = Field(default_factory=lambda: dict(_DEFAULT_RELAYS))

    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
    """Per-subject limits ([quotas.default], [quotas.subjects."..."], [quotas.groups.*])."""
    input_root: Path | None = None
    """stdio only: edit_image may read local files under this directory."""
    max_images_per_call: int = Field(default=4, ge=1, le=10)
    max_image_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=4096 * 4096, ge=64 * 64)
    max_prompt_chars: int = Field(default=4000, ge=1)
    max_page_size: int = Field(default=100, ge=1, le=1000)
    thumbnail_px: int = Field(default=256, ge=16, le=1024)

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

    @field_validator("relays")
    @classmethod
    def _relay_names(cls, value: dict[str, RelayConfig]) -> dict[str, RelayConfig]:
        for name in value:
            if not _RELAY_NAME.fullmatch(name):
                raise ValueError(
                    f"relay name {name!r} must be 1-40 of a-z, 0-9, '-', '_' "
                    "and start with a letter or digit"
                )
        if not value:
            raise ValueError("at least one relay must be configured")
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
        return self

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

    def link_warning(self) -> str | None:
        """Why download links would not work for other machines, if they wouldn't."""
        if self._binds_everywhere() and not self.public_url:
            return (
                f"host {self.host!r} without public_url: download links name 127.0.0.1, "
                "which other machines can't reach; set public_url to this server's address"
            )
        return None


def config_path_from_env() -> Path | None:
    value = os.environ.get(CONFIG_ENV)
    return Path(value) if value else None


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
            describe(err, path, text, _env_origin(file_values), union_tags={"relays": RELAY_KINDS})
        ) from None
    except SettingsError as err:
        # A complex setting (a table) from the environment that is not valid JSON.
        field = re.search(r'field "([^"]+)"', str(err))
        name = f"{ENV_PREFIX}{field[1].upper()}" if field else "an IMAGEGATE_* variable"
        raise ConfigError(
            f"environment {name}: not valid JSON; set tables such as this one in the "
            "config file instead"
        ) from None


def _env_origin(file_values: Mapping[str, Any]) -> Callable[[list[str | int]], str | None]:
    def origin(loc: list[str | int]) -> str | None:
        if loc and loc[0] not in file_values and _from_env(str(loc[0])):
            return f"environment {ENV_PREFIX}{str(loc[0]).upper()}"
        return None

    return origin


def _from_env(key: str) -> bool:
    return f"{ENV_PREFIX}{key.upper()}" in {name.upper() for name in os.environ}
