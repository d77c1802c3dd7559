"""The image service without MCP: edits one by one, combined, and in batches."""

import base64
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

from imagegate.access.identity import Identity
from imagegate.access.policy import Caller
from imagegate.config import Limits, QuotaSettings, Settings
from imagegate.core.errors import InvalidRequest, NotConfirmed, PermissionDenied, QuotaExceeded
from imagegate.core.ids import Subject
from imagegate.relays.config import PriceTable
from imagegate.relays.placeholder import PlaceholderRelay, PlaceholderRelayConfig
from imagegate.relays.registry import Relays
from imagegate.service.confirm import PaidCall
from imagegate.service.generation import GenerateArgs
from imagegate.service.images import ImageService
from imagegate.service.inputs import InputResolver
from imagegate.storage.assets import AssetStore
from imagegate.storage.embedded import open_embedded
from tests.conftest import ManualClock

ALICE = Caller(Identity(Subject("oidc:alice")), frozenset({"*"}))


class PaidPlaceholder(PlaceholderRelay):
    """The placeholder, priced like a paid relay: what the service asks before it."""

    paid = True
    price: PriceTable | None = PriceTable(per_image={"*": 0.25})


def data_url(size: tuple[int, int]) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, "teal").save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


@dataclass
class Asked:
    calls: list[tuple[PaidCall, bool]]
    answer: bool = True

    async def __call__(self, call: PaidCall, ask: bool) -> None:
        self.calls.append((call, ask))
        if not self.answer:
            raise NotConfirmed("not confirmed (declined)")


@pytest.fixture
async def service(state_dir: Path, clock: ManualClock) -> AsyncIterator[ImageService]:
    async with image_service(state_dir, clock) as made:
        yield made


@asynccontextmanager
async def image_service(
    state_dir: Path, clock: ManualClock, relays: Relays | None = None, **overrides: Any
) -> AsyncIterator[ImageService]:
    """A service on the embedded storage with `relays` (by default a placeholder and a
    paid one); `overrides` are settings."""
    state_dir.mkdir(mode=0o700)
    settings = Settings(state_dir=state_dir, **overrides)
    storage = open_embedded(state_dir, settings.max_image_bytes)
    assets = AssetStore(storage.index, storage.blobs)
    config = PlaceholderRelayConfig(kind="placeholder")
    if relays is None:
        relays = Relays(
            {
                "placeholder": PlaceholderRelay("placeholder", config),
                "paid": PaidPlaceholder("paid", config),
            },
            "placeholder",
        )
    inputs = InputResolver(
        assets,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        input_root=None,
        local=False,
    )
    yield ImageService(
        settings, assets, storage.quotas, storage.nonces, relays, None, clock, inputs
    )
    await storage.aclose()


messages: list[str] = []


async def progress(fraction: float | None, message: str) -> None:
    messages.append(message)


async def test_a_batch_reports_the_item_that_failed_and_keeps_the_rest(
    service: ImageService, state_dir: Path
) -> None:
    # The middle input is too small for the placeholder (edits keep their input's size).
    sources = [data_url((64, 64)), data_url((32, 32)), data_url((80, 64))]
    messages.clear()
    made = await service.edit(
        ALICE, GenerateArgs("sepia"), sources, None, True, progress, Asked([])
    )
    assert [(a.width, a.height) for a in made.assets] == [(64, 64), (80, 64)]
    (failure,) = made.failures
    assert (failure.index, failure.source) == (1, "(image data)")
    assert "supports sides from 64" in failure.error
    assert any(m.startswith("image 3 of 3: ") for m in messages)
    assert list((state_dir / "tmp").iterdir()) == []  # staged inputs are gone
    usage = await service.quotas.usage(ALICE.subject, 0)
    assert usage.in_flight == 0


async def test_a_batch_where_every_item_fails_is_an_error(service: ImageService) -> None:
    with pytest.raises(InvalidRequest, match=r"every edit in the batch failed: .*sides from 64"):
        await service.edit(
            ALICE, GenerateArgs("x"), [data_url((16, 16))] * 2, None, True, progress, Asked([])
        )


async def test_a_paid_batch_asks_once_for_its_total(service: ImageService) -> None:
    asked = Asked([])
    sources = [data_url((64, 64)), data_url((128, 64))]
    made = await service.edit(
        ALICE, GenerateArgs("x", relay="paid"), sources, None, True, progress, asked
    )
    assert len(made.assets) == 2
    ((call, ask),) = asked.calls
    assert ask  # "*" does not include paid:auto
    assert (call.images, call.estimate, call.size) == (2, 0.5, "64x64 (x1), 128x64 (x1)")


async def test_a_declined_batch_makes_nothing_and_holds_nothing(service: ImageService) -> None:
    asked = Asked([], answer=False)
    with pytest.raises(NotConfirmed):
        await service.edit(
            ALICE, GenerateArgs("x", relay="paid"), [data_url((64, 64))] * 3, None, True,
            progress, asked,
        )  # fmt: skip
    assert len(asked.calls) == 1
    assert (await service.assets.list(None, 10)).assets == []
    usage = await service.quotas.usage(ALICE.subject, 0)
    assert (usage.in_flight, usage.images_today) == (0, 0)


