"""Relay kinds are found by their module's KIND; nothing else lists them."""

import importlib
import pkgutil

import pytest

from imagegate import relays
from imagegate.core.errors import ConfigError, InvalidRequest
from imagegate.relays.base import RelayKind
from imagegate.relays.config import RelayConfig
from imagegate.relays.placeholder import PlaceholderRelayConfig
from imagegate.relays.registry import KINDS, build_relay, build_relays


def test_every_kind_module_is_found() -> None:
    exported = {}
    for info in pkgutil.iter_modules(relays.__path__):
        module = importlib.import_module(f"imagegate.relays.{info.name}")
        kind = getattr(module, "KIND", None)
        if isinstance(kind, RelayKind):
            exported[kind.name] = kind
    assert exported == KINDS
    assert set(KINDS) >= {"placeholder", "openai-images", "openai-responses"}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_a_kind_is_named_by_its_config(name: str) -> None:
    kind = KINDS[name]
    assert issubclass(kind.config, RelayConfig)
    assert kind.config.model_fields["kind"].annotation.__args__ == (name,)  # type: ignore[union-attr]


def test_a_kind_builds_only_from_its_own_config() -> None:
    with pytest.raises(TypeError, match="is not a"):
        KINDS["openai-images"].create("x", PlaceholderRelayConfig(kind="placeholder"), {}.get)


def test_build_relays_by_name() -> None:
    built = build_relays({"a": PlaceholderRelayConfig(kind="placeholder")}, "a", {}.get)
    assert built.get(None).name == "a"
    assert built.get("a").kind == "placeholder"
    with pytest.raises(InvalidRequest, match="unknown relay 'b'; configured relays: a"):
        built.get("b")


def test_a_kind_missing_from_this_build_is_a_config_error() -> None:
    class Elsewhere(RelayConfig):
        kind: str = "dall-e-9"

    with pytest.raises(ConfigError, match=r"relays\.x\.kind: 'dall-e-9' is not available"):
        build_relay("x", Elsewhere(), {}.get)
