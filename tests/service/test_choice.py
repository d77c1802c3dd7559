"""relay="auto": which relay `choose` picks, and what it says when none fits."""

import pytest

from imagegate.core.errors import InvalidRequest
from imagegate.service.choice import Candidate, Choice, choose


def free(name: str, *traits: str, refusal: str | None = None) -> Candidate:
    return Candidate(name, True, frozenset(traits), refusal)


def priced(name: str, estimate: float | None, *traits: str) -> Candidate:
    return Candidate(name, True, frozenset(traits), None, True, estimate)


def hidden(name: str, *traits: str) -> Candidate:
    """A relay the caller may not use (no relay scope): cheap, and it has every trait."""
    return Candidate(name, False, frozenset(traits), None, False, 0.0)


MASK = "relay 'b' does not support mask"
TRANSPARENT = "relay 'a' supports background opaque; got 'transparent'"
SIZE = "relay 'c' supports sizes 1024x1024; got 512x512"


@pytest.mark.parametrize(
    ("candidates", "needs", "relay", "reason"),
    [
        pytest.param(
            [priced("dear", 0.08), priced("cheap", 0.02), priced("mid", 0.04)],
            [],
            "cheap",
            "cheapest of 3 relays you may use that can do this; about USD 0.020",
            id="cheapest-first",
        ),
        pytest.param(
            [priced("paid", 0.01), free("free")],
            [],
            "free",
            "cheapest of 2 relays you may use that can do this; free",
            id="free-beats-priced",
        ),
        pytest.param(
            [priced("unpriced", None), priced("priced", 0.5)],
            [],
            "priced",
            "cheapest of 2 relays you may use that can do this; about USD 0.500",
            id="paid-without-price-comes-last",
        ),
        pytest.param(
            [priced("unpriced", None)],
            [],
            "unpriced",
            "the only relay you may use that can do this; cost unknown (no price)",
            id="paid-without-price-alone",
        ),
        pytest.param(
            [priced("cheap", 0.01), priced("texty", 0.04, "text", "photoreal")],
            ["text"],
            "texty",
            "the only relay you may use that can do this with text; about USD 0.040",
            id="trait-filter",
        ),
        pytest.param(
            [
                priced("a", 0.04, "text", "photoreal"),
                priced("b", 0.02, "text"),
                priced("c", 0.03, "photoreal", "text"),
            ],
            ["photoreal", "text"],
            "c",
            "cheapest of 2 relays you may use that can do this with photoreal, text; "
            "about USD 0.030",
            id="every-trait-needed",
        ),
        pytest.param(
            [free("a"), free("b", refusal=MASK)],
            [],
            "a",
            "the only relay you may use that can do this; free",
            id="capability-excluded-mask",
        ),
        pytest.param(
            [free("a", refusal=TRANSPARENT), priced("b", 0.04)],
            [],
            "b",
            "the only relay you may use that can do this; about USD 0.040",
            id="capability-excluded-transparent",
        ),
        pytest.param(
            [free("c", refusal=SIZE), priced("d", 0.2)],
            [],
            "d",
            "the only relay you may use that can do this; about USD 0.200",
            id="capability-excluded-size",
        ),
        pytest.param(
            [free("slow"), free("quick", "fast")],
            [],
            "quick",
            "cheapest of 2 relays you may use that can do this; free, and fast",
            id="tie-broken-by-fast",
        ),
        pytest.param(
            [priced("zeta", 0.02, "fast"), priced("alpha", 0.02, "fast"), priced("mu", 0.02)],
            [],
            "alpha",
            "cheapest of 3 relays you may use that can do this; about USD 0.020, "
            "first by name of those alike",
            id="tie-broken-by-name",
        ),
        pytest.param(
            [hidden("secret", "text"), priced("open", 0.04, "text")],
            ["text"],
            "open",
            "the only relay you may use that can do this with text; about USD 0.040",
            id="unusable-never-chosen",
        ),
    ],
)
def test_choose(candidates: list[Candidate], needs: list[str], relay: str, reason: str) -> None:
    assert choose(candidates, needs) == Choice(relay, reason)


def test_the_order_of_the_candidates_does_not_matter() -> None:
    candidates = [free("b"), free("a"), priced("c", 0.0, "fast"), priced("d", 0.01)]
    chosen = {choose(order).relay for order in (candidates, candidates[::-1])}
    assert chosen == {"c"}


@pytest.mark.parametrize(
    ("candidates", "needs", "message"),
    [
        pytest.param(
            [free("a", "photoreal"), free("b", "text", refusal=MASK)],
            ["text"],
            "relay='auto': no relay you may use can do this: a: lacks text; "
            "b: does not support mask",
            id="each-relay-says-why",
        ),
        pytest.param(
            [free("a"), hidden("secret", "text")],
            ["text", "fast"],
            "relay='auto': no relay you may use can do this: a: lacks fast, text$",
            id="unusable-not-named",
        ),
        pytest.param(
            [hidden("secret")],
            [],
            r"relay='auto': you may use no relay \(a relay:<name> scope\)",
            id="no-relay-usable",
        ),
        pytest.param(
            [
                free("a", refusal="prompt must not be empty"),
                free("b", refusal="prompt must not be empty"),
            ],
            [],
            "^prompt must not be empty$",
            id="the-request-is-at-fault",
        ),
        pytest.param(
            [free("a", "text", refusal="n must be between 1 and 4"), free("b")],
            ["text"],
            "no relay you may use can do this: a: n must be between 1 and 4; b: lacks text",
            id="alike-only-when-every-relay-refused",
        ),
        pytest.param(
            [free("a")],
            ["sparkly"],
            "needs: unknown trait 'sparkly'; the traits are: text, photoreal, illustration, fast",
            id="unknown-trait",
        ),
    ],
)
def test_none_fits(candidates: list[Candidate], needs: list[str], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as refused:
        choose(candidates, needs)
    assert "secret" not in str(refused.value)


@pytest.mark.parametrize(
    ("candidate", "cost"),
    [
        (Candidate("free", True), 0.0),
        (Candidate("free-priced", True, estimate=0.5), 0.5),
        (Candidate("paid", True, paid=True), None),
        (Candidate("paid-priced", True, paid=True, estimate=0.25), 0.25),
    ],
)
def test_cost(candidate: Candidate, cost: float | None) -> None:
    assert candidate.cost == cost
