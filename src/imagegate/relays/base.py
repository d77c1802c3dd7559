"""The relay seam: a request dataclass in, staged image blobs out.

A relay writes each image it receives straight into a `StagedBlob` (a temp file) and
hands those back; it never stores, names or publishes anything. Which options a relay
supports is declared in its `Capabilities` and checked centrally by
`Capabilities.check` before any upstream call.
"""

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from imagegate.errors import InvalidRequest
from imagegate.images import ImageFormat
from imagegate.store.blobs import StagedBlob

_SIZE = re.compile(r"([1-9][0-9]{1,4})x([1-9][0-9]{1,4})")


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


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    size: Size
    n: int
    output_format: ImageFormat
    seed: int | None = None


@dataclass(frozen=True)
class Capabilities:
    output_formats: tuple[ImageFormat, ...]
    max_n: int
    min_side: int
    max_side: int
    sizes: tuple[Size, ...] | None = None
    """Exact sizes allowed; None means any size between min_side and max_side."""
    seed: bool = False
    edit: bool = False

    def check(self, request: GenerationRequest, relay: str) -> None:
        """Reject what this relay can't do, saying what it can, before any upstream call."""
        if request.output_format not in self.output_formats:
            allowed = ", ".join(f.value for f in self.output_formats)
            raise InvalidRequest(
                f"relay {relay!r} cannot produce {request.output_format.value}; "
                f"supported formats: {allowed}"
            )
        if request.n > self.max_n:
            raise InvalidRequest(f"relay {relay!r} makes at most {self.max_n} images per call")
        if self.sizes is not None and request.size not in self.sizes:
            allowed = ", ".join(str(s) for s in self.sizes)
            raise InvalidRequest(f"relay {relay!r} supports sizes {allowed}; got {request.size}")
        sides = (request.size.width, request.size.height)
        if min(sides) < self.min_side or max(sides) > self.max_side:
            raise InvalidRequest(
                f"relay {relay!r} supports sides from {self.min_side} to {self.max_side} "
                f"pixels; got {request.size}"
            )
        if request.seed is not None and not self.seed:
            raise InvalidRequest(f"relay {relay!r} does not support a seed")

    def describe(self) -> dict[str, Any]:
        return {
            "output_formats": [f.value for f in self.output_formats],
            "max_n": self.max_n,
            "sizes": [str(s) for s in self.sizes] if self.sizes else None,
            "min_side": self.min_side,
            "max_side": self.max_side,
            "seed": self.seed,
            "edit": self.edit,
        }


ProgressFn = Callable[[float | None, str], Awaitable[None]]
"""Report progress: a fraction in [0, 1] (None if unknown) and a short message."""

StageFn = Callable[[], StagedBlob]


@dataclass
class RelayImage:
    staged: StagedBlob
    revised_prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    """What the relay actually used (e.g. the seed), recorded with the asset."""


class Relay(Protocol):
    name: str
    kind: str
    description: str
    paid: bool
    capabilities: Capabilities

    async def generate(
        self, request: GenerationRequest, stage: StageFn, progress: ProgressFn
    ) -> list[RelayImage]:
        """Produce `request.n` images as finished staged blobs.

        On failure the relay discards whatever it staged and raises RelayError
        (or InvalidRequest); it never returns a partial list silently.
        """
        ...
