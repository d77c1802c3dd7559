"""Style presets: how one changes a call (pure), what a caller may save, see, use and
delete, and that a preset's relay is checked like any other."""

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from imagegate.access.identity import Identity
from imagegate.access.policy import Caller
from imagegate.config import PresetSettings, Settings
from imagegate.core.errors import ConfigError, InvalidRequest, NotFound, PermissionDenied
from imagegate.core.ids import Subject
from imagegate.relays.placeholder import PlaceholderRelay, PlaceholderRelayConfig
from imagegate.relays.registry import Relays
from imagegate.service.generation import GenerateArgs
from imagegate.service.images import ImageService
from imagegate.service.inputs import InputResolver
from imagegate.service.presets import (
    Preset,
    Presets,
    apply,
    check_server_presets,
    checked,
    expand,
    usable,
)
from imagegate.storage.assets import AssetStore
from imagegate.storage.interfaces import PresetSaved, Storage
from tests.conftest import ManualClock

ALICE = Caller(Identity(Subject("token:alice")), frozenset({"images:generate", "relay:*"}))
BOB = Caller(Identity(Subject("token:bob")), frozenset({"images:generate", "relay:*"}))
ONLY_PLACEHOLDER = Caller(
    Identity(Subject("token:carol")), frozenset({"images:generate", "relay:placeholder"})
)

POSTER = Preset(
    "poster",
    "server",
    "A bold poster of {prompt}, flat colours",
    negative_prompt="blurry",
    size="640x960",
    quality="high",
    relay="studio",
)
PLAIN = Preset("plain", "own", "{prompt}")


@pytest.mark.parametrize(
    ("args", "preset", "expected"),
    [
        # the template wraps the prompt; the preset fills every unset option
        (
            GenerateArgs("a fox"),
            POSTER,
            GenerateArgs(
                "A bold poster of a fox, flat colours",
                size="640x960",
                quality="high",
                relay="studio",
                negative_prompt="blurry",
            ),
        ),
        # what the caller sets wins, option by option
        (
            GenerateArgs("a fox", size="256x256", quality="low", relay="placeholder"),
            POSTER,
            GenerateArgs(
                "A bold poster of a fox, flat colours",
                size="256x256",
                quality="low",
                relay="placeholder",
                negative_prompt="blurry",
            ),
        ),
        (
            GenerateArgs("a fox", negative_prompt="text"),
            POSTER,
            GenerateArgs(
                "A bold poster of a fox, flat colours",
                size="640x960",
                quality="high",
                relay="studio",
                negative_prompt="text",
            ),
        ),
        # an explicit empty negative prompt drops the preset's (build_request: none)
        (
            GenerateArgs("a fox", negative_prompt=""),
            POSTER,
            GenerateArgs(
                "A bold poster of a fox, flat colours",
                size="640x960",
                quality="high",
                relay="studio",
                negative_prompt="",
            ),
        ),
        # braces in the caller's prompt are text, never format fields
        (
            GenerateArgs("  {0.__class__} and {prompt} {x}  "),
            PLAIN,
            GenerateArgs("{0.__class__} and {prompt} {x}"),
        ),
        # and braces in the template, besides {prompt}, are text too
        (
            GenerateArgs("a {fox}"),
            Preset("json", "own", '{"style": "{0}", "of": "{prompt}"} }{'),
            GenerateArgs('{"style": "{0}", "of": "a {fox}"} }{'),
        ),
        # options the preset doesn't set stay the caller's (or the relay's)
        (
            GenerateArgs("a fox", n=3, seed=7, output_format="webp", preset="plain"),
            PLAIN,
            GenerateArgs("a fox", n=3, seed=7, output_format="webp"),
        ),
    ],
)
def test_a_preset_wraps_the_prompt_and_fills_what_the_call_left_out(
    args: GenerateArgs, preset: Preset, expected: GenerateArgs
) -> None:
    assert apply(args, preset, 4000) == expected


