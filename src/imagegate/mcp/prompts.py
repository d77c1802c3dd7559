"""MCP prompts (`prompts/list`, `prompts/get`): ready-made requests a person picks in
their client, which the model then carries out.

- `preset_<name>`, one per operator preset (`[presets.NAME]`): asks the model to call
  generate_image with that preset and a well-written prompt for the person's idea.
- `write_for_<kind>`, one per relay kind configured: how to write a request that
  kind's models answer best (package data, `mcp/guides/<kind>.md`), with the sizes
  and options of the caller's relays of that kind.

Offered only where they lead to calls the caller may make (`offered`): a preset's
prompt when it may call generate_image on the preset's relay, a kind's when it may
call generate_image or edit_image on a relay of that kind. `prompts/list` leaves the
others out and `prompts/get` answers them as unknown, like a name that doesn't exist.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

import mcp_types as mt
from fastmcp import FastMCP
from fastmcp.exceptions import NotFoundError, ValidationError
from fastmcp.prompts import Prompt
from fastmcp.prompts.function_prompt import FunctionPrompt
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from pydantic import Field

from imagegate.access.policy import AccessPolicy, Caller, decide, may_use_relay
from imagegate.mcp.auth import request_identity
from imagegate.mcp.specs import RULES
from imagegate.relays.base import Relay
from imagegate.relays.config import AUTO
from imagegate.service.images import ImageService
from imagegate.service.presets import Preset

PRESET_PREFIX = "preset_"
GUIDE_PREFIX = "write_for_"

IdeaArg = Annotated[str, Field(description="What the image should show, in your own words.")]


@dataclass(frozen=True)
class Offer:
    """What a prompt leads the model to: a call of one of `tools` on one of `relays`
    (None: a relay the service chooses, which it checks then)."""

    tools: tuple[str, ...]
    relays: tuple[str | None, ...]


def offered(scopes: frozenset[str], offer: Offer) -> bool:
    """May a caller holding `scopes` make one of the calls the prompt leads to?"""
    return any(
        decide(scopes, RULES.get(tool), relay).allowed
        for tool in offer.tools
        for relay in offer.relays
    )


def guide_name(kind: str) -> str:
    return GUIDE_PREFIX + kind.replace("-", "_")


@dataclass(frozen=True)
class Guide:
    kind: str
    title: str
    body: str


def read_guide(kind: str) -> Guide | None:
    """The kind's guide (package data; its first line is `# Title`), if it has one."""
    path = resources.files("imagegate.mcp").joinpath(f"guides/{kind}.md")
    if not path.is_file():
        return None
    first, _, body = path.read_text("utf-8").partition("\n")
    return Guide(kind, first.removeprefix("# ").strip(), body.strip())


def preset_message(preset: Preset, idea: str) -> str:
    """What the preset's prompt asks of the model."""
    sets = ", ".join(f'{key}="{value}"' for key, value in preset.defaults().items())
    return (
        f"Make an image of: {idea.strip()}\n\n"
        f'Call the imagegate tool generate_image with preset="{preset.name}" and a prompt '
        "you write from that idea: one or two concrete sentences on the subject, what it "
        "does, the setting, the composition and the light. The preset puts your prompt "
        f'into its template, "{preset.prompt}", so leave out the style that the template '
        "gives. "
        + (f"It sets {sets}; pass those options only to change them. " if sets else "")
        + "Then show the user the image's link."
    )


def guide_message(guide: Guide, relays: Sequence[Relay], idea: str) -> str:
    """The kind's guide, the caller's relays of that kind, and the request to make."""
    lines = [guide.body, "", "Relays of this kind you may use:"]
    lines += [f"- {relay_line(relay)}" for relay in relays]
    first = relays[0].name if relays else guide.kind
    lines += [
        "",
        f"The image: {idea.strip()}",
        "",
        f'Write the prompt as above, then call generate_image with relay="{first}" (or '
        "another relay listed) and the size that fits the subject. Then show the user "
        "the image's link.",
    ]
    return "\n".join(lines)


def relay_line(relay: Relay) -> str:
    """One relay's model, price and options, as a guide lists them."""
    can = relay.capabilities
    sizes = (
        ", ".join(str(size) for size in can.sizes)
        if can.sizes
        else f"any from {can.min_side} to {can.max_side} pixels a side"
    )
    parts = [
        f"model {relay.model}" if relay.model else None,
        "paid" if relay.paid else "free",
        f"sizes {sizes} (default {relay.defaults.size})",
        f"quality {', '.join(can.qualities)}" if can.qualities else None,
        "negative_prompt" if can.negative_prompt else None,
        "seed" if can.seed else None,
        "transparent background (png or webp)" if "transparent" in can.backgrounds else None,
        f"edits of up to {can.max_inputs} image(s)" if can.edit else None,
        "mask" if can.mask else None,
    ]
    return f"{relay.name}: " + "; ".join(part for part in parts if part)


