"""The relay seam: an ImageRequest in, staged image blobs out.

A relay writes each image it receives straight into a `StagedBlob` (a temp file) and
hands those back; it never stores, names or publishes anything. What a relay supports
is declared in its `Capabilities` and checked centrally by `Capabilities.check` before
any upstream call, so an unsupported option is a clear error, never silently dropped.

A relay kind is one module of this package exporting `KIND = RelayKind(Config, Relay)`:
its config model (the `[relays.<name>]` table) and the class built from it. The
registry finds every such module; nothing else lists the kinds.
"""

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, get_args

from imagegate.core.errors import InvalidRequest
from imagegate.core.images import ImageFormat
from imagegate.core.staging import StagedBlob
from imagegate.relays.config import PriceTable, RelayConfig

_SIZE = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")
QUALITIES = ("low", "medium", "high", "auto")
BACKGROUNDS = ("transparent", "opaque", "auto")


@dataclass(frozen=True)
class Size:
    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> "Size":
        match = _SIZE.fullmatch(text.strip().lower())
        if not match:
            raise InvalidRequest(f"size must look like 1024x1024 (WIDTHxHEIGHT), got {text!r}")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def aspect_ratio(self) -> str:
        """The nearest of the aspect ratios image APIs name, e.g. '16:9'."""
        target = self.width / self.height
        return min(ASPECT_RATIOS, key=lambda r: abs(ASPECT_RATIOS[r] - target))


ASPECT_RATIOS = {
    "1:1": 1.0,
    "2:3": 2 / 3,
    "3:2": 3 / 2,
    "3:4": 3 / 4,
    "4:3": 4 / 3,
    "4:5": 4 / 5,
    "5:4": 5 / 4,
    "9:16": 9 / 16,
    "16:9": 16 / 9,
    "21:9": 21 / 9,
}


@dataclass(frozen=True)
class RelayDefaults:
    """What a relay uses when the caller does not say (from the relay's config)."""

    size: Size = Size(1024, 1024)
    output_format: ImageFormat = ImageFormat.PNG
    quality: str | None = None
    background: str | None = None
    compression: int | None = None


@dataclass(frozen=True)
class InputImage:
    """An image to send upstream: already checked (format, caps) and on disk."""

    path: Path
    format: ImageFormat
    width: int
    height: int


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    """As sent upstream: the relay's template and prefix already applied."""
    size: Size
    n: int
    output_format: ImageFormat
    quality: str | None = None
    background: str | None = None
    compression: int | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    partial_images: int = 0
    images: tuple[InputImage, ...] = ()
    """Edit inputs: one image to edit, or several references for one result."""
    mask: InputImage | None = None
    input_fidelity: str | None = None
    user: str | None = None
    """A stable hash of the caller (safety identifier); never the subject itself."""

    @property
    def is_edit(self) -> bool:
        return bool(self.images)


@dataclass(frozen=True)
class Capabilities:
    output_formats: tuple[ImageFormat, ...]
    max_n: int
    min_side: int
    max_side: int
    sizes: tuple[Size, ...] | None = None
    """Exact sizes allowed; None means any size between min_side and max_side."""
    qualities: tuple[str, ...] = ()
    backgrounds: tuple[str, ...] = ()
    compression: bool = False
    seed: bool = False
    negative_prompt: bool = False
    partial_images: int = 0
    """The most partial images the relay can stream (0: none)."""
    edit: bool = False
    max_inputs: int = 0
    mask: bool = False
    input_fidelity: bool = False

    def check(self, request: ImageRequest, relay: str) -> None:
        """Reject what this relay can't do, saying what it can, before any upstream call."""
        prefix = f"relay {relay!r}"
        if request.output_format not in self.output_formats:
            allowed = ", ".join(f.value for f in self.output_formats)
            raise InvalidRequest(
                f"{prefix} cannot produce {request.output_format.value}; "
                f"supported formats: {allowed}"
            )
        if request.n > self.max_n:
            raise InvalidRequest(f"{prefix} makes at most {self.max_n} images per call")
        if self.sizes is not None and request.size not in self.sizes:
            allowed = ", ".join(str(s) for s in self.sizes)
            raise InvalidRequest(f"{prefix} supports sizes {allowed}; got {request.size}")
        sides = (request.size.width, request.size.height)
        if min(sides) < self.min_side or max(sides) > self.max_side:
            raise InvalidRequest(
                f"{prefix} supports sides from {self.min_side} to {self.max_side} "
                f"pixels; got {request.size}"
            )
        _check_choice(prefix, "quality", request.quality, self.qualities)
        _check_choice(prefix, "background", request.background, self.backgrounds)
        _check_flag(prefix, "compression", request.compression is not None, self.compression)
        _check_flag(prefix, "seed", request.seed is not None, self.seed)
        _check_flag(prefix, "negative_prompt", request.negative_prompt, self.negative_prompt)
        _check_flag(prefix, "input_fidelity", request.input_fidelity, self.input_fidelity)
        if request.partial_images > self.partial_images:
            raise InvalidRequest(f"{prefix} streams at most {self.partial_images} partial images")
        if request.is_edit:
            if not self.edit:
                raise InvalidRequest(f"{prefix} cannot edit images; use a relay with edit: true")
            if len(request.images) > self.max_inputs:
                raise InvalidRequest(
                    f"{prefix} takes at most {self.max_inputs} input image(s) per edit"
                )
        _check_flag(prefix, "mask", request.mask is not None, self.mask)
        if request.background == "transparent" and request.output_format is ImageFormat.JPEG:
            raise InvalidRequest("a transparent background needs png or webp, not jpeg")

    def describe(self) -> dict[str, Any]:
        """What the relay supports, for list_relays: limits, and only the options it
        takes (an option left out is not supported)."""
        described: dict[str, Any] = {
            "output_formats": [f.value for f in self.output_formats],
            "max_n": self.max_n,
            "sizes": [str(s) for s in self.sizes] if self.sizes else None,
            "min_side": self.min_side,
            "max_side": self.max_side,
            "qualities": list(self.qualities),
            "backgrounds": list(self.backgrounds),
            "compression": self.compression,
            "seed": self.seed,
            "negative_prompt": self.negative_prompt,
            "partial_images": self.partial_images,
            "edit": self.edit,
            "max_inputs": self.max_inputs,
            "mask": self.mask,
            "input_fidelity": self.input_fidelity,
        }
        return {key: value for key, value in described.items() if value not in (None, False, [], 0)}


