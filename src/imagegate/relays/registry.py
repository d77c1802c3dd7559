"""Build the configured relays by name from settings."""

from imagegate.config import (
    GeminiRelayConfig,
    OpenAIImagesRelayConfig,
    OpenAIResponsesRelayConfig,
    OpenRouterRelayConfig,
    PlaceholderRelayConfig,
    RelayConfig,
    SDWebUIRelayConfig,
    Settings,
)
from imagegate.errors import ConfigError, InvalidRequest
from imagegate.relays.base import Relay
from imagegate.relays.gemini import GeminiRelay
from imagegate.relays.openai_images import OpenAIImagesRelay
from imagegate.relays.openai_responses import OpenAIResponsesRelay
from imagegate.relays.openrouter import OpenRouterRelay
from imagegate.relays.placeholder import PlaceholderRelay
from imagegate.relays.sd_webui import SDWebUIRelay


class Relays:
    """The relays of one server, looked up by name."""

    def __init__(self, relays: dict[str, Relay], default: str) -> None:
        self._relays = relays
        self.default = default

    def get(self, name: str | None) -> Relay:
        relay = self._relays.get(name or self.default)
        if relay is None:
            known = ", ".join(sorted(self._relays))
            raise InvalidRequest(f"unknown relay {name!r}; configured relays: {known}")
        return relay

    def all(self) -> list[Relay]:
        return [self._relays[name] for name in sorted(self._relays)]

    async def aclose(self) -> None:
        """Close the relays' HTTP connection pools."""
        for relay in self._relays.values():
            upstream = getattr(relay, "upstream", None)
            if upstream is not None:
                await upstream.aclose()


def build_relay(name: str, config: RelayConfig) -> Relay:
    """One relay from its config; the kind picks the module."""
    if isinstance(config, PlaceholderRelayConfig):
        return PlaceholderRelay(name, config)
    if isinstance(config, OpenAIResponsesRelayConfig):
        return OpenAIResponsesRelay(name, config)
    if isinstance(config, OpenAIImagesRelayConfig):
        return OpenAIImagesRelay(name, config)
    if isinstance(config, GeminiRelayConfig):
        return GeminiRelay(name, config)
    if isinstance(config, SDWebUIRelayConfig):
        return SDWebUIRelay(name, config)
    if isinstance(config, OpenRouterRelayConfig):
        return OpenRouterRelay(name, config)
    raise ConfigError(f"relays.{name}.kind: {config.kind!r} is not available in this build")


def build_relays(settings: Settings) -> Relays:
    relays = {name: build_relay(name, config) for name, config in settings.relays.items()}
    return Relays(relays, settings.default_relay)
