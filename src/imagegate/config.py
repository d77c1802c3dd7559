"""Settings: `IMAGEGATE_*` environment variables over an optional TOML file over defaults.

This is the only module that reads the environment. `load_settings` returns one frozen
`Settings` or raises `ConfigError` naming the file (or variable), the key and the reason.
Secrets (bearer token, link key) are accepted from the environment or from files with
restricted modes, never from the TOML file, which is usually world-readable.
"""

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from imagegate.errors import ConfigError

ENV_PREFIX = "IMAGEGATE_"
CONFIG_ENV = "IMAGEGATE_CONFIG"
SECRET_KEYS = frozenset({"bearer_token", "link_key"})
_RELAY_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "imagegate"


class PlaceholderRelayConfig(BaseModel):
    """The offline relay: draws an image locally with Pillow; costs nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["placeholder"]
    description: str = "Offline placeholder images drawn locally (free, no network)"
    paid: Literal[False] = False
    delay_seconds: float = Field(default=0.0, ge=0, le=60)
    """Simulated generation time, reported as progress; for demos and benchmarks."""


RelayConfig = PlaceholderRelayConfig

_DEFAULT_RELAYS: dict[str, RelayConfig] = {
    "placeholder": PlaceholderRelayConfig(kind="placeholder"),
}


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

    bearer_token: SecretStr | None = None
    bearer_token_file: Path | None = None
    bearer_subject: str = Field(default="dev", pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

    link_key: SecretStr | None = None
    link_key_file: Path | None = None
    link_ttl_seconds: int = Field(default=3600, ge=1)
    link_ttl_max_seconds: int = Field(default=7 * 86400, ge=1)

    default_relay: str = "placeholder"
    relays: dict[str, RelayConfig] = Field(default_factory=lambda: dict(_DEFAULT_RELAYS))

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
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning every failure into a ConfigError naming the file."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a TOML file") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8 text") from None


def config_path_from_env() -> Path | None:
    value = os.environ.get(CONFIG_ENV)
    return Path(value) if value else None


def load_settings(config_path: Path | None = None) -> Settings:
    """Build the settings from the environment and an optional TOML file.

    `config_path` wins over `IMAGEGATE_CONFIG`. Raises ConfigError on any problem.
    """
    path = config_path or config_path_from_env()
    file_values: dict[str, Any] = read_toml(path) if path else {}
    secrets_in_file = sorted(SECRET_KEYS & file_values.keys())
    if secrets_in_file:
        key = secrets_in_file[0]
        raise ConfigError(
            f"{path}: {key}: secrets are not read from the config file; set "
            f"{ENV_PREFIX}{key.upper()} in the environment or {key}_file to a file "
            "readable only by the service"
        )
    try:
        return Settings(**file_values)
    except ValidationError as err:
        raise ConfigError(_describe(err, path, file_values)) from None


def _describe(err: ValidationError, path: Path | None, file_values: Mapping[str, Any]) -> str:
    lines = []
    for problem in err.errors():
        loc = [str(part) for part in problem["loc"]]
        key = ".".join(loc) or "(top level)"
        if loc and loc[0] not in file_values and _from_env(loc[0]):
            where = f"environment {ENV_PREFIX}{loc[0].upper()}"
        elif path is not None:
            where = str(path)
        else:
            where = "settings"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling; see the README's settings table)"
        lines.append(f"{where}: {key}: {message}")
    return "\n".join(lines)


def _from_env(key: str) -> bool:
    return f"{ENV_PREFIX}{key.upper()}" in {name.upper() for name in os.environ}