def _check_choice(prefix: str, name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is None:
        return
    if not allowed:
        raise InvalidRequest(f"{prefix} does not support {name}")
    if value not in allowed:
        raise InvalidRequest(f"{prefix} supports {name} {', '.join(allowed)}; got {value!r}")


def _check_flag(prefix: str, name: str, requested: object, supported: bool) -> None:
    if requested and not supported:
        raise InvalidRequest(f"{prefix} does not support {name}")


ProgressFn = Callable[[float | None, str], Awaitable[None]]
"""Report progress: a fraction in [0, 1] (None if unknown) and a short message."""

StageFn = Callable[[], StagedBlob]
"""A new staging file for an image. Called from worker threads too (wire.spool)."""


@dataclass
class RelayImage:
    staged: StagedBlob
    revised_prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    """What the relay actually used (e.g. the seed), recorded with the asset."""
    usage: dict[str, Any] | None = None
    """What the upstream reported spending (tokens, cost), when it says."""


class Relay(Protocol):
    name: str
    kind: str
    description: str
    paid: bool
    model: str | None
    price: PriceTable | None
    traits: frozenset[str]
    """What the operator declared it good at (relays.config.TRAITS), for relay="auto"."""
    capabilities: Capabilities
    defaults: RelayDefaults

    def render_prompt(self, prompt: str) -> str:
        """The caller's prompt as this relay sends it (template and prefix applied)."""
        ...

    async def generate(
        self, request: ImageRequest, stage: StageFn, progress: ProgressFn
    ) -> list[RelayImage]:
        """Produce the images of `request` (generation, or an edit when it has images)
        as finished staged blobs.

        On failure the relay discards whatever it staged and raises RelayError (or
        InvalidRequest); it never returns a partial list silently.
        """
        ...

    async def aclose(self) -> None:
        """Close the relay's connection pool, if it has one."""
        ...


def discard_all(images: list[RelayImage]) -> None:
    for image in images:
        image.staged.discard()


SecretLookup = Callable[[str], str | None]
"""The value of a secret environment variable named in a relay's config (its key), or
None when unset. Given to relays by the composition root: relays never read the
environment themselves."""

ConfigT = TypeVar("ConfigT", bound=RelayConfig)


@dataclass(frozen=True)
class RelayKind(Generic[ConfigT]):
    """What a relay module exports as `KIND`: its config model and how to build it."""

    config: type[ConfigT]
    build: Callable[[str, ConfigT, SecretLookup], Relay]

    @property
    def name(self) -> str:
        """The `kind` its config tables name, from the model's `kind` Literal."""
        (name,) = get_args(self.config.model_fields["kind"].annotation)
        return str(name)

    def create(self, name: str, config: RelayConfig, secrets: SecretLookup) -> Relay:
        if not isinstance(config, self.config):
            raise TypeError(f"relay {name!r}: a {type(config).__name__} is not a {self.name}")
        return self.build(name, config, secrets)
