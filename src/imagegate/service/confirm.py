"""Paid relays ask first: what the question says and what a call is estimated to cost.

Who must be asked is `access.policy.needs_confirmation`; the asking (MCP elicitation)
is `mcp.elicit`. The question shows relay, model, number of images, size, quality and
the estimated cost from the relay's price table, or says the cost is unknown. A batch
or multi-image call asks once, for its total.
"""

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from imagegate.relays.base import ImageRequest, Relay


@dataclass(frozen=True)
class PaidCall:
    relay: str
    model: str | None
    images: int
    size: str
    quality: str | None
    estimate: float | None
    currency: str

    def question(self) -> str:
        model = f" (model {self.model})" if self.model else ""
        quality = f", quality {self.quality}" if self.quality else ""
        cost = (
            f"about {self.currency} {self.estimate:.3f}"
            if self.estimate is not None
            else "unknown (no price configured for this relay)"
        )
        return (
            f"Relay {self.relay!r}{model} costs money. Make {self.images} image(s) at "
            f"{self.size}{quality}? Estimated cost: {cost}."
        )

    def fingerprint(self) -> str:
        """What a confirmation is bound to: the same question, not just any call."""
        return "|".join(
            str(part)
            for part in (
                self.relay,
                self.model,
                self.images,
                self.size,
                self.quality,
                self.estimate,
            )
        )


ConfirmFn = Callable[[PaidCall, bool], Awaitable[None]]
"""Called for every paid call with `ask` (False: the caller holds paid:auto). Returns
when the call may go ahead; raises NotConfirmed (or asks the client) otherwise."""


def estimate_cost(relay: Relay, request: ImageRequest, images: int | None = None) -> float | None:
    if relay.price is None:
        return None
    each = relay.price.estimate(str(request.size), request.quality)
    return None if each is None else round(each * (images or request.n), 6)


def paid_call(relay: Relay, request: ImageRequest, images: int) -> PaidCall:
    return PaidCall(
        relay=relay.name,
        model=relay.model,
        images=images,
        size=str(request.size),
        quality=request.quality,
        estimate=estimate_cost(relay, request, images),
        currency=relay.price.currency if relay.price else "USD",
    )


def batch_total(calls: Sequence[PaidCall]) -> PaidCall:
    """One question for a whole batch: its images and costs added up. An edit's size
    defaults to its input's, so items may differ: then every size is named with its
    count, and one item without a price makes the total unknown."""
    sizes: Counter[str] = Counter()
    for call in calls:
        sizes[call.size] += call.images
    size = (
        calls[0].size
        if len(sizes) == 1
        else ", ".join(f"{size} (x{count})" for size, count in sizes.items())
    )
    estimates = [call.estimate for call in calls if call.estimate is not None]
    total = round(sum(estimates), 6) if len(estimates) == len(calls) else None
    return replace(calls[0], images=sum(call.images for call in calls), size=size, estimate=total)