async def test_references_combine_into_one_call(service: ImageService) -> None:
    sources = [data_url((64, 64)), data_url((96, 96))]
    made = await service.edit(ALICE, GenerateArgs("x"), sources, None, False, progress, Asked([]))
    (asset,) = made.assets
    assert asset.params["inputs"] == 2
    assert made.failures == []


async def test_a_mask_fits_one_image_not_a_batch(service: ImageService) -> None:
    with pytest.raises(InvalidRequest, match="a mask fits one image"):
        await service.edit(
            ALICE, GenerateArgs("x"), [data_url((64, 64))], data_url((64, 64)), True,
            progress, Asked([]),
        )  # fmt: skip


async def test_an_edit_of_a_stored_image_reads_it_through_the_store(
    service: ImageService,
) -> None:
    admitted = await service.admit(ALICE, GenerateArgs("a", size="96x64"), Asked([]))
    (first,) = (await admitted.run(progress)).assets
    made = await service.edit(
        ALICE, GenerateArgs("b"), [first.id], None, False, progress, Asked([])
    )
    assert [(a.width, a.height) for a in made.assets] == [(96, 64)]
    other = Caller(Identity(Subject("oidc:bob")), frozenset())
    with pytest.raises(Exception, match="image not found"):
        await service.edit(other, GenerateArgs("b"), [first.id], None, False, progress, Asked([]))


async def test_a_paid_batch_over_the_quota_is_refused_before_anyone_is_asked(
    state_dir: Path, clock: ManualClock
) -> None:
    """The quota is checked for the whole batch (three images), not its first item."""
    quotas = QuotaSettings(default=Limits(images_per_day=2))
    async with image_service(state_dir, clock, quotas=quotas) as service:
        asked = Asked([])
        with pytest.raises(QuotaExceeded, match="images_per_day"):
            await service.admit(
                ALICE, GenerateArgs("x", relay="paid"), asked, [data_url((64, 64))] * 3, batch=True
            )
        assert asked.calls == []
        assert list((state_dir / "tmp").iterdir()) == []


async def test_an_admitted_call_that_never_runs_lets_go_of_its_inputs(
    service: ImageService, state_dir: Path
) -> None:
    admitted = await service.admit(ALICE, GenerateArgs("x"), Asked([]), [data_url((64, 64))])
    assert list((state_dir / "tmp").iterdir()) != []
    await admitted.aclose()
    assert list((state_dir / "tmp").iterdir()) == []
    usage = await service.quotas.usage(ALICE.subject, 0)
    assert usage.in_flight == 0  # admitting reserves nothing


async def test_a_declined_generation_is_not_admitted(service: ImageService) -> None:
    asked = Asked([], answer=False)
    with pytest.raises(NotConfirmed):
        await service.admit(ALICE, GenerateArgs("x", relay="paid"), asked)
    ((call, ask),) = asked.calls
    assert (call.images, call.estimate, ask) == (1, 0.25, True)


async def test_a_free_call_over_the_quota_is_not_admitted(
    state_dir: Path, clock: ManualClock
) -> None:
    """Refused in the call, not as a job that fails later."""
    quotas = QuotaSettings(default=Limits(images_per_day=1))
    async with image_service(state_dir, clock, quotas=quotas) as service:
        made = await (await service.admit(ALICE, GenerateArgs("x"), Asked([]))).run(progress)
        assert len(made.assets) == 1
        with pytest.raises(QuotaExceeded, match="images_per_day"):
            await service.admit(ALICE, GenerateArgs("x"), Asked([]))


@pytest.mark.parametrize(
    ("scopes", "relay", "allowed"),
    [
        ({"generate", "relay:placeholder"}, None, True),  # the default relay, granted
        ({"generate", "relay:paid"}, None, False),  # the default relay, not granted
        ({"generate", "relay:placeholder"}, "paid", False),
        ({"generate", "relay:*"}, "paid", True),
    ],
)
async def test_the_relay_a_call_will_use_needs_its_scope(
    service: ImageService, scopes: set[str], relay: str | None, allowed: bool
) -> None:
    """Whatever names the relay, not only the tool argument the middleware sees."""
    caller = Caller(Identity(Subject("oidc:carol")), frozenset(scopes))
    if not allowed:
        with pytest.raises(PermissionDenied, match="needs scope relay:"):
            await service.admit(caller, GenerateArgs("x", relay=relay), Asked([]))
        return
    admitted = await service.admit(caller, GenerateArgs("x", relay=relay), Asked([]))
    await admitted.aclose()


class ReplyLate:
    """A ledger whose reservations are recorded at once but acknowledged only when
    `reply` is set, like a database whose COMMIT answer is still on its way."""

    def __init__(self, ledger: Any) -> None:
        self._ledger = ledger
        self.reserving = anyio.Event()
        self.reply = anyio.Event()

    async def reserve(self, *args: Any, **kwargs: Any) -> Any:
        reservation = await self._ledger.reserve(*args, **kwargs)
        self.reserving.set()
        await self.reply.wait()
        return reservation

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)


async def test_a_call_cancelled_while_its_reservation_commits_leaves_no_slot_held(
    service: ImageService,
) -> None:
    late = ReplyLate(service.quotas)
    service.quotas = late
    admitted = await service.admit(ALICE, GenerateArgs("x"), Asked([]))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(admitted.run, progress)
        await late.reserving.wait()
        tasks.cancel_scope.cancel()
        late.reply.set()
    assert (await late.usage(ALICE.subject, 0)).in_flight == 0
