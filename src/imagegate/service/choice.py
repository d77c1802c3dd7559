"""`relay="auto"`: which relay a call goes to when the caller lets imagegate choose.

Pure. The service describes every configured relay as a `Candidate`: may the caller
use it, the traits its operator declared, why it can't take this request (its
capabilities' refusal), and what the call would cost there. `choose` keeps the relays
the caller may use that take the request and have every trait asked for, and picks
the cheapest estimate (a free relay costs 0; a paid relay without a price comes after
every priced one), then one declared `fast`, then the first by name, so that the
same call always goes to the same relay. Estimates are compared as numbers: price
relays in one currency.

A relay the caller may not use is never chosen, and never named: not in the reason,
not in the refusal.
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from imagegate.core.errors import InvalidRequest
from imagegate.relays.config import AUTO, TRAITS


@dataclass(frozen=True)
class Candidate:
    """One configured relay, as seen for one request."""

    name: str
    usable: bool
    """May the caller use it (its relay scope)?"""
    traits: frozenset[str] = frozenset()
    refusal: str | None = None
    """Why it can't take this request (the check's message); None: it can."""
    paid: bool = False
    estimate: float | None = None
    """The call's estimated cost from the relay's price table; None: no price."""
    currency: str = "USD"

    @property
    def cost(self) -> float | None:
        """What the call costs for ranking: a free relay's is 0 unless it has a price."""
        if self.estimate is not None:
            return self.estimate
        return None if self.paid else 0.0


@dataclass(frozen=True)
class Choice:
    relay: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"relay": self.relay, "reason": self.reason}


def check_needs(needs: Collection[str]) -> None:
    unknown = [trait for trait in needs if trait not in TRAITS]
    if unknown:
        raise InvalidRequest(
            f"needs: unknown trait {unknown[0]!r}; the traits are: {', '.join(TRAITS)}"
        )


def choose(candidates: Sequence[Candidate], needs: Collection[str] = ()) -> Choice:
    """The relay for the call, and why; InvalidRequest saying why none fits."""
    check_needs(needs)
    wanted = frozenset(needs)
    usable = sorted((c for c in candidates if c.usable), key=lambda c: c.name)
    if not usable:
        raise InvalidRequest(f"relay={AUTO!r}: you may use no relay (a relay:<name> scope)")
    fitting: list[Candidate] = []
    excluded: list[str] = []
    refusals: list[str] = []
    for candidate in usable:
        missing = sorted(wanted - candidate.traits)
        if missing:
            excluded.append(f"{candidate.name}: lacks {', '.join(missing)}")
        elif candidate.refusal is not None:
            own = f"relay {candidate.name!r} "  # the check names the relay; once is enough
            excluded.append(f"{candidate.name}: {candidate.refusal.removeprefix(own)}")
            refusals.append(candidate.refusal)
        else:
            fitting.append(candidate)
    if not fitting:
        if len(refusals) == len(usable) and len(set(refusals)) == 1:
            # Every relay refused it alike (an empty prompt, n too large): the request
            # is at fault, not the relays; say just that.
            raise InvalidRequest(refusals[0])
        raise InvalidRequest(
            f"relay={AUTO!r}: no relay you may use can do this: {'; '.join(excluded)}"
        )
    ranked = sorted(fitting, key=_rank)
    return Choice(ranked[0].name, _reason(ranked, wanted))


def _rank(candidate: Candidate) -> tuple[bool, float, bool, str]:
    cost = candidate.cost
    return (cost is None, cost or 0.0, "fast" not in candidate.traits, candidate.name)


def _reason(ranked: list[Candidate], needs: frozenset[str]) -> str:
    best = ranked[0]
    having = f" with {', '.join(sorted(needs))}" if needs else ""
    if len(ranked) == 1:
        return f"the only relay you may use that can do this{having}; {_cost(best)}"
    fitting = f"{len(ranked)} relays you may use that can do this{having}"
    reason = f"cheapest of {fitting}; {_cost(best)}"
    runner_up = ranked[1]
    if runner_up.cost == best.cost:
        if "fast" in best.traits and "fast" not in runner_up.traits:
            reason += ", and fast"
        else:
            reason += ", first by name of those alike"
    return reason


def _cost(candidate: Candidate) -> str:
    if candidate.cost is None:
        return "cost unknown (no price)"
    if candidate.cost == 0:
        return "free"
    return f"about {candidate.currency} {candidate.cost:.3f}"
