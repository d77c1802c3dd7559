"""Build the configured relays by name from settings."""

from imagegate.config import Settings
from imagegate.errors import InvalidRequest
from imagegate.relays.base import Relay
from imagegate.relays.placeholder import PlaceholderRelay


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


def build_relays(settings: Settings) -> Relays:
    relays: dict[str, Relay] = {}
    for name, config in settings.relays.items():
        relays[name] = PlaceholderRelay(name, config)
    return Relays(relays, settings.default_relay)
