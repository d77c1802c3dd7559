"""Style presets: a prompt template and defaults under a name, from the operator's
config (`[presets.NAME]`, owner "server") or saved by a subject for itself ("own").

`apply` is what `preset=` does to a call: the template wraps the caller's prompt (a
plain replacement of `{prompt}`, so braces in the caller's prompt are just text), and
the preset's negative prompt, size, quality and relay fill in only what the caller
left out. The result is an ordinary request, checked like any other: the relay it
names must be one the caller may use (service.images checks the relay a call resolves
to), and the relay must support what the preset sets.

A caller sees and uses the server's presets and its own, never another subject's.
The server's names are reserved: an own preset can't change what a server preset
means to the caller who reads it in list_presets or a prompt.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from pydantic import ValidationError

from imagegate.access.policy import Caller, check_relay, may_use_relay
from imagegate.config import (
    PRESET_NAME,
    PRESET_SLOT,
    PresetSettings,
    Settings,
    preset_problem,
)
from imagegate.core.clock import Clock
from imagegate.core.errors import ConfigError, InvalidRequest, NotFound
from imagegate.relays.base import Relay
from imagegate.relays.config import AUTO
from imagegate.relays.registry import Relays
from imagegate.service.generation import GenerateArgs, build_request
from imagegate.storage.interfaces import PresetLedger, PresetSaved, StoredPreset

Owner = Literal["server", "own"]


@dataclass(frozen=True)
class Preset:
    name: str
    owner: Owner
    prompt: str
    """The template: `{prompt}` is where the caller's prompt goes."""
    negative_prompt: str | None = None
    size: str | None = None
    quality: str | None = None
    relay: str | None = None
    description: str | None = None
    shadowed: bool = False
    """An own preset saved before the operator added a server preset of its name:
    calls use the server's; this one is listed only so that it can be deleted."""

    def defaults(self) -> dict[str, str]:
        """What the preset sets when a call leaves it out."""
        values = {
            "negative_prompt": self.negative_prompt,
            "size": self.size,
            "quality": self.quality,
            "relay": self.relay,
        }
        return {key: value for key, value in values.items() if value is not None}


def configured(name: str, owner: Owner, config: PresetSettings) -> Preset:
    return Preset(
        name,
        owner,
        config.prompt,
        config.negative_prompt,
        config.size,
        config.quality,
        config.relay,
        config.description,
    )


def own_preset(stored: StoredPreset) -> Preset:
    return Preset(
        stored.name,
        "own",
        stored.prompt,
        stored.negative_prompt,
        stored.size,
        stored.quality,
        stored.relay,
        stored.description,
    )


def expand(template: str, prompt: str) -> str:
    """The template with the caller's prompt in place of `{prompt}`. Never
    `str.format`: a caller's `{0.__class__}` or `{x}` is text, not a field."""
    return template.replace(PRESET_SLOT, prompt)


def apply(args: GenerateArgs, preset: Preset, max_prompt_chars: int) -> GenerateArgs:
    """A call's arguments with `preset` applied: its template around the prompt, its
    defaults where the call has none (an explicit empty negative_prompt drops the
    preset's). Raises InvalidRequest when the prompt is empty or, wrapped, too long."""
    prompt = args.prompt.strip()
    if not prompt:
        raise InvalidRequest("prompt must not be empty")
    expanded = expand(preset.prompt, prompt).strip()
    if len(expanded) > max_prompt_chars:
        raise InvalidRequest(
            f"prompt is {len(expanded)} characters with preset {preset.name!r} (its template "
            f"adds {len(expanded) - len(prompt)}); the limit is {max_prompt_chars}"
        )
    return replace(
        args,
        prompt=expanded,
        preset=None,
        negative_prompt=(
            preset.negative_prompt if args.negative_prompt is None else args.negative_prompt
        ),
        size=args.size or preset.size,
        quality=args.quality or preset.quality,
        relay=args.relay or preset.relay,
    )


def usable(caller: Caller, preset: Preset) -> bool:
    """Is the preset offered to the caller (list_presets, prompts)? Not when it names
    a relay the caller may not use, which would only be refused; one without a relay,
    or with "auto", runs on a relay the call resolves to, checked then."""
    return preset.relay in (None, AUTO) or may_use_relay(caller, preset.relay)


def checked(name: str, values: Mapping[str, str | None], settings: Settings) -> PresetSettings:
    """A preset a caller wants to save, checked like a configured one (an empty value
    is no value). Raises InvalidRequest saying what is wrong."""
    if not PRESET_NAME.fullmatch(name):
        raise InvalidRequest(
            "name must be 1-40 of a-z, 0-9, '-', '_' and start with a letter or digit"
        )
    if name in settings.presets:
        raise InvalidRequest(f"{name!r} is the name of a server preset; choose another name")
    try:
        preset = PresetSettings.model_validate({k: v for k, v in values.items() if v})
    except ValidationError as err:
        problems = [
            f"{'.'.join(str(part) for part in problem['loc'])}: "
            + problem["msg"].removeprefix("Value error, ")
            for problem in err.errors()
        ]
        raise InvalidRequest("; ".join(problems)) from None
    problem = preset_problem(preset, settings.max_prompt_chars, settings.max_image_pixels)
    if problem is not None:
        raise InvalidRequest(problem)
    return preset


