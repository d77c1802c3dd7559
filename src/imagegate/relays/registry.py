"""Every relay kind, found by its module's `KIND`, and the relays of one server by name.

Adding a kind is adding a module to this package: the settings loader and `build_relay`
read `KINDS`, which is made here by importing each module that exports a `KIND`.
"""

import importlib
import pkgutil

from imagegate import relays as _package
from imagegate.core.errors import ConfigError, InvalidRequest
from imagegate.core.metrics import Metrics
from imagegate.relays.adapter import ConfiguredRelay
from imagegate.relays.base import Relay, RelayKind, SecretLookup
from imagegate.relays.config import RelayConfig


def _discover() -> dict[str, RelayKind[RelayConfig]]:
    kinds: dict[str, RelayKind[RelayConfig]] = {}
    for module_info in sorted(pkgutil.iter_modules(_package.__path__), key=lambda m: m.name):
        if module_info.ispkg:
            continue
        module = importlib.import_module(f"{_package.__name__}.{module_info.name}")
        kind = getattr(module, "KIND", None)
        if isinstance(kind, RelayKind):
            if kind.name in kinds:
                raise RuntimeError(f"relay kind {kind.name!r} is exported twice")
            kinds[kind.name] = kind
    return kinds


KINDS = _discover()
"""Relay kind name (`kind = "..."` in a relay's table) -> its RelayKind."""


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
            await relay.aclose()


def build_relay(name: str, config: RelayConfig, secrets: SecretLookup) -> Relay:
    """One relay from its config; the kind picks the module."""
    kind = KINDS.get(config.kind)
    if kind is None:
        raise ConfigError(f"relays.{name}.kind: {config.kind!r} is not available in this build")
    return kind.create(name, config, secrets)


def build_relays(
    configs: dict[str, RelayConfig],
    default: str,
    secrets: SecretLookup,
    metrics: Metrics | None = None,
) -> Relays:
    """The relays of one server; their upstream requests count into `metrics`."""
    relays = {name: build_relay(name, config, secrets) for name, config in configs.items()}
    if metrics is not None:
        for relay in relays.values():
            # Given here, not to each kind's constructor: every HTTP relay shares one
            # Upstream, and a kind's module need not know metrics exist.
            if isinstance(relay, ConfiguredRelay):
                relay.upstream.metrics = metrics
    return Relays(relays, default)