def test_a_template_with_two_slots_takes_the_prompt_twice() -> None:
    assert expand("{prompt}, then {prompt} again", "a fox") == "a fox, then a fox again"


@pytest.mark.parametrize(
    ("prompt", "limit", "message"),
    [
        ("   ", 4000, "prompt must not be empty"),
        # 31 of the template + 10 = 41 > 40
        (
            "x" * 10,
            40,
            "prompt is 41 characters with preset 'poster' (its template adds 31); the limit is 40",
        ),
    ],
)
def test_an_empty_prompt_or_one_too_long_once_wrapped_is_refused(
    prompt: str, limit: int, message: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        apply(GenerateArgs(prompt), POSTER, limit)
    assert str(refused.value) == message


def test_the_longest_prompt_that_fits_once_wrapped_passes() -> None:
    assert len(apply(GenerateArgs("x" * 9), POSTER, 40).prompt) == 40


@pytest.mark.parametrize(
    ("caller", "relay", "offered"),
    [
        (ONLY_PLACEHOLDER, None, True),
        (ONLY_PLACEHOLDER, "auto", True),
        (ONLY_PLACEHOLDER, "placeholder", True),
        (ONLY_PLACEHOLDER, "studio", False),
        (ALICE, "studio", True),
    ],
)
def test_a_preset_is_offered_unless_it_names_a_relay_the_caller_may_not_use(
    caller: Caller, relay: str | None, offered: bool
) -> None:
    assert usable(caller, replace(PLAIN, relay=relay)) is offered


SERVER = Settings(presets={"poster": PresetSettings(prompt="poster of {prompt}")})
RELAYS = {"placeholder": {"kind": "placeholder"}, "studio": {"kind": "placeholder"}}


@pytest.mark.parametrize(
    ("name", "values", "message"),
    [
        ("Poster", {"prompt": "{prompt}"}, "name must be 1-40 of a-z"),
        ("-x", {"prompt": "{prompt}"}, "name must be 1-40 of a-z"),
        ("a" * 41, {"prompt": "{prompt}"}, "name must be 1-40 of a-z"),
        ("poster", {"prompt": "{prompt}"}, "'poster' is the name of a server preset"),
        ("mine", {"prompt": "no slot"}, "prompt: must contain {prompt}"),
        ("mine", {"prompt": "{prompt}" + "x" * 2000}, "prompt: String should have at most"),
        ("mine", {"prompt": "{prompt}\x07"}, "prompt: must not contain control characters"),
        ("mine", {"prompt": "{prompt}", "size": "big"}, "size: String should match"),
        ("mine", {"prompt": "{prompt}", "quality": "ultra"}, "quality: Input should be"),
        ("mine", {"prompt": "{prompt}", "size": "8000x8000"}, "size 8000x8000 exceeds"),
        (
            "mine",
            {"prompt": "{prompt}", "description": "d" * 201},
            "description: String should have at most 200",
        ),
    ],
)
def test_what_a_caller_may_not_save(name: str, values: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("{", r"\{").replace("(", r"\(")):
        checked(name, values, SERVER)


def test_a_template_that_leaves_no_room_for_a_prompt_is_refused() -> None:
    tight = Settings(max_prompt_chars=20)
    with pytest.raises(InvalidRequest, match="leaves no room for a prompt"):
        checked("mine", {"prompt": "x" * 20 + "{prompt}"}, tight)
    assert checked("mine", {"prompt": "x" * 19 + "{prompt}"}, tight).prompt.startswith("x")


def test_empty_values_are_no_values() -> None:
    preset = checked("mine", {"prompt": "{prompt}", "size": "", "negative_prompt": None}, SERVER)
    assert (preset.size, preset.negative_prompt) == (None, None)


class WithQualities(PlaceholderRelay):
    """The placeholder with the qualities of an OpenAI relay, and no negative prompt."""

    def __init__(self, name: str) -> None:
        super().__init__(name, PlaceholderRelayConfig(kind="placeholder"))
        self.capabilities = replace(
            self.capabilities, qualities=("low", "medium", "high"), negative_prompt=False
        )


def relays() -> Relays:
    config = PlaceholderRelayConfig(kind="placeholder")
    return Relays(
        {"placeholder": PlaceholderRelay("placeholder", config), "studio": WithQualities("studio")},
        "placeholder",
    )


@pytest.mark.parametrize(
    ("preset", "problem"),
    [
        ({"prompt": "{prompt}", "relay": "studio", "quality": "high"}, None),
        ({"prompt": "{prompt}", "relay": "auto", "quality": "high"}, None),  # studio has it
        # auto: some relay must take it
        (
            {"prompt": "{prompt}", "relay": "auto", "quality": "high", "negative_prompt": "x"},
            "presets.p: relay \"auto\" has no relay that takes it: relay 'placeholder' does "
            "not support quality; relay 'studio' does not support negative_prompt",
        ),
        # no relay: checked on the default relay, where its calls go
        ({"prompt": "{prompt}", "size": "96x64"}, None),
        (
            {"prompt": "{prompt}", "quality": "high"},
            "presets.p: relay 'placeholder' does not support quality (it names no relay: "
            "calls go to default_relay)",
        ),
        (
            {"prompt": "{prompt}", "negative_prompt": "text"},
            "presets.p: relay 'placeholder' does not support negative_prompt",
        ),
        (
            {"prompt": "{prompt}", "relay": "placeholder", "quality": "high"},
            "presets.p: relay 'placeholder' does not support quality",
        ),
        (
            {"prompt": "{prompt}", "relay": "studio", "negative_prompt": "text"},
            "presets.p: relay 'studio' does not support negative_prompt",
        ),
        (
            {"prompt": "{prompt}", "relay": "studio", "size": "32x32"},
            "presets.p: relay 'studio' supports sides from 64",
        ),
    ],
)
def test_a_server_preset_must_suit_the_relay_it_names(
    preset: dict[str, str], problem: str | None
) -> None:
    settings = Settings(relays=RELAYS, default_relay="placeholder", presets={"p": preset})
    if problem is None:
        check_server_presets(settings, relays().all())
        return
    with pytest.raises(ConfigError) as refused:
        check_server_presets(settings, relays().all())
    assert str(refused.value).startswith(problem)
    fix = "the preset" if preset.get("relay") == "auto" else "the preset or its relay"
    assert str(refused.value).endswith(f"; change {fix}")


@pytest.fixture
async def presets(storage: Storage, clock: ManualClock, state_dir: Path) -> Presets:
    settings = Settings(
        state_dir=state_dir,
        relays=RELAYS,
        default_relay="placeholder",
        presets={"poster": {"prompt": "poster of {prompt}", "relay": "studio"}},
        max_presets_per_subject=3,
    )
    return Presets(settings, relays(), storage.presets, clock)


async def save(presets: Presets, caller: Caller, name: str, **values: Any) -> PresetSaved:
    _, saved = await presets.save(caller, name, {"prompt": "{prompt}", **values})
    return saved


async def test_a_caller_uses_the_servers_presets_and_its_own_only(presets: Presets) -> None:
    assert await save(presets, ALICE, "ink", prompt="ink sketch of {prompt}") is PresetSaved.CREATED
    assert await presets.find(ALICE, "ink") == Preset("ink", "own", "ink sketch of {prompt}")
    assert (await presets.find(BOB, "poster")).owner == "server"
    with pytest.raises(InvalidRequest, match="unknown preset 'ink'; list_presets shows"):
        await presets.find(BOB, "ink")
    assert [p.name for p in await presets.visible(ALICE)] == ["poster", "ink"]
    assert [p.name for p in await presets.visible(BOB)] == ["poster"]
    # a caller who may not use the server preset's relay isn't offered it
    assert await presets.visible(ONLY_PLACEHOLDER) == []


async def test_saving_again_replaces_ones_own(presets: Presets, clock: ManualClock) -> None:
    await save(presets, ALICE, "ink", size="256x256")
    clock.advance(5)
    assert await save(presets, ALICE, "ink", quality="low") is PresetSaved.REPLACED
    found = await presets.find(ALICE, "ink")
    assert (found.size, found.quality) == (None, "low")


async def test_a_caller_keeps_at_most_the_limit(presets: Presets) -> None:
    for name in ("a", "b", "c"):
        await save(presets, ALICE, name)
    with pytest.raises(InvalidRequest, match="you have 3 presets, the most"):
        await save(presets, ALICE, "d")
    assert await save(presets, ALICE, "c", size="128x128") is PresetSaved.REPLACED
    assert await save(presets, BOB, "d") is PresetSaved.CREATED  # the limit is each caller's
    await presets.delete(ALICE, "a")
    assert await save(presets, ALICE, "d") is PresetSaved.CREATED


async def test_a_caller_deletes_only_its_own(presets: Presets) -> None:
    await save(presets, ALICE, "ink")
    with pytest.raises(NotFound, match="you have no preset named 'ink'"):
        await presets.delete(BOB, "ink")
    with pytest.raises(InvalidRequest, match="'poster' is a server preset"):
        await presets.delete(ALICE, "poster")
    await presets.delete(ALICE, "ink")
    with pytest.raises(NotFound):
        await presets.delete(ALICE, "ink")


async def test_an_own_preset_a_later_server_preset_shadows_is_marked_and_deletable(
    storage: Storage, clock: ManualClock, state_dir: Path
) -> None:
    """Alice saved "poster"; then the operator added [presets.poster]. Calls use the
    server's; hers is listed as shadowed, not as a second "poster", and she can delete
    it (else it would count against her limit for good)."""

    def presets(**server: PresetSettings) -> Presets:
        settings = Settings(state_dir=state_dir, presets=server, max_presets_per_subject=2)
        return Presets(settings, relays(), storage.presets, clock)

    await save(presets(), ALICE, "poster", prompt="my poster of {prompt}")
    await save(presets(), ALICE, "ink")
    later = presets(poster=PresetSettings(prompt="poster of {prompt}"))
    assert [(p.name, p.owner, p.shadowed) for p in await later.visible(ALICE)] == [
        ("poster", "server", False),
        ("ink", "own", False),
        ("poster", "own", True),
    ]
    assert (await later.find(ALICE, "poster")).prompt == "poster of {prompt}"
    await later.delete(ALICE, "poster")
    assert [(p.name, p.owner) for p in await later.visible(ALICE)] == [
        ("poster", "server"),
        ("ink", "own"),
    ]
    assert await save(later, ALICE, "two") is PresetSaved.CREATED  # the row counts no more
    with pytest.raises(InvalidRequest, match="'poster' is a server preset"):
        await later.delete(ALICE, "poster")


@pytest.mark.parametrize(
    ("relay", "error", "message"),
    [
        ("studio", PermissionDenied, "forbidden: needs scope relay:studio"),
        ("elsewhere", PermissionDenied, "forbidden: needs scope relay:elsewhere"),
    ],
)
async def test_a_caller_may_not_save_a_preset_for_a_relay_it_may_not_use(
    presets: Presets, relay: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        await save(presets, ONLY_PLACEHOLDER, "mine", relay=relay)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"relay": "elsewhere"}, "unknown relay 'elsewhere'"),
        ({"relay": "placeholder", "quality": "high"}, "relay 'placeholder' does not support"),
    ],
)
async def test_a_saved_preset_must_suit_its_relay(
    presets: Presets, values: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        await save(presets, ALICE, "mine", **values)
    assert await save(presets, ALICE, "mine", relay="auto", quality="high") is PresetSaved.CREATED


async def test_saving_is_off_with_a_limit_of_none(
    storage: Storage, clock: ManualClock, state_dir: Path
) -> None:
    settings = Settings(state_dir=state_dir, max_presets_per_subject=0)
    off = Presets(settings, relays(), storage.presets, clock)
    with pytest.raises(InvalidRequest, match="keeps no presets of callers"):
        await save(off, ALICE, "ink")


@pytest.fixture
async def service(storage: Storage, clock: ManualClock, state_dir: Path) -> ImageService:
    settings = Settings(
        state_dir=state_dir,
        relays=RELAYS,
        default_relay="placeholder",
        presets={
            "studio": {"prompt": "studio shot of {prompt}", "relay": "studio", "size": "96x64"},
            "plain": {"prompt": "{prompt}, plainly"},
        },
    )
    assets = AssetStore(storage.index, storage.blobs)
    inputs = InputResolver(assets, max_bytes=10**7, max_pixels=10**7, input_root=None, local=False)
    both = relays()
    return ImageService(
        settings,
        assets,
        storage.quotas,
        storage.nonces,
        both,
        None,
        clock,
        inputs,
        presets=Presets(settings, both, storage.presets, clock),
    )


async def nothing_to_confirm(*_: object) -> None:
    return None


async def no_progress(fraction: float | None, message: str) -> None:
    return None


async def test_a_call_with_a_preset_makes_what_the_preset_says(service: ImageService) -> None:
    admitted = await service.admit(
        ALICE, GenerateArgs("a fox", preset="studio"), nothing_to_confirm
    )
    (asset,) = (await admitted.run(no_progress)).assets
    assert (asset.prompt, asset.relay, asset.width, asset.height) == (
        "studio shot of a fox",
        "studio",
        96,
        64,
    )


async def test_a_preset_naming_a_relay_the_caller_lacks_is_refused(
    service: ImageService, clock: ManualClock
) -> None:
    """The ACL middleware saw no relay in the arguments; the service checks the one the
    preset resolves to, before anything is reserved or made."""
    with pytest.raises(PermissionDenied, match="forbidden: needs scope relay:studio"):
        await service.admit(
            ONLY_PLACEHOLDER, GenerateArgs("a fox", preset="studio"), nothing_to_confirm
        )
    assert (await service.quotas.usage(ONLY_PLACEHOLDER.subject, clock.now())).last_call_at is None
    # the caller's own relay overrides the preset's, and that one it may use
    admitted = await service.admit(
        ONLY_PLACEHOLDER,
        GenerateArgs("a fox", preset="studio", relay="placeholder"),
        nothing_to_confirm,
    )
    (asset,) = (await admitted.run(no_progress)).assets
    assert (asset.relay, asset.prompt) == ("placeholder", "studio shot of a fox")


async def test_a_batch_edit_whose_preset_names_a_relay_the_caller_lacks_is_refused_at_once(
    service: ImageService,
) -> None:
    """Not admitted, so no job starts: refused like a single call, not item by item."""
    admitted = await service.admit(ONLY_PLACEHOLDER, GenerateArgs("a fox"), nothing_to_confirm)
    (source,) = (await admitted.run(no_progress)).assets
    with pytest.raises(PermissionDenied, match=r"^forbidden: needs scope relay:studio$"):
        await service.admit(
            ONLY_PLACEHOLDER,
            GenerateArgs("make it night", preset="studio"),
            nothing_to_confirm,
            [source.id, source.id],
            None,
            True,
        )


async def test_an_unknown_preset_is_refused(service: ImageService) -> None:
    with pytest.raises(InvalidRequest, match="unknown preset 'nope'"):
        await service.admit(ALICE, GenerateArgs("a fox", preset="nope"), nothing_to_confirm)


async def test_an_edit_takes_a_preset_too(service: ImageService) -> None:
    admitted = await service.admit(ALICE, GenerateArgs("a fox"), nothing_to_confirm)
    (source,) = (await admitted.run(no_progress)).assets
    made = await service.edit(
        ALICE,
        GenerateArgs("make it night", preset="plain"),
        [source.id],
        None,
        False,
        no_progress,
        nothing_to_confirm,
    )
    assert made.assets[0].prompt == "make it night, plainly"
