"""What every relay's table may declare: its traits, from a fixed vocabulary."""

import pytest
from pydantic import ValidationError

from imagegate.config import Settings
from imagegate.relays.adapter import ConfiguredRelay
from imagegate.relays.openai_images import OpenAIImagesRelayConfig
from imagegate.relays.placeholder import PlaceholderRelay, PlaceholderRelayConfig


@pytest.mark.parametrize(
    ("traits", "kept"),
    [
        ([], ()),
        (
            ["text", "photoreal", "illustration", "fast"],
            ("text", "photoreal", "illustration", "fast"),
        ),
        (["fast", "fast"], ("fast",)),
    ],
)
def test_known_traits_are_kept(traits: list[str], kept: tuple[str, ...]) -> None:
    assert PlaceholderRelayConfig(kind="placeholder", traits=traits).traits == kept


@pytest.mark.parametrize("trait", ["cheap", "Text", ""])
def test_an_unknown_trait_names_the_allowed_ones(trait: str) -> None:
    with pytest.raises(
        ValidationError,
        match=f"unknown trait {trait!r}; the traits are: text, photoreal, illustration, fast",
    ):
        PlaceholderRelayConfig(kind="placeholder", traits=["fast", trait])


def test_every_kind_carries_its_traits() -> None:
    placeholder = PlaceholderRelay("p", PlaceholderRelayConfig(kind="placeholder", traits=["fast"]))
    config = OpenAIImagesRelayConfig(
        kind="openai-images", base_url="http://127.0.0.1:9", api_key_env="K", traits=["text"]
    )
    upstream = ConfiguredRelay("o", config, "every upstream adapter")
    assert (placeholder.traits, upstream.traits) == (frozenset({"fast"}), frozenset({"text"}))


def test_no_relay_may_be_named_auto() -> None:
    with pytest.raises(ValidationError, match="relay name 'auto' is reserved"):
        Settings(relays={"auto": PlaceholderRelayConfig(kind="placeholder")})