class Prompts:
    """The prompts of one server, and who may see which."""

    def __init__(self, service: ImageService, policy: AccessPolicy, local: bool) -> None:
        self._service = service
        self._policy = policy
        self._local = local
        self.max_idea_chars = service.settings.max_prompt_chars
        relays = service.relays.all()
        kinds = sorted({relay.kind for relay in relays})
        self.guides = [guide for guide in map(read_guide, kinds) if guide is not None]
        self.offers: dict[str, Offer] = {}
        for preset in service.presets.server.values():
            relay = preset.relay or service.relays.default
            self.offers[PRESET_PREFIX + preset.name] = Offer(
                ("generate_image",), (None if relay == AUTO else relay,)
            )
        for guide in self.guides:
            names = tuple(relay.name for relay in relays if relay.kind == guide.kind)
            self.offers[guide_name(guide.kind)] = Offer(("generate_image", "edit_image"), names)

    def caller(self) -> Caller | None:
        """The caller of the request being handled: stdio's local user, or the verified
        token's; None for nobody."""
        identity = request_identity(self._local)
        return None if identity is None else self._policy.caller(identity)

    def may_offer(self, caller: Caller | None, name: str) -> bool:
        offer = self.offers.get(name)
        return caller is not None and offer is not None and offered(caller.scopes, offer)

    def usable_relays(self, caller: Caller | None, kind: str) -> list[Relay]:
        return [
            relay
            for relay in self._service.relays.all()
            if caller is not None and relay.kind == kind and may_use_relay(caller, relay.name)
        ]

    def components(self) -> list[Prompt]:
        made: list[Prompt] = [
            FunctionPrompt.from_function(
                PresetPrompt(preset),
                name=PRESET_PREFIX + preset.name,
                title=f"Preset {preset.name}",
                description=preset.description or f"An image in the server's {preset.name} style.",
            )
            for preset in self._service.presets.server.values()
        ]
        made += [
            FunctionPrompt.from_function(
                GuidePrompt(guide, self),
                name=guide_name(guide.kind),
                title=f"Write for {guide.title}",
                description=f"How to write a good request for {guide.title}, then make it.",
            )
            for guide in self.guides
        ]
        return made


class PresetPrompt:
    """The prompt of one operator preset."""

    def __init__(self, preset: Preset) -> None:
        self._preset = preset

    def __call__(self, idea: IdeaArg) -> str:
        return preset_message(self._preset, idea)


class GuidePrompt:
    """The writing guide of one relay kind, with the caller's relays of that kind."""

    def __init__(self, guide: Guide, prompts: Prompts) -> None:
        self._guide = guide
        self._prompts = prompts

    def __call__(self, idea: IdeaArg) -> str:
        relays = self._prompts.usable_relays(self._prompts.caller(), self._guide.kind)
        return guide_message(self._guide, relays, idea)


class PromptAccess(Middleware):
    """Lists and renders only the prompts the caller is offered; checks the idea."""

    def __init__(self, prompts: Prompts) -> None:
        self._prompts = prompts

    async def on_list_prompts(
        self,
        context: MiddlewareContext[mt.ListPromptsRequest],
        call_next: CallNext[mt.ListPromptsRequest, Sequence[Prompt]],
    ) -> Sequence[Prompt]:
        listed = await call_next(context)
        caller = self._prompts.caller()
        return [prompt for prompt in listed if self._prompts.may_offer(caller, prompt.name)]

    async def on_get_prompt(
        self, context: MiddlewareContext[mt.GetPromptRequestParams], call_next: CallNext[Any, Any]
    ) -> Any:
        name = context.message.name
        if not self._prompts.may_offer(self._prompts.caller(), name):
            raise NotFoundError(f"Unknown prompt: {name!r}")
        idea = (context.message.arguments or {}).get("idea")
        if not isinstance(idea, str) or not idea.strip():
            raise ValidationError("argument idea is required: what the image should show")
        if len(idea) > self._prompts.max_idea_chars:
            raise ValidationError(
                f"argument idea is longer than {self._prompts.max_idea_chars} characters"
            )
        return await call_next(context)


def serve_prompts(mcp: FastMCP[Any], prompts: Prompts) -> None:
    """Register the prompts and the middleware that offers each only where it fits."""
    mcp.add_middleware(PromptAccess(prompts))
    for prompt in prompts.components():
        mcp.add_prompt(prompt)
