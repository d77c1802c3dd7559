"""What the upstream relay adapters share: defaults, capabilities and HTTP from config."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import httpx

from imagegate.config import HttpRelayConfig, PriceTable, read_secret_env
from imagegate.errors import ConfigError, RelayError
from imagegate.images import ImageFormat
from imagegate.relays.base import RelayDefaults, RelayImage, Size, discard_all
from imagegate.relays.http import RetryPolicy, Timeouts, Upstream

DEFAULT_SIZE = Size(1024, 1024)


def relay_defaults(config: HttpRelayConfig, size: Size = DEFAULT_SIZE) -> RelayDefaults:
    return RelayDefaults(
        size=Size.parse(config.default_size) if config.default_size else size,
        output_format=ImageFormat(config.default_format or "png"),
        quality=config.default_quality,
        background=config.default_background,
        compression=config.default_compression,
    )


ConfigT = TypeVar("ConfigT", bound=HttpRelayConfig)


class ConfiguredRelay(Generic[ConfigT]):
    """What every upstream adapter takes from its config in the same way."""

    def __init__(self, name: str, config: ConfigT, description: str) -> None:
        self.name = name
        self.description = config.description or description
        self.paid = config.paid
        self.model: str | None = config.model
        self.price: PriceTable | None = config.price
        self.defaults = relay_defaults(config)
        self._config = config

    def render_prompt(self, prompt: str) -> str:
        return self._config.render_prompt(prompt)


def required_api_key(name: str, config: HttpRelayConfig) -> str:
    """The relay's key from the environment variable its config names; fail at start."""
    if config.api_key_env is None:
        raise ConfigError(f"relays.{name}.api_key_env: this relay kind needs an API key")
    return _env_key(name, config.api_key_env)


def optional_api_key(name: str, config: HttpRelayConfig) -> str | None:
    """The key when the config names one (it must then be set), else None."""
    return None if config.api_key_env is None else _env_key(name, config.api_key_env)


def _env_key(name: str, variable: str) -> str:
    value = read_secret_env(variable)
    if value is None:
        raise ConfigError(f"relays.{name}.api_key_env: environment variable {variable} is not set")
    return value


def http_client(config: HttpRelayConfig) -> httpx.AsyncClient:
    """A relay's own connection pool, so a slow relay never holds another's."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(config.total_timeout, connect=config.connect_timeout),
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
        follow_redirects=False,
    )


@asynccontextmanager
async def discarded_on_failure(
    relay: str, images: list[RelayImage], total_timeout: float
) -> AsyncIterator[None]:
    """Around a relay call: on any failure discard what was staged; an expired
    `anyio.fail_after(total_timeout)` inside becomes a clean RelayError."""
    try:
        yield
    except TimeoutError:
        discard_all(images)
        raise RelayError(f"relay {relay!r} did not finish within {total_timeout:g} s") from None
    except BaseException:
        discard_all(images)
        raise


def upstream_for(
    name: str,
    config: HttpRelayConfig,
    headers: dict[str, str],
    secrets: tuple[str, ...],
    client: httpx.AsyncClient | None = None,
) -> Upstream:
    """An Upstream with its own connection pool and the relay's timeouts and retries."""
    client = client or http_client(config)
    return Upstream(
        name,
        client,
        config.base_url,
        headers=headers,
        timeouts=Timeouts(
            connect=config.connect_timeout,
            first_byte=config.first_byte_timeout,
            total=config.total_timeout,
        ),
        retry=RetryPolicy(attempts=config.max_retries, budget_seconds=config.retry_budget_seconds),
        max_response_bytes=config.max_response_bytes,
        secrets=secrets,
    )
