"""What the upstream relay adapters share: identity, defaults and keys from config, an
HTTP client per relay, staging what upstreams send, and the one-call-per-image loop."""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import anyio
import httpcore
import httpx

from imagegate.core.base64data import Base64Error, decode_into
from imagegate.core.cpu import run_cpu
from imagegate.core.errors import ConfigError, RelayError
from imagegate.core.images import ImageFormat
from imagegate.core.staging import StagedBlob
from imagegate.relays.base import (
    InputImage,
    ProgressFn,
    RelayDefaults,
    RelayImage,
    SecretLookup,
    Size,
    StageFn,
    discard_all,
)
from imagegate.relays.config import HttpRelayConfig, PriceTable
from imagegate.relays.wire.body import ImageData
from imagegate.relays.wire.fetch import ImageFetcher
from imagegate.relays.wire.http import RetryPolicy, Timeouts, Upstream
from imagegate.relays.wire.spool import Spooled

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
    """What every upstream adapter takes from its config in the same way. A subclass
    sets `capabilities` and `upstream`."""

    upstream: Upstream

    def __init__(self, name: str, config: ConfigT, description: str) -> None:
        self.name = name
        self.description = config.description or description
        self.paid = config.paid
        self.model: str | None = config.model
        self.price: PriceTable | None = config.price
        self.traits = frozenset(config.traits)
        self.defaults = relay_defaults(config)
        self._config = config

    def render_prompt(self, prompt: str) -> str:
        return self._config.render_prompt(prompt)

    async def aclose(self) -> None:
        await self.upstream.aclose()


def required_api_key(name: str, config: HttpRelayConfig, secrets: SecretLookup) -> str:
    """The relay's key from the environment variable its config names; fail at start."""
    if config.api_key_env is None:
        raise ConfigError(f"relays.{name}.api_key_env: this relay kind needs an API key")
    return secret_from_env(f"relays.{name}.api_key_env", config.api_key_env, secrets)


def optional_api_key(name: str, config: HttpRelayConfig, secrets: SecretLookup) -> str | None:
    """The key when the config names one (it must then be set), else None."""
    if config.api_key_env is None:
        return None
    return secret_from_env(f"relays.{name}.api_key_env", config.api_key_env, secrets)


def secret_from_env(key: str, variable: str, secrets: SecretLookup) -> str:
    """A secret a config `key` names by its environment `variable`; set, or start-up stops."""
    value = secrets(variable)
    if value is None:
        raise ConfigError(f"{key}: environment variable {variable} is not set")
    return value


READ_BYTES = 1 << 20
"""How much of an upstream's answer one read may take (httpcore reads 64 KiB)."""


def http_client(config: HttpRelayConfig) -> httpx.AsyncClient:
    """A relay's own connection pool, so a slow relay never holds another's."""
    # Each read is a trip through httpx, httpcore, h11 and anyio on the event loop: for
    # the images upstreams send, most of the loop's work. Reading what has arrived, up
    # to 1 MiB, took a 2048 px image's added latency from 90 to 59 ms and 64 concurrent
    # generations from 27 to 34 a second (bench/compare.py). httpx has no setting for
    # it, so this is httpcore's class attribute (for every client of the process);
    # tests/relays/wire/test_http.py checks that httpcore still reads it.
    httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = READ_BYTES
    return httpx.AsyncClient(
        timeout=httpx.Timeout(config.total_timeout, connect=config.connect_timeout),
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
        follow_redirects=False,
    )


def upstream_for(
    name: str,
    config: HttpRelayConfig,
    headers: dict[str, str],
    secrets: tuple[str, ...],
    client: httpx.AsyncClient | None = None,
) -> Upstream:
    """An Upstream with its own connection pool and the relay's timeouts and retries;
    `secrets` are redacted from every upstream message."""
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


def keyed_upstream(
    name: str,
    config: HttpRelayConfig,
    secrets: SecretLookup,
    client: httpx.AsyncClient | None = None,
    *,
    header: str = "authorization",
    prefix: str = "Bearer ",
) -> Upstream:
    """An Upstream that sends the relay's (required) key in `header`, and redacts it."""
    key = required_api_key(name, config, secrets)
    return upstream_for(name, config, {header: prefix + key}, (key,), client)


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


async def staged_from_base64(stage: StageFn, encoded: str, relay: str) -> StagedBlob:
    """A finished staged blob from base64 an upstream sent; nothing left on failure.
    A `Spooled` string was decoded while the answer arrived: its blob is taken."""
    if isinstance(encoded, Spooled):
        try:
            spooled = encoded.claim()
        except Base64Error as err:
            raise RelayError(f"relay {relay!r} sent damaged base64 image data ({err})") from None
        try:
            spooled.finish()
        except BaseException:
            spooled.discard()
            raise
        return spooled

    def decode(staged: StagedBlob) -> None:
        try:
            decode_into(staged, encoded)
        except Base64Error as err:
            raise RelayError(f"relay {relay!r} sent damaged base64 image data ({err})") from None

    return await _staged(stage, lambda staged: run_cpu(decode, staged))


async def staged_from_url(stage: StageFn, url: str, fetcher: ImageFetcher) -> StagedBlob:
    """A finished staged blob from an image URL an upstream sent; nothing left on failure."""
    return await _staged(stage, lambda staged: fetcher.fetch(url, staged))


async def _staged(stage: StageFn, fill: Callable[[StagedBlob], Awaitable[None]]) -> StagedBlob:
    staged = stage()
    try:
        await fill(staged)
        staged.finish()
    except BaseException:
        staged.discard()
        raise
    return staged


async def one_call_per_image(
    relay: str,
    n: int,
    total_timeout: float,
    progress: ProgressFn,
    make_one: Callable[[], Awaitable[RelayImage]],
) -> list[RelayImage]:
    """`n` images from `n` upstream calls made one after another (for upstreams that
    make one image per call), each with its own timeout and progress reports. If any
    call fails, every image already made is discarded."""
    images: list[RelayImage] = []
    async with discarded_on_failure(relay, images, total_timeout):
        for index in range(n):
            await progress(index / n, _step(index, n, done=False))
            with anyio.fail_after(total_timeout):
                images.append(await make_one())
            await progress((index + 1) / n, _step(index, n, done=True))
    return images


def _step(index: int, n: int, done: bool) -> str:
    if n == 1:
        return "image received" if done else "generating"
    return f"{'received' if done else 'generating'} image {index + 1} of {n}"


def json_object(value: object) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one: for reading untrusted answers."""
    return value if isinstance(value, dict) else {}


def data_url(image: InputImage) -> ImageData:
    """An input image as a data: URL, streamed from its file into a JSON body."""
    return ImageData(image.path, image.format.mime_type)
