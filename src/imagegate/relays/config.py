"""The config models every relay kind builds on; each kind's module adds its own fields.

A relay's config is its table in `[relays.<name>]`. The discriminator is `kind`; the
settings loader builds the union of every kind's model from the registry.
"""

import re
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

ENV_NAME = r"^[A-Z_][A-Z0-9_]{0,127}$"
"""The name of an environment variable (a relay never holds a key in its config)."""

AUTO = "auto"
"""`relay="auto"`: the caller lets imagegate choose (service.choice); no relay has
this name."""

Trait = Literal["text", "photoreal", "illustration", "fast"]
"""What an operator may declare a relay good at, for `relay="auto"`: legible text in
images, photorealism, illustration (drawings, icons, flat art), quick answers. Cost
is no trait: it comes from the relay's price table."""

TRAITS: tuple[str, ...] = get_args(Trait)


class PriceTable(BaseModel):
    """Estimated price per image, for confirmations and budgets; keys are `*`,
    `<quality>`, `<WxH>` or `<WxH>:<quality>` (most specific wins)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = "USD"
    per_image: dict[str, float] = Field(default_factory=dict)

    def estimate(self, size: str | None, quality: str | None) -> float | None:
        """Price of one image, or None when the table doesn't say."""
        for key in (f"{size}:{quality}", f"{size}", f"{quality}", "*"):
            if key in self.per_image:
                return self.per_image[key]
        return None


class RelayConfig(BaseModel):
    """What every relay's table has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    description: str = ""
    prompt_template: str = "{prompt}"
    """How the caller's prompt is sent; must contain {prompt}."""
    prompt_prefix: str = ""
    traits: tuple[str, ...] = ()
    """What the operator declares the relay good at (TRAITS), for relay="auto"."""

    @field_validator("traits")
    @classmethod
    def _known_traits(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [trait for trait in value if trait not in TRAITS]
        if unknown:
            raise ValueError(f"unknown trait {unknown[0]!r}; the traits are: {', '.join(TRAITS)}")
        return tuple(dict.fromkeys(value))

    @field_validator("prompt_template")
    @classmethod
    def _has_prompt(cls, value: str) -> str:
        if "{prompt}" not in value:
            raise ValueError("must contain {prompt}")
        return value

    def render_prompt(self, prompt: str) -> str:
        # str.replace, not str.format: a caller's braces must not reach format().
        return self.prompt_prefix + self.prompt_template.replace("{prompt}", prompt)


class HttpRelayConfig(RelayConfig):
    """What every upstream relay has: where it is, its key's variable, limits, price."""

    base_url: str
    api_key_env: str | None = Field(default=None, pattern=ENV_NAME)
    """The NAME of the environment variable that holds the key, never the key."""
    model: str | None = None
    paid: bool = True
    price: PriceTable | None = None
    request_policy: Literal["openai", "compat"] = "openai"
    """openai: official fields only; compat: also seed, negative_prompt and similar."""
    default_size: str | None = None
    default_quality: Literal["low", "medium", "high", "auto"] | None = None
    default_format: Literal["png", "jpeg", "webp"] | None = None
    default_background: Literal["transparent", "opaque", "auto"] | None = None
    default_compression: int | None = Field(default=None, ge=0, le=100)
    connect_timeout: float = Field(default=10.0, gt=0, le=120)
    first_byte_timeout: float = Field(default=120.0, gt=0, le=1800)
    total_timeout: float = Field(default=300.0, gt=0, le=3600)
    max_retries: int = Field(default=3, ge=1, le=10)
    """Tries in all, for what may be retried (429, 5xx, connection errors)."""
    retry_budget_seconds: float = Field(default=60.0, ge=0, le=600)
    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s?#]+", value):
            raise ValueError("must be an http:// or https:// URL without query or fragment")
        return value.rstrip("/")
