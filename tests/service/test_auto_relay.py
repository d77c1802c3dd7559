"""relay="auto" through the image service: the relay chosen for the request (its
size, background, mask, traits), asked about, and used; never one the caller can't use."""

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from imagegate.access.identity import Identity
from imagegate.access.policy import Caller
from imagegate.core.errors import InvalidRequest
from imagegate.core.ids import Subject
from imagegate.relays.base import BACKGROUNDS, Relay, Size
from imagegate.relays.config import PriceTable
from imagegate.relays.placeholder import PlaceholderRelay, PlaceholderRelayConfig
from imagegate.relays.registry import Relays
from imagegate.service.generation import GenerateArgs
from imagegate.service.images import ImageService
from tests.conftest import ManualClock
from tests.service.test_images import ALICE, Asked, data_url, image_service, progress


class Studio(PlaceholderRelay):
    """Paid and dearer: transparent backgrounds, no masks."""

    paid = True
    price: PriceTable | None = PriceTable(per_image={"*": 0.04})
    capabilities = replace(PlaceholderRelay.capabilities, backgrounds=BACKGROUNDS, mask=False)


class Budget(PlaceholderRelay):
    """Paid and cheap: one size only, no masks."""

    paid = True
    price: PriceTable | None = PriceTable(per_image={"*": 0.02})
    capabilities = replace(
        PlaceholderRelay.capabilities, sizes=(Size(1024, 1024), Size(64, 64)), mask=False
    )


def relays() -> dict[str, Relay]:
    def config(*traits: str) -> PlaceholderRelayConfig:
        return PlaceholderRelayConfig(kind="placeholder", traits=traits)

    return {
        "sketch": PlaceholderRelay("sketch", config("illustration", "fast")),
        "studio": Studio("studio", config("photoreal", "text")),
        "budget": Budget("budget", config("photoreal")),
    }


@pytest.fixture
async def service(state_dir: Path, clock: ManualClock) -> AsyncIterator[ImageService]:
    async with image_service(state_dir, clock, Relays(relays(), "sketch")) as made:
        yield made


def caller(*relays: str) -> Caller:
    scopes = {"images:generate", "images:edit", *(f"relay:{relay}" for relay in relays)}
    return Caller(Identity(Subject("token:bot")), frozenset(scopes))


@pytest.mark.parametrize(
    ("args", "relay", "reason"),
    [
        (
            GenerateArgs("x", size="64x64", relay="auto"),
            "sketch",
            "cheapest of 3 relays you may use that can do this; free",
        ),
        (
            GenerateArgs("x", size="64x64", relay="auto", needs=("photoreal",)),
            "budget",
            "cheapest of 2 relays you may use that can do this with photoreal; about USD 0.020",
        ),
        # budget makes two sizes only: the dearer studio makes this one.
        (
            GenerateArgs("x", size="96x64", relay="auto", needs=("photoreal",)),
            "studio",
            "the only relay you may use that can do this with photoreal; about USD 0.040",
        ),
        # Only studio makes transparent backgrounds.
        (
            GenerateArgs("x", size="64x64", relay="auto", background="transparent"),
            "studio",
            "the only relay",
        ),
    ],
)
async def test_auto_chooses_and_runs_on_the_relay_that_fits(
    service: ImageService, args: GenerateArgs, relay: str, reason: str
) -> None:
    asked = Asked([])
    admitted = await service.admit(ALICE, args, asked)
    assert admitted.choice is not None
    assert admitted.choice.relay == relay
    assert reason in admitted.choice.reason
    (asset,) = (await admitted.run(progress)).assets
    assert asset.relay == relay
    # A paid relay asks as usual, naming the relay chosen; a free one does not.
    assert [call.relay for call, _ in asked.calls] == ([] if relay == "sketch" else [relay])


async def test_a_mask_goes_to_the_relay_that_takes_masks(service: ImageService) -> None:
    admitted = await service.admit(
        ALICE, GenerateArgs("x", relay="auto"), Asked([]), [data_url((64, 64))], data_url((64, 64))
    )
    assert admitted.choice is not None
    assert admitted.choice.relay == "sketch"
    (asset,) = (await admitted.run(progress)).assets
    assert asset.relay == "sketch"
    # The photoreal relays take no masks.
    with pytest.raises(InvalidRequest) as refused:
        await service.admit(
            ALICE, GenerateArgs("x", relay="auto", needs=("photoreal",)), Asked([]),
            [data_url((64, 64))], data_url((64, 64)),
        )  # fmt: skip
    assert str(refused.value) == (
        "relay='auto': no relay you may use can do this: budget: does not support mask; "
        "sketch: lacks photoreal; studio: does not support mask"
    )


async def test_a_relay_the_caller_may_not_use_is_never_chosen_nor_named(
    service: ImageService,
) -> None:
    without_budget = caller("sketch", "studio")
    args = GenerateArgs("x", size="64x64", relay="auto", needs=("photoreal",))
    admitted = await service.admit(without_budget, args, Asked([]))
    assert admitted.choice is not None
    assert admitted.choice.relay == "studio"
    await admitted.aclose()
    with pytest.raises(InvalidRequest) as refused:
        await service.admit(caller("sketch"), args, Asked([]))
    assert str(refused.value) == (
        "relay='auto': no relay you may use can do this: sketch: lacks photoreal"
    )


async def test_a_batch_runs_on_one_relay_and_asks_once(service: ImageService) -> None:
    asked = Asked([])
    sources = [data_url((64, 64)), data_url((96, 96))]
    args = GenerateArgs("x", relay="auto", needs=("photoreal",))
    admitted = await service.admit(ALICE, args, asked, sources, batch=True)
    assert admitted.choice is not None
    assert admitted.choice.relay == "budget"
    made = await admitted.run(progress)
    assert [asset.relay for asset in made.assets] == ["budget", "budget"]
    ((call, _),) = asked.calls
    assert (call.relay, call.images, call.estimate) == ("budget", 2, 0.04)


async def test_a_batch_does_not_choose_again_for_each_item(service: ImageService) -> None:
    """The second input is too small for sketch, which budget would take: the batch
    stays on the relay chosen for the first, and that item fails on its own."""
    asked = Asked([])
    sources = [data_url((64, 64)), data_url((32, 32))]
    admitted = await service.admit(
        ALICE, GenerateArgs("x", relay="auto"), asked, sources, batch=True
    )
    made = await admitted.run(progress)
    assert [asset.relay for asset in made.assets] == ["sketch"]
    (failure,) = made.failures
    assert "relay 'sketch' supports sides from 64" in failure.error
    assert asked.calls == []  # nothing paid was planned


async def test_needs_comes_with_auto(service: ImageService) -> None:
    with pytest.raises(InvalidRequest, match="needs chooses a relay: pass it with relay='auto'"):
        await service.admit(ALICE, GenerateArgs("x", relay="studio", needs=("text",)), Asked([]))


async def test_a_named_relay_gives_no_choice(service: ImageService) -> None:
    admitted = await service.admit(ALICE, GenerateArgs("x", size="64x64"), Asked([]))
    assert admitted.choice is None
    await admitted.aclose()