def fits_relay(preset: Preset, relay: Relay, settings: Settings) -> None:
    """Raise InvalidRequest when `relay` would refuse what the preset sets (a size,
    quality or negative prompt it lacks): then every call with it would fail."""
    request = build_request(
        apply(GenerateArgs("x"), preset, settings.max_prompt_chars), relay, settings
    )
    relay.capabilities.check(request, relay.name)


def check_server_presets(settings: Settings, relays: Iterable[Relay]) -> None:
    """At start (and check-config): each configured preset must suit the relay its
    calls go to: the one it names, else the default relay. With "auto", at least one
    relay must take it (the caller's relays are known only per call). Raises
    ConfigError naming every preset that does not."""
    by_name = {relay.name: relay for relay in relays}
    problems = []
    for name, config in settings.presets.items():
        preset = configured(name, "server", config)
        if config.relay == AUTO:
            refusals = [_refusal(preset, relay, settings) for relay in by_name.values()]
            if by_name and all(refusals):
                problems.append(
                    f'presets.{name}: relay "auto" has no relay that takes it: '
                    f"{'; '.join(filter(None, refusals))}; change the preset"
                )
            continue
        relay = by_name.get(config.relay or settings.default_relay)
        refusal = None if relay is None else _refusal(preset, relay, settings)
        if refusal is not None:  # (no relay: one that failed on its own, reported so)
            default = "" if config.relay else " (it names no relay: calls go to default_relay)"
            problems.append(f"presets.{name}: {refusal}{default}; change the preset or its relay")
    if problems:
        raise ConfigError("\n".join(problems))


def _refusal(preset: Preset, relay: Relay, settings: Settings) -> str | None:
    try:
        fits_relay(preset, relay, settings)
    except InvalidRequest as err:
        return str(err)
    return None


class Presets:
    """The presets a caller may use: the server's, and its own from the ledger (none
    without one)."""

    def __init__(
        self, settings: Settings, relays: Relays, ledger: PresetLedger | None, clock: Clock
    ) -> None:
        self._settings = settings
        self._relays = relays
        self._ledger = ledger
        self._clock = clock
        self.server = {
            name: configured(name, "server", config)
            for name, config in sorted(settings.presets.items())
        }

    async def visible(self, caller: Caller) -> list[Preset]:
        """The server's presets the caller may use, then its own, each by name; an own
        one a server preset shadows is marked so (it still counts against the limit)."""
        server = [preset for preset in self.server.values() if usable(caller, preset)]
        if self._ledger is None:
            return server
        own = [own_preset(s) for s in await self._ledger.list(caller.subject)]
        return server + [replace(p, shadowed=p.name in self.server) for p in own]

    async def find(self, caller: Caller, name: str) -> Preset:
        """The server's preset of that name, else the caller's own."""
        if name in self.server:
            return self.server[name]
        stored = None
        if self._ledger is not None and PRESET_NAME.fullmatch(name):
            stored = await self._ledger.get(caller.subject, name)
        if stored is None:
            raise InvalidRequest(
                f"unknown preset {name[:40]!r}; list_presets shows the ones you may use"
            )
        return own_preset(stored)

    async def applied(self, caller: Caller, args: GenerateArgs) -> GenerateArgs:
        """The call's arguments with its preset (if any) applied."""
        if not args.preset:
            return replace(args, preset=None)
        preset = await self.find(caller, args.preset)
        return apply(args, preset, self._settings.max_prompt_chars)

    async def save(
        self, caller: Caller, name: str, values: Mapping[str, str | None]
    ) -> tuple[Preset, PresetSaved]:
        """Save (or replace) one of the caller's own presets. `values` holds prompt,
        negative_prompt, size, quality, relay and description."""
        most = self._settings.max_presets_per_subject
        if self._ledger is None or most == 0:
            raise InvalidRequest("this server keeps no presets of callers; use the server's")
        config = checked(name, values, self._settings)
        preset = configured(name, "own", config)
        if config.relay not in (None, AUTO):
            self._check_relay(caller, preset, config.relay)
        stored = StoredPreset(
            owner=caller.subject,
            name=name,
            prompt=config.prompt,
            negative_prompt=config.negative_prompt,
            size=config.size,
            quality=config.quality,
            relay=config.relay,
            description=config.description,
            updated_at=self._clock.now(),
        )
        saved = await self._ledger.save(stored, most)
        if saved is PresetSaved.FULL:
            raise InvalidRequest(
                f"you have {most} presets, the most this server keeps for one caller; "
                "delete one with delete_preset first"
            )
        return preset, saved

    def _check_relay(self, caller: Caller, preset: Preset, relay: str) -> None:
        check_relay(caller, relay)
        fits_relay(preset, self._relays.get(relay), self._settings)

    async def delete(self, caller: Caller, name: str) -> None:
        """Delete one of the caller's own presets, also one a server preset shadows."""
        if self._ledger is not None and await self._ledger.delete(caller.subject, name):
            return
        if name in self.server:
            raise InvalidRequest(f"{name!r} is a server preset; you can delete only your own")
        raise NotFound(f"you have no preset named {name[:40]!r}")
